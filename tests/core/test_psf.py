"""PSF kernels, FITS PSFs, PSF resampling, FWHM and flux-conserving convolution."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from napari_astrosr.core import psf as P
from napari_astrosr.exceptions import AstroSRError

from conftest import shared_file


def _centroid(k):
    yy, xx = np.mgrid[: k.shape[0], : k.shape[1]]
    return (k * yy).sum() - (k.shape[0] - 1) / 2, (k * xx).sum() - (k.shape[1] - 1) / 2


def _check_kernel(k):
    assert k.ndim == 2 and k.shape[0] % 2 == 1 and k.shape[1] % 2 == 1
    assert abs(k.sum() - 1) < 1e-12
    assert np.all(np.isfinite(k)) and k.min() >= 0
    c = k.shape[0] // 2, k.shape[1] // 2
    assert np.unravel_index(np.argmax(k), k.shape) == c


@pytest.mark.parametrize(
    "kernel",
    [
        P.gaussian_psf(1.0),
        P.gaussian_psf(0.5),
        P.airy_psf(2.0),
        P.gaussian_airy_psf(1.0, 2.0),
        P.moffat_psf(3.0),
        P.moffat_psf(2.0, 4.0, size=15),
    ],
)
def test_analytic_kernels_unit_sum_odd_centred(kernel):
    _check_kernel(kernel)
    dy, dx = _centroid(kernel)
    assert abs(dy) < 1e-9 and abs(dx) < 1e-9


def test_fwhm_matches_theory():
    # pixel-integrated Gaussian: sigma_eff^2 = sigma^2 + 1/12
    for sigma in (1.0, 2.0, 3.0):
        expect = 2.3548 * np.sqrt(sigma**2 + 1 / 12)
        assert P.measure_fwhm(P.gaussian_psf(sigma)) == pytest.approx(expect, rel=0.03)
    # Airy: FWHM = 1.029 lambda/D = 0.8436 * first-dark-ring radius (coarse pixels widen it a little)
    assert P.measure_fwhm(P.airy_psf(4.0)) == pytest.approx(0.8436 * 4.0, rel=0.05)
    assert P.measure_fwhm(P.moffat_psf(5.0)) == pytest.approx(5.0, rel=0.05)
    # the combination is wider than either part
    assert P.measure_fwhm(P.gaussian_airy_psf(1.0, 2.0)) > P.measure_fwhm(P.airy_psf(2.0))


def test_airy_first_dark_ring_at_radius():
    k = P.airy_psf(6.0, size=41)
    row = k[20, 20:]
    # the minimum of the profile inside 1.5 r lies at the dark ring, within a pixel
    assert abs(int(np.argmin(row[:9])) - 6) <= 1


def test_parse_psf_specs(tmp_path):
    assert P.parse_psf(None) is None and P.parse_psf("none") is None
    np.testing.assert_allclose(P.parse_psf("gaussian:1.5"), P.gaussian_psf(1.5))
    np.testing.assert_allclose(P.parse_psf("airy:2"), P.airy_psf(2))
    np.testing.assert_allclose(P.parse_psf("gaussian+airy:1,2"), P.gaussian_airy_psf(1, 2))
    np.testing.assert_allclose(P.parse_psf("moffat:3,2.5"), P.moffat_psf(3, 2.5))
    np.testing.assert_allclose(P.parse_psf("moffat:3"), P.moffat_psf(3))
    from astropy.io import fits

    path = tmp_path / "k.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(P.gaussian_psf(2.0) * 50)]).writeto(path)
    np.testing.assert_allclose(P.parse_psf(f"{path}:1"), P.gaussian_psf(2.0), atol=1e-12)
    np.testing.assert_allclose(P.parse_psf(str(path)), P.gaussian_psf(2.0), atol=1e-12)
    for bad in ("gaussian:", "gaussian:-1", "airy:abc", "gaussian+airy:1", "blob:3", "nofile.fits"):
        with pytest.raises(AstroSRError):
            P.parse_psf(bad)
    with pytest.raises(AstroSRError):
        P.parse_psf(np.ones((4, 4)))


@pytest.mark.parametrize(
    "rel, kw",
    [
        ("psf/hst_cosmos_galsim/real_galaxy_PSF_images.fits", {"hdu": 7}),
        ("hst_cosmos_acs_f814w_galaxy/147246.0_150.416558_1.998697.sdsspsf.fits", {}),
        ("hst_cosmos_acs_f814w_galaxy/147246.0_150.416558_1.998697.psf.fits", {}),
        ("hst_hsc_pair_cosmos_A/PSF_HSC.fits", {"plane": 2}),
        ("hst_wfc3ir_f105w_a2744/f105w_psf.fits.gz", {}),
        ("psf/hst_tinytim_drizzlepac/wfc3_ir_f160w.fits", {}),
        ("psf/jwst_nircam_f090w_stars_psfr/psf_f090w_star0.fits", {}),
    ],
)
def test_real_psfs(rel, kw):
    k = P.psf_from_fits(shared_file(rel), **kw)
    _check_kernel(k)
    # the core is centred: centroid of the central 7x7 within 0.15 px
    c = k.shape[0] // 2
    core = k[c - 3 : c + 4, c - 3 : c + 4]
    core = core / core.sum()
    dy, dx = _centroid(core)
    assert abs(dy) < 0.15 and abs(dx) < 0.15
    assert 1.0 < P.measure_fwhm(k) < 10.0


def test_sdss_psf_pedestal_removed():
    from astropy.io import fits

    path = shared_file("hst_cosmos_acs_f814w_galaxy/147246.0_150.416558_1.998697.sdsspsf.fits")
    raw = fits.getdata(path).astype(float)
    assert np.median(raw[:2]) > 900  # the 1000-count sky offset
    k = P.psf_from_fits(path)
    # without pedestal removal the border would hold most of the "flux"
    assert k[:2].sum() + k[-2:].sum() < 0.02


def test_cube_plane_choice_and_errors():
    path = shared_file("hst_hsc_pair_cosmos_A/PSF_HSC.fits")
    g, y = P.psf_from_fits(path, plane=0), P.psf_from_fits(path, plane=4)
    assert not np.allclose(g, y)
    with pytest.raises(AstroSRError):
        P.psf_from_fits(path, plane=9)
    with pytest.raises(AstroSRError):
        P.psf_from_fits(path, hdu=3)


@settings(max_examples=15, deadline=None)
@given(sigma=st.floats(0.6, 3.0), factor=st.sampled_from([0.5, 1 / 3, 2.0, 3.0, 2.5, 0.4]))
def test_resample_psf_unit_sum_odd_and_fwhm_scales(sigma, factor):
    k = P.gaussian_psf(sigma, size=2 * int(np.ceil(6 * sigma)) + 1)
    r = P.resample_psf(k, factor)
    _check_kernel(r)
    # well-sampled result: equals the Gaussian of the (pixel-widened) width at the new scale
    assume(sigma * factor >= 0.7)
    ref = P.gaussian_psf(np.sqrt(sigma**2 + 1 / 12) * factor, size=r.shape[0])
    np.testing.assert_allclose(r, ref, atol=0.03 * ref.max())


def test_resample_psf_fwhm():
    r = P.resample_psf(P.gaussian_psf(1.0), 2.0)
    assert P.measure_fwhm(r) == pytest.approx(2 * P.measure_fwhm(P.gaussian_psf(1.0)), rel=0.03)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), sigma=st.floats(0.5, 2.5), nan_frac=st.sampled_from([0.0, 0.05]))
def test_convolve_conserves_flux_nan_aware(seed, sigma, nan_frac):
    rng = np.random.default_rng(seed)
    img = rng.gamma(0.3, 10, size=(40, 33))
    img[rng.random(img.shape) < nan_frac] = np.nan
    out = P.convolve(img, P.gaussian_psf(sigma))
    assert out.shape == img.shape
    np.testing.assert_array_equal(np.isnan(out), np.isnan(img))
    assert np.nansum(out) == pytest.approx(np.nansum(img), rel=1e-10)


def test_convolve_matches_scipy_in_interior():
    from scipy.signal import fftconvolve

    rng = np.random.default_rng(1)
    img = rng.normal(size=(64, 64))
    k = P.moffat_psf(3.0)
    ref = fftconvolve(img, k, mode="same")
    out = P.convolve(img, k)
    h = k.shape[0]
    np.testing.assert_allclose(out[h:-h, h:-h], ref[h:-h, h:-h], atol=1e-12)


def test_convolve_adjoint_exact():
    rng = np.random.default_rng(2)
    k = P.gaussian_airy_psf(1.0, 2.0)
    x, y = rng.normal(size=(50, 60)), rng.normal(size=(50, 60))
    lhs = np.vdot(P.convolve(x, k), y)
    rhs = np.vdot(x, P.convolve_adjoint(y, k))
    assert abs(lhs - rhs) < 1e-10 * max(1.0, abs(lhs))


def test_convolve_bad_input():
    with pytest.raises(AstroSRError, match="larger than the image"):
        P.convolve(np.ones((5, 5)), P.gaussian_psf(2.0))
    with pytest.raises(AstroSRError, match="NaN"):
        P.convolve(np.full((20, 20), np.nan), P.gaussian_psf(1.0))
    with pytest.raises(AstroSRError):
        P.gaussian_psf(0)
    with pytest.raises(AstroSRError):
        P.airy_psf(-1)
    with pytest.raises(AstroSRError):
        P.moffat_psf(3, beta=0.9)
    img = np.ones((20, 20))
    img[3, 3] = np.nan
    with pytest.raises(AstroSRError):
        P.convolve(img, P.gaussian_psf(1.0), nan_policy="raise")

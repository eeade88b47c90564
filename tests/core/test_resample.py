"""Flux-conserving resampling: block sums, exact overlap, upsampling, WCS."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.wcs import WCS
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from napari_astrosr.core import resample as R
from napari_astrosr.exceptions import AstroSRError

from conftest import shared_file


def _wcs(shape, scale_arcsec=0.1, crval=(150.0, 2.0), rot_deg=0.0):
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = list(crval)
    s = scale_arcsec / 3600
    t = np.radians(rot_deg)
    w.wcs.cd = np.array([[-s * np.cos(t), s * np.sin(t)], [s * np.sin(t), s * np.cos(t)]])
    w.wcs.crpix = [shape[1] / 2 + 0.3, shape[0] / 2 - 0.2]
    w.wcs.set()
    return w


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 9999), f=st.integers(1, 5), ny=st.integers(1, 12), nx=st.integers(1, 12))
def test_block_sum_split_round_trip(seed, f, ny, nx):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(ny, nx))
    up = R.block_split(a, f)
    assert up.shape == (ny * f, nx * f)
    np.testing.assert_allclose(R.block_sum(up, f), a, rtol=1e-12, atol=1e-12)
    assert up.sum() == pytest.approx(a.sum(), abs=1e-9)


def test_block_sum_crops_documented():
    a = np.ones((7, 9))
    assert R.block_sum(a, 2).shape == (3, 4)
    assert R.block_sum(a.astype(np.float32), 2).dtype == np.float32


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 9999), f=st.sampled_from([2, 3, 4]))
def test_exact_path_agrees_with_fast_path(seed, f):
    rng = np.random.default_rng(seed)
    n = 12 * f
    a = rng.gamma(0.5, 2.0, size=(n, n))
    w = _wcs(a.shape, rot_deg=0.0)
    fast = R.downsample(a, f, wcs=w)
    exact = R.reproject_flux(a, w, R.scale_wcs(w, 1 / f), (n // f, n // f))
    np.testing.assert_allclose(exact.data, fast.data, rtol=1e-6, atol=1e-9 * a.max())
    assert exact.data.sum() == pytest.approx(a.sum(), rel=1e-6)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 9999), f=st.floats(1.1, 3.7), rot=st.floats(0, 90))
def test_non_integer_downsample_conserves_flux(seed, f, rot):
    assume(abs(f - round(f)) > 1e-6)  # integer factors crop a 37x41 image (documented)
    rng = np.random.default_rng(seed)
    a = rng.gamma(0.5, 2.0, size=(37, 41))
    w = _wcs(a.shape, rot_deg=rot)
    res = R.downsample(a, f, wcs=w)
    assert np.nansum(res.data) == pytest.approx(a.sum(), rel=1e-6)
    assert res.coverage.max() <= 1 + 1e-9
    # without WCS too
    res2 = R.downsample(a, f)
    assert res2.wcs is None
    assert np.nansum(res2.data) == pytest.approx(a.sum(), rel=1e-6)


def test_sdss_to_hsc_scale_non_integer():
    # SDSS 0.396"/px -> HSC 0.168"/px (finer): exact overlap, flux conserved
    a = np.random.default_rng(3).gamma(0.5, 2.0, size=(30, 30))
    w_in = _wcs(a.shape, 0.396)
    f = 0.396 / 0.168
    w_out = R.scale_wcs(w_in, f)
    shape = (int(np.ceil(30 * f)), int(np.ceil(30 * f)))
    res = R.reproject_flux(a, w_in, w_out, shape)
    assert np.nansum(res.data) == pytest.approx(a.sum(), rel=1e-6)


@settings(max_examples=15, deadline=None)
@given(f=st.sampled_from([2, 3, 0.5, 2.5, 1 / 3]), x=st.floats(0, 40), y=st.floats(0, 30), rot=st.floats(0, 180))
def test_scale_wcs_same_sky(f, x, y, rot):
    w = _wcs((31, 41), rot_deg=rot)
    w2 = R.scale_wcs(w, f)
    ra, dec = w.pixel_to_world_values(x, y)
    x2, y2 = w2.world_to_pixel_values(ra, dec)
    assert abs(x2 - ((x + 0.5) * f - 0.5)) < 0.05 and abs(y2 - ((y + 0.5) * f - 0.5)) < 0.05


def test_scale_wcs_sip_and_none():
    assert R.scale_wcs(None, 2) is None
    path = shared_file("ground_ctio_mosaic2_cdfs/tpv.fits")
    from napari_astrosr.core.fits_io import read_fits

    img = read_fits(path)
    w2 = R.scale_wcs(img.wcs, 2)
    for x, y in [(10.0, 20.0), (400.0, 100.0), (255.5, 511.0)]:
        ra, dec = img.wcs.pixel_to_world_values(x, y)
        x2, y2 = w2.world_to_pixel_values(ra, dec)
        assert abs(x2 - (2 * x + 0.5)) < 0.05 and abs(y2 - (2 * y + 0.5)) < 0.05


def test_star_position_unchanged_after_downsample():
    # a star at a known RA/Dec stays there (within 0.05 output pixels) on the LR grid
    yy, xx = np.mgrid[:64, :64]
    x0, y0 = 30.3, 21.7
    a = np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * 2.0**2))
    w = _wcs(a.shape)
    res = R.downsample(a, 4, wcs=w)
    d = res.data
    yy2, xx2 = np.mgrid[: d.shape[0], : d.shape[1]]
    cx, cy = (d * xx2).sum() / d.sum(), (d * yy2).sum() / d.sum()
    ra, dec = w.pixel_to_world_values(x0, y0)
    ex, ey = res.wcs.world_to_pixel_values(ra, dec)
    assert abs(cx - ex) < 0.05 and abs(cy - ey) < 0.05


def test_nan_reported_as_coverage():
    a = np.ones((8, 8))
    a[0:2, 0:2] = np.nan
    a[4, 4] = np.nan
    res = R.downsample(a, 2)
    assert np.isnan(res.data[0, 0]) and res.coverage[0, 0] == 0
    assert res.data[2, 2] == 3 and res.coverage[2, 2] == 0.75
    assert np.nansum(res.data) == pytest.approx(np.nansum(a))
    res = R.downsample(a, 1.5)
    assert np.nansum(res.data) == pytest.approx(np.nansum(a), rel=1e-6)
    assert res.coverage.min() < 1


@pytest.mark.parametrize("method", ["bicubic", "lanczos", "nearest"])
@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 9999), f=st.integers(2, 4))
def test_upsample_block_sums_exact(method, seed, f):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(13, 17)) + rng.gamma(0.3, 5.0, size=(13, 17))
    out = R.upsample(a, f, method=method)
    assert out.shape == (13 * f, 17 * f)
    np.testing.assert_allclose(R.block_sum(out, f), a, rtol=1e-10, atol=1e-10)


def _reference_upsample(a, f, method, refine=2):
    """The definition, written plainly: a dense interpolation matrix per axis (reflect edges, rows
    normalised), ``refine`` back-projection rounds at full size, then the per-block correction."""
    kernel, support = (R._keys_cubic, 2) if method == "bicubic" else (R._lanczos3, 3)

    def matrix(n):
        m = np.zeros((n * f, n))
        for o in range(n * f):
            u = (o + 0.5) / f - 0.5
            for t in range(-support + 1, support + 1):
                j = int(np.floor(u)) + t
                jj = -j - 1 if j < 0 else j
                jj = 2 * n - jj - 1 if jj >= n else jj
                m[o, min(max(jj, 0), n - 1)] += kernel(np.array(u - j))
        return m / m.sum(axis=1, keepdims=True)

    my, mx = matrix(a.shape[0]), matrix(a.shape[1])

    def interp(d):
        return my @ d @ mx.T

    out = interp(a / f**2)
    for _ in range(refine):
        out += interp((a - R.block_sum(out, f)) / f**2)
    return out + R.block_split(a - R.block_sum(out, f), f)


@pytest.mark.parametrize(
    "method,f,shape", [("bicubic", 2, (13, 17)), ("lanczos", 3, (9, 4)), ("bicubic", 4, (2, 5)), ("lanczos", 2, (1, 7))]
)
def test_upsample_matches_its_definition(method, f, shape):
    # the fast path (refinement on the LR grid, per-phase correlations) is the same linear map
    a = np.random.default_rng(1).gamma(0.3, 5.0, size=shape)
    np.testing.assert_allclose(
        R.upsample(a, f, method=method), _reference_upsample(a, f, method), rtol=0, atol=1e-12 * a.max()
    )


def test_upsample_smooth_image_is_accurate():
    # interpolating a smooth, band-limited image is close to the truth (not just flux-exact)
    yy, xx = np.mgrid[:128, :128]
    hr = np.exp(-((xx - 60.3) ** 2 + (yy - 70.1) ** 2) / (2 * 6.0**2))
    lr = R.block_sum(hr, 2)
    for method in ("bicubic", "lanczos"):
        out = R.upsample(lr, 2, method=method)
        assert np.abs(out - hr).max() < 0.01 * hr.max()
    assert np.abs(R.upsample(lr, 2, method="nearest") - hr).max() > 0.02 * hr.max()


def test_upsample_wcs_and_nan():
    a = np.ones((6, 6), dtype=np.float32)
    a[2, 3] = np.nan
    out, w = R.upsample(a, 2, wcs=_wcs(a.shape), return_wcs=True)
    assert out.dtype == np.float32 and np.isnan(out[4:6, 6:8]).all() and np.isfinite(out).sum() == 140
    assert np.nansum(out) == pytest.approx(35.0, rel=1e-6)
    assert w.wcs.cd[1, 1] == pytest.approx(_wcs(a.shape).wcs.cd[1, 1] / 2)


def test_real_hst_downsample_conserves_flux():
    from napari_astrosr.core.fits_io import read_fits

    img = read_fits(shared_file("hst_hsc_pair_cosmos_A/Cut_HST.fits"), dtype="float64")
    for f in (2, 3, 5.6):
        res = R.downsample(img.data, f, wcs=img.wcs)
        total = (
            img.data[: res.data.shape[0] * int(f), : res.data.shape[1] * int(f)].sum()
            if float(f).is_integer()
            else img.data.sum()
        )
        assert np.nansum(res.data) == pytest.approx(total, rel=1e-6)
    # 0.030"/px * 5.6 = 0.168"/px: the HSC grid; the centre maps to the same sky
    ra, dec = img.wcs.pixel_to_world_values(124.5, 124.5)
    x, y = res.wcs.world_to_pixel_values(ra, dec)
    assert abs(x - (125 / 5.6 - 0.5)) < 0.05 and abs(y - (125 / 5.6 - 0.5)) < 0.05


def test_bad_input():
    a = np.ones((8, 8))
    for bad in (0, -2, np.nan):
        with pytest.raises(AstroSRError):
            R.downsample(a, bad)
        with pytest.raises(AstroSRError):
            R.block_sum(a, bad)
    with pytest.raises(AstroSRError):
        R.upsample(a, 2.5)
    with pytest.raises(AstroSRError):
        R.upsample(a, 2, method="sinc")
    with pytest.raises(AstroSRError, match="NaN"):
        R.downsample(np.full((8, 8), np.nan), 2)
    with pytest.raises(AstroSRError):
        R.downsample(np.ones((4, 4, 4)), 2)
    with pytest.raises(AstroSRError, match="overlap"):
        R.reproject_flux(a, _wcs(a.shape), _wcs(a.shape, crval=(10.0, -40.0)), (4, 4))
    with pytest.raises(AstroSRError, match="celestial"):
        R.reproject_flux(a, None, _wcs(a.shape), (4, 4))


@settings(max_examples=15, deadline=None)
@given(f=st.sampled_from([2, 3, 4, 2.5, 5.6]), rot=st.floats(0, 180))
def test_scale_wcs_round_trip(f, rot):
    w = _wcs((31, 41), rot_deg=rot)
    back = R.scale_wcs(R.scale_wcs(w, f), 1 / f)
    np.testing.assert_allclose(back.wcs.crpix, w.wcs.crpix, atol=1e-9)
    # relative to the matrix scale: near-zero rotations give subnormal off-diagonal terms
    np.testing.assert_allclose(back.wcs.cd, w.wcs.cd, rtol=1e-12, atol=1e-12 * np.abs(w.wcs.cd).max())


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 9999), f=st.integers(2, 4), method=st.sampled_from(["bicubic", "lanczos"]))
def test_upsample_then_downsample_round_trip(seed, f, method):
    a = np.random.default_rng(seed).gamma(0.5, 3.0, size=(11, 14))
    up = R.upsample(a, f, method=method)
    np.testing.assert_allclose(R.downsample(up, f).data, a, rtol=1e-10, atol=1e-10)
    assert up.sum() == pytest.approx(a.sum(), rel=1e-12)

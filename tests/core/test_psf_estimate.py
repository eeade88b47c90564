"""find_psf: the PSF resolved from the option, the file, the header or the image's own stars."""

from __future__ import annotations

import math

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from scipy import special

from napari_astrosr.core.projection import forward_model
from napari_astrosr.core.psf import gaussian_psf, measure_fwhm, psf_from_fits, resample_psf
from napari_astrosr.core.psf_estimate import PsfInfo, find_psf, kernel_hash
from napari_astrosr.exceptions import AstroSRError

from conftest import shared_file


def gaussian_stars(n: int, xy, flux, fwhm: float, *, sigma_noise: float = 1.0, seed: int = 0) -> np.ndarray:
    """Pixel-integrated (erf) Gaussian stars at sub-pixel positions plus white noise."""
    s = fwhm / 2.3548
    edges = np.arange(n + 1) - 0.5
    img = np.zeros((n, n))
    for (x, y), f in zip(xy, flux):
        px = np.diff(special.erf((edges - x) / (math.sqrt(2) * s))) / 2
        py = np.diff(special.erf((edges - y) / (math.sqrt(2) * s))) / 2
        img += f * np.outer(py, px)
    return img + np.random.default_rng(seed).normal(0, sigma_noise, img.shape)


def _field(n=128, n_stars=25, fwhm=3.0, seed=1):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(8, n - 8, (n_stars, 2))
    return gaussian_stars(n, xy, rng.uniform(3e3, 3e4, n_stars), fwhm, seed=seed)


def _true_fwhm(fwhm):
    return measure_fwhm(gaussian_psf(fwhm / 2.3548))


def test_explicit_psf_wins_and_is_recorded():
    img = _field()
    k, info = find_psf(img, psf="gaussian:1.5", header=fits.Header({"FWHM": 9.0}), scale=2)
    assert info.source == "option"
    np.testing.assert_allclose(k, gaussian_psf(1.5))
    assert info.hash == kernel_hash(k)
    assert info.fwhm == pytest.approx(measure_fwhm(gaussian_psf(1.5)))
    assert info.fwhm_input == pytest.approx(info.fwhm / 2)
    cards = dict((c[0], c[1]) for c in info.header_cards())
    assert cards["PSFSRC"] == "option" and cards["PSFHASH"] == info.hash and cards["PSFDESC"] == "gaussian:1.5"
    hdr = fits.Header()
    for key, val, com in info.header_cards():
        hdr[key] = (val, com)  # every card is a valid FITS card


def test_psf_extension_then_header_file(tmp_path):
    img = _field().astype(np.float32)
    p = tmp_path / "mef.fits"
    fits.HDUList([fits.PrimaryHDU(img), fits.ImageHDU(gaussian_psf(2.0, size=21), name="PSF")]).writeto(p)
    k, info = find_psf(img, hdul_or_path=p, header=fits.getheader(p))
    assert info.source == "extension" and "PSF" in info.description
    assert info.fwhm == pytest.approx(measure_fwhm(gaussian_psf(2.0)), rel=0.02)

    fits.PrimaryHDU(gaussian_psf(1.2, size=15)).writeto(tmp_path / "mypsf.fits")
    q = tmp_path / "img.fits"
    hdr = fits.Header({"PSF_FILE": "mypsf.fits", "FWHM": 7.0})
    fits.PrimaryHDU(img, header=hdr).writeto(q)
    k, info = find_psf(img, hdul_or_path=q, header=fits.getheader(q))
    assert info.source == "header-file"
    assert info.fwhm == pytest.approx(measure_fwhm(gaussian_psf(1.2)), rel=0.02)
    assert any("sha256" in n for n in info.notes)

    bad = tmp_path / "bad.fits"
    fits.PrimaryHDU(img, header=fits.Header({"PSF_FILE": "nowhere.fits"})).writeto(bad)
    with pytest.raises(AstroSRError, match="bad.fits.*nowhere.fits.*--psf"):
        find_psf(img, hdul_or_path=bad, header=fits.getheader(bad))


def test_header_keywords_arcsec_and_pixels():
    img = _field()
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.cdelt = [-0.2 / 3600, 0.2 / 3600]
    w.wcs.crval = [150, 2]
    hdr = w.to_header()
    hdr["SEEING"] = (0.8, "[arcsec] seeing FWHM")
    k, info = find_psf(img, header=hdr)
    assert info.source == "header-keyword"
    assert info.fwhm_input == pytest.approx(_true_fwhm(4.0), rel=0.01)  # 0.8" / 0.2"/px = 4 px
    hdr2 = fits.Header()
    hdr2["PSF_FWHM"] = (2.5, "PSF FWHM in pixels")
    _, info2 = find_psf(img, header=hdr2)
    assert info2.fwhm_input == pytest.approx(_true_fwhm(2.5), rel=0.01)
    hdr3 = fits.Header({"SEEING": 1.1})  # arcsec by convention, but no WCS to convert it
    with pytest.raises(AstroSRError, match="arcsec.*--psf"):
        find_psf(img, header=hdr3, where="x.fits")


def test_estimated_from_stars_full_field():
    img = _field(n=160, n_stars=30, fwhm=3.0)
    k, info = find_psf(img)
    assert info.source == "estimated" and info.n_stars >= 3 and not info.notes
    assert info.fwhm_input == pytest.approx(_true_fwhm(3.0), rel=0.05)


def test_estimated_on_small_crop_relaxes_and_says_so():
    xy = [(14.3, 20.6), (33.7, 30.2)]
    img = gaussian_stars(48, xy, [2e4, 8e3], 2.6, seed=3)
    k, info = find_psf(img, where="crop.fits")
    assert info.source == "estimated"
    assert any("relaxed" in n for n in info.notes)
    assert info.fwhm_input == pytest.approx(_true_fwhm(2.6), rel=0.06)


def test_nothing_found_is_one_clear_line():
    img = np.random.default_rng(0).normal(0, 1, (64, 64))
    with pytest.raises(AstroSRError) as exc:
        find_psf(img, where="blank.fits")
    msg = str(exc.value)
    assert "blank.fits" in msg and "--psf" in msg and "\n" not in msg


def test_output_grid_psf_reproduces_the_input_psf_through_the_forward_model():
    """At scale 2 the output-grid kernel, blurred and block-summed, gives back the measured input PSF:
    the input pixel is not counted twice."""
    img = _field(n=160, n_stars=30, fwhm=3.0)
    k1, info1 = find_psf(img, scale=1)
    k2, info2 = find_psf(img, scale=2)
    assert info2.fwhm_input == pytest.approx(info1.fwhm_input, rel=1e-6)
    n = 2 * (k2.shape[0] + 10)
    delta = np.zeros((n, n))
    delta[n // 2, n // 2] = 1.0  # a point source at an output pixel centre, seen through the model
    got = measure_fwhm(forward_model(delta, scale=2, psf=k2))
    assert got == pytest.approx(info1.fwhm_input, rel=0.02)
    # a plain 2x resample counts the input pixel twice: wider, and farther from the measured PSF
    plain = measure_fwhm(forward_model(delta, scale=2, psf=resample_psf(k1, 2.0)))
    assert plain > got and abs(plain - info1.fwhm_input) > 1.5 * abs(got - info1.fwhm_input)


def test_psfinfo_cards_truncate_long_notes():
    info = PsfInfo(
        source="estimated",
        fwhm=3.0,
        fwhm_input=1.5,
        hash="0" * 16,
        description="x" * 100,
        notes=["n" * 100] * 12,
        n_stars=5,
    )
    hdr = fits.Header()
    for key, val, com in info.header_cards():
        hdr[key] = (val, com)
    assert len(hdr["PSFDESC"]) == 68 and "PSFNOTE9" in hdr and "PSFNOTE10" not in hdr and hdr["PSFNSTAR"] == 5


def test_real_hst_psf_stars_recovered():
    """Stars made from the real WFC3/IR F105W PSF (shifted copies) give back its FWHM."""
    from scipy import ndimage

    k = psf_from_fits(shared_file("hst_wfc3ir_f105w_a2744/f105w_psf.fits.gz"), size=25)
    true = measure_fwhm(k)
    rng = np.random.default_rng(4)
    n = 160
    img = np.zeros((n, n))
    for _ in range(20):
        y, x = rng.integers(15, n - 15, 2)
        dy, dx = rng.uniform(-0.5, 0.5, 2)
        stamp = np.clip(ndimage.shift(k, (dy, dx), order=3), 0, None)
        img[y - 12 : y + 13, x - 12 : x + 13] += rng.uniform(5e3, 5e4) * stamp / stamp.sum()
    img += rng.normal(0, 1.0, img.shape)
    _, info = find_psf(img)
    assert info.source == "estimated"
    assert info.fwhm_input == pytest.approx(true, rel=0.10)

"""find_noise / estimate_sigma: per-pixel noise from maps and extensions, robust estimate otherwise."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from scipy import ndimage, special

from napari_astrosr.core.noise import estimate_sigma, find_noise, sigma_from_map
from napari_astrosr.exceptions import AstroSRError

from conftest import shared_file


def _sources(n=192, *, stars=0, galaxies=0, fwhm=3.0, seed=0, flux=(300.0, 3e4)):
    rng = np.random.default_rng(seed)
    img = np.zeros((n, n))
    s = fwhm / 2.3548
    e = np.arange(n + 1) - 0.5
    for _ in range(stars):
        x, y = rng.uniform(0, n, 2)
        f = np.exp(rng.uniform(np.log(flux[0]), np.log(flux[1])))
        px = np.diff(special.erf((e - x) / (np.sqrt(2) * s))) / 2
        py = np.diff(special.erf((e - y) / (np.sqrt(2) * s))) / 2
        img += f * np.outer(py, px)
    yy, xx = np.mgrid[0:n, 0:n]
    for _ in range(galaxies):
        x0, y0 = rng.uniform(0, n, 2)
        re, q, th = rng.uniform(4, 25), rng.uniform(0.4, 1), rng.uniform(0, np.pi)
        u = (xx - x0) * np.cos(th) + (yy - y0) * np.sin(th)
        v = (-(xx - x0) * np.sin(th) + (yy - y0) * np.cos(th)) / q
        img += rng.uniform(2, 60) * np.exp(-1.68 * (np.hypot(u, v) / re - 1.0)) / np.exp(1.68)
    return img


def _noise(shape, sigma, *, correlated=False, seed=1):
    w = np.random.default_rng(seed).normal(0, 1, shape)
    if correlated:  # drizzle-like: a 2x2 box, rescaled so each pixel keeps sigma
        w = ndimage.uniform_filter(w, 2)
        w /= w.std()
    return sigma * w


@pytest.mark.parametrize("field,kw", [("galaxies", dict(galaxies=25, stars=10)), ("crowded", dict(stars=600))])
@pytest.mark.parametrize("correlated", [False, True])
def test_estimate_sigma_holds_on_galaxy_and_crowded_fields(field, kw, correlated):
    clean = _sources(**kw)
    img = clean + _noise(clean.shape, 2.0, correlated=correlated)
    s = estimate_sigma(img)
    assert s == pytest.approx(2.0, rel=0.10), f"{field} correlated={correlated}: {s}"


def test_estimate_beats_sep_global_rms_on_a_galaxy_field():
    """The previous --flux-noise auto estimator (sep's global rms) is inflated by extended light."""
    clean = _sources(galaxies=25, stars=10)
    img = clean + _noise(clean.shape, 2.0)
    new = estimate_sigma(img)
    old = estimate_sigma(img, method="sep")
    assert abs(new / 2 - 1) < 0.05
    assert old / 2 - 1 > 0.2


def test_extensions_err_var_ivar_are_read_exactly(tmp_path):
    rng = np.random.default_rng(0)
    sig = rng.uniform(0.5, 3.0, (40, 50))
    img = rng.normal(0, sig).astype(np.float32)
    for name, val in (("ERR", sig), ("VAR", sig**2), ("IVAR", 1 / sig**2)):
        p = tmp_path / f"{name}.fits"
        fits.HDUList([fits.PrimaryHDU(img), fits.ImageHDU(val.astype(np.float32), name=name)]).writeto(p)
        s, info = find_noise(img, hdul_or_path=p)
        assert info.source == "extension" and info.per_pixel
        np.testing.assert_allclose(s, sig, rtol=1e-5)
        with fits.open(p) as hdul:  # an open HDUList works the same
            s2, _ = find_noise(img, hdul_or_path=hdul)
        np.testing.assert_allclose(s2, sig, rtol=1e-5)


def test_drizzle_exposure_weight_is_calibrated_on_the_image(tmp_path):
    """A WHT map in seconds (HST drizzle EXP) is only proportional to 1/sigma^2: the scale comes from the data."""
    rng = np.random.default_rng(2)
    exptime = np.where(np.arange(120)[None, :] < 60, 1000.0, 4000.0) * np.ones((120, 1))
    sig = 5.0 / np.sqrt(exptime / 1000.0)  # 5 where 1000 s, 2.5 where 4000 s
    clean = _sources(n=120, stars=15, seed=3)
    img = (clean + rng.normal(0, sig)).astype(np.float32)
    p = tmp_path / "drz.fits"
    fits.HDUList([fits.PrimaryHDU(img), fits.ImageHDU(exptime.astype(np.float32), name="WHT")]).writeto(p)
    s, info = find_noise(img, hdul_or_path=p)
    assert any("calibrated" in n or "c from the image" in n for n in info.notes)
    assert np.median(s[:, :60]) == pytest.approx(5.0, rel=0.07)
    assert np.median(s[:, 60:]) == pytest.approx(2.5, rel=0.07)
    # the same map declared an inverse variance is taken as it is
    hdr = fits.Header({"WHTTYPE": "IVM"})
    s_ivm, _, notes = sigma_from_map(exptime, "wht", header=hdr)
    np.testing.assert_allclose(s_ivm, 1 / np.sqrt(exptime))
    assert "inverse variance" in notes[0]


def test_user_map_kinds_bad_pixels_and_errors(tmp_path):
    img = np.random.default_rng(0).normal(0, 1, (30, 30))
    wht = np.full((30, 30), 4.0)
    wht[0, 0] = 0.0
    s, info = find_noise(img, noise=wht, kind="ivar")
    assert info.source == "map" and s[1, 1] == pytest.approx(0.5) and s[0, 0] == pytest.approx(0.5)
    assert any("1 pixel(s) with no valid noise" in n for n in info.notes)
    p = tmp_path / "field_rms.fits"
    fits.PrimaryHDU(np.full((30, 30), 2.0, np.float32)).writeto(p)
    s, info = find_noise(img, noise=p)
    assert "as err" in info.description and np.allclose(s, 2.0)
    s, info = find_noise(img, noise=0.7)
    assert s == 0.7 and not info.per_pixel
    with pytest.raises(AstroSRError, match="shape"):
        find_noise(img, noise=np.ones((3, 3)))
    with pytest.raises(AstroSRError, match="not found"):
        find_noise(img, noise=tmp_path / "missing.fits")
    with pytest.raises(AstroSRError, match="no positive"):
        find_noise(img, noise=np.zeros((30, 30)))


def test_estimated_when_nothing_else(tmp_path):
    img = _noise((80, 80), 3.0)
    s, info = find_noise(img)
    assert info.source == "estimated" and not info.per_pixel
    assert s == pytest.approx(3.0, rel=0.08)
    hdr = fits.Header()
    for k, v, c in info.header_cards():
        hdr[k] = (v, c)
    assert hdr["NOISESRC"] == "estimated"


def test_real_rms_map_used_and_added_noise_recovered_on_real_galaxies():
    """HST WFC3/IR A2744 dwarf-galaxy cutout and its rms map: the map is used as given; with white
    noise 10x the map's level added (the STAR-style noisy input), the estimate finds the added sigma."""
    img_p = shared_file("hst_wfc3ir_f105w_a2744/abell_2744_dwarf_galaxy_f105w.fits.gz")
    rms_p = shared_file("hst_wfc3ir_f105w_a2744/abell_2744_dwarf_galaxy_f105w_rms.fits.gz")
    img = fits.getdata(img_p).astype(np.float64)
    s, info = find_noise(img, noise=rms_p)
    assert info.source == "map" and info.per_pixel and "rms" in info.description
    np.testing.assert_allclose(s, fits.getdata(rms_p), rtol=1e-6)
    added = 10 * info.sigma
    noisy = img + _noise(img.shape, added, seed=7)
    assert estimate_sigma(noisy) == pytest.approx(added, rel=0.10)


def test_err_beats_wht_when_both_present(tmp_path):
    img = np.zeros((20, 20), np.float32)
    p = tmp_path / "both.fits"
    fits.HDUList(
        [
            fits.PrimaryHDU(img),
            fits.ImageHDU(np.full((20, 20), 100.0, np.float32), name="WHT"),
            fits.ImageHDU(np.full((20, 20), 0.3, np.float32), name="ERR"),
        ]
    ).writeto(p)
    s, info = find_noise(img, hdul_or_path=p)
    assert "[ERR]" in info.description and np.allclose(s, 0.3)

import numpy as np
import pytest
from astropy.table import QTable
from photutils.aperture import EllipticalAperture, aperture_photometry

from napari_astrosr.core.detection import detect_sources, estimate_background
from napari_astrosr.core.photometry import elliptical_aperture_flux, kron_flux
from napari_astrosr.exceptions import AstroSRError

from _measure_sim import gaussian_field


def _photutils(data, t, k):
    out = []
    for r in t:  # photutils apertures take scalar axes
        ap = EllipticalAperture((r["x"], r["y"]), k * r["a"], k * r["b"], theta=r["theta"])
        out.append(aperture_photometry(data, ap, method="exact")["aperture_sum"][0])
    return np.array(out)


def test_matches_photutils_exact_ellipses():
    img, _, truth = gaussian_field(seed=11)
    bkg = estimate_background(img)
    t = detect_sources(img)
    sub = img - bkg.back
    f, fe = elliptical_aperture_flux(img, t, background=bkg.back, err=bkg.rms)
    np.testing.assert_allclose(f, _photutils(sub, t, 2.5), rtol=1e-3)
    # Kron ellipses too
    fk, _, kr = kron_flux(sub, t, err=bkg.rms)
    big = 2.5 * kr * np.sqrt(t["a"] * t["b"]) >= 3.5
    tk = t[big]
    tk["a"] = tk["a"] * 2.5 * kr[big]
    tk["b"] = tk["b"] * 2.5 * kr[big]
    np.testing.assert_allclose(fk[big], _photutils(sub, tk, 1.0), rtol=1e-3)
    # errors: sqrt(sum rms^2) over the aperture area
    area = np.pi * 2.5**2 * t["a"] * t["b"]
    np.testing.assert_allclose(fe, np.sqrt(area) * np.median(bkg.rms), rtol=0.05)


def test_flux_recovered_within_errors_on_simulation():
    img, clean, truth = gaussian_field(seed=12, n=20, noise=2.0)
    t = QTable(truth)  # measure at the true ellipses
    f, fe = elliptical_aperture_flux(img, t, k=4.0, background=10.0, err=2.0)
    pull = (f - truth["flux"]) / fe
    assert np.all(np.abs(pull) < 4) and abs(np.mean(pull)) < 1
    # 2.5 sigma elliptical aperture holds 1 - exp(-2.5^2/2) = 95.6% of a Gaussian
    f25, _ = elliptical_aperture_flux(clean, t, k=2.5, err=1.0)
    np.testing.assert_allclose(f25 / truth["flux"], 1 - np.exp(-(2.5**2) / 2), rtol=0.02)  # pixel-sampled profiles


def test_nan_pixels_masked_not_propagated():
    img, _, truth = gaussian_field(seed=13, n=5)
    t = QTable(truth)
    bad = img.copy()
    bad[int(truth["y"][0]), int(truth["x"][0])] = np.nan
    f, fe, flag = elliptical_aperture_flux(bad, t, background=10.0, err=1.0, return_flag=True)
    assert np.isfinite(f).all() and np.isfinite(fe).all()
    import sep

    assert flag[0] & sep.APER_HASMASKED and not flag[1] & sep.APER_HASMASKED


def test_empty_and_bad_tables():
    img = np.zeros((10, 10))
    f, fe = elliptical_aperture_flux(img, QTable(dict(x=[], y=[], a=[], b=[], theta=[])))
    assert f.shape == (0,)
    with pytest.raises(AstroSRError, match="column"):
        elliptical_aperture_flux(img, QTable(dict(x=[1.0], y=[1.0])), err=1.0)
    with pytest.raises(AstroSRError, match="k"):
        elliptical_aperture_flux(img, QTable(dict(x=[1.0], y=[1.0], a=[1.0], b=[1.0], theta=[0.0])), k=0)

import json

import numpy as np
import pytest
from astropy.modeling.models import Sersic2D
from astropy.table import QTable
from scipy.ndimage import gaussian_filter

from napari_astrosr.core.morphology import (
    define_apertures,
    fit_sersic,
    lq_to_reference_grid,
    measure_image,
    measure_morphology,
    morphology_figure,
    morphology_summary,
    plot_morphology,
)
from napari_astrosr.core.psf import convolve, gaussian_psf
from napari_astrosr.core.resample import block_sum
from napari_astrosr.core.simulate import _sersic_stamp
from napari_astrosr.exceptions import AstroSRError

from conftest import shared_file


def _galaxies(n=6, size=120, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    gt = np.zeros((size, size))
    pts = [(30, 30), (90, 30), (30, 90), (90, 90), (60, 60), (60, 100)][:n]
    for x0, y0 in pts:
        gt += Sersic2D(
            amplitude=rng.uniform(1, 3),
            r_eff=rng.uniform(2, 4),
            n=rng.uniform(1, 2.5),
            x_0=x0,
            y_0=y0,
            ellip=rng.uniform(0.1, 0.5),
            theta=rng.uniform(0, 3),
        )(xx, yy)
    noise = lambda: rng.normal(0, 0.02, gt.shape)  # noqa: E731
    return gt + noise(), gaussian_filter(gt, 2.0) + noise(), gaussian_filter(gt, 0.7) + noise()


def _one_galaxy(n, r_eff, *, size=71, psf_sigma=1.5, ellip=0.3, theta=0.6):
    """Noiseless galaxy from core.simulate's renderer (5x oversampled everywhere; independent of the
    fit's model code), convolved with a Gaussian PSF."""
    half = size // 2
    stamp, iy, ix = _sersic_stamp(1e4, r_eff, n, ellip, theta, half + 0.3, half - 0.2, half, 5)
    img = np.zeros((size, size))
    img[: stamp.shape[0], : stamp.shape[1]] = stamp
    psf = gaussian_psf(psf_sigma)
    return convolve(img, psf), psf


@pytest.mark.parametrize("n, r_eff", [(1.0, 4.0), (3.0, 3.0)])
def test_sersic_fit_recovers_n_and_r50_through_the_psf(n, r_eff):
    img, psf = _one_galaxy(n, r_eff)
    ap = define_apertures(img, thresh=3.0)
    assert len(ap) == 1
    t = measure_image(img, ap, psf=psf)
    assert t["sersic_status"][0] == "ok"
    assert t["sersic_n"][0] == pytest.approx(n, rel=0.10)
    assert t["sersic_r50"][0] == pytest.approx(r_eff, rel=0.10)
    assert t["sersic_ellip"][0] == pytest.approx(0.3, abs=0.05)
    # without the PSF in the model the blurred galaxy looks softer: n biased low (the reason it is convolved in)
    t0 = measure_image(img, ap, psf=None)
    assert abs(t0["sersic_n"][0] - n) > abs(t["sersic_n"][0] - n)


def test_failed_fits_are_a_status_not_an_exception():
    img, psf = _one_galaxy(1.0, 3.0, size=41)
    bad = fit_sersic(np.full((20, 20), np.nan), x0=10, y0=10, r50=3, flux=100)
    assert bad["status"].startswith("failed") and np.isnan(bad["n"])
    neg = fit_sersic(-img, x0=20, y0=20, r50=3, flux=-img.sum())
    assert neg["status"].startswith("failed")
    starved = fit_sersic(img, x0=20.3, y0=19.8, r50=3, flux=img.sum(), psf=psf, max_nfev=2)
    assert starved["status"].startswith("failed") and "evaluations" in starved["status"]
    # in the table: a galaxy that is missing from GT (zero flux there) gets a failed status, the others fit
    ap = define_apertures(img, thresh=3.0)
    t = measure_image(np.zeros_like(img), ap, psf=psf)
    assert len(t) == 1 and str(t["sersic_status"][0]).startswith("failed")


def test_apertures_defined_once_on_lq_and_applied_to_all():
    gt, lq, rs = _galaxies()
    t = measure_morphology(gt, lq, rs, fit_sersic=False)
    ap = define_apertures(lq)
    # the table's apertures are exactly LQ's detections...
    for c in ("x", "y", "a", "b", "kron_radius"):
        np.testing.assert_array_equal(np.asarray(t[c]), np.asarray(ap.sources[c]))
    # ...whatever GT and RS contain: swapping them changes values, never the apertures or the rows
    t2 = measure_morphology(rs, lq, gt, fit_sersic=False)
    np.testing.assert_array_equal(np.asarray(t2["x"]), np.asarray(t["x"]))
    np.testing.assert_allclose(t2["iso_flux_gt"], t["iso_flux_rs"])
    # isophotal flux = the sum of each (background-subtracted) image over the LQ footprint, for every image
    from napari_astrosr.core.detection import estimate_background

    for key, im in (("gt", gt), ("lq", lq), ("rs", rs)):
        sub = im - estimate_background(im).back
        expect = [sub[ap.segmap == i].sum() for i in ap.ids]
        np.testing.assert_allclose(t[f"iso_flux_{key}"], expect, rtol=1e-9)
    # a bright blob in RS outside every LQ footprint adds no row and changes no flux
    rs2 = rs.copy()
    from scipy.ndimage import distance_transform_edt

    dist = distance_transform_edt(ap.segmap == 0)
    free = np.unravel_index(np.argmax(dist), dist.shape)  # the pixel farthest from every footprint
    assert dist[free] > 8
    rs2[free[0] - 1 : free[0] + 2, free[1] - 1 : free[1] + 2] += 50
    t3 = measure_morphology(gt, lq, rs2, fit_sersic=False)
    assert len(t3) == len(t)
    np.testing.assert_allclose(t3["iso_flux_rs"], t["iso_flux_rs"], rtol=1e-3)
    # restoration sharper than LQ -> closer to GT
    s = morphology_summary(t)
    for q in ("kron_flux", "e1", "e2", "r50"):
        assert s[q]["scatter_reduction"] > 1.5, q
    assert s["pixels"]["scatter_reduction"] > 1.5
    json.dumps(s, allow_nan=False)


def test_lq_on_its_own_grid_is_split_flux_conservingly():
    gt, _, rs = _galaxies()
    lq_small = block_sum(gaussian_filter(gt, 2.0), 2)[:, :]  # 60 x 60, pixels 2x larger
    big = lq_to_reference_grid(lq_small, gt.shape, 2)
    assert big.shape == gt.shape
    np.testing.assert_allclose(block_sum(big, 2), lq_small)  # every LQ pixel's flux kept
    t = measure_morphology(gt, lq_small, rs, scale=2, fit_sersic=False)
    assert len(t) == 6 and t.meta["lq_scale"] == 2
    rel = np.asarray(t["kron_flux_lq"]) / np.asarray(t["kron_flux_gt"]) - 1
    assert np.all(np.abs(rel) < 0.1)
    with pytest.raises(AstroSRError, match="scale"):
        measure_morphology(gt, lq_small, rs, scale=3, fit_sersic=False)
    with pytest.raises(AstroSRError, match="scale=S"):
        measure_morphology(gt, lq_small, rs, fit_sersic=False)
    with pytest.raises(AstroSRError, match="RS"):
        measure_morphology(gt, gt, rs[:100], fit_sersic=False)


def test_summary_statistics_on_a_table_with_known_scatter(tmp_path):
    n = 40
    gt = np.linspace(1.0, 3.0, n)
    sign = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)  # +-delta: RMSE is exactly delta
    t = QTable()
    for q, d_lq, d_rs in (("r50", 0.44, 0.1), ("e1", 0.2, 0.05)):
        t[f"{q}_gt"], t[f"{q}_lq"], t[f"{q}_rs"] = gt, gt + d_lq * sign, gt + d_rs * sign
    # fluxes compared relatively: lq = gt (1 + 0.3 sign) -> relative RMSE 0.3
    t["kron_flux_gt"], t["kron_flux_lq"], t["kron_flux_rs"] = (
        100 * gt,
        100 * gt * (1 + 0.3 * sign),
        100 * gt * (1 + 0.1 * sign),
    )
    t["sersic_n_gt"], t["sersic_n_lq"], t["sersic_n_rs"] = gt, gt + 1.0 * sign, gt + 0.25 * sign
    t["sersic_status_gt"] = ["ok"] * n
    t["sersic_status_lq"] = ["ok"] * n
    t["sersic_status_rs"] = ["ok"] * (n - 2) + ["failed: x", "at bound: n"]
    s = morphology_summary(t)
    assert s["r50"]["lq"]["rmse"] == pytest.approx(0.44)
    assert s["r50"]["rs"]["rmse"] == pytest.approx(0.1)
    assert s["r50"]["scatter_reduction"] == pytest.approx(4.4)
    assert s["r50"]["lq"]["pearson_r"] == pytest.approx(np.corrcoef(gt, gt + 0.44 * sign)[0, 1])
    assert s["e1"]["scatter_reduction"] == pytest.approx(4.0)
    assert s["kron_flux"]["lq"]["rmse"] == pytest.approx(0.3)
    assert s["kron_flux"]["scatter_reduction"] == pytest.approx(3.0)
    assert s["sersic_n"]["rs"]["n"] == n - 2  # only fits 'ok' in GT and RS
    assert s["sersic_n"]["scatter_reduction"] == pytest.approx(4.0)
    assert s["sersic_failures_rs"] == 1 and s["sersic_at_bound_rs"] == 1
    assert "iso_flux" not in s
    fig = morphology_figure(t)
    assert len(fig.axes) == 2 * 4
    p = plot_morphology(t, tmp_path / "m.png")
    assert p.read_bytes()[:4] == b"\x89PNG"


def test_real_hst_group_fluxes_consistent(shared_data):
    from napari_astrosr.core.degrade import degrade
    from napari_astrosr.core.fits_io import read_fits
    from napari_astrosr.core.resample import upsample

    gt = read_fits(shared_file("hst_wfc3ir_f105w_a2744/abell_2744_group_of_galaxies_f105w.fits.gz")).data
    gt = gt.astype(np.float64)
    lq = degrade(gt, scale=2, psf="gaussian:1.5", noise="gaussian:0.01", seed=0).data
    rs = upsample(lq, 2, method="bicubic")
    t = measure_morphology(gt, lq, rs, scale=2, thresh=3.0, minarea=8, fit_sersic=False)
    assert len(t) >= 3
    bright = np.argsort(-np.asarray(t["kron_flux_gt"]))[:3]
    # the Kron ellipse is the same on all three: flux blurred out of it is small for bright galaxies,
    # and bicubic x2 (flux-conserving) changes it by no more than the blur did
    rel_lq = np.asarray(t["kron_flux_lq"])[bright] / np.asarray(t["kron_flux_gt"])[bright] - 1
    rel_rs = np.asarray(t["kron_flux_rs"])[bright] / np.asarray(t["kron_flux_gt"])[bright] - 1
    assert np.all(np.abs(rel_lq) < 0.15) and np.all(np.abs(rel_rs) < 0.15)

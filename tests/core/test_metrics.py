import json
import math

import numpy as np
import pytest
from astropy.table import QTable
from scipy.ndimage import gaussian_filter

from napari_astrosr.core import metrics as M
from napari_astrosr.exceptions import AstroSRError

from _measure_sim import gaussian_field


@pytest.fixture(scope="module")
def field():
    img, clean, truth = gaussian_field(seed=21, n=20)
    return img.astype(np.float64), clean, truth


def test_psnr_ssim_explicit_range(field):
    ref = field[0]
    pred = ref + np.random.default_rng(0).normal(0, 2.0, ref.shape)
    dr = ref.max() - ref.min()
    mse = np.mean((ref - pred) ** 2)
    assert M.psnr(ref, pred) == pytest.approx(10 * np.log10(dr**2 / mse))
    assert M.psnr(ref, pred, data_range=1000.0) == pytest.approx(10 * np.log10(1e6 / mse))
    assert 0 < M.ssim(ref, pred) < M.ssim(ref, ref) == pytest.approx(1.0)
    with pytest.raises(AstroSRError, match="data_range"):
        M.psnr(np.ones((8, 8)), np.ones((8, 8)))


def test_shape_mismatch_says_resample():
    with pytest.raises(AstroSRError, match="resample"):
        M.evaluate(np.zeros((10, 10)), np.zeros((20, 20)))


def test_flux_error_definition(field):
    ref, clean, truth = field
    assert M.flux_error(ref, ref)["flux_error"] == 0.0
    # each image's own background is subtracted: a sky offset costs nothing
    fe = M.flux_error(ref, ref + 5.0)
    assert fe["flux_error"] == pytest.approx(0.0, abs=1e-3) and fe["n_sources"] >= 20
    # sources 10% brighter: relative error 0.1, FE = 0.1 x mean aperture flux
    sky = 10.0
    pred = sky + 1.1 * (ref - sky)
    fe = M.flux_error(ref, pred)
    assert fe["flux_error_rel_median"] == pytest.approx(0.1, abs=0.01)
    res = M.source_residuals(ref, pred, zeropoint=25.0)
    assert fe["flux_error"] == pytest.approx(np.mean(np.abs(res["f_pred"] - res["f_ref"])))
    np.testing.assert_allclose(np.median(res["delta_mag"]), -2.5 * np.log10(1.1), atol=0.01)
    assert {"x", "y", "ra", "dec", "f_ref", "f_pred", "delta", "rel_delta", "delta_mag", "mag_ref"} <= set(res.colnames)


def test_region_divergence_properties(field):
    ref = field[0]
    m = np.zeros(ref.shape, bool)
    m[20:80, 20:80] = True
    same = M.region_divergence(ref, ref, m)
    assert same["kl"] == pytest.approx(0, abs=1e-9) and same["js"] == pytest.approx(0, abs=1e-9)
    a = np.zeros((20, 20))
    b = np.ones((20, 20))
    d = M.region_divergence(a, b, np.ones((20, 20), bool))
    assert d["js"] == pytest.approx(math.log(2), rel=1e-6) and d["kl"] > 10  # disjoint: maximal JS
    noisy = ref + np.random.default_rng(1).normal(0, 3, ref.shape)
    d = M.region_divergence(ref, noisy, m)
    assert 0 < d["js"] < math.log(2) and d["kl"] > 0
    with pytest.raises(AstroSRError, match="empty"):
        M.region_divergence(ref, ref, np.zeros(ref.shape, bool))
    nanref = ref.copy()
    nanref[m] = np.nan
    with pytest.raises(AstroSRError, match="non-finite"), pytest.warns(M.MetricWarning, match="left out"):
        M.region_divergence(nanref, ref, m)


def test_sharpness_and_sky_sigma(field):
    ref, clean, _ = field
    assert M.sharpness(gaussian_filter(ref, 2)) < M.sharpness(ref)
    assert M.sky_sigma(ref) == pytest.approx(1.0, rel=0.1)  # the simulated noise
    assert M.sky_sigma(ref) < np.std(ref) / 5  # sources are masked


def test_recall_is_one_to_one_optimal():
    ref = QTable(dict(x=[0.0, 1.5], y=[0.0, 0.0]))
    pred = QTable(dict(x=[0.8, -1.0], y=[0.0, 0.0]))
    # greedy nearest-neighbour would pair A with (0.8, 0) and leave B unmatched
    assert M.recall(ref, pred) == 1.0
    assert M.recall(ref, QTable(dict(x=[0.75], y=[0.0]))) == 0.5
    assert math.isnan(M.recall(QTable(dict(x=[], y=[])), pred))
    i, j, d = M.match_sources(np.c_[ref["x"], ref["y"]], np.c_[pred["x"], pred["y"]])
    assert sorted(zip(i, j)) == [(0, 1), (1, 0)]


def test_shear_values():
    t = QTable(dict(a=[2.0, 1.0, 2.0], b=[1.0, 1.0, 1.0], theta=[0.0, 0.3, np.pi / 4]))
    g1, g2 = M.shear(t)
    np.testing.assert_allclose(g1, [0.6, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(g2, [0.0, 0.0, 0.6], atol=1e-12)
    assert M.magnitudes([1.0, 100.0, -1.0], zeropoint=25)[1] == pytest.approx(20.0)
    assert np.isnan(M.magnitudes([-1.0])[0])


def test_evaluate_json_and_bad_pixels(field):
    ref = field[0]
    pred = gaussian_filter(ref, 0.7)
    pred[0:5, 0:5] = np.nan
    roi = np.zeros(ref.shape, bool)
    roi[30:60, 30:60] = True
    outside = np.zeros(ref.shape, bool)
    with pytest.warns(M.MetricWarning):
        d = M.evaluate(ref, pred, rois=[("core", roi), ("empty", outside)])
    s = json.dumps(d, allow_nan=False)  # strict JSON: no NaN/inf
    for k in (
        "psnr",
        "ssim",
        "data_range",
        "flux_error",
        "flux_error_rel_median",
        "n_sources",
        "sharpness",
        "sky_sigma",
        "rois",
    ):
        assert k in d
    assert all(isinstance(d[k], float) for k in ("psnr", "ssim", "flux_error", "sharpness", "sky_sigma"))
    assert d["rois"][0]["name"] == "core" and d["rois"][0]["js"] > 0
    assert d["rois"][1]["kl"] is None and "empty" in d["rois"][1]["error"]
    assert any("non-finite" in w for w in d["warnings"])
    assert "Infinity" not in s


def test_identical_images_psnr_is_null_with_warning(field):
    ref = field[0]
    with pytest.warns(M.MetricWarning, match="psnr"):
        d = M.evaluate(ref, ref)
    assert d["psnr"] is None and d["flux_error"] == 0.0 and d["recall"] == 1.0


def test_no_sources_flux_error_is_null():
    rng = np.random.default_rng(3)
    ref = rng.normal(0, 1, (64, 64))
    # no sources: every per-source metric is undefined (flux_error, recall, shear, ...), each says so
    with pytest.warns(M.MetricWarning) as rec:
        d = M.evaluate(ref, ref + 0.1, thresh=100)
    assert any("flux_error" in str(w.message) for w in rec)
    assert d["n_sources"] == 0 and d["flux_error"] is None

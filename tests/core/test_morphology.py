import json

import numpy as np
import pytest
from astropy.modeling.models import Sersic2D
from scipy.ndimage import gaussian_filter

from napari_astrosr.core.morphology import measure_morphology, morphology_summary, plot_morphology
from napari_astrosr.exceptions import AstroSRError


def _galaxies(n=6, size=120, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    gt = np.zeros((size, size))
    pts = [(30, 30), (90, 30), (30, 90), (90, 90), (60, 60), (60, 100)][:n]
    for x0, y0 in pts:
        gt += Sersic2D(amplitude=rng.uniform(1, 3), r_eff=rng.uniform(2, 4), n=rng.uniform(1, 2.5), x_0=x0, y_0=y0,
                       ellip=rng.uniform(0.1, 0.5), theta=rng.uniform(0, 3))(xx, yy)
    noise = lambda: rng.normal(0, 0.02, gt.shape)  # noqa: E731
    return gt + noise(), gaussian_filter(gt, 2.0) + noise(), gaussian_filter(gt, 0.7) + noise()


def test_restoration_closer_to_truth_than_input(tmp_path):
    gt, lq, rs = _galaxies()
    t = measure_morphology(gt, lq, rs, fit_sersic=False)
    assert len(t) == 6
    # same LQ aperture on all three images: identical images would give identical numbers
    s = morphology_summary(t)
    for q in ("kron_flux", "e1", "e2", "r50"):
        assert s[q]["scatter_reduction"] > 1.5, q
    assert s["sersic_n"]["scatter_reduction"] is None
    json.dumps(s, allow_nan=False)
    p = plot_morphology(t, tmp_path / "m.png", quantities=("kron_flux", "r50"))
    assert p.read_bytes()[:4] == b"\x89PNG"
    same = measure_morphology(gt, gt, gt, fit_sersic=False)
    np.testing.assert_array_equal(same["kron_flux_gt"], same["kron_flux_rs"])


def test_sersic_fit_recovers_index_and_reports_failures():
    size = 60
    yy, xx = np.mgrid[:size, :size]
    gt = Sersic2D(amplitude=2, r_eff=4, n=1.0, x_0=30.2, y_0=29.7, ellip=0.3, theta=0.5)(xx, yy)
    gt = gt + np.random.default_rng(1).normal(0, 0.005, gt.shape)
    t = measure_morphology(gt, gt, gt)
    assert len(t) == 1 and t["sersic_status_gt"][0] == "ok"
    assert t["sersic_n_gt"][0] == pytest.approx(1.0, abs=0.15)
    assert t["sersic_reff_gt"][0] == pytest.approx(4.0, rel=0.1)


def test_shape_mismatch():
    with pytest.raises(AstroSRError, match="resample"):
        measure_morphology(np.zeros((20, 20)), np.zeros((10, 10)), np.zeros((20, 20)))

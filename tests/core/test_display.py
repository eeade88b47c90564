import numpy as np
import pytest

from napari_astrosr.core.display import STRETCHES, stretch, stretch_curve, zscale_limits


def test_zscale_matches_astropy_and_ignores_nan(rng):
    from astropy.visualization import ZScaleInterval

    data = rng.normal(100, 5, size=(64, 64)).astype("f4")
    data[10, 10] = 1e6  # a star: zscale must ignore it
    lo, hi = zscale_limits(data)
    assert 80 < lo < 100 < hi < 120
    data2 = data.copy()
    data2[:5] = np.nan
    lo2, hi2 = zscale_limits(data2)
    ref = ZScaleInterval().get_limits(data2[np.isfinite(data2)])
    assert (lo2, hi2) == pytest.approx(ref)


@pytest.mark.parametrize("data", [np.full((4, 4), np.nan), np.ones((4, 4)), np.zeros((0, 3))])
def test_zscale_degenerate_always_valid(data):
    lo, hi = zscale_limits(data)
    assert np.isfinite(lo) and np.isfinite(hi) and hi > lo


@pytest.mark.parametrize("name", STRETCHES)
def test_stretch_monotonic_endpoints(name):
    t = np.linspace(0, 1, 1001)
    s = stretch(t, name)
    assert s[0] == 0 and s[-1] == pytest.approx(1)
    assert np.all(np.diff(s) > 0)
    c, lv = stretch_curve(name, n=64)
    assert c[0] == 0 and c[-1] == 1 and np.all(np.diff(c) > 0)
    # the piecewise-linear colormap tracks the curve closely
    assert np.max(np.abs(np.interp(t, c, lv) - s)) < 0.06


def test_stretches_differ_and_unknown_rejected():
    t = np.array([0.1])
    vals = {n: float(stretch(t, n)[0]) for n in STRETCHES}
    assert vals["linear"] < min(vals["sqrt"], vals["asinh"], vals["log"])
    assert len(set(vals.values())) == 4
    assert vals["log"] > vals["sqrt"]
    with pytest.raises(ValueError, match="unknown stretch"):
        stretch(t, "gamma")

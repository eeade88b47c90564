"""core.skygate: the network acts only where the input shows signal; the sky keeps the data's statistics."""

from __future__ import annotations

import numpy as np
import pytest

from napari_astrosr.core.skygate import DEFAULT_LEVELS, parse_keep_sky, sky_gate
from napari_astrosr.exceptions import AstroSRError


@pytest.mark.parametrize(
    "value, expected",
    [
        (None, None),
        (False, None),
        (True, DEFAULT_LEVELS),
        ("", DEFAULT_LEVELS),
        ("3,8", (3.0, 8.0)),
        ((1, 4), (1.0, 4.0)),
        (" 0, 2.5 ", (0.0, 2.5)),
    ],
)
def test_parse_keep_sky(value, expected):
    assert parse_keep_sky(value) == expected


@pytest.mark.parametrize("bad", ["5,2", "2", "a,b", "2,2", "-1,3", (1, 2, 3), "nan,4"])
def test_parse_keep_sky_rejects_bad_levels_naming_the_option(bad):
    with pytest.raises(AstroSRError, match="--keep-sky"):
        parse_keep_sky(bad)


def _field(rng, noise=1.0):
    """A 96x96 noisy sky with one bright and one faint Gaussian source."""
    yy, xx = np.mgrid[:96, :96]
    img = 400.0 * np.exp(-((xx - 30) ** 2 + (yy - 40) ** 2) / (2 * 2.0**2))
    img += 6.0 * np.exp(-((xx - 70) ** 2 + (yy - 60) ** 2) / (2 * 2.0**2))
    return img + rng.normal(0, noise, img.shape)


def test_sky_pixels_keep_the_base_and_sources_the_network(rng):
    base = _field(rng)
    restored = base + rng.normal(0, 0.5, base.shape) + 0.3  # a network changing every pixel
    out, info = sky_gate(restored, base)
    # far from both sources the output is the base exactly (gate 0); the bright core is the network's
    sky = np.zeros(base.shape, bool)
    sky[:, 85:] = True
    frac_sky = np.mean(out[sky] == base[sky])
    assert frac_sky > 0.9
    assert out[40, 30] == pytest.approx(restored[40, 30])
    # convex blend: every pixel lies between the two inputs
    lo, hi = np.minimum(base, restored), np.maximum(base, restored)
    assert np.all(out >= lo - 1e-12) and np.all(out <= hi + 1e-12)
    assert 0 < info["network_fraction"] < 0.5 and info["sky_fraction"] > 0.5
    assert info["rms"] == pytest.approx(1.0, rel=0.2)  # sep's rms of the unsmoothed base


def test_levels_move_the_gate(rng):
    base = _field(rng)
    restored = base + 1.0
    wide = sky_gate(restored, base, low=0.5, high=1.0)[1]["network_fraction"]
    narrow = sky_gate(restored, base, low=10.0, high=20.0)[1]["network_fraction"]
    assert wide > 2 * narrow


def test_nan_and_shape_errors(rng):
    base = _field(rng)
    restored = base.copy()
    base[5:9, 5:9] = np.nan
    out, _ = sky_gate(restored, base)
    assert np.isnan(out[5:9, 5:9]).all() and np.isfinite(out[20:, 20:]).all()
    with pytest.raises(AstroSRError, match="same 2-D shape"):
        sky_gate(restored[:-1], base)
    with pytest.raises(AstroSRError, match="low < high"):
        sky_gate(restored, base, low=3, high=1)
    with pytest.raises(AstroSRError, match="no finite pixel"):
        sky_gate(np.full((8, 8), np.nan), np.full((8, 8), np.nan))


def test_inputs_are_not_modified(rng):
    base = _field(rng)
    restored = base + 1.0
    b0, r0 = base.copy(), restored.copy()
    sky_gate(restored, base)
    assert np.array_equal(base, b0) and np.array_equal(restored, r0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("holes", [False, True])
def test_gate_equals_its_formula(rng, dtype, holes):
    """The in-place gate is the blend of its definition (sep background and rms of the base, smoothed S/N ramp)."""
    from scipy.ndimage import gaussian_filter

    from napari_astrosr.core.background import estimate_background

    base = _field(rng).astype(dtype)
    restored = (base + rng.normal(0, 0.5, base.shape) + 0.3).astype(dtype)
    if holes:
        restored[10:14, 20:26] = np.nan
    out, info = sky_gate(restored, base)
    r, b = restored.astype(np.float64), base.astype(np.float64)
    valid = np.isfinite(r) & np.isfinite(b)
    bkg = estimate_background(np.where(valid, b, np.nan))
    sm = gaussian_filter(np.where(valid, b, bkg.back), 1.0)
    g = np.clip(((sm - bkg.back) / bkg.globalrms - 2.0) / 3.0, 0.0, 1.0)
    ref = np.where(valid, b + g * (r - b), np.nan)
    np.testing.assert_array_equal(np.isnan(out), ~valid)
    np.testing.assert_allclose(out[valid], ref[valid], rtol=1e-12, atol=1e-12)
    assert info["rms"] == pytest.approx(bkg.globalrms, rel=1e-12)
    assert info["network_fraction"] == pytest.approx(g[valid].mean(), rel=1e-12)

"""Per-tile / per-patch normalisation (``patch_median_std``): flux units, floors, train = inference."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_astrosr.config import config_from_dict  # noqa: E402
from napari_astrosr.exceptions import AstroSRError  # noqa: E402
from napari_astrosr.models.inference import infer, noise_floor, normalization_params, tile_stats  # noqa: E402
from napari_astrosr.training.data import NORMALIZATION, normalization_of  # noqa: E402

torch.set_num_threads(1)
PATCH = {"kind": "patch_median_std", "window": 24}


class _Replicate(torch.nn.Module):
    """x2 pixel replication: linear and constant-preserving, so any affine per-tile
    normalisation that is undone correctly gives back exactly ``repeat(x)``."""

    def forward(self, x, flux_map=None):
        return x.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)


class _Record(_Replicate):
    """Replication that records the largest |input| the network saw in each tile."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x, flux_map=None):
        self.seen.append(float(x.abs().max()))
        return super().forward(x)


def _field(rng, shape=(80, 96)):
    x = rng.normal(0.0, 0.01, shape)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    # one very bright source and faint ones far away (the case whole-image scaling fails)
    for y0, x0, f in [(20, 20, 5e4), (60, 70, 1.0), (65, 30, 0.5)]:
        x += f * np.exp(-((yy - y0) ** 2 + (xx - x0) ** 2) / (2 * 1.2**2)) / (2 * np.pi * 1.2**2)
    return x.astype(np.float32)


def test_params_record_floor_and_window(rng):
    x = _field(rng)
    p = normalization_params(x, PATCH)
    assert p["kind"] == "patch_median_std" and p["window"] == 24
    # the floor: the robust noise (0.01) or 1e-3 of the (bright-source-dominated) std, not the std itself
    assert p["floor"] >= 0.007 and p["floor"] == pytest.approx(max(noise_floor(x.ravel()), 1e-3 * x.std()), rel=1e-3)
    assert p["scale"] > 100 * p["floor"]
    # constant (noise-free, empty) image: the floor stays positive
    assert noise_floor(np.zeros(100, np.float32)) > 0
    m, s = tile_stats(np.full((8, 8), 3.0, np.float32), 0.5)
    assert m == 3.0 and s == 0.5
    with pytest.raises(AstroSRError, match="window"):
        normalization_params(x, {"kind": "patch_median_std", "window": 2})


def test_per_tile_normalisation_is_undone_exactly_and_conserves_flux(rng):
    x = _field(rng)
    fm = np.abs(x)
    out, info = infer(_Replicate(), x, scale=2, flux_map=fm, normalization=PATCH)
    assert info["tile"] == 24 and info["tiles"] > 1  # the default tile is the statistics window
    expect = np.repeat(np.repeat(x, 2, 0), 2, 1) / 4.0  # flux per output pixel
    np.testing.assert_allclose(out, expect, rtol=1e-5, atol=1e-6)
    assert abs(out.sum() / x.sum() - 1) < 1e-5


def test_faint_source_tile_is_at_unit_scale_only_per_tile(rng):
    # the network's view of a tile holding only a faint source far from a very bright one
    x = _field(rng)[44:80, 54:90]  # faint source (1.0) at (16, 16); the bright one is outside
    bright = _field(rng)
    whole = _Record()
    infer(whole, bright, scale=2, normalization={"kind": "median_std"}, tile=36, overlap=16)
    per_tile = _Record()
    infer(per_tile, bright, scale=2, normalization={"kind": "patch_median_std", "window": 36})
    # whole-image statistics: the faint source is a tiny fraction of unit scale in every tile but the
    # bright one's; per tile it is several units (its own tile's std sets the scale)
    # same 36-px tile grid in both runs; the last tile (rows 44-80, cols 60-96) holds only the faint source
    assert len(whole.seen) == len(per_tile.seen) == 16
    assert whole.seen[-1] < 0.05
    assert per_tile.seen[-1] > 0.5 and per_tile.seen[-1] > 10 * whole.seen[-1]
    assert x.max() > 0.05  # the faint source is really there


def test_config_selects_the_kind_and_default_stays_whole_image():
    base = {
        "name": "t",
        "model": {"name": "fisr", "preset": "tiny", "scale": 2},
        "data": {"scale": 2, "patch": 16, "sources": [{"kind": "simulate", "simulate": "starfield", "count": 1}]},
    }
    assert normalization_of(config_from_dict(base)) == NORMALIZATION == {"kind": "median_std"}
    base["data"]["normalization"] = "patch_median_std"
    assert normalization_of(config_from_dict(base)) == {"kind": "patch_median_std", "window": 32}
    base["data"]["norm_window"] = 40
    assert normalization_of(config_from_dict(base))["window"] == 40
    base["data"]["normalization"] = "asinh"
    with pytest.raises(Exception, match="normalization"):
        config_from_dict(base)

"""Tiled inference: tiling agrees with untiled, NaNs, stop, devices, bad input."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_astrosr.exceptions import AstroSRError, StoppedError  # noqa: E402
from napari_astrosr.models.inference import (  # noqa: E402
    autocast_context,
    infer,
    infer_job,
    normalization_params,
    pick_device,
    tile_starts,
)
from napari_astrosr.models.registry import build_model  # noqa: E402
from napari_astrosr.progress import StopFlag  # noqa: E402

torch.set_num_threads(1)


def _image(rng, shape=(96, 80)):
    x = rng.normal(0.0, 1.0, shape)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for y0, x0, f in [(30, 20, 200.0), (60, 55, 80.0), (10, 70, 40.0)]:
        x += f * np.exp(-((yy - y0) ** 2 + (xx - x0) ** 2) / (2 * 1.5**2)) / (2 * np.pi * 1.5**2)
    return x.astype(np.float32)


def _local_net():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.GELU(), torch.nn.Conv2d(4, 1, 3, padding=1)
    )


def test_tiles_cover_the_image():
    for n, t, o in [(100, 32, 8), (32, 32, 8), (33, 32, 16), (257, 64, 16)]:
        starts = tile_starts(n, t, o)
        assert starts[0] == 0 and starts[-1] + t == n or (n <= t and starts == [0])
        assert all(b - a <= t - o for a, b in zip(starts, starts[1:]))


def test_tile_starts_are_evenly_spaced_and_fitted_tiles_cover():
    from napari_astrosr.models.inference import fit_tile

    assert tile_starts(512, 256, 32) == [0, 128, 256]  # not 0, 224, 256
    for n, t, o in [(2048, 192, 40), (1000, 300, 32), (257, 64, 16)]:
        starts = tile_starts(n, t, o)
        steps = np.diff(starts)
        assert steps.max() - steps.min() <= 1 and steps.max() <= t - o
        ft = fit_tile(n, t, o)
        fs = tile_starts(n, ft, o)
        assert ft <= t and len(fs) == len(starts) and fs[-1] + ft == n
        assert np.diff(fs).max() <= ft - o
    assert fit_tile(100, 256, 32) == 100


def test_auto_tiles_of_the_bundled_fisr_match_one_tile(rng):
    # default tiles (cache-sized, fitted, overlap from the receptive field) against the whole image
    from napari_astrosr.models.checkpoints import bundled_checkpoint, load_checkpoint

    net, meta = load_checkpoint(bundled_checkpoint("fisr", 2), device="cpu")
    x = _image(rng, shape=(520, 450)).astype(np.float32)
    fm = np.abs(x).astype(np.float32)
    a, ia = infer(net, x, scale=2, flux_map=fm, normalization=meta["normalization"])
    b, ib = infer(net, x, scale=2, flux_map=fm, normalization=meta["normalization"], tile=520)
    assert ia["tiles"] > 1 and ib["tiles"] == 1 and ia["overlap"] == 40
    assert np.abs(a - b).max() < 1e-3 * np.abs(b).max()


def test_tiled_equals_untiled_for_a_local_network(rng):
    x = _image(rng)
    net = _local_net()
    a, ia = infer(net, x, tile=None)
    b, ib = infer(net, x, tile=40, overlap=16)
    assert ia["tiles"] == 1 and ib["tiles"] == 12
    # receptive field (2 px) within the zero-weight margin: exact up to float rounding
    np.testing.assert_allclose(a, b, atol=1e-5 * np.abs(a).max())


def test_tiled_close_to_untiled_for_restormer_tiny(rng):
    # MDTA attention is global over a tile, so tiling cannot be exact; it must stay close
    torch.manual_seed(0)
    net = build_model("restormer", preset="tiny", scale=2)
    x = _image(rng)
    a, _ = infer(net, x)
    b, info = infer(net, x, tile=48, overlap=16)
    assert info["tiles"] == 6
    assert np.linalg.norm(a - b) / np.linalg.norm(a) < 0.02


def test_enlarging_network_units_and_nan_mask(rng):
    torch.manual_seed(0)
    net = build_model("fisr", preset="tiny", scale=2)
    x = _image(rng, (40, 36))
    x[5:9, 10:13] = np.nan
    out, info = infer(net, x, scale=2, flux_map=np.zeros_like(x), tile=24, overlap=8)
    assert out.shape == (80, 72)
    nan = ~np.isfinite(out)
    assert nan[10:18, 20:26].all() and nan.sum() == 4 * 3 * 4
    assert info["masked_pixels"] == 12 and info["device"] == "cpu" and info["precision"] == "fp32"


def test_normalization_kinds():
    x = np.array([[0.0, 1.0], [2.0, 10.0]])
    p = normalization_params(x, {"kind": "minmax", "range": [-1, 1]})
    assert np.isclose((x.min() - p["offset"]) / p["scale"], -1) and np.isclose((x.max() - p["offset"]) / p["scale"], 1)
    p = normalization_params(x, {"kind": "median_std"})
    assert np.isclose(p["offset"], 1.5) and np.isclose(p["scale"], x.std())
    with pytest.raises(AstroSRError, match="normalisation kind"):
        normalization_params(x, {"kind": "asinh-magic"})


def test_stop_request_ends_promptly(rng):
    x = _image(rng, (96, 96))
    flag = StopFlag()
    job = infer_job(_local_net(), x, tile=16, overlap=8, stop=flag)
    ev = next(job)
    assert ev.step == 1 and ev.total > 10
    flag.set()
    with pytest.raises(StoppedError, match="after 1 of"):
        next(job)


def test_bad_inputs(rng):
    net = _local_net()
    with pytest.raises(AstroSRError, match="2-D"):
        infer(net, np.zeros((2, 16, 16), np.float32))
    with pytest.raises(AstroSRError, match="too small"):
        infer(net, np.zeros((4, 4), np.float32))
    with pytest.raises(AstroSRError, match="NaN"):
        infer(net, np.full((16, 16), np.nan, np.float32))
    with pytest.raises(AstroSRError, match="expected x2"):
        infer(net, _image(rng, (16, 16)), scale=2)


def test_devices_and_precision():
    assert pick_device("auto") in ("cpu", "cuda", "mps")
    assert pick_device("cpu") == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(AstroSRError, match="CUDA is not available"):
            pick_device("cuda")
    with pytest.raises(AstroSRError):
        pick_device("tpu")
    assert autocast_context("cpu", "bf16")[1] == "fp32"  # CPU path stays fp32
    assert autocast_context("cuda", "fp16")[1] == "fp16"  # GPU path exists (context not entered here)
    assert autocast_context("mps", "auto")[1] == "fp16"


class _StopAfter:
    """A stop flag that turns on at its ``n``-th check (so a test can stop *inside* a tile)."""

    def __init__(self, n: int) -> None:
        self.n, self.calls = n, 0

    def is_set(self) -> bool:
        self.calls += 1
        return self.calls >= self.n


def test_stop_inside_a_tile_for_an_eager_network(rng):
    """Restormer (attention: run eagerly, tiles of seconds on a CPU) stops between its blocks,
    before its first tile is done; the hooks are removed afterwards."""
    from napari_astrosr.models.inference import stop_hooks

    net = build_model("restormer", preset="tiny", scale=1)
    x = _image(rng, (64, 64))
    flag = _StopAfter(3)  # 1: the check before the first tile; 2, 3: the first two blocks of that tile
    with pytest.raises(StoppedError, match="inside a tile"):
        next(infer_job(net, x, tile=64, stop=flag))
    assert flag.calls == 3  # stopped at the second block, not at the end of the tile
    assert not any(m._forward_pre_hooks for m in net.modules())
    # without a stop request the hooks change nothing
    plain = infer(net, x, tile=64)[0]
    with stop_hooks(net, StopFlag()):
        hooked = net(torch.from_numpy(x)[None, None])
    assert hooked.shape == (1, 1, 64, 64) and np.isfinite(plain).all()

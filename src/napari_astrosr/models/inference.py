"""Tiled network inference on images of any size.

:func:`infer_job` runs a network over a 2-D image in overlapping tiles and blends them
with raised-cosine (Hann) ramps, so memory is bounded by the tile size whatever the
image size; per-tile progress events; a stop request ends the run between tiles
(:class:`~napari_astrosr.exceptions.StoppedError`) and, for networks run eagerly (attention,
U-Nets: tiles of seconds on a CPU), inside a tile too, between the network's blocks
(:func:`stop_hooks`).

Normalisation (the checkpoint sidecar's ``normalization``) uses statistics of the
*whole* image (finite pixels), not of each tile, so tiles are normalised identically and
the tiled result matches the untiled one:

- ``{"kind": "median_std"}``: ``(x - median) / std``; undone as ``y * std + median``.
- ``{"kind": "minmax", "range": [lo, hi]}`` (default range [0, 1]): ``x`` mapped from
  [min, max] to [lo, hi]; undone by mapping back to the input's [min, max] (Park et al.
  rescale the network output to the input's flux range in the same way).
- ``{"kind": "none"}``.
- ``{"kind": "patch_median_std", "window": W}``: *per tile* (DESIGN.md section 8's best):
  each tile of ``W`` network-input pixels is normalised by its own median and std, the std
  floored at the whole image's robust noise (1.4826 x MAD, at least 1e-3 of the image std)
  so empty-sky tiles are not blown up, and each tile's output is mapped back to flux units
  (``y * std_t + median_t``) *before* the tiles are blended. Faint sources far from a
  bright object then sit at unit scale instead of ~1e-3 of it. Training normalises each
  patch by the same statistics over a ``W``-pixel window around it (``training.data``).
  The default tile is ``W``; blending a per-tile affine map is still linear in flux.

The network works in surface-brightness units; when it enlarges by ``scale`` the
denormalised output is divided by ``scale**2`` so it is in flux per output pixel, like a
flux-conserving upsample. NaN/inf pixels are filled with the nearest valid value before
the network and come back as NaN (mask enlarged by ``scale``).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Generator
from typing import Any, Optional

import numpy as np

from ..exceptions import AstroSRError, StoppedError
from ..progress import NEVER, Progress

MIN_SIZE = 8
"""Smallest accepted side (pixels) of an input image."""


# --------------------------------------------------------------------------- devices
def pick_device(device: str = "auto") -> str:
    """Resolve ``"auto"`` to ``cuda``, then ``mps``, then ``cpu``; check an explicit choice exists."""
    import torch

    dev = (device or "auto").lower()
    cuda = torch.cuda.is_available()
    mps = bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
    if dev == "auto":
        return "cuda" if cuda else ("mps" if mps else "cpu")
    if dev.startswith("cuda"):
        if not cuda:
            raise AstroSRError(f"--device {device}: CUDA is not available here; use --device cpu or auto.")
        return dev
    if dev == "mps":
        if not mps:
            raise AstroSRError("--device mps: Apple MPS is not available here; use --device cpu or auto.")
        return dev
    if dev == "cpu":
        return dev
    raise AstroSRError(f"--device {device!r}: choose auto, cpu, cuda or mps.")


def autocast_context(device: str, precision: str = "auto"):
    """Mixed-precision context for GPU inference; a no-op on CPU.

    ``precision``: ``auto`` (bf16 on CUDA when supported else fp16; fp16 on MPS; fp32 on
    CPU), ``fp32``, ``bf16`` or ``fp16``. On CPU only fp32 is used: CPU autocast is
    slower than fp32 for these convolutions and costs accuracy.
    """
    import torch

    dtype_name = devtype = None
    devtype = device.split(":")[0]
    if precision not in ("auto", "fp32", "bf16", "fp16"):
        raise AstroSRError(f"precision {precision!r}: choose auto, fp32, bf16 or fp16.")
    if devtype == "cpu" or precision == "fp32":
        return contextlib.nullcontext(), "fp32"
    if precision == "auto":
        if devtype == "cuda":
            dtype_name = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            dtype_name = "fp16"
    else:
        dtype_name = precision
    dtype = torch.bfloat16 if dtype_name == "bf16" else torch.float16
    return torch.autocast(device_type=devtype, dtype=dtype), dtype_name


# ------------------------------------------------------------------ normalisation
PER_TILE_KINDS = ("patch_median_std",)
"""Normalisation kinds whose statistics are taken per tile (training: per patch window)."""

DEFAULT_WINDOW = 48
"""Statistics window (network-input pixels) of a per-tile kind whose sidecar gives none."""


def noise_floor(finite: np.ndarray) -> float:
    """Lower bound of a per-tile std: robust noise of the whole image (1.4826 x MAD), at least
    1e-3 of its std (noise-free simulations have MAD ~ 0), and > 0.
    """
    med = float(np.median(finite))
    mad = 1.4826 * float(np.median(np.abs(finite - med)))
    return max(mad, 1e-3 * float(np.std(finite)), 1e-20)


def tile_stats(tile: np.ndarray, floor: float) -> tuple[float, float]:
    """(median, std) of one tile/patch window, std floored at ``floor`` (finite pixels only)."""
    t = tile[np.isfinite(tile)]
    if t.size == 0:
        return 0.0, float(floor)
    return float(np.median(t)), max(float(np.std(t)), float(floor))


def normalization_params(data: np.ndarray, normalization: Optional[dict]) -> dict:
    """Statistics for :func:`normalize` from the finite pixels of ``data``."""
    norm = dict(normalization or {"kind": "median_std"})
    kind = norm.get("kind", "median_std")
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        raise AstroSRError("image has no finite pixels; nothing to restore.")
    if kind == "median_std":
        med = float(np.median(finite))
        std = float(np.std(finite))
        return {"kind": kind, "offset": med, "scale": std if std > 0 else 1.0}
    if kind == "minmax":
        lo_t, hi_t = norm.get("range", [0.0, 1.0])
        mn, mx = float(finite.min()), float(finite.max())
        span = mx - mn if mx > mn else 1.0
        # x_n = (x - mn) / span * (hi_t - lo_t) + lo_t  ==  (x - offset) / scale
        scale = span / (hi_t - lo_t)
        return {"kind": kind, "offset": mn - lo_t * scale, "scale": scale, "min": mn, "max": mx}
    if kind == "none":
        return {"kind": kind, "offset": 0.0, "scale": 1.0}
    if kind in PER_TILE_KINDS:
        window = int(norm.get("window") or DEFAULT_WINDOW)
        if window < MIN_SIZE:
            raise AstroSRError(
                f"normalisation window {window}: must be at least {MIN_SIZE} pixels (checkpoint sidecar)."
            )
        # offset/scale: whole-image values, only for callers that need one global number
        std = float(np.std(finite))
        return {
            "kind": kind,
            "offset": float(np.median(finite)),
            "scale": std if std > 0 else 1.0,
            "floor": noise_floor(finite),
            "window": window,
        }
    raise AstroSRError(
        f"unknown normalisation kind {kind!r} (checkpoint sidecar); expected median_std, "
        "patch_median_std, minmax or none."
    )


def normalize(data: np.ndarray, params: dict) -> np.ndarray:
    """``(data - offset) / scale`` as float32."""
    return ((data - params["offset"]) / params["scale"]).astype(np.float32, copy=False)


def denormalize(out: np.ndarray, params: dict, *, area: float = 1.0) -> np.ndarray:
    """Undo :func:`normalize` and divide by ``area`` (``scale**2`` for enlarging networks)."""
    out = out * np.float32(params["scale"]) + np.float32(params["offset"])
    if area != 1.0:
        out /= np.float32(area)
    return out


def normalize_flux_map(flux_map: np.ndarray, params: dict) -> np.ndarray:
    """A flux map in the image's normalised units (divided by the scale; a map has no offset)."""
    return (np.nan_to_num(flux_map) / params["scale"]).astype(np.float32, copy=False)


# ---------------------------------------------------------------------- NaN handling
def fill_invalid(data: np.ndarray) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Replace NaN/inf by the nearest valid pixel's value; return (filled, mask or None)."""
    from scipy import ndimage

    bad = ~np.isfinite(data)
    if not bad.any():
        return data, None
    if bad.all():
        raise AstroSRError("image is entirely NaN/blank; nothing to restore.")
    idx = ndimage.distance_transform_edt(bad, return_distances=False, return_indices=True)
    filled = data[tuple(idx)]
    return filled, bad


def enlarge_mask(mask: np.ndarray, scale: int) -> np.ndarray:
    """Each pixel of ``mask`` becomes a ``scale x scale`` block."""
    if scale == 1:
        return mask
    return np.repeat(np.repeat(mask, scale, axis=0), scale, axis=1)


# ----------------------------------------------------------------------------- tiles
def tile_starts(n: int, tile: int, overlap: int) -> list[int]:
    """Evenly spaced start offsets of tiles of ``tile`` pixels covering ``n`` with at least ``overlap``.

    The fewest tiles that can cover ``n`` (``ceil((n - overlap) / (tile - overlap))``), spread
    evenly, so no tile overlaps its neighbour much more than another (a last start that barely
    advances past the previous one wastes a tile's work on a few pixels).
    """
    if tile >= n:
        return [0]
    step = max(1, tile - overlap)
    k = max(2, math.ceil((n - overlap) / step))
    return sorted({int(round(i * (n - tile) / (k - 1))) for i in range(k)})


def fit_tile(n: int, tile: int, overlap: int, *, multiple: int = 8) -> int:
    """The smallest tile side that covers ``n`` with as few tiles of at most ``tile`` pixels as possible.

    E.g. 2048 px with tiles of at most 1024 and 32 overlap: 3 tiles of 704 instead of 3 of 1024
    (2112 instead of 3072 pixels of work per row). Rounded up to ``multiple`` (the U-Nets pad to
    a multiple of 8 anyway).
    """
    if tile >= n:
        return n
    step = max(1, tile - overlap)
    k = max(2, math.ceil((n - overlap) / step))
    side = math.ceil((n - overlap) / k) + overlap
    return min(n, -(-side // multiple) * multiple)


AUTO_OVERLAP = 32
"""Default overlap (input pixels) of automatic tiles: today's default (256-px tiles, tile // 8)."""


def receptive_radius(model) -> Optional[int]:
    """Receptive-field radius (input pixels) of a plain stack of stride-1 convolutions: the sum of
    ``dilation * (kernel - 1) // 2`` over every Conv2d (an upper bound for residual/parallel
    branches). ``None`` when it cannot be bounded that way: strided convolutions, pixel unshuffle,
    pooling or attention (the U-Nets and Restormer here).
    """
    import torch.nn as nn

    radius = 0
    for m in model.modules():
        name = type(m).__name__.lower()
        if (
            "attention" in name
            or name == "mdta"
            or isinstance(
                m, (nn.PixelUnshuffle, nn.AvgPool2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
            )
        ):
            return None
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            if isinstance(m, nn.ConvTranspose2d) or max(m.stride) > 1:
                return None
            radius += sum(d * (k - 1) // 2 for k, d in zip(m.kernel_size, m.dilation)) // 2
    return radius


CPU_TILE_CACHE_BYTES = 18 << 20
"""Bytes of one feature map of an automatic CPU tile (18 MiB: 384 px for the bundled FISR's 32
channels). Per-pixel cost on the CPU rises once the feature maps leave the cache (measured on the
shared 2-core machine, bundled FISR, one thread: one 2048^2 tile took 4.3x the time of 36 fitted
384-px tiles, interleaved, benchmarks/tiling_overhead.py), so CPU tiles stay this size and the
overlap is paid instead."""


def auto_tile(model, *, device: str = "cpu", scale: int = 1) -> int:
    """Tile side (input pixels) for ``model`` when none is given.

    - Networks whose receptive field is not bounded by their convolutions (U-Nets, attention:
      :func:`receptive_radius` is None): 256, the tile their outputs were checked with
      (:func:`infer_job` does not tile them below 384 px, as before).
    - Plain convolution stacks (the bundled FISR), on the CPU: the side at which one feature map
      of the widest layer fills :data:`CPU_TILE_CACHE_BYTES` (cache-sized; >= 128).
    - On a CUDA device: the largest side (a multiple of 64, <= 4096) whose activations, estimated
      as 6 float32 maps of the widest layer plus 8 output-grid maps per pixel, fit a quarter of the
      free memory: few tiles, so the overlap is a small part of the work.
    """
    import torch
    import torch.nn as nn

    if receptive_radius(model) is None:
        return 256
    widest = max([m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)] or [16])
    if not device.startswith("cuda"):
        return int(max(128, math.sqrt(CPU_TILE_CACHE_BYTES / (4 * widest)) // 32 * 32))
    per_px = 6 * 4 * widest + 8 * 4 * max(1, int(scale)) ** 2
    try:
        free, _ = torch.cuda.mem_get_info(torch.device(device))
    except Exception:  # pragma: no cover - device query failed: a conservative 1 GiB
        free = 4 << 30
    side = int(math.sqrt(free / 4 / per_px)) // 64 * 64
    return int(min(4096, max(256, side)))


def _ramp(length: int, ramp: int, rise: bool, fall: bool) -> np.ndarray:
    """1-D tile weight: 1 inside; on sides that overlap another tile, ``ramp`` pixels made of
    zeros (the outer half: pixels whose receptive field met the tile's padding) then a
    raised-cosine rise. The neighbour has weight 1 there, so every pixel stays covered,
    and a network whose receptive field is within ``ramp // 2`` gives exactly the
    untiled result.
    """
    w = np.ones(length, dtype=np.float64)
    r = min(ramp, length // 2)
    if r > 0:
        z = r // 2
        c = r - z
        t = np.concatenate([np.zeros(z), 0.5 - 0.5 * np.cos(np.pi * (np.arange(c) + 0.5) / c)])
        if rise:
            w[:r] = t
        if fall:
            w[length - r :] = t[::-1]
    return w


_FROZEN: dict = {}


def _freeze(model, args):
    """A frozen TorchScript trace of ``model`` on ``args`` (one tile shape), or None where it fails.

    Cached (two entries) by the module's class, weights and the input shapes: tracing costs about
    one tile's forward pass, and a restore loads a fresh module, so repeated restores of one
    checkpoint (batch, the widget) would pay it every time.
    """
    import hashlib
    import warnings

    import torch

    h = hashlib.sha1(type(model).__qualname__.encode())
    for t in model.state_dict().values():
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    key = (h.hexdigest(), tuple(tuple(a.shape) for a in args))
    if key in _FROZEN:
        return _FROZEN[key]
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarning on the modules' shape checks
            graph = torch.jit.freeze(torch.jit.trace(model, args, check_trace=False))
    except Exception:  # pragma: no cover - an untraceable module runs eagerly
        graph = None
    while len(_FROZEN) >= 2:
        _FROZEN.pop(next(iter(_FROZEN)))
    _FROZEN[key] = graph
    return graph


def validate_image(data: Any, *, what: str = "image") -> np.ndarray:
    """A 2-D float array of at least ``MIN_SIZE`` pixels a side, or a clear error."""
    arr = np.asarray(data)
    if arr.ndim != 2:
        raise AstroSRError(
            f"{what}: expected a 2-D image, got an array of shape {arr.shape}; pick one plane of a cube first."
        )
    if min(arr.shape) < MIN_SIZE:
        raise AstroSRError(
            f"{what}: {arr.shape[0]}x{arr.shape[1]} pixels is too small to restore (at least {MIN_SIZE}x{MIN_SIZE})."
        )
    if arr.dtype.kind not in "fiu":
        raise AstroSRError(f"{what}: data type {arr.dtype} is not numeric.")
    if not np.isfinite(arr).any():
        raise AstroSRError(f"{what}: all pixels are NaN/blank; nothing to restore.")
    return arr.astype(np.float32, copy=False)


@contextlib.contextmanager
def stop_hooks(model, stop, *, message: str = "restoration stopped inside a tile."):
    """Make a running forward pass honour ``stop``: within the ``with`` block, a forward
    pre-hook on each of ``model``'s blocks (every submodule that has submodules of its own)
    raises :class:`~napari_astrosr.exceptions.StoppedError` once ``stop.is_set()``.

    A network whose single tile takes seconds (Restormer on a CPU) then stops within one
    block instead of at the end of its tile. The hooks are removed on exit; nothing is
    registered for ``stop=NEVER``. Not for TorchScript graphs (hooks do not run there).
    """
    if stop is NEVER or not hasattr(stop, "is_set"):
        yield
        return

    def _hook(_module, _args):
        if stop.is_set():
            raise StoppedError(message)

    handles = [
        m.register_forward_pre_hook(_hook)
        for m in model.modules()
        if m is not model and next(m.children(), None) is not None
    ]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def infer_job(
    model,
    data: np.ndarray,
    *,
    scale: int = 1,
    flux_map: Optional[np.ndarray] = None,
    normalization: Optional[dict] = None,
    tile: Optional[int] = None,
    overlap: Optional[int] = None,
    device: str = "auto",
    precision: str = "auto",
    threads: Optional[int] = None,
    stop=NEVER,
) -> Generator[Progress, None, tuple[np.ndarray, dict]]:
    """Run ``model`` over ``data`` tile by tile; return ``(output, info)``.

    Parameters
    ----------
    model
        A torch module: ``forward(x)`` or, with ``flux_map``, ``forward(x, flux_map)``;
        (B,1,h,w) -> (B,1,scale*h,scale*w).
    data
        2-D image (NaNs allowed) in flux units.
    scale
        The network's own enlargement (1 for same-size networks).
    flux_map
        Flux map on ``data``'s grid (FISR), in flux units; normalised like the image.
    normalization
        The checkpoint's normalisation dict (see module docstring).
    tile, overlap
        Tile side and overlap in input pixels; tiles are spaced evenly (:func:`tile_starts`).
        ``tile=None``: at most :func:`auto_tile` (cache-sized on the CPU: 192 px for the
        bundled FISR; memory-sized on a GPU; 256 for U-Nets/attention), shrunk to the smallest side
        that covers the image with as few tiles (:func:`fit_tile`); its overlap is twice the
        receptive radius, 32..64 (:func:`receptive_radius`), 32 where that is unbounded.
        ``overlap=None`` with a given tile: tile // 8, at least 16.
    device
        ``auto``/``cpu``/``cuda``/``mps``; the device used is in ``info["device"]``.
    precision
        Autocast on GPU (``auto``/``bf16``/``fp16``/``fp32``); CPU always runs fp32.
    threads
        ``torch.set_num_threads`` for this run on CPU (restored afterwards).
    stop
        ``is_set()`` checked before each tile and, for a network run eagerly, before each of
        its blocks (:func:`stop_hooks`); raises :class:`StoppedError`.

    Returns
    -------
    (output, info)
        ``output`` float32 (scale*H, scale*W) in the input's flux units per output pixel;
        ``info`` has device, precision, tiles, tile, overlap, seconds, normalization.
    """
    import torch

    arr = validate_image(data)
    h, w = arr.shape
    dev = pick_device(device)
    filled, mask = fill_invalid(arr)
    params = normalization_params(filled, normalization)
    per_tile = params["kind"] in PER_TILE_KINDS
    # per-tile kinds normalise each tile inside the loop; the whole-image kinds once here
    xn = filled.astype(np.float32, copy=False) if per_tile else normalize(filled, params)
    fmn = None
    if flux_map is not None:
        if flux_map.shape != arr.shape:
            raise AstroSRError(f"flux map shape {flux_map.shape} differs from image {arr.shape}.")
        fmn = (
            np.nan_to_num(flux_map).astype(np.float32, copy=False) if per_tile else normalize_flux_map(flux_map, params)
        )
    rad = receptive_radius(model)
    # automatic tiles fitted to the image: plain convolution stacks only (U-Nets and attention keep
    # today's 256-px tiles and whole images up to 384 px, the outputs their tolerances were set on)
    auto = tile is None and not per_tile and rad is not None
    if tile is None:
        if per_tile:
            tile = params["window"]  # the statistics window the network was trained with
        elif auto:
            tile = auto_tile(model, device=dev, scale=scale)
        else:
            tile = 256 if max(h, w) > 384 else max(h, w)
    tile = int(tile)
    if tile < MIN_SIZE:
        raise AstroSRError(f"--tile {tile}: tiles must be at least {MIN_SIZE} pixels.")
    if overlap is None:
        # auto: twice the receptive radius (the seams then sit where both tiles barely see their
        # padding), 32..64
        overlap = min(2 * AUTO_OVERLAP, max(AUTO_OVERLAP, 8 * math.ceil(rad / 4))) if auto else max(16, tile // 8)
    overlap = int(min(overlap, tile // 2))
    if auto:  # tiles as small as covers the image with the same count (a given --tile is kept as is)
        th, tw = fit_tile(h, tile, overlap), fit_tile(w, tile, overlap)
    else:
        th, tw = min(tile, h), min(tile, w)
    ys, xs = tile_starts(h, th, overlap), tile_starts(w, tw, overlap)
    n_tiles = len(ys) * len(xs)
    s = int(scale)
    ramp = overlap * s // 2 if n_tiles > 1 else 0
    # separable weights: the total weight is the outer product of per-axis sums (tiles form a grid)
    wy_list = [_ramp(th * s, ramp, y0 > 0, y0 + th < h) for y0 in ys]
    wx_list = [_ramp(tw * s, ramp, x0 > 0, x0 + tw < w) for x0 in xs]
    wy_tot = np.zeros(h * s)
    wx_tot = np.zeros(w * s)
    for y0, wy in zip(ys, wy_list):
        wy_tot[y0 * s : (y0 + th) * s] += wy
    for x0, wx in zip(xs, wx_list):
        wx_tot[x0 * s : (x0 + tw) * s] += wx
    out = np.zeros((h * s, w * s), dtype=np.float32)

    old_threads = torch.get_num_threads()
    if threads and dev == "cpu":
        torch.set_num_threads(int(threads))
    amp, prec = autocast_context(dev, precision)
    t0 = time.perf_counter()
    model = model.to(dev).eval()
    fmt = torch.contiguous_format
    fast = None
    if dev == "cpu" and rad is not None and not per_tile and any(p.dim() == 4 for p in model.parameters()):
        # plain conv stacks on the CPU: channels-last weights and a frozen TorchScript graph of the
        # tile shape (all tiles share it); measured 1.2x (quiet machine) to 2.3x (loaded) the eager
        # contiguous module per pixel (bundled FISR; outputs equal to 2e-6 of the peak); on a copy,
        # so the caller's module keeps its layout
        import copy

        model = copy.deepcopy(model).to(memory_format=torch.channels_last)
        fmt = torch.channels_last
        fast = {}
    try:
        k = 0
        for y0, wy in zip(ys, wy_list):
            for x0, wx in zip(xs, wx_list):
                if stop.is_set():
                    raise StoppedError(f"restoration stopped after {k} of {n_tiles} tiles.")
                xa = np.ascontiguousarray(xn[y0 : y0 + th, x0 : x0 + tw])
                if per_tile:
                    t_med, t_std = tile_stats(xa, params["floor"])
                    xa = ((xa - t_med) / t_std).astype(np.float32)
                xt = torch.from_numpy(xa)[None, None].to(dev).contiguous(memory_format=fmt)
                args = (xt,)
                if fmn is not None:
                    fa = np.ascontiguousarray(fmn[y0 : y0 + th, x0 : x0 + tw])
                    if per_tile:
                        fa = (fa / t_std).astype(np.float32)  # a flux map has no offset
                    args = (xt, torch.from_numpy(fa)[None, None].to(dev).contiguous(memory_format=fmt))
                if fast is not None and "graph" not in fast:
                    fast["graph"] = _freeze(model, args)
                net = fast["graph"] if fast is not None and fast["graph"] is not None else model
                hooks = stop_hooks(model, stop) if net is model else contextlib.nullcontext()
                with torch.inference_mode(), amp, hooks:
                    yt = net(*args)
                yt = yt.float().cpu().numpy()[0, 0]
                if yt.shape != (th * s, tw * s):
                    raise AstroSRError(
                        f"network returned {yt.shape} for a {th}x{tw} tile; expected x{s}. "
                        "Is --scale right for this model?"
                    )
                if not np.isfinite(yt).all():
                    raise AstroSRError(
                        "network produced NaN/inf (diverged weights or fp16 overflow); try --device cpu."
                    )
                if per_tile:
                    yt = yt * np.float32(t_std) + np.float32(t_med)  # back to (surface-brightness) flux units
                out[y0 * s : (y0 + th) * s, x0 * s : (x0 + tw) * s] += (yt * np.outer(wy, wx)).astype(np.float32)
                k += 1
                yield Progress(k, n_tiles, f"tile {k}/{n_tiles} on {dev}")
    finally:
        if threads and dev == "cpu":
            torch.set_num_threads(old_threads)
    if n_tiles > 1:
        for r0 in range(0, out.shape[0], 512):  # in row blocks: no full-size weight array
            out[r0 : r0 + 512] /= np.outer(wy_tot[r0 : r0 + 512], wx_tot).astype(np.float32)
    # undo the normalisation in place (memory), then surface brightness -> flux per output pixel
    if per_tile:
        out /= np.float32(s * s)
    else:
        out *= np.float32(params["scale"] / (s * s))
        out += np.float32(params["offset"] / (s * s))
    if mask is not None:
        out[enlarge_mask(mask, s)] = np.nan
    info = {
        "device": dev,
        "precision": prec,
        "tiles": n_tiles,
        "tile": tile,
        "tile_shape": (th, tw),
        "overlap": overlap,
        "seconds": time.perf_counter() - t0,
        "normalization": params,
        "masked_pixels": int(mask.sum()) if mask is not None else 0,
    }
    return out, info


def infer(model, data: np.ndarray, **kwargs) -> tuple[np.ndarray, dict]:
    """Synchronous :func:`infer_job`."""
    from ..progress import run

    return run(infer_job(model, data, **kwargs))

"""The tiling engine: restore a 2-D (dask) array block by block with overlap, each block by a given function.

:func:`tile_restore` cuts the image into overlapping blocks (``depth`` input pixels of real neighbour data on
each inner side), restores every block with ``restore_array`` (in the package, always
:func:`napari_astrosr.restoration.restore`) and cuts the halo from the result, lazily, as a dask array. The
per-array restore is a parameter, not an import, so that ``restoration.restore`` can hand a dask array to
this module while this module imports no job: the dependency goes one way (issue 19). The public
:func:`napari_astrosr.restore_jobs.tiling.restore_dask` binds it to ``restoration.restore``.

Also here, because the streaming and batch jobs share them: :class:`RestoreParams` (the options as plain,
picklable, hashable values), the per-worker cache of loaded networks, the whole-image choices made once
before tiling (the projection's noise, the sky gate's rms, a network's normalisation) and
:func:`default_depth`. Moved from ``napari_astrosr.batch`` (which re-exports them).

Flux: every output block is the in-memory restoration of its padded input cut to the block, so per-block and
total flux follow the method's flux behaviour; when ``depth`` covers the method's influence radius the tiled
output equals the in-memory one to float32 precision (``flux_exact`` is solved per block: see
:mod:`napari_astrosr.batch`).
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from ..exceptions import AstroSRError
from ..restore_options import NETWORKS, RestoreOptions, options_from_kwargs, projection_gain, resolve_noise

PathLike = Union[str, os.PathLike]

DEFAULT_CHUNK = 1024
"""Default block size (input pixels per side) of the tiled path."""

_HASH_BLOCK = 8 * 1024**2


# --------------------------------------------------------------------------------------------------
# parameters, per-worker cache
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RestoreParams:
    """The options of one restoration, as passed to :func:`napari_astrosr.restoration.restore`.

    Frozen and made of plain values so it pickles to Dask workers and hashes as a cache key.
    """

    method: str
    scale: int = 2
    model: Optional[str] = None
    flux_exact: bool = False
    psf: Optional[str] = None
    device: str = "cpu"
    tile: Optional[int] = None
    norm: Optional[tuple] = None
    """Networks, tiled: whole-image normalisation ``((key, value), ...)`` applied to every block."""
    flux_noise: Union[None, float, str] = None
    """Noise-aware projection: sigma per input pixel, or ``"auto"`` (resolved per image, once, before tiling)."""
    keep_sky: Optional[tuple] = None
    """Networks: the sky gate's ``(low, high)`` sigma levels (``core.skygate``), or None."""
    sky_rms: Optional[float] = None
    """The sky gate's noise rms of the upsampled input (resolved per image, once, before tiling)."""

    @classmethod
    def from_options(cls, opts: RestoreOptions, *, norm: Optional[tuple] = None) -> RestoreParams:
        """The plain-value form of a :class:`~napari_astrosr.restore_options.RestoreOptions`, its defaults
        resolved (``flux_exact`` is whether it projects, ``keep_sky`` the sky gate's levels or None).
        """
        psf = opts.psf
        if psf is not None and not isinstance(psf, str):
            raise AstroSRError("batch/tiled restorations take --psf as a spec or a file path, not an array.")
        return cls(
            method=opts.method,
            scale=int(opts.scale),
            model=opts.model,
            flux_exact=opts.projects,
            psf=psf,
            device=opts.device,
            tile=opts.tile,
            norm=norm,
            flux_noise=opts.flux_noise if opts.projects else None,
            keep_sky=opts.sky_levels,
            sky_rms=opts.sky_rms if opts.sky_levels is not None else None,
        )

    def restore_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``restoration.restore`` / ``restore_job``: every choice explicit, so that a
        worker makes the same one as the client did.
        """
        kw: dict[str, Any] = dict(method=self.method, scale=self.scale, device=self.device)
        if self.model is not None:
            kw["model"] = self.model
        if self.psf is not None:
            kw["psf"] = self.psf
        if self.tile is not None:
            kw["tile"] = self.tile
        if bool(self.flux_exact) != RestoreOptions(method=self.method, scale=self.scale, psf=self.psf).projects:
            kw["project"] = bool(self.flux_exact)  # only a choice that differs from the default (errors stay its own)
        if self.flux_exact and self.flux_noise is not None:
            kw["flux_noise"] = self.flux_noise
        if self.is_network():
            kw["keep_sky"] = tuple(self.keep_sky) if self.keep_sky is not None else False
            if self.keep_sky is not None and self.sky_rms is not None:
                kw["sky_rms"] = self.sky_rms
        return kw

    def fingerprint(self) -> dict[str, Any]:
        """What decides the output's pixels: method, scale, model *content*, flux-exact, PSF.

        The model and a PSF given as a file are identified by their sha256, not their path, so a
        retrained checkpoint at the same path is not mistaken for the old one. Device and inference
        tile size are left out: they change timings, not (beyond float rounding) the result.
        """
        fp: dict[str, Any] = {"method": self.method, "scale": int(self.scale), "flux_exact": bool(self.flux_exact)}
        ckpt = self.checkpoint()
        fp["model"] = file_sha256(ckpt) if ckpt else None
        psf = self.psf
        if psf is not None and Path(str(psf)).is_file():
            psf = "sha256:" + file_sha256(psf)
        fp["psf"] = psf
        if self.flux_exact and self.flux_noise is None:  # the default: measured per file
            fp["flux_noise"] = "auto"
        elif self.flux_noise is not None:  # absent otherwise: fingerprints of earlier batches stay valid
            fp["flux_noise"] = self.flux_noise if isinstance(self.flux_noise, str) else float(self.flux_noise)
        if self.keep_sky is not None:  # likewise
            fp["keep_sky"] = [float(v) for v in self.keep_sky]
        return fp

    def is_network(self) -> bool:
        """Whether the method is a network (its weights are loaded once per worker)."""
        return self.method in NETWORKS

    def checkpoint(self) -> Optional[str]:
        """The checkpoint file used: ``model``, or the bundled one for a network, else None."""
        if self.model:
            return self.model
        if not self.is_network():
            return None
        from ..models.checkpoints import bundled_checkpoint

        path = bundled_checkpoint(self.method, int(self.scale))
        return str(path) if path is not None else None


def file_sha256(path: PathLike) -> str:
    """sha256 (hex) of a file's bytes, read in 8 MiB blocks (constant memory)."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(_HASH_BLOCK), b""):
                h.update(block)
    except OSError as exc:
        raise AstroSRError(f"{path}: cannot be read ({exc.strerror or exc}).") from exc
    return h.hexdigest()


# One cache per worker process (a module-level dict lives once per process; with threads_per_worker>1
# the lock keeps two threads from loading the same model twice).
_CACHE: dict[tuple, Callable[..., Any]] = {}
_CACHE_LOCK = threading.Lock()


def restorer(params: RestoreParams, restore_array: Callable[..., Any]) -> Callable[..., Any]:
    """A callable ``f(data, *, wcs=None, header=None, source=None) -> RestoreResult`` for these parameters.

    Built once per worker process and reused for every file and block: for a network the
    checkpoint is loaded here once (``models.checkpoints.load_checkpoint``) and the loaded module
    is handed to ``restore_array`` (``restoration.restore``, which accepts a module as ``model``), so a
    worker never re-reads weights per file or per block.
    """
    key = (
        restore_array,
        params.method,
        params.model,
        params.scale,
        params.device,
        params.flux_exact,
        params.psf,
        params.tile,
        params.norm,
        params.flux_noise,
        params.keep_sky,
        params.sky_rms,
    )
    fn = _CACHE.get(key)
    if fn is not None:
        return fn
    with _CACHE_LOCK:
        fn = _CACHE.get(key)
        if fn is None:
            kwargs = params.restore_kwargs()
            if params.is_network():
                kwargs["model"] = _load_network(params)
                if params.norm is not None:
                    kwargs["model"] = _fixed_norm(kwargs["model"], dict(params.norm))

            def fn(data, *, wcs=None, header=None, source=None, _kw=kwargs):  # noqa: E306
                return restore_array(data, wcs=wcs, header=header, source=source, **_kw)

            _CACHE[key] = fn
    return fn


def _load_network(params: RestoreParams):
    from ..models.checkpoints import load_checkpoint

    ckpt = params.checkpoint()
    if ckpt is None:
        raise AstroSRError(
            f"no bundled weights for {params.method} x{params.scale}; pass --model CKPT.pt (written by astrosr train)."
        )
    net, meta = load_checkpoint(ckpt, device="cpu", expect_name=params.method, expect_scale=int(params.scale))
    # restore() reads the normalisation of an in-memory module from this attribute
    net.normalization = meta.get("normalization") or {"kind": "median_std"}
    return net


def _fixed_norm(net, norm: dict):
    """Wrap ``net`` so it normalises with fixed (whole-image) statistics instead of the block's own.

    ``infer_job`` normalises with the statistics of the image it is given; a block's differ from the
    whole image's, and a network is not linear, so blocks would disagree at seams and with the
    in-memory restore. The wrapper applies the whole image's ``(x - offset) / scale`` (and the flux
    map's ``/ scale``) inside the module and undoes it on the output, and declares
    ``normalization = {"kind": "none"}`` so infer_job adds nothing: the same arithmetic as in memory.
    """
    import torch

    class FixedNorm(torch.nn.Module):
        def __init__(self, inner, offset: float, scale: float) -> None:
            super().__init__()
            self.inner, self.offset, self.scale = inner, float(offset), float(scale)
            self.normalization = {"kind": "none"}

        def forward(self, x, flux_map=None):
            xn = (x - self.offset) / self.scale
            y = self.inner(xn) if flux_map is None else self.inner(xn, flux_map / self.scale)
            return y * self.scale + self.offset

    return FixedNorm(net, norm["offset"], norm["scale"])


def network_normalization(data: Any, params: RestoreParams, *, max_pixels: int = 4_000_000) -> Optional[tuple]:
    """The whole-image normalisation a network would use in memory, for tiled restoration.

    Mirrors ``restoration.restore_job`` + ``inference.infer_job``: statistics of the NaN-filled input
    (upsampling networks) or of its flux-conserving bicubic upsample (same-size networks). Exact for
    images up to ``max_pixels``; larger ones are subsampled on a regular grid (every k-th pixel), so
    every block still gets the *same* statistics (no seams), close to the in-memory ones.
    Returns None for classical methods and per-tile normalisations (``patch_median_std``).
    """
    if not params.is_network():
        return None
    from ..models.checkpoints import read_sidecar
    from ..models.inference import fill_invalid, normalization_params
    from ..models.registry import get_spec

    ckpt = params.checkpoint()
    if ckpt is None:
        raise AstroSRError(f"no bundled weights for {params.method} x{params.scale}; pass --model CKPT.pt.")
    norm = read_sidecar(ckpt).get("normalization")
    from ..models.inference import PER_TILE_KINDS

    if (norm or {}).get("kind") in PER_TILE_KINDS:
        return None  # per-tile statistics: each block's tiles normalise themselves, as in memory
    step = max(1, int(math.ceil(math.sqrt(data.shape[0] * data.shape[1] / float(max_pixels)))))
    sample = data[::step, ::step]
    sample = np.asarray(sample.compute() if hasattr(sample, "compute") else sample, dtype=np.float32)
    if not get_spec(params.method).upsamples and params.scale > 1:
        from ..core.resample import upsample

        sample = upsample(sample, int(params.scale), method="bicubic")
    filled, _ = fill_invalid(sample)
    p = normalization_params(filled, norm)
    return (("offset", float(p["offset"])), ("scale", float(p["scale"])))


def clear_cache() -> None:
    """Forget the loaded models of this process (tests, or to free memory)."""
    with _CACHE_LOCK:
        _CACHE.clear()


def default_depth(params: RestoreParams) -> int:
    """Overlap (input pixels per inner block side) covering the method's influence radius.

    - interpolation (bicubic/lanczos): the cubic-spline prefilter decays by 0.268 per pixel, below
      float32 rounding after ~14 pixels; 16 is exact to float32 in the tests.
    - a PSF adds its half width; iterative deconvolution spreads by that per iteration, which
      converges in practice within a few PSF widths; back-projection / flux-exact projection are
      solved by CG (global), whose influence decays with distance: 96 brings them to float32 level.
    - networks: the receptive field of the bundled models is < 40 input pixels; 48 leaves margin.
    """
    depth = 16
    m = params.method.lower()
    if m not in ("bicubic", "lanczos", "nearest"):
        depth = 48
    if params.psf:
        depth += 16
    if params.flux_exact or m in ("backprojection", "richardson-lucy"):
        # projections are solved by CG over the whole block: measured on a 240x240 star field (chunk 120,
        # Gaussian PSF 1 px) tiled vs in memory differ by 8.6e-5 of the peak at depth 64, 4.5e-7 at 96
        # (richardson-lucy, 30 iterations: 1.6e-4 at 64, 2e-10 at 96)
        depth = max(depth + 32, 96)
    return depth


# --------------------------------------------------------------------------------------------------
# dask arrays
# --------------------------------------------------------------------------------------------------


def ckpt_hash(params: RestoreParams) -> Optional[str]:
    """sha256 of the checkpoint the parameters use (the provenance card), or None for classical methods."""
    ckpt = params.checkpoint()
    return file_sha256(ckpt) if ckpt else None


def _restore_block(
    block: np.ndarray, *, params: RestoreParams, depth: int, restore_array: Callable[..., Any], block_info=None
) -> np.ndarray:
    """Restore one overlapped block and cut the halo (in output pixels) from the result."""
    info = block_info[0]
    (iy, ix), (ny, nx) = info["chunk-location"], info["num-chunks"]
    top, bottom = (depth if iy > 0 else 0), (depth if iy < ny - 1 else 0)
    left, right = (depth if ix > 0 else 0), (depth if ix < nx - 1 else 0)
    s = int(params.scale)
    out_shape = ((block.shape[0] - top - bottom) * s, (block.shape[1] - left - right) * s)
    if not np.isfinite(block).any():
        # an all-blank block (mosaic border): nothing to restore, and some methods refuse it
        return np.full(out_shape, np.nan, dtype=np.float32)
    res = restorer(params, restore_array)(np.ascontiguousarray(block, dtype=np.float32))
    out = np.asarray(res.data, dtype=np.float32)
    if out.shape != (block.shape[0] * s, block.shape[1] * s):
        raise AstroSRError(
            f"method {params.method!r}: output shape {out.shape} is not {s}x the block {block.shape}; "
            "it cannot be restored tile by tile."
        )
    return out[top * s : out.shape[0] - bottom * s, left * s : out.shape[1] - right * s]


def resolve_flux_noise(
    flux_noise: Union[None, float, str], image: Any, *, scale: int = 1, psf: Any = None
) -> Union[float, str]:
    """``flux_noise`` for a whole image, decided once on the central (<= 1024^2) section: a sigma (noise-aware)
    or ``"exact"`` (:func:`~napari_astrosr.restore_options.resolve_noise`).

    One choice for the whole image, so that every tile of a tiled restoration makes the same projection (a
    per-tile estimate would differ from tile to tile). ``scale`` and ``psf`` (a kernel or spec) give the exact
    projection's noise gain, which rules out the exact choice where it would amplify the noise (scale 1) and
    allows it on noisy data at x4.
    """
    section = _central_section(image).astype(np.float32)
    gain = projection_gain(section.shape, scale=scale, psf=psf)
    choice = resolve_noise(section, flux_noise, gain=gain, scale=scale)
    return choice.sigma if choice.mode == "noise-aware" else "exact"


def resolve_for_image(opts: RestoreOptions, image: Any) -> RestoreOptions:
    """``opts`` with the per-image measurements made once (the projection's noise choice, the sky gate's rms),
    so that every block of a tiled restoration makes the same choices as the in-memory one would.
    """
    upd: dict[str, Any] = {}
    if opts.projects and opts.flux_noise in (None, "auto"):
        upd["flux_noise"] = resolve_flux_noise(opts.flux_noise, image, scale=opts.scale, psf=opts.psf)
    levels = opts.sky_levels
    if opts.is_network:
        upd["keep_sky"] = levels if levels is not None else False
        if levels is not None and opts.sky_rms is None:
            upd["sky_rms"] = resolve_sky_rms(image, opts.scale)
    return opts.model_copy(update=upd)


def _central_section(image: Any, half: int = 512) -> np.ndarray:
    """The central (up to ``2 half`` square) section of a 2-D array-like (numpy, dask, FITS section), read."""
    ny, nx = image.shape
    y0, x0 = max(0, ny // 2 - half), max(0, nx // 2 - half)
    return np.asarray(image[y0 : y0 + 2 * half, x0 : x0 + 2 * half], dtype=np.float64)


def resolve_sky_rms(image: Any, scale: int) -> float:
    """The sky gate's noise rms for a whole image, measured once on the central (<= 1024^2) section's
    flux-conserving bicubic upsample (what ``restore_job`` measures on the whole image in memory), so
    that every tile gates against the same noise.
    """
    from ..core.skygate import sky_base, sky_rms
    from ..models.inference import fill_invalid

    filled, _ = fill_invalid(_central_section(image))
    return sky_rms(sky_base(filled, scale))


def tile_restore(
    darr: Any,
    *,
    restore_array: Callable[..., Any],
    options: Optional[RestoreOptions] = None,
    depth: Optional[int] = None,
    chunks: Union[int, tuple, str, None] = None,
    **option_kwargs: Any,
):
    """Restore a 2-D (dask) array block by block with overlap; returns a lazy dask array.

    Parameters
    ----------
    darr
        2-D ``dask.array.Array`` (or anything ``dask.array.asarray`` accepts, e.g. a numpy array
        or a memory map), input pixels (y, x).
    restore_array
        Restores one in-memory block: ``restore_array(block, wcs=None, header=None, source=None, **kwargs)``
        returning an object with ``.data`` (``restoration.restore``). A module-level function, so that it
        pickles to Dask workers by reference.
    options, **option_kwargs
        The restore options (:class:`~napari_astrosr.restore_options.RestoreOptions`, or its fields by
        keyword as in :func:`napari_astrosr.restoration.restore`; ``device`` defaults to ``cpu`` here, ``psf``
        is a spec string or a file path, ``tile`` the network inference tile *inside* each block). The
        projection's noise choice (``flux_noise`` None/``"auto"``) and the sky gate's rms (``sky_rms``) are
        measured once, on the central (up to 1024^2) section of the whole image, and every block uses them;
        the gate's background is sep's mesh of each padded block, so tiles agree with the in-memory result
        to a small fraction of the noise, not bit for bit (tests/test_batch.py).
    depth
        Halo in input pixels added on each inner side of every block; default
        :func:`default_depth`. Make it at least the method's influence radius for the tiled result to
        equal the in-memory one.
    chunks
        Rechunk the input first (default: keep ``darr``'s chunks, or 1024 for non-dask input).
        Chunks smaller than ``depth`` are merged with neighbours.

    Returns
    -------
    dask.array.Array
        float32, shape ``(scale*ny, scale*nx)``, chunks ``scale`` times the input's. Nothing is
        computed until you call ``.compute()``, ``.to_zarr()``, ``dask.array.store`` ...

    Notes
    -----
    Flux: every output block is the in-memory restoration of its padded input cut to the block, so
    per-block and total flux follow the method's flux behaviour. WCS/header are not carried by a
    dask array: use :func:`napari_astrosr.restore_jobs.stream.restore_fits_tiled` for files.
    """
    from .._extras import require

    require("dask", extra="batch", what="restore_dask (tiled restoration)")
    import dask.array as da
    from dask.array.overlap import ensure_minimum_chunksize

    if options is None:
        options = options_from_kwargs(**({"device": "cpu"} | option_kwargs))
    elif option_kwargs:
        raise AstroSRError(f"restore_dask: give options= or keywords, not both ({', '.join(option_kwargs)}).")
    scale = options.scale
    if not isinstance(darr, da.Array):
        darr = da.asarray(darr, chunks=chunks or DEFAULT_CHUNK)
    elif chunks is not None:
        darr = darr.rechunk(chunks)
    if darr.ndim != 2:
        raise AstroSRError(f"restore_dask: needs a 2-D image, got shape {darr.shape}.")
    if darr.dtype != np.float32:
        darr = darr.astype(np.float32)
    params = RestoreParams.from_options(resolve_for_image(options, darr))
    if params.is_network():
        from dataclasses import replace

        params = replace(params, norm=network_normalization(darr, params))
    depth = default_depth(params) if depth is None else int(depth)
    if depth < 0:
        raise AstroSRError(f"depth={depth}: must be >= 0.")
    if depth:
        # every chunk must be at least `depth` wide so a halo comes from one neighbour only
        new = tuple(ensure_minimum_chunksize(min(depth, n), c) for c, n in zip(darr.chunks, darr.shape))
        if new != darr.chunks:
            darr = darr.rechunk(new)
        padded = da.overlap.overlap(darr, depth={0: depth, 1: depth}, boundary="none")
    else:
        padded = darr
    s = int(scale)
    out_chunks = tuple(tuple(c * s for c in axis) for axis in darr.chunks)
    return padded.map_blocks(
        _restore_block,
        params=params,
        depth=depth,
        restore_array=restore_array,
        chunks=out_chunks,
        dtype=np.float32,
        meta=np.empty((0, 0), dtype=np.float32),
        name=f"astrosr-restore-{params.method}",
    )

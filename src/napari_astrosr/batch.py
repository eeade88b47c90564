"""Batch and very-large-image restoration on Dask (``astrosr batch``).

Three layers, each usable on its own:

- :func:`restore_dask` restores a 2-D dask array block by block with overlap and returns a lazy
  dask array on the ``scale`` times finer grid. Every block is restored with its neighbours' pixels
  around it (``depth`` input pixels on each inner side) by the one public entry point,
  :func:`napari_astrosr.restoration.restore`, and the halo is cut from the result. Where the method's
  influence radius (interpolation kernel, PSF, iterations, network receptive field) is smaller than
  ``depth``, the tiled result equals the in-memory restore (``tests/test_batch.py`` proves it);
  image edges are real edges in both, because blocks are padded only with real neighbour data.
- :func:`restore_fits_tiled` streams a FITS file larger than memory: the input is read in sections
  from the memory-mapped file (astropy ``section``; uncompressed or tile-compressed files), the output
  FITS is pre-allocated with its final header in a temporary file next to the target, written section
  by section through ``numpy.memmap`` and renamed into place only when complete. Peak memory is a few
  blocks, not the image (measured in ``docs/results_batch.md``).
- :func:`batch_job` restores many files on a Dask distributed cluster (a ``LocalCluster`` or any
  scheduler address): one task per file, retried once on failure, outputs written atomically, files
  already done skipped by a content hash stored in the output header (``ASRHASH``).

Flux: the tiled path changes nothing about flux beyond what the method does in memory; total and
per-source flux of the tiled output equal the in-memory output to float32 precision when ``depth`` covers
the method's influence radius. ``flux_exact=True`` is the exception: its projection is solved by conjugate
gradients over the whole image, so tile by tile it is solved per block (each block then reproduces its
own input exactly through the forward model, which is the same constraint, but the least-change solution
differs slightly near block seams); the difference is measured in the tests and documented.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import math
import os
import threading
import time
import warnings
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from .core.atomic import atomic_output, remove_stale_temporaries
from .exceptions import AstroSRError
from .progress import NEVER, Progress
from .restore_options import NETWORKS, RestoreOptions, options_from_kwargs, resolve_noise

PathLike = Union[str, os.PathLike]

HASH_KEY = "ASRHASH"
"""Output header keyword holding the content hash of (input bytes, method, parameters)."""

DEFAULT_CHUNK = 1024
"""Default block size (input pixels per side) of the tiled path."""

DEFAULT_MAX_MEMORY = 2 * 1024**3
"""Files whose input + output arrays exceed this (bytes) are restored tile by tile in the batch."""

_HASH_BLOCK = 8 * 1024**2


# --------------------------------------------------------------------------------------------------
# parameters, hashing, per-worker cache
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
        from .training.checkpoints import bundled_checkpoint

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


def content_hash(path: PathLike, params: RestoreParams) -> str:
    """sha256 (hex, 64 characters) of the input file's bytes plus the restoration fingerprint."""
    h = hashlib.sha256()
    h.update(file_sha256(path).encode())
    h.update(json.dumps(params.fingerprint(), sort_keys=True).encode())
    return h.hexdigest()


# One cache per worker process (a module-level dict lives once per process; with threads_per_worker>1
# the lock keeps two threads from loading the same model twice).
_CACHE: dict[tuple, Callable[..., Any]] = {}
_CACHE_LOCK = threading.Lock()


def _restorer(params: RestoreParams) -> Callable[..., Any]:
    """A callable ``f(data, *, wcs=None, header=None) -> RestoreResult`` for these parameters.

    Built once per worker process and reused for every file and block: for a network the
    checkpoint is loaded here once (``training.checkpoints.load_checkpoint``) and the loaded module
    is handed to ``restoration.restore`` (which accepts a module as ``model``), so a worker never
    re-reads weights per file or per block.
    """
    key = (
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
            from . import restoration

            kwargs = params.restore_kwargs()
            if params.is_network():
                kwargs["model"] = _load_network(params)
                if params.norm is not None:
                    kwargs["model"] = _fixed_norm(kwargs["model"], dict(params.norm))

            def fn(data, *, wcs=None, header=None, source=None, _kw=kwargs):  # noqa: E306
                return restoration.restore(data, wcs=wcs, header=header, source=source, **_kw)

            _CACHE[key] = fn
    return fn


def _load_network(params: RestoreParams):
    from .training.checkpoints import load_checkpoint

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
    from .models.registry import get_spec
    from .training.checkpoints import read_sidecar
    from .training.inference import fill_invalid, normalization_params

    ckpt = params.checkpoint()
    if ckpt is None:
        raise AstroSRError(f"no bundled weights for {params.method} x{params.scale}; pass --model CKPT.pt.")
    norm = read_sidecar(ckpt).get("normalization")
    from .training.inference import PER_TILE_KINDS

    if (norm or {}).get("kind") in PER_TILE_KINDS:
        return None  # per-tile statistics: each block's tiles normalise themselves, as in memory
    step = max(1, int(math.ceil(math.sqrt(data.shape[0] * data.shape[1] / float(max_pixels)))))
    sample = data[::step, ::step]
    sample = np.asarray(sample.compute() if hasattr(sample, "compute") else sample, dtype=np.float32)
    if not get_spec(params.method).upsamples and params.scale > 1:
        from .core.resample import upsample

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
# dask arrays: restore_dask
# --------------------------------------------------------------------------------------------------


def _restore_array(data: np.ndarray, params: RestoreParams, *, wcs=None, header=None, source=None):
    return _restorer(params)(data, wcs=wcs, header=header, source=source)


def _restore_block(block: np.ndarray, *, params: RestoreParams, depth: int, block_info=None) -> np.ndarray:
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
    res = _restore_array(np.ascontiguousarray(block, dtype=np.float32), params)
    out = np.asarray(res.data, dtype=np.float32)
    if out.shape != (block.shape[0] * s, block.shape[1] * s):
        raise AstroSRError(
            f"method {params.method!r}: output shape {out.shape} is not {s}x the block {block.shape}; "
            "it cannot be restored tile by tile."
        )
    return out[top * s : out.shape[0] - bottom * s, left * s : out.shape[1] - right * s]


def resolve_flux_noise(flux_noise: Union[None, float, str], image: Any) -> Union[float, str]:
    """``flux_noise`` for a whole image, decided once on the central (<= 1024^2) section: a sigma (noise-aware)
    or ``"exact"`` (:func:`~napari_astrosr.restore_options.resolve_noise`).

    One choice for the whole image, so that every tile of a tiled restoration makes the same projection (a
    per-tile estimate would differ from tile to tile).
    """
    choice = resolve_noise(_central_section(image).astype(np.float32), flux_noise)
    return choice.sigma if choice.mode == "noise-aware" else "exact"


def resolve_for_image(opts: RestoreOptions, image: Any) -> RestoreOptions:
    """``opts`` with the per-image measurements made once (the projection's noise choice, the sky gate's rms),
    so that every block of a tiled restoration makes the same choices as the in-memory one would.
    """
    upd: dict[str, Any] = {}
    if opts.projects and opts.flux_noise in (None, "auto"):
        upd["flux_noise"] = resolve_flux_noise(opts.flux_noise, image)
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
    from .core.skygate import sky_base, sky_rms
    from .training.inference import fill_invalid

    filled, _ = fill_invalid(_central_section(image))
    return sky_rms(sky_base(filled, scale))


def restore_dask(
    darr: Any,
    *,
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
    dask array: use :func:`restore_fits_tiled` for files.
    """
    from ._extras import require

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
        chunks=out_chunks,
        dtype=np.float32,
        meta=np.empty((0, 0), dtype=np.float32),
        name=f"astrosr-restore-{params.method}",
    )


# --------------------------------------------------------------------------------------------------
# FITS files larger than memory
# --------------------------------------------------------------------------------------------------


class FitsSection:
    """Lazy, picklable 2-D view of one image HDU: ``obj[y0:y1, x0:x1]`` reads just that section.

    Each read opens the file memory-mapped and uses astropy's ``section`` (BSCALE/BZERO applied;
    tile-compressed HDUs decompress only the tiles touched), returning native float32 with BLANK as
    NaN. Holding only a path, it pickles to any Dask worker that sees the same file system.
    """

    def __init__(self, path: PathLike, *, hdu: Optional[int] = None) -> None:
        from astropy.io import fits

        from .core.fits_io import list_image_hdus

        self.path = str(path)
        hdus = list_image_hdus(path)  # clear AstroSRError for unreadable files
        if hdu is None:
            if not hdus:
                raise AstroSRError(f"{path}: no image data in this file.")
            idx, _, shape = hdus[0]
        else:
            match = [h for h in hdus if h[0] == hdu]
            if not match:
                raise AstroSRError(f"{path}: HDU {hdu} holds no image.")
            idx, _, shape = match[0]
        shape = tuple(s for s in shape if s != 1) if len(shape) > 2 else shape
        if len(shape) != 2:
            raise AstroSRError(f"{path}: HDU {idx} has shape {shape}; tiled restoration needs a 2-D image.")
        self.hdu = idx
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(np.float32)
        self.ndim = 2
        with fits.open(self.path, memmap=True, lazy_load_hdus=True) as hdul:
            h = hdul[idx]
            header = h.header
            self._compressed = isinstance(h, fits.CompImageHDU)
            if not self._compressed and not self.path.lower().endswith(".gz"):
                nbytes = int(np.prod(self.shape)) * abs(int(header["BITPIX"])) // 8
                if h._data_offset + nbytes > os.path.getsize(self.path):
                    raise AstroSRError(
                        f"{path}: header claims {nbytes:,} bytes of data but the file is shorter; it is truncated."
                    )
            self._blank = header.get("BLANK") if int(header.get("BITPIX", -32)) > 0 else None
        st = os.stat(self.path)
        self._token = (self.path, self.hdu, st.st_size, st.st_mtime_ns)

    def __dask_tokenize__(self):  # noqa: D105
        return self._token

    def __getitem__(self, key) -> np.ndarray:
        from astropy.io import fits

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(self.path, memmap=True, lazy_load_hdus=True, do_not_scale_image_data=False) as hdul:
                h = hdul[self.hdu]
                sec = h.section
                if len(h.shape) > 2:  # degenerate axes of length 1 in front
                    key = (0,) * (len(h.shape) - 2) + (key if isinstance(key, tuple) else (key,))
                raw = np.asarray(sec[key])
        if self._blank is not None and raw.dtype.kind in "iu":
            bad = raw == self._blank
            raw = raw.astype(np.float32)
            raw[bad] = np.nan
        return np.ascontiguousarray(raw, dtype=np.float32)


class _MemmapWriter:
    """``obj[region] = block`` writes into the data area of a pre-allocated FITS file via memmap.

    Opens and closes the map per write, so it pickles (a path and an offset) and never holds more
    than one block's pages.
    """

    def __init__(self, path: PathLike, offset: int, shape: tuple[int, int]) -> None:
        self.path, self.offset, self.shape = str(path), int(offset), tuple(shape)
        self.dtype = np.dtype(">f4")
        self.ndim = 2

    def __setitem__(self, key, value) -> None:
        mm = np.memmap(self.path, dtype=">f4", mode="r+", offset=self.offset, shape=self.shape)
        try:
            mm[key] = value
            mm.flush()
        finally:
            del mm


def _output_header(header, wcs, shape, provenance: dict, extra_cards: dict):
    """The final header of a float32 2-D output (same cards as ``write_fits`` would write)."""
    from astropy.io import fits

    from .core.fits_io import _strip_wcs, provenance_cards  # same package: reuse the writer's rules

    hdr = fits.Header() if header is None else header.copy()
    for key in (
        "BSCALE",
        "BZERO",
        "BLANK",
        "CHECKSUM",
        "DATASUM",
        "SIMPLE",
        "BITPIX",
        "EXTEND",
        "XTENSION",
        "PCOUNT",
        "GCOUNT",
    ):
        hdr.remove(key, ignore_missing=True, remove_all=True)
    for k in range(1, 10):
        hdr.remove(f"NAXIS{k}", ignore_missing=True, remove_all=True)
    hdr.remove("NAXIS", ignore_missing=True, remove_all=True)
    if wcs is not None:
        _strip_wcs(hdr)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hdr.update(wcs.to_header(relax=True))
    for key, value, comment in provenance_cards(**provenance):
        hdr[key] = (value, comment)
    for key, value in extra_cards.items():
        hdr[key] = value
    # a PrimaryHDU header puts SIMPLE/BITPIX/NAXIS* first, as FITS requires
    hdu = fits.PrimaryHDU(data=np.zeros((1, 1), dtype=np.float32), header=hdr)
    out = hdu.header
    out["NAXIS1"] = int(shape[1])
    out["NAXIS2"] = int(shape[0])
    return out


@dataclass
class TiledResult:
    """What :func:`restore_fits_tiled` did."""

    output: Path
    shape_in: tuple[int, int]
    shape_out: tuple[int, int]
    chunk: int
    depth: int
    n_blocks: int
    seconds: float
    peak_rss: Optional[int]
    """Peak resident memory of this process during the run (bytes; Linux), None if unknown."""
    in_memory_bytes: int
    """Bytes the input + output arrays (float32) would take in memory."""


def _reset_peak_rss() -> bool:
    # Linux >= 4.0: writing 5 to clear_refs resets VmHWM, so the peak of *this* run can be read
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss() -> Optional[int]:
    """Peak resident set size of this process in bytes (VmHWM), or None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def restore_fits_tiled_job(
    path: PathLike,
    out: PathLike,
    *,
    options: Optional[RestoreOptions] = None,
    chunk: int = DEFAULT_CHUNK,
    depth: Optional[int] = None,
    hdu: Optional[int] = None,
    overwrite: bool = False,
    scheduler: Any = None,
    num_workers: Optional[int] = None,
    extra_cards: Optional[dict] = None,
    stop=NEVER,
    **option_kwargs: Any,
) -> Generator[Progress, None, TiledResult]:
    """Restore a FITS image larger than memory, streaming sections from and to disk (a job).

    Parameters
    ----------
    path
        Input FITS (uncompressed files are memory-mapped; ``.fz`` tile-compressed files are read tile
        by tile; ``.gz`` files cannot be read in sections and are decompressed whole).
    out
        Output FITS. Written to a temporary file in the same folder, renamed when complete.
    options, **option_kwargs, depth
        As in :func:`restore_dask` (the projection's noise choice and the sky gate's rms are measured once
        on the file's central section).
    chunk
        Block size in input pixels (memory per block ~ ``(chunk + 2 depth)^2 * scale^2 * 4`` bytes
        times the method's working copies).
    scheduler
        Dask scheduler for the blocks: ``None`` = local threads (``num_workers`` of them; a single
        thread when running inside a Dask worker), ``"synchronous"``, or a ``distributed.Client``
        whose workers see the same file system.
    extra_cards
        More header cards for the output (the batch adds ``ASRHASH``).
    stop
        Checked between block rows; when set, the temporary output is removed and
        :class:`~napari_astrosr.exceptions.StoppedError` is raised.

    Yields
    ------
    Progress
        One event per row of blocks.

    Returns
    -------
    TiledResult
    """
    from ._extras import require

    require("dask", extra="batch", what="the tiled restoration (--tile)")
    import dask
    import dask.array as da

    from .exceptions import StoppedError

    t0 = time.perf_counter()
    if options is None:
        options = options_from_kwargs(**({"device": "cpu"} | option_kwargs))
    elif option_kwargs:
        raise AstroSRError(f"restore_fits_tiled_job: give options= or keywords, not both ({', '.join(option_kwargs)}).")
    method = options.method
    src = FitsSection(path, hdu=hdu)
    out = Path(out)
    if out.exists() and not overwrite:
        raise AstroSRError(f"{out}: already exists. Choose another name or pass overwrite=True (--overwrite).")
    if not out.parent.exists():
        raise AstroSRError(f"{out.parent}: output folder does not exist.")
    try:
        if out.exists() and os.path.samefile(out, path):
            raise AstroSRError(f"{out}: is the input file; refusing to overwrite it. Choose another output name.")
    except OSError:
        pass
    if chunk < 16:
        raise AstroSRError(f"chunk={chunk}: use at least 16 pixels.")
    options = resolve_for_image(options, src)
    params = RestoreParams.from_options(options)
    s = int(options.scale)
    ny, nx = src.shape
    shape_out = (ny * s, nx * s)

    # Probe: restore a small corner with the full header/WCS. It fails fast on a bad method/model
    # before gigabytes are allocated, and yields the output WCS/header/parameters exactly as the
    # in-memory restore would (the WCS scaling does not depend on the image size).
    from astropy.io import fits

    from .core.fits_io import _make_wcs  # the reader's WCS rules, without reading the data

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with fits.open(src.path, memmap=True, lazy_load_hdus=True) as hdul:
            header = hdul[src.hdu].header.copy()
        wcs, _ = _make_wcs(header, 2, Path(src.path).name)
    probe = src[: min(ny, 64), : min(nx, 64)]
    probe_res = _restore_array(probe, params, wcs=wcs, header=header)
    res_params = dict(getattr(probe_res, "params", {}) or {})
    res_params.update({"tiled": True, "chunk": int(chunk)})
    provenance = dict(method=method, parameters=res_params, checkpoint_hash=_ckpt_hash(params), inputs=[str(path)])
    out_header = _output_header(
        getattr(probe_res, "header", None) or header,
        getattr(probe_res, "wcs", None),
        shape_out,
        provenance,
        dict(extra_cards or {}),
    )
    del probe, probe_res

    darr = da.from_array(src, chunks=(chunk, chunk), name=f"fits-{dask.base.tokenize(src)}", asarray=False, fancy=False)
    result = restore_dask(darr, options=options, depth=depth)

    with atomic_output(out) as tmp:
        # pre-allocate: header, then a sparse data area of the final size (zero padding is valid FITS)
        hdr_bytes = out_header.tostring().encode("ascii")
        data_bytes = shape_out[0] * shape_out[1] * 4
        padded = int(math.ceil(data_bytes / 2880.0)) * 2880
        with open(tmp, "wb") as f:
            f.write(hdr_bytes)
            f.truncate(len(hdr_bytes) + padded)
        writer = _MemmapWriter(tmp, len(hdr_bytes), shape_out)

        if scheduler is None:
            try:
                from distributed import get_worker

                get_worker()
                scheduler, num_workers = "synchronous", 1  # inside a Dask worker: its one slot
            except (ImportError, ValueError):
                scheduler = "threads"
        compute_kw: dict[str, Any] = {}
        if isinstance(scheduler, str):
            compute_kw["scheduler"] = scheduler
            if scheduler == "threads" and num_workers:
                compute_kw["num_workers"] = int(num_workers)
        else:
            compute_kw["scheduler"] = scheduler  # a distributed Client

        reset = _reset_peak_rss()
        # one row of blocks at a time: bounded memory, progress and stop between rows
        rows = result.chunks[0]
        n_rows = len(rows)
        y0 = 0
        yield Progress(0, n_rows, f"{Path(path).name}: {len(rows)}x{len(result.chunks[1])} blocks")
        for i, h in enumerate(rows):
            if stop.is_set():
                raise StoppedError(f"{path}: stopped after {i} of {n_rows} block rows; no output written.")
            # the input rows feeding this output row (halo included) are read again per row: simple, bounded
            da.store(result[y0 : y0 + h], _RowOffset(writer, y0), lock=False, compute=True, **compute_kw)
            y0 += h
            yield Progress(i + 1, n_rows, f"{Path(path).name}: row {i + 1}/{n_rows}")
    return TiledResult(
        output=out,
        shape_in=(ny, nx),
        shape_out=shape_out,
        chunk=int(chunk),
        depth=int(default_depth(params) if depth is None else depth),
        n_blocks=len(result.chunks[0]) * len(result.chunks[1]),
        seconds=time.perf_counter() - t0,
        peak_rss=peak_rss() if reset else None,
        in_memory_bytes=ny * nx * 4 * (1 + s * s),
    )


class _RowOffset:
    """Shift ``da.store`` writes of a row band by ``y0`` rows into the full-size writer."""

    def __init__(self, writer: _MemmapWriter, y0: int) -> None:
        self.writer, self.y0 = writer, int(y0)
        self.shape = writer.shape
        self.dtype = writer.dtype
        self.ndim = 2

    def __setitem__(self, key, value) -> None:
        ys, xs = key
        self.writer[slice(ys.start + self.y0, ys.stop + self.y0), xs] = value


def restore_fits_tiled(path: PathLike, out: PathLike, **kwargs) -> TiledResult:
    """Synchronous :func:`restore_fits_tiled_job` (same arguments)."""
    from .progress import run

    return run(restore_fits_tiled_job(path, out, **kwargs))


# --------------------------------------------------------------------------------------------------
# one file (runs on a Dask worker)
# --------------------------------------------------------------------------------------------------


def output_path(path: PathLike, outdir: PathLike, *, method: str, scale: int) -> Path:
    """``OUTDIR/<stem>_<method>_x<scale>.fits`` (FITS and compression suffixes stripped)."""
    name = Path(path).name
    low = name.lower()
    for suf in (".gz", ".fz"):
        if low.endswith(suf):
            name, low = name[: -len(suf)], low[: -len(suf)]
    for suf in (".fits", ".fit", ".fts"):
        if low.endswith(suf):
            name = name[: -len(suf)]
            break
    return Path(outdir) / f"{name}_{method}_x{int(scale)}.fits"


def read_hash(path: PathLike) -> Optional[str]:
    """The ``ASRHASH`` of an existing output, or None (missing file, no card, unreadable)."""
    from astropy.io import fits

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = fits.getheader(path, 0).get(HASH_KEY)
    except Exception:
        return None
    return str(value) if value else None


def _ckpt_hash(params: RestoreParams) -> Optional[str]:
    ckpt = params.checkpoint()
    return file_sha256(ckpt) if ckpt else None


def _in_memory_bytes(path: PathLike, scale: int) -> int:
    from .core.fits_io import list_image_hdus

    hdus = list_image_hdus(path)
    if not hdus:
        return 0
    n = int(np.prod(hdus[0][2]))
    return n * 4 * (1 + scale * scale)


def restore_file(
    path: PathLike,
    out: PathLike,
    params: RestoreParams,
    *,
    overwrite: bool = False,
    chunk: Optional[int] = None,
    depth: Optional[int] = None,
    max_memory: Optional[int] = DEFAULT_MAX_MEMORY,
) -> dict[str, Any]:
    """Restore one FITS file to ``out`` unless an output with the same content hash exists.

    In memory through ``restoration.restore`` (same pixels as ``astrosr restore``), or tile by tile
    (:func:`restore_fits_tiled_job`) when ``chunk`` is given or the input + output arrays would exceed
    ``max_memory`` bytes. Raises on failure (so Dask can retry); returns a summary row.
    """
    t0 = time.perf_counter()
    path, out = Path(path), Path(out)
    digest = content_hash(path, params)
    if out.exists():
        old = read_hash(out)
        if old == digest:
            return dict(
                file=str(path),
                status="skipped",
                seconds=time.perf_counter() - t0,
                output=str(out),
                message="already done (same input and parameters)",
            )
        if not overwrite:
            raise AstroSRError(
                f"{out}: exists from another input or other parameters ({HASH_KEY} differs); "
                "pass --overwrite or choose another output folder."
            )
    try:
        return _restore_file(path, out, params, digest, t0, chunk=chunk, depth=depth, max_memory=max_memory)
    except AstroSRError as exc:
        if path.name in str(exc):
            raise
        raise AstroSRError(f"{path}: {exc}") from exc  # name the file in the batch summary


def _restore_file(path: Path, out: Path, params: RestoreParams, digest: str, t0: float, *, chunk, depth, max_memory):
    tiled = chunk is not None or (max_memory is not None and _in_memory_bytes(path, params.scale) > max_memory)
    if tiled:
        from .progress import run

        if params.flux_exact and params.psf is None:
            # one PSF per image: a per-block search (extension, header, stars) could differ from block to block
            raise AstroSRError(
                f"{path.name}: tiled (large-image) restorations with the projection need --psf SPEC|"
                "PSF.fits (the PSF is found in the file only for in-memory restorations) or "
                "--no-projection."
            )
        res = run(
            restore_fits_tiled_job(
                path,
                out,
                overwrite=True,
                chunk=int(chunk or DEFAULT_CHUNK),
                depth=depth,
                extra_cards={HASH_KEY: digest},
                options=options_from_kwargs(**params.restore_kwargs()),
            )
        )
        msg = f"tiled {res.n_blocks} blocks"
    else:
        from .core.fits_io import read_fits, write_fits

        img = read_fits(path)
        res = _restore_array(img.data, params, wcs=img.wcs, header=img.header, source=path)
        hdr = (getattr(res, "header", None) or img.header).copy()
        hdr[HASH_KEY] = digest
        write_fits(
            out,
            res.data,
            header=hdr,
            wcs=getattr(res, "wcs", None),
            overwrite=True,
            provenance=dict(
                method=params.method,
                parameters=dict(getattr(res, "params", {}) or {}),
                checkpoint_hash=_ckpt_hash(params),
                inputs=[str(path)],
            ),
            protect=[path],
            extra_hdus=[res.err_hdu()] if hasattr(res, "err_hdu") else [],
        )
        msg = ""
    return dict(file=str(path), status="done", seconds=time.perf_counter() - t0, output=str(out), message=msg)


# --------------------------------------------------------------------------------------------------
# many files on a Dask cluster
# --------------------------------------------------------------------------------------------------


@dataclass
class FileResult:
    """One row of the batch summary."""

    file: str
    status: str  # done | skipped | failed | cancelled
    seconds: float = 0.0
    output: str = ""
    message: str = ""


@dataclass
class BatchResult:
    """All rows, in input order, plus wall time."""

    rows: list[FileResult]
    seconds: float = 0.0
    n_workers: int = 0
    scheduler: str = ""

    def count(self, status: str) -> int:
        """How many files ended with ``status``."""
        return sum(r.status == status for r in self.rows)

    @property
    def ok(self) -> bool:
        """Whether every file was restored or skipped (already done)."""
        return all(r.status in ("done", "skipped") for r in self.rows)

    def table(self) -> str:
        """The summary table (file, status, seconds, output) as text."""
        head = ("file", "status", "seconds", "output")
        body = [
            (
                Path(r.file).name,
                r.status,
                f"{r.seconds:.2f}",
                r.output if r.status in ("done", "skipped") else r.message,
            )
            for r in self.rows
        ]
        widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths[:-1]) + "  {}"
        lines = [fmt.format(*head), fmt.format(*("-" * w for w in widths))]
        lines += [fmt.format(*b) for b in body]
        lines.append(
            f"{len(self.rows)} files: {self.count('done')} done, {self.count('skipped')} skipped, "
            f"{self.count('failed')} failed, {self.count('cancelled')} cancelled in {self.seconds:.1f} s "
            f"on {self.n_workers} worker(s) [{self.scheduler}]"
        )
        return "\n".join(lines)


def expand_inputs(patterns: Union[PathLike, Sequence[PathLike]]) -> list[Path]:
    """Files matching the glob pattern(s) (``**`` recursive), sorted, duplicates removed."""
    if isinstance(patterns, (str, os.PathLike)):
        patterns = [patterns]
    found: dict[str, Path] = {}
    for pat in patterns:
        pat = str(pat)
        matches = sorted(glob.glob(pat, recursive=True)) if glob.has_magic(pat) else [pat]
        for m in matches:
            p = Path(m)
            if p.is_file():
                found.setdefault(str(p.resolve()), p)
            elif not glob.has_magic(pat):
                raise AstroSRError(f"{p}: no such file. Check the path or quote the glob pattern.")
    if not found:
        raise AstroSRError(f"{', '.join(map(str, patterns))}: matches no files.")
    return sorted(found.values(), key=str)


def _default_workers() -> int:
    return max(1, os.cpu_count() or 1)


class _Cluster:
    """A Client for ``scheduler`` ('local', an address, or a Client), closed on exit if we made it."""

    def __init__(self, scheduler, *, workers, threads_per_worker, processes) -> None:
        self.scheduler, self.workers, self.tpw, self.processes = scheduler, workers, threads_per_worker, processes
        self.client = self.cluster = None
        self.own = False

    def __enter__(self):
        from distributed import Client, LocalCluster

        if isinstance(self.scheduler, Client):
            self.client = self.scheduler
            return self.client
        self.own = True
        if self.scheduler in (None, "", "local"):
            n = int(self.workers or _default_workers())
            if n < 1:
                raise AstroSRError(f"--workers {n}: must be at least 1.")
            self.cluster = LocalCluster(
                n_workers=n,
                threads_per_worker=int(self.tpw),
                processes=bool(self.processes),
                dashboard_address=None,
                silence_logs=logging.CRITICAL,
            )
            self.client = Client(self.cluster)
        else:
            try:
                self.client = Client(str(self.scheduler), timeout="15s")
            except (OSError, TimeoutError, ValueError) as exc:
                raise AstroSRError(
                    f"--scheduler {self.scheduler}: cannot connect ({str(exc).splitlines()[0][:120]}); "
                    "check the address (e.g. tcp://host:8786) or use --scheduler local."
                ) from exc
        return self.client

    def __exit__(self, *exc) -> None:
        if self.own:
            if self.client is not None:
                self.client.close()
            if self.cluster is not None:
                self.cluster.close()


def batch_job(
    inputs: Union[PathLike, Sequence[PathLike]],
    outdir: PathLike,
    *,
    options: Optional[RestoreOptions] = None,
    scheduler: Any = "local",
    workers: Optional[int] = None,
    threads_per_worker: int = 1,
    processes: bool = True,
    overwrite: bool = False,
    chunk: Optional[int] = None,
    depth: Optional[int] = None,
    max_memory: Optional[int] = DEFAULT_MAX_MEMORY,
    retries: int = 1,
    stop=NEVER,
    **option_kwargs: Any,
) -> Generator[Progress, None, BatchResult]:
    """Restore many FITS files on a Dask distributed cluster (a job: yields one event per file).

    Parameters
    ----------
    inputs
        Glob pattern(s) or paths (``**`` recursive).
    outdir
        Output folder (created if missing); outputs are ``<stem>_<method>_x<scale>.fits``.
    options, **option_kwargs
        The restore options (:class:`~napari_astrosr.restore_options.RestoreOptions` or its fields by keyword,
        as in :func:`napari_astrosr.restoration.restore`; ``device`` defaults to ``cpu`` here). The
        projection's noise choice and the sky gate's rms are measured per file.
    scheduler
        ``"local"`` (a LocalCluster of ``workers`` processes, default one per core,
        ``threads_per_worker`` threads each), a scheduler address (``tcp://host:8786``: the same job on
        a cluster whose workers see the same paths), or a ``distributed.Client``.
    processes
        LocalCluster with worker processes (default) or threads in this process (tests).
    overwrite
        Replace outputs written with *other* parameters; outputs with the same ``ASRHASH`` are always
        skipped.
    chunk, depth, max_memory
        Tiled restoration of big files: forced for every file with ``chunk``, automatic when the input
        + output arrays exceed ``max_memory`` bytes.
    retries
        Times Dask re-runs a failed file (on any worker) before reporting it failed.
    stop
        When set, files not yet finished are cancelled and reported as such.

    Returns
    -------
    BatchResult
        One row per input in input order: done / skipped / failed (with the error) / cancelled.
    """
    from ._extras import require

    require("distributed", extra="batch", what="astrosr batch")
    from distributed import as_completed

    t0 = time.perf_counter()
    if options is None:
        options = options_from_kwargs(**({"device": "cpu"} | option_kwargs))
    elif option_kwargs:
        raise AstroSRError(f"batch_job: give options= or keywords, not both ({', '.join(option_kwargs)}).")
    method, scale, model = options.method, options.scale, options.model
    files = expand_inputs(inputs)
    outdir = Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        raise AstroSRError(f"{outdir}: is a file; -o needs a folder.")
    if int(scale) < 1:
        raise AstroSRError(f"--scale {scale}: must be a positive integer.")
    if model is not None and not Path(model).is_file():
        raise AstroSRError(f"--model {model}: no such file.")
    outs = [output_path(p, outdir, method=method, scale=scale) for p in files]
    # never feed our own outputs back in (e.g. OUTDIR inside the glob)
    out_set = {str(o.resolve()) for o in outs}
    keep = [i for i, p in enumerate(files) if str(p.resolve()) not in out_set]
    files, outs = [files[i] for i in keep], [outs[i] for i in keep]
    if not files:
        raise AstroSRError(f"{inputs}: matches only outputs of this batch.")
    seen: dict[str, Path] = {}
    for p, o in zip(files, outs):
        if o.name in seen:
            raise AstroSRError(
                f"{p} and {seen[o.name]}: both would be written to {o}; restore them into separate folders."
            )
        seen[o.name] = p
    outdir.mkdir(parents=True, exist_ok=True)
    # a rerun after a killed worker: its half-written temporary files go; finished outputs (published
    # atomically, each with its ASRHASH) are skipped by restore_file
    remove_stale_temporaries(outdir)
    if model:
        options = options.model_copy(update={"model": str(Path(model).resolve())})
    params = RestoreParams.from_options(options)

    rows = [FileResult(file=str(p), status="cancelled", output=str(o)) for p, o in zip(files, outs)]
    n = len(files)
    with _Cluster(scheduler, workers=workers, threads_per_worker=threads_per_worker, processes=processes) as client:
        n_workers = _n_workers(client)
        where = ("LocalCluster " if scheduler in (None, "", "local") else "") + str(client.scheduler.address)
        yield Progress(0, n, f"{n} files on {n_workers} worker(s)")
        futures = {}
        for i, (p, o) in enumerate(zip(files, outs)):
            fut = client.submit(
                restore_file,
                str(p),
                str(o),
                params,
                overwrite=overwrite,
                chunk=chunk,
                depth=depth,
                max_memory=max_memory,
                key=f"astrosr-batch-{i}-{p.name}-{os.getpid()}-{time.time_ns()}",
                retries=int(retries),
                pure=False,
            )
            futures[fut] = i
        done = 0
        ac = as_completed(list(futures))
        for fut in ac:
            i = futures[fut]
            row = rows[i]
            if fut.status == "finished":
                r = fut.result()
                row.status, row.seconds, row.message = r["status"], r["seconds"], r.get("message", "")
            else:
                exc = fut.exception()
                row.status = "failed"
                row.message = str(exc) if isinstance(exc, AstroSRError) else f"{type(exc).__name__}: {exc}"
                row.message = " ".join(row.message.split())  # one line per file in the summary
            done += 1
            yield Progress(
                done,
                n,
                f"{Path(row.file).name}: {row.status}"
                + (f" ({row.seconds:.1f} s)" if row.status == "done" else "")
                + (f" - {row.message}" if row.status == "failed" else ""),
                values={
                    "file": row.file,
                    "status": row.status,
                    "seconds": row.seconds,
                    "output": row.output,
                    "message": row.message,
                },
            )
            if stop.is_set():
                pending = [f for f in futures if not f.done()]
                client.cancel(pending)
                break
        for f in futures:
            f.release()
    return BatchResult(rows=rows, seconds=time.perf_counter() - t0, n_workers=n_workers, scheduler=where)


def _n_workers(client) -> int:
    try:  # recent distributed lists only 5 workers unless asked for all
        info = client.scheduler_info(n_workers=-1)
    except TypeError:
        info = client.scheduler_info()
    return len(info.get("workers", {}))


def batch(inputs, outdir, **kwargs) -> BatchResult:
    """Synchronous :func:`batch_job` (same arguments)."""
    from .progress import run

    return run(batch_job(inputs, outdir, **kwargs))


__all__ = [
    "RestoreParams",
    "content_hash",
    "file_sha256",
    "default_depth",
    "restore_dask",
    "FitsSection",
    "restore_fits_tiled_job",
    "restore_fits_tiled",
    "TiledResult",
    "output_path",
    "read_hash",
    "restore_file",
    "batch_job",
    "batch",
    "BatchResult",
    "FileResult",
    "expand_inputs",
    "clear_cache",
    "peak_rss",
    "HASH_KEY",
]

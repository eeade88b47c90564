"""Restore a FITS image larger than memory, streaming sections from and to disk (moved from ``batch``).

:func:`restore_fits_tiled` reads the input in sections from the memory-mapped file (astropy ``section``;
uncompressed or tile-compressed files), restores them block by block
(:func:`napari_astrosr.restore_jobs.tiling.restore_dask`), pre-allocates the output FITS with its final header
in a temporary file next to the target, writes it section by section through ``numpy.memmap`` and renames
it into place only when complete. Peak memory is a few blocks, not the image (measured in
``docs/results_batch.md``). Flux: as the method in memory, block by block (see :mod:`napari_astrosr.batch`).
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..core.atomic import atomic_output
from ..core.fits_stream import FitsSection, MemmapWriter, RowOffset, output_header
from ..exceptions import AstroSRError
from ..progress import NEVER, Progress
from ..restoration import restore
from ..restore_options import RestoreOptions, options_from_kwargs
from .blocks import DEFAULT_CHUNK, PathLike, RestoreParams, ckpt_hash, default_depth, resolve_for_image, restorer
from .tiling import restore_dask


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
    from .._extras import require

    require("dask", extra="batch", what="the tiled restoration (--tile)")
    import dask
    import dask.array as da

    from ..exceptions import StoppedError

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

    from ..core.fits_header import _make_wcs  # the reader's WCS rules, without reading the data

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with fits.open(src.path, memmap=True, lazy_load_hdus=True) as hdul:
            header = hdul[src.hdu].header.copy()
        wcs, _ = _make_wcs(header, 2, Path(src.path).name)
    probe = src[: min(ny, 64), : min(nx, 64)]
    probe_res = restorer(params, restore)(probe, wcs=wcs, header=header)
    res_params = dict(getattr(probe_res, "params", {}) or {})
    res_params.update({"tiled": True, "chunk": int(chunk)})
    provenance = dict(method=method, parameters=res_params, checkpoint_hash=ckpt_hash(params), inputs=[str(path)])
    out_header = output_header(
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
        writer = MemmapWriter(tmp, len(hdr_bytes), shape_out)

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
            da.store(result[y0 : y0 + h], RowOffset(writer, y0), lock=False, compute=True, **compute_kw)
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


def restore_fits_tiled(path: PathLike, out: PathLike, **kwargs) -> TiledResult:
    """Synchronous :func:`restore_fits_tiled_job` (same arguments)."""
    from ..progress import run

    return run(restore_fits_tiled_job(path, out, **kwargs))

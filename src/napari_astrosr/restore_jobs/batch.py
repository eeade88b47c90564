"""Restore many FITS files on a Dask distributed cluster (``astrosr batch``; moved from ``batch``).

:func:`batch_job` runs one task per file on a ``LocalCluster`` or any scheduler address, retried once on
failure, outputs written atomically, files already done skipped by a content hash stored in the output
header (``ASRHASH``). :func:`restore_file` restores one file on a worker: in memory through
:func:`napari_astrosr.restoration.restore` (the same pixels as ``astrosr restore``), or streamed tile by tile
(:func:`napari_astrosr.restore_jobs.stream.restore_fits_tiled_job`) when it would not fit in ``max_memory``.
Flux: as the method in memory (see :mod:`napari_astrosr.batch` for the tiled path).
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import time
import warnings
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from ..core.atomic import remove_stale_temporaries
from ..exceptions import AstroSRError
from ..progress import NEVER, Progress
from ..restoration import restore
from ..restore_options import RestoreOptions, options_from_kwargs
from .blocks import DEFAULT_CHUNK, PathLike, RestoreParams, ckpt_hash, file_sha256, restorer
from .stream import restore_fits_tiled_job

HASH_KEY = "ASRHASH"
"""Output header keyword holding the content hash of (input bytes, method, parameters)."""

DEFAULT_MAX_MEMORY = 2 * 1024**3
"""Files whose input + output arrays exceed this (bytes) are restored tile by tile in the batch."""


def content_hash(path: PathLike, params: RestoreParams) -> str:
    """sha256 (hex, 64 characters) of the input file's bytes plus the restoration fingerprint."""
    h = hashlib.sha256()
    h.update(file_sha256(path).encode())
    h.update(json.dumps(params.fingerprint(), sort_keys=True).encode())
    return h.hexdigest()


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


def _in_memory_bytes(path: PathLike, scale: int) -> int:
    from ..core.fits_open import list_image_hdus

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
        from ..progress import run

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
        from ..core.fits_read import read_fits
        from ..core.fits_write import write_fits

        img = read_fits(path)
        res = restorer(params, restore)(img.data, wcs=img.wcs, header=img.header, source=path)
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
                checkpoint_hash=ckpt_hash(params),
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
    from .._extras import require

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
    from ..progress import run

    return run(batch_job(inputs, outdir, **kwargs))

"""``astrosr batch INPUT_GLOB -o OUTDIR --method NAME``: many files (or huge ones) on Dask.

Runs one task per file on a Dask distributed cluster: ``--scheduler local`` (default) starts a
LocalCluster on this machine (``--workers`` processes, one thread each); an address such as
``tcp://host:8786`` sends the same job to a running cluster whose workers see the same paths.
A failed file is retried once, then reported; the others go on. Re-running skips files already
restored with the same input bytes and parameters (``ASRHASH`` in the output header).
Files bigger than ``--max-memory`` (or every file, with ``--chunk``) are restored tile by tile,
streaming from and to disk.

Exit code: 0 when every file is done or skipped, 1 when any failed, 2 for bad usage.
"""

from __future__ import annotations

import argparse

NAME = "batch"
HELP = "restore many FITS files (or huge ones, tile by tile) on a Dask cluster"
ORDER = 45


def _bytes(text: str) -> int:
    t = text.strip().upper().replace("IB", "B")
    units = {"KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4, "B": 1}
    for u, f in units.items():
        if t.endswith(u):
            try:
                return int(float(t[: -len(u)]) * f)
            except ValueError:
                break
    try:
        return int(float(t))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give a size like 2GB, 512MB or a number of bytes") from None


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: not an integer") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be at least 1")
    return v


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT_GLOB",
        help="FITS files or quoted glob patterns ('data/**/*.fits' is recursive)",
    )
    p.add_argument(
        "-o", "--outdir", required=True, help="output folder (created); outputs are <stem>_<method>_x<scale>.fits"
    )
    from ..restore_options import add_cli_arguments

    add_cli_arguments(p, fields=("method", "scale", "model", "device", "tile", "psf"), device_default="cpu")
    p.add_argument(
        "--scheduler",
        default="local",
        help="'local' (LocalCluster on this machine) or a scheduler address tcp://HOST:PORT",
    )
    p.add_argument(
        "--workers", type=_positive, default=None, help="local workers (processes; default: one per CPU core)"
    )
    p.add_argument("--threads-per-worker", type=_positive, default=1, help="threads per local worker (default 1)")
    p.add_argument(
        "--chunk",
        type=_positive,
        default=None,
        help="restore every file tile by tile in blocks of CHUNK input pixels (default: only files over --max-memory)",
    )
    p.add_argument(
        "--depth", type=int, default=None, help="overlap (input pixels) between blocks; default covers the method"
    )
    p.add_argument(
        "--max-memory",
        type=_bytes,
        default="2GB",
        help="files whose input+output arrays exceed this are restored tile by tile (default 2GB)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace outputs made from other inputs/parameters")
    p.add_argument("--retries", type=int, default=1, help="re-runs of a failed file before it is reported (default 1)")
    p.add_argument("--summary", default=None, help="also write the summary table to this file (.csv/.ecsv/.txt)")
    p.add_argument("-q", "--quiet", action="store_true", help="no per-file progress lines")


def run(args: argparse.Namespace) -> int:
    import logging
    import sys

    from ..progress import run as run_job
    from ..restore_jobs.batch import batch_job

    # a failed file is reported in the summary; the workers' own tracebacks would only repeat it
    for name in ("distributed.worker", "distributed.scheduler", "distributed.core", "distributed.nanny"):
        logging.getLogger(name).setLevel(logging.CRITICAL)

    def show(ev) -> None:
        if not args.quiet and ev.message:
            print(f"[{ev.step}/{ev.total}] {ev.message}", file=sys.stderr, flush=True)

    from ..restore_options import options_from_args

    job = batch_job(
        args.inputs,
        args.outdir,
        options=options_from_args(args),
        scheduler=args.scheduler,
        workers=args.workers,
        threads_per_worker=args.threads_per_worker,
        overwrite=args.overwrite,
        chunk=args.chunk,
        depth=args.depth,
        max_memory=args.max_memory,
        retries=max(0, args.retries),
    )
    result = run_job(job, on_progress=show)
    print(result.table())
    if args.summary:
        _write_summary(result, args.summary)
    if not result.ok:
        bad = [r for r in result.rows if r.status not in ("done", "skipped")]
        print(
            f"astrosr batch: error: {len(bad)} of {len(result.rows)} file(s) not restored (first: "
            f"{bad[0].file}: {bad[0].message or bad[0].status}); fix or remove them and rerun: finished files "
            "are skipped.",
            file=sys.stderr,
        )
        return 2
    return 0


def _write_summary(result, path: str) -> None:
    from pathlib import Path

    p = Path(path)
    if p.suffix.lower() in (".csv", ".ecsv"):
        from astropy.table import Table

        t = Table(
            rows=[(r.file, r.status, round(r.seconds, 3), r.output, r.message) for r in result.rows],
            names=("file", "status", "seconds", "output", "message"),
            dtype=(str, str, float, str, str),
        )
        t.write(p, format="ascii.ecsv" if p.suffix.lower() == ".ecsv" else "ascii.csv", overwrite=True)
    else:
        p.write_text(result.table() + "\n")

"""Batch throughput with 1 and 2 Dask workers, and peak memory of the tiled large-image path.

    .venv/bin/python benchmarks/batch_scaling.py [--files 12] [--size 512] [--big 8192] [--method bicubic]

Part 1: the same folder of ``--files`` synthetic star fields (``--size`` pixels a side) restored by
``batch_job`` on a LocalCluster of worker *processes* (1 thread each) with 1 and with 2 workers,
side by side in one run. Cluster start-up and the first imports on each worker are excluded (a
warm-up call), outputs are deleted between runs so every file is restored.

Part 2: one ``--big`` x ``--big`` float32 FITS image restored x2 by ``restore_fits_tiled`` (blocks of
``--chunk`` input pixels, 2 threads) in a fresh subprocess; its peak resident memory (VmHWM, reset just
before the run) against the bytes the input + output arrays take in memory, plus the measured peak of
the in-memory restore of a ``--small`` image for comparison (a subprocess too).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _star_field(rng, n: int) -> np.ndarray:
    img = rng.normal(10.0, 1.0, (n, n)).astype(np.float32)
    ys, xs = rng.integers(3, n - 3, size=(2, n // 4))
    img[ys, xs] += rng.uniform(100, 5000, ys.size).astype(np.float32)
    return img


def _write_big(path: Path, n: int, seed: int = 0) -> None:
    """An n x n float32 FITS written in row bands (never the whole image in memory)."""
    from astropy.io import fits

    hdr = fits.PrimaryHDU(data=np.zeros((1, 1), np.float32)).header
    hdr["NAXIS1"], hdr["NAXIS2"] = n, n
    hb = hdr.tostring().encode()
    nbytes = int(math.ceil(n * n * 4 / 2880)) * 2880
    with open(path, "wb") as f:
        f.write(hb)
        f.truncate(len(hb) + nbytes)
    mm = np.memmap(path, dtype=">f4", mode="r+", offset=len(hb), shape=(n, n))
    rng = np.random.default_rng(seed)
    for y0 in range(0, n, 1024):
        band = rng.normal(10.0, 1.0, (min(1024, n - y0), n)).astype(np.float32)
        ys, xs = rng.integers(0, band.shape[0], n // 4), rng.integers(0, n, n // 4)
        band[ys, xs] += rng.uniform(100, 5000, ys.size).astype(np.float32)  # stars (point sources)
        mm[y0 : y0 + band.shape[0]] = band
    mm.flush()
    del mm


def _warm() -> None:
    import scipy.ndimage  # noqa: F401

    import napari_astrosr.core.classical  # noqa: F401
    import napari_astrosr.restoration  # noqa: F401


def throughput(tmp: Path, *, n_files: int, size: int, method: str, scale: int) -> list[dict]:
    from distributed import Client, LocalCluster

    from napari_astrosr.batch import batch
    from napari_astrosr.core.fits_io import write_fits

    src = tmp / "files"
    src.mkdir()
    rng = np.random.default_rng(1)
    for i in range(n_files):
        write_fits(src / f"f{i:03d}.fits", _star_field(rng, size))
    rows = []
    for workers in (1, 2):
        with (
            LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=50
            ) as cluster,
            Client(cluster) as client,
        ):
            warm = tmp / "warm"
            client.run(_warm)  # imports on every worker, outside the timing
            batch(src / "f000.fits", warm, method=method, scale=scale, scheduler=client)
            shutil.rmtree(warm)
            out = tmp / f"out{workers}"
            t0 = time.perf_counter()
            res = batch(str(src / "*.fits"), out, method=method, scale=scale, scheduler=client)
            dt = time.perf_counter() - t0
            assert res.count("done") == n_files, res.table()
            rows.append(dict(workers=workers, files=n_files, seconds=dt, files_per_s=n_files / dt))
            shutil.rmtree(out)
    return rows


_CHILD_TILED = """
import json, sys
from napari_astrosr.batch import restore_fits_tiled, peak_rss
r = restore_fits_tiled(sys.argv[1], sys.argv[2], method=sys.argv[3], scale=int(sys.argv[4]), chunk=int(sys.argv[5]),
                       num_workers=2, overwrite=True)
print(json.dumps(dict(peak=r.peak_rss, in_memory=r.in_memory_bytes, seconds=r.seconds, blocks=r.n_blocks)))
"""

_CHILD_MEMORY = """
import json, sys, time
import numpy as np
from napari_astrosr.batch import peak_rss, _reset_peak_rss
from napari_astrosr.core.fits_io import read_fits, write_fits
from napari_astrosr.restoration import restore
_reset_peak_rss(); base = peak_rss()
t0 = time.perf_counter()
img = read_fits(sys.argv[1])
res = restore(img.data, method=sys.argv[3], scale=int(sys.argv[4]))
write_fits(sys.argv[2], res.data, overwrite=True)
print(json.dumps(dict(peak=peak_rss(), base=base, seconds=time.perf_counter() - t0,
                      in_memory=img.data.nbytes + res.data.nbytes)))
"""

_CHILD_BASE = """
import json
import dask.array, distributed, scipy.ndimage
import napari_astrosr.batch, napari_astrosr.restoration, napari_astrosr.core.classical
from napari_astrosr.batch import peak_rss
print(json.dumps(dict(peak=peak_rss())))
"""


def _child(code: str, *args) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=12)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--method", default="lanczos")
    ap.add_argument("--scale", type=int, default=2)
    ap.add_argument("--big", type=int, default=8192)
    ap.add_argument("--small", type=int, default=2048, help="side of the image also restored in memory")
    ap.add_argument("--chunk", type=int, default=1024)
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    args = ap.parse_args()
    gib = 1024**3
    with tempfile.TemporaryDirectory(prefix="astrosr_bench_") as d:
        tmp = Path(d)
        print(
            f"machine: {os.cpu_count()} CPU cores, load average at start {os.getloadavg()[0]:.1f}; "
            f"method {args.method} x{args.scale}"
        )
        if not args.skip_throughput:
            print(f"load average before throughput: {os.getloadavg()[0]:.1f}")
            rows = throughput(tmp, n_files=args.files, size=args.size, method=args.method, scale=args.scale)
            print(
                f"\n## Throughput: {args.files} files of {args.size}x{args.size}, LocalCluster processes, 1 thread each"
            )
            print("| workers | seconds | files/s | speed-up |\n|---:|---:|---:|---:|")
            for r in rows:
                print(
                    f"| {r['workers']} | {r['seconds']:.2f} | {r['files_per_s']:.2f} | "
                    f"{r['files_per_s'] / rows[0]['files_per_s']:.2f}x |"
                )

        if args.skip_memory:
            return
        base = _child(_CHILD_BASE)["peak"]
        print(
            f"\n## Peak memory, x{args.scale} {args.method} (process RSS high-water mark; imports alone: "
            f"{base / 2**20:.0f} MiB)"
        )
        print(
            "| image | path | seconds | peak RSS | peak above imports | input+output arrays | (peak - imports) / arrays |\n"
            "|---|---|---:|---:|---:|---:|---:|"
        )
        for n in (args.small, args.big):
            src = tmp / f"big{n}.fits"
            _write_big(src, n)
            if n == args.small:
                m = _child(_CHILD_MEMORY, src, tmp / "mem_out.fits", args.method, args.scale)
                print(
                    f"| {n}x{n} | in memory (read_fits, restore, write_fits) | {m['seconds']:.1f} | "
                    f"{m['peak'] / gib:.2f} GiB | {(m['peak'] - base) / gib:.2f} GiB | "
                    f"{m['in_memory'] / gib:.2f} GiB | {(m['peak'] - base) / m['in_memory']:.2f} |"
                )
                (tmp / "mem_out.fits").unlink()
            t = _child(_CHILD_TILED, src, tmp / "tiled_out.fits", args.method, args.scale, args.chunk)
            print(
                f"| {n}x{n} | tiled (restore_fits_tiled), chunk {args.chunk}, {t['blocks']} blocks, 2 threads | "
                f"{t['seconds']:.1f} | {t['peak'] / gib:.2f} GiB | {(t['peak'] - base) / gib:.2f} GiB | "
                f"{t['in_memory'] / gib:.2f} GiB | {(t['peak'] - base) / t['in_memory']:.2f} |"
            )
            (tmp / "tiled_out.fits").unlink()
            src.unlink()


if __name__ == "__main__":
    main()

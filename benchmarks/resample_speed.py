"""Cost of the flux-conserving bicubic against ``scipy.ndimage.zoom(order=3)`` (prints a Markdown table).

    PYTHONPATH=src OMP_NUM_THREADS=1 .venv/bin/python benchmarks/resample_speed.py \\
        [--sizes 512,1024,2048,4096] [--once 8192] [--repeats 3] [--baseline a71c3f5]

For every input side ``n`` (x2, float64 gamma-noise image) the three are timed interleaved in
one process, ``--repeats`` times, and the minimum kept: ``core.resample.upsample`` (this
tree), ``ndimage.zoom(order=3)`` (scipy's cubic spline, the yardstick) and, with
``--baseline REV``, ``core/resample.py`` as it was at git revision REV (loaded from
``git show``; skipped for the ``--once`` sizes, whose old cost grows superlinearly).
``flux err`` is the largest per-input-pixel flux error ``max |block_sum(out) - in| / max |in|``.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from napari_astrosr.core import resample as R

REPO = Path(__file__).resolve().parents[1]


def load_baseline(rev: str):
    """``core/resample.py`` at git revision ``rev`` as a module (it only imports numpy/astropy/scipy)."""
    src = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{rev}:src/napari_astrosr/core/resample.py"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "baseline_resample.py"
    path.write_text(src)
    name = "napari_astrosr.core._baseline_resample"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="512,1024,2048,4096")
    ap.add_argument("--once", default="8192", help="sizes timed once, without the baseline ('' for none)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--baseline", default="a71c3f5", help="git revision of the old implementation ('' for none)")
    args = ap.parse_args()
    old = load_baseline(args.baseline) if args.baseline else None
    rng = np.random.default_rng(0)
    rows = [(int(v), args.repeats, True) for v in args.sizes.split(",") if v]
    rows += [(int(v), 1, False) for v in args.once.split(",") if v]
    print("x2 upsample of a float64 n x n image; seconds are the minimum of interleaved repeats\n")
    print(
        "| input | repeats | upsample s | zoom(order=3) s | upsample / zoom | old upsample s | old / zoom "
        "| flux err / peak |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for n, reps, with_old in rows:
        x = rng.gamma(0.3, 5.0, size=(n, n))
        t_new, t_zoom, t_old = [], [], []
        for _ in range(reps):
            t_new.append(_time(lambda: R.upsample(x, 2)))
            t_zoom.append(_time(lambda: ndimage.zoom(x, 2, order=3)))
            if old is not None and with_old:
                t_old.append(_time(lambda: old.upsample(x, 2)))
        out = R.upsample(x, 2)
        err = float(np.abs(R.block_sum(out, 2) - x).max() / np.abs(x).max())
        del out
        a, z = min(t_new), min(t_zoom)
        o = f"{min(t_old):.3f} | {min(t_old) / z:.2f}x" if t_old else "- | -"
        print(f"| {n}^2 | {reps} | {a:.3f} | {z:.3f} | {a / z:.2f}x | {o} | {err:.1e} |", flush=True)


if __name__ == "__main__":
    main()

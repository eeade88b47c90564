"""CPU throughput of the default x2 network restore, this tree against an older revision, in one run.

    PYTHONPATH=src .venv/bin/python benchmarks/restore_throughput.py [--size 2048] [--repeats 1] \\
        [--baseline a71c3f5] [--threads 2]

``restore(x, method="fisr", scale=2, device="cpu")`` (the bundled FISR x2, every option at its
default: flux map, tiling, normalisation) on the real ground image ``tpv.fits`` mirrored to
``SIZE x SIZE``. Each implementation runs in its own subprocess (same Python, same torch
threads), alternating, ``--repeats`` times: the baseline from a detached git worktree of
``--baseline`` (created under the system temp dir if missing), this tree from ``src/``. The
table gives the minimum wall time of each stage (``RestoreResult.timings``), the speed-up, and how
far the outputs are apart (max |new - old| / peak, total flux relative difference).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
import numpy as np, torch
sys.path.insert(0, {bench!r})
torch.set_num_threads({threads})
from tiling_overhead import _input
from napari_astrosr.restoration import restore
x = _input({size})
t = time.perf_counter()
r = restore(x, method="fisr", scale=2, device="cpu")
wall = time.perf_counter() - t
np.save({out!r}, r.data)
print(json.dumps({{"wall": wall, "timings": r.timings, "tiles": r.params.get("tiles"), "tile": r.params.get("tile")}}))
"""


def baseline_src(rev: str) -> Path:
    """``src/`` of a detached worktree of ``rev`` (created once under the temp dir)."""
    wt = Path(tempfile.gettempdir()) / f"astrosr_base_{rev}"
    if not wt.exists():
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "add", "--detach", str(wt), rev], check=True, capture_output=True
        )
    return wt / "src"


def run(src: Path, size: int, threads: int, out: Path) -> dict:
    code = CHILD.format(bench=str(REPO / "benchmarks"), threads=threads, size=size, out=str(out))
    env = dict(os.environ, PYTHONPATH=str(src), OMP_NUM_THREADS=str(threads))
    res = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--baseline", default="a71c3f5")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    impls = {"baseline": baseline_src(args.baseline), "this tree": REPO / "src"}
    best: dict[str, dict] = {}
    for _ in range(args.repeats):
        for name, src in impls.items():
            r = run(src, args.size, args.threads, tmp / f"{name.replace(' ', '_')}.npy")
            if name not in best or r["wall"] < best[name]["wall"]:
                best[name] = r
    old = np.load(tmp / "baseline.npy")
    new = np.load(tmp / "this_tree.npy")
    diff = float(np.nanmax(np.abs(new - old)) / np.nanmax(np.abs(old)))
    flux = float(np.nansum(new, dtype=np.float64) / np.nansum(old, dtype=np.float64) - 1)
    print(
        f"restore --method fisr --scale 2 (bundled, defaults), CPU, {args.threads} torch threads, "
        f"input {args.size}^2 (tpv.fits mirrored); minimum of {args.repeats} alternating run(s)\n"
    )
    # the stages today's defaults add (PSF, noise measurement, sky gate, projection, ERR map) are columns of their
    # own; "other" is the total less every stage (loading the weights, the header, ...)
    print(
        "| implementation | tiles | tile | PSF s | flux map s | network s | noise s | sky gate s | projection s | ERR s "
        "| other s | total s | speed-up | network speed-up |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    bn = best["baseline"]["timings"]["network"]
    b = best["baseline"]["timings"]["total"]
    for name in impls:
        r = best[name]
        t = r["timings"]
        rev = f" ({args.baseline})" if name == "baseline" else ""
        stages = ("psf", "flux_map", "network", "noise", "keep_sky", "projection", "err")
        other = t["total"] - sum(t.get(k, 0.0) for k in stages)  # weights loaded, headers, the rest
        print(
            f"| {name}{rev} | {r['tiles']} | {r['tile']} | {t.get('psf', 0):.2f} | {t.get('flux_map', 0):.2f} "
            f"| {t['network']:.2f} | {t.get('noise', 0):.2f} | {t.get('keep_sky', 0):.2f} "
            f"| {t.get('projection', 0):.2f} | {t.get('err', 0):.2f} | {other:.2f} | {t['total']:.2f} "
            f"| {b / t['total']:.2f}x | {bn / t['network']:.2f}x |"
        )
    print(f"\noutputs: max |this - baseline| / peak = {diff:.1e}; total flux this / baseline - 1 = {flux:+.1e}")


if __name__ == "__main__":
    main()

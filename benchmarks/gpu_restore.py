"""End-to-end time of an x2 FISR restore on a device and the fraction spent in the network (Markdown table).

    PYTHONPATH=src .venv/bin/python benchmarks/gpu_restore.py [--device cuda] [--size 4096] [--repeats 2]
    PYTHONPATH=src .venv/bin/python benchmarks/gpu_restore.py --device cpu --size 512 --repeats 1

``restore(x, method="fisr", scale=2, device=DEVICE)`` with the bundled weights on the real ground
image ``tpv.fits`` mirrored to SIZE x SIZE, twice per repeat: with the defaults, and with
``flux_exact=True, psf="gaussian:1.0"`` (the projection). On a GPU, the flux-map rendering and
the projection run in torch on the device (``models.ops``); sep's detection stays on the CPU.
A warm-up restore of a 256^2 crop comes first (CUDA context, cuDNN, weights), so the table is
the steady state. Stage seconds are ``RestoreResult.timings`` (the network's includes the
tile transfers); ``network share`` is network / total. Minimum over ``--repeats``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    import torch
    from tiling_overhead import _input

    from napari_astrosr.restoration import restore

    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    x = _input(args.size)
    restore(x[:256, :256], method="fisr", scale=2, device=args.device, project=False, keep_sky=False)  # warm-up
    restore(x[:256, :256], method="fisr", scale=2, device=args.device, psf="gaussian:1.0")
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device
    print(
        f"restore --method fisr --scale 2 (bundled), input {args.size}^2 (tpv.fits mirrored), device {name}, "
        f"torch {torch.__version__}; minimum of {args.repeats}\n"
    )
    print(
        "| run | tiles | precision | flux map s | network s | projection s | total s | network share "
        "| wall s | output flux / input - 1 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for label, kw in [
        ("--no-projection", dict(project=False, keep_sky=False)),
        ("defaults --psf gaussian:1.0", dict(psf="gaussian:1.0")),
    ]:
        best = None
        for _ in range(args.repeats):
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            t = time.perf_counter()
            r = restore(x, method="fisr", scale=2, device=args.device, **kw)
            wall = time.perf_counter() - t
            if best is None or wall < best[1]:
                best = (r, wall)
        r, wall = best
        t = r.timings
        flux = float(np.nansum(r.data, dtype=np.float64) / np.nansum(x, dtype=np.float64) - 1)
        print(
            f"| {label} | {r.params.get('tiles')} | {r.params.get('precision')} | {t.get('flux_map', 0):.3f} "
            f"| {t['network']:.3f} | {t.get('projection', 0):.3f} | {t['total']:.3f} "
            f"| {t['network'] / t['total']:.0%} | {wall:.3f} | {flux:+.1e} |",
            flush=True,
        )


if __name__ == "__main__":
    main()

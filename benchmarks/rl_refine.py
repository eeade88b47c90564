"""Probe: Richardson-Lucy through the full SR forward model, from bicubic and from a network's output.

Question (issue 6, noisy x2 photometry): the shipped ``richardson-lucy`` method deconvolves on the
LR grid and then upsamples (the issue's "richardson-lucy + upsampling" baseline). How does RL run
*through the SR forward model* ``A = block sum o blur`` on the HR grid compare, started from
bicubic (a stronger classical method) or from a bundled network's output (a hybrid: the network
as RL's starting point)? Not a shipped method; this script measures it.

The SR-RL update is the usual multiplicative one, ``x <- x * A^T(y / A x) / A^T 1``, on data and
estimate shifted by a pedestal so both are positive (noisy data have negatives); the pedestal is
removed afterwards. Each iteration keeps ``sum(A x) = sum(y)`` up to edge losses.

Same held-out fields, PSFs, noise and metrics as ``benchmarks/quality.py`` (noisy x2 only),
with crops of up to 512 HR px (``--side``) so the photometry pools thousands of sources.

Run:  .venv/bin/python benchmarks/rl_refine.py [--side 512] [--out docs/results_rl_refine.md]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality as q  # noqa: E402  (same fields, degradation and data folder)


def sr_richardson_lucy(sr, lr, *, scale, psf, iterations):
    """RL through ``A = block sum o blur`` (HR -> LR), started from ``sr`` (written here: skimage's RL has
    no downsampling operator).
    """
    from napari_astrosr.core.projection import ForwardModel
    from napari_astrosr.core.psf import parse_psf

    op = ForwardModel(sr.shape, scale=scale, psf=parse_psf(psf))
    y = np.asarray(lr, float)
    ped = -min(float(y.min()), 0.0) + 1e-3 * float(y.max() - y.min())  # strictly positive data
    yp = y + ped
    x = np.clip(np.asarray(sr, float) + ped / scale**2, 1e-12, None)
    norm = np.maximum(op.adjoint(np.ones_like(y)), 1e-12)
    for _ in range(iterations):
        x *= op.adjoint(yp / np.maximum(op.apply(x), 1e-12)) / norm
    return x - ped / scale**2


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", type=int, default=512, help="crop side in HR px (default 512)")
    ap.add_argument("--out", default=None, help="write the markdown table here")
    args = ap.parse_args(argv)
    if not q.data_ready():
        return 2
    from napari_astrosr.restoration import restore

    t0 = time.perf_counter()
    rows: dict[str, dict] = {}
    for scale, _, psf, _, hr, lr, dr, _ in q.probe_cases([2], args.side, noisy=(True,)):  # quality.py's noisy x2
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bic = restore(lr, method="bicubic", scale=scale).data
            outs = {
                "richardson-lucy (LR grid, then bicubic; shipped)": restore(
                    lr, method="richardson-lucy", scale=scale, psf=psf
                ).data,
                "backprojection + flux-noise": restore(
                    lr, method="backprojection", scale=scale, psf=psf, flux_noise="auto"
                ).data,
            }
            for k in (15, 30):
                outs[f"SR-RL {k} it. from bicubic"] = sr_richardson_lucy(bic, lr, scale=scale, psf=psf, iterations=k)
            for net in ("restormer", "fisr"):
                base = restore(lr, method=net, scale=scale).data
                outs[f"{net} + flux-noise"] = restore(
                    lr, method=net, scale=scale, psf=psf, flux_exact=True, flux_noise="auto"
                ).data
                for k in (5, 15):
                    outs[f"SR-RL {k} it. from {net}"] = sr_richardson_lucy(base, lr, scale=scale, psf=psf, iterations=k)
        for name, img in outs.items():
            q.add_scores(rows, name, hr, img, dr)
    lines = [
        "| method (x2, noisy 1%) | PSNR dB | median of per-case median rel. flux err | pooled median rel. "
        "flux err | sources pooled |",
        "|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        pooled = np.concatenate(r["rels"])
        lines.append(
            f"| {name} | {np.mean(r['psnr']):.2f} | {np.nanmedian(r['med']):.4f} | {np.median(pooled):.4f} | "
            f"{pooled.size} |"
        )
    text = (
        "\n".join(
            [
                f"Command: `.venv/bin/python benchmarks/rl_refine.py --side {args.side}` "
                f"({time.perf_counter() - t0:.0f} s, 1 torch thread)",
                "",
                *lines,
            ]
        )
        + "\n"
    )
    q.write_report(text, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

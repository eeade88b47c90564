"""Speed and accuracy of the flux-exact projection (prints a table).

    .venv/bin/python benchmarks/bench_projection.py [--size 512] [--scale 2] [--with-nonneg]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import ndimage

from napari_astrosr.core import projection as J
from napari_astrosr.core import psf as P
from napari_astrosr.core import resample as R


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=512, help="SR (HR) image side")
    ap.add_argument("--scale", type=int, default=2)
    ap.add_argument("--with-nonneg", action="store_true", help="also time nonneg=True (alternating projections)")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    n, s = args.size, args.scale
    hr = ndimage.gaussian_filter(rng.gamma(0.3, 5.0, size=(n, n)), 1.0)
    yy, xx = np.mgrid[:n, :n]
    for _ in range(50):
        x0, y0, f = rng.uniform(5, n - 5, 2).tolist() + [rng.uniform(50, 500)]
        hr += f * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / 2.0) / (2 * np.pi)
    hr -= np.median(hr)  # sky-subtracted-like: negatives present, nonneg off by default

    def psnr(a):
        return 10 * np.log10(np.ptp(hr) ** 2 / np.mean((a - hr) ** 2))

    print(f"SR {n}x{n}, scale {s}")
    print(f"{'psf':<22}{'nonneg':>7}{'time s':>8}{'iters':>6}{'max rel err (inner)':>21}{'PSNR bicubic':>14}{'PSNR proj':>11}")
    for name, k in [("none", None), ("gaussian:1.0", P.gaussian_psf(1.0)),
                    ("gaussian+airy:1,2", P.gaussian_airy_psf(1.0, 2.0)), ("moffat:4", P.moffat_psf(4.0))]:
        lr = J.forward_model(hr, scale=s, psf=k)
        sr = R.upsample(lr, s)
        for nonneg in ((False, True) if args.with_nonneg else (False,)):
            t = time.perf_counter()
            x, info = J.project_flux_exact(sr, lr, scale=s, psf=k, nonneg=nonneg, return_info=True)
            dt = time.perf_counter() - t
            rep = J.forward_model(x, scale=s, psf=k)
            rel = np.abs(rep - lr)[3:-3, 3:-3].max() / np.abs(lr).max()
            print(f"{name:<22}{str(nonneg):>7}{dt:>8.3f}{info['iterations']:>6}{rel:>21.2e}{psnr(sr):>14.2f}{psnr(x):>11.2f}")


if __name__ == "__main__":
    main()

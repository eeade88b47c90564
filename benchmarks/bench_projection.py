"""Speed and accuracy of the flux-exact projection (prints a table).

    .venv/bin/python benchmarks/bench_projection.py [--size 512] [--scale 2] [--with-nonneg]
    .venv/bin/python benchmarks/bench_projection.py --compare [--inputs 512,1024]
    .venv/bin/python benchmarks/bench_projection.py --compare-synthetic [--size 256]
    .venv/bin/python benchmarks/bench_projection.py --against REV [--outputs 512,1024,2048] [--repeats 2]

``--compare`` times backprojection's projection (bicubic x2 + ``project_flux_exact``,
psf gaussian:1.0, default nonneg) on a real ground image (``tpv.fits``, 512^2; the 1024^2
input is it mirrored 2x2) with the frozen pre-speed-up implementation
(``benchmarks/_baseline_projection.py``) and the current one, in the same run.

``--against REV`` times ``core/projection.py`` as it was at git revision ``REV`` (read with
``git show``, loaded beside this tree's module, the rest of the package shared) against this tree's,
exact and noise-aware (the target of ``noise_aware_target`` at sep's noise, damping
``NOISE_DAMPING``, as ``restore`` uses it), x2 with psf gaussian:1.0 and non-negativity on, on the
same ``tpv.fits`` field (mirrored 2x2 for 2048^2 outputs), cold caches, old and new interleaved;
best of ``--repeats`` in wall and in process CPU time (the second moves less with other load on
the machine). The residual column is ``max |A x - y| / max |y|`` over the whole image.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import ndimage

from napari_astrosr.core import projection as J
from napari_astrosr.core import psf as P
from napari_astrosr.core import resample as R


def compare(sizes: list[int]) -> None:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    import _baseline_projection as B

    from napari_astrosr.core.fits_io import read_fits

    path = Path(__file__).resolve().parents[2] / "shared/data/ground_ctio_mosaic2_cdfs/tpv.fits"
    base = read_fits(path).data
    big = np.block([[base, base[:, ::-1]], [base[::-1], base[::-1, ::-1]]])
    k = P.parse_psf("gaussian:1.0")
    print(f"backprojection x2 projection, psf gaussian:1.0, nonneg default, real image {path.name}")
    print(
        f"{'input':>9}{'output':>11}{'before s':>10}{'after s':>9}{'speed-up':>9}{'iters b/a':>11}"
        f"{'rounds':>7}{'max|diff|/peak':>16}{'resid rel after':>17}"
    )
    for n in sizes:
        lr = np.ascontiguousarray(big[:n, :n])
        up = R.upsample(lr, 2)
        J._OP_CACHE.clear()  # cold start, as a first restore would be
        t = time.perf_counter()
        xb, ib = B.project_flux_exact(up, lr, scale=2, psf=k, return_info=True)
        tb = time.perf_counter() - t
        t = time.perf_counter()
        xa, ia = J.project_flux_exact(up, lr, scale=2, psf=k, return_info=True)
        ta = time.perf_counter() - t
        rel = np.abs(J.forward_model(xa, scale=2, psf=k) - lr)[3:-3, 3:-3].max() / np.abs(lr).max()
        d = np.abs(xa.astype(np.float64) - xb).max() / np.abs(xb).max()
        print(
            f"{n:>7}^2{2 * n:>9}^2{tb:>10.2f}{ta:>9.2f}{tb / ta:>8.1f}x{ib['iterations']:>6}/{ia['iterations']:<4}"
            f"{ia['nonneg_rounds']:>7}{d:>16.1e}{rel:>17.1e}"
        )


def against(rev: str, outputs: list[int], repeats: int) -> None:
    import importlib.util
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    from napari_astrosr.core.fits_io import read_fits

    root = Path(__file__).resolve().parents[1]
    text = subprocess.run(
        ["git", "-C", str(root), "show", f"{rev}:src/napari_astrosr/core/projection.py"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as fh:
        fh.write(text)
    spec = importlib.util.spec_from_file_location("napari_astrosr.core._projection_before", fh.name)
    old = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = old
    spec.loader.exec_module(old)
    Path(fh.name).unlink()

    path = root.parent / "shared/data/ground_ctio_mosaic2_cdfs/tpv.fits"
    base = read_fits(path).data.astype(np.float64)
    big = np.block([[base, base[:, ::-1]], [base[::-1], base[::-1, ::-1]]])
    k = P.parse_psf("gaussian:1.0")
    print(f"x2 projection, psf gaussian:1.0, nonneg on, {path.name} (mirrored 2x2 above 512^2 input); ", end="")
    print(f"before = core/projection.py at {rev}; best of {repeats}, cold caches, interleaved")
    print()
    print(
        "| output | projection | before s | after s | speed-up | before CPU s | after CPU s | CPU speed-up "
        "| iterations before / after | rounds "
        "| max abs(Ax-y)/peak before | after | max abs(after-before)/peak |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for n_out in outputs:
        lr = np.ascontiguousarray(big[: n_out // 2, : n_out // 2])
        up = R.upsample(lr, 2)
        sigma = J.estimate_lr_noise(lr)
        target, _ = J.noise_aware_target(up, lr, scale=2, psf=k, sigma=sigma)
        for mode, y, damping in (("exact", lr, 0.0), ("noise-aware", target, J.NOISE_DAMPING)):
            best = {"before": np.inf, "after": np.inf}
            cpu = {"before": np.inf, "after": np.inf}
            res = {}
            for _ in range(repeats):
                for name, mod in (("before", old), ("after", J)):
                    mod._OP_CACHE.clear()  # cold start, as a first restore would be
                    t, c = time.perf_counter(), time.process_time()
                    x, info = mod.project_flux_exact(up, y, scale=2, psf=k, damping=damping, return_info=True)
                    cpu[name] = min(cpu[name], time.process_time() - c)
                    best[name] = min(best[name], time.perf_counter() - t)
                    res[name] = (x, info)
            peak = float(np.abs(y).max())
            (xb, ib), (xa, ia) = res["before"], res["after"]
            rb = np.abs(J.forward_model(xb, scale=2, psf=k) - y).max() / peak
            ra = np.abs(J.forward_model(xa, scale=2, psf=k) - y).max() / peak
            d = np.abs(xa - xb).max() / np.abs(xb).max()
            print(
                f"| {n_out}^2 | {mode} | {best['before']:.2f} | {best['after']:.2f} | "
                f"{best['before'] / best['after']:.2f}x | {cpu['before']:.2f} | {cpu['after']:.2f} | "
                f"{cpu['before'] / cpu['after']:.2f}x | {ib['iterations']} / {ia['iterations']} | "
                f"{ib['nonneg_rounds']} / {ia['nonneg_rounds']} | {rb:.1e} | {ra:.1e} | {d:.1e} |",
                flush=True,
            )


def compare_synthetic(n: int, s: int) -> None:
    """Before/after on the synthetic field of the default table, every PSF, nonneg off and on."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    import _baseline_projection as B

    hr = _field(n)
    print(f"synthetic SR {n}x{n}, scale {s}: before vs after")
    print(
        f"{'psf':<20}{'nonneg':>7}{'before s':>10}{'after s':>9}{'speed-up':>9}{'iters b/a':>11}"
        f"{'max|diff|/peak':>16}{'resid rel b/a':>19}"
    )
    for name, k in _PSFS:
        lr = J.forward_model(hr, scale=s, psf=k)
        sr = R.upsample(lr, s)
        for nonneg in (False, True):
            J._OP_CACHE.clear()
            t = time.perf_counter()
            xb, ib = B.project_flux_exact(sr, lr, scale=s, psf=k, nonneg=nonneg, return_info=True)
            tb = time.perf_counter() - t
            t = time.perf_counter()
            xa, ia = J.project_flux_exact(sr, lr, scale=s, psf=k, nonneg=nonneg, return_info=True)
            ta = time.perf_counter() - t
            d = np.abs(xa - xb).max() / np.abs(xb).max()
            print(
                f"{name:<20}{str(nonneg):>7}{tb:>10.2f}{ta:>9.2f}{tb / max(ta, 1e-9):>8.1f}x"
                f"{ib['iterations']:>6}/{ia['iterations']:<4}{d:>16.1e}"
                f"{ib['residual_rel']:>10.1e}/{ia['residual_rel']:.1e}"
            )


def _field(n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    hr = ndimage.gaussian_filter(rng.gamma(0.3, 5.0, size=(n, n)), 1.0)
    yy, xx = np.mgrid[:n, :n]
    for _ in range(50):
        x0, y0, f = rng.uniform(5, n - 5, 2).tolist() + [rng.uniform(50, 500)]
        hr += f * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / 2.0) / (2 * np.pi)
    hr -= np.median(hr)  # sky-subtracted-like: negatives present, nonneg off by default
    return hr


_PSFS = [
    ("none", None),
    ("gaussian:1.0", P.gaussian_psf(1.0)),
    ("gaussian+airy:1,2", P.gaussian_airy_psf(1.0, 2.0)),
    ("moffat:4", P.moffat_psf(4.0)),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=512, help="SR (HR) image side")
    ap.add_argument("--scale", type=int, default=2)
    ap.add_argument("--with-nonneg", action="store_true", help="also time nonneg=True (alternating projections)")
    ap.add_argument("--compare", action="store_true", help="before/after table on a real image")
    ap.add_argument("--inputs", default="256,512,1024", help="input sides for --compare")
    ap.add_argument("--compare-synthetic", action="store_true", help="before/after on the synthetic field (--size)")
    ap.add_argument("--against", metavar="REV", help="time core/projection.py at git revision REV against this tree")
    ap.add_argument("--outputs", default="512,1024,2048", help="output sides for --against")
    ap.add_argument("--repeats", type=int, default=1, help="best of this many runs for --against")
    args = ap.parse_args()
    if args.against:
        against(args.against, [int(v) for v in args.outputs.split(",")], args.repeats)
        return
    if args.compare:
        compare([int(v) for v in args.inputs.split(",")])
        return
    if args.compare_synthetic:
        compare_synthetic(args.size, args.scale)
        return
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
    print(
        f"{'psf':<22}{'nonneg':>7}{'time s':>8}{'iters':>6}{'max rel err (inner)':>21}{'PSNR bicubic':>14}{'PSNR proj':>11}"
    )
    for name, k in [
        ("none", None),
        ("gaussian:1.0", P.gaussian_psf(1.0)),
        ("gaussian+airy:1,2", P.gaussian_airy_psf(1.0, 2.0)),
        ("moffat:4", P.moffat_psf(4.0)),
    ]:
        lr = J.forward_model(hr, scale=s, psf=k)
        sr = R.upsample(lr, s)
        for nonneg in (False, True) if args.with_nonneg else (False,):
            t = time.perf_counter()
            x, info = J.project_flux_exact(sr, lr, scale=s, psf=k, nonneg=nonneg, return_info=True)
            dt = time.perf_counter() - t
            rep = J.forward_model(x, scale=s, psf=k)
            rel = np.abs(rep - lr)[3:-3, 3:-3].max() / np.abs(lr).max()
            print(
                f"{name:<22}{str(nonneg):>7}{dt:>8.3f}{info['iterations']:>6}{rel:>21.2e}{psnr(sr):>14.2f}{psnr(x):>11.2f}"
            )


if __name__ == "__main__":
    main()

"""Restoration speed, memory, tiling and classical quality, printed as Markdown tables.

    .venv/bin/python benchmarks/restore_speed.py [--size 96] [--big 4096] [--out docs/results_restore.md]

1. Speed: every method (and every network preset, paper size side by side) on the same
   real input (HST WFC3/IR F105W Abell 2744 cutout, degraded x2 with a sigma=1 px Gaussian,
   cropped to SIZE x SIZE), through ``restoration.restore`` (normalisation, tiling, NaN
   handling included). Output megapixels/s and peak resident memory of the call (Linux
   VmHWM, reset before each call via /proc/self/clear_refs; falls back to ru_maxrss).
   Networks are randomly initialised (speed does not depend on weights).
2. Tiled vs untiled: max |difference| and time overhead for small presets.
3. Bounded memory: a 4096 x 4096 input through a tiled network (pix2wgan tiny, x1, tile 512)
   and bicubic x2.
4. Classical quality on real HST data degraded x2 (sigma = 1 px): PSNR (data_range = the
   reference's range) and the median relative per-source flux error (core.metrics.flux_error).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ASTROSR_SHARED_DATA", REPO.parent / "shared" / "data"))


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def measure(fn):
    """(result, seconds, peak MB above the RSS before the call)."""
    import gc

    gc.collect()
    base = _rss_mb()
    _reset_peak()
    t0 = time.perf_counter()
    res = fn()
    dt = time.perf_counter() - t0
    return res, dt, max(0.0, _peak_mb() - base)


def load_real(name: str) -> np.ndarray:
    from napari_astrosr.core.fits_io import read_fits

    return read_fits(DATA / name).data.astype(np.float64)


def degrade(hr: np.ndarray, scale: int = 2, sigma: float = 1.0) -> np.ndarray:
    from napari_astrosr.core.projection import forward_model
    from napari_astrosr.core.psf import gaussian_psf

    h, w = (hr.shape[0] // scale) * scale, (hr.shape[1] // scale) * scale
    return forward_model(hr[:h, :w], scale=scale, psf=gaussian_psf(sigma)).astype(np.float32)


def table(rows: list[dict], cols: list[str]) -> str:
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |")
    return "\n".join(out)


def bench_speed(lr: np.ndarray, presets: list[str]) -> list[dict]:
    import torch

    from napari_astrosr.models.registry import build_model
    from napari_astrosr.restoration import restore

    rows = []
    mp_out = lr.shape[0] * lr.shape[1] * 4 / 1e6
    for m, kw in [
        ("bicubic", {}),
        ("lanczos", {}),
        ("richardson-lucy", {"psf": "gaussian:1.0"}),
        ("backprojection", {"psf": "gaussian:1.0", "flux_noise": "exact"}),
    ]:
        restore(lr[:16, :16], method=m, scale=2, **kw)  # warm-up (lazy imports)
        r, dt, mb = measure(lambda: restore(lr, method=m, scale=2, **kw))
        rows.append(
            dict(
                method=m, preset="-", params="0", seconds=f"{dt:.2f}", mpix_s=f"{mp_out / dt:.3f}", peak_mb=f"{mb:.0f}"
            )
        )
    for name in ("fisr", "restormer", "pix2wgan", "pix2wgan-cascade"):
        for p in presets:
            torch.manual_seed(0)
            net = build_model(name, preset=p, scale=2).eval()
            n_par = sum(x.numel() for x in net.parameters())
            restore(lr[:16, :16], method=name, scale=2, model=net, device="cpu")  # warm-up
            r, dt, mb = measure(lambda: restore(lr, method=name, scale=2, model=net, device="cpu"))  # noqa: F821 - called at once, before `del net`
            rows.append(
                dict(
                    method=name,
                    preset=p,
                    params=f"{n_par / 1e6:.2f}M",
                    seconds=f"{dt:.2f}",
                    mpix_s=f"{mp_out / dt:.4f}",
                    peak_mb=f"{mb:.0f}",
                )
            )
            print(rows[-1], file=sys.stderr, flush=True)
            del net
    return rows


def bench_tiling(lr: np.ndarray) -> list[dict]:
    import torch

    from napari_astrosr.models.registry import build_model
    from napari_astrosr.restoration import restore

    rows = []
    for name in ("fisr", "restormer", "pix2wgan"):
        torch.manual_seed(0)
        net = build_model(name, preset="small", scale=2).eval()
        a, ta, _ = measure(lambda: restore(lr, method=name, scale=2, model=net, device="cpu", tile=10_000))
        b, tb, _ = measure(lambda: restore(lr, method=name, scale=2, model=net, device="cpu", tile=64, overlap=16))
        rng = float(np.nanmax(a.data) - np.nanmin(a.data))
        d = np.abs(a.data - b.data)
        area = b.params["tiles"] * min(64, lr.shape[0]) * min(64, lr.shape[1]) / lr.size
        rows.append(
            dict(
                method=f"{name} small",
                tiles=b.params["tiles"],
                area_factor=f"{area:.2f}",
                max_abs_diff=f"{d.max():.3g}",
                max_diff_over_range=f"{d.max() / rng:.2e}",
                rel_l2=f"{np.linalg.norm(a.data - b.data) / np.linalg.norm(a.data):.2e}",
                untiled_s=f"{ta:.2f}",
                tiled_s=f"{tb:.2f}",
                overhead=f"{(tb / ta - 1) * 100:+.0f}%",
            )
        )
        print(rows[-1], file=sys.stderr, flush=True)
    return rows


def bench_big(size: int) -> list[dict]:
    import torch

    from napari_astrosr.models.registry import build_model
    from napari_astrosr.restoration import restore

    rng = np.random.default_rng(0)
    big = rng.normal(10.0, 1.0, (size, size)).astype(np.float32)
    rows = []
    torch.manual_seed(0)
    net = build_model("pix2wgan", preset="tiny", scale=1).eval()
    r, dt, mb = measure(lambda: restore(big, method="pix2wgan", scale=1, model=net, device="cpu", tile=512))
    rows.append(
        dict(
            run=f"pix2wgan tiny x1, tile 512, {size}x{size}",
            tiles=r.params["tiles"],
            seconds=f"{dt:.1f}",
            out_mpix_s=f"{size * size / 1e6 / dt:.2f}",
            peak_mb_above_start=f"{mb:.0f}",
            input_mb=f"{big.nbytes / 2**20:.0f}",
        )
    )
    del r
    r, dt, mb = measure(lambda: restore(big, method="bicubic", scale=2))
    rows.append(
        dict(
            run=f"bicubic x2, {size}x{size}",
            tiles="-",
            seconds=f"{dt:.1f}",
            out_mpix_s=f"{4 * size * size / 1e6 / dt:.2f}",
            peak_mb_above_start=f"{mb:.0f}",
            input_mb=f"{big.nbytes / 2**20:.0f}",
        )
    )
    return rows


def bench_quality() -> list[dict]:
    from napari_astrosr.core.metrics import flux_error, psnr
    from napari_astrosr.restoration import restore

    rows = []
    fields = [
        ("HST WFC3/IR F105W A2744 cD (400x400)", "hst_wfc3ir_f105w_a2744/abell_2744_cd_galaxy_f105w.fits.gz"),
        ("HST ACS F814W COSMOS (250x250)", "hst_hsc_pair_cosmos_A/Cut_HST.fits"),
    ]
    for label, rel in fields:
        if not (DATA / rel).exists():
            continue
        hr = load_real(rel)
        hr = hr[: hr.shape[0] // 2 * 2, : hr.shape[1] // 2 * 2]
        lr = degrade(hr)
        base = None
        for m, kw in [
            ("bicubic", {}),
            ("lanczos", {}),
            ("richardson-lucy", {"psf": "gaussian:1.0"}),
            ("backprojection", {"psf": "gaussian:1.0", "flux_noise": "exact"}),
        ]:
            out = restore(lr, method=m, scale=2, **kw).data.astype(np.float64)
            p = psnr(hr, out)
            fe = flux_error(hr, out)["flux_error_rel_median"]
            if base is None:
                base = (p, fe)
            rows.append(
                dict(
                    field=label,
                    method=m,
                    psnr_db=f"{p:.2f}",
                    gain_db=f"{p - base[0]:+.2f}",
                    flux_err_rel_median=f"{fe:.4f}",
                    flux_err_cut=f"{base[1] / fe:.2f}x",
                    total_flux_rel=f"{out.sum() / lr.sum() - 1:+.1e}",
                )
            )
            print(rows[-1], file=sys.stderr, flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=64, help="LR input side for the speed table")
    ap.add_argument("--big", type=int, default=4096, help="side of the bounded-memory run (0 = skip)")
    ap.add_argument("--presets", default="tiny,small,paper")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (1: on a loaded shared CPU, 2 threads ran ~10x slower)",
    )
    ap.add_argument("--out", default=None, help="also write the tables to this Markdown file")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    t_all = time.perf_counter()
    hr = load_real("hst_wfc3ir_f105w_a2744/abell_2744_cd_galaxy_f105w.fits.gz")
    lr_full = degrade(hr)
    lr = np.ascontiguousarray(lr_full[: args.size, : args.size])
    load = os.getloadavg()[0]
    parts = [
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch "
        f"{torch.__version__}, {args.threads} threads; load average at start {load:.1f} (shared CPU: "
        "timings are noisy, compare within a table).",
        "",
    ]
    parts += [
        f"## 1. Speed and memory, x2, input {lr.shape[1]}x{lr.shape[0]} (real HST F105W, degraded)",
        "",
        "Random weights; full `restoration.restore` pipeline; `mpix_s` = output megapixels per second; "
        "`peak_mb` = peak resident memory above the level before the call.",
        "",
    ]
    parts.append(
        table(bench_speed(lr, args.presets.split(",")), ["method", "preset", "params", "seconds", "mpix_s", "peak_mb"])
    )
    lr_t = np.ascontiguousarray(lr_full[:128, :128])
    parts += [
        "",
        f"## 2. Tiled (64 px tiles, 16 px overlap) vs untiled, x2, input {lr_t.shape[1]}x{lr_t.shape[0]}",
        "",
        "`area_factor` = pixels pushed through the network / image pixels (the overlap's cost). "
        "Random-weight small presets (global attention / 64-px U-Net receptive fields make exact "
        "agreement impossible; a local CNN agrees to float rounding, see tests).",
        "",
    ]
    parts.append(
        table(
            bench_tiling(lr_t),
            [
                "method",
                "tiles",
                "area_factor",
                "max_abs_diff",
                "max_diff_over_range",
                "rel_l2",
                "untiled_s",
                "tiled_s",
                "overhead",
            ],
        )
    )
    if args.big:
        parts += ["", f"## 3. Bounded memory on a {args.big}x{args.big} input", ""]
        parts.append(
            table(bench_big(args.big), ["run", "tiles", "seconds", "out_mpix_s", "peak_mb_above_start", "input_mb"])
        )
    parts += [
        "",
        "## 4. Classical methods on real HST data degraded x2 (sigma = 1 px Gaussian, block sum)",
        "",
        "PSNR with data_range = reference range; flux error = median |f_ref - f_pred| / f_ref over sources "
        "with S/N > 10 (core.metrics.flux_error); `flux_err_cut` = bicubic / method.",
        "",
    ]
    parts.append(
        table(
            bench_quality(),
            ["field", "method", "psnr_db", "gain_db", "flux_err_rel_median", "flux_err_cut", "total_flux_rel"],
        )
    )
    parts += [
        "",
        f"Total runtime {time.perf_counter() - t_all:.0f} s.",
        "",
        "(`peak_mb` 0 = the call fitted in memory the process already held; see docs/results_restore.md notes.)",
    ]
    text = "\n".join(parts)
    print(text)
    if args.out:
        cmd = "    .venv/bin/python benchmarks/restore_speed.py " + " ".join(argv if argv is not None else sys.argv[1:])
        Path(args.out).write_text(
            f"# Restoration backend: speed, memory, tiling, classical quality\n\nCommand:\n\n{cmd}\n\n{text}\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The DIP coadd's stopping rule against the truth: chi-square of each image through the frames' forward model.

    .venv/bin/python benchmarks/coadd_truth_chi2.py [--stacks sim,simfaint] [--caps 600,2400] [--sim-seed 0]

On the simulated stacks of ``benchmarks/coadd.py`` (known truth, exact noise maps) every image
X is put through the forward model of each frame, ``X * PSF_i`` (``core.psf.convolve``, the
simulation's own), and its chi-square per pixel ``(frame_i - X * PSF_i)^2 / sigma_i^2`` is
printed pooled and per frame, on the interior (12 px border dropped) and on the DIP's
held-out pixels there (the same seeded draw as the fit):

- ``truth``: should be 1.00 within its sd: validates the forward model and the noise maps;
- ``ivar``: the inverse-variance coadd taken as the latent (the DIP's start, skip term);
- ``dip fit``: the DIP's own model (latent * PSF_i + fitted sky: its ``residuals``);
- ``dip finished``: the returned image (sky gate + flux projection) * PSF_i.

DIP runs use ``CoaddOptions`` defaults (what ``astrosr coadd`` does) with the step cap set to
each of ``--caps``; printed: where and why the rule stopped (``stop_detail``), the held-out
chi2 against steps, the time the held-out checks took (fraction of the fit), and per-source
flux / truth by S/N bin (every S/N > 10 source of the ivar coadd, apertures 2x the widest
FWHM at the ivar coadd's PSF, as in ``benchmarks/coadd.py``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

BINS = ((10, 20), (20, 50), (50, 100), (100, np.inf))


def chi2_table(st, images, hold):
    """Rows (label, pooled, per-frame list, pooled held-out, n, n held-out) for frame-grid images."""
    from napari_astrosr.core.psf import convolve

    b = 12
    inner = np.zeros(st.data.shape, bool)
    inner[:, b:-b, b:-b] = True
    use = inner & ~st.mask
    rows = []
    for label, img, sky in images:
        r2 = np.zeros(st.data.shape)
        for i in range(st.n):
            if callable(img):
                model = img(i)
            else:
                model = convolve(np.asarray(img, np.float64), st.psfs[i]) + (0.0 if sky is None else sky[i])
            r2[i] = ((st.data[i] - model) / st.sigma[i]) ** 2
        frames = [float(r2[i][use[i]].mean()) for i in range(st.n)]
        rows.append(
            (
                label,
                float(r2[use].mean()),
                frames,
                float(r2[use & hold].mean()),
                int(use.sum()),
                int((use & hold).sum()),
            )
        )
    return rows


def flux_vs_truth(st, truth, images):
    """Per-source flux / truth by S/N bin (ivar coadd's catalogue and PSF), one dict per image."""
    from scipy.signal import fftconvolve

    from napari_astrosr.core.coadd import aperture_fluxes, compare_fluxes, ivar_coadd
    from napari_astrosr.core.psf import measure_fwhm
    from napari_astrosr.models.dip_coadd import effective_psf

    pe = effective_psf(st)
    half = pe.shape[0] // 2

    def blur(a):
        return fftconvolve(np.pad(np.nan_to_num(np.asarray(a, np.float64)), half, mode="reflect"), pe, mode="valid")

    iv = ivar_coadd(st)
    fwhm = max(measure_fwhm(p) for p in st.psfs)
    cat = compare_fluxes(iv.data, iv.data, fwhm=fwhm, reference_sigma=iv.uncertainty, snr_min=10.0)["table"]
    sel = cat["snr"] > 10
    x, y, snr = cat["x"][sel], cat["y"][sel], cat["snr"][sel]
    r, ann = 2.0 * fwhm, (3.0 * fwhm, 5.0 * fwhm)
    t_img = blur(truth)
    f_t, _ = aperture_fluxes(t_img, x, y, radius=r, annulus=ann)
    out = []
    for label, img, sharp in images:
        im = blur(img) if sharp else np.nan_to_num(np.asarray(img, np.float64))
        d, _ = aperture_fluxes(im - t_img, x, y, radius=r, annulus=ann)
        ratio = 1.0 + d / f_t
        cells = {}
        for lo, hi in BINS:
            s = (snr > lo) & (snr <= hi)
            cells[(lo, hi)] = (
                (
                    float(np.median(ratio[s])),
                    int(s.sum()),
                    float(ratio[s].min()),
                    float(np.sqrt(np.mean((ratio[s] - 1) ** 2))),
                )
                if s.any()
                else None
            )
        out.append((label, cells))
    return out


def run_stack(name, st, truth, caps, args):
    from napari_astrosr.coadd_job import CoaddOptions, coadd_job
    from napari_astrosr.core.coadd import ivar_coadd
    from napari_astrosr.progress import run

    iv = ivar_coadd(st)
    base = CoaddOptions()
    hold = (~st.mask) & (np.random.default_rng(base.seed).random(st.data.shape) < base.holdout)
    images = [("truth", truth, None), ("ivar (as latent = DIP start)", np.nan_to_num(iv.data), None)]
    fluxes = [("ivar", iv.data, False)]
    runs = []
    for cap in caps:
        opts = CoaddOptions(iterations=cap, device=args.device, threads=args.threads, preview_every=0)
        t0 = time.perf_counter()
        res = run(coadd_job(st, options=opts))
        sec = time.perf_counter() - t0
        m = res.metrics
        runs.append((cap, res, sec))
        fit_model = st.data - res.residuals
        images.append((f"dip fit, cap {cap}", (lambda i, fm=fit_model: fm[i]), None))
        sky = np.asarray(res.sky, np.float64)
        images.append((f"dip finished, cap {cap}", res.data, sky - sky.mean()))
        fluxes.append((f"dip, cap {cap}", res.data, True))
        print(
            f"{name}: cap {cap}: {m['steps']} steps ({m['stop_reason']}) in {sec:.0f} s, "
            f"load average {os.getloadavg()[0]:.1f}",
            flush=True,
        )
    print(f"\n### {name}\n")
    print("chi2 per pixel through each frame's PSF and noise map (interior; sd of the pooled mean sqrt(2/n)):\n")
    print("| image | chi2 pooled (n) | held-out pixels (n) | per frame |")
    print("|---|---|---|---|")
    for label, pooled, frames, held, n, nh in chi2_table(st, images, hold):
        sd, sdh = np.sqrt(2 / n), np.sqrt(2 / nh)
        print(
            f"| {label} | {pooled:.3f} +- {sd:.3f} ({n}) | {held:.3f} +- {sdh:.3f} ({nh}) | "
            + " ".join(f"{v:.2f}" for v in frames)
            + " |"
        )
    print("\nWhere the rule stopped (the fit's own held-out pixels, whole frames):\n")
    print(
        "| cap | steps (reason) | returned step | held-out chi2 (target) | per frame | noise maps: sky scatter / map | held-out checks / fit time | s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for cap, res, sec in runs:
        d = res.metrics["stop_detail"]
        nr = [x for x in d.get("noise_ratio") or [] if x is not None]
        print(
            f"| {cap} | {d['step']} ({d['reason']}) | {d['returned_step']} | {d['val_chi2']:.3f} "
            f"({d['target'][0]:.3f}-{d['target'][1]:.3f}) | "
            + " ".join(f"{v:.2f}" for v in d["val_chi2_frames"])
            + f" | {min(nr):.3f}-{max(nr):.3f} ({'trusted' if d['noise_trusted'] else 'not trusted'}) | "
            f"{100 * d['val_time_fraction']:.1f}% | {sec:.0f} |"
        )
    cap, res, _ = runs[-1]
    curve = res.metrics["val_curve"]
    marks = sorted(
        {s for s in (10, 100, 200, 300, 400, 600, 900, 1200, 1800, 2400, 3600) if s <= curve[-1][0]} | {curve[-1][0]}
    )
    at = dict((int(s), v) for s, v in curve)
    print(f"\nHeld-out chi2 against steps (cap {cap} run):\n")
    print("| step | " + " | ".join(str(s) for s in marks) + " |")
    print("|---" * (len(marks) + 1) + "|")
    print("| held-out chi2 | " + " | ".join(f"{at[s]:.3f}" if s in at else "-" for s in marks) + " |")
    print("\nPer-source flux / truth by S/N bin (median (n, min), rms of ratio - 1):\n")
    print("| image | " + " | ".join(f"S/N {lo}-{hi:g}" for lo, hi in BINS) + " |")
    print("|---" * (len(BINS) + 1) + "|")
    for label, cells in flux_vs_truth(st, truth, fluxes):
        txt = [f"{c[0]:.3f} ({c[1]}, {c[2]:.3f}), {100 * c[3]:.1f}%" if c else "-" for c in cells.values()]
        print(f"| {label} | " + " | ".join(txt) + " |")
    print(flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stacks", default="sim", help="comma list of sim, simfaint")
    ap.add_argument("--caps", default="600,2400", help="DIP step caps, one run each")
    ap.add_argument("--sim-size", type=int, default=192)
    ap.add_argument("--sim-seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    import torch

    torch.set_num_threads(args.threads)
    from coadd import SIMS, sim_stack

    print(f"load average at start {os.getloadavg()[0]:.1f}, torch {torch.__version__}, {args.threads} thread(s)")
    caps = [int(c) for c in args.caps.split(",")]
    for sim in args.stacks.split(","):
        size = args.sim_size if sim == "sim" else min(args.sim_size, 160)
        st, truth, _, _ = sim_stack(size=size, seed=args.sim_seed + (sim == "simfaint"), **SIMS[sim])
        run_stack(
            f"{sim} {size}x{size}x{st.n}" + (f" seed {args.sim_seed}" if args.sim_seed else ""), st, truth, caps, args
        )
    print(f"load average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

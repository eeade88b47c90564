"""Coadd benchmark: real DECam stacks and a simulated stack with known truth.

    .venv/bin/python benchmarks/coadd.py [--stacks sfft,tc3,sim,simfaint] [--crop 256] [--steps 600]
                                         [--threads 1] [--device cpu|cuda] [--ensemble 3] [--sim-seed 0]
    .venv/bin/python benchmarks/coadd.py --speed --device cuda      # steps/s table only
    .venv/bin/python benchmarks/coadd.py --noise-check              # noise maps vs sky scatter, per frame

Every coadd runs through ``napari_astrosr.coadd_job.coadd_job`` (the job behind ``astrosr
coadd`` and the widget) and is checked by its report against the inverse-variance coadd of
the same stack: S_F and source-masked sky sigma (``core.metrics``), and per-source flux of
every S/N > 10 source of the ivar coadd, forced photometry at its positions, by S/N bin
(a DIP image is first convolved with the ivar coadd's PSF). Stacks:

- ``sfft``: 10 registered DECam i-band exposures, 256x256 (``--crop`` to shrink), Gaussian
  PSFs from the FWHM keywords, noise from sep + GAIN.
- ``tc3``: legacypipe testcase3, 8 tiny (51x41) g/r/z exposures, per band, weights, DQ
  masks, PSFEx models (25x25); frames on other CCDs reprojected.
- ``sim``: 10 frames (``--sim-size``), 30 stars with fluxes log-uniform over S/N ~10-1000, FWHM
  3.5-6 px, per-frame noise 3-6: the truth gives each coadd's per-source flux error (at the
  ivar coadd's PSF), the coverage of the propagated per-source flux error and the per-pixel
  coverage of the result's uncertainty map. ``simfaint``: the same at 160x160 with 60 stars of
  flux 150-3000 (18 sources at S/N 10-50). ``--sim-seed`` draws another realisation of both.

Rows: ivar, median, ivar-psfmatch (homogenised to the worst PSF), dip (CoaddOptions
defaults), dip-previous (the previous defaults: skip term, kernels 3-9, fixed 300-step
budget, no sky pinning, gate or projection). Tables are printed as markdown.
"""

from __future__ import annotations

import argparse
import glob
import os
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"

PREVIOUS = dict(
    kernel_sizes=(3, 5, 7, 9),
    holdout=0.0,
    gate=None,
    project=False,
    pin_sky=False,
    iterations=300,
    extra={"plateau_tol": 0.0},
)


def crop_stack(st, size):
    from napari_astrosr.core.coadd import FrameStack

    if size is None or size >= min(st.shape):
        return st
    h, w = st.shape
    y0, x0 = (h - size) // 2, (w - size) // 2
    sl = (slice(None), slice(y0, y0 + size), slice(x0, x0 + size))
    wcs = st.wcs[y0 : y0 + size, x0 : x0 + size] if st.wcs is not None else None
    return FrameStack(
        data=st.data[sl].copy(),
        sigma=st.sigma[sl].copy(),
        mask=st.mask[sl].copy(),
        psfs=st.psfs,
        wcs=wcs,
        header=st.header,
        names=st.names,
        paths=st.paths,
    )


def sim_stack(n=10, size=192, nstars=30, seed=0, flux_range=(250.0, 30000.0)):
    """Seeded point sources (bilinear sub-pixel split: exact flux), one Gaussian PSF and noise level per frame."""
    from napari_astrosr.core.coadd import as_stack
    from napari_astrosr.core.psf import convolve, gaussian_psf

    rng = np.random.default_rng(seed)
    truth = np.zeros((size, size))
    xs, ys = rng.uniform(12, size - 13, nstars), rng.uniform(12, size - 13, nstars)
    fl = np.exp(rng.uniform(np.log(flux_range[0]), np.log(flux_range[1]), nstars))
    for x, y, f in zip(xs, ys, fl):
        x0, y0 = int(x), int(y)
        fx, fy = x - x0, y - y0
        truth[y0, x0] += f * (1 - fx) * (1 - fy)
        truth[y0, x0 + 1] += f * fx * (1 - fy)
        truth[y0 + 1, x0] += f * (1 - fx) * fy
        truth[y0 + 1, x0 + 1] += f * fx * fy
    fwhms = np.linspace(3.5, 6.0, n)
    rng.shuffle(fwhms)
    psfs = [gaussian_psf(f / 2.3548, size=int(np.ceil(4 * f)) | 1) for f in fwhms]
    sig = rng.uniform(3.0, 6.0, n).astype(np.float32)
    frames = np.stack([convolve(truth, p) + rng.normal(0, s, truth.shape) for p, s in zip(psfs, sig)]).astype(
        np.float32
    )
    return as_stack(frames, sigmas=sig, psfs=psfs), truth, np.column_stack([xs, ys]), fl


#: The simulated stacks: ``sim`` (the original: 30 stars over S/N ~10-1000, only 3 of them at
#: S/N 10-50) and ``simfaint`` (60 stars, flux 150-3000: ~18 sources at S/N 10-50, so the faint
#: bin's bias is measured on more than three sources). ``--sim-seed`` changes the realisation.
SIMS = {
    "sim": dict(nstars=30, flux_range=(250.0, 30000.0)),
    "simfaint": dict(nstars=60, flux_range=(150.0, 3000.0)),
}


def run_rows(name, st, args, truth=None):
    from napari_astrosr.coadd_job import CoaddOptions, coadd_job
    from napari_astrosr.progress import run

    rows = []
    base = dict(device=args.device, threads=args.threads, preview_every=0)
    plan = [
        ("ivar", CoaddOptions(method="ivar")),
        ("median", CoaddOptions(method="median")),
        ("ivar-psfmatch", CoaddOptions(method="ivar", homogenize=True)),
    ]
    if "dip" in args.rows:
        plan.append(
            ("dip", CoaddOptions(iterations=args.steps, ensemble=args.ensemble if truth is not None else 1, **base))
        )
    if "dip-previous" in args.rows:
        plan.append(("dip-previous", CoaddOptions(**{**PREVIOUS, **base})))
    for label, opts in plan:
        t0 = time.perf_counter()
        res = run(coadd_job(st, options=opts))
        sec = time.perf_counter() - t0
        rows.append((name, label, res, sec))
        if truth is not None:
            rows[-1] = rows[-1] + (truth_errors(res, st, truth),)
    return rows


def truth_errors(res, st, truth):
    """Per-source flux error against the truth (matched to the ivar coadd's PSF) and 1-sigma coverage."""
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
    t_img = blur(truth)
    cat = compare_fluxes(iv.data, iv.data, fwhm=fwhm, reference_sigma=iv.uncertainty, snr_min=10.0)["table"]
    sel = cat["snr"] > 10
    x, y, snr = cat["x"][sel], cat["y"][sel], cat["snr"][sel]
    img = blur(res.data) if res.method == "dip" else np.nan_to_num(res.data)
    r, ann = 2.0 * fwhm, (3.0 * fwhm, 5.0 * fwhm)
    f_t, _ = aperture_fluxes(t_img, x, y, radius=r, annulus=ann)
    # the image's flux error = the background-subtracted aperture flux of (image - truth)
    d, _ = aperture_fluxes(img - t_img, x, y, radius=r, annulus=ann)
    rel = d / f_t
    out = {}
    for lo, hi in ((10, 50), (50, np.inf)):
        s = (snr > lo) & (snr <= hi)
        out[f"err_{lo}"] = (float(np.sqrt(np.mean(rel[s] ** 2))) if s.any() else float("nan"), int(s.sum()))
        out[f"bias_{lo}"] = float(np.median(rel[s])) if s.any() else float("nan")
    # per-source 1-sigma flux error: the frames' noise (drawn with the ivar coadd's sigma)
    # pushed through the same steps as the image (the DIP's finishing; nothing for ivar) and
    # the same photometry; coverage = fraction of sources with |error| <= it
    par = res.params or {}
    if res.method == "dip" or (res.method == "ivar" and not par.get("homogenize")):
        from napari_astrosr.models.dip_coadd import finished_noise

        gate_map = None
        if res.method == "dip" and par.get("gate"):
            from napari_astrosr.models.dip_coadd import gate_sky

            gate_map = gate_sky(res.data, st, levels=par["gate"], sigma=par["gate_sigma"])[1]["weights"]
        draws = finished_noise(
            st,
            gate_map=gate_map,
            gate_sigma=par.get("gate_sigma") if gate_map is not None else None,
            project_sigma=par.get("project_sigma"),
            project_iterations=par.get("project_iterations", 0) if par.get("project") else 0,
            draws=24,
            seed=1,
            return_draws=True,
        )
        fd = np.stack(
            [aperture_fluxes(blur(dd) if res.method == "dip" else dd, x, y, radius=r, annulus=ann)[0] for dd in draws]
        )
        sf = fd.std(axis=0, ddof=1)
        for lo, hi in ((10, 50), (50, np.inf)):
            s = (snr > lo) & (snr <= hi)
            out[f"fcov_{lo}"] = float(np.mean(np.abs(d[s]) <= sf[s])) if s.any() else float("nan")
    if res.uncertainty is not None:
        # per-pixel 1-sigma coverage of the uncertainty map against the truth seen at the
        # sharpest frame's PSF (sky pixels: the noise; source pixels: also the resolution)
        from napari_astrosr.core.psf import convolve

        best = min(st.psfs, key=measure_fwhm)
        ref = convolve(truth, best)
        e = np.abs(np.asarray(res.data, np.float64) - ref)[12:-12, 12:-12]
        u = np.asarray(res.uncertainty, np.float64)[12:-12, 12:-12]
        src = ref[12:-12, 12:-12] > 3 * float(np.median(st.sigma)) / np.sqrt(st.n)
        out["coverage_src"] = float(np.mean(e[src] <= u[src]))
        out["coverage_sky"] = float(np.mean(e[~src] <= u[~src]))
    return out


def print_tables(rows):
    print(
        "| stack | method | S_F vs ivar | sky sigma vs ivar | flux/ivar S/N 10-20 (n, min) | 20-50 | 50-100 | >100 "
        "| all: median, min, flux ok | s | DIP steps (stop) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        name, label, res, sec = row[:4]
        rep = res.metrics.get("report", {})
        cells = []
        for b in rep.get("bins", []):
            cells.append(f"{b['median']:.3f} ({b['n']}, {b['min']:.3f})" if b["n"] else "-")
        m = res.metrics
        steps = f"{m['steps']} ({m['stop_reason']}), {m['steps_per_s']:.2f} st/s" if res.method == "dip" else ""
        allc = (
            f"{rep['flux_ratio_median']:.3f}, {rep['flux_ratio_min']:.3f}, {'yes' if rep['flux_ok'] else 'NO'}"
            if "flux_ratio_median" in rep
            else "-"
        )
        print(
            f"| {name} | {label} | {100 * rep['sharpness_gain']:+.1f}% | {100 * rep['sky_sigma_change']:+.0f}% | "
            + " | ".join(cells)
            + f" | {allc} | {sec:.1f} | {steps} |"
        )
    truths = [r for r in rows if len(r) > 4]
    if truths:
        print()
        print(
            "| stack | method | flux error vs truth S/N 10-50: rms (n) | bias | S/N > 50: rms (n) | bias "
            "| flux 1-sigma coverage S/N 10-50 / > 50 | pixel 1-sigma coverage (sources / sky) |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for name, label, res, sec, t in truths:
            cov = f"{t['coverage_src']:.2f} / {t['coverage_sky']:.2f}" if "coverage_src" in t else "-"
            fcov = f"{t['fcov_10']:.2f} / {t['fcov_50']:.2f}" if "fcov_10" in t else "-"
            print(
                f"| {name} | {label} | {100 * t['err_10'][0]:.2f}% ({t['err_10'][1]}) | {100 * t['bias_10']:+.2f}% | "
                f"{100 * t['err_50'][0]:.2f}% ({t['err_50'][1]}) | {100 * t['bias_50']:+.2f}% | {fcov} | {cov} |"
            )
    print(flush=True)


def speed(args):
    """Steps/s of the default DIP fit at 256x256 with 10 frames (sfft stack), for ``--device``."""
    import torch

    from napari_astrosr.coadd_job import CoaddOptions, coadd_job
    from napari_astrosr.core.coadd import load_frames
    from napari_astrosr.progress import run

    fs = sorted(glob.glob(str(DATA / "stack_decam_i_sfft" / "*.mini.fits")))
    st = load_frames(fs, psf_from_fwhm_key="FWHM", gain_keyword="GAIN")
    print(
        f"device {args.device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print("| kernels | steps | s | steps/s |")
    print("|---|---|---|---|")
    for ks in ((3, 5), (3, 5, 7, 9)):
        opts = CoaddOptions(
            iterations=args.speed_steps,
            kernel_sizes=ks,
            holdout=0.0,
            gate=None,
            project=False,
            device=args.device,
            threads=args.threads,
            preview_every=0,
            report=False,
            extra={"plateau_tol": 0.0},
        )
        res = run(coadd_job(st, options=opts))
        m = res.metrics
        print(f"| {','.join(map(str, ks))} | {m['steps']} | {m['seconds']:.1f} | {m['steps_per_s']:.2f} |", flush=True)


def load_stacks(args):
    """(label, FrameStack, truth or None) for every stack of ``--stacks``, as the tables use them."""
    from napari_astrosr.core.coadd import load_frames

    stacks = args.stacks.split(",")
    for sim in ("sim", "simfaint"):
        if sim in stacks:
            size = args.sim_size if sim == "sim" else min(args.sim_size, 160)
            st, truth, _, _ = sim_stack(size=size, seed=args.sim_seed + (sim == "simfaint"), **SIMS[sim])
            yield f"{sim} {size}x{size}x{st.n}" + (f" seed {args.sim_seed}" if args.sim_seed else ""), st, truth
    if "sfft" in stacks:
        fs = sorted(glob.glob(str(DATA / "stack_decam_i_sfft" / "*.mini.fits")))
        st = crop_stack(load_frames(fs, psf_from_fwhm_key="FWHM", gain_keyword="GAIN"), args.crop)
        yield f"sfft i {st.shape[0]}x{st.shape[1]}x{st.n}", st, None
    if "tc3" in stacks:
        d = DATA / "stack_decam_legacypipe_tc3"
        for band in ("g", "r", "z"):
            imgs = sorted(glob.glob(str(d / "exposures" / f"*_ooi_{band}_*.fits")))
            psfx = [str(d / "psfex" / Path(p).name.replace(".N", "-N").replace(".fits", "-psfex.fits")) for p in imgs]
            st = load_frames(
                imgs,
                weights=[p.replace("_ooi_", "_oow_") for p in imgs],
                dq=[p.replace("_ooi_", "_ood_") for p in imgs],
                psfs=psfx,
                psf_size=25,
            )
            yield f"tc3 {band} {st.shape[0]}x{st.shape[1]}x{st.n}", st, None


def noise_check(args):
    """Per frame: the frames' sky scatter / their noise maps (``core.noise_map_check``), and the verdict."""
    from napari_astrosr.coadd_job import CoaddOptions
    from napari_astrosr.core.coadd import noise_map_check

    tol = CoaddOptions().noise_tol_max
    print(f"| stack | sky scatter / noise map, per frame | sky pixels per frame | trusted (within {tol:g} + 2 sd) |")
    print("|---|---|---|---|")
    for label, st, _ in load_stacks(args):
        r, n = noise_map_check(st.data, st.sigma, st.mask, return_n=True)
        ok = np.isfinite(r) & (np.abs(r - 1) <= tol + 2 * 1.17 / np.sqrt(np.maximum(n, 1)))
        print(
            f"| {label} | {' '.join(f'{v:.3f}' for v in r)} | {min(n)}-{max(n)} | {'yes' if ok.all() else 'no'} |",
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stacks", default="sfft,tc3,sim", help="comma list of sfft, tc3, sim, simfaint")
    ap.add_argument("--rows", default="dip,dip-previous", help="DIP rows: dip, dip-previous")
    ap.add_argument("--crop", type=int, default=256, help="centre crop of the sfft frames (256 = full)")
    ap.add_argument("--sim-size", type=int, default=192)
    ap.add_argument(
        "--sim-seed", type=int, default=0, help="realisation of the simulated stacks (0: the documented one)"
    )
    ap.add_argument("--steps", type=int, default=600, help="DIP step cap (the default stops on held-out pixels)")
    ap.add_argument("--ensemble", type=int, default=1, help="DIP seeds on the simulated stack (>1: coverage)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (the machine is shared)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    ap.add_argument("--speed", action="store_true", help="only the steps/s table (256x256x10)")
    ap.add_argument("--speed-steps", type=int, default=100)
    ap.add_argument("--noise-check", action="store_true", help="only the noise-map check table (every stack)")
    args = ap.parse_args()
    args.rows = args.rows.split(",")
    warnings.simplefilter("ignore")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.speed:
        speed(args)
        return
    if args.noise_check:
        noise_check(args)
        return
    print(f"load average at start {os.getloadavg()[0]:.1f}", flush=True)
    rows = []
    for label, st, truth in load_stacks(args):
        rows += run_rows(label, st, args, truth=truth)
        if not label.startswith("tc3"):
            print_tables(rows)
    print(f"load average at end {os.getloadavg()[0]:.1f}")
    print_tables(rows)


if __name__ == "__main__":
    main()

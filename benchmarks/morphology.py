"""Galaxy morphology GT vs LQ vs RS (issue 11): scatter and scatter-reduction per quantity.

    .venv/bin/python benchmarks/morphology.py [--n-gal 40] [--size 256] [--no-hst] [--quick] [--plots astrosr-output/bench_morphology]
                                              [--out docs/results_morphology.md] [--model CKPT] [--fields dwarf_galaxy,...]

(a) Simulated: ``core.simulate.sersic_galaxies`` (SIZE^2, N_GAL galaxies, Gaussian HR PSF sigma=1 px,
    noiseless = the HR truth GT), degraded with ``core.degrade.degrade`` (Gaussian PSF sigma=1.75 HR px,
    x2 area binning, Gaussian noise sigma=1 per LR pixel).
(b) Real: the four HST WFC3/IR F105W Abell 2744 cutouts (../shared/data/hst_wfc3ir_f105w_a2744) as GT,
    degraded the same way with noise sigma = 2 x the GT sky rms (as much again as the GT noise
    carried into an LR pixel); galaxies of all four fields pooled.

Each LQ is restored x2 with bicubic, backprojection and richardson-lucy (PSF = the degradation
kernel), plus ``restormer`` when a bundled x2 (or x1 after a flux-conserving bicubic x2) checkpoint
exists.

``--model CKPT`` runs the check on a given restormer checkpoint instead: an x1 checkpoint (sidecar
``scale: 1``) switches to Park et al.'s same-size setup (the same PSF and noise, no binning; LQ and
RS on the GT grid) with the input, richardson-lucy, the network alone and the network with default
options (true PSF given); an x2 checkpoint replaces the bundled x2 network (alone and default).
``--fields`` restricts (b) to some of the four A2744 fields (dwarf and spiral are held out of every
training config; cd_galaxy and group lend their left halves to training).
``core.morphology.measure_morphology_many`` measures GT and LQ (LQ on its own grid, split
onto the GT grid with ``scale=2``) once and every RS in the same LQ-defined apertures; the Sersic
models are convolved with the GT PSF (sim: the sigma=1 Gaussian; HST: the empirical F105W star).
Printed: RMSE of LQ and RS vs GT and the reduction factor RMSE_LQ / RMSE_RS per quantity
(fluxes as relative differences; e1, e2 dimensionless; R50 and Sersic R50 in GT pixels).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ASTROSR_SHARED_DATA", REPO.parent / "shared" / "data"))
HST = DATA / "hst_wfc3ir_f105w_a2744"
FIELDS = ("cd_galaxy", "dwarf_galaxy", "group_of_galaxies", "spiral_galaxy")
QS = ("iso_flux", "kron_flux", "e1", "e2", "r50", "sersic_n", "sersic_r50")
DEG_PSF = "gaussian:1.75"


def _methods(model=None, scale=2):
    """(label, options) of the restorations; ``model``: a restormer checkpoint of ``scale`` (1 or 2)."""
    from napari_astrosr.models.checkpoints import bundled_checkpoint

    if model is not None and scale == 1:
        return [
            ("richardson-lucy", {"psf": DEG_PSF}),
            ("restormer-alone", {"method": "restormer", "model": model, "project": False, "keep_sky": False}),
            ("restormer-default", {"method": "restormer", "model": model, "psf": DEG_PSF}),
        ]
    if model is not None:
        return [
            ("bicubic", {}),
            ("richardson-lucy", {"psf": DEG_PSF}),
            ("restormer-alone", {"method": "restormer", "model": model, "project": False, "keep_sky": False}),
            ("restormer-default", {"method": "restormer", "model": model, "psf": DEG_PSF}),
        ]

    # spelled out: as measured before the restore defaults changed (issue 20): exact backprojection, network alone
    ms = [
        ("bicubic", {}),
        ("backprojection", {"psf": DEG_PSF, "flux_noise": "exact"}),
        ("richardson-lucy", {"psf": DEG_PSF}),
    ]
    if bundled_checkpoint("restormer", 2) is not None:
        ms.append(("restormer", {"project": False, "keep_sky": False}))
    elif bundled_checkpoint("restormer", 1) is not None:
        ms.append(("restormer-x1", {}))
    return ms


def _restore_all(lq, methods, scale=2):
    import warnings

    from napari_astrosr.core.resample import upsample
    from napari_astrosr.restoration import restore

    out, secs = {}, {}
    for name, kw in methods:
        t0 = time.perf_counter()
        if name == "restormer-x1":  # a same-size network after the flux-conserving bicubic x2 upsample
            out[name] = restore(upsample(lq, 2, method="bicubic"), method="restormer", scale=1, keep_sky=False).data
        else:
            with warnings.catch_warnings():  # the x1 projection's noise warnings: the tables show the result
                warnings.simplefilter("ignore")
                kw = dict(kw)
                out[name] = restore(lq, method=kw.pop("method", name), scale=scale, **kw).data
        out[name] = np.asarray(out[name], np.float64)
        secs[name] = time.perf_counter() - t0
    return out, secs


def _table(summaries: dict, title: str) -> str:
    names = list(summaries)
    lines = [
        f"**{title}** (N galaxies = {summaries[names[0]]['n_galaxies']}; Sersic rows: fits `ok` in both)",
        "",
        "| quantity | RMSE LQ | r LQ | " + " | ".join(f"RMSE {m} | x {m}" for m in names) + " |",
        "|---|---|---|" + "---|---|" * len(names),
    ]
    first = summaries[names[0]]
    for q in QS + ("pixels",):
        if q == "pixels":
            row = (
                f"| pixels (median RMSE/peak) | {first['pixels']['lq']['median_rmse_over_peak']:.3g} | "
                f"{first['pixels']['lq']['median_pearson_r']:.3f} |"
            )
            for m in names:
                p = summaries[m]["pixels"]
                row += f" {p['rs']['median_rmse_over_peak']:.3g} | {p['scatter_reduction']:.2f} |"
            lines.append(row)
            continue
        e = first[q]["lq"]
        f = lambda v: "n/a" if v is None else f"{v:.3g}"
        row = f"| {q} | {f(e['rmse'])} | {f(e['pearson_r'])} |"
        for m in names:
            s = summaries[m][q]
            row += f" {f(s['rs']['rmse'])} | {f(s['scatter_reduction'])} |"
        lines.append(row)
    fails = ", ".join(
        f"{m}: GT {summaries[m].get('sersic_failures_gt')}+{summaries[m].get('sersic_at_bound_gt')}, "
        f"LQ {summaries[m].get('sersic_failures_lq')}+{summaries[m].get('sersic_at_bound_lq')}, "
        f"RS {summaries[m].get('sersic_failures_rs')}+{summaries[m].get('sersic_at_bound_rs')}"
        for m in names
    )
    lines += ["", f"Sersic failed + at-bound fits: {fails}"]
    return "\n".join(lines)


def simulated(n_gal, size, seed, plots, model=None, scale=2):
    from napari_astrosr.core.degrade import degrade
    from napari_astrosr.core.morphology import measure_morphology_many, morphology_summary, plot_morphology
    from napari_astrosr.core.simulate import sersic_galaxies

    sim = sersic_galaxies(
        size, n=n_gal, psf="gaussian:1.0", noise=None, sky=0.0, seed=seed, r_eff_range=(1.5, 6.0), flux_range=(1e3, 5e4)
    )
    gt = sim.image_clean.astype(np.float64)
    lq = degrade(gt, scale=scale, psf=DEG_PSF, noise="gaussian:1.0", seed=seed + 1).data
    rs, secs = _restore_all(lq, _methods(model, scale), scale)
    t0 = time.perf_counter()
    tabs = measure_morphology_many(gt, lq, rs, scale=scale, psf=sim.psf, thresh=3.0, minarea=8)
    tm = time.perf_counter() - t0
    sums = {m: morphology_summary(t) for m, t in tabs.items()}
    for m, t in tabs.items():
        plot_morphology(t, plots / f"sim_{m}.png", title=f"simulated Sersic, x{scale}, RS = {m}")
    return sums, tabs, dict(restore_s=secs, measure_s=tm, truth=sim.truth)


def hst(seed, plots, max_sources=500, model=None, scale=2, fields=FIELDS):
    from astropy.table import vstack

    from napari_astrosr.core.degrade import degrade
    from napari_astrosr.core.detection import estimate_background
    from napari_astrosr.core.fits_io import read_fits
    from napari_astrosr.core.morphology import measure_morphology_many, morphology_summary, plot_morphology
    from napari_astrosr.core.psf import parse_psf

    psf = parse_psf(str(HST / "f105w_psf.fits.gz"))
    methods = _methods(model, scale)
    pooled: dict = {m: [] for m, _ in methods}
    tm = 0.0
    for i, f in enumerate(FIELDS):
        if f not in fields:
            continue  # the same seed per field whichever are chosen
        gt = read_fits(HST / f"abell_2744_{f}_f105w.fits.gz").data.astype(np.float64)
        rms = estimate_background(gt).globalrms
        lq = degrade(gt, scale=scale, psf=DEG_PSF, noise=f"gaussian:{2 * rms:.6g}", seed=seed + i).data
        rs, _ = _restore_all(lq, methods, scale)
        t0 = time.perf_counter()
        tabs = measure_morphology_many(gt, lq, rs, scale=scale, psf=psf, thresh=3.0, minarea=8, max_sources=max_sources)
        tm += time.perf_counter() - t0
        for m, t in tabs.items():
            t["field"] = f
            pooled[m].append(t)
    tabs = {m: vstack(ts) for m, ts in pooled.items()}
    sums = {m: morphology_summary(t) for m, t in tabs.items()}
    for m, t in tabs.items():
        plot_morphology(t, plots / f"hst_{m}.png", title=f"HST F105W A2744 ({len(fields)} fields), x{scale}, RS = {m}")
    return sums, tabs, dict(measure_s=tm)


def truth_check(tab, truth) -> str:
    """How well the GT Sersic fits recover the simulation's input n and r_eff (matched within 2 px)."""
    from scipy.spatial import cKDTree

    d, j = cKDTree(np.c_[truth["x"], truth["y"]]).query(np.c_[tab["x"], tab["y"]])
    ok = (d < 2) & (np.asarray(tab["sersic_status_gt"]).astype(str) == "ok")
    if not ok.any():
        return "no matched ok fits"
    n_rel = np.asarray(tab["sersic_n_gt"])[ok] / np.asarray(truth["sersic_n"])[j[ok]] - 1
    r_rel = np.asarray(tab["sersic_r50_gt"])[ok] / np.asarray(truth["r_eff"])[j[ok]] - 1
    return (
        f"GT Sersic fits vs the simulation input ({ok.sum()} matched ok fits): median |dn/n| = "
        f"{np.median(np.abs(n_rel)):.3f}, median |dR/R| = {np.median(np.abs(r_rel)):.3f}"
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-gal", type=int, default=40)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--no-hst", action="store_true")
    ap.add_argument("--plots", default=str(REPO / "astrosr-output" / "bench_morphology"))
    ap.add_argument("--out", default=None, help="also write the tables to this Markdown file")
    ap.add_argument(
        "--quick", action="store_true", help="20 simulated galaxies and the 8 brightest per HST field (a few minutes)"
    )
    ap.add_argument(
        "--model",
        default=None,
        help="a restormer checkpoint (its sidecar's scale 1: the same-size setup; 2: in place of the bundled x2)",
    )
    ap.add_argument(
        "--fields", default=",".join(FIELDS), help="comma-separated A2744 fields for (b) (default: all four)"
    )
    a = ap.parse_args(argv)
    fields = tuple(f.strip() for f in a.fields.split(",") if f.strip())
    bad = [f for f in fields if f not in FIELDS]
    if bad or not fields:
        ap.error(f"--fields {a.fields!r}: choose among {', '.join(FIELDS)}")
    scale = 2
    if a.model is not None:
        import json

        side = Path(a.model).with_suffix(".json")
        if not Path(a.model).is_file() or not side.is_file():
            ap.error(f"--model {a.model}: no such checkpoint with its .json sidecar")
        scale = int(json.loads(side.read_text()).get("scale", 2))
        if scale not in (1, 2):
            ap.error(f"--model {a.model}: sidecar scale {scale}; this benchmark runs x1 or x2 checkpoints")
    per_field = 500
    if a.quick:
        a.n_gal, per_field = 20, 8
    plots = Path(a.plots)
    plots.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    parts = []
    s_sum, s_tabs, info = simulated(a.n_gal, a.size, a.seed, plots, a.model, scale)
    parts.append(
        _table(
            s_sum, f"(a) simulated: {a.n_gal} Sersic galaxies on {a.size}^2, degrade {DEG_PSF} x{scale} noise sigma=1"
        )
    )
    parts.append(truth_check(next(iter(s_tabs.values())), info["truth"]))
    parts.append(
        "restore seconds: "
        + ", ".join(f"{m} {s:.1f}" for m, s in info["restore_s"].items())
        + f"; morphology (all RS) {info['measure_s']:.1f} s"
    )
    if not a.no_hst and HST.is_dir():
        h_sum, _, hinfo = hst(a.seed, plots, per_field, a.model, scale, fields)
        parts.append(
            _table(
                h_sum,
                f"(b) HST WFC3/IR F105W A2744, {len(fields)} fields pooled ({', '.join(fields)}), degrade {DEG_PSF} "
                f"x{scale}, noise 2 x GT sky rms",
            )
        )
        parts.append(f"morphology (all RS, {len(fields)} fields) {hinfo['measure_s']:.1f} s")
    elif not a.no_hst:
        parts.append(f"(b) skipped: {HST} not present")
    parts.append(f"total {time.perf_counter() - t_all:.0f} s; plots in {plots}")
    text = "\n\n".join(parts)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "src"))
    sys.exit(main())

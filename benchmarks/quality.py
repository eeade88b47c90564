"""Quality benchmark: bundled networks vs classical baselines on held-out real fields.

Held-out fields (never used by any config in configs/; see docs/results_quality.md):
HST ACS F814W COSMOS galaxy (GalSim masknoise cutout), HST ACS F814W Cut_HST (scarlet pair A),
HST WFC3/IR F105W A2744 dwarf and spiral cutouts, the Spitzer IRAC crowded star field and the
ESO NTT field. Each is degraded by the STAR pipeline (``core.degrade``: PSF on the HR grid,
flux-conserving block sum, optional Gaussian noise of 1% of the LR robust peak) at x2 and x4,
with a Gaussian (sigma 1 px) and a Gaussian+Airy (sigma 1, first dark ring 2 px) PSF, then
restored by every method through ``restoration.restore`` (the same entry point as the CLI).

Metrics (``core.metrics``, reference = the real HR image, data_range = its range): PSNR,
SSIM, STAR Flux Error (mean |f_ref - f_pred| at the reference's sep ellipses), the median
relative per-source flux error (S/N > 10), KL/JS in two regions (source pixels / sky
pixels of the reference), recall (Hungarian, 2 px) and throughput (output Mpix/s).

Pix2WGAN: the real HSC i-band cutout of hst_hsc_pair_cosmos_A reprojected flux-conservingly
onto the HST grid (binned to 0.06"/px, the training pixel scale), calibrated to the HST
counts by a linear fit against the HST image blurred by the HSC PSF, translated, and
compared with the real HST image (4 sources with S/N > 10); plus the four held-out HST fields
degraded with the real HSC PSF, their sources pooled (36 sources), with bootstrap intervals.

Run:  .venv/bin/python benchmarks/quality.py --out docs/results_quality.md   [--quick]
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ASTROSR_SHARED_DATA", REPO.parent / "shared" / "data"))

FIELDS = [
    # (label, path, hdu plane, crop side (HR px), kind)
    ("COSMOS F814W galaxy (HST ACS)", "hst_cosmos_acs_f814w_galaxy/147246.0_150.416558_1.998697_masknoise.fits", 128),
    ("Cut_HST F814W (HST ACS)", "hst_hsc_pair_cosmos_A/Cut_HST.fits", 128),
    ("A2744 dwarf F105W (WFC3/IR)", "hst_wfc3ir_f105w_a2744/abell_2744_dwarf_galaxy_f105w.fits.gz", 128),
    ("A2744 spiral F105W (WFC3/IR)", "hst_wfc3ir_f105w_a2744/abell_2744_spiral_galaxy_f105w.fits.gz", 128),
    ("Spitzer IRAC crowded stars", "spitzer_irac_field/spitzer_example_image.fits", 128),
    ("ESO NTT field (ground)", "eso_ntt_sep_catalog/image.fits", 128),
]
PSFS = [("gauss", "gaussian:1.0"), ("gauss+airy", "gaussian+airy:1.0,2.0")]
NOISE_REL = 0.01
LARGE_SIDE = 512


def _crop(a: np.ndarray, side: int) -> np.ndarray:
    y0 = max(0, (a.shape[0] - side) // 2)
    x0 = max(0, (a.shape[1] - side) // 2)
    c = a[y0 : y0 + side, x0 : x0 + side]
    return np.ascontiguousarray(c[: c.shape[0] // 8 * 8, : c.shape[1] // 8 * 8], dtype=np.float32)


def _degrade(hr, scale, psf, noisy, seed, *, noise_rel=NOISE_REL):
    """STAR degradation, plus (``noisy``) white Gaussian noise of ``noise_rel`` of the LR robust range."""
    from napari_astrosr.core.degrade import degrade

    lr = degrade(hr, scale=scale, psf=psf, noise=None, seed=seed).data.astype(np.float32)
    sigma = 0.0
    if noisy:
        sigma = noise_rel * float(np.nanpercentile(lr, 99.5) - np.nanmedian(lr))
        lr = lr + np.random.default_rng(seed + 1).normal(0, sigma, lr.shape).astype(np.float32)
    return lr, sigma


def data_ready() -> bool:
    """True when the shared data folder exists (else say so on stderr); pins torch to one thread, as every
    table here is measured.
    """
    if not DATA.is_dir():
        print(f"no data folder {DATA}", file=sys.stderr)
        return False
    import torch

    torch.set_num_threads(1)
    return True


def write_report(text: str, out=None) -> None:
    """Print a benchmark's markdown and, with ``out``, write it through a temporary file and a rename (an
    interrupted run never leaves a half-written doc).
    """
    print(text)
    if out:
        out = Path(out)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, out)


def probe_cases(scales, side, noisy=(False, True)):
    """The quality benchmark's SR cases for the probe scripts (rl_refine.py, flux_noise_variants.py):
    yields ``(scale, label, psf, is_noisy, hr, lr, data_range, added_sigma)`` with the same crops, degradation
    and seeds (``added_sigma``: the Gaussian noise added to the LR image, 0 when clean).
    """
    from napari_astrosr.core.fits_io import read_fits

    for scale in scales:
        for fi, (label, rel, _) in enumerate(FIELDS):
            p = DATA / rel
            if not p.exists():
                print(f"skip {label}: {p} missing", file=sys.stderr)
                continue
            hr = _crop(np.nan_to_num(read_fits(p).data), side)
            dr = float(hr.max() - hr.min())
            for _, psf in PSFS:
                for nz in noisy:
                    lr, sigma = _degrade(hr, scale, psf, nz, seed=1000 * fi + 10 * scale + nz)
                    yield scale, label, psf, nz, hr, lr, dr, sigma
            print(f"  x{scale} {label} done", file=sys.stderr, flush=True)


def add_scores(rows, key, hr, img, dr):
    """Append PSNR, the per-source relative errors and their median to ``rows[key]`` (probe scripts)."""
    from napari_astrosr.core import metrics

    rels = source_rel_errors(hr, img)
    r = rows.setdefault(key, {"psnr": [], "rels": [], "med": []})
    r["psnr"].append(metrics.psnr(hr, img, data_range=dr))
    r["rels"].append(rels)
    r["med"].append(float(np.median(rels)) if rels.size else np.nan)


def _regions(hr):
    """Source pixels (reference detections' segmentation, dilated 2 px) and the remaining sky."""
    from scipy.ndimage import binary_dilation

    from napari_astrosr.core.detection import detect_sources

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        src = detect_sources(hr, thresh=3.0)
    mask = np.zeros(hr.shape, bool)
    yy, xx = np.mgrid[: hr.shape[0], : hr.shape[1]]
    for r in src:
        rad = max(2.0, 2.5 * float(r["a"]))
        mask |= (xx - float(r["x"])) ** 2 + (yy - float(r["y"])) ** 2 <= rad**2
    mask = binary_dilation(mask, iterations=2)
    return {"sources": mask, "sky": ~mask}, src


def source_rel_errors(hr, pred):
    """|relative flux error| of every S/N > 10 source of ``hr`` (the selection ``flux_error``'s median uses),
    for medians pooled over many cases.
    """
    from napari_astrosr.core import metrics

    res = metrics.source_residuals(hr, pred)
    snr, fref = np.asarray(res["snr"], float), np.asarray(res["f_ref"], float)
    good = np.isfinite(snr) & (snr > 10) & (fref > 0)
    return np.abs(np.asarray(res["rel_delta"], float))[good]


def _metrics(hr, pred, regions, ref_src, dr):
    from napari_astrosr.core import metrics
    from napari_astrosr.core.detection import detect_sources

    out = {"psnr": metrics.psnr(hr, pred, data_range=dr), "ssim": metrics.ssim(hr, pred, data_range=dr)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fe = metrics.flux_error(hr, pred)
        out["fe"] = fe["flux_error"]
        out["rel"] = fe["flux_error_rel_median"]
        out["rels"] = source_rel_errors(hr, pred)
        for name, m in regions.items():
            if m.sum() > 50:
                d = metrics.region_divergence(hr, pred, m)
                out[f"kl_{name}"], out[f"js_{name}"] = d["kl"], d["js"]
        try:
            pred_src = detect_sources(pred, thresh=3.0)
            out["recall"] = metrics.recall(ref_src, pred_src, max_dist=2.0)
        except Exception:  # noqa: BLE001 - a detection failure is a zero recall, not a crash
            out["recall"] = 0.0
    return out


def reference_of(scale):
    """The baseline every cut is relative to: flux-conserving bicubic, or at scale 1 the input itself."""
    return "bicubic" if scale > 1 else "input"


def _methods(scale, bundled):
    """(label, method, flux_exact, flux_noise, keep_sky): '+ flux-noise' is the noise-aware projection (sigma from
    sep); '+ keep-sky' the sky gate at its default levels (core.skygate).

    Scale 1 (same-size deconvolution, Restormer x1): the input, richardson-lucy and backprojection x1 with the
    true PSF, and the network alone and with default options.
    """
    if scale == 1:
        m = [
            ("input", "input", False, None, False),
            ("richardson-lucy", "richardson-lucy", False, None, False),
            ("backprojection (default)", "backprojection", None, "default", None),
        ]
        if ("restormer", 1) in bundled:
            m += [("restormer (default)", "restormer", None, "default", None)]
            m += [("restormer", "restormer", False, None, False)]
        return m
    m = [
        ("bicubic", "bicubic", False, None, False),
        ("lanczos", "lanczos", False, None, False),
        ("richardson-lucy", "richardson-lucy", False, None, False),
        ("backprojection", "backprojection", False, None, False),
        ("bicubic + flux-exact", "bicubic", True, None, False),
        ("backprojection + flux-noise", "backprojection", False, "auto", False),
    ]
    m += [("backprojection (default)", "backprojection", None, "default", None)]
    for net in ("fisr", "restormer"):
        if (net, scale) in bundled:
            # "(default)": what `astrosr restore --method NET --psf PSF` does with no other flag (projection with
            # the measured-noise choice, sky kept)
            m += [(f"{net} (default)", net, None, "default", None)]
            m += [
                (net, net, False, None, False),
                (f"{net} + flux-exact", net, True, None, False),
                (f"{net} + flux-noise", net, True, "auto", False),
                (f"{net} + keep-sky + flux-exact", net, True, None, True),
                (f"{net} + keep-sky + flux-noise", net, True, "auto", True),
            ]
    return m


def run_sr(fields, scales, quick=False, methods=None, models=None):
    """``methods``: keep only these method labels (None: all); ``models``: {(net, scale): checkpoint}
    overriding the bundled weights (to compare a candidate before shipping it).
    """
    from napari_astrosr.core.fits_io import read_fits
    from napari_astrosr.models.checkpoints import bundled_checkpoint
    from napari_astrosr.restoration import restore

    models = models or {}
    bundled = {(n, s) for n in ("fisr", "restormer") for s in (2, 4) if bundled_checkpoint(n, s) or (n, s) in models}
    if bundled_checkpoint("restormer", 1) or ("restormer", 1) in models:
        bundled.add(("restormer", 1))
    rows = []
    for fi, (label, rel, side) in enumerate(fields):
        p = DATA / rel
        if not p.exists():
            print(f"skip {label}: {p} missing", file=sys.stderr)
            continue
        hr = _crop(np.nan_to_num(read_fits(p).data), side)
        dr = float(hr.max() - hr.min())
        regions, ref_src = _regions(hr)
        for scale in scales:
            for pk, psf in PSFS:
                for noisy in (False, True):
                    lr, sigma = _degrade(hr, scale, psf, noisy, seed=1000 * fi + 10 * scale + noisy)
                    for label_m, method, fe, fn, ks in _methods(scale, bundled):
                        if methods and label_m not in methods and label_m != reference_of(scale):
                            continue
                        kw = {}
                        if (method, scale) in models:
                            kw["model"] = models[(method, scale)]
                        if fn == "default":  # the shipped defaults, given the true PSF
                            kw["psf"] = psf
                        else:
                            # the variants spelled out, so that they mean what they meant before the defaults
                            # changed: no projection unless asked, exact unless '+ flux-noise' (sep's rms)
                            if method in ("richardson-lucy", "backprojection") or fe:
                                kw["psf"] = psf
                            if method != "backprojection":
                                kw["project"] = bool(fe)
                            if fe or method == "backprojection":
                                kw["flux_noise"] = legacy_noise(fn, lr)
                            if method in ("fisr", "restormer"):
                                kw["keep_sky"] = bool(ks)
                        t0 = time.perf_counter()
                        if method == "input":  # scale 1: the blurred image itself
                            out = lr
                        else:
                            with warnings.catch_warnings():
                                warnings.simplefilter("ignore")
                                out = restore(lr, method=method, scale=scale, device="cpu", threads=1, **kw).data
                        dt = max(time.perf_counter() - t0, 1e-9)
                        m = _metrics(hr, out, regions, ref_src, dr)
                        m.update(
                            field=label,
                            scale=scale,
                            psf=pk,
                            noisy=noisy,
                            method=label_m,
                            side=hr.shape[0],
                            mpix_s=out.size / 1e6 / dt,
                        )
                        rows.append(m)
                    print(f"  {label} x{scale} {pk} {'noisy' if noisy else 'clean'} done", file=sys.stderr, flush=True)
    return rows


def legacy_noise(flux_noise, lr):
    """``flux_noise`` as the benchmarks meant it before the measured-noise default: None = an exact projection,
    ``"auto"`` = noise-aware with sep's background rms of the LR image, always.
    """
    if flux_noise is None:
        return "exact"
    if flux_noise == "auto":
        from napari_astrosr.core.projection import estimate_lr_noise

        return estimate_lr_noise(np.nan_to_num(lr))
    return flux_noise


def _agg(rows, keys):
    import collections

    g = collections.defaultdict(list)
    for r in rows:
        g[tuple(r[k] for k in keys)].append(r)
    return g


def _gmean(v):
    v = np.asarray([x for x in v if np.isfinite(x) and x > 0])
    return float(np.exp(np.mean(np.log(v)))) if v.size else float("nan")


def sr_tables(rows):
    """Per (scale, noise): every method averaged over fields and both PSFs, relative to bicubic."""
    lines = []
    bic = {(r["field"], r["scale"], r["psf"], r["noisy"]): r for r in rows if r["method"] == reference_of(r["scale"])}
    groups = _agg(rows, ["scale", "noisy"])
    for (scale, noisy), rs in sorted(groups.items()):
        lines += [
            f"### x{scale}, {'noisy (Gaussian, 1% of the LR robust peak)' if noisy else 'clean'}",
            "",
            f"| method | PSNR dB | gain dB | SSIM | Flux Error cut (gmean {reference_of(scale)}/method) | median rel. flux err | "
            "rel. err cut | KL src | JS src | JS sky | recall | Mpix/s |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        by_m = _agg(rs, ["method"])
        order = [m for m in dict.fromkeys(r["method"] for r in rs)]
        for (meth,) in [(m,) for m in order]:
            mr = by_m[(meth,)]
            gains = [r["psnr"] - bic[(r["field"], scale, r["psf"], noisy)]["psnr"] for r in mr]
            fe_cut = _gmean([bic[(r["field"], scale, r["psf"], noisy)]["fe"] / r["fe"] for r in mr if r["fe"] > 0])
            rel_cut = _gmean(
                [
                    bic[(r["field"], scale, r["psf"], noisy)]["rel"] / r["rel"]
                    for r in mr
                    if np.isfinite(r["rel"]) and r["rel"] > 0
                ]
            )

            def mean(k):
                v = [r.get(k, np.nan) for r in mr]
                v = [x for x in v if np.isfinite(x)]
                return float(np.mean(v)) if v else float("nan")

            lines.append(
                f"| {meth} | {mean('psnr'):.2f} | {np.mean(gains):+.2f} | {mean('ssim'):.3f} | {fe_cut:.2f}x | "
                f"{float(np.nanmedian([r['rel'] for r in mr])):.4f} | {rel_cut:.2f}x | {mean('kl_sources'):.3f} | "
                f"{mean('js_sources'):.3f} | {mean('js_sky'):.3f} | {mean('recall'):.2f} | {mean('mpix_s'):.3f} |"
            )
        lines.append("")
    return lines


def beats_table(rows):
    """Does each network beat every classical baseline on PSNR and rel. flux error, per field/case?"""
    nets = sorted({r["method"] for r in rows if r["method"].split()[0] in ("fisr", "restormer")})
    classical = ["input", "bicubic", "lanczos", "richardson-lucy", "backprojection"]
    cases = _agg(rows, ["field", "scale", "psf", "noisy"])
    lines = [
        "| network | cases | beats all classical on PSNR | beats all classical on rel. flux err | "
        "beats backprojection on PSNR | beats backprojection on rel. flux err |",
        "|---|---|---|---|---|---|",
    ]
    for n in nets:
        tot = p_all = f_all = p_bp = f_bp = 0
        for _, rs in cases.items():
            d = {r["method"]: r for r in rs}
            if n not in d:
                continue
            tot += 1
            r = d[n]
            cl = [d[c] for c in classical if c in d]
            p_all += all(r["psnr"] > c["psnr"] for c in cl)
            f_all += all((r["rel"] < c["rel"]) if np.isfinite(c["rel"]) else True for c in cl)
            if "backprojection" in d:  # absent when --methods leaves it out
                bp = d["backprojection"]
                p_bp += r["psnr"] > bp["psnr"]
                f_bp += (r["rel"] < bp["rel"]) if np.isfinite(bp["rel"]) else True
        lines.append(f"| {n} | {tot} | {p_all}/{tot} | {f_all}/{tot} | {p_bp}/{tot} | {f_bp}/{tot} |")
    return lines + [""]


def _aggregates(rows, scale, noisy):
    """Method -> (mean PSNR, gmean rel. err cut vs bicubic, median of per-case median rel. err,
    median rel. err pooled over every S/N > 10 source of every case, number of those sources).
    """
    bic = {
        (r["field"], r["psf"]): r
        for r in rows
        if r["method"] == reference_of(scale) and r["scale"] == scale and r["noisy"] == noisy
    }
    out = {}
    for (meth,), mr in _agg([r for r in rows if r["scale"] == scale and r["noisy"] == noisy], ["method"]).items():
        cut = _gmean(
            [bic[(r["field"], r["psf"])]["rel"] / r["rel"] for r in mr if np.isfinite(r["rel"]) and r["rel"] > 0]
        )
        pooled = np.concatenate([r["rels"] for r in mr]) if mr else np.zeros(0)
        out[meth] = (
            float(np.mean([r["psnr"] for r in mr])),
            cut,
            float(np.nanmedian([r["rel"] for r in mr])),
            float(np.median(pooled)) if pooled.size else float("nan"),
            int(pooled.size),
        )
    return out


def verdict_table(rows):
    """The issue's criterion on the aggregates: does a network variant beat the best classical baseline?"""
    classical = [
        "input",
        "bicubic",
        "lanczos",
        "richardson-lucy",
        "backprojection",
        "backprojection + flux-noise",
    ]
    lines = [
        "| scale | data | network | PSNR dB (best classical) | rel. err cut (best classical) | "
        "median rel. err (best classical) | pooled median rel. err, n sources (best classical) | "
        "beats all on PSNR | on rel. err cut | on median rel. err | on pooled median |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for scale, noisy in sorted({(r["scale"], r["noisy"]) for r in rows}):
        ag = _aggregates(rows, scale, noisy)
        cl = {m: v for m, v in ag.items() if m in classical}
        if not cl:
            continue
        bp = max(cl.items(), key=lambda kv: kv[1][0])
        bc = max(cl.items(), key=lambda kv: kv[1][1])
        bm = min(cl.items(), key=lambda kv: kv[1][2])
        bq = min(cl.items(), key=lambda kv: kv[1][3])
        for m, (ps, cut, med, pool, npool) in ag.items():
            if m in classical or m.split()[0] not in ("fisr", "restormer"):
                continue
            yn = lambda ok: "**yes**" if ok else "no"  # noqa: E731
            lines.append(
                f"| x{scale} | {'noisy' if noisy else 'clean'} | {m} | {ps:.2f} ({bp[1][0]:.2f} {bp[0]}) | "
                f"{cut:.2f}x ({bc[1][1]:.2f}x {bc[0]}) | {med:.4f} ({bm[1][2]:.4f} {bm[0]}) | "
                f"{pool:.4f}, {npool} ({bq[1][3]:.4f} {bq[0]}) | "
                f"{yn(ps > bp[1][0])} | {yn(cut > bc[1][1])} | {yn(med < bm[1][2])} | {yn(pool < bq[1][3])} |"
            )
    return lines + [""]


def acceptance_table(rows):
    """Issue 20.6: every network with default options against flux-conserving bicubic (mean PSNR, median of the
    per-case median |rel. flux err|, and the median pooled over every S/N > 10 source); 'ok' = no worse.
    At scale 1 the reference is the input itself.
    """
    lines = [
        "| scale | data | method | PSNR dB (reference) | median rel. err (reference) | pooled median rel. err, n "
        "(reference) | PSNR no lower | median no worse | pooled no worse |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    yn = lambda ok: "**yes**" if ok else "no"  # noqa: E731
    for scale, noisy in sorted({(r["scale"], r["noisy"]) for r in rows}):
        ag = _aggregates(rows, scale, noisy)
        if reference_of(scale) not in ag:
            continue
        b = ag[reference_of(scale)]
        for m, (ps, _, med, pool, npool) in ag.items():
            if "(default" not in m:
                continue
            lines.append(
                f"| x{scale} | {'noisy' if noisy else 'clean'} | {m} | {ps:.2f} ({b[0]:.2f}) | {med:.4f} "
                f"({b[2]:.4f}) | {pool:.4f}, {npool} ({b[3]:.4f}) | {yn(ps >= b[0])} | {yn(med <= b[2])} | "
                f"{yn(pool <= b[3])} |"
            )
    return lines + [""]


def field_table(rows, scale=2, noisy=False):
    lines = [
        f"| field (x{scale}, {'noisy' if noisy else 'clean'}, mean of both PSFs) | method | PSNR dB | "
        "median rel. flux err | recall |",
        "|---|---|---|---|---|",
    ]
    g = _agg([r for r in rows if r["scale"] == scale and r["noisy"] == noisy], ["field", "method"])
    for (f, m), rs in g.items():
        lines.append(
            f"| {f} | {m} | {np.mean([r['psnr'] for r in rs]):.2f} | "
            f"{np.nanmedian([r['rel'] for r in rs]):.4f} | {np.mean([r['recall'] for r in rs]):.2f} |"
        )
    return lines + [""]


# ------------------------------------------------------------------------------------ Pix2WGAN
def _hsc_psf_on(pixscale):
    from napari_astrosr.core.psf import psf_from_fits, resample_psf

    return resample_psf(psf_from_fits(DATA / "hst_hsc_pair_cosmos_A/PSF_HSC.fits", plane=2), 0.168 / pixscale)


def _translate(img, method, *, psf=None, flux_noise=None, models=None, keep_sky=None):
    """Pix2WGAN translation through ``restore`` (None: no bundled weights and no ``models[(method, 1)]``
    checkpoint); with ``flux_noise`` the output is projected onto the input through ``psf`` (the noise-aware flux
    projection at scale 1).
    """
    from napari_astrosr.models.checkpoints import bundled_checkpoint
    from napari_astrosr.restoration import restore

    model = (models or {}).get((method, 1))
    if model is None and bundled_checkpoint(method, 1) is None:
        return None
    kw = (
        {"project": False}
        if flux_noise is None
        else {"psf": psf, "flux_exact": True, "flux_noise": legacy_noise(flux_noise, img)}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return restore(
            img, method=method, scale=1, model=model, device="cpu", threads=1, keep_sky=bool(keep_sky), **kw
        ).data


def _classical(img, method, *, scale, psf, flux_noise=None):
    from napari_astrosr.restoration import restore

    kw = {"flux_noise": legacy_noise(flux_noise, img)} if method == "backprojection" else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return restore(img, method=method, scale=scale, psf=psf, device="cpu", **kw).data


def _verdict_word(a, b, nd):
    """'beats' when ``a > b`` at the precision printed (``nd`` decimals): equal there is a tie, not a win."""
    a, b = round(a, nd), round(b, nd)
    return "beats" if a > b else ("ties" if a == b else "does not beat")


def _p2w_verdict(rows, base_label):
    """One line per network variant: does it beat every classical row (PSNR up, median rel. flux err down)?"""
    classical = [r for r in rows if r[0] == base_label or r[0].startswith(("richardson-lucy", "backprojection"))]
    best_p = max(classical, key=lambda r: r[1])
    best_f = min(classical, key=lambda r: r[2])
    out = []
    for name, p, f in rows:
        if name.startswith("pix2wgan"):
            out.append(
                f"- {name}: PSNR {p:.2f} dB vs best classical {best_p[1]:.2f} ({best_p[0]}) -> "
                f"{_verdict_word(p, best_p[1], 2)}; median rel. flux err {f:.4f} vs "
                f"{best_f[2]:.4f} ({best_f[0]}) -> {_verdict_word(-f, -best_f[2], 4)}."
            )
    return out


def _boot_median(errs, others=(), *, n=2000, seed=0):
    """68% bootstrap interval of the median of ``errs`` (per-source errors), and for each array in ``others``
    (the same sources, another method) the fraction of resamples in which ``errs``' median is the lower.
    """
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(errs), (n, len(errs)))
    med = np.median(errs[idx], axis=1)
    lo, hi = np.percentile(med, [16, 84])
    return (float(lo), float(hi)), [float(np.mean(med < np.median(o[idx], axis=1))) for o in others]


def _hst_at_006(path):
    """An HST image block-summed (flux-conserving) to 0.06"/px, the pixel scale Pix2WGAN was trained at,
    trimmed to a multiple of 4.
    """
    from astropy.wcs.utils import proj_plane_pixel_scales

    from napari_astrosr.core.fits_io import read_fits
    from napari_astrosr.core.resample import block_sum

    img = read_fits(path)
    factor = int(round(0.06 / (proj_plane_pixel_scales(img.wcs.celestial)[0] * 3600)))
    hr = np.nan_to_num(img.data).astype(np.float64)
    hr = block_sum(hr, factor) if factor > 1 else hr
    return np.ascontiguousarray(hr[: hr.shape[0] // 4 * 4, : hr.shape[1] // 4 * 4])


def p2w_cases(psf):
    """The pooled Pix2WGAN cases (also nullspace.py): the held-out HST fields at 0.06"/px degraded with ``psf`` (x4
    block sum, noisy = 1% of the LR robust peak), clean then noisy; yields ``(noisy, label, hr, lr, inp)``, ``inp``
    being the flux-conserving bicubic upsampling of ``lr`` (what the networks translate).
    """
    from napari_astrosr.core.resample import upsample

    fields = [(label, DATA / rel) for label, rel, _ in FIELDS if "HST" in label or "WFC3" in label]
    fields = [(label, p) for label, p in fields if p.exists()]
    for noisy in (False, True):
        for fi, (label, p) in enumerate(fields):
            hr = _hst_at_006(p)
            lr, _ = _degrade(hr, 4, psf, noisy, seed=7 + fi)
            yield noisy, label, hr, lr, np.asarray(upsample(lr, 4, method="bicubic"), np.float32)


def project_noise_aware(img, lr, *, scale, psf, sigma):
    """``img`` through the noise-aware projection (Wiener-filtered target, damped solve), as ``restore(flux_noise=)``
    does it, but through any forward model (here the true x4 one where restore's own would use scale 1).
    """
    from napari_astrosr.core.projection import NOISE_DAMPING, noise_aware_target, project_flux_exact

    t, _ = noise_aware_target(img, lr, scale=scale, psf=psf, sigma=sigma)
    return project_flux_exact(img, t, scale=scale, psf=psf, damping=NOISE_DAMPING)


def _p2w_degraded_fields(models=None):
    """Pix2WGAN on the held-out HST fields degraded the way it was trained (real HSC PSF, x4 block sum,
    flux-conserving bicubic back onto the HST grid), sources pooled over the fields: the real pair alone holds
    4 sources, too few to rank methods by their median.
    """
    from napari_astrosr.core import metrics
    from napari_astrosr.core.projection import estimate_lr_noise, project_flux_exact

    psf = _hsc_psf_on(0.06)
    pooled = {}  # (noisy, name) -> {"psnr": [...], "errs": [...]}
    n_src = []
    for noisy, label, hr, lr, inp in p2w_cases(psf):
        cands = [
            ("bicubic input", inp),
            ("richardson-lucy", _classical(lr, "richardson-lucy", scale=4, psf=psf)),
            ("backprojection", _classical(lr, "backprojection", scale=4, psf=psf)),
            ("backprojection + flux-noise", _classical(lr, "backprojection", scale=4, psf=psf, flux_noise="auto")),
        ]
        sigma_lr = estimate_lr_noise(lr)
        for net in ("pix2wgan", "pix2wgan-cascade"):
            for ks in (False, True):
                out = _translate(inp, net, models=models, keep_sky=ks or None)
                if out is None:
                    break
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    name = net + (" + keep-sky" if ks else "")
                    # the projections through the true x4 forward model (restore's own would use scale 1)
                    cands += [
                        (name, out),
                        (f"{name} + flux-exact", project_flux_exact(out, lr, scale=4, psf=psf)),
                        (f"{name} + flux-noise", project_noise_aware(out, lr, scale=4, psf=psf, sigma=sigma_lr)),
                    ]
        dr = float(hr.max() - hr.min())
        for name, img in cands:
            r = pooled.setdefault((noisy, name), {"psnr": [], "errs": []})
            r["psnr"].append(metrics.psnr(hr, img, data_range=dr))
            r["errs"].append(source_rel_errors(hr, img))
        if not noisy:
            n_src.append(f"{label} {hr.shape[1]}x{hr.shape[0]} px, {len(r['errs'][-1])}")
    if not pooled:
        return []
    lines = [
        "### Held-out HST fields degraded with the real HSC PSF (x4, then back onto the HST grid), pooled",
        "",
        'The four HST fields of the SR benchmark (whole cutouts at 0.06"/px; S/N > 10 sources: '
        + "; ".join(n_src)
        + "), degraded as Pix2WGAN was trained: real HSC PSF, x4 block sum, noisy = 1% of the LR robust peak. "
        "Networks translate the flux-conserving bicubic upsampling; classical baselines and the projections use the "
        "true forward model (HSC PSF, 4x4 block sum). PSNR: mean over fields; flux: median |relative error| of all "
        "sources pooled, with its 68% bootstrap interval.",
        "",
        "| noise | image | PSNR dB | gain dB | pooled median rel. flux err (n) | 68% interval |",
        "|---|---|---|---|---|---|",
    ]
    verdicts = []
    for noisy in (False, True):
        tag = "1%" if noisy else "clean"
        rows = [
            (name, float(np.mean(r["psnr"])), np.concatenate(r["errs"]))
            for (nz, name), r in pooled.items()
            if nz == noisy
        ]
        base = rows[0][1]
        classical = [r for r in rows if not r[0].startswith("pix2wgan")]
        best_p = max(classical, key=lambda r: r[1])
        best_f = min(classical, key=lambda r: np.median(r[2]))
        for name, p, e in rows:
            (lo, hi), _ = _boot_median(e)
            lines.append(
                f"| {tag} | {name} | {p:.2f} | {p - base:+.2f} | {np.median(e):.4f} ({len(e)}) | {lo:.4f}-{hi:.4f} |"
            )
        for name, p, e in rows:
            if not name.startswith("pix2wgan"):
                continue
            _, (frac,) = _boot_median(e, [best_f[2]])
            f, fb = np.median(e), np.median(best_f[2])
            verdicts.append(
                f"- {tag}: {name}: PSNR {p:.2f} dB vs best classical {best_p[1]:.2f} ({best_p[0]}) -> "
                f"{_verdict_word(p, best_p[1], 2)}; pooled median rel. flux err {f:.4f} vs {fb:.4f} "
                f"({best_f[0]}) -> {_verdict_word(-f, -fb, 4)} "
                f"(lower in {100 * frac:.0f}% of paired bootstrap resamples)."
            )
    return lines + [""] + verdicts + [""]


def run_pix2wgan(models=None):
    """Pix2WGAN against the classical ways of sharpening the same input with the same (real HSC) PSF:
    Richardson-Lucy (30 iterations, the default) and the noise-aware projection (``backprojection +
    flux-noise``), plus each network followed by the noise-aware projection.
    """
    from napari_astrosr.core import metrics
    from napari_astrosr.core.fits_io import read_fits
    from napari_astrosr.core.psf import convolve
    from napari_astrosr.core.resample import block_sum, reproject_flux, scale_wcs

    def score(hr, img, dr):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fe = metrics.flux_error(hr, img)
        return (
            metrics.psnr(hr, img, data_range=dr),
            metrics.ssim(hr, img, data_range=dr),
            fe["flux_error_rel_median"],
            fe["n_sources_snr10"],
        )

    lines = []
    hst_p, hsc_p = DATA / "hst_hsc_pair_cosmos_A/Cut_HST.fits", DATA / "hst_hsc_pair_cosmos_A/Cut_HSC.fits"
    if hst_p.exists() and hsc_p.exists():
        hst = read_fits(hst_p)
        hsc = read_fits(hsc_p)
        hr = block_sum(np.nan_to_num(hst.data), 2)  # 0.06"/px, the pixel scale pix2wgan was trained at
        wcs_hr = scale_wcs(hst.wcs, 0.5)
        hsc_i = np.asarray(hsc.data[2], np.float64)
        on = reproject_flux(hsc_i, hsc.wcs.celestial, wcs_hr, hr.shape).data
        ok = np.isfinite(on)
        psf = _hsc_psf_on(0.06)
        # photometric calibration without the restored result: fit HSC ~ a * (HST * PSF_HSC) + b
        blurred = convolve(hr, psf)
        A = np.c_[on[ok], np.ones(ok.sum())]
        a, b = np.linalg.lstsq(A, blurred[ok], rcond=None)[0]
        inp = np.where(ok, a * on + b, np.nanmedian(blurred)).astype(np.float32)
        dr = float(hr.max() - hr.min())
        lines += [
            '### Real HSC i band -> HST F814W (hst_hsc_pair_cosmos_A, 125x125 at 0.06"/px)',
            "",
            'Classical baselines and projections use the real HSC PSF resampled to 0.06"/px.',
            "",
            "| image | PSNR dB vs real HST | gain dB | SSIM | median rel. flux err (n sources) |",
            "|---|---|---|---|---|",
        ]
        base = metrics.psnr(hr, inp, data_range=dr)
        cands = [
            ("HSC input (reprojected, calibrated)", inp),
            ("richardson-lucy", _classical(inp, "richardson-lucy", scale=1, psf=psf)),
            ("backprojection + flux-noise", _classical(inp, "backprojection", scale=1, psf=psf, flux_noise="auto")),
        ]
        for net in ("pix2wgan", "pix2wgan-cascade"):
            cands += [
                (net, _translate(inp, net, models=models)),
                (f"{net} + flux-noise", _translate(inp, net, psf=psf, flux_noise="auto", models=models)),
            ]
        scored = []
        for name, img in cands:
            if img is None:
                lines.append(f"| {name} | no bundled weights | | | |")
                continue
            p, ss, f, n = score(hr, img, dr)
            scored.append((name, p, f))
            lines.append(f"| {name} | {p:.2f} | {p - base:+.2f} | {ss:.3f} | {f:.4f} ({n}) |")
        lines += [
            "",
            *_p2w_verdict(scored, "HSC input (reprojected, calibrated)"),
            "",
            f"The cutout holds {n} sources with S/N > 10: one source more or less right moves these medians "
            "by more than the differences between rows; the pooled fields below rank the methods.",
            "",
        ]
    lines += _p2w_degraded_fields(models)
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="write the markdown results here")
    ap.add_argument("--quick", action="store_true", help="3 fields, x2 only")
    ap.add_argument(
        "--scales",
        default=None,
        help="comma-separated scales (default 2,4; --quick: 2); 1 = same-size deconvolution (the input blurred on "
        "its own grid; restormer x1 against the input, richardson-lucy and backprojection x1)",
    )
    ap.add_argument(
        "--methods",
        default=None,
        help="comma-separated method labels to run, e.g. 'fisr,fisr + flux-exact,backprojection' "
        "(bicubic always runs: it is the reference of every cut)",
    )
    ap.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NET:SCALE=CKPT",
        help="use this checkpoint instead of the bundled one, e.g. fisr:2=runs/fisr_x2/model.pt or "
        "pix2wgan:1=runs/p2w/model.pt (the Pix2WGAN section)",
    )
    ap.add_argument("--no-pix2wgan", action="store_true", help="skip the Pix2WGAN section")
    ap.add_argument("--max-fields", type=int, default=None, help="only the first N fields (a smoke test)")
    ap.add_argument(
        "--large",
        action="store_true",
        help=f"centre crops of up to {LARGE_SIDE} HR px instead of 128 (more sources per field: steadier "
        "flux aggregates; ~10x the run time)",
    )
    args = ap.parse_args(argv)
    if not data_ready():
        return 2
    import torch

    t0 = time.perf_counter()
    fields = FIELDS[:3] if args.quick else FIELDS
    if args.max_fields:
        fields = fields[: args.max_fields]
    if args.large:
        fields = [(label, rel, LARGE_SIDE) for label, rel, _ in fields]
    scales = (2,) if args.quick else (2, 4)
    if args.scales:
        scales = tuple(int(v) for v in args.scales.split(","))
    methods = [m.strip() for m in args.methods.split(",")] if args.methods else None
    models = {}
    for spec in args.model:
        key, _, path = spec.partition("=")
        net, _, sc = key.partition(":")
        models[(net, int(sc))] = path
    rows = run_sr(fields, scales, quick=args.quick, methods=methods, models=models)
    if not rows:
        print(f"no held-out field found under {DATA} (set ASTROSR_SHARED_DATA): nothing to evaluate", file=sys.stderr)
        return 2
    sides = [next((r["side"] for r in rows if r["field"] == f[0]), f[2]) for f in fields]
    p2w = [] if args.no_pix2wgan else run_pix2wgan(models)
    wall = time.perf_counter() - t0
    import json

    from napari_astrosr.models.checkpoints import WEIGHTS_DIR

    w_lines = [
        "| weights | architecture/preset | params | size MB | steps | train wall s | config |",
        "|---|---|---|---|---|---|---|",
    ]
    # the --model checkpoints replace the bundled weights of their network and scale: list those that were used
    given = {f"{net}_x{sc}": Path(path) for (net, sc), path in models.items()}
    jsons = [j for j in sorted(WEIGHTS_DIR.glob("*.json")) if j.stem not in given]
    jsons += [Path(p).with_suffix(".json") for p in given.values()]
    for j in jsons:
        m = json.loads(j.read_text())
        t = m.get("training", {})
        pt = j.with_suffix(".pt")
        name = pt.name if pt.parent == WEIGHTS_DIR else f"{pt} (--model)"
        w_lines.append(
            f"| {name} | {m['architecture']}/{m.get('preset')} | {t.get('params', '?')} | "
            f"{pt.stat().st_size / 1e6:.2f} | {m.get('step')} | {t.get('wall_time_s')} | {t.get('config_file')} |"
        )
    md = [
        "# Quality benchmark: bundled networks vs classical baselines (held-out real fields)",
        "",
        "Command:",
        "",
        "    .venv/bin/python benchmarks/quality.py " + shlex.join(sys.argv[1:] if argv is None else argv),
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs shared with other jobs (load average "
        f"{os.getloadavg()[0]:.1f}), torch {torch.__version__}, 1 thread; benchmark wall time {wall:.0f} s.",
        "",
        "Fields (held out of every training config, by field): "
        + "; ".join(f[0] for f in fields)
        + ". Centre crops (side in HR px: "
        + ", ".join(str(side) for side in sides)
        + "). Degradation: "
        "core.degrade (PSF on the HR grid, flux-conserving block sum; at x1 no binning, the reference is the input); "
        "PSFs `gaussian:1.0` and "
        "`gaussian+airy:1.0,2.0` (STAR's ranges); noisy = Gaussian sigma of 1% of (99.5th percentile - median) of the LR image. "
        "Restoration through `restoration.restore`; richardson-lucy, backprojection and flux-exact are given the true PSF. "
        "PSNR/SSIM with data_range = reference range. Flux Error cut and rel. err cut are geometric means over "
        "cases of bicubic/method (>1 = better than bicubic). KL/JS in the reference's source pixels (`src`) and the rest (`sky`).",
        "",
        "## Weights (bundled, or given with --model)" if given else "## Bundled weights",
        "",
        *w_lines,
        "",
        "## Super-resolution (mean over fields and PSFs)",
        "",
        *sr_tables(rows),
        "## Default options against flux-conserving bicubic (issue 20.6)",
        "",
        "`(default)`: `restore(lr, method=..., scale=..., psf=<true PSF>)` with nothing else (the projection's noise "
        "choice from the measured noise, networks keep the sky).",
        "",
        *acceptance_table(rows),
        "## Does every network beat every classical baseline? Aggregates",
        "",
        "Each network variant against the best classical method *for that column* (any of bicubic, lanczos, "
        "richardson-lucy, backprojection, backprojection + flux-noise), over all fields and both PSFs; the pooled "
        "median pools every S/N > 10 source of every case:",
        "",
        *verdict_table(rows),
        "## Does every network beat every classical baseline? (count of field x PSF cases)",
        "",
        *beats_table(rows),
        "## Per field, x2",
        "",
        *field_table(rows, 2, False),
        *field_table(rows, 2, True),
        "## Pix2WGAN (ground-based -> HST-like)",
        "",
        *p2w,
    ]
    write_report("\n".join(md) + "\n", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

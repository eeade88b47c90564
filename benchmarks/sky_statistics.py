"""Probe: what the networks do to the sky, and what ``--keep-sky`` changes (issue 6, docs/results_keep_sky.md).

The bundled networks conserve the sky's *mean* but change its *distribution* (noise turned into faint peaks over
a lower floor). Photometry subtracts a SExtractor/sep background, a mode estimate of the sky, so a skewed sky
lowers the background measured on the restored image and raises every source's aperture flux. This script
measures, on the quality benchmark's held-out fields (same crops, degradation, noise and seeds as
``benchmarks/quality.py --large``), for the reference, bicubic and each network with and without the sky gate:

- the mean, median and skewness of the sky pixels (outside the reference's dilated source ellipses);
- sep's background (median of its map) minus the reference's, in units of the reference's sky rms;
- the median |relative flux error| of the bright sources (reference S/N > 100, where photon noise does not
  matter), measured as the benchmark does (each image's own sep background), and again with the reference's
  background map subtracted from both, which isolates the part of the error due to the background;
- the same two ways for the pooled S/N > 10 sources of every case (the quality benchmark's pooled median, mostly
  the crowded Spitzer field), for the classical baselines and the projected network variants too.

Run:  .venv/bin/python benchmarks/sky_statistics.py [--scales 2,4] [--out docs/results_keep_sky.md]
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


def source_errors(hr, img, *, snr_min):
    """|rel. flux error| of the reference's S/N > ``snr_min`` sources: (own background, reference's) arrays."""
    from napari_astrosr.core import metrics
    from napari_astrosr.core.detection import estimate_background
    from napari_astrosr.core.photometry import elliptical_aperture_flux

    res = metrics.source_residuals(hr, img)
    snr = np.asarray(res["snr"], float)
    good = np.isfinite(snr) & (snr > snr_min) & (np.asarray(res["f_ref"], float) > 0)
    if not good.any():
        return np.zeros(0), np.zeros(0)
    own = np.abs(np.asarray(res["rel_delta"], float)[good])
    src = metrics._detect_quiet(hr, thresh=1.5, wcs=None)  # the ellipses source_residuals measured
    b = estimate_background(hr)
    f_ref, _ = elliptical_aperture_flux(hr, src, k=2.5, background=b.back, err=b.rms)
    f_img, _ = elliptical_aperture_flux(np.asarray(img, float), src, k=2.5, background=b.back, err=b.rms)
    ref_bkg = np.abs(f_img / f_ref - 1.0)[good]
    return own, ref_bkg


def _med(v):
    return float(np.median(v)) if len(v) else float("nan")


def sky_stats(img, sky):
    from napari_astrosr.core.detection import estimate_background

    v = np.asarray(img, float)[sky]
    sd = float(v.std())
    skew = float(np.mean((v - v.mean()) ** 3) / sd**3) if sd > 0 else 0.0
    return {
        "mean": float(v.mean()),
        "median": float(np.median(v)),
        "skew": skew,
        "back": float(np.median(estimate_background(np.asarray(img, float)).back)),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scales", default="2,4", help="comma-separated scales (default 2,4)")
    ap.add_argument("--side", type=int, default=q.LARGE_SIDE, help=f"crop side in HR px (default {q.LARGE_SIDE})")
    ap.add_argument("--out", default=None, help="write the markdown here")
    args = ap.parse_args(argv)
    if not q.data_ready():
        return 2
    from napari_astrosr.models.checkpoints import bundled_checkpoint
    from napari_astrosr.restoration import restore

    t0 = time.perf_counter()
    scales = [int(s) for s in args.scales.split(",")]
    rows = []
    pooled: dict[tuple, list] = {}
    for scale, label, psf, noisy, hr, lr, dr, _ in q.probe_cases(scales, args.side):
        regions, _ = q._regions(hr)
        sky = regions["sky"]
        ref = sky_stats(hr, sky)
        rms = float(np.asarray(hr, float)[sky].std())
        outs = {"reference": hr}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            outs["bicubic"] = restore(lr, method="bicubic", scale=scale).data
            projected = {
                "richardson-lucy": restore(lr, method="richardson-lucy", scale=scale, psf=psf).data,
                "backprojection": restore(lr, method="backprojection", scale=scale, psf=psf).data,
                "backprojection + flux-noise": restore(
                    lr, method="backprojection", scale=scale, psf=psf, flux_noise="auto"
                ).data,
            }
            fn = "auto" if noisy else None  # the projection each network row of the benchmark wins with
            for net in ("fisr", "restormer"):
                if bundled_checkpoint(net, scale) is None:
                    continue
                outs[net] = restore(lr, method=net, scale=scale).data
                outs[f"{net} + keep-sky"] = restore(lr, method=net, scale=scale, keep_sky=True).data
                tag = "flux-noise" if noisy else "flux-exact"
                for ks in (False, True):
                    projected[f"{net}{' + keep-sky' if ks else ''} + {tag}"] = restore(
                        lr, method=net, scale=scale, psf=psf, flux_exact=True, flux_noise=fn, keep_sky=ks
                    ).data
        for name, img in outs.items():
            st = sky_stats(img, sky)
            own, refb = source_errors(hr, img, snr_min=100.0)
            rows.append(
                dict(
                    scale=scale,
                    field=label,
                    psf=psf,
                    noisy=noisy,
                    method=name,
                    skew=st["skew"],
                    dmean=(st["mean"] - ref["mean"]) / rms,
                    dback=(st["back"] - ref["back"]) / rms,
                    own=_med(own),
                    refb=_med(refb),
                    n=len(own),
                )
            )
        for name, img in {**outs, **projected}.items():
            if name == "reference":
                continue
            own, refb = source_errors(hr, img, snr_min=10.0)
            pooled.setdefault((scale, noisy, name), []).append((own, refb))
    lines = [
        "# What the networks do to the sky, and `--keep-sky`",
        "",
        "Command: `.venv/bin/python benchmarks/sky_statistics.py "
        + " ".join(argv if argv is not None else sys.argv[1:])
        + f"` ({time.perf_counter() - t0:.0f} s, 1 torch thread). Cases: the quality benchmark's held-out fields "
        f"(crops of up to {args.side} HR px), both PSFs, clean and noisy, same seeds. Sky = pixels outside the "
        "reference's dilated source ellipses. Shifts are in units of the reference's sky rms. Bright = reference "
        "S/N > 100; 'own bkg' measures each image with its own sep background (as the benchmark and any "
        "SExtractor user do), 'ref bkg' subtracts the reference's background map from both.",
        "",
    ]
    import collections

    for scale in scales:
        for noisy in (False, True):
            sel = [r for r in rows if r["scale"] == scale and r["noisy"] == noisy]
            if not sel:
                continue
            lines += [
                f"## x{scale}, {'noisy' if noisy else 'clean'} (mean over fields and PSFs; bright-source "
                "errors: median over cases)",
                "",
                "| method | sky skewness | sky mean shift | sep background shift | bright sources: median rel. "
                "err, own bkg | same, ref bkg |",
                "|---|---|---|---|---|---|",
            ]
            g = collections.defaultdict(list)
            for r in sel:
                g[r["method"]].append(r)
            for name, rs in g.items():

                def m(k):
                    return float(np.nanmean([r[k] for r in rs]))

                def med(k):
                    return _med([r[k] for r in rs if np.isfinite(r[k])])

                lines.append(
                    f"| {name} | {m('skew'):+.2f} | {m('dmean'):+.3f} | {m('dback'):+.3f} | "
                    f"{med('own'):.4f} | {med('refb'):.4f} |"
                )
            lines.append("")
    lines += [
        "## Pooled S/N > 10 sources: own background vs the reference's",
        "",
        "The quality benchmark's pooled median (every S/N > 10 source of every case; 3706 of the 3888 at "
        "x2 are the crowded Spitzer field's), measured with each image's own sep background (the benchmark) "
        "and with the reference's background map subtracted from both.",
        "",
        "| scale | data | method | pooled median rel. err, own bkg | same, ref bkg | sources |",
        "|---|---|---|---|---|---|",
    ]
    for (scale, noisy, name), parts in pooled.items():
        own = np.concatenate([a for a, _ in parts])
        refb = np.concatenate([b for _, b in parts])
        lines.append(
            f"| x{scale} | {'noisy' if noisy else 'clean'} | {name} | {_med(own):.4f} | {_med(refb):.4f} | {own.size} |"
        )
    lines.append("")
    lines += [
        "## Per field, x2 noisy (mean of both PSFs)",
        "",
        "| field | method | sky skewness | sep background shift | bright sources (n) | median rel. err, own bkg "
        "| same, ref bkg |",
        "|---|---|---|---|---|---|---|",
    ]
    g = collections.defaultdict(list)
    for r in rows:
        if r["scale"] == 2 and r["noisy"]:
            g[(r["field"], r["method"])].append(r)
    for (field, name), rs in g.items():
        lines.append(
            f"| {field} | {name} | {np.mean([r['skew'] for r in rs]):+.2f} | "
            f"{np.mean([r['dback'] for r in rs]):+.3f} | {rs[0]['n']} | "
            f"{np.nanmean([r['own'] for r in rs]):.4f} | {np.nanmean([r['refb'] for r in rs]):.4f} |"
        )
    q.write_report("\n".join(lines) + "\n", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

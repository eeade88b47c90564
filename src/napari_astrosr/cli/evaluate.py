"""``astrosr evaluate --reference REF.fits --prediction PRED.fits``: image and flux metrics."""

from __future__ import annotations

import argparse

NAME = "evaluate"
HELP = "compare a prediction to a reference: PSNR/SSIM, flux error, KL/JS in regions, sharpness, ..."
ORDER = 50


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reference", required=True, help="reference (ground truth) FITS image")
    p.add_argument("--prediction", required=True, help="prediction FITS image on the same pixel grid")
    p.add_argument("--rois", default=None, help="DS9 region file: KL/JS divergences inside each region")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("-o", "--output", default=None, help="write the per-source residual table (.ecsv/.fits/.csv)")
    p.add_argument(
        "--data-range", type=float, default=None, help="PSNR/SSIM data range (default: the reference's max - min)"
    )
    p.add_argument("--thresh", type=float, default=1.5, help="detection threshold on the reference (sigma)")
    p.add_argument("--zeropoint", type=float, default=None, help="magnitude zero point for the residual table")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    g = p.add_argument_group("galaxy morphology (GT = --reference, RS = --prediction)")
    g.add_argument(
        "--morphology",
        action="store_true",
        help="per-galaxy isophotal/Kron flux, e1/e2, R50, Sersic fits of GT, LQ and RS",
    )
    g.add_argument(
        "--input",
        default=None,
        help="the degraded input LQ.fits (needed by --morphology): on the reference grid, or on its own "
        "coarser grid (see --scale)",
    )
    g.add_argument(
        "--scale",
        type=int,
        default=None,
        help="reference pixels per LQ pixel when LQ is on its own grid (default: from the two WCSs, else "
        "from the shapes); LQ is split flux-conservingly onto the reference grid",
    )
    g.add_argument(
        "--aperture-on",
        choices=("lq", "gt", "rs"),
        default="lq",
        help="image the isophotes and Kron ellipses are defined on, once, for all three (default lq)",
    )
    g.add_argument(
        "--morph-thresh",
        type=float,
        default=None,
        help="detection threshold (sigma) of the apertures (default: --thresh)",
    )
    g.add_argument("--morph-table", default=None, help="write the per-galaxy table (.ecsv/.fits/.csv)")
    g.add_argument("--morph-plot", default=None, help="write GT-vs-LQ / GT-vs-RS scatter plots (.png)")
    g.add_argument(
        "--psf",
        default=None,
        help="PSF of the reference (SPEC gaussian:1.5 / moffat:3 / PSF.fits, reference pixels) convolved "
        "into every Sersic model",
    )
    g.add_argument("--no-sersic", action="store_true", help="skip the Sersic fits (faster)")


def _fmt(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def format_report(d: dict) -> str:
    """Readable two-column table of an evaluate() result."""
    rows = [
        ("PSNR [dB]", d.get("psnr")),
        ("SSIM", d.get("ssim")),
        ("data range", f"{_fmt(d.get('data_range'))} ({d.get('data_range_source')})"),
        ("flux error (mean |dF|)", d.get("flux_error")),
        ("median |dF|/F (S/N>10)", d.get("flux_error_rel_median")),
        ("sources (reference)", d.get("n_sources")),
        ("sources S/N>10", d.get("n_sources_snr10")),
        ("sources (prediction)", d.get("n_sources_prediction")),
        ("recall (2 px)", d.get("recall")),
        ("shear rms g1 / g2", f"{_fmt(d.get('shear_rms_g1'))} / {_fmt(d.get('shear_rms_g2'))}"),
        ("sharpness S_F pred / ref", f"{_fmt(d.get('sharpness'))} / {_fmt(d.get('sharpness_reference'))}"),
        ("sky sigma pred / ref", f"{_fmt(d.get('sky_sigma'))} / {_fmt(d.get('sky_sigma_reference'))}"),
    ]
    if "mag_error_median" in d:
        rows.append(("median |dmag|", d["mag_error_median"]))
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {_fmt(v)}" for k, v in rows]
    if d.get("rois"):
        lines.append("")
        lines.append(f"{'region':<16} {'KL [nats]':>12} {'JS [nats]':>12} {'pixels':>8}")
        for r in d["rois"]:
            lines.append(
                f"{r['name'][:16]:<16} {_fmt(r['kl']):>12} {_fmt(r['js']):>12} {r.get('n_pixels', 0):>8}"
                + (f"  ({r['error']})" if r.get("error") else "")
            )
    return "\n".join(lines)


def lq_scale(ref, lq, scale=None) -> int:
    """Reference pixels per LQ pixel (:func:`core.grids.lq_scale`): ``scale`` if given, else from the WCS pixel
    scales (when both images have a celestial WCS), else from the shapes; checked against both.
    """
    from ..core.grids import lq_scale as _lq_scale

    return _lq_scale(
        ref.data.shape,
        lq.data.shape,
        scale=scale,
        gt_wcs=getattr(ref, "wcs", None),
        lq_wcs=getattr(lq, "wcs", None),
        lq_name=f"--input {lq.path}",
        what="astrosr evaluate",
    )


def _morphology(args, ref, pred) -> dict:
    import numpy as np

    from ..core.fits_read import read_fits
    from ..core.morphology import measure_morphology, morphology_summary, plot_morphology
    from ..core.psf import parse_psf
    from ..exceptions import AstroSRError

    lq = read_fits(args.input, dtype=np.float64)
    if lq.data.ndim != 2:
        raise AstroSRError(f"--input {args.input}: is {lq.data.ndim}-D {lq.data.shape}; evaluate takes 2-D images.")
    scale = lq_scale(ref, lq, args.scale)
    psf = parse_psf(args.psf) if args.psf else None
    thresh = args.morph_thresh if args.morph_thresh is not None else args.thresh
    table = measure_morphology(
        ref.data,
        lq.data,
        pred.data,
        scale=scale,
        psf=psf,
        fit_sersic=not args.no_sersic,
        aperture_on=args.aperture_on,
        thresh=thresh,
    )
    summary = morphology_summary(table)
    summary["lq_scale"] = scale
    summary["aperture_on"] = args.aperture_on
    summary["sersic_psf"] = args.psf
    if args.morph_table:
        from ..core.catalogs import write_table

        write_table(
            table,
            args.morph_table,
            overwrite=args.overwrite,
            meta=dict(gt=str(args.reference), lq=str(args.input), rs=str(args.prediction)),
        )
        summary["table"] = str(args.morph_table)
    if args.morph_plot:
        plot_morphology(table, args.morph_plot, title=f"GT {ref.name} / LQ {lq.name} / RS {pred.name}")
        summary["plot"] = str(args.morph_plot)
    return summary


def run(args: argparse.Namespace) -> int:
    import json
    import sys
    import warnings
    from pathlib import Path

    from ..core.fits_read import read_fits
    from ..exceptions import AstroSRError

    if args.output:
        from ..core.catalogs import FORMATS

        out = Path(args.output)
        if out.suffix.lower() not in FORMATS:
            raise AstroSRError(f"-o {out}: unknown table format; use .ecsv, .fits or .csv.")
        if out.exists() and not args.overwrite:
            raise AstroSRError(f"{out}: already exists; choose another name or pass --overwrite.")
        if not out.parent.exists():
            raise AstroSRError(f"{out}: folder {out.parent} does not exist.")
    if args.morphology and not args.input:
        raise AstroSRError(
            "--morphology needs --input LQ.fits (the degraded input, on the reference grid or with --scale)."
        )
    if args.scale is not None and args.scale < 1:
        raise AstroSRError(f"--scale {args.scale}: must be a positive integer (reference pixels per LQ pixel).")
    for opt, suffixes in (("morph_table", None), ("morph_plot", (".png",))):
        dest = getattr(args, opt)
        if dest:
            from ..core.catalogs import FORMATS

            ok = suffixes or tuple(FORMATS)
            if Path(dest).suffix.lower() not in ok:
                raise AstroSRError(f"--{opt.replace('_', '-')} {dest}: use a {' / '.join(ok)} file name.")
            if not Path(dest).parent.exists():
                raise AstroSRError(f"--{opt.replace('_', '-')} {dest}: folder {Path(dest).parent} does not exist.")
        if dest and Path(dest).exists() and not args.overwrite:
            raise AstroSRError(f"{dest}: already exists; choose another name or pass --overwrite.")
        if dest and not args.morphology:
            raise AstroSRError(f"--{opt.replace('_', '-')} needs --morphology.")
    import numpy as np

    # float64: squared errors of values near the float32 maximum (3e38) overflow in float32
    ref = read_fits(args.reference, dtype=np.float64)
    pred = read_fits(args.prediction, dtype=np.float64)
    for img, opt in ((ref, "--reference"), (pred, "--prediction")):
        if img.data.ndim != 2:
            raise AstroSRError(f"{opt} {img.path}: is {img.data.ndim}-D {img.data.shape}; evaluate takes 2-D images.")
    if ref.data.shape != pred.data.shape:
        raise AstroSRError(
            f"--prediction {args.prediction} has shape {pred.data.shape} but --reference {args.reference} has "
            f"{ref.data.shape}; resample one onto the other's grid first (flux-conserving, e.g. `astrosr degrade "
            "--scale S` of the reference, or restore at the matching --scale)."
        )
    rois = None
    if args.rois:
        from ..core.catalogs import load_regions

        rois = load_regions(args.rois)
    from ..core.metrics import evaluate_with_residuals

    wcs = ref.wcs if ref.wcs is not None else pred.wcs
    with warnings.catch_warnings():
        if args.json:  # keep stdout one JSON object; warnings are listed inside it (and on stderr)
            warnings.simplefilter("default")
        result, residuals = evaluate_with_residuals(
            ref.data,
            pred.data,
            rois=rois,
            wcs=wcs,
            data_range=args.data_range,
            thresh=args.thresh,
            zeropoint=args.zeropoint,
        )
    if args.morphology:
        result["morphology"] = _morphology(args, ref, pred)
    result["reference"] = str(args.reference)
    result["prediction"] = str(args.prediction)
    if args.output:
        from ..core.catalogs import write_table

        write_table(
            residuals,
            args.output,
            overwrite=args.overwrite,
            flux_unit=ref.unit,
            meta=dict(reference=Path(args.reference).name, prediction=Path(args.prediction).name),
        )
        result["residuals"] = str(args.output)
    if args.json:
        print(json.dumps(result, allow_nan=False))
    else:
        print(format_report(result))
        if args.output:
            print(f"\nper-source residuals -> {args.output}")
        if "morphology" in result:
            m = result["morphology"]
            print(f"\nmorphology ({m['n_galaxies']} galaxies): RMSE vs GT  LQ -> RS  (scatter reduction)")
            for q, e in m.items():
                if isinstance(e, dict) and "rmse" in e.get("lq", {}) and "rmse" in e.get("rs", {}):
                    print(
                        f"  {q:<12} {_fmt(e['lq']['rmse']):>10} -> {_fmt(e['rs']['rmse']):<10} "
                        f"(x{_fmt(e['scatter_reduction'])})"
                    )
            px = m.get("pixels")
            if isinstance(px, dict) and "lq" in px and "rs" in px:
                print(
                    f"  {'pixels':<12} median RMSE/peak {_fmt(px['lq'].get('median_rmse_over_peak'))} -> "
                    f"{_fmt(px['rs'].get('median_rmse_over_peak'))}; median r "
                    f"{_fmt(px['lq'].get('median_pearson_r'))} -> {_fmt(px['rs'].get('median_pearson_r'))}"
                )
        for w in result.get("warnings", []):
            print(f"warning: {w}", file=sys.stderr)
    return 0

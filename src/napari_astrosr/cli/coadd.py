"""``astrosr coadd FRAME.fits [FRAME.fits ...] -o OUT.fits``: classical or deep-image-prior coadds."""

from __future__ import annotations

import argparse
import json
import sys

NAME = "coadd"
HELP = "coadd registered exposures: inverse-variance mean, sigma-clipped median, or AstroClearNet DIP"
ORDER = 60
DESCRIPTION = (
    "Coadd registered exposures of one field. Frames on different grids are reprojected onto the first "
    "frame's WCS (flux-conserving). Noise comes from --weights (inverse variance) or --rms maps, else it is "
    "estimated with sep; masks from --dq maps, NaN and the SATURATE keyword. The DIP method (AstroClearNet) "
    "needs one PSF per frame: --psf (spec, PSF image, PSFEx model, or 'estimate') or --psf-from-fwhm KEYWORD."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("frames", nargs="+", help="FITS exposures (one per frame) or a single cube")
    p.add_argument("-o", "--output", required=True, help="output FITS file")
    p.add_argument("--method", choices=("dip", "ivar", "median"), default="dip", help="coadd method (default dip)")
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--psf",
        nargs="+",
        metavar="SPEC",
        help="PSF per frame (or one for all): gaussian:SIGMA, moffat:FWHM,BETA, PSF.fits, a PSFEx model, or 'estimate'",
    )
    g.add_argument("--psf-from-fwhm", metavar="KEYWORD", help="Gaussian PSFs from this header keyword (FWHM in pixels)")
    p.add_argument("--psf-size", type=int, default=None, help="odd PSF stamp size in pixels (crop)")
    n = p.add_mutually_exclusive_group()
    n.add_argument("--weights", nargs="+", metavar="W.fits", help="inverse-variance weight map per frame")
    n.add_argument("--rms", nargs="+", metavar="RMS.fits", help="rms noise map per frame")
    p.add_argument("--dq", nargs="+", metavar="DQ.fits", help="data-quality map per frame (nonzero = bad)")
    p.add_argument("--hdu", default=None, help="HDU index or name to read from every file (default: first image)")
    p.add_argument(
        "--no-subtract-background",
        action="store_true",
        help="keep the frames' sky (default: subtract sep's background)",
    )
    p.add_argument(
        "--clip-outliers", type=float, default=None, metavar="SIGMA", help="mask positive outliers across the stack"
    )
    p.add_argument("--gain-keyword", default=None, help="header keyword of the gain (e-/ADU) for estimated noise maps")
    p.add_argument("--allow-mixed-bands", action="store_true", help="coadd frames with different FILTER values")
    p.add_argument("--homogenize", action="store_true", help="ivar: convolve frames to the worst PSF first")
    p.add_argument("--sigma-clip", type=float, default=3.0, help="median: sigma-clipping threshold (default 3)")
    p.add_argument(
        "--iterations",
        type=int,
        default=600,
        help="DIP: step cap (default 600); the fit stops earlier when the held-out pixels' chi2 reaches "
        "the noise model's expectation or stops improving",
    )
    p.add_argument("--seed", type=int, default=0, help="DIP: torch seed (default 0)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"), help="DIP: device")
    p.add_argument("--sky", choices=("fit", "none"), default="fit", help="DIP: fit one sky offset per frame (default)")
    p.add_argument(
        "--pedestal", action="store_true", help="DIP: learn a floor below the ReLU (off: degenerate with --sky fit)"
    )
    p.add_argument(
        "--superres", type=int, choices=(1, 2), default=1, help="DIP: latent oversampling (2 = x2 finer pixels)"
    )
    p.add_argument("--blind", action="store_true", help="DIP: learn the PSFs too")
    p.add_argument(
        "--no-skip", action="store_true", help="DIP: paper's flat start (no ivar-coadd skip term; use with --lr 2e-3)"
    )
    p.add_argument(
        "--skip-smooth",
        type=float,
        default=0.0,
        metavar="PX",
        help="DIP: Gaussian sigma (px) smoothing the ivar coadd the fit starts from (default 0: none)",
    )
    p.add_argument(
        "--gate",
        type=float,
        nargs=2,
        default=(2.0, 5.0),
        metavar=("LOW", "HIGH"),
        help="DIP: sky gate: below LOW sigma of the smoothed ivar coadd keep it, above HIGH the DIP latent "
        "(default 2 5)",
    )
    p.add_argument("--no-gate", action="store_true", help="DIP: no sky gate (the latent everywhere)")
    p.add_argument(
        "--kernels",
        type=int,
        nargs="+",
        default=[3, 5],
        metavar="K",
        help="DIP: depthwise kernel sizes of the encoder (default 3 5; the paper's 3 5 7 9 is ~2x slower)",
    )
    p.add_argument("--lr", type=float, default=5e-4, help="DIP: Adam learning rate (default 5e-4)")
    p.add_argument(
        "--holdout",
        type=float,
        default=0.1,
        help="DIP: fraction of each frame's pixels held out from the fit; stop when their chi2 per pixel is "
        "within 2 sd of 1 (pooled; per frame corrected for N tests) or stops improving (default 0.1; 0: off)",
    )
    p.add_argument(
        "--noise-tol-max",
        type=float,
        default=0.05,
        metavar="X",
        help="DIP: trust the noise maps for the chi2 target only if every frame's sky scatter / map is "
        "within 1 +- X (default 0.05); otherwise only the held-out plateau stops the fit",
    )
    p.add_argument(
        "--no-noise-stop",
        action="store_true",
        help="DIP: no chi2 target (only the held-out plateau and the cap stop the fit; sharper, slower)",
    )
    p.add_argument("--patience", type=int, default=100, help="DIP: steps without held-out improvement before stopping")
    p.add_argument(
        "--no-project",
        action="store_true",
        help="DIP: skip the final flux projection onto the ivar coadd (smoothed residual)",
    )
    p.add_argument(
        "--chi2-stop",
        type=float,
        default=None,
        metavar="X",
        help="DIP: also stop once mean (residual/sigma)^2 <= X (e.g. 1.0); default off",
    )
    p.add_argument(
        "--ensemble", type=int, default=1, help="DIP: number of seeds (mean; their scatter joins --uncertainty)"
    )
    p.add_argument("--threads", type=int, default=None, help="DIP: torch CPU threads (default: torch's)")
    p.add_argument("--residuals", metavar="RES.fits", help="also write per-frame residuals (cube)")
    p.add_argument(
        "--uncertainty",
        metavar="UNC.fits",
        help="also write the per-pixel 1-sigma noise map (DIP: propagated; sky pixels)",
    )
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import numpy as np

    from ..coadd_job import CoaddOptions, coadd_job, report_lines
    from ..core.coadd import load_frames
    from ..core.fits_write import write_fits
    from ..exceptions import AstroSRError
    from .common import run_with_bar

    hdu = args.hdu
    if hdu is not None and str(hdu).lstrip("-").isdigit():
        hdu = int(hdu)
    outs = [Path(args.output)] + [Path(p) for p in (args.residuals, args.uncertainty) if p]
    for o in outs:
        if o.exists() and not args.overwrite:
            raise AstroSRError(f"{o}: already exists. Choose another name or pass --overwrite.")
        if not o.parent.exists():
            raise AstroSRError(f"{o.parent}: output folder does not exist.")
    needs_psf = args.method == "dip" or args.homogenize
    if needs_psf and not (args.psf or args.psf_from_fwhm):
        raise AstroSRError(
            f"--method {args.method}: give PSFs with --psf (one per frame, one for all, or 'estimate') or --psf-from-fwhm KEYWORD."
        )
    stack = load_frames(
        args.frames,
        hdu=hdu,
        weights=args.weights,
        rms=args.rms,
        dq=args.dq,
        psfs=args.psf,
        psf_from_fwhm_key=args.psf_from_fwhm,
        subtract_background=not args.no_subtract_background,
        clip_outliers=args.clip_outliers,
        gain_keyword=args.gain_keyword,
        allow_mixed_bands=args.allow_mixed_bands,
        psf_size=args.psf_size,
    )
    for note in stack.notes:  # (on stderr with --json: stdout holds one JSON object)
        print(f"astrosr coadd: {note}", file=sys.stderr if args.json else sys.stdout)
    opts = CoaddOptions(
        method=args.method,
        homogenize=args.homogenize,
        sigma_clip=args.sigma_clip,
        iterations=args.iterations,
        seed=args.seed,
        device=args.device,
        sky=args.sky,
        pedestal=args.pedestal,
        superres=args.superres,
        blind=args.blind,
        ensemble=args.ensemble,
        skip=not args.no_skip,
        skip_smooth=args.skip_smooth,
        lr=args.lr,
        chi2_stop=args.chi2_stop,
        holdout=args.holdout,
        patience=args.patience,
        noise_tol_max=args.noise_tol_max,
        noise_stop=not args.no_noise_stop,
        project=not args.no_project,
        gate=None if args.no_gate else tuple(args.gate),
        kernel_sizes=tuple(args.kernels),
        threads=args.threads,
    )
    res = run_with_bar(coadd_job(stack, options=opts), desc=f"coadd {args.method}", quiet=args.json)
    params = dict(res.params)
    params["background_subtracted"] = not args.no_subtract_background
    prov = dict(method=f"coadd-{args.method}", parameters=params, inputs=list(args.frames))
    protect = list(args.frames) + list(args.weights or []) + list(args.rms or []) + list(args.dq or [])
    extra = []
    if args.residuals:
        if res.residuals is None:
            raise AstroSRError("--residuals: this method produced no residuals.")
        extra.append((args.residuals, res.residuals))
    if args.uncertainty:
        if res.uncertainty is None:
            raise AstroSRError("--uncertainty: this method produced no uncertainty map.")
        extra.append((args.uncertainty, res.uncertainty))
    write_fits(
        args.output,
        np.asarray(res.data, np.float32),
        header=res.header,
        wcs=res.wcs,
        overwrite=args.overwrite,
        provenance=prov,
        protect=protect,
    )
    for path, arr in extra:
        write_fits(
            path,
            np.asarray(arr, np.float32),
            header=res.header,
            wcs=res.wcs if np.ndim(arr) == 2 else None,
            overwrite=args.overwrite,
            provenance=prov,
            protect=protect,
        )
    if args.json:
        print(json.dumps({"output": str(args.output), "method": args.method, **_jsonable(res.metrics)}))
    else:
        print(f"astrosr coadd: wrote {args.output} ({args.method}, {stack.n} frames)")
        for line in report_lines(res):
            print(f"astrosr coadd: {line}")
    return 0


def _jsonable(obj):
    """Metrics -> JSON types (NaN -> null; numpy scalars and arrays -> Python)."""
    import math

    import numpy as np

    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer, int)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        return None if not math.isfinite(float(obj)) else float(obj)
    return obj

"""``astrosr restore IN.fits -o OUT.fits --method NAME``: restore / super-resolve one image."""

from __future__ import annotations

import argparse

NAME = "restore"
HELP = "restore or super-resolve an image (classical methods or networks)"
ORDER = 40

METHODS = ("bicubic", "lanczos", "richardson-lucy", "backprojection", "fisr", "restormer", "pix2wgan",
           "pix2wgan-cascade")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="input FITS image (2-D)")
    p.add_argument("-o", "--output", required=True, help="output FITS file")
    p.add_argument("--method", required=True, choices=METHODS, help="restoration method (see `astrosr methods`)")
    p.add_argument("--scale", type=int, default=2, help="integer enlargement factor (default 2)")
    p.add_argument("--model", default=None, help="checkpoint .pt written by `astrosr train` (default: bundled)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"),
                   help="where networks run (default auto: cuda, mps, cpu)")
    p.add_argument("--tile", type=int, default=None, help="tile side in input pixels for networks")
    p.add_argument("--overlap", type=int, default=None, help="tile overlap in input pixels")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for networks")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                   help="GPU autocast precision (CPU always fp32)")
    p.add_argument("--flux-exact", action="store_true",
                   help="project the output so blur + block-sum reproduce the input (needs --psf)")
    p.add_argument("--flux-noise", default=None, metavar="SIGMA|auto",
                   help="make the projection (--flux-exact or backprojection) noise-aware: reproduce the input only "
                        "where the residual rises above this per-pixel noise ('auto': sep's background rms); for "
                        "noisy input, where the exact projection fits the noise")
    p.add_argument("--keep-sky", nargs="?", const=True, default=None, metavar="LOW,HIGH",
                   help="networks: keep the input's sky; the network acts only where the input's S/N exceeds LOW "
                        "sigma, fully above HIGH (default 2,5); the sky stays the input's flux-conserving upsampling, "
                        "so backgrounds and aperture fluxes measured on the result are not biased")
    p.add_argument("--psf", default=None,
                   help="blur the input carries, in output pixels: gaussian:SIGMA|airy:R|gaussian+airy:S,R|"
                        "moffat:FWHM[,BETA]|PSF.fits|none")
    p.add_argument("--iterations", type=int, default=None, help="Richardson-Lucy / projection iterations")
    p.add_argument("--hdu", default=None, help="HDU index or name of the input image")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..core.fits_io import read_fits, write_fits
    from ..exceptions import AstroSRError
    from ..restoration import restore_job
    from .common import run_with_bar

    out = Path(args.output)
    if out.exists() and not args.overwrite:  # fail before spending minutes on the restoration
        raise AstroSRError(f"{out}: already exists. Choose another name or pass --overwrite.")
    if not out.parent.exists():
        raise AstroSRError(f"{out.parent}: output folder does not exist.")
    hdu = None
    if args.hdu is not None:
        hdu = int(args.hdu) if str(args.hdu).isdigit() else args.hdu
    img = read_fits(args.input, hdu=hdu) if hdu is not None else read_fits(args.input)
    if img.data.ndim != 2:
        raise AstroSRError(f"{args.input}: is a {img.data.ndim}-D array {img.data.shape}; restore takes a 2-D "
                           "image (pick a plane with --hdu or split the cube).")
    job = restore_job(img.data, method=args.method, scale=args.scale, model=args.model, device=args.device,
                      tile=args.tile, overlap=args.overlap, threads=args.threads, precision=args.precision,
                      flux_exact=args.flux_exact, psf=args.psf, flux_noise=args.flux_noise, iterations=args.iterations,
                      keep_sky=args.keep_sky, wcs=img.wcs, header=img.header)
    try:
        res = run_with_bar(job, desc=f"restore {args.method}", quiet=args.quiet)
    except AstroSRError as exc:  # core errors say "input image: ...": name the file
        if str(args.input) in str(exc):
            raise
        raise AstroSRError(f"{args.input}: {exc}") from exc
    write_fits(out, res.data, header=res.header, wcs=res.wcs, overwrite=args.overwrite,
               provenance=dict(res.provenance, inputs=[str(args.input)]), protect=[args.input])
    if not args.quiet:
        import sys

        print(f"{out}: {res.data.shape[1]}x{res.data.shape[0]} {args.method} x{res.scale} on {res.device} "
              f"in {res.timings.get('total', 0):.1f} s", file=sys.stderr)
    return 0

"""``astrosr degrade HR.fits -o LR.fits --scale S``: PSF blur + flux-conserving downsample + noise."""

from __future__ import annotations

import argparse

NAME = "degrade"
HELP = "simulate a low-resolution observation: PSF blur, flux-conserving downsample, noise (seeded)"
ORDER = 10


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", help="high-resolution FITS image (2-D)")
    p.add_argument("-o", "--output", required=True, help="output LR FITS file")
    p.add_argument("--scale", type=float, required=True, help="downsampling factor (2, 3, 4 or non-integer, e.g. 2.5)")
    p.add_argument(
        "--psf",
        default="none",
        help="blur on the HR grid: none | gaussian:SIGMA | airy:R (first dark ring, px) | "
        "gaussian+airy:SIGMA,R | moffat:FWHM[,BETA] | PSF.fits[:HDU] | star (random STAR-range "
        "Gaussian) | star-airy (random STAR-range Gaussian+Airy)",
    )
    p.add_argument("--noise", default="none", help="none | poisson[:GAIN] | gaussian:SIGMA (image units)")
    p.add_argument("--seed", type=int, default=None, help="random seed (noise, random PSF)")
    p.add_argument(
        "--method",
        default="area",
        choices=["area", "bilinear", "bicubic"],
        help="area = flux-conserving (default); bilinear/bicubic interpolate (demo of flux loss only)",
    )
    p.add_argument("--hdu", default=None, help="HDU index or name of the input")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import numpy as np

    from ..core.degrade import degrade
    from ..core.fits_read import read_fits
    from ..core.fits_write import write_fits
    from ..exceptions import AstroSRError

    out = Path(args.output)
    if out.exists() and not args.overwrite:
        raise AstroSRError(f"{out}: already exists; choose another name or pass --overwrite.")
    if not out.parent.exists():
        raise AstroSRError(f"{out}: folder {out.parent} does not exist.")
    hdu = None if args.hdu is None else (int(args.hdu) if str(args.hdu).isdigit() else args.hdu)
    img = read_fits(args.image, hdu=hdu, dtype="float64") if hdu is not None else read_fits(args.image, dtype="float64")
    if img.data.ndim != 2:
        raise AstroSRError(f"{args.image}: is a {img.data.ndim}-D array {img.data.shape}; pick one image with --hdu.")
    try:
        res = degrade(
            img.data,
            scale=args.scale,
            psf=args.psf,
            noise=args.noise,
            seed=args.seed,
            wcs=img.wcs,
            header=img.header,
            method=args.method,
        )
    except AstroSRError as exc:  # core errors say "hr ..."/"image ...": name the file
        if str(args.image) in str(exc):
            raise
        raise AstroSRError(f"{args.image}: {exc}") from exc
    write_fits(
        out,
        res.data.astype(np.float32),
        header=res.header,
        wcs=res.wcs,
        overwrite=args.overwrite,
        provenance=dict(method=f"degrade-{args.method}", parameters=res.params, inputs=[args.image]),
        protect=[args.image],
    )
    hr_sum, lr_sum = float(np.nansum(img.data)), float(np.nansum(res.data))
    print(
        f"{img.data.shape[0]}x{img.data.shape[1]} -> {res.data.shape[0]}x{res.data.shape[1]} "
        f"(scale {args.scale:g}, psf {res.params['psf']}, noise {res.params['noise']['kind']}); "
        f"flux {hr_sum:.6g} -> {lr_sum:.6g} -> {out}"
    )
    return 0

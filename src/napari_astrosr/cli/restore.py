"""``astrosr restore IN.fits -o OUT.fits --method NAME``: restore / super-resolve one image."""

from __future__ import annotations

import argparse

NAME = "restore"
HELP = "restore or super-resolve an image (classical methods or networks)"
ORDER = 40


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..restore_options import add_cli_arguments

    p.add_argument("input", help="input FITS image (2-D)")
    p.add_argument("-o", "--output", required=True, help="output FITS file")
    add_cli_arguments(p)
    p.add_argument("--hdu", default=None, help="HDU index or name of the input image")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..core.fits_read import read_fits
    from ..core.fits_write import write_fits
    from ..exceptions import AstroSRError
    from ..restoration import restore_job
    from ..restore_options import describe_choices, options_from_args
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
        raise AstroSRError(
            f"{args.input}: is a {img.data.ndim}-D array {img.data.shape}; restore takes a 2-D "
            "image (pick a plane with --hdu or split the cube)."
        )
    job = restore_job(img.data, options=options_from_args(args), wcs=img.wcs, header=img.header, source=args.input)
    try:
        res = run_with_bar(job, desc=f"restore {args.method}", quiet=args.quiet)
    except AstroSRError as exc:  # core errors say "input image: ...": name the file
        if str(args.input) in str(exc):
            raise
        raise AstroSRError(f"{args.input}: {exc}") from exc
    write_fits(
        out,
        res.data,
        header=res.header,
        wcs=res.wcs,
        overwrite=args.overwrite,
        provenance=dict(res.provenance, inputs=[str(args.input)]),
        protect=[args.input],
        extra_hdus=[res.err_hdu()],
    )
    if not args.quiet:
        import sys

        print(
            f"{out}: {res.data.shape[1]}x{res.data.shape[0]} {args.method} x{res.scale} on {res.device} "
            f"in {res.timings.get('total', 0):.1f} s; {describe_choices(res.params)}"
            f"{'; ERR extension: ' + res.err_how if res.err is not None else ''}",
            file=sys.stderr,
        )
    return 0

"""``astrosr run [IMAGE.fits]``: the main job (restore, detect, compare, validate, export) without napari."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "run"
HELP = (
    "the main job without napari: restore (default: bundled FISR x2, else backprojection), detect on "
    "input and output, compare, validate against bicubic, export FITS/catalogs/regions/metrics.json"
)
ORDER = 85


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", nargs="?", default=None, help="input FITS image (default: the --sample)")
    p.add_argument("--sample", default="hst_galaxy", help="bundled sample used when no IMAGE is given")
    p.add_argument(
        "-o",
        "--out",
        "--outdir",
        dest="out",
        type=Path,
        default=None,
        help="output folder (default ./astrosr-output/<timestamp>)",
    )
    p.add_argument(
        "--method", default=None, help="restoration method (default: fisr with bundled x2 weights, else backprojection)"
    )
    p.add_argument("--model", default=None, help="checkpoint .pt for a network method")
    p.add_argument("--scale", type=int, default=2, help="enlargement factor (default 2)")
    p.add_argument(
        "--psf", default=None, help="blur of the input on the output grid for PSF-aware methods (default gaussian:1.0)"
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (networks)")
    p.add_argument(
        "--flux-exact",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="project the result through the forward model (--psf, default gaussian:1.0); default: on for "
        "the default FISR, off for a --method you choose",
    )
    p.add_argument(
        "--no-validate",
        dest="validate",
        action="store_false",
        help="skip the degrade -> restore -> compare-with-bicubic validation",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing files in the output folder")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from ..data import sample_path
    from ..pipeline import default_out_dir, main_job, summary_table
    from .common import run_with_bar

    src = Path(args.image) if args.image else sample_path(args.sample)
    out = args.out if args.out is not None else default_out_dir()
    res = run_with_bar(
        main_job(
            src,
            out_dir=out,
            method=args.method,
            model=args.model,
            scale=args.scale,
            psf=args.psf,
            device=args.device,
            validate=args.validate,
            flux_exact=args.flux_exact,
            overwrite=args.overwrite,
        ),
        desc="astrosr run",
        quiet=args.quiet,
    )
    print(summary_table(res.metrics))
    print()
    print(res.out_dir)
    return 0

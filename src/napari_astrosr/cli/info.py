"""``astrosr info FILE``: HDUs, shapes, dtypes, WCS summary and units."""

from __future__ import annotations

import argparse

NAME = "info"
HELP = "describe a FITS file: HDUs, shapes, dtype, WCS, units"
ORDER = 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="FITS file")


def run(args: argparse.Namespace) -> int:
    from ..core.fits_io import describe

    print(describe(args.file))
    return 0

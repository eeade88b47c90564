"""``astrosr info FILE``: HDUs, shapes, dtypes, WCS summary and units."""

from __future__ import annotations

import argparse

NAME = "info"
HELP = "describe a FITS file: HDUs, shapes, dtype, WCS, units"
ORDER = 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="FITS file")


def run(args: argparse.Namespace) -> int:
    from ..core.fits_open import describe
    from ..exceptions import AstroSRError

    try:
        text = describe(args.file)
    except AstroSRError:
        raise
    except Exception as exc:  # astropy can fail in many ways on odd headers: one line, exit 2
        msg = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise AstroSRError(f"{args.file}: cannot be described as FITS ({msg}).") from exc
    print(text)
    return 0

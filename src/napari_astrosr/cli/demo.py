"""``astrosr demo``: napari with the sample loaded and the plugin's widgets docked."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "demo"
HELP = "open napari with sample data and the plugin's widgets (--headless: write screenshots instead)"
ORDER = 90


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--headless", action="store_true",
                   help="run under the current (e.g. Xvfb) display, save screenshots and info, then exit")
    p.add_argument("-o", "--out", "--outdir", dest="out", type=Path, default=None,
                   help="output folder for --headless (default ./astrosr-output/<timestamp>)")
    p.add_argument("--sample", default="hst_galaxy", help="sample to load: hst_galaxy or decam_stack")


def run(args: argparse.Namespace) -> int:
    import os

    from ..exceptions import AstroSRError

    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        raise AstroSRError("no display: run scripts/demo.sh (it uses xvfb-run), or `xvfb-run -a astrosr demo --headless`.")
    import warnings

    if not getattr(args, "debug", False):  # napari/npe2/pydantic deprecation noise is not for users
        warnings.filterwarnings("ignore", category=DeprecationWarning)
    from .._napari.demo import run_demo  # lazy: napari/Qt only when the demo runs

    out = run_demo(headless=args.headless, out_dir=args.out, sample=args.sample)
    if args.headless:
        print(out)
    return 0

"""``astrosr demo``: the main job on a bundled sample, loaded into napari (or, --headless, into a folder)."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "demo"
HELP = (
    "restore, detect, compare and export the bundled sample and open napari with the results "
    "(--headless: write everything, screenshots included, to a folder)"
)
ORDER = 90


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--headless",
        action="store_true",
        help="run under the current (e.g. Xvfb) display, save screenshots and info, then exit",
    )
    p.add_argument(
        "-o",
        "--out",
        "--outdir",
        dest="out",
        type=Path,
        default=None,
        help="output folder for --headless (default ./astrosr-output/<timestamp>)",
    )
    p.add_argument("--sample", default="hst_galaxy", help="sample to load: hst_galaxy or decam_stack")
    p.add_argument(
        "--method", default=None, help="restoration method (default: fisr with bundled x2 weights, else backprojection)"
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (networks)")
    p.add_argument(
        "--no-validate",
        dest="validate",
        action="store_false",
        help="skip the degrade -> restore -> compare-with-bicubic validation",
    )


def run(args: argparse.Namespace) -> int:
    import os

    from .._extras import require
    from ..exceptions import AstroSRError

    require("napari", extra="napari", what="astrosr demo")
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        raise AstroSRError(
            "no display: run scripts/demo.sh (it uses xvfb-run), or `xvfb-run -a astrosr demo --headless`."
        )
    import warnings

    if not getattr(args, "debug", False):  # napari/npe2/pydantic deprecation noise is not for users
        warnings.filterwarnings("ignore", category=DeprecationWarning)
    from .._napari.demo import run_demo  # lazy: napari/Qt only when the demo runs

    options = {"method": args.method, "device": args.device, "validate": args.validate}
    out = run_demo(headless=args.headless, out_dir=args.out, sample=args.sample, options=options)
    print(out)
    return 0

"""The ``astrosr`` command line: a thin layer over the same functions the widgets call.

Each sub-command is a module in this package defining ``NAME``, ``HELP``, ``ORDER``,
``add_arguments(parser)`` and ``run(args) -> int``; modules are discovered, so adding a
command needs no edit here. Module top levels import only argparse-level things: heavy
imports happen inside ``run`` so ``astrosr --help`` is instant.

Errors the user can fix (:class:`AstroSRError`) exit with code 2 and one line on stderr;
``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
import warnings
from typing import Optional, Sequence

from .._version import __version__
from ..exceptions import AstroSRError


def _commands():
    mods = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_") or info.name == "common":
            continue
        mod = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(mod, "NAME") and hasattr(mod, "run"):
            mods.append(mod)
    return sorted(mods, key=lambda m: (getattr(m, "ORDER", 100), m.NAME))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="astrosr",
        description="Flux-consistent restoration of astronomical FITS images (napari-astrosr).",
    )
    parser.add_argument("--version", action="version", version=f"astrosr {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in _commands():
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP))
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks")
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``astrosr`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    debug = bool(getattr(args, "debug", False))
    try:
        if not debug:
            warnings.simplefilter("default")
        code = args._run(args)
        return int(code or 0)
    except AstroSRError as exc:
        if debug:
            raise
        print(f"astrosr {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # output piped into e.g. `head`, which closed early: not an error of ours
        # (redirect stdout to devnull so the interpreter's final flush does not fail again)
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 0
    except KeyboardInterrupt:
        print(f"astrosr {args.command}: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        if debug:
            raise
        print(f"astrosr {args.command}: error: out of memory; try a smaller --tile or a smaller image.", file=sys.stderr)
        return 2


def _console() -> None:  # pragma: no cover - used by ``python -m``
    sys.exit(main())

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
import signal
import sys
import threading
import warnings
from collections.abc import Sequence
from typing import Optional

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


def build_parser(only: Optional[str] = None) -> argparse.ArgumentParser:
    """The ``astrosr`` parser; with ``only`` (a command name), only that command's arguments are added.

    Every command stays listed (name and help) either way. Adding a command's arguments can import
    what its options need (``restore`` and ``batch`` build theirs from the options model: pydantic
    and numpy), so ``astrosr --help`` adds none and ``astrosr methods`` only its own.
    """
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
        if only is None or mod.NAME == only:
            mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def _command_in(argv: Optional[Sequence[str]]) -> str:
    """The command named on the command line: the first argument that is not an option ("" if none).

    The top-level options (``--version``, ``--debug``, ``--help``) take no value, so the first
    other word is the command (argparse itself rejects it when it is not one).
    """
    for arg in sys.argv[1:] if argv is None else argv:
        if arg == "--":
            break
        if not arg.startswith("-"):
            return arg
    return ""


#: Argument destinations that name something a command writes (files or folders).
OUTPUT_ARGS = (
    "output",
    "outdir",
    "out",
    "regions",
    "residuals",
    "uncertainty",
    "truth",
    "summary",
    "morph_table",
    "morph_plot",
)


def _paths(value):
    if isinstance(value, (str, os.PathLike)):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _paths(v)


def _check_outputs(args: argparse.Namespace) -> None:
    """Refuse, before any work, outputs that are inputs (any existing path argument) or each other."""
    from ..core.atomic import refuse_inputs

    outputs = [(k, v) for k in OUTPUT_ARGS for v in _paths(getattr(args, k, None))]
    inputs = [
        v
        for k, val in vars(args).items()
        if k not in OUTPUT_ARGS and not k.startswith("_")
        for v in _paths(val)
        if os.path.lexists(v) and not os.path.isdir(v)
    ]
    flag = {k: "--" + k.replace("_", "-") for k, _ in outputs}
    flag.update(output="-o", outdir="-o")
    for i, (k, v) in enumerate(outputs):
        refuse_inputs(v, inputs, what=f"{flag[k]} {v}")
        for k2, v2 in outputs[:i]:
            if os.fspath(v) == os.fspath(v2) or (
                os.path.lexists(v) and os.path.lexists(v2) and os.path.samefile(v, v2)
            ):
                raise AstroSRError(f"{flag[k]} {v}: is also given as {flag[k2]}; give each output its own name.")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so the same clean-up as for Ctrl-C runs."""


def _on_sigterm(signum, frame):
    raise Terminated()


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``astrosr`` console script; returns the exit code.

    Run as the program (``argv`` None), an interrupt ends the process at once after its
    clean-up: the interpreter's own teardown (torch, thread pools) can take seconds more.
    """
    code = _main(argv)
    if argv is None and code in (130, 143):
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)
    return code


def _main(argv: Optional[Sequence[str]]) -> int:
    parser = build_parser(only=_command_in(argv))
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    debug = bool(getattr(args, "debug", False))
    previous = None
    formatwarning = warnings.formatwarning
    if not debug:  # one line per warning, like the errors (the source line means nothing to a user)
        warnings.formatwarning = lambda message, category, *a, **k: (
            f"astrosr {args.command}: warning: {' '.join(str(message).split())}\n"
        )
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        if not debug:
            warnings.simplefilter("default")
        _check_outputs(args)
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
    except Terminated:
        print(f"astrosr {args.command}: terminated (SIGTERM); nothing partial was left", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print(f"astrosr {args.command}: interrupted; nothing partial was left", file=sys.stderr)
        return 130
    except MemoryError:
        if debug:
            raise
        print(
            f"astrosr {args.command}: error: out of memory; try a smaller --tile or a smaller image.", file=sys.stderr
        )
        return 2
    except RecursionError:
        if debug:
            raise
        print(
            f"astrosr {args.command}: error: an input is nested too deeply to read; check the files given.",
            file=sys.stderr,
        )
        return 2
    except Exception as exc:  # a bug of ours: one line, exit 1 (not 2: the user did nothing wrong)
        if debug:
            raise
        text = " ".join(str(exc).split())[:300]
        print(
            f"astrosr {args.command}: internal error ({type(exc).__name__}: {text}); rerun with --debug "
            "and report the traceback.",
            file=sys.stderr,
        )
        return 1
    finally:
        warnings.formatwarning = formatwarning
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _console() -> None:  # pragma: no cover - used by ``python -m``
    sys.exit(main())

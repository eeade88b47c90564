"""Optional dependencies: which extra brings which package, and one clear error when one is missing.

``pip install napari-astrosr`` gives the core, the ``astrosr`` command line and the Python API
(numpy, astropy, sep, photutils, ...). The heavy parts are extras: ``[ml]`` (torch: the networks,
training, the DIP coadd), ``[napari]`` (the plugin), ``[batch]`` (dask), ``[train]`` (GalSim skies),
``[all]`` everything. Call :func:`require` where such a package is first imported, so a missing one
says in one line what to install instead of a traceback deep inside.
"""

from __future__ import annotations

import importlib.util

from .exceptions import AstroSRError

#: import name -> the extra that installs it
EXTRA_OF = {
    "torch": "ml",
    "napari": "napari",
    "qtpy": "napari",
    "dask": "batch",
    "distributed": "batch",
    "galsim": "train",
}


class MissingExtraError(AstroSRError, ImportError):
    """An optional dependency is not installed; the message names the extra to install.

    Both an :class:`AstroSRError` (the CLI exits with code 2 and prints the line) and an
    :class:`ImportError` (code that falls back when a package is absent keeps working).
    """


def message(package: str, *, extra: str | None = None, what: str | None = None) -> str:
    """The one-line message for a missing ``package``: what needs it and which extra to install."""
    extra = extra or EXTRA_OF.get(package.split(".")[0], "all")
    need = f"{what} needs" if what else "this needs"
    return f"{need} {package}, which is not installed; install napari-astrosr[{extra}] (pip install 'napari-astrosr[{extra}]')."


def installed(package: str) -> bool:
    """Whether ``package`` can be imported, without importing it (cheap)."""
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):  # a parent package missing, or a broken __spec__
        return False


def require(package: str, *, extra: str | None = None, what: str | None = None) -> None:
    """Raise :class:`MissingExtraError` unless ``package`` is importable.

    Parameters
    ----------
    package
        The import name, e.g. ``"torch"`` or ``"dask.distributed"``.
    extra
        The extra that installs it (default: looked up in :data:`EXTRA_OF`).
    what
        What needs it, for the message (e.g. ``"--method fisr"``).

    Raises
    ------
    MissingExtraError
        With a one-line message naming the extra, e.g. ``install napari-astrosr[ml]``.
    """
    if not installed(package):
        raise MissingExtraError(message(package, extra=extra, what=what))

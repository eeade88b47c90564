"""npe2 reader: FITS images -> napari image layers.

- ``.fits .fit .fts .fz`` and their ``.gz`` forms, tile-compressed HDUs;
- layers are named after the file (``.fits``/``.fz``/``.gz`` suffixes dropped), with the
  EXTNAME (or ``HDU<n>``) as a suffix when it is not the primary HDU: ``j8xi01 [SCI]``;
- multi-extension files: one layer per image HDU; same-shape frames
  of one stack (same EXTNAME, or ``ASRSTACK = T``) and 3-D cubes: one stack layer;
- several files opened together: one stack layer when they share a shape, otherwise
  one layer per file.

The reader never raises into napari for a file it claims: problems become a
notification and the reader returns napari's "nothing to add" value ``[(None,)]``.
Files it cannot handle (no image data) are declined (``get_reader`` returns None) with
a warning saying why.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Optional, Union

from ..core import fits_io
from ..exceptions import AstroSRError
from ._layers import image_layer_tuple

PathOrPaths = Union[str, Sequence[str]]
NOTHING = [(None,)]
"""napari's sentinel for "read fine, nothing to add" (no 'no data' error is raised)."""


def _notify_error(msg: str) -> None:
    from napari.utils.notifications import show_error

    show_error(msg)


def _notify_warning(msg: str) -> None:
    from napari.utils.notifications import show_warning

    show_warning(msg)


def prepare_current_viewer() -> None:
    """Lower-left origin and RA/Dec status on the current viewer, if there is one.

    The reader and sample loaders cannot see the viewer their layers go to; napari's
    ``current_viewer()`` is the viewer that asked, so FITS data always appear with the
    FITS orientation even when the Display widget is not open.
    """
    try:
        import napari

        viewer = napari.current_viewer()
        if viewer is not None:
            from .widgets.display import setup_viewer

            setup_viewer(viewer)
    except Exception:  # noqa: BLE001 - display set-up must never block reading
        pass


def get_reader(path: PathOrPaths) -> Optional[Callable[[PathOrPaths], list]]:
    """Return :func:`read_fits_layers` if ``path`` (or every path of a list) is a FITS image file."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    if not paths or not all(fits_io.is_fits_path(p) for p in paths):
        return None
    for p in paths:
        try:
            reason = fits_io.probe(p)
        except AstroSRError:
            # claim it: the reader function reports the problem clearly
            return read_fits_layers
        except Exception:  # noqa: BLE001 - never raise into napari from get_reader
            return read_fits_layers
        if reason is not None:
            _notify_warning(f"napari-astrosr: {reason} Not opened.")
            return None
    return read_fits_layers


def read_fits_layers(path: PathOrPaths, stack: bool = False) -> list:
    """Read one FITS file or several into LayerDataTuples (see module docstring).

    Returns ``[(None,)]`` after a notification when nothing could be read.
    """
    paths = [str(path)] if isinstance(path, (str, Path)) else [str(p) for p in path]
    layers: list = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            images = _read(paths)
        for w in caught:
            if issubclass(w.category, Warning) and "WCS" in str(w.message):
                _notify_warning(f"napari-astrosr: {w.message}")
    except AstroSRError as exc:
        _notify_error(f"napari-astrosr: {exc}")
        return NOTHING
    except MemoryError:
        _notify_error(f"napari-astrosr: {paths[0]}: not enough memory to open this file.")
        return NOTHING
    except Exception as exc:  # noqa: BLE001 - an unexpected failure must still not crash napari
        _notify_error(f"napari-astrosr: {paths[0]}: could not be read ({type(exc).__name__}: {exc}).")
        return NOTHING
    for img in images:
        layers.append(image_layer_tuple(img, name=layer_name(img, paths)))
        for note in img.warnings:
            if "every pixel" in note:
                _notify_warning(f"napari-astrosr: {note}")
    if layers:
        prepare_current_viewer()
    return layers or NOTHING


_FITS_SUFFIXES = (".gz", ".fz", ".fits", ".fit", ".fts")


def file_stem(path: str) -> str:
    """A FITS file's name without its FITS/compression suffixes (``a.fits.gz`` -> ``a``)."""
    name = Path(path).name
    changed = True
    while changed:
        changed = False
        for suf in _FITS_SUFFIXES:
            if name.lower().endswith(suf) and len(name) > len(suf):
                name, changed = name[: -len(suf)], True
    return name


def layer_name(img: fits_io.FitsImage, paths: list[str]) -> str:
    """``<file> [<EXTNAME>]`` (just ``<file>`` for a primary HDU or a whole-file stack)."""
    if len(paths) > 1 and " (+" in str(img.name):
        return str(img.name)  # a stack of several files: "first (+2)"
    src = img.path or paths[0]
    stem = file_stem(src)
    ext = str(img.name or "")
    if not ext or ext in (Path(src).name, Path(paths[0]).name) or ext == "PRIMARY":
        return stem
    return f"{stem} [{ext}]"


def _read(paths: list[str]) -> list[fits_io.FitsImage]:
    if len(paths) == 1:
        return fits_io.read_layers(paths[0])
    # several files: a stack when they share a 2-D shape, otherwise one layer per image
    shapes = set()
    for p in paths:
        hdus = [h for h in fits_io.list_image_hdus(p) if len(h[2]) >= 2]
        shapes.add(hdus[0][2] if hdus else None)
    if len(shapes) == 1 and None not in shapes and len(next(iter(shapes))) == 2:
        return [fits_io.read_stack(paths)]
    out: list[fits_io.FitsImage] = []
    for p in paths:
        out.extend(fits_io.read_layers(p))
    return out

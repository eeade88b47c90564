"""npe2 writer: one image layer -> a FITS file (header, WCS and provenance carried over).

The layer's ``metadata`` supplies the header (``header``), the WCS (``wcs``), the unit
(``bunit``), optional provenance (``provenance``: keyword arguments of
``core.fits_io.provenance_cards``: method, parameters, checkpoint_hash, inputs) and the output's
uncertainty (``err``: ``{"data", "how", "filter"}``, a restore's propagated noise), written as an
``ERR`` extension as ``astrosr restore`` writes it (skipped if its shape is not the image's). The write
is atomic (``core.fits_io.write_fits``). The layer's source file (``metadata['path']``, and
the frames of a stack) is never overwritten unless ``metadata['overwrite_source']`` is
True; other existing files are replaced, since napari's save dialog already asked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..core.fits_io import write_fits
from ..exceptions import AstroSRError
from ._layers import full_resolution


def _sources(metadata: dict) -> list[str]:
    out = [metadata.get("path")] + list(metadata.get("paths") or [])
    return list(dict.fromkeys(str(p) for p in out if p))  # unique, in order


def write_image(path: str, data: Any, meta: dict) -> list[str]:
    """Write one image layer as FITS; returns the written path, or [] after a notification."""
    metadata = dict(meta.get("metadata") or {})
    # multiscale (a list, or napari's MultiScaleData, whose np.asarray is the coarsest level):
    # write the full-resolution level
    arr = np.asarray(full_resolution(data))
    if arr.dtype.kind not in "fiub":
        return _fail(f"{path}: layer {meta.get('name')!r} has {arr.dtype} data; only numeric images can be written.")
    if arr.dtype.kind == "b":
        arr = arr.astype(np.uint8)
    header = metadata.get("header")
    if header is not None and metadata.get("bunit") and "BUNIT" not in header:
        header = header.copy()
        header["BUNIT"] = metadata["bunit"]
    sources = _sources(metadata)
    provenance = dict(metadata.get("provenance") or {})
    provenance.setdefault("inputs", sources)
    protect = [] if metadata.get("overwrite_source") else sources
    extra = []
    err = metadata.get("err")
    if isinstance(err, dict) and np.shape(err.get("data")) == arr.shape:
        from ..core.uncertainty import err_hdu

        extra.append(
            err_hdu(
                err["data"],
                header=header,
                wcs=metadata.get("wcs"),
                bunit=metadata.get("bunit"),
                how=str(err.get("how") or ""),
                filter_factor=err.get("filter"),
            )
        )
    try:
        out = write_fits(
            Path(path),
            arr,
            header=header,
            wcs=metadata.get("wcs"),
            overwrite=True,
            provenance=provenance,
            protect=protect,
            extra_hdus=extra,
        )
    except AstroSRError as exc:
        return _fail(str(exc))
    return [str(out)]


def _fail(msg: str) -> list[str]:
    from napari.utils.notifications import show_error

    show_error(f"napari-astrosr: {msg}")
    return []

"""Arrays -> FITS: :func:`write_fits`, atomic, never over an input, with the WCS and provenance.

The output is claimed exclusively and written to a temporary file in the target folder, then renamed
(``core.atomic``); the header carries the input's cards (unwritable ones dropped, with a warning), the WCS of
the written grid and the provenance cards (``core.fits_header``). Moved from ``core.fits_io`` (which
re-exports it). Flux: the pixel values are written as given (float data in native byte order).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Optional

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from ..exceptions import AstroSRError
from .atomic import atomic_output, claim_output, shown
from .fits_header import _strip_wcs, provenance_cards, sanitize_header
from .fits_open import PathLike


def write_fits(
    path: PathLike,
    data: np.ndarray,
    *,
    header: Optional[fits.Header] = None,
    wcs: Optional[WCS] = None,
    overwrite: bool = False,
    provenance: Optional[dict[str, Any]] = None,
    protect: Iterable[PathLike] = (),
    extra_hdus: Iterable[Any] = (),
) -> Path:
    """Write an image atomically, carrying the header and WCS over.

    Parameters
    ----------
    path
        Output file. Written to a temporary file in the same folder, then renamed.
    data
        2-D image or 3-D cube.
    header
        Header to carry (its WCS keywords are replaced when ``wcs`` is given).
    wcs
        WCS of ``data``'s grid.
    overwrite
        Replace an existing file.
    provenance
        Keyword arguments of :func:`provenance_cards`.
    protect
        Input files that must never be overwritten, even with ``overwrite=True``.
    extra_hdus
        Image extensions written after the primary image in the same atomic write (e.g. the ``ERR`` of a
        restoration, ``RestoreResult.err_hdu()``); None entries are skipped.
    """
    out = claim_output(path, inputs=protect, overwrite=overwrite)
    data = np.asarray(data)
    if data.ndim not in (2, 3):
        raise AstroSRError(f"{out}: can only write 2-D images or 3-D cubes, got shape {data.shape}.")
    hdr = fits.Header() if header is None else header.copy()
    for key in ("BSCALE", "BZERO", "BLANK", "CHECKSUM", "DATASUM"):
        hdr.remove(key, ignore_missing=True, remove_all=True)
    if wcs is not None:
        _strip_wcs(hdr)
        hdr.update(wcs.to_header(relax=True))
    for key, value, comment in provenance_cards(**(provenance or {})):
        hdr[key] = (value, comment)
    hdr = sanitize_header(hdr, where=shown(out))
    if data.dtype.kind == "f":
        data = data.astype(data.dtype.newbyteorder("="), copy=False)
    hdu = fits.PrimaryHDU(data=np.ascontiguousarray(data), header=hdr)
    extras = [h for h in extra_hdus if h is not None]
    with atomic_output(out, overwrite=overwrite, inputs=protect) as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if extras:
                fits.HDUList([hdu, *extras]).writeto(tmp, overwrite=True, output_verify="silentfix")
            else:
                hdu.writeto(tmp, overwrite=True, output_verify="silentfix")
    return out

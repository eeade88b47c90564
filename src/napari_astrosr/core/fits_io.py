"""FITS <-> arrays, headers, WCS, masks and units: a facade over the modules split by job.

The code moved (issue 19): reading to :mod:`.fits_read` (``read_fits``, ``read_fits_all``, ``read_layers``,
``read_stack``, ``FitsImage``, ``is_fits_path``), writing to :mod:`.fits_write` (``write_fits``), opening and
inspecting without reading data to :mod:`.fits_open` (``list_image_hdus``, ``describe``, ``probe``, the size
and structure guards) and header cards to :mod:`.fits_header` (``usable_wcs``, ``sanitize_header``,
``provenance_cards``, the WCS rules). Every name is re-exported here, so
``from napari_astrosr.core.fits_io import ...`` keeps working.

The reader returns native-byte-order, C-contiguous float32 (float64 on request) arrays
with BSCALE/BZERO applied and blank/NaN pixels kept as NaN (and reported as a mask).
It never allocates more than the file can hold: a header that claims more data than
the file contains is rejected before any data are read.

The writer is atomic (temporary file in the target folder, then rename), refuses to
overwrite an input unless asked, and records provenance in the header.
"""

from __future__ import annotations

import os  # noqa: F401  (tests patch fits_io.os.replace, as before the split)

from .fits_header import (  # noqa: F401  (private names: used by restore_jobs.stream and tests)
    _ascii,
    _card_ok,
    _header_wcs_problem,
    _make_wcs,
    _sanitized,
    _short,
    _strip_wcs,
    _wcs_card_problem,
    provenance_cards,
    sanitize_header,
    usable_wcs,
)
from .fits_open import (  # noqa: F401
    PathLike,
    _check_size,
    _check_structure,
    _expected_bytes,
    _is_gzip,
    _is_image_hdu,
    _memory_limit,
    _open,
    describe,
    list_image_hdus,
    probe,
)
from .fits_read import (  # noqa: F401
    FITS_SUFFIXES,
    FitsImage,
    _read,
    _stack_images,
    _stack_key,
    _to_float,
    is_fits_path,
    read_fits,
    read_fits_all,
    read_layers,
    read_stack,
)
from .fits_write import write_fits

__all__ = [
    "FITS_SUFFIXES",
    "FitsImage",
    "PathLike",
    "describe",
    "is_fits_path",
    "list_image_hdus",
    "probe",
    "provenance_cards",
    "read_fits",
    "read_fits_all",
    "read_layers",
    "read_stack",
    "sanitize_header",
    "usable_wcs",
    "write_fits",
]

"""FITS larger than memory, a section at a time: lazy sections in, a pre-allocated file written through memmap.

:class:`FitsSection` reads ``[y0:y1, x0:x1]`` of one image HDU from the memory-mapped file (astropy
``section``; tile-compressed HDUs decompress only the tiles touched); :func:`output_header` builds the final
header of a float32 output (the same cards as ``write_fits``) so the file can be pre-allocated;
:class:`MemmapWriter` and :class:`RowOffset` write blocks into its data area. All hold only a path, so they
pickle to Dask workers. Moved from ``napari_astrosr.batch`` (the streaming job is
``restore_jobs.stream.restore_fits_tiled_job``). Pixel values are read and written as they are: no flux
changes here.
"""

from __future__ import annotations

import os
import warnings
from typing import Optional, Union

import numpy as np

from ..exceptions import AstroSRError

# astropy is imported where it is used: importing the batch and tiled jobs stays light
PathLike = Union[str, os.PathLike]


class FitsSection:
    """Lazy, picklable 2-D view of one image HDU: ``obj[y0:y1, x0:x1]`` reads just that section.

    Each read opens the file memory-mapped and uses astropy's ``section`` (BSCALE/BZERO applied;
    tile-compressed HDUs decompress only the tiles touched), returning native float32 with BLANK as
    NaN. Holding only a path, it pickles to any Dask worker that sees the same file system.
    """

    def __init__(self, path: PathLike, *, hdu: Optional[int] = None) -> None:
        from astropy.io import fits

        from .fits_open import list_image_hdus

        self.path = str(path)
        hdus = list_image_hdus(path)  # clear AstroSRError for unreadable files
        if hdu is None:
            if not hdus:
                raise AstroSRError(f"{path}: no image data in this file.")
            idx, _, shape = hdus[0]
        else:
            match = [h for h in hdus if h[0] == hdu]
            if not match:
                raise AstroSRError(f"{path}: HDU {hdu} holds no image.")
            idx, _, shape = match[0]
        shape = tuple(s for s in shape if s != 1) if len(shape) > 2 else shape
        if len(shape) != 2:
            raise AstroSRError(f"{path}: HDU {idx} has shape {shape}; tiled restoration needs a 2-D image.")
        self.hdu = idx
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(np.float32)
        self.ndim = 2
        with fits.open(self.path, memmap=True, lazy_load_hdus=True) as hdul:
            h = hdul[idx]
            header = h.header
            self._compressed = isinstance(h, fits.CompImageHDU)
            if not self._compressed and not self.path.lower().endswith(".gz"):
                nbytes = int(np.prod(self.shape)) * abs(int(header["BITPIX"])) // 8
                if h._data_offset + nbytes > os.path.getsize(self.path):
                    raise AstroSRError(
                        f"{path}: header claims {nbytes:,} bytes of data but the file is shorter; it is truncated."
                    )
            self._blank = header.get("BLANK") if int(header.get("BITPIX", -32)) > 0 else None
        st = os.stat(self.path)
        self._token = (self.path, self.hdu, st.st_size, st.st_mtime_ns)

    def __dask_tokenize__(self):  # noqa: D105
        return self._token

    def __getitem__(self, key) -> np.ndarray:
        from astropy.io import fits

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(self.path, memmap=True, lazy_load_hdus=True, do_not_scale_image_data=False) as hdul:
                h = hdul[self.hdu]
                sec = h.section
                if len(h.shape) > 2:  # degenerate axes of length 1 in front
                    key = (0,) * (len(h.shape) - 2) + (key if isinstance(key, tuple) else (key,))
                raw = np.asarray(sec[key])
        if self._blank is not None and raw.dtype.kind in "iu":
            bad = raw == self._blank
            raw = raw.astype(np.float32)
            raw[bad] = np.nan
        return np.ascontiguousarray(raw, dtype=np.float32)


class MemmapWriter:
    """``obj[region] = block`` writes into the data area of a pre-allocated FITS file via memmap.

    Opens and closes the map per write, so it pickles (a path and an offset) and never holds more
    than one block's pages.
    """

    def __init__(self, path: PathLike, offset: int, shape: tuple[int, int]) -> None:
        self.path, self.offset, self.shape = str(path), int(offset), tuple(shape)
        self.dtype = np.dtype(">f4")
        self.ndim = 2

    def __setitem__(self, key, value) -> None:
        mm = np.memmap(self.path, dtype=">f4", mode="r+", offset=self.offset, shape=self.shape)
        try:
            mm[key] = value
            mm.flush()
        finally:
            del mm


def output_header(header, wcs, shape, provenance: dict, extra_cards: dict):
    """The final header of a float32 2-D output (same cards as ``write_fits`` would write)."""
    from astropy.io import fits

    from .fits_header import _strip_wcs, provenance_cards  # the writer's rules

    hdr = fits.Header() if header is None else header.copy()
    for key in (
        "BSCALE",
        "BZERO",
        "BLANK",
        "CHECKSUM",
        "DATASUM",
        "SIMPLE",
        "BITPIX",
        "EXTEND",
        "XTENSION",
        "PCOUNT",
        "GCOUNT",
    ):
        hdr.remove(key, ignore_missing=True, remove_all=True)
    for k in range(1, 10):
        hdr.remove(f"NAXIS{k}", ignore_missing=True, remove_all=True)
    hdr.remove("NAXIS", ignore_missing=True, remove_all=True)
    if wcs is not None:
        _strip_wcs(hdr)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hdr.update(wcs.to_header(relax=True))
    for key, value, comment in provenance_cards(**provenance):
        hdr[key] = (value, comment)
    for key, value in extra_cards.items():
        hdr[key] = value
    # a PrimaryHDU header puts SIMPLE/BITPIX/NAXIS* first, as FITS requires
    hdu = fits.PrimaryHDU(data=np.zeros((1, 1), dtype=np.float32), header=hdr)
    out = hdu.header
    out["NAXIS1"] = int(shape[1])
    out["NAXIS2"] = int(shape[0])
    return out


class RowOffset:
    """Shift ``da.store`` writes of a row band by ``y0`` rows into the full-size writer."""

    def __init__(self, writer: MemmapWriter, y0: int) -> None:
        self.writer, self.y0 = writer, int(y0)
        self.shape = writer.shape
        self.dtype = writer.dtype
        self.ndim = 2

    def __setitem__(self, key, value) -> None:
        ys, xs = key
        self.writer[slice(ys.start + self.y0, ys.stop + self.y0), xs] = value

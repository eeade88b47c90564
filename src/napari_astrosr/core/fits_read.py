"""FITS -> arrays: one image, every image HDU, the viewer's layers, or a stack of files.

The reader returns native-byte-order, C-contiguous float32 (float64 on request) arrays with BSCALE/BZERO
applied and blank/NaN pixels kept as NaN (and reported as a mask), the header with unwritable cards dropped,
and the celestial WCS checked once (``core.fits_header``). It never allocates more than the file can hold
(``core.fits_open``). Moved from ``core.fits_io`` (which re-exports it). Flux: pixel values are those of the
file after BSCALE/BZERO, converted to float; nothing is resampled.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from ..exceptions import AstroSRError, AstroSRWarning
from .fits_header import _make_wcs, _sanitized, _short
from .fits_open import PathLike, _check_size, _is_gzip, _is_image_hdu, _open

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fz")
"""File name endings the reader claims (each also with ``.gz``)."""


@dataclass
class FitsImage:
    """One image (2-D) or cube (3-D) read from a FITS HDU."""

    data: np.ndarray
    header: fits.Header
    wcs: Optional[WCS] = None
    path: Optional[str] = None
    name: str = ""
    hdu_index: int = 0
    unit: Optional[str] = None
    warnings: list[str] = field(default_factory=list)
    frame_headers: Optional[list] = None
    """Per-frame headers when ``data`` is a stack of frames (see :func:`read_layers`)."""
    frame_paths: Optional[list] = None

    @property
    def mask(self) -> np.ndarray:
        """True where a pixel is blank/NaN/inf (not usable)."""
        return ~np.isfinite(self.data)

    @property
    def metadata(self) -> dict[str, Any]:
        """The napari layer metadata for this image."""
        return {
            "header": self.header,
            "wcs": self.wcs,
            "bunit": self.unit,
            "path": self.path,
            "hdu": self.hdu_index,
            "extname": self.name,
            **({"headers": self.frame_headers, "paths": self.frame_paths} if self.frame_headers else {}),
        }


def is_fits_path(path: PathLike) -> bool:
    """True if ``path`` has a FITS file-name ending (optionally gzipped)."""
    name = str(path).lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return name.endswith(FITS_SUFFIXES)


def _to_float(raw: np.ndarray, header: fits.Header, dtype: np.dtype) -> np.ndarray:
    blank = header.get("BLANK")
    data = np.asarray(raw)
    if data.dtype.kind in "iu" and blank is not None:
        # astropy leaves BLANK in integer data when no scaling applies
        bad = data == blank
        data = data.astype(dtype)
        data[bad] = np.nan
    else:
        data = data.astype(dtype, copy=True)
    return np.ascontiguousarray(data.astype(data.dtype.newbyteorder("="), copy=False))


def read_fits(
    path: PathLike,
    *,
    hdu: Optional[Union[int, str]] = None,
    dtype: Union[str, np.dtype] = np.float32,
    allow_cube: bool = True,
) -> FitsImage:
    """Read one image HDU.

    Parameters
    ----------
    path
        FITS file (``.fits``, ``.fit``, ``.fts``, optionally ``.gz``; tile-compressed OK).
    hdu
        Index or EXTNAME; default: the first HDU with image data.
    dtype
        ``float32`` (default) or ``float64``.
    allow_cube
        Accept 3-D data (a cube); 4-D and higher are refused (unless the extra axes have length 1).

    Returns
    -------
    FitsImage
        Native-byte-order, C-contiguous float array; blanks as NaN.

    Raises
    ------
    AstroSRError
        Unreadable file, no image data, unsupported dimensionality, truncated data.
    """
    images = _read(path, hdu=hdu, dtype=np.dtype(dtype), allow_cube=allow_cube, first_only=True)
    return images[0]


def read_fits_all(
    path: PathLike,
    *,
    dtype: Union[str, np.dtype] = np.float32,
    allow_cube: bool = True,
) -> list[FitsImage]:
    """Read every image HDU of a (multi-extension) file, in file order."""
    return _read(path, hdu=None, dtype=np.dtype(dtype), allow_cube=allow_cube, first_only=False)


def _read(path, *, hdu, dtype, allow_cube, first_only) -> list[FitsImage]:
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise AstroSRError(f"dtype={dtype}: use float32 or float64.")
    p = Path(path)
    hdul = _open(p)
    try:
        if hdu is not None:
            try:
                candidates = [(hdul.index_of(hdu), hdul[hdu])]
            except (KeyError, IndexError) as exc:
                raise AstroSRError(f"{p}: has no HDU {hdu!r}.") from exc
        else:
            candidates = list(enumerate(hdul))
        out: list[FitsImage] = []
        reasons: list[str] = []
        file_size = p.stat().st_size
        gz = _is_gzip(p)
        for idx, h in candidates:
            if not _is_image_hdu(h):
                reasons.append(f"HDU {idx} is a {type(h).__name__}")
                continue
            where = f"{p.name}[{idx}]"
            # cards astropy read but cannot parse or write back (control bytes, 1E999, an orphan CONTINUE)
            # would fail later, in any code that touches them: drop them once, here, and say so
            header, dropped = _sanitized(h.header)
            if dropped:
                more = f" (+{len(dropped) - 8} more)" if len(dropped) > 8 else ""
                warnings.warn(
                    f"{where}: ignored header card(s) that are not valid FITS: {', '.join(dropped[:8])}{more}",
                    AstroSRWarning,
                    stacklevel=3,
                )
            try:
                naxis = int(header.get("NAXIS", 0) or 0)
            except Exception as exc:  # an unparsable mandatory card
                raise AstroSRError(
                    f"{p}: HDU {idx} header cannot be parsed ({_short(exc)}); the file is corrupt."
                ) from None
            if isinstance(h, fits.CompImageHDU):
                naxis = len(h.shape)
            if naxis == 0:
                reasons.append(f"HDU {idx} has no data")
                continue
            try:
                _check_size(p, idx, h, file_size=file_size, gz=gz)
            except AstroSRError:
                raise
            except Exception as exc:  # a size card astropy cannot parse (e.g. merged with an orphan CONTINUE)
                raise AstroSRError(
                    f"{p}: HDU {idx} header cannot be parsed ({_short(exc)}); the file is corrupt."
                ) from None
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    raw = h.data
            except Exception as exc:
                raise AstroSRError(f"{p}: HDU {idx} data cannot be read ({_short(exc)}).") from exc
            if raw is None:
                reasons.append(f"HDU {idx} has no data")
                continue
            raw = np.asarray(raw)
            if raw.ndim > 3:
                squeezed = raw.reshape([s for s in raw.shape if s != 1] or [1])
                if squeezed.ndim > 3 or squeezed.ndim < 2:
                    raise AstroSRError(
                        f"{p}: HDU {idx} has {raw.ndim}-D data {raw.shape}; only 2-D images and 3-D cubes are supported."
                    )
                raw = squeezed
            if raw.ndim == 1:
                reasons.append(f"HDU {idx} holds 1-D data {raw.shape} (a spectrum?), not an image")
                if hdu is not None or first_only:
                    continue
                continue
            if raw.ndim == 3 and not allow_cube:
                raise AstroSRError(f"{p}: HDU {idx} is a 3-D cube {raw.shape}; pick one plane or use a stack.")
            data = _to_float(raw, header, dtype)
            wcs, notes = _make_wcs(h.header, raw.ndim, where, raw.shape)  # the raw cards: a dropped WCS card counts
            if not np.isfinite(data).any():
                notes.append(f"{where}: every pixel is NaN or blank.")
            unit = header.get("BUNIT")
            out.append(
                FitsImage(
                    data=data,
                    header=header.copy(),
                    wcs=wcs,
                    path=str(p),
                    name=(h.name if h.name and h.name != "PRIMARY" else "") or (p.name if idx == 0 else f"HDU{idx}"),
                    hdu_index=idx,
                    unit=str(unit).strip() if unit else None,
                    warnings=notes,
                )
            )
            if first_only:
                break
        if not out:
            why = "; ".join(reasons) or "no HDU holds image data"
            raise AstroSRError(f"{p}: no 2-D image in this file ({why}).")
        return out
    finally:
        hdul.close()


def _stack_key(img: FitsImage) -> str:
    """EXTNAME without EXTVER: frames of one stack share it (e.g. 'FRAME', 'SCI')."""
    return str(img.header.get("EXTNAME", "")).strip().upper()


def read_layers(path: PathLike, *, dtype: Union[str, np.dtype] = np.float32) -> list[FitsImage]:
    """Read a file the way the viewer shows it: one image per layer.

    - one image HDU -> one image (a 3-D cube stays a cube);
    - several 2-D image HDUs of the same shape *and* the same EXTNAME (ignoring
      EXTVER, e.g. ``FRAME,1 .. FRAME,5`` or all unnamed) -> one 3-D stack, because
      they are frames of one thing; the primary header card ``ASRSTACK = T`` forces
      this for same-shape HDUs;
    - otherwise one image per HDU (e.g. HST ``SCI``/``ERR``/``DQ`` stay separate).

    A stack carries the first frame's header and WCS, and every frame's header under
    ``FitsImage.frame_headers`` (also in ``metadata['headers']``).
    """
    images = read_fits_all(path, dtype=dtype)
    if len(images) < 2:
        return images
    shapes = {im.data.shape for im in images}
    same_shape = len(shapes) == 1 and images[0].data.ndim == 2
    forced = False
    try:
        forced = bool(fits.getval(path, "ASRSTACK", ext=0))
    except (KeyError, OSError, IndexError):
        forced = False
    same_name = len({_stack_key(im) for im in images}) == 1
    if same_shape and (same_name or forced):
        return [_stack_images(images, name=Path(path).name)]
    return images


def _stack_images(images: Sequence[FitsImage], *, name: str) -> FitsImage:
    first = images[0]
    data = np.stack([im.data for im in images])
    notes = [n for im in images for n in im.warnings]
    img = FitsImage(
        data=data,
        header=first.header.copy(),
        wcs=first.wcs,
        path=first.path,
        name=name,
        hdu_index=first.hdu_index,
        unit=first.unit,
        warnings=notes,
    )
    img.frame_headers = [im.header for im in images]
    img.frame_paths = [im.path for im in images]
    return img


def read_stack(paths: Sequence[PathLike], *, dtype: Union[str, np.dtype] = np.float32) -> FitsImage:
    """Read the first image of each file into one 3-D stack (frames, y, x).

    Raises
    ------
    AstroSRError
        No files, an unreadable file, or frames of different shapes (the message
        names the first file whose shape differs).
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise AstroSRError("no files given to stack.")
    images = [read_fits(p, dtype=dtype, allow_cube=False) for p in paths]
    shape = images[0].data.shape
    for p, im in zip(paths, images):
        if im.data.shape != shape:
            raise AstroSRError(
                f"{p}: shape {im.data.shape} differs from {paths[0].name}'s {shape}; "
                "only images of the same shape can be stacked. Open them separately."
            )
    return _stack_images(images, name=f"{paths[0].stem} (+{len(paths) - 1})" if len(paths) > 1 else paths[0].name)

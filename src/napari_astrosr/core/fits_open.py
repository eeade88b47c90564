"""Opening FITS files safely and looking inside them without reading the data.

``_open`` walks the HDU headers before astropy does (negative sizes made astropy loop forever) and turns any
failure into one :class:`~napari_astrosr.exceptions.AstroSRError` naming the file; ``_check_size`` refuses,
before any data are read, an HDU whose header claims more bytes than the file can hold or more pixels than
half the memory. :func:`list_image_hdus`, :func:`describe` (``astrosr info``) and :func:`probe` read headers
only. Moved from ``core.fits_io`` (which re-exports them). Reads only: no data are changed or written.
"""

from __future__ import annotations

import gzip
import os
import re
import warnings
import zlib
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
from astropy.io import fits

from ..exceptions import AstroSRError
from .fits_header import _make_wcs, _short

PathLike = Union[str, os.PathLike]


def _expected_bytes(header: fits.Header) -> int:
    naxis = int(header.get("NAXIS", 0) or 0)
    if naxis == 0:
        return 0
    n = 1
    for i in range(1, naxis + 1):
        n *= int(header.get(f"NAXIS{i}", 0) or 0)
    return n * abs(int(header.get("BITPIX", 8))) // 8


# Deflate cannot compress better than about 1032:1, so a gzipped file of n bytes never
# expands to more than ~1032 n bytes: a cheap, exact-enough bound that stops a header
# claiming terabytes from allocating anything.
_DEFLATE_MAX_RATIO = 1032


def _memory_limit() -> int:
    """Half the physical memory (bytes); the most one image may take as float32."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")) // 2
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 8 * 1024**3


def _check_size(p: Path, idx: int, h: Any, *, file_size: int, gz: bool) -> None:
    """Refuse, before reading any data, an HDU whose header claims more than can exist."""
    header = h.header
    if isinstance(h, fits.CompImageHDU):
        n = int(np.prod([int(s) for s in h.shape], dtype=np.float64)) if h.shape else 0
        nbytes = n * 4
    else:
        if header.get("BITPIX") not in (8, 16, 32, 64, -32, -64):
            # astropy fails later with a bare 'KeyError: 7'; `astrosr info` showed 'dtype=7'
            raise AstroSRError(
                f"{p}: HDU {idx} has BITPIX = {header.get('BITPIX')!r}, not one of 8, 16, 32, "
                "64, -32, -64; the header is corrupt."
            )
        nbytes = _expected_bytes(header)
        n = nbytes // max(1, abs(int(header.get("BITPIX", 8))) // 8)
        # the data start after this HDU's header: compare with what the file holds from there
        # (comparing with the whole file size let a cut inside the data through `astrosr info`)
        offset = int(getattr(h, "_data_offset", 0) or 0)
        limit = file_size * _DEFLATE_MAX_RATIO if gz else file_size - offset
        if nbytes > limit:
            raise AstroSRError(
                f"{p}: HDU {idx} header claims {nbytes:,} bytes of data but the file holds "
                f"{file_size:,}{' (compressed)' if gz else ''}; the file is truncated or the header is wrong."
            )
    if n * 4 > _memory_limit():
        raise AstroSRError(
            f"{p}: HDU {idx} holds {n:,} pixels ({n * 4 / 1024**3:.1f} GiB as float32), more than half this "
            "machine's memory; cut it into smaller files first."
        )


def _is_image_hdu(hdu: Any) -> bool:
    return isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU))


_STRUCT_CARD = re.compile(rb"(NAXIS\d{0,3}|PCOUNT|GCOUNT|BITPIX) *= *([^/]*)")


def _is_gzip(p: Path) -> bool:
    """Gzip content (astropy decides by the magic bytes, not the name: so do we)."""
    try:
        with open(p, "rb") as f:
            return f.read(2) == b"\x1f\x8b"
    except OSError:
        return str(p).lower().endswith(".gz")


def _check_structure(p: Path, *, gz: bool, max_hdus: int = 10000) -> None:
    """Walk the HDU headers before astropy does and refuse negative sizes.

    Why our own walk: with a negative ``NAXISn``/``PCOUNT``/``GCOUNT`` astropy (8.x)
    seeks backwards to the "next" HDU and re-reads the same header forever (a hang in
    ``len(hdul)``). Only headers are read; data are skipped by seeking. Anything this
    walk cannot make sense of (truncation, non-integer values) is left to astropy.
    """
    try:
        with gzip.open(p, "rb") if gz else open(p, "rb") as f:
            for idx in range(max_hdus):
                vals: dict[str, bytes] = {}
                ended = False
                while not ended:
                    block = f.read(2880)
                    if len(block) < 2880:
                        return
                    for i in range(0, 2880, 80):
                        c = block[i : i + 80]
                        if c[:8] == b"END     ":
                            ended = True
                            break
                        m = _STRUCT_CARD.match(c)
                        if m:
                            vals[m.group(1).decode()] = m.group(2).strip()
                try:
                    ints = {k: int(v) for k, v in vals.items()}
                except ValueError:
                    return
                bad = [k for k, v in ints.items() if k != "BITPIX" and v < 0]
                if bad:
                    raise AstroSRError(
                        f"{p}: HDU {idx} header has {bad[0]} = {ints[bad[0]]} (negative); the file is corrupt."
                    )
                naxis = ints.get("NAXIS", 0)
                n = 1 if naxis else 0
                for k in range(1, naxis + 1):
                    n *= ints.get(f"NAXIS{k}", 0)
                size = abs(ints.get("BITPIX", 8)) // 8 * ints.get("GCOUNT", 1) * (ints.get("PCOUNT", 0) + n)
                if size:
                    f.seek(size + (-size % 2880), os.SEEK_CUR)
    except (OSError, EOFError, zlib.error, OverflowError, ValueError):
        return


def _open(path: PathLike) -> fits.HDUList:
    p = Path(path)
    if not p.exists():
        raise AstroSRError(f"{p}: no such file. Check the path.")
    if p.is_dir():
        raise AstroSRError(f"{p}: is a folder, not a FITS file.")
    if not os.access(p, os.R_OK):
        raise AstroSRError(f"{p}: cannot be read (permission denied).")
    _check_structure(p, gz=_is_gzip(p))
    hdul = None
    # our own file object: astropy leaks its own when fits.open itself fails (a ResourceWarning
    # printed after the CLI's error line); hdul.close() closes this one too
    fobj = open(p, "rb")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # memmap=False: astropy cannot memory-map scaled integer data with BLANK (and never
            # maps gzip); the reader copies into float anyway. lazy_load_hdus: a broken late
            # HDU fails only when touched.
            hdul = fits.open(fobj, memmap=False, lazy_load_hdus=True)
            len(hdul)  # forces reading all headers: a truncated header fails here
    except Exception as exc:  # astropy raises OSError, ValueError, TypeError, ...
        if hdul is not None:
            hdul.close()
        fobj.close()
        raise AstroSRError(f"{p}: not a readable FITS file ({_short(exc)}).") from exc
    # hdul.close() closes a plain file handed to fits.open, but for a gzip file only the GzipFile astropy wraps
    # around it: close ours too (else every read of a .fits.gz leaks a handle, a ResourceWarning at exit)
    close_hdul = hdul.close

    def close(*args, **kwargs):
        try:
            close_hdul(*args, **kwargs)
        finally:
            fobj.close()

    hdul.close = close
    return hdul


def list_image_hdus(path: PathLike) -> list[tuple[int, str, tuple[int, ...]]]:
    """(index, name, shape) for each HDU holding image data, without reading the data."""
    hdul = _open(path)
    try:
        out = []
        for i, hdu in enumerate(hdul):
            if _is_image_hdu(hdu) and hdu.header.get("NAXIS", 0):
                shape = tuple(int(hdu.header[f"NAXIS{k}"]) for k in range(hdu.header["NAXIS"], 0, -1))
                if isinstance(hdu, fits.CompImageHDU):
                    shape = tuple(hdu.shape)
                if all(s > 0 for s in shape):
                    out.append((i, hdu.name or f"HDU{i}", shape))
        return out
    finally:
        hdul.close()


def describe(path: PathLike) -> str:
    """A human-readable summary of a FITS file (``astrosr info``)."""
    p = Path(path)
    hdul = _open(p)
    lines = [f"{p}  ({p.stat().st_size:,} bytes, {len(hdul)} HDU{'s' if len(hdul) != 1 else ''})"]
    gz = _is_gzip(p)
    try:
        for i, h in enumerate(hdul):
            try:
                lines.extend(_describe_hdu(p, i, h, gz))
            except AstroSRError:
                raise
            except Exception as exc:  # a card astropy read but cannot parse
                raise AstroSRError(
                    f"{p}: HDU {i} header cannot be parsed ({_short(exc)}); the file is corrupt."
                ) from None
    finally:
        hdul.close()
    return "\n".join(lines)


def _describe_hdu(p: Path, i: int, h: Any, gz: bool) -> list[str]:
    """The lines of one HDU in :func:`describe`."""
    lines: list[str] = []
    hdr = h.header
    kind = type(h).__name__
    if _is_image_hdu(h):
        # a header claiming more data than the file holds: corrupt, say so (exit 2)
        _check_size(p, i, h, file_size=p.stat().st_size, gz=gz)
        naxis = int(hdr.get("NAXIS", 0) or 0)
        if isinstance(h, fits.CompImageHDU):
            shape = tuple(h.shape)
        else:
            shape = tuple(int(hdr.get(f"NAXIS{k}", 0)) for k in range(naxis, 0, -1))
        bitpix = int(hdr.get("BITPIX", 0))
        dtype = {8: "uint8", 16: "int16", 32: "int32", 64: "int64", -32: "float32", -64: "float64"}.get(
            bitpix, str(bitpix)
        )
        scaled = " (BSCALE/BZERO)" if ("BSCALE" in hdr or "BZERO" in hdr) else ""
        desc = f"[{i}] {h.name or '-':<10} {kind:<13} shape={shape if shape else '()'} dtype={dtype}{scaled}"
        if hdr.get("BUNIT"):
            desc += f" unit={hdr['BUNIT']}"
        lines.append(desc)
        if naxis >= 2:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                wcs, notes = _make_wcs(hdr, naxis, f"{p.name}[{i}]", shape)
            if wcs is not None:
                from astropy.wcs.utils import proj_plane_pixel_scales

                scales = proj_plane_pixel_scales(wcs.celestial) * 3600.0
                ny, nx = shape[-2:]
                c = wcs.celestial.pixel_to_world_values((nx - 1) / 2, (ny - 1) / 2)
                lines.append(
                    f"     WCS {'/'.join(list(wcs.wcs.ctype)[:2])}  centre=({float(c[0]):.6f}, {float(c[1]):.6f}) deg"
                    f'  pixel scale={scales[0]:.4f}"x{scales[1]:.4f}"'
                )
            else:
                lines.append("     WCS none" + (f" ({notes[0]})" if notes else ""))
    else:
        extra = f" rows={hdr.get('NAXIS2', '?')} cols={hdr.get('TFIELDS', '?')}" if "TFIELDS" in hdr else ""
        lines.append(f"[{i}] {h.name or '-':<10} {kind:<13}{extra}")
    return lines


def probe(path: PathLike) -> Optional[str]:
    """Cheaply tell whether ``path`` holds image data, reading headers only.

    Returns
    -------
    str or None
        None when at least one HDU has image data (2-D or more); otherwise the reason
        the file holds no image (e.g. a table-only file), worded for the user.

    Raises
    ------
    AstroSRError
        The file cannot be opened as FITS at all.
    """
    hdus = list_image_hdus(path)
    if any(len(shape) >= 2 for _, _, shape in hdus):
        return None
    hdul = _open(path)
    try:
        kinds = [type(h).__name__ for h in hdul]
    finally:
        hdul.close()
    if hdus:
        return f"{Path(path).name}: holds only 1-D data {hdus[0][2]} (a spectrum?), not an image."
    return f"{Path(path).name}: holds no image data (HDUs: {', '.join(kinds)})."

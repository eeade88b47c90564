"""FITS <-> arrays, headers, WCS, masks and units.

The reader returns native-byte-order, C-contiguous float32 (float64 on request) arrays
with BSCALE/BZERO applied and blank/NaN pixels kept as NaN (and reported as a mask).
It never allocates more than the file can hold: a header that claims more data than
the file contains is rejected before any data are read.

The writer is atomic (temporary file in the target folder, then rename), refuses to
overwrite an input unless asked, and records provenance in the header.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import warnings
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from .._version import __version__
from ..exceptions import AstroSRError, AstroSRWarning, WCSWarning
from .atomic import atomic_output, claim_output, shown

PathLike = Union[str, os.PathLike]

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


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


#: Distortion keywords whose value is an order or an axis count: bounded before wcslib sees them
#: (``WCSAXES = 100000`` takes wcslib a minute and then crashes; ``A_ORDER = 100000`` asks for 75 GB).
_WCS_COUNTS = {"WCSAXES": 9, "A_ORDER": 20, "B_ORDER": 20, "AP_ORDER": 20, "BP_ORDER": 20}
_WCS_PREFIXES = (
    "CTYPE",
    "CRPIX",
    "CRVAL",
    "CDELT",
    "CUNIT",
    "CD1_",
    "CD2_",
    "PC1_",
    "PC2_",
    "PV1_",
    "PV2_",
    "A_",
    "B_",
    "AP_",
    "BP_",
)
_WCS_KEYS = ("A_ORDER", "B_ORDER", "LONPOLE", "LATPOLE", "WCSAXES", "RADESYS", "EQUINOX")
_RADESYS = {"ICRS", "FK5", "FK4", "FK4-NO-E", "GAPPT", "ECLIPTIC", "GALACTIC", ""}


def _header_wcs_problem(header: fits.Header) -> Optional[str]:
    """Why ``header``'s WCS keywords must not reach wcslib at all (None: they may)."""
    try:
        return _wcs_card_problem(header)
    except Exception as exc:  # a WCS card astropy cannot even parse (control bytes in RADESYS, ...)
        return f"a WCS card cannot be parsed ({_short(exc)})"


def _wcs_card_problem(header: fits.Header) -> Optional[str]:
    for key, limit in _WCS_COUNTS.items():
        if key in header:
            v = header[key]
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or not 0 <= int(v) <= limit:
                return f"{key} = {_ascii(str(v))[:30]} (must be an integer 0-{limit})"
    for key in header.keys():
        m = re.match(r"PV(\d+)_(\d+)$", key)
        if m and (int(m.group(1)) > 9 or int(m.group(2)) > 99):
            return f"{key} (index out of range)"
    rad = header.get("RADESYS", header.get("RADECSYS"))
    if rad is not None and str(rad).strip().upper() not in _RADESYS:
        return f"RADESYS = {_ascii(str(rad))[:30]!r} (not a known frame)"
    return None


def usable_wcs(wcs: WCS, shape: Sequence[int]) -> Optional[str]:
    """Check once, on reading, that a celestial WCS can place every pixel of the image.

    Parameters
    ----------
    wcs
        The WCS built from the header.
    shape
        The image shape (the last two axes are y, x).

    Returns
    -------
    str or None
        None when the WCS is usable; otherwise why not (finite reference values, a
        non-singular and finite CD/PC x CDELT matrix with a plausible pixel scale, a
        reference pixel within 1e8 pixels, and corners, centre and sources of the grid
        mapping to finite sky positions and back to within 0.5 pixel).
    """
    c = wcs.celestial.wcs
    ny, nx = (int(shape[-2]), int(shape[-1])) if len(shape) >= 2 else (1, int(shape[-1]))
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if not (np.all(np.isfinite(c.crval)) and np.all(np.isfinite(c.crpix))):
            return "CRVAL/CRPIX are not finite"
        if np.any(np.abs(c.crpix) > 1e8):
            return f"CRPIX {tuple(float(v) for v in c.crpix)} is implausibly far from the image"
        m = np.asarray(wcs.celestial.pixel_scale_matrix, float)
        if not np.all(np.isfinite(m)):
            return "the CD/PC/CDELT matrix is not finite"
        det = abs(float(np.linalg.det(m))) if m.shape == (2, 2) else 0.0
        if not np.isfinite(det) or det == 0.0:
            return "the CD/PC/CDELT matrix is singular"
        scale = np.sqrt(det)
        if not 1e-12 < scale < 10.0:
            return f"pixel scale {scale:.3g} deg is implausible"
        # singular values: a nearly rank-1 matrix maps the image onto a line
        sv = np.linalg.svd(m, compute_uv=False)
        if sv[-1] <= 1e-9 * sv[0]:
            return "the CD/PC/CDELT matrix is nearly singular"
        xs = np.array([0, nx - 1, 0, nx - 1, (nx - 1) / 2], float)
        ys = np.array([0, 0, ny - 1, ny - 1, (ny - 1) / 2], float)
        try:
            ra, dec = wcs.celestial.all_pix2world(xs, ys, 0)
            if not (np.all(np.isfinite(ra)) and np.all(np.isfinite(dec))):
                return "pixels of the image map to no sky position"
            bx, by = wcs.celestial.all_world2pix(ra, dec, 0, maxiter=50, tolerance=1e-6, quiet=True)
        except Exception as exc:
            return f"it cannot be evaluated ({_short(exc)})"
        if (
            not (np.all(np.isfinite(bx)) and np.all(np.isfinite(by)))
            or max(np.max(np.abs(bx - xs)), np.max(np.abs(by - ys))) > 0.5
        ):
            return "sky positions do not map back to their pixels (broken distortion?)"
    return None


def _make_wcs(
    header: fits.Header, naxis: int, where: str, shape: Sequence[int] = ()
) -> tuple[Optional[WCS], list[str]]:
    notes: list[str] = []

    def unusable(why: str) -> tuple[None, list[str]]:
        msg = f"{where}: WCS in header is invalid or unusable ({why}); image opened in pixel coordinates, without WCS."
        warnings.warn(msg, WCSWarning, stacklevel=4)
        notes.append(msg)
        return None, notes

    problem = _header_wcs_problem(header)
    if problem:
        return unusable(problem)
    # an unrelated unwritable card (control bytes, 1E999) must not cost the image its WCS; a WCS
    # keyword of that kind must (wcslib would silently use its default: a wrong sky position)
    clean, dropped = _sanitized(header)
    bad = [k for k in dropped if k.startswith(_WCS_PREFIXES) or k in _WCS_KEYS]
    if bad:
        return unusable(f"{', '.join(bad[:4])} not a valid FITS value")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(clean, naxis=2 if naxis >= 2 else naxis)
        if not wcs.has_celestial and not wcs.wcs.ctype[0]:
            return None, notes
        # evaluate once: a broken distortion or projection fails here, not later in a widget
        with np.errstate(all="ignore"):
            wcs.pixel_to_world_values(0.0, 0.0)
        if not wcs.has_celestial:
            return None, notes
    except Exception as exc:
        return unusable(_short(exc))
    why = usable_wcs(wcs, shape) if len(shape) >= 2 else None
    if why:
        return unusable(why)
    return wcs, notes


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


def provenance_cards(
    *,
    method: Optional[str] = None,
    parameters: Optional[dict[str, Any]] = None,
    checkpoint_hash: Optional[str] = None,
    inputs: Sequence[str] = (),
) -> list[tuple[str, Any, str]]:
    """Header cards recording what produced an output."""
    cards: list[tuple[str, Any, str]] = [("ASRVERS", __version__, "napari-astrosr version")]
    if method:
        cards.append(("ASRMETH", method, "astrosr method"))
    if checkpoint_hash:
        cards.append(("ASRMODEL", checkpoint_hash[:16], "model checkpoint sha256 (prefix)"))
    if parameters:
        cards.append(("ASRPARAM", json.dumps(parameters, sort_keys=True, default=str), "method parameters (JSON)"))
    for i, inp in enumerate(inputs[:99]):
        cards.append((f"ASRIN{i + 1}", _ascii(Path(inp).name), "input file"))
    return cards


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


def _ascii(text: str) -> str:
    """Printable ASCII (FITS headers hold nothing else): other characters escaped."""
    text = os.fsencode(text).decode("utf-8", "backslashreplace") if isinstance(text, str) else str(text)
    return "".join(
        c if 32 <= ord(c) < 127 else (f"\\x{ord(c):02x}" if ord(c) < 256 else f"\\u{ord(c):04x}") for c in text
    )


_KEYWORD = re.compile(r"[A-Z0-9_-]{0,8}")


def _card_ok(card: fits.Card) -> bool:
    """Whether astropy can write ``card`` back as a valid FITS card."""
    key = card.keyword
    if key == "CONTINUE":  # an orphan continuation (a valid one was merged when read)
        return False
    if not (_KEYWORD.fullmatch(key) or (len(key) > 8 and all(32 < ord(c) < 127 and c != "=" for c in key))):
        return False  # long keys are HIERARCH cards
    try:
        value = card.value
    except Exception:
        return False
    if isinstance(value, float) and not np.isfinite(value):
        return False
    if isinstance(value, complex) and not (np.isfinite(value.real) and np.isfinite(value.imag)):
        return False
    try:
        image = card.image
    except Exception:
        return False
    return all(32 <= b < 127 for b in image.encode("latin-1", "replace"))


def sanitize_header(hdr: fits.Header, *, where: str = "header") -> fits.Header:
    """A copy of ``hdr`` without the cards astropy read but cannot write back.

    Control or non-ASCII bytes, an orphan ``CONTINUE``, non-finite numbers (``1E999``, NaN
    SIP terms) are dropped -- COMMENT/HISTORY text is kept with the bad characters escaped --
    and one :class:`AstroSRWarning` lists the dropped keywords.
    Nothing of the image itself depends on these cards (the WCS was validated on reading).
    """
    out, dropped = _sanitized(hdr)
    if dropped:
        more = f" (+{len(dropped) - 8} more)" if len(dropped) > 8 else ""
        warnings.warn(
            f"{where}: dropped header card(s) that cannot be written back as valid FITS: "
            f"{', '.join(dropped[:8])}{more}",
            AstroSRWarning,
            stacklevel=3,
        )
    return out


def _sanitized(hdr: fits.Header) -> tuple[fits.Header, list[str]]:
    out = fits.Header()
    dropped: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for card in hdr.cards:
            key = card.keyword
            if key in ("COMMENT", "HISTORY", "") and not _card_ok(card):
                try:
                    out.append((key, _ascii(str(card.value))), end=True)
                    continue
                except Exception:
                    pass
            if not _card_ok(card):
                dropped.append(_ascii(key) or "(blank)")
                continue
            try:
                out.append(card, end=True)
            except Exception:
                dropped.append(_ascii(key) or "(blank)")
    return out, dropped


def _strip_wcs(hdr: fits.Header) -> None:
    """Remove WCS keywords so a new WCS replaces, not mixes with, the old one."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            old = WCS(hdr, naxis=2).to_header(relax=True)
        for key in old:
            hdr.remove(key, ignore_missing=True, remove_all=True)
    except Exception:
        pass
    for key in list(hdr.keys()):
        if key.startswith(_WCS_PREFIXES) or key in _WCS_KEYS:
            hdr.remove(key, ignore_missing=True, remove_all=True)


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

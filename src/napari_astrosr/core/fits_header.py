"""FITS header cards: the WCS checked once on reading, cards astropy cannot write back dropped, provenance.

:func:`usable_wcs` and ``_make_wcs`` decide whether a header's celestial WCS can place every pixel (an
unusable one falls back to pixel coordinates with a :class:`~napari_astrosr.exceptions.WCSWarning`);
:func:`sanitize_header` drops cards that are not valid FITS; :func:`provenance_cards` records what produced
an output; ``_strip_wcs`` clears a header's WCS before a new one is written. Moved from ``core.fits_io``
(which re-exports them). Headers only: no pixel values change here.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from .._version import __version__
from ..exceptions import AstroSRWarning, WCSWarning


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

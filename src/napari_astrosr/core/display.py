"""Display helpers: zscale limits and intensity stretches (pure functions; napari applies them).

Stretches are applied as *colormap curves*, never to the data: the viewer maps a pixel to
``t = (value - lo) / (hi - lo)`` clipped to [0, 1] (the contrast limits), then looks up the
colour at ``t``. A stretched grey colormap whose brightness at ``t`` is ``stretch(t)`` shows
the same picture as stretching the data, while hover values and measurements stay raw.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from astropy.visualization import ZScaleInterval

STRETCHES = ("linear", "sqrt", "log", "asinh")
"""Names accepted by :func:`stretch` and :func:`stretch_curve`."""

# Same defaults as astropy.visualization's LogStretch (a=1000) and AsinhStretch (a=0.1).
_LOG_A = 1000.0
_ASINH_A = 0.1


def zscale_limits(data: np.ndarray, *, contrast: float = 0.25, n_samples: int = 1000) -> tuple[float, float]:
    """IRAF zscale contrast limits of the finite pixels (astropy's ZScaleInterval).

    Parameters
    ----------
    data
        Image or stack of any shape; NaN/inf are ignored.
    contrast, n_samples
        Passed to :class:`astropy.visualization.ZScaleInterval`.

    Returns
    -------
    (lo, hi)
        Always finite with ``lo < hi`` (falls back to min/max, then to ``(v-0.5, v+0.5)``
        for a constant image and ``(0, 1)`` for an all-NaN one), so napari accepts them.
    """
    arr = np.asarray(data)
    finite = arr[np.isfinite(arr)]
    if finite.size == 0:
        return 0.0, 1.0
    try:
        lo, hi = ZScaleInterval(n_samples=n_samples, contrast=contrast).get_limits(finite)
        lo, hi = float(lo), float(hi)
    except Exception:  # astropy can fail on pathological inputs; min/max is a safe fallback
        lo, hi = float(finite.min()), float(finite.max())
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi <= lo:
        lo, hi = float(finite.min()), float(finite.max())
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    return lo, hi


def _funcs() -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    return {
        "linear": lambda t: t,
        "sqrt": np.sqrt,
        "log": lambda t: np.log1p(_LOG_A * t) / np.log1p(_LOG_A),
        "asinh": lambda t: np.arcsinh(t / _ASINH_A) / np.arcsinh(1.0 / _ASINH_A),
    }


def stretch(t: np.ndarray, name: str = "linear") -> np.ndarray:
    """Apply a named stretch to normalised values ``t`` in [0, 1] (clipped); returns [0, 1].

    Every stretch is monotonic with ``stretch(0) == 0`` and ``stretch(1) == 1``.
    """
    funcs = _funcs()
    if name not in funcs:
        raise ValueError(f"unknown stretch {name!r}; choose one of {', '.join(STRETCHES)}.")
    return funcs[name](np.clip(np.asarray(t, dtype=np.float64), 0.0, 1.0))


def stretch_curve(name: str = "linear", *, n: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Control points of a grey colormap implementing a stretch.

    Returns
    -------
    (controls, levels)
        ``controls``: ``n`` increasing positions in [0, 1] (0 and 1 included);
        ``levels``: grey level at each control, ``stretch(controls, name)``. Dense
        sampling keeps the piecewise-linear colormap within 1/n of the true curve
        (log and asinh rise steeply near 0, so controls are denser there).
    """
    if n < 2:
        raise ValueError("n must be >= 2")
    if name == "linear":
        controls = np.linspace(0.0, 1.0, n)
    else:
        # quadratic spacing: more control points near 0, where log/asinh/sqrt are steep
        controls = np.linspace(0.0, 1.0, n) ** 2
    return controls, stretch(controls, name)


def pixel_to_radec(wcs, x: float, y: float) -> tuple[float, float] | None:
    """RA, Dec (degrees) of 0-based pixel (x, y), or None without a usable celestial WCS."""
    if wcs is None:
        return None
    try:
        cel = wcs.celestial if wcs.naxis > 2 else wcs
        if not cel.has_celestial:
            return None
        ra, dec = cel.pixel_to_world_values(float(x), float(y))
        ra, dec = float(ra), float(dec)
    except Exception:  # a WCS that fails at this position: show nothing rather than crash a status bar
        return None
    if not (np.isfinite(ra) and np.isfinite(dec)):
        return None
    return ra % 360.0, dec


def format_radec(ra: float, dec: float) -> str:
    """'RA 03:34:21.34 Dec -30:23:37.1 (3.589, -30.394)': sexagesimal, then degrees."""
    h = (ra % 360.0) / 15.0
    hh = int(h)
    mm = int((h - hh) * 60)
    ss = ((h - hh) * 60 - mm) * 60
    if ss >= 59.995:  # carry so the string never shows 60.00 s
        ss, mm = 0.0, mm + 1
        if mm == 60:
            mm, hh = 0, (hh + 1) % 24
    sign = "-" if dec < 0 else "+"
    d = abs(dec)
    dd = int(d)
    dm = int((d - dd) * 60)
    ds = ((d - dd) * 60 - dm) * 60
    if ds >= 59.95:
        ds, dm = 0.0, dm + 1
        if dm == 60:
            dm, dd = 0, dd + 1
    return f"RA {hh:02d}:{mm:02d}:{ss:05.2f} Dec {sign}{dd:02d}:{dm:02d}:{ds:04.1f} ({ra:.5f}, {dec:+.5f})"

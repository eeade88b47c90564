"""FISR's flux guidance map: one unit-integral kernel per detected source, scaled by its flux.

Each source contributes a rotated 2-D Gaussian whose covariance is built from sep's
second moments (a, b, theta) — a and b are the rms along the major/minor axes, i.e. the
Gaussian sigmas — multiplied by |flux|. Kernels are truncated at ``nsigma`` sigmas and each
*discretised* kernel is normalised to sum to 1 over the pixels that fall inside the map,
so the map sums exactly to the total |flux| of the sources whose kernel touches the map
(flux of sources entirely outside it is dropped).

Vectorised: sources are grouped by stamp size; each group is one numpy broadcast, and all
stamps are accumulated with a single ``np.bincount`` (no Python loop over sources).
``benchmarks/fluxmap_speed.py`` measures thousands of sources on a 2048x2048 map.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Optional

import numpy as np

from ..exceptions import AstroSRError, NoSourcesWarning

__all__ = ["flux_map", "flux_map_from_image", "KERNELS"]

KERNELS = ("gaussian", "airy")

# First zero of J1; an Airy disk whose Gaussian approximation has sigma s has its first dark
# ring at about 2.9 s (sigma ~ 0.42 lambda/D, first zero at 1.22 lambda/D).
_J1_ZERO = 3.8317059702075125
_AIRY_DARK_RING_IN_SIGMA = 1.22 / 0.42


def _profile(q: np.ndarray, kernel: str) -> np.ndarray:
    """Kernel value as a function of q = squared Mahalanobis radius (in sigma units)."""
    if kernel == "gaussian":
        return np.exp(-0.5 * q)
    from scipy.special import j1

    z = np.sqrt(q) * (_J1_ZERO / _AIRY_DARK_RING_IN_SIGMA)
    with np.errstate(invalid="ignore", divide="ignore"):
        v = (2.0 * j1(z) / z) ** 2
    return np.where(z < 1e-8, 1.0, v)


def flux_map(
    shape: Sequence[int],
    sources,
    *,
    kernel: str = "gaussian",
    coord_scale: float = 1.0,
    nsigma: Optional[float] = None,
    min_sigma: float = 0.3,
    max_radius: int = 64,
    dtype=np.float32,
) -> np.ndarray:
    """Draw the flux guidance map of a source table.

    Parameters
    ----------
    shape : (ny, nx)
        Output map shape.
    sources : table
        Columns x, y (0-based), a, b (pixels), theta (radians), flux.
    kernel : {"gaussian", "airy"}
        Rotated elliptical Gaussian, or an Airy pattern with the same elliptical scaling
        (first dark ring at ~2.9 sigma).
    coord_scale : float
        Grid factor from the table's pixels to the map's (e.g. 2 to draw LR detections on
        an x2 HR grid). Pixel *centres* are mapped: x_map = (x + 0.5) * s - 0.5, and a, b
        are multiplied by s.
    nsigma : float, optional
        Truncation radius in sigmas (default 4 for Gaussian, 6 for Airy).
    min_sigma : float
        Floor on a, b in map pixels so unresolved sources still land on a few pixels.
    max_radius : int
        Cap on a stamp's half-size in map pixels (very extended detections).
    dtype : numpy dtype
        Output dtype.

    Returns
    -------
    ndarray
        Map of ``shape`` summing to the total |flux| of the sources that touch it.
    """
    if kernel not in KERNELS:
        raise AstroSRError(f"kernel: must be one of {KERNELS}, got {kernel!r}.")
    shape = tuple(int(s) for s in shape)
    if len(shape) != 2 or min(shape) < 1:
        raise AstroSRError(f"shape: expected (ny, nx) with positive sizes, got {shape}.")
    if not np.isfinite(coord_scale) or coord_scale <= 0:
        raise AstroSRError(f"coord_scale: must be positive, got {coord_scale}.")
    ny, nx = shape
    out = np.zeros(ny * nx, dtype=np.float64)
    if len(sources) == 0:
        return out.reshape(shape).astype(dtype)
    if nsigma is None:
        nsigma = 4.0 if kernel == "gaussian" else 6.0
    s = float(coord_scale)
    x = (np.asarray(sources["x"], np.float64) + 0.5) * s - 0.5
    y = (np.asarray(sources["y"], np.float64) + 0.5) * s - 0.5
    a = np.asarray(sources["a"], np.float64) * s
    b = np.asarray(sources["b"], np.float64) * s
    th = np.asarray(sources["theta"], np.float64)
    f = np.abs(np.asarray(sources["flux"], np.float64))
    ok = np.isfinite(x) & np.isfinite(y) & np.isfinite(f) & (f > 0)
    a = np.where(np.isfinite(a), a, min_sigma)
    b = np.where(np.isfinite(b), b, min_sigma)
    th = np.where(np.isfinite(th), th, 0.0)
    a, b = np.maximum(a, min_sigma), np.maximum(b, min_sigma)
    x, y, a, b, th, f = (v[ok] for v in (x, y, a, b, th, f))

    # Inverse covariance of a rotated Gaussian (SExtractor's CXX, CYY, CXY convention).
    c, sn = np.cos(th), np.sin(th)
    ia2, ib2 = 1.0 / a**2, 1.0 / b**2
    cxx = c**2 * ia2 + sn**2 * ib2
    cyy = sn**2 * ia2 + c**2 * ib2
    cxy = 2.0 * c * sn * (ia2 - ib2)
    half = np.clip(np.ceil(nsigma * np.maximum(a, b)).astype(int), 1, max_radius)
    xc, yc = np.round(x).astype(np.int64), np.round(y).astype(np.int64)

    idx_parts, w_parts = [], []
    for r in np.unique(half):
        sel = np.nonzero(half == r)[0]
        off = np.arange(-r, r + 1)
        gy, gx = np.meshgrid(off, off, indexing="ij")  # (k, k)
        px = xc[sel, None, None] + gx  # (n, k, k) pixel indices
        py = yc[sel, None, None] + gy
        dx = px - x[sel, None, None]
        dy = py - y[sel, None, None]
        q = cxx[sel, None, None] * dx**2 + cyy[sel, None, None] * dy**2 + cxy[sel, None, None] * dx * dy
        w = _profile(q, kernel)
        w[q > nsigma**2] = 0.0  # elliptical truncation
        inside = (px >= 0) & (px < nx) & (py >= 0) & (py < ny)
        w = np.where(inside, w, 0.0)
        norm = w.sum(axis=(1, 2))
        keep = norm > 0  # kernel touches the map
        w = w[keep] * (f[sel][keep] / norm[keep])[:, None, None]
        flat = np.clip(py[keep], 0, ny - 1) * nx + np.clip(px[keep], 0, nx - 1)
        idx_parts.append(flat.ravel())
        w_parts.append(w.ravel())
    if idx_parts:
        out = np.bincount(np.concatenate(idx_parts), weights=np.concatenate(w_parts), minlength=ny * nx)
    return out.reshape(shape).astype(dtype)


def flux_map_from_image(
    image: np.ndarray,
    *,
    thresh: float = 1.5,
    shape: Optional[Sequence[int]] = None,
    coord_scale: float = 1.0,
    kernel: str = "gaussian",
    minarea: int = 5,
    dtype=np.float32,
) -> np.ndarray:
    """Detect sources on ``image`` and draw their flux map.

    ``shape`` defaults to the image shape times ``coord_scale`` (rounded). An image with no
    detectable source gives an all-zero map (no warning: training calls this on many
    empty patches).
    """
    from .detection import detect_sources

    img = np.asarray(image)
    if shape is None:
        shape = tuple(int(round(n * coord_scale)) for n in img.shape[-2:])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoSourcesWarning)
        if not np.isfinite(img).any():
            return np.zeros(shape, dtype=dtype)
        sources = detect_sources(img, thresh=thresh, minarea=minarea)
    return flux_map(shape, sources, kernel=kernel, coord_scale=coord_scale, dtype=dtype)

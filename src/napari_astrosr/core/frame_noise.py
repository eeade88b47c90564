"""Per-frame noise maps and bad-pixel masks for a coadd.

Noise from an inverse-variance weight map, an rms map or sep's background (plus the sources'
Poisson term with a gain); masks from data-quality maps, saturation and outliers across the stack.
Part of the coadd input preparation (:mod:`.frames`); :mod:`.coadd` re-exports these names.
"""

from __future__ import annotations

import warnings
from typing import Optional

import numpy as np
from astropy.io import fits


def noise_from_weights(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Noise map from an inverse-variance weight map.

    Returns
    -------
    sigma, bad
        ``1/sqrt(w)`` (finite everywhere; 0-weight pixels get ``inf`` replaced by the
        largest finite sigma) and a mask of pixels with ``w <= 0`` or non-finite ``w``.
    """
    w = np.asarray(weight, dtype=np.float64)
    bad = ~np.isfinite(w) | (w <= 0)
    sigma = np.zeros_like(w)
    sigma[~bad] = 1.0 / np.sqrt(w[~bad])
    fill = sigma[~bad].max() if (~bad).any() else 1.0
    sigma[bad] = fill
    return sigma.astype(np.float32), bad


def noise_from_rms(rms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Noise map from an rms map; non-positive or non-finite rms pixels are masked."""
    r = np.asarray(rms, dtype=np.float64)
    bad = ~np.isfinite(r) | (r <= 0)
    sigma = r.copy()
    sigma[bad] = r[~bad].max() if (~bad).any() else 1.0
    return sigma.astype(np.float32), bad


def estimate_noise(
    image: np.ndarray, *, mask: Optional[np.ndarray] = None, gain: Optional[float] = None, box: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """Background level and noise map of one frame from sep's background model.

    ``sigma^2 = rms_bkg^2 + max(image - bkg, 0) / gain`` when ``gain`` (e-/ADU) is given:
    the sources' own Poisson noise matters for the sigma-scaled DIP loss on bright stars.

    Returns
    -------
    background, sigma
        Both (H, W) float32.
    """
    from .background import estimate_background

    img = np.asarray(image, dtype=np.float32)
    m = ~np.isfinite(img) if mask is None else (np.asarray(mask, bool) | ~np.isfinite(img))
    clean = np.where(m, 0.0, img).astype(np.float32)
    h, w = img.shape
    b = max(8, min(box, h // 2, w // 2))  # sep needs a few boxes per axis on tiny frames
    bkg = estimate_background(clean, mask=m, box=b, filter_size=3)
    back = np.asarray(bkg.back, dtype=np.float32)
    var = np.asarray(bkg.rms, dtype=np.float64) ** 2
    if gain is not None and gain > 0:
        var = var + np.clip(clean - back, 0, None) / float(gain)
    return back, np.sqrt(var).astype(np.float32)


def dq_mask(dq: np.ndarray) -> np.ndarray:
    """Bad pixels from a data-quality map: any nonzero bit."""
    return np.asarray(dq) != 0


def saturation_mask(
    image: np.ndarray,
    header: Optional[fits.Header] = None,
    *,
    keyword: str = "SATURATE",
    level: Optional[float] = None,
    grow: int = 1,
) -> np.ndarray:
    """Pixels at or above the saturation level (``level`` or the header ``keyword``), grown by ``grow`` px.

    Returns an all-False mask when neither is known. Note: on sky-subtracted frames the
    keyword's raw-ADU level is conservative (fewer pixels flagged).
    """
    img = np.asarray(image)
    if level is None and header is not None and keyword in header:
        try:
            level = float(header[keyword])
        except (TypeError, ValueError):
            level = None
    if level is None or not np.isfinite(level):
        return np.zeros(img.shape, bool)
    sat = np.isfinite(img) & (img >= level)
    if grow > 0 and sat.any():
        from scipy.ndimage import binary_dilation

        sat = binary_dilation(sat, iterations=int(grow))
    return sat


def outlier_mask(
    data: np.ndarray, sigma: np.ndarray, mask: np.ndarray, *, nsigma: float = 5.0, rel: float = 0.5
) -> np.ndarray:
    """Positive outliers across the stack (cosmic rays, satellite trails).

    A pixel is flagged when it exceeds the stack's per-pixel median by more than
    ``nsigma * sqrt(sigma^2 + (rel * |median|)^2)``: the relative term keeps star cores
    in the better-seeing frames (legitimately brighter than the median) unflagged.
    Needs at least 3 frames (returns no flags otherwise). The median ignores masked pixels.
    """
    d = np.asarray(data, dtype=np.float64)
    n = d.shape[0]
    if n < 3:
        return np.zeros(d.shape, bool)
    masked = np.where(mask, np.nan, d)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(masked, axis=0)
    med = np.where(np.isfinite(med), med, 0.0)
    tol = nsigma * np.sqrt(np.asarray(sigma, np.float64) ** 2 + (rel * np.abs(med)) ** 2)
    return (d - med > tol) & ~mask


def noise_map_check(
    data: np.ndarray,
    sigma: np.ndarray,
    mask: np.ndarray,
    *,
    smooth: float = 1.5,
    detect: float = 3.0,
    grow: int = 7,
    return_n: bool = False,
):
    """How well each frame's noise map describes its sky: robust std of normalised differences.

    For frame ``i`` and every sky pixel, ``z = (d_i - c_-i) / sqrt(sigma_i^2 + sigma_c^2)``
    where ``c_-i`` is the inverse-variance coadd of the other frames and ``sigma_c`` its
    propagated noise; the result is ``1.4826 * MAD(z)`` per frame: 1 when the maps are right,
    ``k`` when a frame's noise is ``k`` times its map (all frames off by the same ``k`` also
    gives ``k``). Sky pixels: outside a ``grow`` px dilation of where the ``smooth``-px
    Gaussian-smoothed ivar coadd of all frames exceeds ``detect`` times its noise (sources'
    residuals from different PSFs would inflate the MAD). Measured: 1.00-1.015 and 0.98-1.01
    on simulated stacks with exact maps, 0.97-1.00 on the sfft DECam stack (sep + GAIN),
    0.62-0.95 on the legacypipe tc3 cutouts (weight maps). NaN for a frame with fewer than
    100 usable pixels, and for every frame of a one-frame stack (no other frame to compare).
    With ``return_n`` also the number of sky pixels per frame (the estimate's own sd is about
    ``1.17 / sqrt(n)`` for Gaussian noise).
    """
    from scipy.ndimage import gaussian_filter, maximum_filter

    d = np.asarray(data, np.float64)
    s = np.asarray(sigma, np.float64)
    m = np.asarray(mask, bool) | ~np.isfinite(d) | ~(s > 0)
    n = d.shape[0]
    out = np.full(n, np.nan)
    counts = np.zeros(n, int)
    if n < 2:
        return (out, counts) if return_n else out
    w = np.where(m, 0.0, 1.0 / np.where(m, 1.0, s) ** 2)
    dz = np.where(m, 0.0, d)
    wsum = w.sum(axis=0)
    ssum = (w * dz).sum(axis=0)
    has = wsum > 0
    iv = np.where(has, ssum / np.where(has, wsum, 1.0), 0.0)
    siv2 = np.where(has, 1.0 / np.where(has, wsum, 1.0), 0.0)
    g = gaussian_filter(iv, smooth, mode="reflect")
    # noise of the smoothed coadd: the per-pixel variance through the Gaussian's sum of squares
    gs = np.sqrt(gaussian_filter(siv2, smooth, mode="reflect") / (4.0 * np.pi * smooth**2))
    src = maximum_filter(np.abs(g) > detect * gs, size=int(grow))
    for i in range(n):
        wo = wsum - w[i]
        ok = ~m[i] & (wo > 0) & ~src
        counts[i] = int(ok.sum())
        if counts[i] < 100:
            continue
        c = (ssum - w[i] * dz[i])[ok] / wo[ok]
        z = (d[i][ok] - c) / np.sqrt(s[i][ok] ** 2 + 1.0 / wo[ok])
        z = z - np.median(z)  # (sky levels may differ between frames; only the scatter counts)
        out[i] = 1.4826 * float(np.median(np.abs(z)))
    return (out, counts) if return_n else out

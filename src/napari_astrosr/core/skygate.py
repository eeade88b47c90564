"""Keep the data's sky: let a network change an image only where the input shows signal.

Why (measured, docs/results_keep_sky.md, ``benchmarks/sky_statistics.py``): the bundled networks conserve
the *mean* of the sky but change its *distribution*. On the noisy held-out COSMOS crop of the quality
benchmark the sky's skewness goes from +0.10 (reference) to +1.05 (Restormer) and +1.71 (FISR): noise is
turned into faint peaks over a lower floor. The mean is right, but SExtractor/sep backgrounds are mode
estimates, so the background measured on the restored image drops (0.10 of the sky rms below the
reference's) and the bright galaxies' aperture fluxes rise with it (+3.4%; within 0.5% with the reference's
background). The global noise-aware projection cannot see this: per frequency band it is below the noise.

The gate keeps the flux-conserving upsampling of the input (``base``) where the input is at
sky level and the network where it shows a source: ``out = base + g * (restored - base)`` with
``g`` rising linearly from 0 at ``low`` to 1 at ``high`` sigma of the input's local S/N.

Flux: every output pixel is a convex blend of two images, so a pixel gated to the sky
(``g = 0``) carries exactly the base's flux, which is the input's flux redistributed within its
own pixel (``core.resample.upsample``); sources above ``high`` keep the network's. A following
``--flux-exact`` / ``--flux-noise`` projection is unchanged and restores the input's total.

Why hand-written: a per-pixel S/N ramp between two images is a few lines over sep's background
(:func:`..detection.estimate_background`); no library offers it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional, Union

import numpy as np

from ..exceptions import AstroSRError

__all__ = ["DEFAULT_LEVELS", "parse_keep_sky", "sky_base", "sky_gate", "sky_rms"]

#: Input S/N (sigma) where the network starts to act and where it fully takes over.
DEFAULT_LEVELS = (2.0, 5.0)


def parse_keep_sky(keep_sky: Union[None, bool, str, Sequence[float]]) -> Optional[tuple[float, float]]:
    """``(low, high)`` sigma levels from the ``keep_sky`` option, or None when it is off.

    Accepts False/None (off), True (:data:`DEFAULT_LEVELS`), ``"LOW,HIGH"`` or a pair of numbers.
    """
    if keep_sky is None or keep_sky is False:
        return None
    if keep_sky is True:
        return DEFAULT_LEVELS
    vals = keep_sky
    if isinstance(keep_sky, str):
        text = keep_sky.strip().lower()
        if text in ("", "default", "on", "true", "yes"):
            return DEFAULT_LEVELS
        try:
            vals = [float(v) for v in text.split(",")]
        except ValueError:
            vals = None
    try:
        low, high = (float(v) for v in vals)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise AstroSRError(
            f"--keep-sky {keep_sky!r}: give two sigma levels LOW,HIGH (e.g. 2,5) or nothing for the default 2,5."
        ) from None
    if not (np.isfinite(low) and np.isfinite(high) and 0 <= low < high):
        raise AstroSRError(f"--keep-sky {keep_sky!r}: need 0 <= LOW < HIGH (sigma of the input's S/N), e.g. 2,5.")
    return low, high


def sky_base(image: np.ndarray, scale: int) -> np.ndarray:
    """The gate's ``base``: the flux-conserving bicubic upsampling of ``image`` (the image itself at scale 1)."""
    from .resample import upsample

    return upsample(image, int(scale), method="bicubic") if int(scale) > 1 else np.asarray(image)


def sky_rms(base: np.ndarray) -> float:
    """The per-pixel noise rms the gate measures S/N against: sep's global background rms of ``base``
    (non-finite pixels masked).
    """
    from .background import estimate_background

    b = np.asarray(base, dtype=np.float64)
    return float(estimate_background(np.where(np.isfinite(b), b, np.nan)).globalrms)


def sky_gate(
    restored: np.ndarray,
    base: np.ndarray,
    *,
    low: float = DEFAULT_LEVELS[0],
    high: float = DEFAULT_LEVELS[1],
    smooth: float = 1.0,
    rms: Optional[float] = None,
) -> tuple[np.ndarray, dict]:
    """Blend ``restored`` back to ``base`` where ``base`` is at sky level.

    Parameters
    ----------
    restored
        The network's output, on ``base``'s grid.
    base
        The flux-conserving upsampling of the input (the network's own starting point).
    low, high
        Sigma levels of the gate: below ``low`` the output is ``base``, above ``high`` it is
        ``restored``, linear in between.
    smooth
        Gaussian sigma (output pixels) applied to ``base`` before the S/N is measured, so the
        gate follows sources rather than single noisy pixels. As in SExtractor's filtered
        detection, the smoothed image is compared with the *unsmoothed* background rms.
    rms
        Per-pixel noise rms of ``base``; default: sep's global background rms of it (give a number
        to gate the tiles of one image consistently).

    Returns
    -------
    out, info
        ``out`` has NaN where either input is NaN. ``info``: ``low``, ``high``, ``rms``,
        ``network_fraction`` (mean gate over valid pixels) and ``sky_fraction`` (pixels at 0).
    """
    from scipy.ndimage import gaussian_filter

    from .background import background_level

    r = np.asarray(restored)
    b = np.asarray(base)
    if r.shape != b.shape or r.ndim != 2:
        raise AstroSRError(f"sky gate: restored {r.shape} and base {b.shape} must be the same 2-D shape.")
    if not (0 <= low < high):
        raise AstroSRError(f"sky gate: need 0 <= low < high, got {low}, {high}.")
    valid = np.isfinite(r) & np.isfinite(b)
    if not valid.any():
        raise AstroSRError("sky gate: no finite pixel in the image.")
    all_valid = bool(valid.all())
    # sep sees the base in its own precision (float32 and float64 give the same background) and only the
    # background map and the global rms are made; the arithmetic below is float64, in place (an output-size
    # image is 16.8 Mpix at a 2048^2 x2 restore: each extra pass or copy costs ~0.1 s)
    back, globalrms = background_level(b if all_valid else np.where(valid, b, np.nan))
    x = b.astype(np.float64) if all_valid else np.where(valid, b, back)
    sm = gaussian_filter(x, smooth) if smooth > 0 else x
    sigma = float(globalrms) if rms is None else float(rms)  # globalrms is sky_rms(base)
    if not np.isfinite(sigma) or sigma < 0:
        raise AstroSRError(f"sky gate: noise rms {sigma!r} must be a finite number >= 0.")
    g = np.subtract(sm, back, out=sm if sm is not x else None)
    if sigma == 0:  # a noiseless input: everything above the background is signal
        g = (g > 0).astype(np.float64)
    else:
        g /= sigma
        g -= low
        g /= high - low
        np.clip(g, 0.0, 1.0, out=g)
    out = np.subtract(r, b, dtype=np.float64)
    out *= g
    out += b
    if not all_valid:
        out[~valid] = np.nan
    info = {
        "low": float(low),
        "high": float(high),
        "rms": sigma,
        "network_fraction": float(g[valid].mean()),
        "sky_fraction": float((g[valid] == 0).mean()),
    }
    return out, info

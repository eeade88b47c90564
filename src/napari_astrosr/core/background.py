"""The sky background with sep, and the array form sep accepts.

Below :mod:`.detection` and :mod:`.photometry` (both use it), so neither imports the other
for it. :mod:`.detection` re-exports these names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..exceptions import AstroSRError

__all__ = ["Background", "as_sep_array", "estimate_background"]


@dataclass
class Background:
    """A sep background model.

    Attributes
    ----------
    back, rms : ndarray
        Smooth background level and its rms, same shape as the image.
    globalback, globalrms : float
        Global (median of the mesh) background level and rms.
    """

    back: np.ndarray
    rms: np.ndarray
    globalrms: float
    globalback: float = 0.0


def as_sep_array(image: np.ndarray, *, name: str = "image") -> np.ndarray:
    """Return a 2-D, native byte order, C-contiguous float array (sep refuses FITS big-endian data).

    Float32/float64 input keeps its precision; anything else becomes float64.
    """
    arr = np.asarray(image)
    if arr.ndim != 2:
        raise AstroSRError(f"{name}: expected a 2-D image, got shape {arr.shape}; pick one plane or HDU.")
    if arr.size == 0:
        raise AstroSRError(f"{name}: the image is empty (shape {arr.shape}).")
    dtype = arr.dtype if arr.dtype in (np.float32, np.float64) else np.float64
    dtype = np.dtype(dtype).newbyteorder("=")
    return np.ascontiguousarray(arr, dtype=dtype)


def _combined_mask(data: np.ndarray, mask: Optional[np.ndarray]) -> np.ndarray:
    bad = ~np.isfinite(data)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != data.shape:
            raise AstroSRError(f"mask: shape {mask.shape} differs from the image's {data.shape}.")
        bad = bad | mask
    return bad


def _filled(data: np.ndarray, bad: np.ndarray, value: float = 0.0) -> np.ndarray:
    if bad.any():
        data = data.copy()
        data[bad] = value
    return data


def _sep_background(image: np.ndarray, mask: Optional[np.ndarray], *, box: int, filter_size: int):
    """Sep's mesh background of ``image`` (bad pixels masked; mesh clipped to the image so small stamps work)."""
    data = as_sep_array(image)
    bad = _combined_mask(data, mask)
    if bad.all():
        raise AstroSRError("image: every pixel is masked or non-finite; nothing to estimate a background from.")
    import sep

    bw = int(max(1, min(box, data.shape[1])))
    bh = int(max(1, min(box, data.shape[0])))
    fs = int(max(1, filter_size))
    return sep.Background(_filled(data, bad), mask=bad, bw=bw, bh=bh, fw=fs, fh=fs)


def estimate_background(
    image: np.ndarray,
    *,
    mask: Optional[np.ndarray] = None,
    box: int = 64,
    filter_size: int = 3,
) -> Background:
    """Estimate the sky background and its rms with sep (SExtractor's mesh + median filter).

    Parameters
    ----------
    image : ndarray
        2-D image; non-finite pixels are masked.
    mask : ndarray of bool, optional
        True where pixels must be ignored.
    box : int
        Mesh size in pixels (clipped to the image size so small stamps work).
    filter_size : int
        Median filter size in meshes.

    Returns
    -------
    Background
    """
    bkg = _sep_background(image, mask, box=box, filter_size=filter_size)
    back = np.asarray(bkg.back(), dtype=np.float64)
    rms = np.asarray(bkg.rms(), dtype=np.float64)
    return Background(back=back, rms=rms, globalrms=float(bkg.globalrms), globalback=float(bkg.globalback))


def background_level(image: np.ndarray, *, box: int = 64, filter_size: int = 3) -> tuple[np.ndarray, float]:
    """The background map (float64) and global rms of :func:`estimate_background` (same mesh, same values)
    without the rms map, for callers that need only these (the sky gate, on output-size images).
    """
    bkg = _sep_background(image, None, box=box, filter_size=filter_size)
    return np.asarray(bkg.back(), dtype=np.float64), float(bkg.globalrms)

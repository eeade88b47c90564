"""Classical coadds of a :class:`~.frames.FrameStack` (inverse-variance mean, median) and their result.

Both keep the input's flux scale: a weighted mean of frames in the same units gives the same
per-source flux as any one frame. :class:`CoaddResult` is shared with the DIP coadd
(:mod:`napari_astrosr.models.dip_coadd`). :mod:`.coadd` re-exports these names.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from ..exceptions import AstroSRError, AstroSRWarning
from .frame_psf import homogenize_psfs
from .frames import FrameStack, as_stack


@dataclass
class CoaddResult:
    """A coadded image and what was learned on the way.

    Attributes
    ----------
    data
        The coadd (2-D; for ``superres=2`` DIP coadds, twice the frame size).
    wcs
        WCS of ``data``'s grid (the first frame's, scaled for super-resolved output).
    header
        Header to write with ``data`` (provenance cards are added by the writer).
    uncertainty
        Per-pixel 1-sigma uncertainty (ivar: propagated; median: 1.2533 x sigma / sqrt(n);
        DIP: std across an ensemble of seeds, when asked for).
    residuals
        (N, H, W) per-frame residuals ``frame - model`` (DIP) or ``frame - coadd`` (classical).
    metrics
        Scalar figures (sharpness, sky sigma, flux ratios, loss, steps, ...).
    method
        ``"ivar"``, ``"median"`` or ``"dip"``.
    params
        Parameters that produced it (go into the provenance header).
    sky
        Per-frame fitted sky offsets (DIP with ``sky="fit"``), in image units.
    psfs
        The PSFs used (learned ones in blind mode).
    """

    data: np.ndarray
    wcs: Optional[WCS] = None
    header: Optional[fits.Header] = None
    uncertainty: Optional[np.ndarray] = None
    residuals: Optional[np.ndarray] = None
    metrics: dict[str, Any] = field(default_factory=dict)
    method: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    sky: Optional[np.ndarray] = None
    psfs: Optional[list[np.ndarray]] = None


def ivar_coadd(
    frames: Union[np.ndarray, Sequence[np.ndarray], FrameStack],
    *,
    weights: Optional[np.ndarray] = None,
    masks: Optional[np.ndarray] = None,
    psfs: Optional[Sequence[np.ndarray]] = None,
    homogenize: bool = False,
    wcs: Optional[WCS] = None,
    header: Optional[fits.Header] = None,
) -> CoaddResult:
    """Inverse-variance weighted mean of registered frames.

    Parameters
    ----------
    frames
        (N, H, W) stack, list of frames or a :class:`FrameStack` (its sigma/mask/PSFs are used).
    weights
        Inverse-variance weights (N, H, W) or per-frame (N,). Default: ``1/sigma^2`` of the
        stack (estimated with sep for bare arrays).
    masks
        True = bad; those pixels get zero weight. Pixels masked in every frame are NaN.
    psfs, homogenize
        With ``homogenize=True`` every frame is first convolved to the worst PSF
        (:func:`homogenize_psfs`); the coadd then has that single PSF.

    Returns
    -------
    CoaddResult
        ``data`` = sum(w x) / sum(w); ``uncertainty`` = 1/sqrt(sum w) (for PSF-homogenised
        input this ignores the noise correlation the matching kernels introduce).
        Flux: a weighted mean of frames in the same units, so per-source flux equals the
        frames' (weighted) mean flux.
    """
    stack = (
        frames
        if isinstance(frames, FrameStack)
        else as_stack(
            frames, masks=masks, psfs=psfs, sigmas=None if weights is None else _sigma_from_weights(weights, frames)
        )
    )
    if isinstance(frames, FrameStack) and masks is not None:
        stack = FrameStack(**{**stack.__dict__, "mask": stack.mask | np.asarray(masks, bool)})
    data = stack.data
    if homogenize:
        if stack.psfs is None and psfs is None:
            raise AstroSRError("homogenize=True needs one PSF per frame (psfs=...).")
        data, target = homogenize_psfs(data, stack.psfs if stack.psfs is not None else psfs)
    w = 1.0 / stack.sigma.astype(np.float64) ** 2
    w = np.where(stack.mask, 0.0, w)
    if homogenize:
        # a masked pixel spreads into its neighbours through the matching kernel
        from scipy.ndimage import binary_dilation

        grown = np.stack([binary_dilation(m, iterations=2) if m.any() else m for m in stack.mask])
        w = np.where(grown, 0.0, w)
    wsum = w.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (w * data).sum(axis=0) / wsum
        unc = 1.0 / np.sqrt(wsum)
    out = np.where(wsum > 0, out, np.nan).astype(np.float32)
    unc = np.where(wsum > 0, unc, np.nan).astype(np.float32)
    resid = np.where(stack.mask, 0.0, data - np.nan_to_num(out)[None]).astype(np.float32)
    return CoaddResult(
        data=out,
        wcs=wcs if wcs is not None else stack.wcs,
        header=header if header is not None else stack.header,
        uncertainty=unc,
        residuals=resid,
        method="ivar",
        params={"homogenize": bool(homogenize), "n_frames": stack.n},
        metrics={"coverage": float((wsum > 0).mean())},
        psfs=stack.psfs,
    )


def _sigma_from_weights(weights, frames) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    with np.errstate(divide="ignore"):
        s = np.where(w > 0, 1.0 / np.sqrt(np.where(w > 0, w, 1.0)), np.inf)
    return s.astype(np.float32)


def median_coadd(
    frames: Union[np.ndarray, Sequence[np.ndarray], FrameStack],
    *,
    masks: Optional[np.ndarray] = None,
    sigma_clip: Optional[float] = 3.0,
    wcs: Optional[WCS] = None,
    header: Optional[fits.Header] = None,
) -> CoaddResult:
    """Per-pixel median of the frames after iterative sigma clipping (astropy.stats.sigma_clip).

    Robust to outliers the masks missed, but the median of PSF-varying frames is not
    flux-conserving for sources (star cores are biased toward the median seeing) and is
    noisier than the weighted mean (x1.25 for Gaussian noise). ``uncertainty`` is
    1.2533 x (per-pixel sigma of the mean of the unclipped frames).
    """
    from astropy.stats import sigma_clip as _sigma_clip

    stack = frames if isinstance(frames, FrameStack) else as_stack(frames, masks=masks, sigmas=np.ones(len(frames)))
    mask = stack.mask if masks is None or not isinstance(frames, FrameStack) else stack.mask | np.asarray(masks, bool)
    ma = np.ma.masked_array(stack.data, mask=mask)
    if sigma_clip:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ma = _sigma_clip(ma, sigma=float(sigma_clip), maxiters=5, axis=0, masked=True)
    med = np.ma.median(ma, axis=0)
    n_used = (~np.ma.getmaskarray(ma)).sum(axis=0)
    out = np.ma.filled(med.astype(np.float32), np.nan)
    sig = np.ma.masked_array(stack.sigma, mask=np.ma.getmaskarray(ma))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_var = (sig.astype(np.float64) ** 2).sum(axis=0) / np.maximum(n_used, 1) ** 2
        unc = 1.2533 * np.sqrt(np.ma.filled(mean_var, np.nan))
    unc = np.where(n_used > 0, unc, np.nan).astype(np.float32)
    out = np.where(n_used > 0, out, np.nan).astype(np.float32)
    resid = np.where(stack.mask, 0.0, stack.data - np.nan_to_num(out)[None]).astype(np.float32)
    return CoaddResult(
        data=out,
        wcs=wcs if wcs is not None else stack.wcs,
        header=header if header is not None else stack.header,
        uncertainty=unc,
        residuals=resid,
        method="median",
        params={"sigma_clip": sigma_clip, "n_frames": stack.n},
        metrics={"coverage": float((n_used > 0).mean())},
    )


def coadd_header(
    header: Optional[fits.Header], *, method: str, n_frames: int, extra: Optional[dict] = None
) -> fits.Header:
    """A header for a coadd: the first frame's minus per-exposure keys, plus NCOMBINE/COADDMET."""
    hdr = fits.Header() if header is None else header.copy()
    for key in ("SATURATE", "FWHM", "ELLIPTIC", "AVSKY", "AVSIG", "SKYDIP", "SKYPEAK", "ESATUR", "CHECKSUM", "DATASUM"):
        hdr.remove(key, ignore_missing=True, remove_all=True)
    hdr["NCOMBINE"] = (int(n_frames), "number of frames coadded")
    hdr["COADDMET"] = (method, "coadd method (astrosr)")
    for k, v in (extra or {}).items():
        hdr[k] = v
    return hdr


def warn(msg: str) -> None:
    """Warn with the package's warning class (shown once per message)."""
    warnings.warn(msg, AstroSRWarning, stacklevel=3)

"""Multi-frame coaddition: input preparation and classical coadds (no torch).

Input preparation turns a stack of registered exposures into what every coadd needs,
per frame: the data (background-subtracted on request), a noise map ``sigma``, a bad-pixel
``mask`` (True = bad) and a PSF (odd, unit sum, centred):

- noise from an inverse-variance/weight map (``sigma = 1/sqrt(w)``; ``w <= 0`` is masked),
  from an rms map, or estimated with sep's background rms (plus the sources' Poisson
  term when a gain is known);
- masks from data-quality maps (nonzero = bad), NaN/inf, saturation (``SATURATE``
  header keyword) and, optionally, sigma-clipped outliers across the stack;
- PSFs from a FITS image / spec (:func:`napari_astrosr.core.psf.parse_psf`), from a
  PSFEx model (:func:`read_psfex`), from a FWHM header keyword (:func:`psf_from_fwhm`),
  or estimated from the frame's stars (:func:`estimate_psf`, photutils ``EPSFBuilder``).

Frames on different pixel grids are reprojected onto the first frame's WCS with the
flux-conserving :func:`napari_astrosr.core.resample.reproject_flux`; frames without a
WCS must already share the grid (clear error otherwise).

Classical coadds (:func:`ivar_coadd`, :func:`median_coadd`) keep the input's flux scale:
a weighted *mean* of frames in the same units gives the same per-source flux as any one
frame (the per-frame fluxes are averaged, not summed), so photometry on the coadd is
directly comparable with photometry on the exposures. PSF homogenisation
(``homogenize=True``) convolves each frame with a unit-sum matching kernel to the worst
(widest) PSF, which conserves every frame's total and per-source flux (in apertures large
enough for the broader PSF) and gives a coadd with one well-defined PSF.

The deep-image-prior coadd (AstroClearNet) lives in :mod:`napari_astrosr.models.dip_coadd`
because it needs torch; it returns the same :class:`CoaddResult`.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from ..exceptions import AstroSRError, AstroSRWarning
from .psf_estimate import estimate_psf  # noqa: F401  (moved there; re-exported for coadd users)

PathLike = Union[str, os.PathLike]
FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))


# --------------------------------------------------------------------------- results


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


@dataclass
class FrameStack:
    """A validated stack of registered exposures on one pixel grid.

    ``data``, ``sigma`` and ``mask`` are (N, H, W); ``mask`` is True where a pixel must not
    be used; masked pixels of ``data`` are finite (0) so downstream code never sees NaN.
    """

    data: np.ndarray
    sigma: np.ndarray
    mask: np.ndarray
    psfs: Optional[list[np.ndarray]] = None
    wcs: Optional[WCS] = None
    header: Optional[fits.Header] = None
    names: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    background: Optional[np.ndarray] = None
    notes: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return int(self.data.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.data.shape[1]), int(self.data.shape[2]))


# --------------------------------------------------------------------------- noise and masks


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
    image: np.ndarray, header: Optional[fits.Header] = None, *, keyword: str = "SATURATE",
    level: Optional[float] = None, grow: int = 1,
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


# --------------------------------------------------------------------------- PSFs


def _odd_unit(psf: np.ndarray, where: str) -> np.ndarray:
    p = np.asarray(psf, dtype=np.float64)
    if p.ndim != 2:
        raise AstroSRError(f"{where}: a PSF must be a 2-D image, got shape {p.shape}.")
    if p.shape[0] % 2 == 0 or p.shape[1] % 2 == 0:
        raise AstroSRError(f"{where}: PSF shape {p.shape} is even; give an odd-sized, centred PSF image.")
    if not np.all(np.isfinite(p)):
        raise AstroSRError(f"{where}: PSF has NaN/inf pixels.")
    s = p.sum()
    if not s > 0:
        raise AstroSRError(f"{where}: PSF sums to {s:g}; it must have positive total flux.")
    return p / s


def read_psfex(
    path: PathLike, *, x: Optional[float] = None, y: Optional[float] = None,
    shape: Optional[tuple[int, int]] = None, size: Optional[int] = None, hdu: int = 1,
) -> np.ndarray:
    """Evaluate a PSFEx model (``PSF_MASK`` table) at one image position.

    Written here because no maintained pure-python PSFEx reader is available in this
    environment (``psfex``/``galsim`` are not dependencies; tractor's reader is not on PyPI).
    The model is ``PSF(x, y) = sum_k c_k(x, y) * PSF_MASK[k]`` with the PSFEx polynomial
    basis: ``u = (X - POLZERO1)/POLSCAL1``, ``v = (Y - POLZERO2)/POLSCAL2`` in 1-based image
    coordinates of the context (``X_IMAGE``, ``Y_IMAGE``), terms ``u^i v^j`` ordered with
    ``j`` (the second variable) outer and ``i`` inner, ``i + j <= POLDEG1``. The components are
    sampled every ``PSF_SAMP`` image pixels; the result is resampled to image pixels
    (:func:`napari_astrosr.core.psf.resample_psf`), cropped to odd ``size`` and normalised
    to unit sum.

    Parameters
    ----------
    path
        PSFEx ``.psf`` file or legacypipe merged ``-psfex.fits`` (header keywords or
        lower-case table columns are both understood).
    x, y
        0-based image position; default the frame centre (needs ``shape``) or, without it,
        the polynomial origin.
    shape
        (H, W) of the frame, for the default position.
    size
        Odd output size in image pixels (default: the full model, resampled).
    """
    p = Path(path)
    try:
        with fits.open(p) as hdul:
            tab = hdul[hdu]
            hdr = tab.header
            data = tab.data
            names = {n.lower(): n for n in data.columns.names}

            def get(key: str, default=None):
                if key.upper() in hdr:
                    return hdr[key.upper()]
                if key.lower() in names:
                    v = data[names[key.lower()]][0]
                    return v.strip() if isinstance(v, str) else v
                return default

            if "psf_mask" not in names:
                raise AstroSRError(f"{p}: HDU {hdu} has no PSF_MASK column; not a PSFEx model.")
            comps = np.asarray(data[names["psf_mask"]][0], dtype=np.float64)
            npol = int(get("POLNAXIS", 0) or 0)
            deg = int(get("POLDEG1", 0) or 0)
            samp = float(get("PSF_SAMP", 1.0) or 1.0)
            zero = [float(get(f"POLZERO{i}", 0.0)) for i in (1, 2)]
            scal = [float(get(f"POLSCAL{i}", 1.0)) for i in (1, 2)]
            ngrp = int(get("POLNGRP", 1) or 1)
    except AstroSRError:
        raise
    except (OSError, IndexError, KeyError, TypeError, ValueError) as exc:
        raise AstroSRError(f"{p}: not a readable PSFEx model ({str(exc).splitlines()[0][:120]}).") from exc
    if comps.ndim == 2:
        comps = comps[None]
    if npol not in (0, 2) or ngrp > 1:
        raise AstroSRError(f"{p}: PSFEx model with POLNAXIS={npol}, POLNGRP={ngrp} is not supported (only x/y polynomials).")
    if npol == 0:
        deg = 0
    nterm = (deg + 1) * (deg + 2) // 2
    if comps.shape[0] != nterm:
        raise AstroSRError(f"{p}: PSF_MASK has {comps.shape[0]} components, expected {nterm} for degree {deg}.")
    if x is None or y is None:
        if shape is not None:
            x = (shape[1] - 1) / 2.0 if x is None else x
            y = (shape[0] - 1) / 2.0 if y is None else y
        else:
            x = zero[0] - 1.0 if x is None else x
            y = zero[1] - 1.0 if y is None else y
    u = ((float(x) + 1.0) - zero[0]) / scal[0]
    v = ((float(y) + 1.0) - zero[1]) / scal[1]
    coeffs = [u**i * v**j for j in range(deg + 1) for i in range(deg + 1 - j)]
    psf = np.tensordot(np.asarray(coeffs), comps, axes=1)
    if abs(samp - 1.0) > 1e-6:
        from .psf import resample_psf

        # PSF pixels are `samp` image pixels wide: going to image pixels changes the
        # sampling by 1/samp (factor > 1 = finer, so factor = samp)
        psf = resample_psf(psf, samp)
    psf = np.clip(psf, 0, None)  # PSFEx components can ring slightly negative in the wings
    if psf.shape[0] % 2 == 0:
        psf = psf[:-1, :]
    if psf.shape[1] % 2 == 0:
        psf = psf[:, :-1]
    if size is not None:
        psf = crop_psf(psf, size)
    return _odd_unit(psf, str(p))


def crop_psf(psf: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop (or zero-pad) a PSF to an odd ``size`` x ``size``; not renormalised."""
    if size < 1 or size % 2 == 0:
        raise AstroSRError(f"PSF size {size}: must be a positive odd number.")
    p = np.asarray(psf)
    out = np.zeros((size, size), p.dtype)
    cy, cx = p.shape[0] // 2, p.shape[1] // 2
    h = size // 2
    ys, ye = max(0, cy - h), min(p.shape[0], cy + h + 1)
    xs, xe = max(0, cx - h), min(p.shape[1], cx + h + 1)
    oy, ox = h - (cy - ys), h - (cx - xs)
    out[oy:oy + ye - ys, ox:ox + xe - xs] = p[ys:ye, xs:xe]
    return out


def psf_size_for(fwhm: float) -> int:
    """Odd PSF stamp size holding a Gaussian of this FWHM to ~1e-6: about 4 FWHM."""
    n = int(np.ceil(4.0 * fwhm)) | 1
    return max(n, 5)


def psf_from_fwhm(
    header: fits.Header, *, keyword: str = "FWHM", size: Optional[int] = None, where: str = "frame",
) -> np.ndarray:
    """Gaussian PSF whose FWHM (in pixels) is the header's ``keyword`` value."""
    from .psf import gaussian_psf

    if keyword not in header:
        raise AstroSRError(f"{where}: header has no {keyword} keyword; give --psf or another --psf-from-fwhm keyword.")
    try:
        fwhm = float(header[keyword])
    except (TypeError, ValueError) as exc:
        raise AstroSRError(f"{where}: header {keyword}={header[keyword]!r} is not a number.") from exc
    if not (np.isfinite(fwhm) and 0.5 <= fwhm <= 200):
        raise AstroSRError(f"{where}: header {keyword}={fwhm} px is not a plausible FWHM (0.5-200 px).")
    return _odd_unit(gaussian_psf(fwhm * FWHM_TO_SIGMA, size=size or psf_size_for(fwhm)), where)


def common_psf_size(psfs: Sequence[np.ndarray]) -> int:
    """Largest odd size among the PSFs."""
    return int(max(max(p.shape) for p in psfs)) | 1


def homogenize_psfs(
    data: np.ndarray, psfs: Sequence[np.ndarray], *, target: Optional[np.ndarray] = None,
    regularization: float = 1e-4,
) -> tuple[np.ndarray, np.ndarray]:
    """Convolve each frame to a common (the worst) PSF.

    The matching kernel of each frame is photutils' Wiener-regularised
    ``make_wiener_kernel(psf_i, target)`` (unit sum, so every frame keeps its flux);
    the target defaults to the PSF with the largest FWHM (its own kernel is a delta).

    Returns
    -------
    matched, target
        (N, H, W) PSF-matched frames and the target PSF.
    """
    from photutils.psf_matching import make_wiener_kernel

    from .psf import convolve, measure_fwhm

    size = common_psf_size(psfs)
    padded = [crop_psf(np.asarray(p, np.float64) / np.sum(p), size) for p in psfs]
    if target is None:
        fwhms = [measure_fwhm(p) for p in padded]
        worst = int(np.argmax(fwhms))
        target = padded[worst]
    else:
        worst = -1
        target = crop_psf(_odd_unit(target, "target PSF"), max(size, max(np.shape(target)) | 1))
        padded = [crop_psf(p, target.shape[0]) for p in padded]
    out = np.empty(np.shape(data), np.float32)
    for i, (frame, p) in enumerate(zip(data, padded)):
        if i == worst:
            out[i] = frame
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            k = make_wiener_kernel(p, target, regularization=regularization)
        k = np.asarray(k, np.float64)
        k /= k.sum()
        out[i] = convolve(np.asarray(frame, np.float32), k)
    return out, target


# --------------------------------------------------------------------------- stack validation


def as_stack(
    frames: Union[np.ndarray, Sequence[np.ndarray]], *, sigmas=None, masks=None, psfs=None,
    require_psfs: bool = False, min_frames: int = 2,
) -> FrameStack:
    """Validate in-memory inputs into a :class:`FrameStack` (the boundary of every coadd).

    Parameters
    ----------
    frames
        (N, H, W) array or a sequence of N (H, W) arrays, registered on one grid.
    sigmas
        (N, H, W) noise maps, (N,) per-frame scalars or None (estimated with sep).
    masks
        (N, H, W) bool, True = bad; NaN/inf pixels of ``frames`` are always masked.
    psfs
        N PSF images (odd, positive sum; normalised here), one PSF for all, or None.
    """
    if isinstance(frames, np.ndarray):
        arr = frames
    else:
        shapes = [np.shape(f) for f in frames]
        if len(set(shapes)) > 1:
            first = shapes[0]
            bad = next(i for i, s in enumerate(shapes) if s != first)
            raise AstroSRError(
                f"frame {bad}: shape {shapes[bad]} differs from frame 0's {first}; register/reproject the frames onto one grid first."
            )
        arr = np.stack([np.asarray(f) for f in frames]) if len(frames) else np.empty((0, 0, 0))
    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim != 3:
        raise AstroSRError(f"frames: expected a stack (N, H, W), got shape {arr.shape}.")
    n, h, w = arr.shape
    if n < min_frames:
        raise AstroSRError(f"frames: a coadd needs at least {min_frames} frames, got {n}.")
    if h < 8 or w < 8:
        raise AstroSRError(f"frames: {h}x{w} pixels is too small to coadd (need at least 8x8).")
    bad = ~np.isfinite(arr)
    if masks is not None:
        mk = np.asarray(masks)
        if mk.shape != arr.shape:
            raise AstroSRError(f"masks: shape {mk.shape} does not match the frames' {arr.shape}.")
        bad = bad | mk.astype(bool)
    data = np.where(bad, 0.0, arr).astype(np.float32)
    for i in range(n):
        if bad[i].all():
            raise AstroSRError(f"frame {i}: every pixel is masked; drop this frame.")
    if sigmas is None:
        sig = np.empty_like(data)
        for i in range(n):
            _, sig[i] = estimate_noise(data[i], mask=bad[i])
    else:
        s = np.asarray(sigmas, dtype=np.float32)
        if s.ndim == 1 and s.shape[0] == n:
            s = np.broadcast_to(s[:, None, None], arr.shape)
        if s.shape != arr.shape:
            raise AstroSRError(f"sigmas: shape {s.shape} does not match the frames' {arr.shape} (or ({n},)).")
        s = np.array(s, dtype=np.float32)
        sbad = ~np.isfinite(s) | (s <= 0)
        bad = bad | sbad
        for i in range(n):
            if bad[i].all():
                raise AstroSRError(f"frame {i}: every pixel is masked or has no valid noise; drop this frame.")
            s[i][sbad[i]] = s[i][~sbad[i]].max() if (~sbad[i]).any() else 1.0
        sig = s
    psf_list: Optional[list[np.ndarray]] = None
    if psfs is not None:
        if isinstance(psfs, np.ndarray) and psfs.ndim == 2:
            psf_list = [psfs] * n
        else:
            psf_list = list(psfs)
        if len(psf_list) != n:
            raise AstroSRError(f"psfs: {len(psf_list)} PSFs given for {n} frames; give one per frame (or one for all).")
        psf_list = [_odd_unit(p, f"PSF of frame {i}") for i, p in enumerate(psf_list)]
        for i, p in enumerate(psf_list):
            if p.shape[0] > h or p.shape[1] > w:
                raise AstroSRError(
                    f"PSF of frame {i}: {p.shape[0]}x{p.shape[1]} is larger than the {h}x{w} frame; crop the PSF (e.g. size=) or use larger frames."
                )
    elif require_psfs:
        raise AstroSRError("psfs: this coadd needs one PSF per frame (--psf, --psf-from-fwhm, or psf='estimate').")
    return FrameStack(data=data, sigma=sig.astype(np.float32), mask=bad, psfs=psf_list)


# --------------------------------------------------------------------------- file loading


_STRUCTURAL = {"SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "NAXIS3", "EXTEND", "XTENSION", "PCOUNT", "GCOUNT",
               "COMMENT", "HISTORY", "", "CHECKSUM", "DATASUM", "BSCALE", "BZERO", "BLANK"}


def inherited_header(img) -> fits.Header:
    """The image HDU's header plus the primary header's keywords when ``INHERIT = T`` (MEF convention).

    DECam community-pipeline files keep FILTER, EXPTIME, ... in the primary header only.
    """
    hdr = img.header.copy()
    if img.hdu_index and img.path and hdr.get("INHERIT", False):
        try:
            prim = fits.getheader(img.path, 0)
        except Exception:
            return hdr
        for card in prim.cards:
            if card.keyword not in _STRUCTURAL and card.keyword not in hdr:
                hdr[card.keyword] = (card.value, card.comment)
    return hdr


def _frame_band(header: fits.Header) -> Optional[str]:
    f = header.get("FILTER") or header.get("BAND")
    return str(f).split()[0] if f else None


def load_frames(
    paths: Sequence[PathLike], *, hdu: Optional[Union[int, str]] = None,
    weights: Optional[Sequence[PathLike]] = None, rms: Optional[Sequence[PathLike]] = None,
    dq: Optional[Sequence[PathLike]] = None,
    psfs: Optional[Sequence[Union[str, PathLike, np.ndarray]]] = None, psf_from_fwhm_key: Optional[str] = None,
    saturate_keyword: Optional[str] = "SATURATE", subtract_background: bool = True,
    clip_outliers: Optional[float] = None, gain_keyword: Optional[str] = None,
    allow_mixed_bands: bool = False, psf_size: Optional[int] = None,
) -> FrameStack:
    """Read exposures (and their weights/DQ/PSFs) into a :class:`FrameStack` on the first frame's grid.

    Parameters
    ----------
    paths
        One FITS file per exposure, or a single file holding a cube (N, H, W), or a single
        multi-extension file with one 2-D image HDU per exposure (each HDU's header, with
        the primary header's keywords when ``INHERIT = T``, is that frame's header).
    weights, rms, dq
        Per-frame inverse-variance maps, rms maps, data-quality maps (nonzero = bad).
        Without either noise source the noise is estimated with sep.
    psfs
        Per-frame PSFs: a spec or FITS image (:func:`napari_astrosr.core.psf.parse_psf`),
        a PSFEx model (a FITS file with a ``PSF_MASK`` table, evaluated at the frame centre),
        ``"estimate"`` (:func:`estimate_psf`), or an array. One entry applies to all frames.
    psf_from_fwhm_key
        Build Gaussian PSFs from this header keyword (FWHM in pixels) instead.
    saturate_keyword
        Header keyword giving the saturation level (None: no saturation mask).
    subtract_background
        Subtract sep's background model from each frame (the DIP latent is non-negative,
        so a sky pedestal must go; the classical coadds do not care).
    clip_outliers
        Flag positive outliers across the stack at this many sigma (:func:`outlier_mask`).
    gain_keyword
        Header keyword with the gain (e-/ADU) to add source Poisson noise to estimated noise maps.
    allow_mixed_bands
        Accept frames with different FILTER keywords (coadding bands is rarely wanted).

    Notes
    -----
    Frames on a different grid than the first are reprojected with
    :func:`napari_astrosr.core.resample.reproject_flux` (exact overlap: the frame's total
    flux inside the common footprint is kept); their variance maps are reprojected the
    same way (pixel-area-preserving, so noise correlation from resampling is ignored) and
    pixels not fully covered are masked.
    """
    from .fits_io import read_fits

    paths = [Path(p) for p in paths]
    if not paths:
        raise AstroSRError("no input frames given.")
    for name, lst in (("weights", weights), ("rms", rms), ("dq", dq)):
        if lst is not None and len(lst) != len(paths):
            raise AstroSRError(f"--{name}: {len(lst)} files given for {len(paths)} frames; give one per frame.")
    if weights is not None and rms is not None:
        raise AstroSRError("give either weight maps or rms maps, not both.")

    from .fits_io import read_fits_all, read_layers

    images = [read_fits(p, hdu=hdu) for p in paths]
    if len(images) == 1 and hdu is None and images[0].data.ndim == 2:
        # one multi-extension file whose image HDUs the viewer shows as a stack (same
        # shape and EXTNAME, e.g. the bundled decam_stack.fits: FRAME,1..5; see
        # fits_io.read_layers) is a stack of frames, each HDU keeping its own header
        # (primary keywords inherited with INHERIT = T) for FILTER, SATURATE, FWHM, ...
        layers = read_layers(paths[0])
        if len(layers) == 1 and layers[0].frame_headers:
            images = read_fits_all(paths[0])
    cube_mode = len(images) == 1 and images[0].data.ndim == 3
    if cube_mode:
        img = images[0]
        planes = list(img.data)
        headers = [img.header] * len(planes)
        wcss = [img.wcs] * len(planes)
        names = [f"{img.path}[{i}]" for i in range(len(planes))]
    else:
        for im in images:
            if im.data.ndim != 2:
                raise AstroSRError(f"{im.path}: is a {im.data.ndim}-D cube; give one 2-D frame per file or a single cube.")
        planes = [im.data for im in images]
        headers = [inherited_header(im) for im in images]
        wcss = [im.wcs for im in images]
        names = [Path(im.path).name if len(paths) > 1 else f"{Path(im.path).name}[{im.hdu_index}]" for im in images]
    n = len(planes)
    if n < 2:
        raise AstroSRError(f"{paths[0]}: a coadd needs at least 2 frames (one file per frame, a cube, "
                           "or a multi-extension file of same-shape, same-EXTNAME image HDUs).")

    bands = [_frame_band(h) for h in headers]
    if len({b for b in bands if b}) > 1 and not allow_mixed_bands:
        raise AstroSRError(
            f"frames have different FILTER bands ({', '.join(sorted({b for b in bands if b}))}); "
            "coadd each band separately or allow mixed bands (--allow-mixed-bands)."
        )

    def _aux(lst, i, what):
        if lst is None:
            return None
        a = read_fits(lst[i], hdu=hdu).data
        if a.shape != planes[i].shape:
            raise AstroSRError(f"{lst[i]}: {what} map shape {a.shape} does not match frame {names[i]} {planes[i].shape}.")
        return a

    sig_list, bad_list = [], []
    for i in range(n):
        d = planes[i]
        bad = ~np.isfinite(d)
        sig = None
        w_i = _aux(weights, i, "weight")
        r_i = _aux(rms, i, "rms")
        q_i = _aux(dq, i, "data-quality")
        if w_i is not None:
            sig, b = noise_from_weights(w_i)
            bad |= b
        elif r_i is not None:
            sig, b = noise_from_rms(r_i)
            bad |= b
        if q_i is not None:
            bad |= dq_mask(np.nan_to_num(q_i, nan=1))
        if saturate_keyword:
            bad |= saturation_mask(d, headers[i], keyword=saturate_keyword)
        sig_list.append(sig)
        bad_list.append(bad)

    # --- PSFs on the native grids (PSFEx positions are the frame's own pixels)
    psf_list: Optional[list[np.ndarray]] = None
    if psf_from_fwhm_key:
        psf_list = [psf_from_fwhm(h, keyword=psf_from_fwhm_key, size=psf_size, where=names[i]) for i, h in enumerate(headers)]
    elif psfs is not None:
        specs = list(psfs) if not isinstance(psfs, (str, os.PathLike, np.ndarray)) else [psfs]
        if len(specs) == 1:
            specs = specs * n
        if len(specs) != n:
            raise AstroSRError(f"--psf: {len(specs)} PSFs given for {n} frames; give one per frame or one for all.")
        psf_list = []
        for i, spec in enumerate(specs):
            psf_list.append(_load_psf(spec, planes[i], bad_list[i], where=names[i], size=psf_size))

    # --- background subtraction and noise estimation on the native grid
    backs = np.zeros(n, np.float32)
    gains = [None] * n
    if gain_keyword:
        gains = [float(h[gain_keyword]) if gain_keyword in h else None for h in headers]
    for i in range(n):
        d = np.where(bad_list[i], 0.0, planes[i]).astype(np.float32)
        back, sig_est = estimate_noise(d, mask=bad_list[i], gain=gains[i])
        if subtract_background:
            d = d - back
            backs[i] = float(np.median(back))
        if sig_list[i] is None:
            sig_list[i] = sig_est
        planes[i] = d

    # --- reprojection onto the first frame's grid
    ref_shape, ref_wcs = planes[0].shape, wcss[0]
    notes: list[str] = []
    for i in range(1, n):
        same_shape = planes[i].shape == ref_shape
        same_grid = same_shape and (
            (wcss[i] is None and ref_wcs is None)
            or (wcss[i] is not None and ref_wcs is not None and _same_grid(wcss[i], ref_wcs, ref_shape))
        )
        if same_grid or (cube_mode and same_shape):
            continue
        if wcss[i] is None or ref_wcs is None:
            who = names[i] if wcss[i] is None else names[0]
            raise AstroSRError(
                f"{who}: has no WCS and frames differ in shape/grid, so it cannot be reprojected; register the frames first."
            )
        planes[i], sig_list[i], bad_list[i] = _reproject_frame(
            planes[i], sig_list[i], bad_list[i], wcss[i], ref_wcs, ref_shape
        )
        notes.append(f"{names[i]}: reprojected onto {names[0]}'s grid (flux-conserving)")

    data = np.stack(planes).astype(np.float32)
    sigma = np.stack(sig_list).astype(np.float32)
    mask = np.stack(bad_list)
    if clip_outliers:
        mask |= outlier_mask(data, sigma, mask, nsigma=float(clip_outliers))
    stack = as_stack(data, sigmas=sigma, masks=mask, psfs=psf_list)
    stack.wcs = ref_wcs
    stack.header = headers[0].copy()
    stack.names = names
    stack.paths = [str(p) for p in paths]
    stack.background = backs
    stack.notes = notes
    return stack


def _load_psf(spec, image, mask, *, where: str, size: Optional[int]) -> np.ndarray:
    if isinstance(spec, np.ndarray):
        psf = spec
    elif isinstance(spec, str) and spec.strip().lower() == "estimate":
        psf = estimate_psf(image, mask=mask, size=size or 25, where=where)
    elif is_psfex(spec):
        psf = read_psfex(spec, shape=np.shape(image), size=size)
    else:
        from .psf import parse_psf

        psf = parse_psf(str(spec))
        if psf is None:
            raise AstroSRError(f"{where}: PSF 'none' cannot be used for a coadd; give a PSF.")
    psf = _odd_unit(psf, f"PSF of {where}")
    if size is not None and psf.shape[0] != size:
        psf = _odd_unit(crop_psf(psf, size), f"PSF of {where}")
    return psf


def is_psfex(path: Any) -> bool:
    """True if ``path`` is a FITS file whose first extension is a PSFEx ``PSF_MASK`` table."""
    try:
        p = Path(path)
        if not p.is_file():
            return False
        with fits.open(p) as hdul:
            return len(hdul) > 1 and isinstance(hdul[1], fits.BinTableHDU) and any(
                c.lower() == "psf_mask" for c in hdul[1].columns.names
            )
    except Exception:
        return False


def _same_grid(a: WCS, b: WCS, shape: tuple[int, int]) -> bool:
    """True when two WCS put the frame corners/centre at the same pixels within 0.01 px."""
    h, w = shape
    xs = np.array([0, w - 1, 0, w - 1, (w - 1) / 2])
    ys = np.array([0, 0, h - 1, h - 1, (h - 1) / 2])
    try:
        ra, dec = a.pixel_to_world_values(xs, ys)
        x2, y2 = b.world_to_pixel_values(ra, dec)
    except Exception:
        return False
    return bool(np.all(np.hypot(x2 - xs, y2 - ys) < 0.01))


def _reproject_frame(data, sigma, bad, wcs_in, wcs_out, shape_out):
    from .resample import reproject_flux

    res = reproject_flux(np.where(bad, 0.0, data).astype(np.float64), wcs_in, wcs_out, shape_out)
    var = reproject_flux((sigma.astype(np.float64)) ** 2, wcs_in, wcs_out, shape_out)
    badr = reproject_flux(bad.astype(np.float64), wcs_in, wcs_out, shape_out)
    cov = np.asarray(res.coverage, np.float64) if res.coverage is not None else np.isfinite(res.data).astype(float)
    out_bad = (~np.isfinite(res.data)) | (cov < 0.999) | (np.nan_to_num(badr.data, nan=1.0) > 1e-3)
    d = np.where(out_bad, 0.0, np.nan_to_num(res.data)).astype(np.float32)
    v = np.nan_to_num(var.data, nan=0.0)
    s = np.sqrt(np.clip(v, 0, None)).astype(np.float32)
    if (~out_bad).any():
        s[out_bad | (s <= 0)] = s[~out_bad].max()
    return d, s, out_bad


# --------------------------------------------------------------------------- classical coadds


def ivar_coadd(
    frames: Union[np.ndarray, Sequence[np.ndarray], FrameStack], *, weights: Optional[np.ndarray] = None,
    masks: Optional[np.ndarray] = None, psfs: Optional[Sequence[np.ndarray]] = None, homogenize: bool = False,
    wcs: Optional[WCS] = None, header: Optional[fits.Header] = None,
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
    stack = frames if isinstance(frames, FrameStack) else as_stack(
        frames, masks=masks, psfs=psfs, sigmas=None if weights is None else _sigma_from_weights(weights, frames)
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
        data=out, wcs=wcs if wcs is not None else stack.wcs, header=header if header is not None else stack.header,
        uncertainty=unc, residuals=resid, method="ivar", params={"homogenize": bool(homogenize), "n_frames": stack.n},
        metrics={"coverage": float((wsum > 0).mean())}, psfs=stack.psfs,
    )


def _sigma_from_weights(weights, frames) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    with np.errstate(divide="ignore"):
        s = np.where(w > 0, 1.0 / np.sqrt(np.where(w > 0, w, 1.0)), np.inf)
    return s.astype(np.float32)


def median_coadd(
    frames: Union[np.ndarray, Sequence[np.ndarray], FrameStack], *, masks: Optional[np.ndarray] = None,
    sigma_clip: Optional[float] = 3.0, wcs: Optional[WCS] = None, header: Optional[fits.Header] = None,
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
        data=out, wcs=wcs if wcs is not None else stack.wcs, header=header if header is not None else stack.header,
        uncertainty=unc, residuals=resid, method="median",
        params={"sigma_clip": sigma_clip, "n_frames": stack.n}, metrics={"coverage": float((n_used > 0).mean())},
    )


# --------------------------------------------------------------------------- comparison metrics


def aperture_fluxes(
    image: np.ndarray, x: np.ndarray, y: np.ndarray, *, radius: float, annulus: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray]:
    """Circular-aperture flux with the local background (sigma-clipped annulus median) removed.

    Returns (flux, local_background_per_pixel). Uses photutils apertures (exact overlap).
    """
    from photutils.aperture import ApertureStats, CircularAnnulus, CircularAperture, aperture_photometry

    img = np.nan_to_num(np.asarray(image, np.float64))
    pos = np.column_stack([x, y])
    ap = CircularAperture(pos, r=radius)
    an = CircularAnnulus(pos, r_in=annulus[0], r_out=annulus[1])
    raw = np.asarray(aperture_photometry(img, ap)["aperture_sum"], np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bk = np.asarray(ApertureStats(img, an).median, np.float64)
    bk = np.nan_to_num(bk)
    return raw - bk * ap.area, bk


def compare_fluxes(
    image: np.ndarray, reference: np.ndarray, *, fwhm: float, reference_sigma: Optional[np.ndarray] = None,
    snr_min: float = 20.0, radius_fwhm: float = 2.0, mask: Optional[np.ndarray] = None,
) -> dict[str, Any]:
    """Per-source flux of ``image`` against ``reference`` (e.g. the DIP latent vs the ivar coadd).

    Sources are detected on the reference (sep, 5 sigma); fluxes in circular apertures of
    radius ``radius_fwhm x fwhm`` (``fwhm`` = the widest frame PSF, so a deconvolved latent
    and a blurred coadd both hold essentially all of a star's flux) with each image's own
    local background (annulus 3-5 FWHM) subtracted. S/N is the reference aperture flux
    over its propagated error (from ``reference_sigma``, else the reference's sky rms).
    Also reports the mean local-background difference in the annuli around the brightest
    sources (negative = the image darkens the sky near bright sources, i.e. steals flux).
    """
    from .detection import detect_sources

    ref = np.nan_to_num(np.asarray(reference, np.float32))
    img = np.nan_to_num(np.asarray(image, np.float32))
    h, w = ref.shape
    m = ~np.isfinite(np.asarray(reference)) if mask is None else np.asarray(mask, bool)
    cat = detect_sources(ref, thresh=5.0, minarea=5, mask=m, box=max(16, min(64, h // 4, w // 4)))
    r = radius_fwhm * fwhm
    ann = (3.0 * fwhm, 5.0 * fwhm)
    empty = {"n_sources": 0, "flux_ratio_median": float("nan"), "flux_ratio_mad": float("nan"),
             "n_faint": 0, "flux_ratio_median_faint": float("nan"), "sky_steal": float("nan")}
    if len(cat) == 0:
        return empty
    x = np.asarray(cat["x"], float)
    y = np.asarray(cat["y"], float)
    inside = (x > r) & (x < w - 1 - r) & (y > r) & (y < h - 1 - r)
    x, y = x[inside], y[inside]
    if x.size == 0:
        return empty
    f_ref, b_ref = aperture_fluxes(ref, x, y, radius=r, annulus=ann)
    f_img, b_img = aperture_fluxes(img, x, y, radius=r, annulus=ann)
    if reference_sigma is not None:
        from photutils.aperture import CircularAperture, aperture_photometry

        var = np.nan_to_num(np.asarray(reference_sigma, np.float64) ** 2)
        err = np.sqrt(np.asarray(aperture_photometry(var, CircularAperture(np.column_stack([x, y]), r=r))["aperture_sum"]))
    else:
        from .metrics import sky_sigma

        err = sky_sigma(ref) * np.sqrt(np.pi) * r
    snr = f_ref / np.maximum(err, 1e-30)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = f_img / f_ref
    hi = snr > snr_min
    lo = (snr > 5) & ~hi
    bright = np.argsort(-f_ref)[: max(1, min(5, int(hi.sum())))]
    out = {
        "n_sources": int(hi.sum()),
        "flux_ratio_median": float(np.median(ratio[hi])) if hi.any() else float("nan"),
        "flux_ratio_mad": float(np.median(np.abs(ratio[hi] - np.median(ratio[hi])))) if hi.any() else float("nan"),
        "n_faint": int(lo.sum()),
        "flux_ratio_median_faint": float(np.median(ratio[lo])) if lo.any() else float("nan"),
        # local background difference around the brightest sources, per pixel, relative to each image's global median
        "sky_steal": float(np.mean((b_img[bright] - np.median(img)) - (b_ref[bright] - np.median(ref)))),
        "aperture_radius": float(r),
    }
    out["table"] = {"x": x, "y": y, "f_ref": f_ref, "f_img": f_img, "snr": snr, "ratio": ratio}
    return out


def image_metrics(image: np.ndarray) -> dict[str, float]:
    """The AstroClearNet paper's image metrics: sharpness S_F and sky sigma (core.metrics)."""
    from .metrics import sharpness, sky_sigma

    img = np.nan_to_num(np.asarray(image, np.float32))
    return {"sharpness": float(sharpness(img)), "sky_sigma": float(sky_sigma(img))}


def coadd_header(header: Optional[fits.Header], *, method: str, n_frames: int, extra: Optional[dict] = None) -> fits.Header:
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


#: S/N bin edges of the per-source flux report (forced photometry at the ivar coadd's sources)
SNR_BINS = (10.0, 20.0, 50.0, 100.0, float("inf"))


def source_flux_report(
    image: np.ndarray, reference: np.ndarray, *, fwhm: float, reference_sigma: Optional[np.ndarray] = None,
    mask: Optional[np.ndarray] = None, bins: Sequence[float] = SNR_BINS, radius_fwhm: float = 2.0,
    tolerance: float = 0.02, floor: float = 0.9, match_kernel: Optional[np.ndarray] = None,
) -> dict[str, Any]:
    """Every S/N > ``bins[0]`` source's flux in ``image`` against ``reference``, by S/N bin.

    Forced photometry at the reference's sources (detected as in :func:`compare_fluxes`),
    circular apertures of ``radius_fwhm x fwhm``: the image's flux is the reference's (local
    annulus background, 3-5 FWHM) plus the background-subtracted aperture flux of
    ``image - reference``. Per bin: number of sources, median ratio, robust scatter
    (1.4826 x MAD) and the lowest ratio. ``flux_ok`` is True when every non-empty bin's
    median is within ``tolerance`` of 1 and no source is below ``floor``.

    ``match_kernel``: convolve ``image`` with this unit-sum kernel first (for a deconvolved
    image: the reference's PSF), so both images have the same PSF and crowding, aperture
    losses and the local backgrounds affect them alike; convolution conserves every
    source's flux, so a flux change in ``image`` survives it.

    Returns
    -------
    dict
        ``bins`` (list of dicts: lo, hi, n, median, scatter, min), ``n_sources``,
        ``flux_ratio_median`` / ``flux_ratio_scatter`` / ``flux_ratio_min`` over all of
        them, ``n_below_floor``, ``flux_ok``, ``checked`` (a one-line statement of the
        check) and ``table`` (per-source x, y, snr, f_ref, f_img, ratio).
    """
    if match_kernel is not None:
        from scipy.ndimage import convolve

        k = np.asarray(match_kernel, np.float64)
        k = k / k.sum()
        image = convolve(np.nan_to_num(np.asarray(image, np.float64)), k, mode="reflect")
    full = compare_fluxes(image, reference, fwhm=fwhm, reference_sigma=reference_sigma, snr_min=float(bins[0]),
                          radius_fwhm=radius_fwhm, mask=mask)
    tab = full.get("table")
    if tab is not None:
        # image flux = reference flux + the background-subtracted aperture flux of (image -
        # reference): neighbours' wings in the annulus cancel in the difference, so the two
        # images' different noise cannot bias their local backgrounds differently (an annulus
        # median of noise + positive wings shifts with the noise level: 7% on a crowded S/N 74
        # star of a noisy vs noiseless pair, measured)
        diff = np.nan_to_num(np.asarray(image, np.float64)) - np.nan_to_num(np.asarray(reference, np.float64))
        r_ap = radius_fwhm * fwhm
        d_flux, _ = aperture_fluxes(diff, tab["x"], tab["y"], radius=r_ap, annulus=(3.0 * fwhm, 5.0 * fwhm))
        tab = dict(tab)
        tab["f_img"] = tab["f_ref"] + d_flux
        with np.errstate(invalid="ignore", divide="ignore"):
            tab["ratio"] = tab["f_img"] / tab["f_ref"]
    edges = [float(b) for b in bins]
    rows = []
    if tab is None:
        snr = ratio = np.zeros(0)
    else:
        snr, ratio = np.asarray(tab["snr"]), np.asarray(tab["ratio"])
    sel_all = snr > edges[0]
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (snr > lo) & (snr <= hi)
        r = ratio[sel]
        rows.append({
            "lo": lo, "hi": hi, "n": int(sel.sum()),
            "median": float(np.median(r)) if r.size else float("nan"),
            "scatter": float(1.4826 * np.median(np.abs(r - np.median(r)))) if r.size > 1 else float("nan"),
            "min": float(r.min()) if r.size else float("nan"),
        })
    r_all = ratio[sel_all]
    n_below = int((r_all < floor).sum())
    ok = bool(r_all.size) and n_below == 0 and all(abs(b["median"] - 1) <= tolerance for b in rows if b["n"])
    out = {
        "bins": rows, "n_sources": int(r_all.size),
        "flux_ratio_median": float(np.median(r_all)) if r_all.size else float("nan"),
        "flux_ratio_scatter": float(1.4826 * np.median(np.abs(r_all - np.median(r_all)))) if r_all.size > 1 else float("nan"),
        "flux_ratio_min": float(r_all.min()) if r_all.size else float("nan"),
        "n_below_floor": n_below, "flux_ok": ok,
        "checked": (f"flux of all {int(r_all.size)} S/N>{edges[0]:g} sources of the ivar coadd (forced apertures r="
                    f"{radius_fwhm:g}xFWHM): median within {100 * tolerance:g}% per S/N bin and none below {floor:g}"),
        "aperture_radius": float(radius_fwhm * fwhm),
    }
    if tab is not None:
        out["table"] = {k: np.asarray(v)[sel_all] for k, v in tab.items()}
    return out


def format_flux_bins(report: dict[str, Any]) -> list[str]:
    """Human-readable lines of :func:`source_flux_report`'s bins (CLI output, widget text)."""
    lines = []
    for b in report.get("bins", []):
        hi = "inf" if not np.isfinite(b["hi"]) else f"{b['hi']:g}"
        if b["n"]:
            lines.append(f"S/N {b['lo']:g}-{hi}: n={b['n']}, flux/ivar median {b['median']:.3f}, "
                         f"scatter {b['scatter']:.3f}, min {b['min']:.3f}")
        else:
            lines.append(f"S/N {b['lo']:g}-{hi}: no source")
    return lines

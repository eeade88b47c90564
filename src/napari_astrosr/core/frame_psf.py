"""PSFs of coadd frames: PSFEx models, FWHM Gaussians, cropping and homogenisation.

Every PSF returned is odd-sized, centred and unit-sum. :func:`read_psfex` evaluates a PSFEx
``PSF_MASK`` model at one position. :mod:`.coadd` re-exports these names.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
from astropy.io import fits

from ..exceptions import AstroSRError

PathLike = Union[str, os.PathLike]
FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))


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
    path: PathLike,
    *,
    x: Optional[float] = None,
    y: Optional[float] = None,
    shape: Optional[tuple[int, int]] = None,
    size: Optional[int] = None,
    hdu: int = 1,
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
        raise AstroSRError(
            f"{p}: PSFEx model with POLNAXIS={npol}, POLNGRP={ngrp} is not supported (only x/y polynomials)."
        )
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
    out[oy : oy + ye - ys, ox : ox + xe - xs] = p[ys:ye, xs:xe]
    return out


def psf_size_for(fwhm: float) -> int:
    """Odd PSF stamp size holding a Gaussian of this FWHM to ~1e-6: about 4 FWHM."""
    n = int(np.ceil(4.0 * fwhm)) | 1
    return max(n, 5)


def psf_from_fwhm(
    header: fits.Header,
    *,
    keyword: str = "FWHM",
    size: Optional[int] = None,
    where: str = "frame",
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
    data: np.ndarray,
    psfs: Sequence[np.ndarray],
    *,
    target: Optional[np.ndarray] = None,
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


def is_psfex(path: Any) -> bool:
    """True if ``path`` is a FITS file whose first extension is a PSFEx ``PSF_MASK`` table."""
    try:
        p = Path(path)
        if not p.is_file():
            return False
        with fits.open(p) as hdul:
            return (
                len(hdul) > 1
                and isinstance(hdul[1], fits.BinTableHDU)
                and any(c.lower() == "psf_mask" for c in hdul[1].columns.names)
            )
    except Exception:
        return False

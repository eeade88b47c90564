"""Per-pixel noise of an image: from its error / weight extension or a user map, else estimated.

:func:`find_noise` resolves the noise (sigma per pixel, in the image's units) in this order:

1. a user map (``noise=``: an array or a FITS file; ``kind`` says what it holds);
2. an error-like extension of the input file, by EXTNAME: ``ERR``/``ERROR``/``SIGMA``/``RMS``/``NOISE``/
   ``STD``/``UNCERT`` (sigma), ``VAR``/``VARIANCE`` (sigma^2), ``IVAR``/``INVVAR``/``IVM`` (1/sigma^2) or
   ``WHT``/``WEIGHT`` (see below); with several, the first of that order (an ERR beats a WHT);
3. :func:`estimate_sigma`, a robust scalar estimate from the image itself.

Weights: a ``WHT`` extension is an inverse variance only when the header says so (``WHTTYPE``/
``WGHTTYPE``/``FINAL_WHT_TYPE`` containing ``IVM``/``IVAR``, or ``BUNIT`` like ``1/(e/s)^2``). The
HST drizzle default (``EXP``) is an exposure-time map: proportional to 1/sigma^2 but not equal, so
``sigma = c / sqrt(WHT)`` with ``c`` calibrated on the image (the image scaled by ``sqrt(WHT)`` has
uniform noise, estimated with :func:`estimate_sigma`). The same calibration is applied to a
``WEIGHT`` map without a stated type. Pixels with ``WHT <= 0`` / non-finite maps are reported bad.

The scalar estimator (``method="auto"``, benchmarks/noise_estimate.py): the sigma-clipped scatter of
the image minus a 2-D running median (sky and extended light removed), over pixels outside a
dilated sep source mask, iterated once with the mask from the first estimate. It measures the
per-pixel sigma of correlated (resampled) noise too, where pixel differences would see only the
part of the noise that changes from pixel to pixel. ``method="diff"`` (MAD of lag-k pixel
differences, the largest of lags 1-3) and ``method="sep"`` (sep's global background rms, what
``--flux-noise auto`` used before) are kept for comparison.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from ..exceptions import AstroSRError

__all__ = [
    "NoiseInfo",
    "find_noise",
    "estimate_sigma",
    "second_difference_sigma",
    "sigma_from_map",
    "ERR_EXTNAMES",
    "VAR_EXTNAMES",
    "IVAR_EXTNAMES",
    "WHT_EXTNAMES",
]

PathLike = Union[str, os.PathLike]
ERR_EXTNAMES = ("ERR", "ERROR", "ERRS", "SIGMA", "RMS", "NOISE", "STD", "STDDEV", "UNCERT", "SCI_ERR")
VAR_EXTNAMES = ("VAR", "VARIANCE")  # not JWST's VAR_POISSON / VAR_RNOISE: each is only part of the variance
IVAR_EXTNAMES = ("IVAR", "INVVAR", "IVM", "INV_VAR")
WHT_EXTNAMES = ("WHT", "WEIGHT", "WHTMAP", "WGT")
_MAD = 1.482602218505602  # sigma of a Gaussian per median absolute deviation


@dataclass
class NoiseInfo:
    """Where the noise came from.

    Attributes
    ----------
    source
        ``map`` (user), ``extension`` or ``estimated``.
    sigma
        Median sigma over good pixels (image units).
    per_pixel
        True when the noise is a map, False for a scalar estimate.
    description
        The extension / file and how it was read, or the estimator.
    notes
        Assumptions (weight calibration, units).
    """

    source: str
    sigma: float
    per_pixel: bool
    description: str = ""
    notes: list[str] = field(default_factory=list)

    def header_cards(self) -> list[tuple[str, Any, str]]:
        """FITS cards ``(keyword, value, comment)`` recording the noise used."""
        cards = [
            ("NOISESRC", self.source, "where the input noise came from"),
            ("NOISESIG", float(f"{self.sigma:.6g}"), "median input sigma per pixel [BUNIT]"),
            ("NOISEMAP", bool(self.per_pixel), "per-pixel noise map used"),
            ("NOISEDSC", self.description[:68], "noise map / estimator"),
        ]
        for i, note in enumerate(self.notes[:9]):
            cards.append((f"NOISNOT{i + 1}", note[:68], ""))
        return cards


# --------------------------------------------------------------------------- maps


def _kind_from_name(name: str) -> Optional[str]:
    n = name.upper().strip()
    if n in ERR_EXTNAMES:
        return "err"
    if n in VAR_EXTNAMES:
        return "var"
    if n in IVAR_EXTNAMES:
        return "ivar"
    if n in WHT_EXTNAMES:
        return "wht"
    return None


def _kind_from_filename(path: Path) -> Optional[str]:
    stem = path.name.lower()
    for token, kind in (
        ("ivar", "ivar"),
        ("invvar", "ivar"),
        ("_var", "var"),
        ("variance", "var"),
        ("rms", "err"),
        ("_err", "err"),
        ("error", "err"),
        ("sigma", "err"),
        ("wht", "wht"),
        ("weight", "wht"),
    ):
        if token in stem:
            return kind
    return None


def _weight_is_ivar(header) -> bool:
    if header is None:
        return False
    for key in ("WHTTYPE", "WGHTTYPE", "WTTYPE", "FINAL_WHT_TYPE", "WHT_TYPE", "D001WTSC"):
        v = header.get(key)
        if isinstance(v, str) and any(t in v.upper() for t in ("IVM", "IVAR", "INVVAR", "INVERSE")):
            return True
    bunit = str(header.get("BUNIT", "")).replace(" ", "").lower()
    return bunit.startswith("1/") and ("**2" in bunit or "^2" in bunit or ")2" in bunit)


def sigma_from_map(
    values: np.ndarray,
    kind: str,
    *,
    image: Optional[np.ndarray] = None,
    header=None,
    where: str = "noise map",
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Sigma per pixel from an ERR / VAR / IVAR / WHT map.

    Parameters
    ----------
    values
        The map (same shape as the image).
    kind
        ``err`` (sigma), ``var`` (sigma^2), ``ivar`` (1/sigma^2) or ``wht`` (a weight proportional to
        1/sigma^2: inverse variance if ``header`` says so, else calibrated on ``image``).
    image
        The image, needed to calibrate a relative weight map.
    header
        The map's header (weight type, BUNIT).

    Returns
    -------
    sigma, bad, notes
        float64 sigma (bad pixels filled with the largest good sigma), the bad-pixel mask
        (non-finite, ``<= 0``; for weights also 0-weight), and what was assumed.
    """
    v = np.asarray(values, dtype=np.float64)
    kind = kind.lower()
    notes: list[str] = []
    bad = ~np.isfinite(v) | (v <= 0)
    good = ~bad
    if not good.any():
        raise AstroSRError(f"{where}: has no positive finite pixel; it cannot be a noise map.")
    sig = np.zeros_like(v)
    if kind in ("err", "rms", "sigma"):
        sig[good] = v[good]
    elif kind in ("var", "variance"):
        sig[good] = np.sqrt(v[good])
    elif kind in ("ivar", "ivm"):
        sig[good] = 1.0 / np.sqrt(v[good])
    elif kind in ("wht", "weight"):
        sig[good] = 1.0 / np.sqrt(v[good])
        if _weight_is_ivar(header):
            notes.append("weight map read as inverse variance (header says IVM)")
        else:
            if image is None:
                raise AstroSRError(f"{where}: a weight map of unknown type needs the image to calibrate it.")
            rel = sig / np.median(sig[good])
            img = np.asarray(image, dtype=np.float64)
            whitened = np.where(good & np.isfinite(img), img / np.where(good, rel, 1.0), np.nan)
            c = estimate_sigma(whitened, mask=bad)
            sig = rel * c
            notes.append("weight map of unknown type (drizzle EXP?): sigma = c/sqrt(WHT), c from the image")
    else:
        raise AstroSRError(f"{where}: noise map kind {kind!r} not understood; use err, var, ivar or wht.")
    sig[bad] = sig[good].max()
    return sig, bad, notes


def _shape_check(m: np.ndarray, shape, where: str) -> np.ndarray:
    m = np.asarray(m)
    if m.ndim == 3 and m.shape[0] == 1:
        m = m[0]
    if m.shape != tuple(shape):
        raise AstroSRError(
            f"{where}: shape {m.shape} differs from the image's {tuple(shape)}; give a map of the same shape."
        )
    return m


def find_noise(
    data: np.ndarray,
    *,
    hdul_or_path: Optional[Union[PathLike, Any]] = None,
    noise: Optional[Union[PathLike, np.ndarray, float]] = None,
    kind: Optional[str] = None,
    mask: Optional[np.ndarray] = None,
    where: Optional[str] = None,
) -> tuple[Union[float, np.ndarray], NoiseInfo]:
    """Resolve the input's noise: user map, error-like extension, else :func:`estimate_sigma`.

    Parameters
    ----------
    data
        The 2-D image.
    hdul_or_path
        Its FITS file (path) or open HDUList, searched for ERR / VAR / IVAR / WHT extensions.
    noise
        A user noise map (array, FITS path ``PATH[:HDU]``) or a scalar sigma.
    kind
        What ``noise`` holds (``err``, ``var``, ``ivar``, ``wht``); default from its EXTNAME / file
        name, else ``err``.
    mask
        Bad pixels to ignore in an estimate.
    where
        Name for messages.

    Returns
    -------
    sigma, info
        A float (estimated or a scalar given) or a float64 map of ``data``'s shape (bad map pixels
        filled with the largest good sigma; their positions in ``info.notes`` count only).
    """
    from astropy.io import fits

    img = np.asarray(data, dtype=np.float64)
    if img.ndim != 2:
        raise AstroSRError(f"{where or 'image'}: must be 2-D to find its noise, got shape {img.shape}.")
    path = None
    hdul = None
    if isinstance(hdul_or_path, fits.HDUList):
        hdul = hdul_or_path
    elif hdul_or_path is not None:
        path = Path(hdul_or_path)
    where = where or (path.name if path is not None else "image")

    def result(sig, bad, notes, source, desc):
        n_bad = int(np.count_nonzero(bad))
        if n_bad:
            notes = notes + [f"{n_bad} pixel(s) with no valid noise"]
        med = float(np.median(sig[~bad])) if np.ndim(sig) else float(sig)
        return sig, NoiseInfo(source=source, sigma=med, per_pixel=True, description=desc, notes=notes)

    # 1. user map / scalar
    if noise is not None:
        if np.isscalar(noise) and not isinstance(noise, (str, os.PathLike)):
            s = float(noise)
            if not np.isfinite(s) or s < 0:
                raise AstroSRError(f"noise={noise!r}: a scalar sigma must be finite and >= 0.")
            return s, NoiseInfo(source="map", sigma=s, per_pixel=False, description=f"sigma={s:g} given")
        if isinstance(noise, np.ndarray):
            m = _shape_check(noise, img.shape, "noise map")
            sig, bad, notes = sigma_from_map(m, kind or "err", image=img, where="noise map")
            return result(sig, bad, notes, "map", f"array ({kind or 'err'})")
        from .fits_read import read_fits

        spec = str(noise)
        hdu = None
        if ":" in spec and not Path(spec).exists():
            spec, h = spec.rsplit(":", 1)
            hdu = int(h) if h.lstrip("-").isdigit() else h
        p = Path(spec)
        if not p.exists():
            raise AstroSRError(f"{p}: noise map not found. Check the noise map path.")
        fi = read_fits(p, hdu=hdu, dtype=np.float64)
        k = kind or _kind_from_name(fi.name) or _kind_from_filename(p) or "err"
        m = _shape_check(fi.data, img.shape, str(p))
        sig, bad, notes = sigma_from_map(m, k, image=img, header=fi.header, where=str(p))
        if kind is None and _kind_from_name(fi.name) is None and _kind_from_filename(p) is None:
            notes = ["map of unstated kind read as sigma (ERR)"] + notes
        return result(sig, bad, notes, "map", f"{p.name}[{fi.name or fi.hdu_index}] as {k}")

    # 2. an error-like extension of the input file
    # several maps (e.g. ERR and WHT): the most direct one wins, err > var > ivar > wht
    rank = {"err": 0, "var": 1, "ivar": 2, "wht": 3}
    ext = None
    if hdul is not None:
        cands = [
            (rank[_kind_from_name(h.name or "")], i)
            for i, h in enumerate(hdul)
            if i > 0 and h.is_image and h.data is not None and _kind_from_name(h.name or "")
        ]
        if cands:
            h = hdul[min(cands)[1]]
            ext = (h.name, np.asarray(h.data, dtype=np.float64), h.header)
    elif path is not None and path.exists():
        from .fits_open import list_image_hdus
        from .fits_read import read_fits

        cands = [
            (rank[_kind_from_name(name)], idx, name)
            for idx, name, _shape in list_image_hdus(path)
            if idx > 0 and _kind_from_name(name)
        ]
        if cands:
            _, idx, name = min(cands)
            fi = read_fits(path, hdu=idx, dtype=np.float64)
            ext = (name, fi.data, fi.header)
    if ext is not None:
        name, m, hdr = ext
        m = _shape_check(m, img.shape, f"{where}[{name}]")
        k = _kind_from_name(name)
        sig, bad, notes = sigma_from_map(m, k, image=img, header=hdr, where=f"{where}[{name}]")
        return result(sig, bad, notes, "extension", f"[{name}] as {k}")

    # 3. estimated
    s, est = estimate_sigma(img, mask=mask, return_info=True)
    return s, NoiseInfo(
        source="estimated",
        sigma=float(s),
        per_pixel=False,
        description=f"robust estimate ({est['method']})",
        notes=est.get("notes", []),
    )


# --------------------------------------------------------------------------- the estimator


def _mad_sigma(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    if x.size < 10:
        return float("nan")
    med = np.median(x)
    return float(_MAD * np.median(np.abs(x - med)))


def _clipped_std(x: np.ndarray, nsig: float = 3.0, iters: int = 5) -> float:
    """Sigma-clipped scatter, MAD-based and corrected for the clip (Gaussian truncated at +-nsig)."""
    x = x[np.isfinite(x)]
    if x.size < 10:
        return float("nan")
    s = _mad_sigma(x)
    med = float(np.median(x))
    for _ in range(iters):
        keep = np.abs(x - med) < nsig * s
        if keep.sum() < 10:
            break
        med = float(np.median(x[keep]))
        s_new = _MAD * float(np.median(np.abs(x[keep] - med)))
        # the MAD of a Gaussian truncated at +-nsig*s underestimates sigma; nsig=3 -> 0.3% low, ignore
        if abs(s_new - s) <= 1e-4 * s:
            s = s_new
            break
        s = s_new
    return s


def _diff_sigma(x: np.ndarray, lags=(1, 2, 3)) -> tuple[float, list[float]]:
    per = []
    for k in lags:
        d = np.concatenate([(x[:, k:] - x[:, :-k]).ravel(), (x[k:, :] - x[:-k, :]).ravel()])
        per.append(_mad_sigma(d) / np.sqrt(2.0))
    return float(np.nanmax(per)), per


def estimate_sigma(
    image: np.ndarray,
    *,
    mask: Optional[np.ndarray] = None,
    method: str = "auto",
    box: int = 9,
    thresh: float = 3.0,
    return_info: bool = False,
):
    """Robust per-pixel noise sigma of an image (scalar), for fields full of galaxies or stars.

    Parameters
    ----------
    image
        2-D image (NaN = missing).
    mask
        True where pixels are bad.
    method
        ``auto`` (masked, median-filter high-pass, clipped scatter; see the module docstring),
        ``diff`` (MAD of pixel differences, largest of lags 1-3) or ``sep`` (sep's global rms).
    box
        Running-median size (pixels) removing sky and extended light (``auto``).
    thresh
        Source-mask threshold (``auto``), in sigma of the 3x3-smoothed high-pass image.
    return_info
        Also return a dict (method, per-lag values, masked fraction, notes).

    Returns
    -------
    float or (float, dict)
    """
    from scipy import ndimage

    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2:
        raise AstroSRError(f"image must be 2-D to estimate its noise, got shape {img.shape}.")
    bad = ~np.isfinite(img)
    if mask is not None:
        bad |= np.asarray(mask, bool)
    if (~bad).sum() < 100:
        raise AstroSRError("image has fewer than 100 valid pixels; cannot estimate its noise. Give a noise map.")
    info: dict[str, Any] = {"method": method, "notes": []}
    if method == "sep":
        from .projection import estimate_lr_noise

        s = estimate_lr_noise(np.where(bad, np.nanmedian(img[~bad]), img))
        return (s, info) if return_info else s
    if method == "diff":
        x = np.where(bad, np.nan, img)
        s, per = _diff_sigma(x)
        info["per_lag"] = per
        return (s, info) if return_info else s
    if method != "auto":
        raise AstroSRError(f"method={method!r}: use auto, diff or sep.")
    fill = np.where(bad, np.median(img[~bad]), img)
    b = int(max(3, min(box, min(img.shape) // 4))) | 1
    hp = img - ndimage.median_filter(fill, size=b, mode="reflect")
    hp[bad] = np.nan
    s = _clipped_std(hp)
    src = np.zeros(img.shape, bool)
    for _ in range(2):
        # sources: connected regions above 3 sigma of the lightly smoothed high-pass image (that sigma
        # measured on the smoothed image itself, so correlated noise does not lower the threshold),
        # at least 5 px, grown by 2 px
        sm = ndimage.uniform_filter(np.nan_to_num(hp), 3)
        s_sm = _clipped_std(np.where(bad | src, np.nan, sm))
        lab, n = ndimage.label(sm > thresh * s_sm)
        if n:
            sizes = np.bincount(lab.ravel())
            big = sizes >= 5
            big[0] = False
            src = ndimage.binary_dilation(big[lab], iterations=2)
        keep = ~src & ~bad
        if keep.sum() < 0.05 * (~bad).sum() or keep.sum() < 100:
            info["notes"].append("sources cover >95% of the image; estimate from all pixels")
            break
        s = _clipped_std(np.where(keep, hp, np.nan))
    # the running median removes a little of the noise too (its own scatter ~1.25 sigma/sqrt(box^2))
    s *= 1.0 / np.sqrt(max(1.0 - 1.5708 / (b * b), 0.5))
    info["masked_fraction"] = float(src.mean())
    info["box"] = b
    return (float(s), info) if return_info else float(s)


def second_difference_sigma(image: np.ndarray) -> float:
    """Per-pixel sigma of the white noise in ``image``: the MAD of its second differences (both axes), scaled.

    Second differences cancel smooth light (galaxies, sky gradients, PSF-blurred sources) far better than sep's
    source-clipped sky rms, which counts faint extended light and correlated noise as noise (measured on the
    quality benchmark's fields: on a clean A2744 spiral crop sep says 1.2% of the robust range, this 0.07%; on
    the same crop with 1% noise added, 1.04%). The restore path's fallback on images too small for :func:`estimate_sigma`.
    """
    a = np.asarray(image, dtype=np.float64)
    parts = []
    if a.shape[0] >= 3:
        parts.append((a[:-2] - 2 * a[1:-1] + a[2:]).ravel())
    if a.shape[1] >= 3:
        parts.append((a[:, :-2] - 2 * a[:, 1:-1] + a[:, 2:]).ravel())
    d = np.concatenate(parts) if parts else np.zeros(0)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return float("nan")
    # var(x[i-1] - 2 x[i] + x[i+1]) = 6 sigma^2 for white noise
    return float(1.4826 * np.median(np.abs(d - np.median(d))) / np.sqrt(6.0))

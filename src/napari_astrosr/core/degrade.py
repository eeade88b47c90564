"""The STAR degradation pipeline: HR -> PSF blur -> flux-conserving downsample -> noise.

``degrade(hr, scale=2, psf="gaussian:1.0", noise="poisson", seed=0)`` returns the LR
image, its WCS (same sky, pixels ``scale`` times larger) and a header recording every
parameter (``ASRD*`` keywords), so a training pair or test can be regenerated exactly.

Flux: the blur conserves total flux (:func:`~napari_astrosr.core.psf.convolve`) and the
``"area"`` downsample sums HR pixels (exact overlap for non-integer scales), so before
noise ``sum(LR) == sum(HR)`` (to rounding; for integer scales the trailing HR rows/columns
not filling a block are dropped). Noise is zero-mean. The ``"bilinear"``/``"bicubic"``
methods *interpolate* instead of integrating; they exist only to show how much flux that
loses (STAR Fig. 5) and are never used for training data.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from ..exceptions import AstroSRError
from .psf import convolve, describe_psf, gaussian_airy_psf, gaussian_psf, parse_psf
from .resample import as_int_factor, downsample, scale_wcs

__all__ = ["Degraded", "degrade", "parse_noise", "add_noise", "STAR_PRESETS", "random_star_psf"]

# STAR (Li et al.): per-image random PSF widths (pixels on the HR grid)
STAR_PRESETS: dict[str, dict[str, tuple[float, float]]] = {
    "gaussian": {"sigma": (0.8, 1.2)},
    "airy": {"radius": (1.9, 2.2)},
    "gaussian+airy": {"sigma": (0.8, 1.2), "radius": (1.9, 2.2)},
}


@dataclass
class Degraded:
    """Output of :func:`degrade`."""

    data: np.ndarray
    wcs: Optional[WCS]
    header: fits.Header
    psf: Optional[np.ndarray]
    params: dict[str, Any] = field(default_factory=dict)


def random_star_psf(
    rng: Union[np.random.Generator, int, None] = None,
    kind: str = "gaussian",
    *,
    sigma_range: Optional[tuple[float, float]] = None,
):
    """Draw a PSF from STAR's ranges; returns ``(psf, params)`` with the spec in ``params['spec']``.

    ``sigma_range`` replaces STAR's Gaussian sigma range (HR pixels), e.g. for a same-size
    deconvolution whose input PSF is broader than STAR's 0.8-1.2 px; the draws are the same otherwise.
    """
    rng = np.random.default_rng(rng)
    if kind not in STAR_PRESETS:
        raise AstroSRError(f"kind={kind!r}: use one of {sorted(STAR_PRESETS)}.")
    ranges = dict(STAR_PRESETS[kind])
    if sigma_range is not None and "sigma" in ranges:
        lo, hi = (float(v) for v in sigma_range)
        if not (0 < lo <= hi):
            raise AstroSRError(f"sigma_range={sigma_range}: need 0 < lo <= hi (HR pixels).")
        ranges["sigma"] = (lo, hi)
    p = {k: float(rng.uniform(*v)) for k, v in ranges.items()}
    if kind == "gaussian":
        return gaussian_psf(p["sigma"]), {**p, "kind": kind, "spec": f"gaussian:{p['sigma']:.4f}"}
    if kind == "airy":
        from .psf import airy_psf

        return airy_psf(p["radius"]), {**p, "kind": kind, "spec": f"airy:{p['radius']:.4f}"}
    return gaussian_airy_psf(p["sigma"], p["radius"]), {
        **p,
        "kind": kind,
        "spec": f"gaussian+airy:{p['sigma']:.4f},{p['radius']:.4f}",
    }


def parse_noise(noise: Union[None, str, dict]) -> dict[str, Any]:
    """Normalise a noise spec to a dict.

    - ``None`` / ``"none"`` -> ``{"kind": "none"}``
    - ``"gaussian:SIGMA"`` -> ``{"kind": "gaussian", "sigma": SIGMA}`` (image units)
    - ``"poisson"`` or ``"poisson:GAIN"`` -> ``{"kind": "poisson", "gain": GAIN}``: the image times
      ``gain`` (e.g. e-/s x exposure) is taken as expected counts
    - a dict with ``kind`` and optional ``gain`` (default 1), ``exptime`` (default 1),
      ``sky`` (image units added before drawing, subtracted after), ``read_noise`` (counts)
      and ``sigma``.
    """
    if noise is None:
        return {"kind": "none"}
    if isinstance(noise, dict):
        d = dict(noise)
        if d.get("kind") not in ("none", "gaussian", "poisson"):
            raise AstroSRError(f"noise kind {d.get('kind')!r}: use none, gaussian or poisson.")
    else:
        s = str(noise).strip().lower()
        if s in ("", "none"):
            return {"kind": "none"}
        m = re.fullmatch(r"(gaussian|poisson)(?::(.*))?", s)
        if not m:
            raise AstroSRError(f"--noise {noise!r}: use none, poisson[:GAIN] or gaussian:SIGMA.")
        kind, arg = m.group(1), m.group(2)
        d = {"kind": kind}
        if kind == "gaussian":
            if arg is None:
                raise AstroSRError(f"--noise {noise!r}: gaussian needs a sigma, e.g. gaussian:0.01.")
            d["sigma"] = arg
        elif arg is not None:
            d["gain"] = arg
    for key in ("sigma", "gain", "exptime", "sky", "read_noise"):
        if key in d:
            try:
                d[key] = float(d[key])
            except (TypeError, ValueError) as exc:
                raise AstroSRError(f"noise {key}={d[key]!r}: must be a number.") from exc
            if not math.isfinite(d[key]) or d[key] < 0 or (key in ("gain", "exptime") and d[key] == 0):
                raise AstroSRError(f"noise {key}={d[key]}: must be a non-negative number (gain/exptime > 0).")
    if d["kind"] == "gaussian" and "sigma" not in d:
        raise AstroSRError("gaussian noise needs 'sigma'.")
    return d


def add_noise(image: np.ndarray, noise: Union[None, str, dict], rng: np.random.Generator) -> np.ndarray:
    """Add noise per :func:`parse_noise` (NaN pixels stay NaN). Returns a new float64 array."""
    d = parse_noise(noise)
    img = np.asarray(image, dtype=np.float64)
    valid = np.isfinite(img)
    out = img.copy()
    if d["kind"] == "none":
        return out
    if d["kind"] == "gaussian":
        out[valid] += rng.normal(0.0, d["sigma"], size=int(valid.sum()))
        return out
    g = d.get("gain", 1.0) * d.get("exptime", 1.0)
    sky = d.get("sky", 0.0)
    lam = np.clip((img[valid] + sky) * g, 0.0, None)  # expected counts cannot be negative
    counts = rng.poisson(lam).astype(np.float64)
    if d.get("read_noise", 0.0) > 0:
        counts += rng.normal(0.0, d["read_noise"], size=counts.shape)
    out[valid] = counts / g - sky
    if "sigma" in d:
        out[valid] += rng.normal(0.0, d["sigma"], size=int(valid.sum()))
    return out


def degrade(
    hr: np.ndarray,
    *,
    scale: float,
    psf: Union[str, np.ndarray, None] = None,
    noise: Union[None, str, dict] = None,
    seed: Optional[int] = None,
    wcs: Optional[WCS] = None,
    header: Optional[fits.Header] = None,
    method: str = "area",
) -> Degraded:
    """Simulate a low-resolution observation of ``hr``.

    Parameters
    ----------
    hr
        2-D high-resolution image (flux per pixel; NaN = missing).
    scale
        Downsampling factor (2, 3, 4 or non-integer such as 2.5).
    psf
        Blur applied on the HR grid: a kernel, a ``--psf`` SPEC (``gaussian:SIGMA``, ``airy:R``,
        ``gaussian+airy:SIGMA,R``, ``moffat:FWHM[,BETA]``, ``PATH.fits[:HDU]``), ``"star"`` /
        ``"star-airy"`` for a random STAR-range Gaussian / Gaussian+Airy drawn with ``seed``, or None.
    noise
        See :func:`parse_noise`.
    seed
        Seeds the noise (and a random STAR PSF); same seed -> same output.
    wcs, header
        Of ``hr``; the output WCS maps the same sky with ``scale`` times larger pixels.
    method
        ``"area"`` (flux-conserving, default) or ``"bilinear"``/``"bicubic"`` (interpolation of
        pixel values at the LR centres, *not* flux-conserving; for demonstration only).
    """
    a = np.asarray(hr)
    if a.ndim != 2:
        raise AstroSRError(f"hr must be a 2-D image, got shape {a.shape}.")
    if as_int_factor(scale, name="scale") is None and float(scale) < 1:
        raise AstroSRError(f"scale={scale}: must be >= 1 (LR pixels larger than HR pixels).")
    if method not in ("area", "bilinear", "bicubic"):
        raise AstroSRError(f"method={method!r}: use area, bilinear or bicubic.")
    rng = np.random.default_rng(seed)
    psf_params: dict[str, Any] = {}
    if isinstance(psf, str) and psf.lower() in ("star", "star-gaussian", "star-airy", "star-gaussian+airy"):
        kind = "gaussian" if psf.lower() in ("star", "star-gaussian") else "gaussian+airy"
        kernel, psf_params = random_star_psf(rng, kind)
        psf_desc = psf_params["spec"]
    else:
        kernel = parse_psf(psf)
        psf_desc = describe_psf(psf)
    x = np.asarray(a, dtype=np.float64)
    if not np.isfinite(x).any():
        raise AstroSRError("hr is entirely NaN/blank; nothing to degrade.")
    blurred = convolve(x, kernel) if kernel is not None else x
    if method == "area":
        res = downsample(blurred, float(scale), wcs=wcs)
        lr, out_wcs = res.data, res.wcs
    else:
        from scipy import ndimage

        f = float(scale)
        shape = (int(a.shape[0] // f), int(a.shape[1] // f))
        # LR pixel centres in HR coordinates: (i + 0.5) * f - 0.5 (edge-aligned grids)
        yy = (np.arange(shape[0]) + 0.5) * f - 0.5
        xx = (np.arange(shape[1]) + 0.5) * f - 0.5
        grid = np.meshgrid(yy, xx, indexing="ij")
        lr = ndimage.map_coordinates(
            np.nan_to_num(blurred), grid, order=1 if method == "bilinear" else 3, mode="nearest"
        ) * (f * f)  # x f^2: same surface brightness, flux not conserved
        out_wcs = scale_wcs(wcs, 1.0 / f)
    noise_d = parse_noise(noise)
    lr = add_noise(lr, noise_d, rng)
    hdr = fits.Header() if header is None else header.copy()
    params = {
        "scale": float(scale),
        "psf": psf_desc,
        "noise": noise_d,
        "seed": seed,
        "method": method,
        **({"psf_params": {k: v for k, v in psf_params.items() if k != "spec"}} if psf_params else {}),
    }
    hdr["ASRDSCAL"] = (float(scale), "astrosr degrade: downsampling factor")
    hdr["ASRDPSF"] = (psf_desc[:68], "astrosr degrade: PSF on the HR grid")
    hdr["ASRDNOIS"] = (json.dumps(noise_d, sort_keys=True)[:68], "astrosr degrade: noise")
    hdr["ASRDSEED"] = (-1 if seed is None else int(seed), "astrosr degrade: seed (-1 = none)")
    hdr["ASRDMETH"] = (method, "astrosr degrade: area = flux-conserving")
    if kernel is not None:
        from .psf import measure_fwhm

        hdr["ASRDFWHM"] = (round(measure_fwhm(kernel), 4), "astrosr degrade: PSF FWHM (HR pixels)")
    return Degraded(data=lr, wcs=out_wcs, header=hdr, psf=kernel, params=params)

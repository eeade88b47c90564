"""Synthetic images with a known truth: star fields, Sersic galaxies, blank noise fields.

Every generator returns :class:`Simulated` (image, truth table, WCS, PSF). The truth is an
``astropy.table.QTable`` with 0-based ``x``, ``y`` and the *total flux rendered into the
image* for each source (so photometry can be checked against it), plus shape parameters.
The image is noiseless truth + sky + noise; ``image_clean`` keeps the noiseless version.

Rendering:
- stars: each flux is split bilinearly over the 4 pixels around its sub-pixel position
  (exact flux and centroid), then convolved with the PSF (flux-conserving, so stars near the
  edge keep their flux in the image);
- galaxies: elliptical Sersic profiles (``astropy.modeling.models.Sersic2D``) evaluated on a
  grid oversampled ``oversample`` times (and 5x more in the central 3x3 pixels, where the
  cusp of high-n profiles lives), block-summed, normalised to the drawn flux within the
  stamp, then PSF-convolved. ``use_galsim=True`` renders with GalSim instead (when installed; the
  ``[train]`` extra). Off by default so a field is the same whether or not GalSim is installed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import numpy as np
from astropy.table import QTable
from astropy.wcs import WCS

from ..exceptions import AstroSRError
from .degrade import add_noise
from .psf import convolve, gaussian_psf, parse_psf

__all__ = ["Simulated", "star_field", "sersic_galaxies", "blank_field", "DENSITIES"]

_FLUX_NOTE = "flux = true total flux rendered into the image (noiseless, before sky), not a measurement"

DENSITIES = {"sparse": 2e-4, "medium": 1e-3, "crowded": 5e-3}
"""Stars per pixel for the named densities."""


@dataclass
class Simulated:
    """A simulated image, its noiseless version and its truth table."""

    image: np.ndarray
    truth: QTable
    wcs: Optional[WCS]
    psf: Optional[np.ndarray]
    image_clean: Optional[np.ndarray] = None
    params: Optional[dict] = None


def _shape(shape) -> tuple[int, int]:
    if isinstance(shape, (int, np.integer)):
        shape = (int(shape), int(shape))
    shape = tuple(int(s) for s in shape)
    if len(shape) != 2 or min(shape) < 8:
        raise AstroSRError(f"shape={shape}: need a 2-D shape of at least 8x8 pixels.")
    return shape


def _make_wcs(shape, pixel_scale: Optional[float]) -> Optional[WCS]:
    if pixel_scale is None:
        return None
    from .resample import pixel_wcs

    return pixel_wcs(shape, pixel_scale_arcsec=float(pixel_scale))


def _psf(psf) -> Optional[np.ndarray]:
    return parse_psf(psf) if psf is not None else None


def _finish(clean, sky, noise, rng):
    img = clean + sky
    if noise is None or noise == "none":
        return img
    if noise == "poisson":
        # Poisson on source + sky counts (image units = counts)
        return add_noise(clean, {"kind": "poisson", "sky": max(sky, 0.0)}, rng) + sky
    return add_noise(img, noise, rng)


def _power_law(rng, n, fmin, fmax, alpha):
    """Fluxes from dN/dF ~ F^-alpha on [fmin, fmax] (inverse CDF)."""
    u = rng.random(n)
    if abs(alpha - 1.0) < 1e-9:
        return fmin * (fmax / fmin) ** u
    a = 1.0 - alpha
    return (fmin**a + u * (fmax**a - fmin**a)) ** (1.0 / a)


def star_field(
    shape: Union[int, tuple[int, int]] = 256,
    *,
    n_stars: Optional[int] = None,
    density: Union[str, float] = "medium",
    flux_range: tuple[float, float] = (50.0, 5e4),
    alpha: float = 2.0,
    psf: Union[str, np.ndarray, None] = "gaussian:1.5",
    sky: float = 10.0,
    noise: Union[None, str, dict] = "poisson",
    seed: Optional[int] = None,
    pixel_scale: Optional[float] = None,
) -> Simulated:
    """A field of point sources with a power-law luminosity function.

    Parameters
    ----------
    shape
        Image shape (or side).
    n_stars
        Number of stars; default from ``density`` (``sparse``/``medium``/``crowded`` or stars per pixel).
    flux_range, alpha
        Total fluxes drawn from ``dN/dF ~ F^-alpha`` on ``flux_range`` (counts).
    psf
        Kernel or ``--psf`` SPEC (None = unresolved delta stars).
    sky, noise
        Constant sky level added; noise ``"poisson"`` (source + sky), ``"none"``, ``"gaussian:SIGMA"`` or a dict.
    pixel_scale
        Arcsec/pixel for a TAN WCS (None = no WCS).
    """
    shape = _shape(shape)
    rng = np.random.default_rng(seed)
    if n_stars is None:
        dens = DENSITIES.get(density, None) if isinstance(density, str) else float(density)
        if dens is None:
            raise AstroSRError(f"density={density!r}: use {sorted(DENSITIES)} or stars per pixel.")
        n_stars = int(round(dens * shape[0] * shape[1]))
    if n_stars < 0:
        raise AstroSRError(f"n_stars={n_stars}: must be >= 0.")
    lo, hi = float(flux_range[0]), float(flux_range[1])
    if not 0 < lo <= hi:
        raise AstroSRError(f"flux_range={flux_range}: need 0 < min <= max.")
    kernel = _psf(psf)
    x = rng.uniform(0, shape[1] - 1, n_stars)
    y = rng.uniform(0, shape[0] - 1, n_stars)
    flux = _power_law(rng, n_stars, lo, hi, alpha)
    delta = np.zeros(shape)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = x - x0, y - y0
    x1, y1 = np.minimum(x0 + 1, shape[1] - 1), np.minimum(y0 + 1, shape[0] - 1)
    np.add.at(delta, (y0, x0), flux * (1 - fx) * (1 - fy))
    np.add.at(delta, (y0, x1), flux * fx * (1 - fy))
    np.add.at(delta, (y1, x0), flux * (1 - fx) * fy)
    np.add.at(delta, (y1, x1), flux * fx * fy)
    clean = convolve(delta, kernel) if kernel is not None else delta
    img = _finish(clean, float(sky), noise, rng)
    truth = QTable({"id": np.arange(1, n_stars + 1), "x": x, "y": y, "flux": flux})
    truth.meta.update({"flux_column": _FLUX_NOTE, "kind": "starfield", "sky": float(sky), "seed": seed})
    return Simulated(
        image=img,
        truth=truth,
        wcs=_make_wcs(shape, pixel_scale),
        psf=kernel,
        image_clean=clean,
        params={"n_stars": n_stars, "alpha": alpha, "flux_range": (lo, hi), "sky": sky, "noise": noise, "seed": seed},
    )


def _sersic_stamp(flux, r_eff, n, ellip, theta, xc, yc, half, oversample):
    """Render one Sersic profile into a (2 half + 1)^2 stamp centred on pixel (round(yc), round(xc))."""
    from astropy.modeling.models import Sersic2D

    ix, iy = int(round(xc)), int(round(yc))
    dx, dy = xc - ix, yc - iy
    model = Sersic2D(amplitude=1.0, r_eff=r_eff, n=n, x_0=dx, y_0=dy, ellip=ellip, theta=theta)
    size = 2 * half + 1
    o = oversample
    sub = (np.arange(size * o) + 0.5) / o - 0.5 - half
    xx, yy = np.meshgrid(sub, sub)
    stamp = model(xx, yy).reshape(size, o, size, o).mean(axis=(1, 3))
    # the cusp: central 3x3 pixels again with 5x finer sampling
    o2 = o * 5
    sub2 = (np.arange(3 * o2) + 0.5) / o2 - 0.5 - 1
    xx2, yy2 = np.meshgrid(sub2, sub2)
    stamp[half - 1 : half + 2, half - 1 : half + 2] = model(xx2, yy2).reshape(3, o2, 3, o2).mean(axis=(1, 3))
    stamp *= flux / stamp.sum()
    return stamp, iy, ix


def sersic_galaxies(
    shape: Union[int, tuple[int, int]] = 256,
    *,
    n: int = 20,
    flux_range: tuple[float, float] = (500.0, 5e4),
    r_eff_range: tuple[float, float] = (1.5, 8.0),
    sersic_n_range: tuple[float, float] = (0.5, 4.0),
    max_ellip: float = 0.7,
    psf: Union[str, np.ndarray, None] = "gaussian:1.5",
    sky: float = 10.0,
    noise: Union[None, str, dict] = "poisson",
    seed: Optional[int] = None,
    oversample: int = 5,
    pixel_scale: Optional[float] = None,
    use_galsim: bool = False,
) -> Simulated:
    """A field of elliptical Sersic galaxies with a truth table.

    Truth columns: ``id, x, y, flux`` (total rendered flux), ``r_eff`` (pixels, semi-major),
    ``sersic_n``, ``ellip`` (1 - b/a), ``theta`` (radians, from +x counter-clockwise).
    Each galaxy is rendered in a stamp of radius ``min(6 r_eff + 3, 60)`` pixels (flux beyond it
    is not rendered and not counted in ``flux``); stamps are clipped at the image edge
    (the truth flux then counts only what lies in the image).
    """
    shape = _shape(shape)
    if n < 0:
        raise AstroSRError(f"n={n}: must be >= 0.")
    rng = np.random.default_rng(seed)
    kernel = _psf(psf)
    gx = rng.uniform(0, shape[1] - 1, n)
    gy = rng.uniform(0, shape[0] - 1, n)
    flux = np.exp(rng.uniform(np.log(flux_range[0]), np.log(flux_range[1]), n))
    r_eff = rng.uniform(*r_eff_range, n)
    sn = rng.uniform(*sersic_n_range, n)
    ellip = rng.uniform(0.0, max_ellip, n)
    theta = rng.uniform(0.0, np.pi, n)
    clean = np.zeros(shape)
    kept = np.zeros(n)
    galsim = None
    if use_galsim:
        try:
            import galsim  # type: ignore
        except ImportError:
            galsim = None
    for i in range(n):
        half = int(min(60, np.ceil(6 * r_eff[i] + 3)))
        if galsim is not None:  # pragma: no cover
            prof = galsim.Sersic(
                n=float(np.clip(sn[i], 0.3, 6.2)),
                half_light_radius=float(r_eff[i] * np.sqrt(1 - ellip[i])),
                flux=float(flux[i]),
            )
            q = 1 - ellip[i]
            prof = prof.shear(q=q, beta=theta[i] * galsim.radians)
            ix, iy = int(round(gx[i])), int(round(gy[i]))
            im = prof.drawImage(nx=2 * half + 1, ny=2 * half + 1, scale=1.0, offset=(gx[i] - ix, gy[i] - iy)).array
            stamp = im * flux[i] / im.sum()
        else:
            stamp, iy, ix = _sersic_stamp(flux[i], r_eff[i], sn[i], ellip[i], theta[i], gx[i], gy[i], half, oversample)
        y0, x0 = iy - half, ix - half
        ys, xs = max(0, y0), max(0, x0)
        ye, xe = min(shape[0], y0 + stamp.shape[0]), min(shape[1], x0 + stamp.shape[1])
        part = stamp[ys - y0 : ye - y0, xs - x0 : xe - x0]
        clean[ys:ye, xs:xe] += part
        kept[i] = part.sum()
    if kernel is not None:
        clean = convolve(clean, kernel)
    img = _finish(clean, float(sky), noise, rng)
    truth = QTable(
        {
            "id": np.arange(1, n + 1),
            "x": gx,
            "y": gy,
            "flux": kept,
            "r_eff": r_eff,
            "sersic_n": sn,
            "ellip": ellip,
            "theta": theta,
        }
    )
    truth.meta.update(
        {
            "flux_column": _FLUX_NOTE,
            "kind": "galaxies",
            "sky": float(sky),
            "seed": seed,
            "renderer": "galsim" if galsim is not None else "astropy Sersic2D, oversampled",
        }
    )
    return Simulated(
        image=img,
        truth=truth,
        wcs=_make_wcs(shape, pixel_scale),
        psf=kernel,
        image_clean=clean,
        params={"n": n, "sky": sky, "noise": noise, "seed": seed},
    )


def blank_field(
    shape: Union[int, tuple[int, int]] = 256,
    *,
    sky: float = 10.0,
    noise_sigma: float = 1.0,
    seed: Optional[int] = None,
    pixel_scale: Optional[float] = None,
) -> Simulated:
    """Sky plus Gaussian noise only (no sources): for false-positive and noise checks."""
    shape = _shape(shape)
    if noise_sigma < 0:
        raise AstroSRError(f"noise_sigma={noise_sigma}: must be >= 0.")
    rng = np.random.default_rng(seed)
    clean = np.zeros(shape)
    img = clean + sky + (rng.normal(0.0, noise_sigma, shape) if noise_sigma > 0 else 0.0)
    truth = QTable({"id": np.zeros(0, int), "x": np.zeros(0), "y": np.zeros(0), "flux": np.zeros(0)})
    truth.meta.update({"kind": "blank", "sky": float(sky), "seed": seed})
    return Simulated(
        image=img,
        truth=truth,
        wcs=_make_wcs(shape, pixel_scale),
        psf=None,
        image_clean=clean,
        params={"sky": sky, "noise_sigma": noise_sigma, "seed": seed},
    )


def default_psf() -> np.ndarray:
    """The default simulation PSF (Gaussian, sigma 1.5 px)."""
    return gaussian_psf(1.5)

"""Realistic simulated skies for training: a seeded, unlimited generator of HR truth images.

Two layers, so that the expensive part is done once and can travel as a file:

1. :func:`stamp_bank` renders ``n`` galaxies once (seeded, cached as ``.npz``): bulge
   (Sersic n 2.5-4) + exponential disk + star-forming knots (``galsim.RandomKnots``),
   half-light radii log-normal (median 2.5 HR px, clipped to 0.6-12), bulge-to-total
   mostly small (Beta(1.2, 3)), disk axis ratios 0.15-1 with a rounder bulge, random
   orientation and sub-pixel centre, each convolved with the small HR instrument PSF
   (Gaussian sigma 0.6 px, as ``training.data`` gives its other simulations) and stored
   as float16 normalised to unit peak with a float32 flux scale. With GalSim absent the
   same model is drawn by a numpy renderer (recorded as ``bank.renderer``), so nothing
   fails; the two banks differ, and the sidecar's data summary says which was used.
2. :func:`sky_image` composes one HR sky from a ``numpy.random.Generator``: galaxies
   (count per pixel log-uniform over 3e-4 to 2e-3, fluxes from a truncated power law
   dN/dF ~ F^-2, brighter galaxies drawn from the larger stamps, a quarter of them placed
   as blends next to an earlier one), stars (density sparse to crowded, 2e-4 to 5e-3 per
   pixel, or the source's ``density``), all on a zero sky. Degradation (PSF, block sum,
   noise) is the same as for every other source (``training.data._degrade_pair``).

Flux: each stamp is stored normalised, and its flux scale is applied exactly, so a galaxy
contributes ``flux x (fraction of the profile inside its 64-px stamp)``; stars are split
bilinearly and convolved with a unit-sum PSF (flux-conserving). The truth is whatever is
rendered: nothing downstream assumes the catalogue fluxes.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["BANK_VERSION", "HR_SIGMA", "StampBank", "sky_image", "stamp_bank"]

HR_SIGMA = 0.6
"""Sigma (HR px) of the Gaussian instrument PSF every simulated HR truth keeps."""

BANK_VERSION = 1
STAMP = 64


@dataclass
class StampBank:
    """Unit-peak float16 galaxy stamps (N, S, S), their flux scale and parameters."""

    stamps: np.ndarray  # (N, S, S) float16, peak 1
    scale: np.ndarray  # (N,) float32: stamp * scale has unit total flux
    hlr: np.ndarray  # (N,) float32 disk half-light radius [HR px]
    renderer: str  # "galsim" | "numpy"
    seed: int

    def __len__(self) -> int:
        return int(self.stamps.shape[0])

    def stamp(self, i: int) -> np.ndarray:
        """Stamp ``i`` as float32 with unit total flux (inside the stamp)."""
        return self.stamps[i].astype(np.float32) * self.scale[i]


def _params(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    hlr = np.clip(np.exp(rng.normal(np.log(2.5), 0.55, n)), 0.6, 12.0)
    return {
        "hlr": hlr,
        "bt": rng.beta(1.2, 3.0, n),  # bulge-to-total flux
        "bulge_r": hlr * rng.uniform(0.2, 0.6, n),  # bulge half-light radius
        "bulge_n": rng.uniform(2.5, 4.0, n),
        "knot_frac": rng.uniform(0.0, 0.35, n) * (rng.random(n) < 0.7),
        "knots": rng.integers(5, 40, n),
        "q": rng.uniform(0.15, 1.0, n),  # disk axis ratio
        "theta": rng.uniform(0, np.pi, n),
        "dx": rng.uniform(-0.5, 0.5, n),
        "dy": rng.uniform(-0.5, 0.5, n),
        "seed": rng.integers(1, 2**31 - 1, n),
    }


def _render_galsim(p: dict, i: int, size: int) -> np.ndarray:
    import galsim

    disk_f = max(1.0 - p["bt"][i] - p["knot_frac"][i], 0.0)
    comps = []
    if disk_f > 0:
        comps.append(galsim.Exponential(half_light_radius=float(p["hlr"][i]), flux=disk_f))
    if p["knot_frac"][i] > 0:
        comps.append(
            galsim.RandomKnots(
                int(p["knots"][i]),
                half_light_radius=float(p["hlr"][i]),
                flux=float(p["knot_frac"][i]),
                rng=galsim.BaseDeviate(int(p["seed"][i])),
            )
        )
    disk = galsim.Add(comps).shear(q=float(p["q"][i]), beta=float(p["theta"][i]) * galsim.radians)
    qb = 1.0 - 0.5 * (1.0 - float(p["q"][i]))
    bulge = galsim.Sersic(
        n=float(p["bulge_n"][i]), half_light_radius=float(p["bulge_r"][i]), flux=float(p["bt"][i]), trunc=0
    ).shear(q=qb, beta=float(p["theta"][i]) * galsim.radians)
    gal = galsim.Convolve(galsim.Add([disk, bulge]), galsim.Gaussian(sigma=HR_SIGMA))
    img = gal.drawImage(nx=size, ny=size, scale=1.0, offset=(float(p["dx"][i]), float(p["dy"][i])), method="auto")
    return np.asarray(img.array, np.float64)


def _render_numpy(p: dict, i: int, size: int) -> np.ndarray:
    """The same bulge + disk + knots model without GalSim (3x oversampled, Gaussian knots)."""
    from scipy.ndimage import gaussian_filter

    os_ = 3
    c = (size - 1) / 2.0
    g = (np.arange(size * os_) + 0.5) / os_ - 0.5
    yy, xx = np.meshgrid(g - c - p["dy"][i], g - c - p["dx"][i], indexing="ij")
    th, q = p["theta"][i], p["q"][i]
    u = xx * np.cos(th) + yy * np.sin(th)
    v = -xx * np.sin(th) + yy * np.cos(th)

    def prof(r_e, n, qq):
        r = np.hypot(u, v / qq)
        b = 2.0 * n - 1.0 / 3.0 + 0.009876 / n
        a = np.exp(-b * (r / r_e) ** (1.0 / n))
        return a / a.sum()

    disk_f = max(1.0 - p["bt"][i] - p["knot_frac"][i], 0.0)
    img = disk_f * prof(p["hlr"][i], 1.0, q)
    img += p["bt"][i] * prof(p["bulge_r"][i], p["bulge_n"][i], 1.0 - 0.5 * (1.0 - q))
    if p["knot_frac"][i] > 0:
        kr = np.random.default_rng(int(p["seed"][i]))
        k = int(p["knots"][i])
        # knots follow the disk: exponential radii, same inclination
        rad = kr.gamma(2.0, p["hlr"][i] / 1.678, k)
        ang = kr.uniform(0, 2 * np.pi, k)
        ku, kv = rad * np.cos(ang), rad * np.sin(ang) * q
        kx = ku * np.cos(th) - kv * np.sin(th) + c + p["dx"][i]
        ky = ku * np.sin(th) + kv * np.cos(th) + c + p["dy"][i]
        knots = np.zeros_like(img)
        ix = np.clip(((kx + 0.5) * os_).astype(int), 0, size * os_ - 1)
        iy = np.clip(((ky + 0.5) * os_).astype(int), 0, size * os_ - 1)
        np.add.at(knots, (iy, ix), p["knot_frac"][i] / k)
        img += knots
    img = img.reshape(size, os_, size, os_).sum(axis=(1, 3))
    return gaussian_filter(img, HR_SIGMA, mode="constant")


def _bank_path(n: int, size: int, seed: int, renderer: str) -> Path:
    env = os.environ.get("ASTROSR_STAMP_BANK")
    if env:
        return Path(env)
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "napari-astrosr"
    key = hashlib.sha1(f"{BANK_VERSION}-{n}-{size}-{seed}-{renderer}".encode()).hexdigest()[:10]
    return cache / f"stamps_{renderer}_{n}_{key}.npz"


def stamp_bank(
    n: int = 1024, *, seed: int = 0, size: int = STAMP, renderer: str | None = None, cache: bool = True
) -> StampBank:
    """The seeded galaxy stamp bank (read from cache, else rendered and cached).

    Parameters
    ----------
    n, seed, size
        Number of galaxies, seed of their parameters, stamp side (HR px).
    renderer
        ``"galsim"`` or ``"numpy"``; default GalSim when importable, else numpy.
    cache
        Read/write ``$ASTROSR_STAMP_BANK`` (a file: used whatever its parameters, so a bank
        rendered elsewhere can travel) or a file under ``~/.cache/napari-astrosr``.
    """
    env_file = os.environ.get("ASTROSR_STAMP_BANK")
    if cache and env_file and Path(env_file).is_file():
        return _load(Path(env_file))
    if renderer is None:
        try:
            import galsim  # noqa: F401

            renderer = "galsim"
        except ImportError:
            renderer = "numpy"
    path = _bank_path(n, size, seed, renderer)
    if cache and path.is_file():
        return _load(path)
    p = _params(np.random.default_rng([seed, 4242]), n)
    render = _render_galsim if renderer == "galsim" else _render_numpy
    stamps = np.empty((n, size, size), np.float16)
    scale = np.empty(n, np.float32)
    for i in range(n):
        a = render(p, i, size)
        a = np.clip(a, 0.0, None) / max(a.sum(), 1e-30)
        peak = float(a.max())
        stamps[i] = (a / peak).astype(np.float16)
        scale[i] = 1.0 / float(stamps[i].astype(np.float64).sum())  # unit flux after the fp16 rounding
    bank = StampBank(stamps, scale, p["hlr"].astype(np.float32), renderer, int(seed))
    if cache:
        save_bank(bank, path)
    return bank


def save_bank(bank: StampBank, path) -> Path:
    """Write ``bank`` as a compressed ``.npz`` (atomically); :func:`stamp_bank` reads it back."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, stamps=bank.stamps, scale=bank.scale, hlr=bank.hlr, renderer=bank.renderer, seed=bank.seed)
    os.replace(tmp, path)
    return path


def _load(path: Path) -> StampBank:
    with np.load(path) as z:
        return StampBank(z["stamps"], z["scale"], z["hlr"], str(z["renderer"]), int(z["seed"]))


def _power_law(rng: np.random.Generator, n: int, lo: float, hi: float, alpha: float = 2.0) -> np.ndarray:
    """Draws from dN/dF ~ F^-alpha truncated to [lo, hi] (inverse CDF)."""
    u = rng.random(n)
    a1 = 1.0 - alpha
    return (lo**a1 + u * (hi**a1 - lo**a1)) ** (1.0 / a1)


def _add_stamp(img: np.ndarray, stamp: np.ndarray, cy: int, cx: int) -> None:
    s = stamp.shape[0]
    y0, x0 = cy - s // 2, cx - s // 2
    ys, xs = max(0, -y0), max(0, -x0)
    ye, xe = min(s, img.shape[0] - y0), min(s, img.shape[1] - x0)
    if ye > ys and xe > xs:
        img[y0 + ys : y0 + ye, x0 + xs : x0 + xe] += stamp[ys:ye, xs:xe]


def sky_image(
    shape: tuple[int, int],
    rng: np.random.Generator,
    bank: StampBank,
    *,
    star_density: float | None = None,
    galaxy_density: float | None = None,
    flux_range: tuple[float, float] = (20.0, 20000.0),
    blend_fraction: float = 0.25,
) -> np.ndarray:
    """One noiseless HR sky (zero background) of galaxies from ``bank`` and stars.

    Returns float32 ``shape``. Same ``rng`` state and bank: the same image.
    """
    from ..core.psf import convolve, gaussian_psf

    h, w = int(shape[0]), int(shape[1])
    area = h * w
    img = np.zeros((h, w), np.float64)
    # galaxies: brighter ones from the larger stamps (a size-luminosity relation with scatter)
    gd = galaxy_density if galaxy_density is not None else float(np.exp(rng.uniform(np.log(3e-4), np.log(2e-3))))
    n_gal = int(rng.poisson(gd * area))
    order = np.argsort(bank.hlr)
    lo, hi = flux_range
    fluxes = _power_law(rng, n_gal, lo, hi)
    pos = np.empty((n_gal, 2), np.int64)
    for i in range(n_gal):
        rank = np.log(fluxes[i] / lo) / np.log(hi / lo)
        q = float(np.clip(0.3 + 0.6 * rank + rng.normal(0, 0.2), 0.0, 1.0))
        k = int(order[min(int(q * len(bank)), len(bank) - 1)])
        if i > 0 and rng.random() < blend_fraction:
            j = int(rng.integers(i))
            r = rng.uniform(2.0, 6.0 + 1.5 * float(bank.hlr[k]))
            a = rng.uniform(0, 2 * np.pi)
            pos[i] = np.clip(np.round(pos[j] + r * np.array([np.sin(a), np.cos(a)])), 0, [h - 1, w - 1])
        else:
            pos[i] = rng.integers(0, h), rng.integers(0, w)
        _add_stamp(img, bank.stamp(k) * fluxes[i], int(pos[i, 0]), int(pos[i, 1]))
    # stars: bilinear split (exact flux and centroid), then the HR PSF (unit sum)
    sd = star_density if star_density is not None else float(np.exp(rng.uniform(np.log(2e-4), np.log(5e-3))))
    n_star = int(rng.poisson(sd * area))
    stars = np.zeros((h + 1, w + 1), np.float64)
    if n_star:
        y = rng.uniform(0, h - 1, n_star)
        x = rng.uniform(0, w - 1, n_star)
        f = _power_law(rng, n_star, lo, 5 * hi)
        iy, ix = np.floor(y).astype(int), np.floor(x).astype(int)
        fy, fx = y - iy, x - ix
        for dy, dx, wt in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
            np.add.at(stars, (iy + dy, ix + dx), f * wt)
        img += convolve(stars[:h, :w], gaussian_psf(HR_SIGMA))
    return img.astype(np.float32)

"""Simulated fields for benchmarks/psf_estimate.py and benchmarks/noise_estimate.py (no package code under test).

Stars are rendered on a 5x finer grid (exact sub-pixel positions), convolved with the PSF on that grid and
block-summed to image pixels, so every star is the pixel-integrated PSF at its own sub-pixel phase. The true
image-grid PSF is the fine PSF block-summed with its centre on the centre of the middle pixel.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import fftconvolve

OVER = 5


def fine_kernel(kind: str, fwhm: float = 3.0, *, path: str | None = None) -> np.ndarray:
    """A PSF on the 5x fine grid, odd size a multiple of OVER (so block sums stay centred)."""
    from napari_astrosr.core.psf import airy_psf, gaussian_psf, moffat_psf, psf_from_fits, resample_psf

    if kind == "gaussian":
        k = gaussian_psf(fwhm * OVER / 2.3548)
    elif kind == "moffat":
        k = moffat_psf(fwhm * OVER, 2.5)
    elif kind == "airy":
        k = airy_psf(fwhm * OVER / 0.843, size=int(fwhm * OVER * 5) | 1)
    elif kind == "file":
        k = resample_psf(psf_from_fits(path), float(OVER))
    else:
        raise ValueError(kind)
    n = k.shape[0]
    m = ((n // OVER) // 2) * 2 + 1  # odd number of image pixels
    while m * OVER < n:
        m += 2
    out = np.zeros((m * OVER, m * OVER))
    o = (m * OVER - n) // 2
    out[o : o + n, o : o + n] = k
    return out / out.sum()


def block(x: np.ndarray, f: int = OVER) -> np.ndarray:
    h, w = (x.shape[0] // f) * f, (x.shape[1] // f) * f
    return x[:h, :w].reshape(h // f, f, w // f, f).sum(axis=(1, 3))


def true_kernel(fine: np.ndarray) -> np.ndarray:
    return block(fine)


def star_field(
    fine: np.ndarray,
    *,
    n: int = 256,
    n_stars: int = 40,
    flux=(2e3, 2e5),
    sky_sigma: float = 1.0,
    seed: int = 0,
    galaxies: int = 0,
    noise: bool = True,
) -> np.ndarray:
    """Stars (+ optional extended Sersic-like blobs) with Gaussian noise ``sky_sigma``."""
    rng = np.random.default_rng(seed)
    N = n * OVER
    fine_img = np.zeros((N, N))
    ys = rng.integers(0, N, n_stars)
    xs = rng.integers(0, N, n_stars)
    fl = np.exp(rng.uniform(np.log(flux[0]), np.log(flux[1]), n_stars))
    np.add.at(fine_img, (ys, xs), fl)
    img = fftconvolve(fine_img, fine, mode="same")
    out = block(img)
    if galaxies:
        yy, xx = np.mgrid[0:n, 0:n]
        for _ in range(galaxies):
            y0, x0 = rng.uniform(0, n, 2)
            re = rng.uniform(4, 25)
            q = rng.uniform(0.4, 1.0)
            th = rng.uniform(0, np.pi)
            dx, dy = xx - x0, yy - y0
            u = dx * np.cos(th) + dy * np.sin(th)
            v = (-dx * np.sin(th) + dy * np.cos(th)) / q
            r = np.hypot(u, v)
            prof = np.exp(-1.68 * (r / re - 1.0))
            out += rng.uniform(0.5, 20) * sky_sigma * prof / prof.max() * 3
    if noise:
        out = out + rng.normal(0, sky_sigma, out.shape)
    return out

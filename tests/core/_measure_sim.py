"""Seeded synthetic fields with known per-source flux for the measurement tests."""

from __future__ import annotations

import numpy as np
from astropy.table import QTable


def gaussian_field(
    shape=(160, 160),
    n=25,
    *,
    seed=0,
    sigma=(1.2, 2.5),
    flux=(500.0, 5000.0),
    noise=1.0,
    sky=10.0,
    margin=12,
    min_sep=12.0,
):
    """Isolated elliptical Gaussian sources on a flat sky with Gaussian noise.

    Each source's discretised profile sums exactly to its true flux (so "truth" is what an
    infinite aperture on the noiseless image would measure).
    """
    rng = np.random.default_rng(seed)
    ny, nx = shape
    xs, ys = [], []
    while len(xs) < n:
        x, y = rng.uniform(margin, nx - 1 - margin), rng.uniform(margin, ny - 1 - margin)
        if all((x - a) ** 2 + (y - b) ** 2 > min_sep**2 for a, b in zip(xs, ys)):
            xs.append(x)
            ys.append(y)
    x, y = np.array(xs), np.array(ys)
    sa = rng.uniform(*sigma, n)
    sb = sa * rng.uniform(0.6, 1.0, n)
    th = rng.uniform(-np.pi / 2, np.pi / 2, n)
    f = rng.uniform(*flux, n)
    img = np.zeros(shape)
    yy, xx = np.mgrid[:ny, :nx]
    for i in range(n):
        dx, dy = xx - x[i], yy - y[i]
        c, s = np.cos(th[i]), np.sin(th[i])
        u, v = c * dx + s * dy, -s * dx + c * dy
        p = np.exp(-0.5 * ((u / sa[i]) ** 2 + (v / sb[i]) ** 2))
        img += f[i] * p / p.sum()
    truth = QTable(dict(x=x, y=y, a=sa, b=sb, theta=th, flux=f))
    noisy = img + sky + rng.normal(0, noise, shape) if noise else img + sky
    return noisy.astype(np.float32), img, truth

"""Render docs/images/training_skies.png: examples of training/skies.py (seeded) and their STAR degradation.

ASTROSR_STAMP_BANK=.gpudata/stamps.npz python scripts/sky_examples.py   # the GalSim bank gpu_prepare.py copies
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from napari_astrosr.core.degrade import degrade, random_star_psf
from napari_astrosr.training import skies


def main(out="docs/images/training_skies.png") -> int:
    bank = skies.stamp_bank()
    rng = np.random.default_rng(2026)
    sparse = skies.sky_image((256, 256), np.random.default_rng(1), bank, star_density=2e-4, galaxy_density=1.5e-3)
    crowded = skies.sky_image((256, 256), np.random.default_rng(2), bank, star_density=5e-3, galaxy_density=5e-4)
    psf, prm = random_star_psf(rng, kind="gaussian+airy")
    lr = np.asarray(degrade(sparse, scale=2, psf=psf, noise=None).data)
    stamps = np.block([[bank.stamp(int(i)) for i in row] for row in np.argsort(bank.hlr)[::-128][:8].reshape(2, 4)])
    fig, ax = plt.subplots(1, 4, figsize=(16, 4.4))

    def show(a, im, title):
        v = np.arcsinh(im / (1e-3 * max(im.max(), 1e-30)))
        a.imshow(v, origin="lower", cmap="gray")
        a.set_title(title, fontsize=9)
        a.set_xticks([])
        a.set_yticks([])

    show(ax[0], sparse, f"sky: galaxies + sparse stars (seed 1), {bank.renderer} stamps")
    show(ax[1], crowded, "crowded star field with galaxies (seed 2)")
    show(ax[2], lr, f"the first, degraded x2: {prm['spec']}\nflux {sparse.sum():.0f} -> {lr.sum():.0f}")
    show(ax[3], stamps, "bank stamps, largest to smallest\n(bulge + disk + knots, HR PSF sigma 0.6 px)")
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))

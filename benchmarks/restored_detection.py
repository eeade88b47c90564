"""False sources when detecting on a restored image: sep's minimum area in output pixels or in input pixels' area.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/restored_detection.py [--seeds 3]

Per scale (x2: PSF ``gaussian:1.0`` on the output grid, x4: ``gaussian:2.0``), ``--seeds`` noise-only and
star fields (40 stars, fluxes 200-5e4, on a 128^2 input with unit Gaussian noise) are restored by the default
FISR (``flux_noise`` = the true sigma, the PSF given) and passed to ``core.detection.detect_sources`` at its
defaults (1.5 sigma): on the input (minarea 5), and on the output with minarea 5 and 5 s^2
(:func:`~napari_astrosr.core.detection.minarea_for_scale`, the default of ``astrosr detect`` and the Detect
widget on restored images), thresholded against sep's own rms or against the output ERR x ERRFILT.
Counts are summed over the seeds; on the star fields the truth has 40 stars per seed.
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    from napari_astrosr.core.degrade import degrade
    from napari_astrosr.core.detection import detect_sources, minarea_for_scale
    from napari_astrosr.core.simulate import star_field
    from napari_astrosr.restoration import restore

    warnings.simplefilter("ignore")
    cols = [
        "input, minarea 5",
        "output, minarea 5",
        "output, minarea 5 s^2",
        "output vs ERR x ERRFILT, minarea 5",
        "output vs ERR x ERRFILT, minarea 5 s^2",
    ]
    print(__doc__.split("\n\n")[1].strip())
    print()
    print("| scale | field | stars (truth) | " + " | ".join(cols) + " |")
    print("|---|---|---|" + "---|" * len(cols))
    for scale, psf in ((2, "gaussian:1.0"), (4, "gaussian:2.0")):
        for kind, n_stars in (("noise only", 0), ("stars", 40)):
            tot = dict.fromkeys(cols, 0)
            for seed in range(args.seeds):
                hr = star_field(
                    128 * scale, n_stars=n_stars, psf=None, sky=0.0, noise="none", seed=seed, flux_range=(200, 5e4)
                ).image
                lr = degrade(hr, scale=scale, psf=psf, seed=seed).data.astype(np.float64)
                lr = lr + np.random.default_rng(100 + seed).normal(size=lr.shape)
                r = restore(lr, method="fisr", scale=scale, device="cpu", psf=psf, flux_noise=1.0)
                big = minarea_for_scale(scale)
                errf = (r.err * r.err_filter).astype(np.float32)
                cases = {
                    cols[0]: (lr, None, 5),
                    cols[1]: (r.data, None, 5),
                    cols[2]: (r.data, None, big),
                    cols[3]: (r.data, errf, 5),
                    cols[4]: (r.data, errf, big),
                }
                for k, (img, err, area) in cases.items():
                    tot[k] += len(detect_sources(np.asarray(img, np.float32), err=err, minarea=area))
            truth = n_stars * args.seeds
            print(f"| x{scale} | {kind} | {truth} | " + " | ".join(str(tot[c]) for c in cols) + " |")


if __name__ == "__main__":
    main()

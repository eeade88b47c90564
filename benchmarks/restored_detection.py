"""Detecting on a restored image: false sources by minimum area, and flux errors against Monte Carlo.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/restored_detection.py [--seeds 3] [--draws 30]

Per scale (x2: PSF ``gaussian:1.0`` on the output grid, x4: ``gaussian:2.0``), ``--seeds`` noise-only and
star fields (40 stars, fluxes 200-5e4, on a 128^2 input with unit Gaussian noise) are restored by the default
FISR (``flux_noise`` = the true sigma, the PSF given) and passed to ``core.detection.detect_sources`` at its
defaults (1.5 sigma): on the input (minarea 5), and on the output with minarea 5 and 5 s^2
(:func:`~napari_astrosr.core.detection.minarea_for_scale`, the default of ``astrosr detect`` and the Detect
widget on restored images), thresholded against sep's own rms or against the output ERR x ERRFILT.
Counts are summed over the seeds; on the star fields the truth has 40 stars per seed.

Flux errors: a restored field (x2, x4 simulated stars as above with 25 stars of flux 300-3000) is detected once; then ``--draws`` restores of
the same input plus fresh noise of the same sigma give each source's Kron-flux scatter at the detected apertures
(the Monte-Carlo truth), against the catalog's ``flux_err``: sep's independent-pixel error with the default
minimum circle (3.5 px), the same with the circle on the input's sky (3.5 s), and
:func:`~napari_astrosr.core.detection.options_for_scale` (that circle and empty-sky aperture errors: what
``astrosr detect``, the Detect widget and the main job use on restored images). 1 is right; below 1 the catalog
overstates the error, above 1 it understates it. Simulated fields only: on a real image the empty apertures also
measure its own correlated noise and faint-source confusion (as they should), which a Monte Carlo of white noise
does not.
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--draws", type=int, default=30)
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
    flux_errors(args.draws)


def _flux_cases():
    from napari_astrosr.core.degrade import degrade
    from napari_astrosr.core.simulate import star_field

    for scale, psf in ((2, "gaussian:1.0"), (4, "gaussian:2.0")):
        hr = star_field(128 * scale, n_stars=25, psf=None, sky=0.0, noise="none", seed=5, flux_range=(300, 3e3)).image
        clean = degrade(hr, scale=scale, psf=psf, seed=1).data.astype(np.float64)
        for method in ("fisr", "backprojection"):
            yield f"sim stars 128^2, {psf}", clean, 1.0, scale, psf, method


def flux_errors(draws: int) -> None:
    from napari_astrosr.core.detection import detect, minarea_for_scale, options_for_scale
    from napari_astrosr.core.photometry import kron_flux
    from napari_astrosr.restoration import restore

    variants = ("pixel, circle 3.5 px", "pixel, circle 3.5 s px", "options_for_scale (circle 3.5 s, empty sky)")
    print()
    print(f"Monte-Carlo scatter of Kron fluxes / catalog flux_err ({draws} draws), median (10-90%) over sources:")
    print()
    print("| field | scale | method | sources | " + " | ".join(variants) + " |")
    print("|---|---|---|---|" + "---|" * len(variants))
    for label, clean, sigma, scale, psf, method in _flux_cases():
        rng = np.random.default_rng(0)

        def run(data):
            return restore(data, method=method, scale=scale, device="cpu", psf=psf, flux_noise=sigma).data

        first = np.asarray(run(clean + sigma * rng.normal(size=clean.shape)), np.float32)
        opts = options_for_scale(scale)
        dets = {
            variants[0]: (detect(first, minarea=minarea_for_scale(scale)), 3.5),
            variants[1]: (detect(first, minarea=opts["minarea"], kron_min_radius=opts["kron_min_radius"]), None),
            variants[2]: (detect(first, **opts), None),
        }
        outs = [np.asarray(run(clean + sigma * rng.normal(size=clean.shape)), np.float64) for _ in range(draws)]
        cells = []
        for name in variants:
            d, rmin = dets[name]
            rmin = opts["kron_min_radius"] if rmin is None else rmin
            t = d.sources
            fl = np.array([kron_flux(o - d.background.back, t, err=d.background.rms, min_radius=rmin)[0] for o in outs])
            r = fl.std(axis=0, ddof=1) / np.asarray(t["flux_err"])
            cells.append(f"{np.median(r):.2f} ({np.percentile(r, 10):.2f}-{np.percentile(r, 90):.2f})")
        n = len(dets[variants[2]][0].sources)
        print(f"| {label} | x{scale} | {method} | {n} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

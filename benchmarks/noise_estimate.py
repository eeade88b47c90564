"""Benchmark: the noise sigma found in an image against the sigma actually added (core.noise.estimate_sigma).

Estimators, each a row per case:

- ``sep`` -- sep's global background rms (``core.projection.estimate_lr_noise``, what ``--flux-noise auto``
  used when issue 20 was filed);
- ``diff`` -- MAD of lag-1..3 pixel differences (the largest), a classical high-pass estimator;
- ``auto`` -- the shipped ``estimate_sigma``: a running-median (9 px) high-pass, a dilated source mask from
  the image itself, a clipped MAD scatter.

Simulated fields (256 px, Gaussian PSF FWHM 3 px, ``benchmarks/_psfnoise_sim.py``): blank, sparse (30
stars), crowded (600 stars, flux 200-5e4), very crowded (1500 stars, flux 50-5e4: confusion), galaxies (25
extended profiles + 20 stars); noise sigma 2 white, drizzle-like (white smoothed by a 2x2 box, rescaled) and
resampled (white noise on a 128 px image, then the flux-conserving bicubic x2). Truth: the standard deviation
of the noise array actually added (per output pixel).

Real fields: the held-out crops of benchmarks/quality.py (128 and 512 HR px), degraded the STAR way
(Gaussian sigma 1 output px, block sum, x2 and x4) with Gaussian noise of 1% of the LR robust peak, as in the
quality benchmark. The real images carry their own noise too: errors are given against the added sigma and
against ``sqrt(added^2 + native^2)`` (``native``: ``auto`` on the same LR without added noise, an estimate).

Run:  OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/noise_estimate.py [--out docs/results_psf_noise_noise.md]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

METHODS = ("sep", "diff", "auto")


def _est(img):
    from napari_astrosr.core.noise import estimate_sigma

    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for m in METHODS:
            out[m] = estimate_sigma(img, method=m)
    return out


def _fmt(e, truth):
    return " | ".join(f"{e[m] / truth - 1:+.1%}" for m in METHODS)


def simulated(lines):
    from _psfnoise_sim import fine_kernel, star_field
    from scipy import ndimage

    from napari_astrosr.core.resample import upsample

    fine = fine_kernel("gaussian", 3.0)
    fields = {
        "blank": dict(n_stars=0),
        "sparse": dict(n_stars=30),
        "crowded": dict(n_stars=600, flux=(200, 5e4)),
        "very crowded": dict(n_stars=1500, flux=(50, 5e4)),
        "galaxies": dict(n_stars=20, galaxies=25),
    }
    lines += [
        "## Simulated fields (sigma 2, 256 px)",
        "",
        "| field | noise | true sigma | sep | diff | auto |",
        "|---|---|---|---|---|---|",
    ]
    worst = 0.0
    for name, kw in fields.items():
        rng = np.random.default_rng(5)
        clean = star_field(fine, n=256, seed=3, noise=False, **kw)
        w = rng.normal(0, 1, clean.shape)
        box = ndimage.uniform_filter(w, 2)
        cases = [("white", 2.0 * w), ("drizzle-like 2x2", 2.0 * box / box.std())]
        # resampled: the field at 128 px with white noise, bicubic x2 (flux-conserving)
        lr_clean = star_field(
            fine,
            n=128,
            seed=3,
            noise=False,
            **{k: (max(v // 4, 0) if k in ("n_stars", "galaxies") else v) for k, v in kw.items()},
        )
        n_lr = 2.0 * rng.normal(0, 1, lr_clean.shape)
        up_noise = upsample(n_lr, 2)
        for label, noise in cases:
            t = float(noise.std())
            e = _est(clean + noise)
            worst = max(worst, abs(e["auto"] / t - 1))
            lines.append(f"| {name} | {label} | {t:.3f} | {_fmt(e, t)} |")
        t = float(up_noise.std())
        e = _est(upsample(lr_clean + n_lr, 2))
        worst = max(worst, abs(e["auto"] / t - 1))
        lines.append(f"| {name} | resampled (bicubic x2) | {t:.3f} | {_fmt(e, t)} |")
    lines += ["", f"Largest |error| of `auto` on simulated fields: {worst:.1%}.", ""]


def real(lines, sides):
    from quality import DATA, FIELDS, _crop, _degrade

    from napari_astrosr.core.fits_io import read_fits
    from napari_astrosr.core.noise import estimate_sigma

    lines += [
        "## Real held-out fields, degraded x2/x4 + 1% noise (quality.py's cases)",
        "",
        "Errors against the added sigma, then against `sqrt(added^2 + native^2)` (native: `auto` on the LR "
        "image without added noise -- an estimate, so that column is a consistency check; the rows where the "
        "added noise dominates, native/added << 1, are the independent ones).",
        "",
        "| field | crop | scale | added sigma | native/added | sep | diff | auto | sep vs total | auto vs total |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    worst = {}
    for label, rel, _ in FIELDS:
        img = read_fits(DATA / rel).data
        img = img if img.ndim == 2 else img[img.shape[0] // 2]
        for side in sides:
            hr = _crop(np.nan_to_num(img), side)
            for scale in (2, 4):
                clean, _ = _degrade(hr, scale, "gaussian:1.0", False, 0)
                noisy, sig = _degrade(hr, scale, "gaussian:1.0", True, 0)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    nat = estimate_sigma(clean)
                e = _est(noisy)
                tot = float(np.hypot(sig, nat))
                for m in METHODS:
                    worst[m] = max(worst.get(m, 0.0), abs(e[m] / tot - 1))
                lines.append(
                    f"| {label} | {hr.shape[0]} | x{scale} | {sig:.4g} | {nat / sig:.2f} | {_fmt(e, sig)} | "
                    f"{e['sep'] / tot - 1:+.1%} | {e['auto'] / tot - 1:+.1%} |"
                )
    lines += ["", "Largest |error| against added (+) native: " + ", ".join(f"{m} {worst[m]:.1%}" for m in METHODS), ""]


def real_maps(lines):
    from quality import DATA

    from napari_astrosr.core.fits_io import read_fits
    from napari_astrosr.core.noise import estimate_sigma, find_noise

    lines += [
        "## Real fields with their own noise maps (native noise, no noise added)",
        "",
        "| field | map | map median sigma | sep | diff | auto |",
        "|---|---|---|---|---|---|",
    ]
    for label, img_rel, map_rel in [
        (
            "A2744 dwarf F105W (WFC3/IR drizzled)",
            "hst_wfc3ir_f105w_a2744/abell_2744_dwarf_galaxy_f105w.fits.gz",
            "hst_wfc3ir_f105w_a2744/abell_2744_dwarf_galaxy_f105w_rms.fits.gz",
        ),
        ("ESO NTT field", "eso_ntt_sep_catalog/image.fits", "eso_ntt_sep_catalog/rms.fits"),
    ]:
        img = read_fits(DATA / img_rel, dtype=np.float64).data
        s, info = find_noise(img, noise=DATA / map_rel)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            e = {m: estimate_sigma(img, method=m) for m in METHODS}
        lines.append(f"| {label} | {Path(map_rel).name} | {info.sigma:.4g} | {_fmt(e, info.sigma)} |")
    lines.append("")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out")
    ap.add_argument("--sides", default="128,512")
    args = ap.parse_args(argv)
    t0 = time.time()
    lines = [
        "# Noise estimate vs true sigma",
        "",
        "`OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/noise_estimate.py`",
        "",
    ]
    simulated(lines)
    from quality import DATA

    if DATA.is_dir():
        real(lines, [int(s) for s in args.sides.split(",")])
        real_maps(lines)
    else:
        lines.append(f"(real fields skipped: no {DATA})")
    lines.append(f"Total time {time.time() - t0:.0f} s on this machine.")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()

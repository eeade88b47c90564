"""What S_F measures on a stack with known truth: resolution, or noise?

    .venv/bin/python benchmarks/coadd_sf_truth.py [--stacks sim,simfaint] [--sim-seed 0] [--cap 1800] [--ensemble 3]

AstroClearNet's sharpness S_F (``core.metrics.sharpness``: the mean over all frequencies of
log(|FFT| + 1e-10)) rewards power at every frequency, whatever it is. On the simulated stacks of
``benchmarks/coadd.py`` the truth is known, so this prints each image's S_F against the
inverse-variance (ivar) coadd's beside what the truth says of it:

- ``ideal``: the noiseless truth seen through a Gaussian of the given FWHM (the sharpest frame's,
  and the DIP output's own, measured on its 8 brightest stars): the S_F of a perfect image at
  that resolution; ``+ ivar noise``: the same plus white noise of the ivar coadd's median sigma;
- ``ivar``; ``dip``: ``CoaddOptions`` defaults (one seed, noise-model stop); ``dip, ensemble``:
  ``--ensemble`` seeds (the benchmark's truth rows); ``dip to the cap``: ``noise_stop=False``
  with ``--cap`` steps.

Columns: star FWHM (median over the 8 brightest truth stars, second moments); rms error against
the truth (12 px border dropped) at the ivar coadd's resolution (the DIP and ideal images
convolved with ``PSF_eff`` against the truth convolved with it, as ``benchmarks/coadd.py``'s truth
rows; an image blurrier than the truth pays for its blur: what the DIP's sharpening gains against
the truth shows here, and so would any noise it fitted); the share of the image's power above 0.25 cycles/px. Sky sigma: ``core.metrics.sky_sigma``, as in
``benchmarks/coadd.py``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

B = 12  # border dropped, as in benchmarks/coadd_truth_chi2.py


def fwhm_at(img, xy, r=8):
    """Median second-moment FWHM of the image around the given star positions."""
    from napari_astrosr.core.psf import measure_fwhm

    out = []
    for x, y in xy:
        xi, yi = int(round(x)), int(round(y))
        c = np.nan_to_num(np.asarray(img, np.float64)[yi - r : yi + r + 1, xi - r : xi + r + 1])
        if c.shape != (2 * r + 1, 2 * r + 1):
            continue
        c = c - np.median(np.concatenate([c[0], c[-1], c[:, 0], c[:, -1]]))
        out.append(measure_fwhm(np.clip(c, 0, None)))
    return float(np.median(out))


def high_share(img):
    """Share of the image's power (mean removed) above 0.25 cycles/px, interior."""
    d = np.nan_to_num(np.asarray(img, np.float64))[B:-B, B:-B]
    p = np.abs(np.fft.fft2(d - d.mean())) ** 2
    fy, fx = np.meshgrid(np.fft.fftfreq(d.shape[0]), np.fft.fftfreq(d.shape[1]), indexing="ij")
    return float(p[np.hypot(fy, fx) > 0.25].sum() / max(p.sum(), 1e-300))


def main() -> None:
    from coadd import SIMS, sim_stack
    from scipy.signal import fftconvolve

    from napari_astrosr.coadd_job import CoaddOptions, coadd_job
    from napari_astrosr.core.coadd import ivar_coadd
    from napari_astrosr.core.metrics import sharpness, sky_sigma
    from napari_astrosr.core.psf import convolve, gaussian_psf, measure_fwhm
    from napari_astrosr.models.dip_coadd import effective_psf
    from napari_astrosr.progress import run

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stacks", default="sim,simfaint")
    ap.add_argument("--sim-seed", type=int, default=0)
    ap.add_argument("--cap", type=int, default=1800, help="step cap of the 'dip to the cap' row")
    ap.add_argument("--ensemble", type=int, default=3)
    args = ap.parse_args()
    print(
        "| stack | image | star FWHM px | S_F | S_F vs ivar | sky sigma vs ivar | rms error vs truth at the ivar's resolution "
        "| power above 0.25 c/px | s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.stacks.split(","):
        size = 192 if name == "sim" else 160
        seed = args.sim_seed + (name == "simfaint")
        st, truth, xy, flux = sim_stack(size=size, seed=seed, **SIMS[name])
        bright = xy[np.argsort(flux)[::-1][:8]]
        pe = effective_psf(st)
        half = pe.shape[0] // 2

        def blur(a):
            return fftconvolve(np.pad(np.nan_to_num(np.asarray(a, np.float64)), half, mode="reflect"), pe, mode="valid")

        t_eff = blur(truth)
        iv = ivar_coadd(st)
        sig = float(np.nanmedian(np.asarray(iv.uncertainty, np.float64)))
        rng = np.random.default_rng(seed)
        s_iv, sky_iv = sharpness(iv.data), sky_sigma(iv.data)
        dips = []
        for label, opts in (
            ("dip (defaults)", CoaddOptions(preview_every=0, threads=1)),
            (f"dip, ensemble {args.ensemble}", CoaddOptions(preview_every=0, threads=1, ensemble=args.ensemble)),
            (
                f"dip to the cap ({args.cap})",
                CoaddOptions(preview_every=0, threads=1, noise_stop=False, iterations=args.cap),
            ),
        ):
            t0 = time.perf_counter()
            res = run(coadd_job(st, options=opts))
            dips.append(
                (f"{label}, {(res.metrics or {}).get('steps', '?')} steps", res.data, time.perf_counter() - t0, True)
            )
        rows = []
        for fw in (min(measure_fwhm(p) for p in st.psfs), fwhm_at(dips[0][1], bright)):
            ideal = convolve(truth, gaussian_psf(fw / 2.3548))
            rows.append((f"ideal at FWHM {fw:.2f} px", ideal, 0.0, True))
            rows.append((f"ideal at FWHM {fw:.2f} px + ivar noise", ideal + rng.normal(0, sig, ideal.shape), 0.0, True))
        rows.append(("ivar", iv.data, 0.0, False))
        for label, img, sec, sharp in rows + dips:
            s = sharpness(img)
            fw = fwhm_at(img, bright)
            e = (blur(img) if sharp else np.nan_to_num(img)) - t_eff
            rms = float(np.sqrt(np.mean(e[B:-B, B:-B] ** 2)))
            print(
                f"| {name} seed {seed} | {label} | {fw:.2f} | {s:.3f} | {100 * (s / s_iv - 1):+.1f}% "
                f"| {100 * (sky_sigma(img) / sky_iv - 1):+.0f}% | {rms:.3f} | {100 * high_share(img):.0f}% | {sec:.0f} |"
            )


if __name__ == "__main__":
    main()

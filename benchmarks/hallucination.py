"""Hallucination checks for every method: blank fields and a grid of point sources.

1. **Blank fields.** Noise-only LR images (``core.simulate.blank_field``, several seeds) are
   restored; sources are detected on the input and on the output at the *same* threshold
   in units of each image's own background rms (sep). A method that invents sources finds
   more in its output than in its input.
2. **Point-source grid.** A regular grid of point sources of several fluxes, blurred with
   a sigma = 1 px Gaussian on the HR grid and block-summed x2 (x4) into the LR input; after
   restoration the FWHM of each source (``core.psf.measure_fwhm`` on a cutout) is compared
   with the truth's FWHM (the HR PSF) and the bicubic result's: no method should broaden
   the PSF, and the total flux of each source is checked too.
3. **Translation (scale 1: Pix2WGAN and its cascade).** The same two checks on the HST-like grid:
   blank noise-only images, and the point grid blurred by a ground-like Gaussian PSF (sigma
   GROUND_SIGMA px, roughly HSC's 0.6" seeing on a 0.06"/px grid) plus noise; Richardson-Lucy with
   that PSF is the classical comparison. The networks must not invent sources nor broaden the
   points beyond their input.

Run:  .venv/bin/python benchmarks/hallucination.py [--out docs/results_hallucination.md]
"""

from __future__ import annotations

import argparse
import sys
import warnings

import numpy as np


def _count(img, thresh=3.0, err=None, minarea=5):
    from napari_astrosr.core.detection import detect_sources

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return len(detect_sources(img, thresh=thresh, minarea=minarea, err=err))
        except Exception:  # noqa: BLE001
            return 0


def available_methods(scale):
    from napari_astrosr.models.checkpoints import bundled_checkpoint

    m = ["bicubic", "lanczos", "richardson-lucy", "backprojection"]
    m += [n for n in ("fisr", "restormer") if bundled_checkpoint(n, scale)]
    return m


GROUND_SIGMA = 4.0


def translation_methods():
    from napari_astrosr.models.checkpoints import bundled_checkpoint

    return ["richardson-lucy"] + [n for n in ("pix2wgan", "pix2wgan-cascade") if bundled_checkpoint(n, 1)]


def _restore(lr, method, scale, psf=None):
    from napari_astrosr.restoration import restore

    if psf is None:
        psf = "gaussian:1.0" if scale > 1 else f"gaussian:{GROUND_SIGMA}"
    kw = {"psf": psf} if method in ("richardson-lucy", "backprojection") else {}
    if method == "backprojection":
        kw["flux_noise"] = "exact"  # as measured before the restore defaults changed (issue 20)
    elif method not in ("bicubic", "lanczos", "richardson-lucy"):
        kw.update(project=False, keep_sky=False)  # the network alone
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return restore(lr, method=method, scale=scale, device="cpu", threads=1, **kw).data


def blank_counts(method, *, scale=2, size=96, seeds=(0, 1, 2), thresh=2.0):
    """(input detections, output detections) summed over seeds of noise-only fields.

    The *same* threshold means the same surface brightness: ``thresh`` x the input's noise
    rms on the input, and ``thresh`` x rms / scale^2 on the output (a flux-conserving xS
    output pixel holds 1/S^2 of an input pixel's flux), with the same minimum *sky* area
    (5 input pixels = 5 S^2 output pixels). Thresholding the output at its own
    rms instead would flag the correlated blobs any interpolation makes of pure noise.
    """
    from napari_astrosr.core.simulate import blank_field

    n_in = n_out = 0
    for s in seeds:
        lr = blank_field((size, size), sky=0.0, noise_sigma=1.0, seed=s).image.astype(np.float32)
        rms = float(np.std(lr))
        n_in += _count(lr, thresh, err=rms)
        n_out += _count(_restore(lr, method, scale), thresh, err=rms / scale**2, minarea=5 * scale**2)
    return n_in, n_out


def blank_counts_translation(method, *, kind="ground", size=96, seeds=(0, 1, 2, 3, 4, 5), thresh=2.0, factor=4):
    """Scale-1 blank fields on the HST-like grid: (input detections, output detections) summed over seeds.

    ``kind="ground"``: the networks' input distribution, white noise on a ``factor`` x coarser
    (ground-based) grid brought onto the fine grid by flux-conserving bicubic (correlated noise);
    ``kind="white"``: white noise on the fine grid itself (not what a reprojected ground image
    looks like). Same grid in and out: the same threshold (``thresh`` x the input's rms) and
    minimum area apply to both.
    """
    from napari_astrosr.core.resample import upsample
    from napari_astrosr.core.simulate import blank_field

    n_in = n_out = 0
    for s in seeds:
        if kind == "ground":
            lr = blank_field((size // factor, size // factor), sky=0.0, noise_sigma=1.0, seed=s).image
            img = np.asarray(upsample(lr.astype(np.float32), factor, method="bicubic"), np.float32)
        else:
            img = blank_field((size, size), sky=0.0, noise_sigma=1.0, seed=s).image.astype(np.float32)
        rms = float(np.std(img))
        n_in += _count(img, thresh, err=rms)
        n_out += _count(_restore(img, method, 1), thresh, err=rms)
    return n_in, n_out


def point_grid(
    *, scale=2, n=5, spacing=24, sigma=1.0, fluxes=(300.0, 1000.0, 5000.0), noise=1.0, seed=0, lr_psf_sigma=None
):
    """HR truth (point sources * Gaussian PSF), its LR degradation and the source positions (HR px).

    ``lr_psf_sigma``: extra Gaussian blur (HR px) of the LR image (the ground-like seeing of the
    scale-1 translation case); None: none.
    """
    from napari_astrosr.core.degrade import degrade
    from napari_astrosr.core.psf import convolve, gaussian_psf

    side = spacing * (n + 1)
    side -= side % (scale * 8)
    hr = np.zeros((side, side), np.float64)
    pos = []
    k = 0
    for i in range(n):
        for j in range(n):
            y, x = spacing * (i + 1), spacing * (j + 1)
            if y >= side - 8 or x >= side - 8:
                continue
            hr[y, x] = fluxes[k % len(fluxes)]
            pos.append((y, x, fluxes[k % len(fluxes)]))
            k += 1
    hr = convolve(hr, gaussian_psf(sigma))
    blur = None if lr_psf_sigma is None else gaussian_psf(lr_psf_sigma)
    lr = degrade(hr, scale=scale, psf=blur, noise=f"gaussian:{noise}", seed=seed).data.astype(np.float32)
    return hr.astype(np.float32), lr, pos


def fwhm_stats(img, pos, half=7):
    from napari_astrosr.core.psf import measure_fwhm

    f, fl = [], []
    for y, x, _ in pos:
        c = np.clip(img[y - half : y + half + 1, x - half : x + half + 1].astype(np.float64), 0, None)
        if c.shape != (2 * half + 1, 2 * half + 1) or c.sum() <= 0:
            continue
        f.append(measure_fwhm(c))
        fl.append(img[y - half : y + half + 1, x - half : x + half + 1].sum())
    return float(np.median(f)), np.asarray(fl)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    lines = [
        "# Hallucination checks",
        "",
        "Command:",
        "",
        "    .venv/bin/python benchmarks/hallucination.py",
        "",
        "## Blank noise-only fields (3 seeds, 96x96 LR; detections above 2 x the input noise rms, in surface brightness: rms/scale^2 on the output; min. area 5 input px = 5 scale^2 output px)",
        "",
        "| scale | method | sources in input | sources in output | verdict |",
        "|---|---|---|---|---|",
    ]
    for scale in (2, 4):
        for m in available_methods(scale):
            a, b = blank_counts(m, scale=scale)
            lines.append(f"| x{scale} | {m} | {a} | {b} | {'ok' if b <= a else 'INVENTS SOURCES'} |")
    lines += [
        "",
        "## Grid of point sources (HR PSF Gaussian sigma 1 px; LR noise sigma 1, fluxes 300/1000/5000)",
        "",
        "| scale | method | median FWHM (HR px) | truth FWHM | bicubic FWHM | median flux / truth flux | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for scale in (2, 4):
        hr, lr, pos = point_grid(scale=scale)
        f_true, fl_true = fwhm_stats(hr, pos)
        f_bic, _ = fwhm_stats(_restore(lr, "bicubic", scale), pos)
        for m in available_methods(scale):
            f_m, fl = fwhm_stats(_restore(lr, m, scale), pos)
            ok = f_m <= f_bic * 1.02
            lines.append(
                f"| x{scale} | {m} | {f_m:.2f} | {f_true:.2f} | {f_bic:.2f} | "
                f"{np.median(fl / fl_true):.3f} | {'no broadening' if ok else 'BROADENS'} |"
            )
        print(f"x{scale} done", file=sys.stderr, flush=True)
    lines += [
        "",
        f"## Translation at scale 1 (input blurred by a ground-like Gaussian, sigma {GROUND_SIGMA} px)",
        "",
        "| check | method | input | output | verdict |",
        "|---|---|---|---|---|",
    ]
    hr, lr, pos = point_grid(scale=1, spacing=32, noise=0.2, lr_psf_sigma=GROUND_SIGMA)
    f_true, fl_true = fwhm_stats(hr, pos, half=10)
    f_in, fl_in = fwhm_stats(lr, pos, half=10)
    levels = np.array([p[2] for p in pos])

    def per_level(fl):  # median flux / truth per source flux (21x21 box), faint -> bright
        return " / ".join(f"{np.median(fl[levels == v] / fl_true[levels == v]):.2f}" for v in sorted(set(levels)))

    lines.append(
        f"| point grid: flux / truth at {' / '.join(str(int(v)) for v in sorted(set(levels)))} | input | "
        f"{per_level(fl_in)} | | (a 21x21 box misses a little of the blurred input's wings) |"
    )
    for m in translation_methods():
        for kind, what in (
            ("ground", "ground-like noise (24^2 upsampled x4)"),
            ("white", "white noise on the fine grid"),
        ):
            a, b = blank_counts_translation(m, kind=kind)
            lines.append(
                f"| blank, {what}: sources (6 seeds) | {m} | {a} | {b} | {'ok' if b <= a else 'INVENTS SOURCES'} |"
            )
        f_m, fl = fwhm_stats(_restore(lr, m, 1), pos, half=10)
        lines.append(
            f"| point grid: median FWHM (truth {f_true:.2f}) | {m} | {f_in:.2f} | {f_m:.2f} | "
            f"{'no broadening' if f_m <= f_in * 1.02 else 'BROADENS'} |"
        )
        lines.append(f"| point grid: flux / truth, faint -> bright | {m} | | {per_level(fl)} | |")
        if m != "richardson-lucy":
            from napari_astrosr.core.projection import estimate_lr_noise
            from napari_astrosr.restoration import restore

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = restore(
                    lr,
                    method=m,
                    scale=1,
                    psf=f"gaussian:{GROUND_SIGMA}",
                    flux_exact=True,
                    keep_sky=False,
                    flux_noise=estimate_lr_noise(np.nan_to_num(lr)),
                    device="cpu",
                    threads=1,
                ).data
            lines.append(
                f"| point grid: flux / truth, faint -> bright | {m} + flux-noise | | "
                f"{per_level(fwhm_stats(out, pos, half=10)[1])} | |"
            )
    print("x1 done", file=sys.stderr, flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        open(args.out, "w").write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Do the projection's non-negativity rounds matter for photometry, and what does stopping them on stagnation save?

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/nonneg_rounds.py [--size 2048]

1. Photometry against the truth, on fields that are neither held out nor used for training: the right halves of
   the training configs' ``split: halves`` fields and the simulated fields of ``projection_rule.py`` (256-px HR
   crops, two per field), degraded x2 with ``gaussian:1.0`` and 1% noise on a sky pedestal (so that no LR pixel is
   negative and the rounds run, as on a ground image), restored by the default FISR with the PSF given and
   estimated. Variants: the rounds run to their cap of 10 (``stagnation=None``, the rule before), stopped when a
   round cuts the clipped flux by less than ``NONNEG_STAGNATION`` (the default), and no rounds. Per-source
   |relative flux error| of every S/N > 10 source of the truth (``quality.source_rel_errors``), pooled.
2. Time: the default restore of the real ground image ``tpv.fits`` mirrored to ``--size``^2 (its ePSF, 15 px on the
   output grid, and saturated stars: the clipping stagnates), with the rounds to their cap and with the default;
   the projection's time, CG iterations and rounds, and how far the per-source Kron fluxes moved (sep at
   5 sigma on the output, S/N > 10, each image's own background subtracted).
3. Truth on the real image: stars of known flux (its ePSF) injected into tpv.fits (1024^2), anywhere and beside
   the ringing the rounds work on, restored with and without them; the difference of the two restores, summed
   around each star, against the injected flux.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

VARIANTS = {
    "rounds to the cap (before)": {"stagnation": None},
    "stagnation rule (default)": {},
    "no rounds": {"nonneg_rounds": 0},
}


def _restore(lr, psf, variant, **kw):
    import napari_astrosr.core.projection as J
    from napari_astrosr.restoration import restore

    orig, extra, info = J.iter_project_flux_exact, VARIANTS[variant], {}

    def patched(*a, **k):  # the restore's projection with this variant's round options
        k.update(extra)
        out, inf = yield from orig(*a, **k)
        if not info:  # the restore's projection (the ERR's probe solve comes later)
            info.update(inf)
        return out, inf

    J.iter_project_flux_exact = patched
    try:
        r = restore(lr, method="fisr", scale=2, device="cpu", psf=psf, **kw)
    finally:
        J.iter_project_flux_exact = orig
    return r, info


def photometry(lines):
    import projection_rule as pr
    import quality as q

    from napari_astrosr.core.degrade import degrade

    errs = {v: [] for v in VARIANTS}
    rounds = {v: [] for v in VARIANTS}
    for label, crops in pr.fields(real=True, side=256):
        for i, hr in enumerate(crops[:2]):
            hr = np.asarray(hr, np.float64)
            d = degrade(hr, scale=2, psf="gaussian:1.0", seed=i)
            rng = np.random.default_rng(i)
            sig = 0.01 * (np.percentile(d.data, 99.5) - np.median(d.data))
            lr = d.data + sig * rng.normal(size=d.data.shape)
            pedestal = 5 * sig - min(0.0, float(lr.min()))
            lr, ref = lr + pedestal, hr + pedestal / 4
            for given in (True, False):
                for v in VARIANTS:
                    r, info = _restore(lr, d.psf if given else None, v)
                    errs[v].append(q.source_rel_errors(ref, r.data))
                    rounds[v].append(info.get("nonneg_rounds", 0))
    lines += [
        "### 1. Photometry against the truth (validation and simulated fields, not held out)",
        "",
        "| variant | sources | pooled median abs rel. err | p90 | mean rounds |",
        "|---|---|---|---|---|",
    ]
    for v in VARIANTS:
        e = np.concatenate(errs[v])
        lines.append(f"| {v} | {e.size} | {np.median(e):.4f} | {np.percentile(e, 90):.4f} | {np.mean(rounds[v]):.1f} |")
    a, b = np.concatenate(errs["rounds to the cap (before)"]), np.concatenate(errs["stagnation rule (default)"])
    d = np.abs(a - b)
    lines += [
        "",
        f"Per source, |err(cap)| - |err(default)|: median {np.median(d):.4f}, p95 {np.percentile(d, 95):.4f}, "
        f"max {d.max():.4f}.",
        "",
    ]


def timing(lines, size):
    from tiling_overhead import _input

    from napari_astrosr.core.detection import detect_sources

    x = _input(size)
    lines += [
        f"### 2. Time: default FISR x2 restore of tpv.fits mirrored to {size}^2",
        "",
        "| variant | projection s | CG iterations | rounds | total s |",
        "|---|---|---|---|---|",
    ]
    outs = {}
    for v in ("rounds to the cap (before)", "stagnation rule (default)"):
        t = time.perf_counter()
        r, info = _restore(x, None, v)
        total = time.perf_counter() - t
        outs[v] = r.data
        lines.append(
            f"| {v} | {r.timings['projection']:.1f} | {info.get('iterations')} | {info.get('nonneg_rounds')} | {total:.1f} |"
        )
    a, b = (np.asarray(outs[v], np.float64) for v in outs)
    from scipy import ndimage

    from napari_astrosr.core.detection import estimate_background
    from napari_astrosr.core.photometry import elliptical_aperture_flux

    cat = detect_sources(a.astype(np.float32), thresh=5.0, minarea=20)
    good = np.asarray(cat["flux"]) > 10 * np.asarray(cat["flux_err"])
    fluxes = []
    for img in (a, b):  # fixed 2.5 (a, b) ellipses, each image's own sep background subtracted
        back = estimate_background(img.astype(np.float32)).back
        fluxes.append(np.asarray(elliptical_aperture_flux(img - back, cat)[0]))
    rel = np.abs(fluxes[1] / fluxes[0] - 1)
    # where the rounds work: within 30 output px of a pixel the capped rounds left negative
    near = ndimage.binary_dilation(a < 0, iterations=30)
    xi = np.clip(np.round(np.asarray(cat["x"])).astype(int), 0, a.shape[1] - 1)
    yi = np.clip(np.round(np.asarray(cat["y"])).astype(int), 0, a.shape[0] - 1)
    by = near[yi, xi]
    lines += [
        "",
        "Aperture fluxes (2.5 (a, b) ellipses, own background subtracted) of the S/N > 10 sources, default "
        "against the cap, relative:",
        "",
    ]
    for label, sel in (("all", good), ("within 30 px of a negative pixel", good & by), ("elsewhere", good & ~by)):
        r = rel[sel]
        if r.size:
            lines.append(
                f"- {label} ({r.size}): median {np.median(r):.2e}, p95 {np.percentile(r, 95):.2e}, max {r.max():.2e}"
            )
    lines.append("")


def injected(lines, size):
    """Stars of known flux added to the real image: their recovered flux, by difference of two restores."""
    import sep
    from scipy import ndimage
    from tiling_overhead import _input

    from napari_astrosr.core.psf_estimate import find_psf

    x = _input(size).astype(np.float64)
    psf_lr, info = find_psf(x, scale=1)
    psf_out, _ = find_psf(x, scale=2)
    k = psf_lr.shape[0] // 2
    rng = np.random.default_rng(42)
    # where: anywhere, and beside the pixels the capped rounds leave negative (4-20 output px away: the ringing
    # around saturated stars, where the two variants' images differ)
    capped, _ = _restore(x, psf_out, "rounds to the cap (before)")
    neg = capped.data < 0
    ring = (ndimage.binary_dilation(neg, iterations=20) & ~ndimage.binary_dilation(neg, iterations=4))[::2, ::2]
    cand = np.argwhere(ring)
    inside = (cand > k + 2).all(axis=1) & (cand < size - k - 2).all(axis=1)
    cand = cand[inside]
    places = {
        "anywhere": np.round(rng.uniform(40, size - 40, (120, 2))).astype(int),
        "beside negative pixels": cand[rng.choice(len(cand), size=min(120, len(cand)), replace=False)],
    }
    lines += [
        f"### 3. Stars of known flux injected into tpv.fits ({size}^2, its ePSF, FWHM {info.fwhm:.1f} px)",
        "",
        "120 stars per row (flux 3e3-3e4, S/N about 8-80), in two batches of 60 so that they rarely overlap. "
        "Recovered: the difference of the default restores with and without them, summed in circles of 32 output "
        "px; injected: the same circles on the stars upsampled by replication. recovered / injected - 1 (the "
        f"restoration keeps more of a star's wings inside the circle than the blurred reference: a positive offset). "
        f"The capped rounds leave {int(neg.sum())} output pixels negative here.",
        "",
        "| where | variant | median | median abs. deviation | p90 abs |",
        "|---|---|---|---|---|",
    ]
    for where, pos in places.items():
        flux = 10 ** rng.uniform(np.log10(3e3), np.log10(3e4), len(pos))
        for v in ("rounds to the cap (before)", "stagnation rule (default)"):
            errs = []
            for half in (0, 1):
                part, fl = pos[half::2], flux[half::2]
                inj = np.zeros_like(x)
                for (py, px), f in zip(part, fl):
                    inj[py - k : py + k + 1, px - k : px + k + 1] += f * psf_lr
                ref = np.ascontiguousarray(np.kron(inj, np.ones((2, 2))) / 4)
                cx, cy = 2 * part[:, 1] + 0.5, 2 * part[:, 0] + 0.5
                a, _ = _restore(x, psf_out, v)
                b, _ = _restore(x + inj, psf_out, v)
                dif = np.ascontiguousarray(b.data.astype(np.float64) - a.data.astype(np.float64))
                rec = np.asarray(sep.sum_circle(dif, cx, cy, 32.0)[0])
                errs.append(rec / np.asarray(sep.sum_circle(ref, cx, cy, 32.0)[0]) - 1)
            e = np.concatenate(errs)
            lines.append(
                f"| {where} | {v} | {np.median(e):+.4f} | {np.median(np.abs(e - np.median(e))):.4f} | "
                f"{np.percentile(np.abs(e), 90):.4f} |"
            )
    lines.append("")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=2048)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    from napari_astrosr.core.projection import NONNEG_STAGNATION

    lines = [
        f"`OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/nonneg_rounds.py --size {args.size}` "
        f"(NONNEG_STAGNATION = {NONNEG_STAGNATION})",
        "",
    ]
    photometry(lines)
    timing(lines, args.size)
    injected(lines, 1024)
    print("\n".join(lines))


if __name__ == "__main__":
    main()

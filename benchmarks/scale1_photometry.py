"""Same-size restoration (``--scale 1``) and per-source photometry: does the default projection keep it?

At scale 1 the forward model is the PSF blur alone, so the exact projection is an exact deconvolution: it
divides every residual frequency by the PSF's transfer function (``core.projection.noise_gain`` reports
1e4 or more for any blur) and, on real data with noise of its own, turns that noise into structure that
moves flux between sources. This benchmark measures what the default options do to per-source photometry
at scale 1 on the quality benchmark's held-out fields (``benchmarks/quality.py``: same crops), each blurred
by a PSF on its own grid (Gaussian sigma 1 and 2 px), clean and with white Gaussian noise of 0.2% (below
what the defaults call clean) and 1% of the robust range, and restored by
``restoration.restore`` (the CLI's entry point) with the true PSF:

- ``input``: the blurred image itself (what the user already has);
- ``backprojection (default)``: the projection with the measured-noise choice, as ``astrosr restore
  --method backprojection --scale 1 --psf PSF`` does;
- ``backprojection + flux-exact``: the exact projection forced (``--flux-noise exact``);
- ``richardson-lucy``: scikit-image's RL, 30 iterations.

Scored against the unblurred field: the median |relative flux error| of S/N > 10 sources (sep ellipses of
the reference, ``core.metrics.source_residuals``) per case, its median over cases, the pooled median over
all sources and the PSNR.

Run:  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/scale1_photometry.py [--out FILE.md]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from quality import DATA, FIELDS, NOISE_REL, _crop, _degrade, data_ready, source_rel_errors, write_report  # noqa: E402

PSFS = [("gaussian:1.0", "Gaussian sigma 1 px"), ("gaussian:2.0", "Gaussian sigma 2 px")]
# white noise added after the blur, relative to the blurred image's robust range (99.5th percentile - median):
# 0.2% is below the 0.5% the defaults call clean (restore_options.CLEAN_NOISE_REL), as real images often are
NOISES = [("clean", 0.0), ("0.2% noise", 0.002), ("1% noise", NOISE_REL)]
METHODS = [
    ("input", None, {}),
    ("backprojection (default)", "backprojection", {}),
    ("backprojection + flux-exact", "backprojection", {"flux_noise": "exact"}),
    ("richardson-lucy", "richardson-lucy", {}),
]


def run(side: int = 128) -> tuple[list[dict], list[str]]:
    from napari_astrosr.core import metrics
    from napari_astrosr.core.fits_io import read_fits
    from napari_astrosr.restoration import restore

    rows, modes = [], []
    for fi, (label, rel, _) in enumerate(FIELDS):
        p = DATA / rel
        if not p.exists():
            print(f"skip {label}: {p} missing", file=sys.stderr)
            continue
        hr = _crop(np.nan_to_num(read_fits(p).data), side)
        dr = float(hr.max() - hr.min())
        for psf, _ in PSFS:
            for ni, (noisy, noise_rel) in enumerate(NOISES):
                lr, _sigma = _degrade(hr, 1, psf, noise_rel > 0, 1000 * fi + ni, noise_rel=noise_rel)
                for name, method, kw in METHODS:
                    t0 = time.perf_counter()
                    if method is None:
                        img, mode = lr, "-"
                    else:
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore")
                            res = restore(lr, method=method, scale=1, psf=psf, device="cpu", **kw)
                        img = res.data
                        mode = str(res.params.get("projection", res.params.get("flux_projection", "-")))
                    rels = source_rel_errors(hr, img)
                    rows.append(
                        {
                            "field": label,
                            "psf": psf,
                            "noisy": noisy,
                            "method": name,
                            "psnr": metrics.psnr(hr, img, data_range=dr),
                            "rels": rels,
                            "med": float(np.median(rels)) if rels.size else np.nan,
                            "mode": mode,
                            "s": time.perf_counter() - t0,
                        }
                    )
                    if name == "backprojection (default)":
                        modes.append(f"{label}, {psf}, {noisy}: {mode}")
        print(f"  {label} done", file=sys.stderr, flush=True)
    return rows, modes


def table(rows: list[dict]) -> str:
    out = [
        "| data | method | median of case medians | pooled median (n) | worst case median | PSNR dB |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for noisy, _ in NOISES:
        for name, _, _ in METHODS:
            rs = [r for r in rows if r["noisy"] == noisy and r["method"] == name]
            if not rs:
                continue
            meds = np.array([r["med"] for r in rs])
            pooled = np.concatenate([r["rels"] for r in rs])
            out.append(
                f"| {noisy} | {name} | {np.nanmedian(meds):.4f} | "
                f"{np.median(pooled):.4f} ({pooled.size}) | {np.nanmax(meds):.4f} | "
                f"{np.mean([r['psnr'] for r in rs]):.2f} |"
            )
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", help="also write the markdown table here")
    ap.add_argument("--side", type=int, default=128)
    args = ap.parse_args(argv)
    if not data_ready():
        return 0
    t0 = time.perf_counter()
    rows, modes = run(args.side)
    text = table(rows) + "\n\nProjection chosen by the default:\n\n" + "\n".join(f"- {m}" for m in modes)
    text += f"\n\n({time.perf_counter() - t0:.0f} s)\n"
    write_report(text, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

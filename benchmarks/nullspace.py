"""Probe: does a network know more than the data? Its content beyond the forward model, dosed.

Question (issue 6): with ``--flux-exact`` a network's output keeps only what the observation cannot see
(the forward model's null space: detail the blur and the block sum remove); everything the data do see is
replaced by the data. Backprojection is the same projection started from the flux-conserving bicubic
upsampling, i.e. with *no* null-space content. So "network + flux-exact beats backprojection" asks
exactly: is the network's null-space content better than none? This script doses it,

    x(alpha) = project(bicubic + alpha * (network - bicubic))

(``alpha = 0``: backprojection; ``alpha = 1``: network + flux-exact; the exact projection is affine, so
apart from its positivity rounds ``x(alpha)`` is the same blend of those two images). A curve that rises to ``alpha = 1`` says the
network adds real information; one that falls from ``alpha = 0`` says what it adds is worse than nothing,
and no post-processing of the output can fix that: only a better network can.

Noisy cases use the noise-aware projection (``--flux-noise auto``: Wiener-filtered target, damped solve)
on the blend instead of the exact one (``alpha = 0`` is then backprojection + flux-noise).

Cases: the quality benchmark's SR fields and degradations (x2 FISR and Restormer, x4 FISR; 128-px crops, both
PSFs) and its pooled Pix2WGAN fields (four held-out HST fields, real HSC PSF, x4). PSNR: mean over cases;
flux: median |relative error| of every S/N > 10 source pooled over the cases.

Run:  .venv/bin/python benchmarks/nullspace.py [--out docs/results_nullspace.md] [--side 128]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality as q  # noqa: E402  (same fields, degradation and data folder)

ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)


def dose(base, net, lr, *, scale, psf, noisy, alphas=ALPHAS):
    """``{alpha: projected blend}``; the exact projection, or the noise-aware one when ``noisy``."""
    from napari_astrosr.core.projection import estimate_lr_noise, project_flux_exact
    from napari_astrosr.core.psf import parse_psf

    kernel = parse_psf(psf)
    sigma = estimate_lr_noise(lr) if noisy else 0.0
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for a in alphas:
            blend = base + a * (net - base)
            out[a] = (
                q.project_noise_aware(blend, lr, scale=scale, psf=kernel, sigma=sigma)
                if noisy
                else project_flux_exact(blend, lr, scale=scale, psf=kernel)
            )
    return out


def sr_groups(side):
    """``(group, hr, lr, scale, psf, noisy, base, net)`` for the bundled SR networks on the quality cases."""
    from napari_astrosr.core.resample import upsample
    from napari_astrosr.models.checkpoints import bundled_checkpoint
    from napari_astrosr.restoration import restore

    for scale, label, psf, nz, hr, lr, _dr, _ in q.probe_cases((2, 4), side):
        base = np.asarray(upsample(lr, scale, method="bicubic"), np.float64)
        for net in ("fisr", "restormer"):
            if bundled_checkpoint(net, scale) is None:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = restore(
                    lr, method=net, scale=scale, device="cpu", threads=1, project=False, keep_sky=False
                ).data.astype(np.float64)  # the network alone
            yield f"{net} x{scale}", hr, lr, scale, psf, nz, base, out


def p2w_groups():
    """The quality benchmark's pooled Pix2WGAN cases (held-out HST fields, real HSC PSF, x4)."""
    psf = q._hsc_psf_on(0.06)
    for nz, _label, hr, lr, inp in q.p2w_cases(psf):
        for net in ("pix2wgan", "pix2wgan-cascade"):
            out = q._translate(inp, net)
            if out is not None:
                yield f"{net} (HSC PSF x4)", hr, lr, 4, psf, nz, inp.astype(np.float64), np.asarray(out, np.float64)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--side", type=int, default=128, help="SR crop side in HR px (default 128, the quality benchmark's)"
    )
    ap.add_argument("--no-pix2wgan", action="store_true", help="skip the Pix2WGAN fields")
    ap.add_argument("--out", default=None, help="write the markdown table here")
    args = ap.parse_args(argv)
    if not q.data_ready():
        return 2
    from napari_astrosr.core import metrics

    t0 = time.perf_counter()
    rows: dict[tuple, dict] = {}  # (group, noisy, alpha) -> psnr list, errs list
    groups = list(sr_groups(args.side))
    if not args.no_pix2wgan:
        groups += list(p2w_groups())
    for group, hr, lr, scale, psf, nz, base, net in groups:
        dr = float(hr.max() - hr.min())
        for a, x in dose(base, net, lr, scale=scale, psf=psf, noisy=nz).items():
            r = rows.setdefault((group, nz, a), {"psnr": [], "errs": []})
            r["psnr"].append(metrics.psnr(hr, x, data_range=dr))
            r["errs"].append(q.source_rel_errors(hr, x))
    wall = time.perf_counter() - t0
    lines = [
        "# Null-space dose: is a network's content beyond the data better than none?",
        "",
        "Command:",
        "",
        "    .venv/bin/python " + " ".join(["benchmarks/nullspace.py", *(argv if argv is not None else sys.argv[1:])]),
        "",
        f"Wall time {wall:.0f} s (2-core CPU). x(alpha) = projection of bicubic + alpha (network - bicubic): "
        "alpha 0 = backprojection (+ flux-noise when noisy), alpha 1 = network + flux-exact (+ flux-noise). "
        "PSNR: mean over cases; flux: pooled median |relative error| of the S/N > 10 sources (n). "
        "Best alpha in bold.",
        "",
    ]
    head = "| network | data | cases | " + " | ".join(f"alpha {a:g}: PSNR / flux" for a in ALPHAS) + " | verdict |"
    lines += [head, "|" + "---|" * (len(ALPHAS) + 4)]
    order = dict.fromkeys((g, nz) for g, nz, _ in rows)
    for g, nz in order:
        cells, psnrs = [], []
        for a in ALPHAS:
            r = rows[(g, nz, a)]
            p, e = float(np.mean(r["psnr"])), np.concatenate(r["errs"])
            psnrs.append(p)
            cells.append((p, float(np.median(e)), len(e)))
        best = int(np.argmax(np.round(psnrs, 2)))
        txt = [f"**{p:.2f}** / {f:.4f}" if i == best else f"{p:.2f} / {f:.4f}" for i, (p, f, _) in enumerate(cells)]
        gain = psnrs[-1] - psnrs[0]
        verdict = (
            f"adds information (+{gain:.2f} dB at alpha 1)"
            if gain >= 0.005
            else f"worse than none ({gain:+.2f} dB at alpha 1)"
        )
        n = len(rows[(g, nz, ALPHAS[0])]["psnr"])
        lines.append(
            f"| {g} | {'noisy' if nz else 'clean'} | {n} ({cells[0][2]} sources) | "
            + " | ".join(txt)
            + f" | {verdict} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        q.write_report(text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Cost of tiling the bundled FISR x2 network against one tile (prints a Markdown table).

    PYTHONPATH=src OMP_NUM_THREADS=1 .venv/bin/python benchmarks/tiling_overhead.py \\
        [--sizes 512,1024,2048] [--extrapolate 4096] [--threads 1]

Input: the real ground image ``tpv.fits`` (CTIO Mosaic-II, 512^2) mirrored to each size, its
flux map as ``restore`` computes it. For each size, in one process and interleaved:

- ``auto``: ``infer`` with no ``tile``/``overlap`` (the default: :func:`auto_tile` /
  :func:`fit_tile`, evenly spaced tiles, cache-sized on the CPU);
- ``256/32``: the old default, 256-px tiles with 32 px overlap (evenly spaced now, same count);
- ``one tile``: the whole image as one tile, the reference for cost and output.

``--extrapolate N``: sizes whose single tile does not fit in memory here (4096^2 needs ~15 GB
of activations); the reference there is ``(N / 1024)^2`` times a measured one-tile 1024^2 run
(the network's cost is linear in pixels), and the one-tile output comparison is not made.
``diff / peak`` is ``max |auto - one tile| / max |one tile|``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _input(n: int) -> np.ndarray:
    from napari_astrosr.core.fits_io import read_fits

    base = read_fits(REPO.parent / "shared/data/ground_ctio_mosaic2_cdfs/tpv.fits").data.astype(np.float32)
    tile = np.block([[base, base[:, ::-1]], [base[::-1], base[::-1, ::-1]]])
    reps = -(-n // tile.shape[0])
    return np.ascontiguousarray(np.tile(tile, (reps, reps))[:n, :n])


def main() -> None:
    import torch

    from napari_astrosr.core.fluxmap import flux_map_from_image
    from napari_astrosr.models.checkpoints import bundled_checkpoint, load_checkpoint
    from napari_astrosr.models.inference import fill_invalid, infer

    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="512,1024,2048")
    ap.add_argument("--extrapolate", default="4096")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    net, meta = load_checkpoint(bundled_checkpoint("fisr", 2), device="cpu")
    norm = meta["normalization"]
    w = _input(256)
    infer(net, w, scale=2, flux_map=np.zeros_like(w), normalization=norm, device="cpu")  # warm-up (oneDNN set-up)

    def run(x, fm, **kw):
        t = time.perf_counter()
        out, info = infer(net, x, scale=2, flux_map=fm, normalization=norm, device="cpu", **kw)
        return out, info, time.perf_counter() - t

    print(
        f"bundled FISR x2 ({meta.get('preset')}), CPU, {args.threads} torch thread(s); seconds: minimum of "
        f"{args.repeats} interleaved repeat(s)\n"
    )
    print(
        "| input | auto tiles | auto tile | overlap | auto s | one tile s | auto overhead | 256/32 tiles "
        "| 256/32 s | 256/32 overhead | diff / peak |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    ref1024 = None
    sizes = [(int(v), False) for v in args.sizes.split(",") if v]
    sizes += [(int(v), True) for v in args.extrapolate.split(",") if v]
    for n, extrap in sizes:
        x = _input(n)
        fm = flux_map_from_image(fill_invalid(x)[0])
        ta, t1, to = [], [], []
        for _ in range(args.repeats):
            a, ia, t = run(x, fm)
            ta.append(t)
            if not extrap:
                one, _, t = run(x, fm, tile=n)
                t1.append(t)
            o, io, t = run(x, fm, tile=256, overlap=32)
            to.append(t)
        if extrap:
            if ref1024 is None:
                x1 = _input(1024)
                ref1024 = min(run(x1, flux_map_from_image(x1), tile=1024)[2] for _ in range(args.repeats))
            t_one, diff, note = ref1024 * (n / 1024) ** 2, "-", " (est.)"
        else:
            t_one, note = min(t1), ""
            diff = f"{np.abs(a - one).max() / np.abs(one).max():.1e}"
            if n == 1024:
                ref1024 = t_one
        t_a, t_o = min(ta), min(to)
        print(
            f"| {n}^2 | {ia['tiles']} | {ia['tile_shape'][0]} | {ia['overlap']} | {t_a:.2f} | {t_one:.2f}{note} "
            f"| {t_a / t_one - 1:+.0%} | {io['tiles']} | {t_o:.2f} | {t_o / t_one - 1:+.0%} | {diff} |",
            flush=True,
        )


if __name__ == "__main__":
    main()

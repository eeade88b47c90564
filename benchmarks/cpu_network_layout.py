"""Per-tile network cost of the bundled FISR on the CPU, by memory layout and tile size.

    PYTHONPATH=src OMP_NUM_THREADS=1 .venv/bin/python benchmarks/cpu_network_layout.py [--repeats 3]

Eager contiguous 256-px tiles (the old default) against eager channels-last 376-px tiles and a
frozen channels-last TorchScript graph at 256 and 376 px, interleaved, one torch thread. The
workload is a quarter of a 2048^2 input: 20 tiles of 256 (81 / 4), or 9 tiles of 376 (36 / 4).
Prints the seconds of every repeat.
"""

from __future__ import annotations

import argparse
import copy
import time
import warnings


def main() -> None:
    import torch

    from napari_astrosr.models.checkpoints import bundled_checkpoint, load_checkpoint

    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    net, _ = load_checkpoint(bundled_checkpoint("fisr", 2), device="cpu")
    net.eval()
    cl = copy.deepcopy(net).to(memory_format=torch.channels_last)
    last = torch.channels_last

    def inputs(t, fmt):
        return tuple(v.contiguous(memory_format=fmt) for v in (torch.randn(1, 1, t, t), torch.rand(1, 1, t, t)))

    def frozen(t):
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.jit.freeze(torch.jit.trace(copy.deepcopy(cl), inputs(t, last), check_trace=False))

    cases = {
        "old eager 256 x20": (net, 256, 20, torch.contiguous_format),
        "eager channels-last 376 x9": (cl, 376, 9, last),
        "frozen channels-last 256 x20": (frozen(256), 256, 20, last),
        "frozen channels-last 376 x9 (new)": (frozen(376), 376, 9, last),
    }

    def run(m, t, k, fmt):
        x = inputs(t, fmt)
        t0 = time.perf_counter()
        with torch.inference_mode():
            for _ in range(k):
                m(*x)
        return time.perf_counter() - t0

    for m, t, _, fmt in cases.values():  # warm-up
        run(m, t, 1, fmt)
    res: dict[str, list] = {}
    for _ in range(args.repeats):
        for name, (m, t, k, fmt) in cases.items():
            res.setdefault(name, []).append(round(run(m, t, k, fmt), 2))
    for name, v in res.items():
        print(f"{name}: {v} s (min {min(v)})")


if __name__ == "__main__":
    main()

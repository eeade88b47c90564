"""Time flux_map() for thousands of sources on a 2048x2048 map (prints a table).

Run: .venv/bin/python benchmarks/fluxmap_speed.py
"""

from __future__ import annotations

import time

import numpy as np
from astropy.table import QTable

from napari_astrosr.core.fluxmap import flux_map


def random_sources(n: int, size: int, rng: np.random.Generator) -> QTable:
    t = QTable()
    t["x"] = rng.uniform(0, size - 1, n)
    t["y"] = rng.uniform(0, size - 1, n)
    a = rng.uniform(0.8, 6.0, n)
    t["a"] = a
    t["b"] = a * rng.uniform(0.3, 1.0, n)
    t["theta"] = rng.uniform(-np.pi / 2, np.pi / 2, n)
    t["flux"] = 10 ** rng.uniform(1, 4, n)
    return t


def main() -> None:
    rng = np.random.default_rng(0)
    size = 2048
    print(f"{'kernel':>8} {'sources':>8} {'map':>10} {'seconds':>8} {'sum/total':>10}")
    for kernel in ("gaussian", "airy"):
        for n in (1000, 5000, 20000):
            t = random_sources(n, size, rng)
            flux_map((size, size), t[:10], kernel=kernel)  # warm up
            t0 = time.perf_counter()
            m = flux_map((size, size), t, kernel=kernel)
            dt = time.perf_counter() - t0
            ratio = float(m.sum(dtype=np.float64) / np.sum(t["flux"]))
            print(f"{kernel:>8} {n:>8} {size}x{size} {dt:8.3f} {ratio:10.6f}")


if __name__ == "__main__":
    main()

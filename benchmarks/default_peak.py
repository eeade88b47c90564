"""Does the default projection invent extreme pixels? The default FISR x2 restore against the same restore
without projection, on the real ground image of ``benchmarks/restore_throughput.py`` (``tpv.fits`` mirrored).

    PYTHONPATH=src OMP_NUM_THREADS=1 .venv/bin/python benchmarks/default_peak.py [SIZE]

Prints the projection and PSF chosen, the output's maximum and minimum over the unprojected output's
maximum, and the stage timings.
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import numpy as np


def main(size: int = 512) -> None:
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from tiling_overhead import _input

    from napari_astrosr.restoration import restore

    torch.set_num_threads(1)
    x = _input(size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = time.perf_counter()
        r = restore(x, method="fisr", scale=2, device="cpu")
        t = time.perf_counter() - t
        u = restore(x, method="fisr", scale=2, device="cpu", project=False)
    peak = float(np.nanmax(u.data))
    print(f"input {size}^2; projection {r.params.get('projection')}, PSF {r.params.get('psf_source')}")
    print(f"max / unprojected max {np.nanmax(r.data) / peak:.3f}; min / unprojected max {np.nanmin(r.data) / peak:.3f}")
    print(f"default restore {t:.1f} s; stages " + ", ".join(f"{k} {v:.2f}" for k, v in r.timings.items()))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 512)

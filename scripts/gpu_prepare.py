"""Prepare what ``scripts/gpu_train.sh`` carries to a GPU machine: the data files the configs read and the stamp bank.

Run here (where ``../shared/data`` and, ideally, GalSim exist)::

    python scripts/gpu_prepare.py configs/*_gpu.yaml            # -> .gpudata/data/..., .gpudata/stamps.npz

Only the files the configs name are copied, plus the held-out fields ``benchmarks/quality.py`` evaluates
the trained networks on (without them its tables came out empty on the GPU machine, which has no
``../shared/data``; the command's working tree must stay under 64 MiB). The stamp bank is ``training.skies.stamp_bank()``
(GalSim-rendered when GalSim is importable, e.g. ``PYTHONPATH=.venv-galsim``), so the GPU
machine needs no GalSim. Wheels of the packages the GPU image lacks go to ``.whl/`` with
``scripts/gpu_train.sh --download-wheels``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import yaml


def files_of(cfg: dict) -> set[str]:
    """Every data-root-relative file a training config reads."""
    d = cfg["data"]
    out = set(d.get("psf", {}).get("files", []))
    spec = d.get("psf", {}).get("spec") or ""
    if spec.lower().endswith((".fits", ".fits.gz", ".fit")):
        out.add(spec)
    for s in d["sources"]:
        out.update(s.get("files", []))
        for k in ("lr", "hr"):
            if s.get(k):
                out.add(s[k])
    return out


def eval_files() -> list[str]:
    """The held-out fields of ``benchmarks/quality.py`` (its evaluation after training, gpu_train.sh)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    try:
        from quality import FIELDS
    finally:
        sys.path.pop(0)
    return [rel for _, rel, _ in FIELDS]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("configs", nargs="+")
    ap.add_argument("--root", default="../shared/data", help="the shared data folder")
    ap.add_argument("--dest", default=".gpudata")
    a = ap.parse_args(argv)
    root, dest = Path(a.root), Path(a.dest)
    need: set[str] = set(eval_files())
    for c in a.configs:
        need |= files_of(yaml.safe_load(Path(c).read_text()))
    total = 0
    for rel in sorted(need):
        src = root / rel
        if not src.is_file():
            print(f"{src}: not found", file=sys.stderr)
            return 2
        dst = dest / "data" / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
        total += dst.stat().st_size
    from napari_astrosr.training.skies import save_bank, stamp_bank

    bank = stamp_bank()
    total += save_bank(bank, dest / "stamps.npz").stat().st_size
    print(
        f"{len(need)} data files + stamp bank ({bank.renderer}, {len(bank)} stamps) in {dest}: {total / 2**20:.1f} MiB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

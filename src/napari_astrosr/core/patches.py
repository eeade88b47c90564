"""HR/LR training patch pairs with a validity filter, and their on-disk format.

Format (``.npz``, written with :func:`numpy.savez_compressed`, read with
``allow_pickle=False`` -- no pickle anywhere):

==============  =====================  =============================================
array           shape / dtype          meaning
==============  =====================  =============================================
``hr``          (N, s*p, s*p) float32  HR patches
``lr``          (N, p, p) float32      LR patches
``positions``   (N, 2) int64           LR top-left corner (y, x) of each pair
``scale``       () int64               s
``meta``        () str                 JSON: format version, patch, stride, min_valid,
                                        source names, anything passed as ``meta``
==============  =====================  =============================================

HR patch ``i`` covers HR pixels ``[s*y : s*(y+p), s*x : s*(x+p)]`` for LR position ``(y, x)``.
NaNs are kept (the filter only guarantees > ``min_valid`` finite pixels).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from ..exceptions import AstroSRError
from .atomic import atomic_output
from .resample import _int_factor

__all__ = ["PatchSet", "extract_patch_pairs", "save_patches", "load_patches"]

FORMAT_VERSION = 1


@dataclass
class PatchSet:
    """HR/LR patch pairs (``hr`` is ``scale`` x the size of ``lr``) with where they came from."""

    hr: np.ndarray
    lr: np.ndarray
    positions: np.ndarray
    scale: int
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.lr.shape[0])


def extract_patch_pairs(
    hr: np.ndarray,
    lr: np.ndarray,
    *,
    scale: int,
    patch: int = 64,
    stride: Optional[int] = None,
    min_valid: float = 0.8,
) -> PatchSet:
    """Cut aligned HR/LR patch pairs on a regular LR grid.

    Parameters
    ----------
    hr, lr
        Aligned images: ``hr`` covers at least ``lr.shape * scale`` (extra HR rows/columns are ignored).
    scale
        Integer HR/LR factor.
    patch
        LR patch side (HR side = ``scale * patch``).
    stride
        LR step between patches (default ``patch``: no overlap).
    min_valid
        Keep a pair only if *more than* this fraction of the pixels of *both* patches is finite.
    """
    s = _int_factor(scale, name="scale")
    hr = np.asarray(hr)
    lr = np.asarray(lr)
    if hr.ndim != 2 or lr.ndim != 2:
        raise AstroSRError(f"hr and lr must be 2-D, got {hr.shape} and {lr.shape}.")
    if hr.shape[0] < lr.shape[0] * s or hr.shape[1] < lr.shape[1] * s:
        raise AstroSRError(f"hr {hr.shape} does not cover lr {lr.shape} x scale {s}; are they aligned?")
    patch = int(patch)
    stride = patch if stride is None else int(stride)
    if patch < 1 or stride < 1:
        raise AstroSRError(f"patch={patch}, stride={stride}: must be >= 1.")
    if patch > min(lr.shape):
        raise AstroSRError(f"patch={patch} is larger than the LR image {lr.shape}.")
    if not 0 <= min_valid < 1:
        raise AstroSRError(f"min_valid={min_valid}: must be in [0, 1).")
    hp = s * patch
    hv = np.isfinite(hr)
    lv = np.isfinite(lr)
    out_hr, out_lr, pos = [], [], []
    for y in range(0, lr.shape[0] - patch + 1, stride):
        for x in range(0, lr.shape[1] - patch + 1, stride):
            if lv[y : y + patch, x : x + patch].mean() <= min_valid:
                continue
            if hv[s * y : s * y + hp, s * x : s * x + hp].mean() <= min_valid:
                continue
            out_lr.append(lr[y : y + patch, x : x + patch])
            out_hr.append(hr[s * y : s * y + hp, s * x : s * x + hp])
            pos.append((y, x))
    meta = {"format_version": FORMAT_VERSION, "patch": patch, "stride": stride, "min_valid": min_valid}
    if not pos:
        return PatchSet(
            hr=np.zeros((0, hp, hp), np.float32),
            lr=np.zeros((0, patch, patch), np.float32),
            positions=np.zeros((0, 2), np.int64),
            scale=s,
            meta=meta,
        )
    return PatchSet(
        hr=np.stack(out_hr).astype(np.float32),
        lr=np.stack(out_lr).astype(np.float32),
        positions=np.asarray(pos, dtype=np.int64),
        scale=s,
        meta=meta,
    )


def save_patches(path: Union[str, os.PathLike], patchset: PatchSet, *, overwrite: bool = False) -> Path:
    """Write a :class:`PatchSet` as ``.npz`` (format in the module docstring), atomically."""
    out = Path(path)
    if out.suffix != ".npz":
        raise AstroSRError(f"{out}: patch datasets are written as .npz; use a .npz file name.")
    if out.exists() and not overwrite:
        raise AstroSRError(f"{out}: already exists. Choose another name or pass overwrite=True.")
    if not out.parent.exists():
        raise AstroSRError(f"{out.parent}: output folder does not exist.")
    meta = json.dumps({**patchset.meta, "format_version": FORMAT_VERSION}, default=str)
    with atomic_output(out, suffix=".npz") as tmp:  # .npz suffix: savez would append one
        np.savez_compressed(
            tmp,
            hr=patchset.hr.astype(np.float32),
            lr=patchset.lr.astype(np.float32),
            positions=patchset.positions.astype(np.int64),
            scale=np.int64(patchset.scale),
            meta=np.array(meta),
        )
    return out


def load_patches(path: Union[str, os.PathLike]) -> PatchSet:
    """Read a dataset written by :func:`save_patches` (no pickle)."""
    p = Path(path)
    if not p.exists():
        raise AstroSRError(f"{p}: no such patch dataset.")
    try:
        with np.load(p, allow_pickle=False) as z:
            hr, lr, pos, scale = z["hr"], z["lr"], z["positions"], int(z["scale"])
            meta = json.loads(str(z["meta"]))
    except (KeyError, ValueError, OSError) as exc:
        raise AstroSRError(f"{p}: not a patch dataset ({exc}).") from exc
    if hr.shape[0] != lr.shape[0] or pos.shape != (lr.shape[0], 2) or hr.shape[1:] != (lr.shape[1] * scale,) * 2:
        raise AstroSRError(f"{p}: inconsistent patch dataset (hr {hr.shape}, lr {lr.shape}, scale {scale}).")
    return PatchSet(hr=hr, lr=lr, positions=pos, scale=scale, meta=meta)

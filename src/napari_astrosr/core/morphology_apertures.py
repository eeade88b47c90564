"""Apertures for the morphology comparison: defined once on one image, applied unchanged to GT, LQ and RS.

:func:`lq_to_reference_grid` brings LQ onto the GT grid (flux-conserving block split);
:func:`define_apertures` runs sep once and keeps the footprints and Kron ellipses (:class:`Apertures`).
Used by :mod:`.morphology`, which re-exports these names.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from astropy.table import QTable

from ..exceptions import AstroSRError, NoSourcesWarning


def lq_to_reference_grid(lq: np.ndarray, shape: tuple[int, int], scale: int) -> np.ndarray:
    """Bring LQ (pixels ``scale`` x larger, edge-aligned) onto a reference grid of ``shape``.

    Uses :func:`~napari_astrosr.core.resample.block_split`: each LQ pixel's flux is split into
    ``scale^2`` equal parts, so every LQ pixel's flux (hence every aperture sum over whole LQ
    pixels, and the total) is exactly preserved. Reference pixels beyond ``scale * lq.shape``
    (``degrade`` crops the remainder) are NaN.
    """
    from .resample import block_split

    s = int(scale)
    if s != scale or s < 1:
        raise AstroSRError(f"scale={scale}: must be a positive integer (LQ pixel size / GT pixel size).")
    a = np.asarray(lq, dtype=np.float64)
    if a.ndim != 2:
        raise AstroSRError(f"LQ must be 2-D, got shape {a.shape}.")
    big = (a.shape[0] * s, a.shape[1] * s)
    if not (0 <= shape[0] - big[0] < s and 0 <= shape[1] - big[1] < s):
        raise AstroSRError(
            f"LQ shape {a.shape} x scale {s} = {big} does not match the GT shape {tuple(shape)}; "
            "check --scale (GT pixels per LQ pixel) or resample LQ onto the GT grid."
        )
    out = np.full(tuple(shape), np.nan)
    out[: big[0], : big[1]] = block_split(a, s) if s > 1 else a
    return out


@dataclass
class Apertures:
    """Apertures defined once (on ``defined_on``) and applied to every image.

    ``sources`` has id, x, y, a, b, theta, kron_radius (of the aperture image); ``segmap`` is its
    sep segmentation (0 = sky, else the source id) = the isophotal footprints.
    """

    sources: QTable
    segmap: np.ndarray
    defined_on: str
    k: float = 2.5
    min_radius: float = 3.5

    def __len__(self) -> int:
        return len(self.sources)

    @property
    def ids(self) -> np.ndarray:
        """The sources' ids (int64)."""
        return np.asarray(self.sources["id"], dtype=np.int64)

    def ellipses(self):
        """(x, y, a, b, theta, kron_r, circ): Kron ellipse ``r = k * kron_radius`` in units of (a, b);
        ``circ`` marks sources measured in the ``min_radius`` circle instead.
        """
        from .photometry import ellipse_params

        x, y, a, b, th = ellipse_params(self.sources)
        kr = np.nan_to_num(np.asarray(self.sources["kron_radius"], np.float64))
        r = np.maximum(self.k * kr, 1e-6)
        circ = r * np.sqrt(a * b) < self.min_radius
        return x, y, a, b, th, r, circ


def define_apertures(
    image: np.ndarray,
    *,
    thresh: float = 1.5,
    minarea: int = 5,
    k: float = 2.5,
    min_radius: float = 3.5,
    max_sources: int = 500,
    defined_on: str = "lq",
) -> Apertures:
    """Detect galaxies on ``image`` (sep) and freeze their isophotal footprints and Kron ellipses.

    The ``max_sources`` brightest (Kron flux) are kept; the segmentation of dropped sources is
    zeroed (their pixels then count as sky for the kept ones' Sersic stamps -- they are faint).
    """
    from .detection import detect

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoSourcesWarning)
        det = detect(image, thresh=thresh, minarea=minarea)
    src = det.sources
    seg = np.asarray(det.segmap, dtype=np.int64)
    if len(src) > max_sources:
        src = src[np.argsort(-np.nan_to_num(np.asarray(src["flux"], np.float64), nan=-np.inf))[:max_sources]]
        seg = np.where(np.isin(seg, np.asarray(src["id"])), seg, 0)
    keep = QTable()
    for c in ("id", "x", "y", "a", "b", "theta", "kron_radius"):
        keep[c] = np.asarray(src[c]) if len(src) else np.zeros(0, dtype=np.int64 if c == "id" else np.float64)
    return Apertures(keep, seg, defined_on, float(k), float(min_radius))

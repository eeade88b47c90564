"""Relating two pixel grids, once for the CLI, the pipeline and the widgets.

- :func:`consistency_residual`: ``block_sum(output, s) - input``, the flux a restoration moved between input
  pixels (zero everywhere for a flux-conserving method).
- :func:`grid_relation` / :func:`match_grids`: which of two images is an integer factor finer, and both put
  on one grid by a flux-conserving block sum.
- :func:`lq_scale`: reference pixels per low-quality (LQ) pixel, from a given factor, the WCSs, or the shapes.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from ..exceptions import AstroSRError
from .resample import block_sum

__all__ = ["consistency_residual", "grid_relation", "lq_scale", "match_grids"]


def consistency_residual(output: np.ndarray, data: np.ndarray, *, scale: int) -> np.ndarray:
    """``block_sum(output, scale) - data`` on the input grid (float32).

    Each pixel is the flux the restoration added to (positive) or took from (negative) one input pixel; a
    flux-conserving method (bicubic, the projection) leaves it at rounding level. ``data`` may be a row and
    column larger than the block sum covers (odd sizes): it is cut to the block sum's shape.
    """
    down = block_sum(np.asarray(output, dtype=np.float64), int(scale))
    ref = np.asarray(data, dtype=np.float64)[: down.shape[0], : down.shape[1]]
    return (down - ref).astype(np.float32)


def grid_relation(ref_shape: tuple, pred_shape: tuple, *, what: str = "Inspect") -> tuple[str, int]:
    """Which image is finer and by what integer factor: ``("same", 1)``, ``("prediction", k)`` or
    ``("reference", k)``; :class:`AstroSRError` (prefixed with ``what``) when the grids are not compatible.
    """
    ref_shape, pred_shape = tuple(ref_shape), tuple(pred_shape)
    if ref_shape == pred_shape:
        return "same", 1
    for finer, coarser, name in ((pred_shape, ref_shape, "prediction"), (ref_shape, pred_shape, "reference")):
        k = finer[0] // coarser[0] if coarser[0] else 0
        if k >= 2 and finer == (coarser[0] * k, coarser[1] * k):
            return name, k
    raise AstroSRError(
        f"{what}: reference {ref_shape} and prediction {pred_shape} are not on compatible grids "
        "(same size, or one an integer factor finer); resample one of them first"
    )


def match_grids(ref: np.ndarray, pred: np.ndarray, *, what: str = "Inspect") -> tuple[np.ndarray, np.ndarray, str, str]:
    """Put reference and prediction on one grid.

    Returns ``(ref_c, pred_c, grid, note)`` where ``grid`` is ``"reference"`` or ``"prediction"`` (whose pixels
    the comparison uses) and ``note`` says what was done. An image an integer factor finer than the other is
    block-summed (flux-conserving: every source keeps its flux).
    """
    finer, k = grid_relation(np.shape(ref), np.shape(pred), what=what)
    if finer == "same":
        return ref, pred, "reference", "same grid"
    if finer == "prediction":
        note = f"prediction block-summed x{k} (flux-conserving) onto the reference grid"
        return ref, block_sum(pred, k).astype(np.float32), "reference", note
    note = f"reference block-summed x{k} (flux-conserving) onto the prediction grid"
    return block_sum(ref, k).astype(np.float32), pred, "prediction", note


def lq_scale(
    gt_shape: tuple,
    lq_shape: tuple,
    *,
    scale: Optional[int] = None,
    gt_wcs: Any = None,
    lq_wcs: Any = None,
    lq_name: str = "input (LQ)",
    what: str = "Morphology",
) -> int:
    """Reference (GT) pixels per LQ pixel: ``scale`` if given, else from the WCS pixel scales (when both images
    have a celestial WCS; the grids must share their lower-left pixel corner, as ``astrosr degrade`` makes them),
    else from the shapes. 1 when the LQ image is on the GT grid.

    From the shapes, the factor is GT // LQ on both axes (a remainder smaller than one LQ pixel is what
    :func:`core.degrade.degrade` crops); :class:`AstroSRError` naming ``lq_name`` when no integer factor fits.
    """
    gt_shape, lq_shape = tuple(gt_shape)[-2:], tuple(lq_shape)[-2:]
    if scale is None and gt_shape == lq_shape:
        return 1
    if min(lq_shape) < 1 or lq_shape[0] > gt_shape[0] or lq_shape[1] > gt_shape[1]:
        raise AstroSRError(
            f"{what}: {lq_name} {lq_shape} is larger than the reference (GT) {gt_shape}; "
            "choose the degraded input as LQ and the ground truth as reference"
        )
    s = scale
    if s is None and gt_wcs is not None and lq_wcs is not None and gt_wcs.has_celestial and lq_wcs.has_celestial:
        from astropy.wcs.utils import proj_plane_pixel_scales

        ratio = float(
            np.mean(proj_plane_pixel_scales(lq_wcs.celestial)) / np.mean(proj_plane_pixel_scales(gt_wcs.celestial))
        )
        s = int(round(ratio))
        if s < 1 or abs(ratio - s) > 0.01 * s:
            raise AstroSRError(
                f"{what}: {lq_name}: its pixels are {ratio:.4g} x the reference's (from the WCSs); "
                "only integer factors are supported -- reproject it onto the reference grid first."
            )
        corner = gt_wcs.celestial.world_to_pixel(lq_wcs.celestial.pixel_to_world(-0.5, -0.5))
        off = float(np.hypot(float(corner[0]) + 0.5, float(corner[1]) + 0.5))
        if off > 0.25:
            raise AstroSRError(
                f"{what}: {lq_name}: its pixel grid is offset by {off:.2f} reference pixels from the "
                "reference's (WCS); reproject it onto the reference grid first."
            )
    if s is None:
        k = gt_shape[0] // lq_shape[0]
        if k < 2 or gt_shape[1] // lq_shape[1] != k:
            raise AstroSRError(
                f"{what}: {lq_name} {lq_shape} is not an integer factor coarser than the reference "
                f"(GT) {gt_shape}; pass the scale or resample it first"
            )
        s = k
    # whether scale x LQ covers GT up to less than one LQ pixel is checked where the images are used
    # (core.morphology.measure_morphology), with both arrays at hand
    return int(s)

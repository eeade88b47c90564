"""The widgets' jobs as picklable, Qt-free functions (run in a worker process, see :mod:`._process`).

Each function is a job generator taking its inputs (arrays copied from layers, the WCS and
header, the options) and ``stop``; it runs the same backend job as the command line and
also computes what *showing* the result needs (display pyramid, contrast limits, the
residual), so the GUI thread only adds ready layers. The display helpers live here too,
so that a worker process never imports napari or Qt.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, Optional

import numpy as np

from ..progress import Progress, StopFlag

#: Results whose larger side exceeds this are shown as a napari multiscale pyramid.
PYRAMID_MAX_SIDE = 1024


def _block_mean(a: np.ndarray) -> np.ndarray:
    """2x2 block means ignoring NaN (odd last row/column dropped); NaN where a block has none."""
    h, w = (a.shape[0] // 2) * 2, (a.shape[1] // 2) * 2
    b = a[:h, :w].reshape(h // 2, 2, w // 2, 2)
    finite = np.isfinite(b)
    if finite.all():
        return b.mean(axis=(1, 3), dtype=np.float32)
    n = finite.sum(axis=(1, 3))
    total = np.where(finite, b, 0).sum(axis=(1, 3), dtype=np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, total / np.maximum(n, 1), np.nan).astype(np.float32)


def display_pyramid(data: np.ndarray, *, max_side: int = PYRAMID_MAX_SIDE) -> Any:
    """Levels for a napari multiscale image layer (call in the worker).

    Level 0 is ``data`` itself; each next level holds 2x2 block means (display only)
    until the larger side is at most ``max_side``. Data already that small, or not 2-D,
    come back unchanged (not a list): napari then shows a plain image.

    napari uploads only the level and the part of it that the canvas shows, so a large
    result is added without uploading (and thumbnailing) all its pixels on the GUI thread.
    """
    a = np.asarray(data)
    if a.ndim != 2 or max(a.shape) <= max_side:
        return data
    levels = [a]
    while max(levels[-1].shape) > max_side and min(levels[-1].shape) >= 4:
        levels.append(_block_mean(levels[-1]))
    return levels


def nan_note(before: np.ndarray, after: Optional[np.ndarray] = None) -> str:
    """'' for finite data; else the NaN count and fraction of ``before`` and, given the
    result ``after`` (any grid), how much of its area is NaN (NaN regions can grow).
    """
    nb = int(np.count_nonzero(~np.isfinite(before)))
    if nb == 0 and (after is None or np.isfinite(after).all()):
        return ""
    fb = nb / max(before.size, 1)
    text = f"input has {nb:,} NaN/inf pixels ({100 * fb:.2f}% of its area)"
    if after is not None:
        fa = float(np.count_nonzero(~np.isfinite(after))) / max(after.size, 1)
        grow = f", {fa / fb:.1f}x the input's NaN area" if fb > 0 else ""
        text += f"; the result is NaN on {100 * fa:.2f}% of its area{grow}"
    return text


def symmetric_limits(data: np.ndarray, *, percentile: float = 99.5) -> tuple[float, float]:
    """Contrast limits ``(-m, m)`` centred on zero, m from a high percentile of |data|."""
    a = np.abs(np.asarray(data, dtype=float))
    a = a[np.isfinite(a)]
    m = float(np.percentile(a, percentile)) if a.size else 0.0
    if not m > 0:
        m = float(a.max()) if a.size and a.max() > 0 else 1.0
    return (-m, m)


def prepare_display(data: np.ndarray, residual: Optional[np.ndarray] = None) -> dict:
    """What showing a result needs, computed off the GUI thread: ``data`` (the array, or its
    multiscale pyramid when larger than 1024 px), ``limits`` (zscale), and for a residual
    ``residual`` (likewise) and ``residual_limits`` (symmetric about zero).
    """
    from ..core.display import zscale_limits

    out = {"data": display_pyramid(data), "limits": zscale_limits(np.asarray(data))}
    if residual is not None:
        out["residual"] = display_pyramid(residual)
        out["residual_limits"] = symmetric_limits(residual)
    return out


def latent_limits(data: np.ndarray) -> Optional[tuple[float, float]]:
    """Display limits of a DIP latent: zscale, or percentiles when zscale collapses.

    An early DIP latent is mostly exact zeros (ReLU output), where zscale returns a
    degenerate range; the 0.5-99.7 percentiles still show its structure.
    """
    from ..core.display import zscale_limits

    finite = data[np.isfinite(data)]
    if finite.size == 0:
        return None
    lo, hi = zscale_limits(data)
    if not hi > lo or np.mean((finite > lo) & (finite < hi)) < 0.2:
        lo, hi = (float(v) for v in np.percentile(finite, [0.5, 99.7]))
    return (lo, hi) if hi > lo else None


# ----------------------------------------------------------------------------- the jobs


def restore_for_display(
    data: np.ndarray,
    *,
    wcs: Any,
    header: Any,
    opts: dict,
    want_residual: bool,
    stop: StopFlag,
) -> Generator[Progress, None, tuple]:
    """The Restore widget's job: ``restore_job`` + residual + NaN note + display data."""
    from ..restoration import restore_job

    res = yield from restore_job(data, wcs=wcs, header=header, stop=stop, **opts)
    yield Progress(0, None, "preparing the display")
    residual = None
    if want_residual:
        from ..core.grids import consistency_residual

        residual = consistency_residual(res.data, data, scale=int(res.scale)).astype(np.float32)
    # NaN input: say how much of the output is NaN (a network's receptive field grows the holes)
    note = nan_note(data, np.asarray(res.data)) if not np.isfinite(data).all() else ""
    return res, residual, note, prepare_display(res.data, residual)


def detect_with_map(
    data: np.ndarray, *, wcs: Any, opts: dict, want_map: bool, kernel: str, stop: StopFlag
) -> Generator[Progress, None, tuple]:
    """The Detect widget's compute: the sep catalog and (optionally) its flux map."""
    from ..core.detection import detect_sources

    yield Progress(0, 2, "detecting sources")
    table = detect_sources(data, wcs=wcs, **opts)
    fmap = None
    if want_map and not stop.is_set():
        from ..core.fluxmap import flux_map

        yield Progress(1, 2, f"drawing the flux map of {len(table)} sources")
        fmap = flux_map(data.shape, table, kernel=kernel) if len(table) else np.zeros(data.shape, np.float32)
        fmap = np.asarray(fmap, dtype=np.float32)
    return table, fmap


def compare_for_display(
    ref: np.ndarray, pred: np.ndarray, *, wcs_ref: Any, wcs_pred: Any, bins: int, stop: StopFlag
) -> Generator[Progress, None, dict]:
    """The Inspect widget's comparison: one grid, metrics + per-source residuals, residual histogram and display."""
    from ..core.grids import match_grids
    from ..core.metrics import evaluate_with_residuals

    yield Progress(0, 3, "matching grids")
    ref_c, pred_c, grid, note = match_grids(ref, pred)
    yield Progress(1, 3, "PSNR, SSIM, sources and per-source flux")
    metrics, res = evaluate_with_residuals(ref_c, pred_c, wcs=wcs_ref if grid == "reference" else wcs_pred)
    yield Progress(2, 3, "residual histogram")
    resid = (pred_c.astype(np.float64) - ref_c).astype(np.float32)
    finite = resid[np.isfinite(resid)]
    lim = float(np.percentile(np.abs(finite), 99.9)) if finite.size else 1.0
    lim = lim if lim > 0 else 1.0
    counts, edges = np.histogram(finite, bins=bins, range=(-lim, lim))
    return {
        "ref": ref_c,
        "pred": pred_c,
        "grid": grid,
        "note": note,
        "metrics": metrics,
        "sources": res,
        "hist": (counts, edges, int(finite.size - counts.sum())),
        "resid": resid,
        "display": {"residual": display_pyramid(resid), "limits": symmetric_limits(resid)},
    }


def measure_morphology_job(
    gt: np.ndarray, lq: np.ndarray, rs: np.ndarray, *, scale: int, fit: bool, quantities: tuple, stop: StopFlag
) -> Generator[Progress, None, tuple]:
    """The Inspect widget's morphology table (photutils apertures, shapes, optional Sersic fits) and summary."""
    from ..core.morphology import measure_morphology, morphology_summary

    yield Progress(0, 2, "apertures, fluxes, shapes" + (" and Sersic fits" if fit else ""))
    table = measure_morphology(gt, lq, rs, scale=scale, fit_sersic=fit)
    return table, morphology_summary(table, quantities=quantities)


def coadd_for_display(inp: dict, *, method: str, wcs: Any, header: Any, opts: Any, stop: StopFlag) -> Generator:
    """The Coadd widget's job: the same ``coadd_job`` as ``astrosr coadd`` + display limits."""
    from ..coadd_job import coadd_job, stack_from_arrays

    stack = yield from stack_from_arrays(
        inp["frames"],
        sigmas=inp["sigmas"],
        weights=inp["weights"],
        masks=inp["masks"],
        psfs=inp["psfs"],
        psf_spec=inp.get("psf_spec"),
        estimate_psfs=bool(inp.get("psf_estimate")) and method == "dip",
        wcs=wcs,
        header=header,
        stop=stop,
    )
    job = coadd_job(stack, options=opts, stop=stop)
    while True:  # each live preview carries its display limits: zscale is not free on the GUI thread
        try:
            event = next(job)
        except StopIteration as done:
            res = done.value
            break
        if event.preview is not None:
            event.preview = np.asarray(event.preview, dtype=np.float32)
            event.values = {**event.values, "limits": latent_limits(event.preview)}
        yield event
    return res, latent_limits(np.asarray(res.data, dtype=np.float32))


def train_for_widget(cfg: Any, *, out_dir: str, resume: bool, stop: StopFlag) -> Generator:
    """The Train widget's job: ``astrosr train``'s ``train_job``."""
    from ..training.loop import train_job

    return (yield from train_job(cfg, out_dir=out_dir, resume=resume, stop=stop))

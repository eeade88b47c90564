"""Summary statistics and figures of a morphology table (GT vs LQ and GT vs RS per quantity).

:func:`morphology_summary` (RMSE, bias, Pearson r per quantity and image), :func:`morphology_figure`
(matplotlib, no pyplot) and :func:`plot_morphology` (PNG). :mod:`.morphology` re-exports these names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
from astropy.table import QTable

QUANTITIES = ("iso_flux", "kron_flux", "e1", "e2", "r50", "sersic_n", "sersic_r50")
IMAGES = ("gt", "lq", "rs")


def _stats(ref, val) -> dict:
    ok = np.isfinite(ref) & np.isfinite(val)
    if ok.sum() < 2:
        return dict(rmse=None, pearson_r=None, n=int(ok.sum()))
    d = val[ok] - ref[ok]
    rmse = float(np.sqrt(np.mean(d**2)))
    r = float(np.corrcoef(ref[ok], val[ok])[0, 1]) if np.std(ref[ok]) > 0 and np.std(val[ok]) > 0 else None
    return dict(rmse=rmse, pearson_r=r, n=int(ok.sum()))


def morphology_summary(table: QTable, *, quantities=QUANTITIES, sersic_ok_only: bool = True) -> dict:
    """Per quantity: RMSE scatter and Pearson r of LQ vs GT and RS vs GT, and the scatter-reduction
    factor ``rmse_lq / rmse_rs`` (> 1: the restoration is closer to the truth).

    Fluxes are compared as relative differences (``val / gt - 1``, galaxies with GT flux > 0) so
    bright galaxies do not dominate (their Pearson r is on the fluxes themselves); shapes and radii
    as is (pixels). Sersic quantities use only fits with status ``ok`` in both images when
    ``sersic_ok_only``. Also the median per-galaxy pixel RMSE / pixel r inside the apertures.
    JSON-serialisable (None where undefined).
    """
    out: dict = {"n_galaxies": int(len(table))}
    for q in quantities:
        if f"{q}_gt" not in table.colnames:
            continue
        gt = np.asarray(table[f"{q}_gt"], np.float64)
        entry = {}
        for im in ("lq", "rs"):
            v = np.asarray(table[f"{q}_{im}"], np.float64)
            if q.startswith("sersic") and sersic_ok_only and f"sersic_status_{im}" in table.colnames:
                okfit = (np.asarray(table["sersic_status_gt"]).astype(str) == "ok") & (
                    np.asarray(table[f"sersic_status_{im}"]).astype(str) == "ok"
                )
                gt_q, v = np.where(okfit, gt, np.nan), np.where(okfit, v, np.nan)
            else:
                gt_q = gt
            if q.endswith("flux"):
                good = np.isfinite(gt_q) & (gt_q > 0)
                s = _stats(np.zeros(int(good.sum())), v[good] / gt_q[good] - 1)
                s["pearson_r"] = _stats(gt_q, v)["pearson_r"]
            else:
                s = _stats(gt_q, v)
            entry[im] = s
        a, b = entry["lq"]["rmse"], entry["rs"]["rmse"]
        entry["scatter_reduction"] = (a / b) if (a is not None and b) else None
        out[q] = entry
    if "pix_rmse_lq" in table.colnames and len(table):
        pix = {}
        for im in ("lq", "rs"):
            e = np.asarray(table[f"pix_rmse_{im}"], np.float64)
            r = np.asarray(table[f"pix_r_{im}"], np.float64)
            pix[im] = dict(
                median_rmse_over_peak=float(np.nanmedian(e)) if np.isfinite(e).any() else None,
                median_pearson_r=float(np.nanmedian(r)) if np.isfinite(r).any() else None,
            )
        a, b = pix["lq"]["median_rmse_over_peak"], pix["rs"]["median_rmse_over_peak"]
        pix["scatter_reduction"] = (a / b) if (a is not None and b) else None
        out["pixels"] = pix
    if len(table):
        for im in IMAGES:
            if f"sersic_status_{im}" in table.colnames:
                col = np.asarray(table[f"sersic_status_{im}"]).astype(str)
                out[f"sersic_failures_{im}"] = int(np.sum(np.char.startswith(col, "failed")))
                out[f"sersic_at_bound_{im}"] = int(np.sum(np.char.startswith(col, "at bound")))
    return out


_LABELS = {
    "iso_flux": "isophotal flux",
    "kron_flux": "Kron flux",
    "e1": "e1",
    "e2": "e2",
    "r50": "R50 [px]",
    "sersic_n": "Sersic n",
    "sersic_r50": "Sersic R50 [px]",
}


def morphology_figure(table: QTable, *, quantities=QUANTITIES, title: Optional[str] = None, summary=None):
    """Matplotlib Figure (no pyplot; safe in a Qt app or headless): one row per quantity,
    GT vs LQ (left) and GT vs RS (right) with 1:1 lines and the RMSE in each panel.
    """
    from matplotlib.figure import Figure

    quantities = [q for q in quantities if f"{q}_gt" in table.colnames]
    summary = summary if summary is not None else morphology_summary(table, quantities=quantities)
    fig = Figure(figsize=(6.4, 2.6 * max(len(quantities), 1)), layout="constrained")
    axes = fig.subplots(max(len(quantities), 1), 2, squeeze=False)
    for row, q in enumerate(quantities):
        gt = np.asarray(table[f"{q}_gt"], np.float64)
        for col, im in enumerate(("lq", "rs")):
            ax = axes[row, col]
            v = np.asarray(table[f"{q}_{im}"], np.float64)
            ok = np.isfinite(gt) & np.isfinite(v)
            if q.startswith("sersic") and f"sersic_status_{im}" in table.colnames:
                ok &= (np.asarray(table["sersic_status_gt"]).astype(str) == "ok") & (
                    np.asarray(table[f"sersic_status_{im}"]).astype(str) == "ok"
                )
            log = q.endswith("flux")
            if log:
                ok &= (gt > 0) & (v > 0)
            ax.scatter(gt[ok], v[ok], s=9, alpha=0.7, color="C0" if im == "lq" else "C3", edgecolors="none")
            if ok.any():
                lo, hi = float(min(gt[ok].min(), v[ok].min())), float(max(gt[ok].max(), v[ok].max()))
                ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
                if log:
                    ax.set_xscale("log")
                    ax.set_yscale("log")
            rm = summary.get(q, {}).get(im, {}).get("rmse")
            lab = _LABELS.get(q, q)
            ax.set_xlabel(f"{lab} (GT)", fontsize=8)
            ax.set_ylabel(f"{lab} ({im.upper()})", fontsize=8)
            ax.tick_params(labelsize=7)
            txt = f"RMSE {'(rel) ' if log else ''}{rm:.3g}" if rm is not None else "RMSE n/a"
            ax.text(0.03, 0.95, f"{txt}\nN={int(ok.sum())}", transform=ax.transAxes, va="top", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def plot_morphology(table: QTable, path, *, quantities=QUANTITIES, title: Optional[str] = None) -> Path:
    """Write :func:`morphology_figure` as a PNG (Agg canvas, no display needed)."""
    import os
    import tempfile

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = morphology_figure(table, quantities=quantities, title=title)
    FigureCanvasAgg(fig)
    p = Path(path)
    # atomic: a failed render leaves no partial PNG
    fd, tmp = tempfile.mkstemp(suffix=".png", dir=p.parent if str(p.parent) else ".")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=90, format="png")
        os.replace(tmp, p)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return p

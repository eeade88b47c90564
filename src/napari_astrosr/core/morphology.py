"""Per-galaxy morphology of ground truth (GT), degraded input (LQ) and restoration (RS).

Apertures are defined ONCE, on the LQ image, and applied unchanged to GT/LQ/RS, so the
three measurements of a galaxy differ only through the pixels (not the aperture):

- isophotal flux: sum over the LQ sep segmentation footprint (each image minus its own
  sep background);
- Kron flux: the LQ Kron ellipse (k x kron_radius x (a, b, theta), circle of ``min_radius``
  px for small ones) on each image;
- e1, e2: from flux-weighted second moments of each image inside the LQ footprint,
  e = (a - b) / (a + b), (e1, e2) = e (cos 2theta, sin 2theta);
- R50: half-light radius (``sep.flux_radius`` within 6 x a_LQ, normalised to each image's Kron flux);
- Sersic fit: astropy ``Sersic2D`` on a stamp (convolved with ``psf`` when given) by
  scipy least squares; failures are reported per source in ``sersic_status_*``, never raised.

All images must share one pixel grid (resample LQ onto the GT grid first, flux-conserving).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

import numpy as np
from astropy.table import QTable

from ..exceptions import AstroSRError, NoSourcesWarning

__all__ = ["measure_morphology", "morphology_summary", "plot_morphology", "QUANTITIES"]

QUANTITIES = ("iso_flux", "kron_flux", "e1", "e2", "r50", "sersic_n", "sersic_reff")
IMAGES = ("gt", "lq", "rs")


def _moments_shape(data, seg, ids):
    """e1, e2 from flux-weighted second moments inside each segment (vectorised with bincount)."""
    yy, xx = np.indices(data.shape)
    lab = seg.ravel()
    w = np.clip(data.ravel(), 0, None) * (lab > 0)
    n = int(seg.max()) + 1

    def s(v):
        return np.bincount(lab, weights=w * v, minlength=n)[ids]

    f = s(1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx, my = s(xx.ravel()) / f, s(yy.ravel()) / f
        cxx = s(xx.ravel() ** 2) / f - mx**2
        cyy = s(yy.ravel() ** 2) / f - my**2
        cxy = s((xx * yy).ravel()) / f - mx * my
        half = np.sqrt(((cxx - cyy) / 2) ** 2 + cxy**2)
        a = np.sqrt(np.clip((cxx + cyy) / 2 + half, 0, None))
        b = np.sqrt(np.clip((cxx + cyy) / 2 - half, 0, None))
        th = 0.5 * np.arctan2(2 * cxy, cxx - cyy)
        e = (a - b) / (a + b)
    return e * np.cos(2 * th), e * np.sin(2 * th)


def _sersic_fit(stamp, psf, x0, y0, r50, flux, ell0, theta0):
    """Fit Sersic2D (optionally PSF-convolved) to a background-subtracted stamp; returns (n, r_eff, status)."""
    from astropy.modeling.models import Sersic2D
    from scipy.optimize import least_squares
    from scipy.signal import fftconvolve

    ny, nx = stamp.shape
    yy, xx = np.mgrid[:ny, :nx].astype(np.float64)
    good = np.isfinite(stamp)
    sigma = max(float(np.nanstd(stamp[good])) * 0.1, 1e-12)

    def model(p):
        amp, reff, n, xc, yc, ell, th = p
        m = Sersic2D.evaluate(xx, yy, amp, reff, n, xc, yc, ell, th)
        if psf is not None:
            m = fftconvolve(m, psf, mode="same")
        return m

    def resid(p):
        return ((model(p) - stamp) / sigma)[good]

    reff0 = max(float(r50), 0.8)
    amp0 = max(float(flux), 1e-12) / (2 * np.pi * reff0**2 * 2.0)
    p0 = [amp0, reff0, 1.5, x0, y0, min(max(ell0, 0.0), 0.8), theta0]
    lo = [0.0, 0.3, 0.3, x0 - 3, y0 - 3, 0.0, -np.inf]
    hi = [np.inf, max(nx, ny), 8.0, x0 + 3, y0 + 3, 0.95, np.inf]
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = least_squares(resid, p0, bounds=(lo, hi), x_scale="jac", max_nfev=150)
    except Exception as exc:  # a failed fit is data, not an error
        return np.nan, np.nan, f"failed: {type(exc).__name__}: {exc}"[:80]
    if not r.success:
        return np.nan, np.nan, f"failed: {r.message}"[:80]
    n, reff = float(r.x[2]), float(r.x[1])
    status = "ok"
    if n <= 0.31 or n >= 7.9:
        status = "at bound: n"
    return n, reff, status


def measure_morphology(
    gt: np.ndarray,
    lq: np.ndarray,
    rs: np.ndarray,
    *,
    thresh: float = 1.5,
    minarea: int = 5,
    psf: Optional[np.ndarray] = None,
    fit_sersic: bool = True,
    k: float = 2.5,
    min_radius: float = 3.5,
    max_sources: int = 500,
) -> QTable:
    """Per-galaxy isophotal/Kron flux, e1/e2, R50 and Sersic (n, R_eff) on GT, LQ and RS.

    Parameters
    ----------
    gt, lq, rs : ndarray
        Same-shape images: ground truth, degraded input (resampled to the GT grid), restoration.
    thresh, minarea : float, int
        Detection on LQ (defines every aperture).
    psf : ndarray, optional
        PSF (unit sum, pixels of this grid) the Sersic model is convolved with.
    fit_sersic : bool
        Skip the (slowest) Sersic fits when False (columns are NaN, status "skipped").
    k, min_radius : float
        Kron aperture factor and minimum circular radius (pixels).
    max_sources : int
        Brightest (Kron flux on LQ) sources kept.

    Returns
    -------
    QTable
        id, x, y, a, b, theta, kron_radius and ``<quantity>_<gt|lq|rs>`` for each of
        :data:`QUANTITIES`, plus ``sersic_status_<img>``.
    """
    import sep

    from .detection import as_sep_array, detect, estimate_background
    from .photometry import ellipse_params, kron_flux

    ims = {"gt": gt, "lq": lq, "rs": rs}
    arrs = {}
    for key, im in ims.items():
        arrs[key] = np.asarray(as_sep_array(im, name=key.upper()), dtype=np.float64)
    shape = arrs["gt"].shape
    for key in ("lq", "rs"):
        if arrs[key].shape != shape:
            raise AstroSRError(f"{key.upper()} shape {arrs[key].shape} differs from GT {shape}; resample it onto "
                               "the GT grid first (flux-conserving upsample).")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoSourcesWarning)
        det = detect(arrs["lq"], thresh=thresh, minarea=minarea)
    src = det.sources
    if len(src) > max_sources:
        src = src[np.argsort(-np.nan_to_num(np.asarray(src["flux"]), nan=-np.inf))[:max_sources]]
    seg = np.asarray(det.segmap, dtype=np.int64)
    ids = np.asarray(src["id"], dtype=np.int64)
    out = QTable()
    for c in ("id", "x", "y", "a", "b", "theta", "kron_radius"):
        out[c] = np.asarray(src[c]) if len(src) else np.zeros(0)
    if len(src) == 0:
        for q in QUANTITIES:
            for im in IMAGES:
                out[f"{q}_{im}"] = np.zeros(0)
        for im in IMAGES:
            out[f"sersic_status_{im}"] = np.zeros(0, dtype="U80")
        return out
    x, y, a, b, th = ellipse_params(src)
    kr_lq = np.asarray(src["kron_radius"], np.float64)
    nseg = int(seg.max()) + 1
    if psf is not None:
        psf = np.asarray(psf, np.float64)
        psf = psf / psf.sum()
    for key, data in arrs.items():
        bad = ~np.isfinite(data)
        bkg = estimate_background(data, mask=bad)
        sub = np.where(bad, 0.0, data - bkg.back)
        sub = np.ascontiguousarray(sub)
        # isophotal flux inside the LQ footprint
        out[f"iso_flux_{key}"] = np.bincount(seg.ravel(), weights=sub.ravel(), minlength=nseg)[ids]
        # Kron flux with the LQ ellipse and LQ Kron radius
        r = np.maximum(k * kr_lq, 1e-6)
        f, _, _ = sep.sum_ellipse(sub, x, y, a, b, th, r=r, mask=bad, subpix=0)
        f = np.asarray(f, np.float64).copy()
        circ = k * kr_lq * np.sqrt(a * b) < min_radius
        if circ.any():
            f[circ] = np.asarray(sep.sum_circle(sub, x[circ], y[circ], min_radius, mask=bad, subpix=0)[0])
        out[f"kron_flux_{key}"] = f
        e1, e2 = _moments_shape(sub, seg, ids)
        out[f"e1_{key}"], out[f"e2_{key}"] = e1, e2
        norm = np.where(f > 0, f, np.nan)
        r50, _ = sep.flux_radius(sub, x, y, 6.0 * a, 0.5, normflux=np.nan_to_num(norm, nan=1.0), mask=bad, subpix=5)
        out[f"r50_{key}"] = np.where(f > 0, np.asarray(r50, np.float64), np.nan)
        ns, rs_, st = np.full(len(src), np.nan), np.full(len(src), np.nan), np.full(len(src), "skipped", "U80")
        if fit_sersic:
            ell0 = 1 - b / a
            for i in range(len(src)):
                h = int(np.clip(np.ceil(max(k * kr_lq[i], 2.0) * a[i]) + 3, 6, 40))
                x0, y0 = int(round(x[i])), int(round(y[i]))
                ys, xs = slice(max(y0 - h, 0), min(y0 + h + 1, shape[0])), slice(max(x0 - h, 0), min(x0 + h + 1, shape[1]))
                stamp = np.where(bad[ys, xs], np.nan, sub[ys, xs])
                if not np.isfinite(out[f"r50_{key}"][i]) or f[i] <= 0:
                    st[i] = "failed: non-positive flux"
                    continue
                ns[i], rs_[i], st[i] = _sersic_fit(stamp, psf, x[i] - xs.start, y[i] - ys.start,
                                                  out[f"r50_{key}"][i], f[i], ell0[i], th[i])
        out[f"sersic_n_{key}"], out[f"sersic_reff_{key}"], out[f"sersic_status_{key}"] = ns, rs_, st
    return out


def _stats(ref, val) -> dict:
    ok = np.isfinite(ref) & np.isfinite(val)
    if ok.sum() < 2:
        return dict(rmse=None, pearson_r=None, n=int(ok.sum()))
    d = val[ok] - ref[ok]
    rmse = float(np.sqrt(np.mean(d**2)))
    if np.std(ref[ok]) > 0 and np.std(val[ok]) > 0:
        r = float(np.corrcoef(ref[ok], val[ok])[0, 1])
    else:
        r = None
    return dict(rmse=rmse, pearson_r=r, n=int(ok.sum()))


def morphology_summary(table: QTable) -> dict:
    """Per quantity: RMSE scatter and Pearson r of LQ vs GT and RS vs GT, and the scatter-reduction
    factor rmse_lq / rmse_rs (> 1: the restoration is closer to the truth). Fluxes are compared as
    relative differences (val / gt - 1) so bright galaxies do not dominate; shapes and radii as is.
    JSON-serialisable (None where undefined)."""
    out: dict = {"n_galaxies": int(len(table))}
    for q in QUANTITIES:
        gt = np.asarray(table[f"{q}_gt"], np.float64)
        entry = {}
        for im in ("lq", "rs"):
            v = np.asarray(table[f"{q}_{im}"], np.float64)
            if q.endswith("flux"):
                with np.errstate(divide="ignore", invalid="ignore"):
                    good = gt > 0
                    s = _stats(np.zeros(good.sum()), v[good] / gt[good] - 1)
                    s["pearson_r"] = _stats(gt, v)["pearson_r"]
            else:
                s = _stats(gt, v)
            entry[im] = s
        a, b = entry["lq"]["rmse"], entry["rs"]["rmse"]
        entry["scatter_reduction"] = (a / b) if (a is not None and b) else None
        out[q] = entry
    if len(table):
        for im in IMAGES:
            col = np.asarray(table[f"sersic_status_{im}"])
            out[f"sersic_failures_{im}"] = int(np.sum(~np.char.startswith(col.astype(str), "ok")
                                                    & (col != "skipped")))
    return out


def plot_morphology(table: QTable, path, *, quantities=QUANTITIES) -> Path:
    """Scatter plots GT vs LQ and GT vs RS (1:1 lines) per quantity, one PNG (matplotlib Agg)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    quantities = [q for q in quantities if f"{q}_gt" in table.colnames]
    fig = Figure(figsize=(7, 3 * len(quantities)), layout="constrained")
    axes = fig.subplots(len(quantities), 2, squeeze=False)
    for row, q in enumerate(quantities):
        gt = np.asarray(table[f"{q}_gt"], np.float64)
        for col, im in enumerate(("lq", "rs")):
            ax = axes[row, col]
            v = np.asarray(table[f"{q}_{im}"], np.float64)
            ok = np.isfinite(gt) & np.isfinite(v)
            ax.scatter(gt[ok], v[ok], s=8, alpha=0.7, color="C0" if im == "lq" else "C3")
            if ok.any():
                lo, hi = float(min(gt[ok].min(), v[ok].min())), float(max(gt[ok].max(), v[ok].max()))
                ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="1:1")
                if q.endswith("flux") and lo > 0:
                    ax.set_xscale("log")
                    ax.set_yscale("log")
            ax.set_xlabel(f"{q} (GT)")
            ax.set_ylabel(f"{q} ({im.upper()})")
            ax.set_title(f"GT vs {im.upper()}: {q}", fontsize=9)
    p = Path(path)
    fig.savefig(p, dpi=90)
    return p

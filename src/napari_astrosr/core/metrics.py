"""Image-quality and flux metrics (definitions: DESIGN.md section 4).

- PSNR / SSIM (scikit-image) always with an explicit ``data_range``: the reference's
  finite range (max - min) unless given; :func:`evaluate` reports which.
- Flux Error (STAR): detect on the reference (sep, 1.5 sigma), fixed elliptical aperture
  2.5 x (a, b, theta) on reference and prediction at the reference ellipses, each with its
  own sep background subtracted; FE = mean |f_ref - f_pred| (image units). Also the median
  of |f_ref - f_pred| / f_ref over sources with S/N > 10 (S/N of the reference flux).
- KL / JS in regions: shared bins over the union range (64), epsilon 1e-10 added before
  normalising, natural log (nats; JS <= ln 2).
- Sharpness S_F (AstroClearNet): mean over frequencies of log(|FFT2| + 1e-10).
- Sky sigma: std of pixels outside the dilated sep segmentation (non-finite pixels excluded).
- Recall: one-to-one (Hungarian) matching within 2 px, over reference sources.
- Shear: gamma1,2 = (a^2 - b^2) / (a^2 + b^2) * (cos 2theta, sin 2theta) of matched sources.
- Magnitudes: mag = -2.5 log10(f) + ZP; delta_mag = mag_pred - mag_ref (ZP cancels).

Pixels non-finite in either image are left out (with a warning) rather than producing NaN.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from typing import Any, Optional, Union

import numpy as np
from astropy.table import QTable

from ..exceptions import AstroSRError, AstroSRWarning, NoSourcesWarning

__all__ = [
    "psnr",
    "ssim",
    "flux_error",
    "source_residuals",
    "region_divergence",
    "sharpness",
    "sky_sigma",
    "recall",
    "match_sources",
    "shear",
    "shear_error",
    "magnitudes",
    "evaluate",
    "evaluate_with_residuals",
    "MetricWarning",
]

EPS = 1e-10


class MetricWarning(AstroSRWarning):
    """A metric could not be computed as asked (reported as None, or on fewer pixels)."""


# ----------------------------------------------------------------------------- helpers
def _image(a, name: str) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim != 2:
        raise AstroSRError(f"{name}: expected a 2-D image, got shape {arr.shape}.")
    if arr.size == 0:
        raise AstroSRError(f"{name}: the image is empty.")
    return arr


def _pair(ref, pred) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate a reference/prediction pair; return them and the mask of pixels finite in both."""
    r, p = _image(ref, "reference"), _image(pred, "prediction")
    if r.shape != p.shape:
        raise AstroSRError(
            f"prediction shape {p.shape} differs from reference shape {r.shape}; resample one onto the "
            "other's grid first (e.g. flux-conserving `astrosr degrade` / restore at the matching scale)."
        )
    ok = np.isfinite(r) & np.isfinite(p)
    if not ok.any():
        raise AstroSRError("reference/prediction: no pixel is finite in both images; nothing to compare.")
    nbad = int(ok.size - ok.sum())
    if nbad:
        warnings.warn(
            f"{nbad} pixel(s) non-finite in reference or prediction were left out", MetricWarning, stacklevel=3
        )
    return r, p, ok


def _resolve_range(ref: np.ndarray, ok: np.ndarray, data_range: Optional[float]) -> float:
    if data_range is None:
        vals = ref[ok]
        data_range = float(vals.max() - vals.min())
        if data_range <= 0:
            raise AstroSRError("reference is constant (zero range): give an explicit data_range (--data-range).")
        return data_range
    data_range = float(data_range)
    if not math.isfinite(data_range) or data_range <= 0:
        raise AstroSRError(f"data_range: must be a positive number, got {data_range}.")
    return data_range


def _clean(v: Any, name: str, notes: Optional[list] = None):
    """Plain float for JSON; non-finite -> None with a warning."""
    if v is None:
        return None
    v = float(v)
    if math.isfinite(v):
        return v
    msg = f"{name} is {v} (not a finite number); reported as null"
    warnings.warn(msg, MetricWarning, stacklevel=3)
    if notes is not None:
        notes.append(msg)
    return None


# ------------------------------------------------------------------------- PSNR / SSIM
def psnr(ref: np.ndarray, pred: np.ndarray, *, data_range: Optional[float] = None) -> float:
    """Peak signal-to-noise ratio in dB (scikit-image), over pixels finite in both images.

    ``data_range`` defaults to the reference's finite max - min. Identical images give +inf.
    """
    from skimage.metrics import peak_signal_noise_ratio

    r, p, ok = _pair(ref, pred)
    dr = _resolve_range(r, ok, data_range)
    if ok.all():
        with np.errstate(divide="ignore"):
            return float(peak_signal_noise_ratio(r, p, data_range=dr))
    with np.errstate(divide="ignore"):
        return float(peak_signal_noise_ratio(r[ok], p[ok], data_range=dr))


def ssim(ref: np.ndarray, pred: np.ndarray, *, data_range: Optional[float] = None, win_size: int = 7) -> float:
    """Mean structural similarity (scikit-image, 7x7 window) with an explicit data_range.

    Non-finite pixels are filled with the reference's median in both images (SSIM needs a
    full grid) after a warning.
    """
    from skimage.metrics import structural_similarity

    r, p, ok = _pair(ref, pred)
    dr = _resolve_range(r, ok, data_range)
    if min(r.shape) < win_size:
        raise AstroSRError(f"images of shape {r.shape} are smaller than the SSIM window ({win_size} px).")
    if not ok.all():
        fill = float(np.median(r[ok]))
        r, p = np.where(ok, r, fill), np.where(ok, p, fill)
    return float(structural_similarity(r, p, data_range=dr, win_size=win_size))


# ------------------------------------------------------------------------ flux metrics
def _detect_quiet(image, **kw) -> QTable:
    from .detection import detect_sources

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoSourcesWarning)
        return detect_sources(image, **kw)


def magnitudes(flux, *, zeropoint: float = 0.0) -> np.ndarray:
    """Mag = -2.5 log10(flux) + zeropoint; NaN where flux <= 0."""
    f = np.asarray(flux, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(f > 0, -2.5 * np.log10(np.where(f > 0, f, 1.0)) + zeropoint, np.nan)


def source_residuals(
    ref: np.ndarray,
    pred: np.ndarray,
    *,
    wcs=None,
    sources: Optional[QTable] = None,
    zeropoint: Optional[float] = None,
    thresh: float = 1.5,
    k: float = 2.5,
) -> QTable:
    """Per-source flux residuals at the reference's ellipses.

    Parameters
    ----------
    ref, pred : ndarray
        Same-shape images (reference = ground truth).
    wcs : WCS, optional
        Adds RA/Dec (degrees); NaN columns otherwise.
    sources : table, optional
        Ellipses to measure (x, y, a, b, theta); default: detected on ``ref`` at ``thresh`` sigma.
    zeropoint : float, optional
        Adds ``mag_ref``/``mag_pred`` (mag = -2.5 log10 f + ZP).
    thresh, k : float
        Detection threshold (sigma) and aperture scale (2.5 as in STAR).

    Returns
    -------
    QTable
        x y ra dec f_ref f_ref_err snr f_pred delta rel_delta delta_mag [mag_ref mag_pred];
        delta = f_pred - f_ref, rel_delta = delta / f_ref, delta_mag = -2.5 log10(f_pred / f_ref).
    """
    from .background import estimate_background
    from .photometry import elliptical_aperture_flux

    r, p, ok = _pair(ref, pred)
    if sources is None:
        sources = _detect_quiet(np.where(ok, r, np.nan), thresh=thresh, wcs=wcs)
    bad = ~ok
    bref = estimate_background(r, mask=bad)
    bpred = estimate_background(p, mask=bad)
    f_ref, e_ref = elliptical_aperture_flux(r, sources, k=k, background=bref.back, err=bref.rms, mask=bad)
    f_pred, _ = elliptical_aperture_flux(p, sources, k=k, background=bpred.back, err=bpred.rms, mask=bad)
    t = QTable()
    t["x"] = np.asarray(sources["x"], np.float64) if len(sources) else np.zeros(0)
    t["y"] = np.asarray(sources["y"], np.float64) if len(sources) else np.zeros(0)
    if wcs is not None and getattr(wcs, "has_celestial", False) and len(t):
        ra, dec = wcs.celestial.pixel_to_world_values(t["x"], t["y"])
        t["ra"], t["dec"] = np.asarray(ra, np.float64), np.asarray(dec, np.float64)
    else:
        t["ra"] = np.full(len(t), np.nan)
        t["dec"] = np.full(len(t), np.nan)
    t["f_ref"] = f_ref
    t["f_ref_err"] = e_ref
    with np.errstate(divide="ignore", invalid="ignore"):
        t["snr"] = np.where(e_ref > 0, f_ref / e_ref, np.nan)
        t["f_pred"] = f_pred
        t["delta"] = f_pred - f_ref
        t["rel_delta"] = np.where(f_ref != 0, (f_pred - f_ref) / f_ref, np.nan)
        t["delta_mag"] = magnitudes(f_pred) - magnitudes(f_ref)
    if zeropoint is not None:
        t["mag_ref"] = magnitudes(f_ref, zeropoint=zeropoint)
        t["mag_pred"] = magnitudes(f_pred, zeropoint=zeropoint)
    t.meta["aperture"] = f"elliptical {k} x (a, b, theta) at reference ellipses, own background subtracted"
    return t


def _flux_summary(res: QTable, snr_min: float = 10.0) -> dict:
    if len(res) == 0:
        return dict(flux_error=float("nan"), flux_error_rel_median=float("nan"), n_sources=0, n_sources_snr10=0)
    d = np.abs(np.asarray(res["delta"]))
    good = np.isfinite(res["snr"]) & (np.asarray(res["snr"]) > snr_min) & (np.asarray(res["f_ref"]) > 0)
    rel = np.abs(np.asarray(res["rel_delta"]))[good]
    return dict(
        flux_error=float(np.nanmean(d)) if np.isfinite(d).any() else float("nan"),
        flux_error_rel_median=float(np.median(rel)) if rel.size else float("nan"),
        n_sources=int(len(res)),
        n_sources_snr10=int(good.sum()),
    )


def flux_error(ref: np.ndarray, pred: np.ndarray, *, thresh: float = 1.5, sources: Optional[QTable] = None) -> dict:
    """STAR's Flux Error: dict(flux_error, flux_error_rel_median, n_sources, n_sources_snr10).

    NaN values (no source, or none with S/N > 10) mean "undefined"; :func:`evaluate` turns them
    into null with a warning.
    """
    return _flux_summary(source_residuals(ref, pred, sources=sources, thresh=thresh))


# ----------------------------------------------------------------- distribution metrics
def region_divergence(ref: np.ndarray, pred: np.ndarray, region_mask: np.ndarray, *, bins: int = 64) -> dict:
    """KL(ref || pred) and Jensen-Shannon divergence (nats) of pixel values inside a region.

    Returns dict(kl, js, n_pixels). Raises AstroSRError for an empty region, one outside
    the image, or one whose pixels are all non-finite.
    """
    r, p, ok = _pair(ref, pred)
    m = np.asarray(region_mask, dtype=bool)
    if m.shape != r.shape:
        raise AstroSRError(f"region mask shape {m.shape} differs from the image shape {r.shape}.")
    if not m.any():
        raise AstroSRError("region is empty (or entirely outside the image).")
    sel = m & ok
    if not sel.any():
        raise AstroSRError("region contains only non-finite (NaN/blank) pixels.")
    if bins < 1:
        raise AstroSRError(f"bins: must be >= 1, got {bins}.")
    a, b = r[sel], p[sel]
    lo, hi = float(min(a.min(), b.min())), float(max(a.max(), b.max()))
    if hi <= lo:
        hi = lo + 1.0  # constant values: a single populated bin, divergences are 0
    hp, _ = np.histogram(a, bins=bins, range=(lo, hi))
    hq, _ = np.histogram(b, bins=bins, range=(lo, hi))
    P = (hp + EPS) / (hp + EPS).sum()
    Q = (hq + EPS) / (hq + EPS).sum()
    M = 0.5 * (P + Q)
    kl = float(np.sum(P * np.log(P / Q)))
    js = float(0.5 * np.sum(P * np.log(P / M)) + 0.5 * np.sum(Q * np.log(Q / M)))
    return dict(kl=kl, js=js, n_pixels=int(sel.sum()))


def sharpness(image: np.ndarray, *, eps: float = EPS) -> float:
    """AstroClearNet's S_F: mean over frequencies of log(|FFT2(image)| + eps).

    Non-finite pixels are replaced by the finite median (a warning says how many).
    """
    img = _image(image, "image")
    ok = np.isfinite(img)
    if not ok.any():
        raise AstroSRError("image: no finite pixel; sharpness undefined.")
    if not ok.all():
        warnings.warn(
            f"sharpness: {int((~ok).sum())} non-finite pixel(s) set to the median", MetricWarning, stacklevel=2
        )
        img = np.where(ok, img, np.median(img[ok]))
    return float(np.mean(np.log(np.abs(np.fft.fft2(img)) + eps)))


def sky_sigma(image: np.ndarray, *, thresh: float = 1.5, dilate: int = 3, segmap: Optional[np.ndarray] = None) -> float:
    """Standard deviation of sky pixels: outside the sep segmentation dilated by ``dilate`` px.

    NaN (with a warning) if no sky pixel remains.
    """
    from scipy.ndimage import binary_dilation

    from .detection import detect

    img = _image(image, "image")
    ok = np.isfinite(img)
    if not ok.any():
        raise AstroSRError("image: no finite pixel; sky sigma undefined.")
    if segmap is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NoSourcesWarning)
            segmap = detect(img, thresh=thresh, kron=False).segmap
    src = np.asarray(segmap) > 0
    if dilate > 0 and src.any():
        src = binary_dilation(src, iterations=int(dilate))
    sky = ok & ~src
    if sky.sum() < 2:
        warnings.warn("sky sigma: no sky pixel left after masking sources", MetricWarning, stacklevel=2)
        return float("nan")
    return float(np.std(img[sky]))


# ------------------------------------------------------------------ catalog matching
def match_sources(ref_xy: np.ndarray, pred_xy: np.ndarray, *, max_dist: float = 2.0):
    """One-to-one matching minimising total distance (Hungarian) among pairs within ``max_dist``.

    The assignment is solved per connected group of candidate pairs (scipy's
    linear_sum_assignment on small blocks), so crowded catalogs of thousands stay fast.

    Returns
    -------
    i_ref, i_pred, dist : ndarray
    """
    from scipy.optimize import linear_sum_assignment
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    A = np.asarray(ref_xy, np.float64).reshape(-1, 2)
    B = np.asarray(pred_xy, np.float64).reshape(-1, 2)
    empty = (np.zeros(0, int), np.zeros(0, int), np.zeros(0))
    if len(A) == 0 or len(B) == 0:
        return empty
    okA, okB = np.isfinite(A).all(axis=1), np.isfinite(B).all(axis=1)
    if not (okA.all() and okB.all()):  # a source without a position (centroid of overflowing pixels) matches nothing
        ia, ib = np.flatnonzero(okA), np.flatnonzero(okB)
        i, j, dist = match_sources(A[okA], B[okB], max_dist=max_dist)
        return ia[i], ib[j], dist
    D = cKDTree(A).sparse_distance_matrix(cKDTree(B), max_dist, output_type="coo_matrix")
    if D.nnz == 0:
        return empty
    nA = len(A)
    g = coo_matrix((np.ones(D.nnz), (D.row, nA + D.col)), shape=(nA + len(B),) * 2)
    _, lab = connected_components(g, directed=False)
    comp = lab[D.row]
    # isolated pairs (the usual case) need no assignment: take them directly
    single = np.bincount(comp, minlength=lab.max() + 1)[comp] == 1
    out_r, out_c, out_d = [D.row[single]], [D.col[single]], [D.data[single]]
    order = np.argsort(comp[~single], kind="stable")
    rows, cols, dist, comp = (v[~single][order] for v in (D.row, D.col, D.data, comp))
    splits = np.flatnonzero(np.diff(comp)) + 1
    if rows.size == 0:
        return tuple(np.concatenate(v) for v in (out_r, out_c, out_d))
    big = max_dist * 1e3 + 1.0
    for rr, cc, dd in zip(np.split(rows, splits), np.split(cols, splits), np.split(dist, splits)):
        ur, ir = np.unique(rr, return_inverse=True)
        uc, ic = np.unique(cc, return_inverse=True)
        cost = np.full((len(ur), len(uc)), big)
        cost[ir, ic] = dd
        a, b = linear_sum_assignment(cost)
        keep = cost[a, b] <= max_dist
        out_r.append(ur[a[keep]])
        out_c.append(uc[b[keep]])
        out_d.append(cost[a, b][keep])
    return np.concatenate(out_r), np.concatenate(out_c), np.concatenate(out_d)


def _xy(t) -> np.ndarray:
    return np.c_[np.asarray(t["x"], np.float64), np.asarray(t["y"], np.float64)] if len(t) else np.zeros((0, 2))


def recall(ref_sources, pred_sources, *, max_dist: float = 2.0) -> float:
    """Fraction of reference sources matched one-to-one (Hungarian) within ``max_dist`` pixels.

    NaN when the reference catalog is empty.
    """
    if len(ref_sources) == 0:
        return float("nan")
    i, _, _ = match_sources(_xy(ref_sources), _xy(pred_sources), max_dist=max_dist)
    return float(len(i) / len(ref_sources))


def shear(sources) -> tuple[np.ndarray, np.ndarray]:
    """(gamma1, gamma2) = (a^2 - b^2)/(a^2 + b^2) * (cos 2theta, sin 2theta) from sep ellipses."""
    a = np.asarray(sources["a"], np.float64)
    b = np.asarray(sources["b"], np.float64)
    th = np.asarray(sources["theta"], np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        e = (a**2 - b**2) / (a**2 + b**2)
    return e * np.cos(2 * th), e * np.sin(2 * th)


def shear_error(ref_sources, pred_sources, *, max_dist: float = 2.0) -> dict:
    """RMS and mean of gamma_pred - gamma_ref over matched sources: dict(shear_rms_g1, shear_rms_g2,
    shear_bias_g1, shear_bias_g2, n_matched); NaN values when nothing matched.
    """
    i, j, _ = match_sources(_xy(ref_sources), _xy(pred_sources), max_dist=max_dist)
    if len(i) == 0:
        nan = float("nan")
        return dict(shear_rms_g1=nan, shear_rms_g2=nan, shear_bias_g1=nan, shear_bias_g2=nan, n_matched=0)
    g1r, g2r = shear(ref_sources[i])
    g1p, g2p = shear(pred_sources[j])
    d1, d2 = g1p - g1r, g2p - g2r
    return dict(
        shear_rms_g1=float(np.sqrt(np.nanmean(d1**2))),
        shear_rms_g2=float(np.sqrt(np.nanmean(d2**2))),
        shear_bias_g1=float(np.nanmean(d1)),
        shear_bias_g2=float(np.nanmean(d2)),
        n_matched=int(len(i)),
    )


# ------------------------------------------------------------------------- evaluate
RoiSpec = Union[np.ndarray, tuple, Any]


def _roi_masks(rois: Optional[Iterable[RoiSpec]], shape, wcs) -> list[tuple[str, Optional[np.ndarray], str]]:
    """Normalise ROIs to (name, mask or None, problem) triples."""
    out = []
    if rois is None:
        return out
    for n, roi in enumerate(rois):
        name = f"roi{n + 1}"
        if isinstance(roi, tuple) and len(roi) == 2 and isinstance(roi[0], str):
            name, roi = roi
        if isinstance(roi, np.ndarray):
            m = roi.astype(bool)
            if m.shape != tuple(shape):
                out.append((name, None, f"mask shape {m.shape} differs from image shape {tuple(shape)}"))
                continue
            out.append((name, m, ""))
            continue
        from .catalogs import region_to_mask

        try:
            out.append((name, region_to_mask(roi, shape, wcs=wcs), ""))
        except AstroSRError as exc:
            out.append((name, None, str(exc)))
    return out


def evaluate_with_residuals(
    ref: np.ndarray,
    pred: np.ndarray,
    *,
    rois: Optional[Sequence[RoiSpec]] = None,
    wcs=None,
    data_range: Optional[float] = None,
    thresh: float = 1.5,
    zeropoint: Optional[float] = None,
    max_dist: float = 2.0,
) -> tuple[dict, QTable]:
    """:func:`evaluate` plus the per-source residual table."""
    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r, p, ok = _pair(ref, pred)
        dr = _resolve_range(r, ok, data_range)
        out: dict[str, Any] = {}
        out["psnr"] = psnr(r, p, data_range=dr)
        out["ssim"] = ssim(r, p, data_range=dr) if min(r.shape) >= 7 else float("nan")
        out["data_range"] = dr
        out["data_range_source"] = "given" if data_range is not None else "reference max - min"

        from .detection import detect

        rmask = np.where(ok, r, np.nan)
        pmask = np.where(ok, p, np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NoSourcesWarning)
            det_ref = detect(rmask, thresh=thresh, wcs=wcs)
            det_pred = detect(pmask, thresh=thresh, wcs=wcs)
        res = source_residuals(r, p, wcs=wcs, sources=det_ref.sources, zeropoint=zeropoint)
        out.update(_flux_summary(res))
        if zeropoint is not None and len(res):
            out["mag_error_median"] = float(np.nanmedian(np.abs(res["delta_mag"])))
        out["n_sources_prediction"] = int(len(det_pred.sources))
        out["recall"] = recall(det_ref.sources, det_pred.sources, max_dist=max_dist)
        out.update(shear_error(det_ref.sources, det_pred.sources, max_dist=max_dist))
        out["sharpness"] = sharpness(pmask)
        out["sharpness_reference"] = sharpness(rmask)
        out["sky_sigma"] = sky_sigma(pmask, segmap=det_pred.segmap)
        out["sky_sigma_reference"] = sky_sigma(rmask, segmap=det_ref.segmap)
        out["thresh"] = float(thresh)

        roi_out = []
        for name, m, problem in _roi_masks(rois, r.shape, wcs):
            entry: dict[str, Any] = dict(name=name, kl=None, js=None, n_pixels=0)
            if m is not None:
                try:
                    entry.update(region_divergence(r, p, m))
                except AstroSRError as exc:
                    problem = str(exc)
            if problem:
                entry["error"] = problem
                msg = f"ROI {name}: {problem.rstrip('.')}; kl/js reported as null"
                warnings.warn(msg, MetricWarning, stacklevel=2)
            roi_out.append(entry)
        out["rois"] = roi_out

    for w in caught:
        if issubclass(w.category, (MetricWarning, AstroSRWarning)):
            notes.append(str(w.message))
    # plain JSON types: NaN / inf -> None with a note
    for key, val in list(out.items()):
        if isinstance(val, float):
            out[key] = _clean(val, key, notes)
    for entry in out["rois"]:
        for key in ("kl", "js"):
            entry[key] = _clean(entry[key], f"{entry['name']}.{key}", notes)
    # re-emit what was recorded so callers still see warnings
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    out["warnings"] = list(dict.fromkeys(notes))
    return out, res


def evaluate(
    ref: np.ndarray,
    pred: np.ndarray,
    *,
    rois: Optional[Sequence[RoiSpec]] = None,
    wcs=None,
    data_range: Optional[float] = None,
    thresh: float = 1.5,
    zeropoint: Optional[float] = None,
) -> dict:
    """All metrics of a prediction against a reference, as one JSON-serialisable dict.

    Keys: psnr, ssim, data_range, data_range_source, flux_error, flux_error_rel_median, n_sources,
    n_sources_snr10, n_sources_prediction, recall, shear_rms_g1/g2, shear_bias_g1/g2, n_matched,
    sharpness (prediction), sharpness_reference, sky_sigma (prediction), sky_sigma_reference,
    thresh, rois (list of dict(name, kl, js, n_pixels[, error])), warnings (list of str).
    Undefined values are None (with a warning); ``rois`` accepts bool masks, (name, mask)
    pairs, or astropy-regions regions (pixel, or sky with ``wcs``).

    Raises
    ------
    AstroSRError
        Different shapes (resample first), no finite overlap, constant reference without data_range.
    """
    return evaluate_with_residuals(
        ref, pred, rois=rois, wcs=wcs, data_range=data_range, thresh=thresh, zeropoint=zeropoint
    )[0]

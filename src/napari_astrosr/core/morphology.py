"""Per-galaxy morphology of ground truth (GT), degraded input (LQ) and restoration (RS).

Apertures are defined ONCE (on the LQ image by default, as in the paper; or on GT/RS) and
applied unchanged to GT, LQ and RS, so the three measurements of a galaxy differ only through
the pixels, never through the aperture (:class:`Apertures`):

- **isophotal flux**: sum over the sep segmentation footprint of the aperture image (each image
  minus its own sep background);
- **Kron flux**: the aperture image's Kron ellipse (``k x kron_radius x (a, b, theta)``, a circle
  of ``min_radius`` px where that is smaller) on each image;
- **e1, e2**: flux-weighted second moments of each image inside the footprint,
  ``e = (a - b) / (a + b)``, ``(e1, e2) = e (cos 2 theta, sin 2 theta)``;
- **R50**: circular half-light radius (``sep.flux_radius`` within 6 a, normalised to each
  image's Kron flux), pixels;
- **Sersic fit**: :class:`PSFConvolvedSersic2D` -- astropy's ``Sersic2D`` rendered with a
  5x-oversampled core and FFT-convolved with the PSF *inside* the fit (so the fitted
  ``n``, ``R50`` (= semi-major ``r_eff``), ``I(R50)``, ellipticity and angle are intrinsic,
  not blurred). Initial guesses come from the moments, R50 (PSF removed in quadrature) and the
  R80/R20 concentration; bounded trust-region least squares; neighbours (other footprints)
  masked. A failed fit is reported in ``sersic_status_<img>`` (NaN values), never raised.
- **pixels**: per galaxy, the RMS of (image - GT) inside the footprint relative to the GT peak,
  and the pixel-to-pixel Pearson correlation with GT (``pix_rmse_*``, ``pix_r_*``).

Which PSF the Sersic models carry
    ``psf`` is one kernel for all three images (default in the CLI: the GT PSF), i.e. each image is
    analysed *as if it had the GT resolution* -- the question is "would a GT-resolution analysis
    of this image give the GT answer", so an unrestored LQ shows the full cost of its blur. Pass a
    dict ``{"gt": k1, "lq": k2, "rs": k3}`` to fit each image with its own PSF instead.

LQ on its own (coarser) grid
    Pass ``scale`` (integer). LQ is brought onto the GT grid with :func:`core.resample.block_split`
    (each LQ pixel split into ``scale^2`` equal parts == ``upsample(method='nearest')``): exactly
    flux-conserving per LQ pixel and adds no information, and every GT-grid aperture then applies
    unchanged. Grids are edge-aligned (LQ pixel ``i`` covers GT pixels ``[i s, (i+1) s)``, as
    :func:`core.degrade.degrade` makes them); GT rows/columns beyond ``s x LQ shape`` are NaN.

Where the code lives
    This module holds the measurements (:func:`measure_image`, :func:`measure_morphology`,
    :func:`measure_morphology_many`) and re-exports the rest for compatibility: apertures and the LQ
    grid in :mod:`.morphology_apertures`, the PSF-convolved Sersic model and its fit in
    :mod:`.sersic`, the summary statistics and figures in :mod:`.morphology_plots`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Optional, Union

import numpy as np
from astropy.table import QTable

from ..exceptions import AstroSRError
from .morphology_apertures import Apertures, define_apertures, lq_to_reference_grid
from .morphology_plots import IMAGES, QUANTITIES, morphology_figure, morphology_summary, plot_morphology  # noqa: F401
from .sersic import SERSIC_COLUMNS, PSFConvolvedSersic2D, fit_sersic

__all__ = [
    "measure_morphology",
    "measure_morphology_many",
    "define_apertures",
    "measure_image",
    "lq_to_reference_grid",
    "fit_sersic",
    "PSFConvolvedSersic2D",
    "Apertures",
    "morphology_summary",
    "morphology_figure",
    "plot_morphology",
    "QUANTITIES",
]

PsfArg = Union[None, np.ndarray, Mapping[str, Optional[np.ndarray]]]


# ---------------------------------------------------------------------------------------------
# Measurements (apertures: .morphology_apertures; Sersic fit: .sersic; summary and plots: .morphology_plots)
# ---------------------------------------------------------------------------------------------


def _prepared(image: np.ndarray, name: str):
    """Background-subtracted float64 copy (NaN kept) and its global rms."""
    from .background import as_sep_array, estimate_background

    d = np.asarray(as_sep_array(image, name=name), dtype=np.float64)
    bad = ~np.isfinite(d)
    if bad.all():
        raise AstroSRError(f"{name}: every pixel is NaN/blank; nothing to measure.")
    bkg = estimate_background(d, mask=bad)
    sub = d - bkg.back
    sub[bad] = np.nan
    return sub, float(bkg.globalrms)


def _moments(data, seg, ids):
    """Flux-weighted second moments inside each footprint -> (e1, e2, e, theta) (vectorised)."""
    yy, xx = np.indices(data.shape)
    lab = seg.ravel()
    w = np.clip(np.nan_to_num(data.ravel()), 0, None) * (lab > 0)
    n = int(seg.max()) + 1 if seg.size else 1

    def s(v):
        return np.bincount(lab, weights=w * v, minlength=n)[ids]

    f = s(1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx, my = s(xx.ravel()) / f, s(yy.ravel()) / f
        cxx = s(xx.ravel() ** 2.0) / f - mx**2
        cyy = s(yy.ravel() ** 2.0) / f - my**2
        cxy = s((xx * yy).ravel() * 1.0) / f - mx * my
        half = np.sqrt(((cxx - cyy) / 2) ** 2 + cxy**2)
        a = np.sqrt(np.clip((cxx + cyy) / 2 + half, 0, None))
        b = np.sqrt(np.clip((cxx + cyy) / 2 - half, 0, None))
        th = 0.5 * np.arctan2(2 * cxy, cxx - cyy)
        e = (a - b) / (a + b)
    return e * np.cos(2 * th), e * np.sin(2 * th), e, th


def measure_image(
    image: np.ndarray,
    apertures: Apertures,
    *,
    psf: Optional[np.ndarray] = None,
    fit_sersic: bool = True,
    name: str = "image",
    max_nfev: int = 400,
    stamp_max: int = 40,
) -> QTable:
    """All per-galaxy quantities of one image in fixed ``apertures`` (columns without suffix).

    Columns: iso_flux, kron_flux, e1, e2, r50, the Sersic columns (``sersic_n, sersic_r50`` (semi-major
    r_eff), ``sersic_ie`` (I at r_eff), ``sersic_ellip, sersic_theta, sersic_chi2, sersic_status``).
    """
    import sep

    sub, rms = _prepared(image, name)
    if sub.shape != apertures.segmap.shape:
        raise AstroSRError(
            f"{name}: shape {sub.shape} differs from the apertures' grid {apertures.segmap.shape}; "
            "resample it onto the reference grid first."
        )
    out = QTable()
    nsrc = len(apertures)
    if nsrc == 0:
        for c in ("iso_flux", "kron_flux", "e1", "e2", "r50") + SERSIC_COLUMNS:
            out[c] = np.zeros(0)
        out["sersic_status"] = np.zeros(0, dtype="U80")
        return out
    seg, ids = apertures.segmap, apertures.ids
    bad = ~np.isfinite(sub)
    filled = np.ascontiguousarray(np.where(bad, 0.0, sub))
    nseg = int(seg.max()) + 1
    out["iso_flux"] = np.bincount(seg.ravel(), weights=filled.ravel(), minlength=nseg)[ids]
    x, y, a, b, th, r, circ = apertures.ellipses()
    f, _, _ = sep.sum_ellipse(filled, x, y, a, b, th, r=r, mask=bad, subpix=0)
    f = np.asarray(f, np.float64).copy()
    if circ.any():
        f[circ] = np.asarray(sep.sum_circle(filled, x[circ], y[circ], apertures.min_radius, mask=bad, subpix=0)[0])
    out["kron_flux"] = f
    e1, e2, e, eth = _moments(filled, seg, ids)
    out["e1"], out["e2"] = e1, e2
    norm = np.where(f > 0, f, 1.0)
    rad, _ = sep.flux_radius(filled, x, y, 6.0 * a, [0.2, 0.5, 0.8], normflux=norm, mask=bad, subpix=5)
    rad = np.where((f > 0)[:, None], np.asarray(rad, np.float64), np.nan)
    out["r50"] = rad[:, 1]
    res = {c: np.full(nsrc, np.nan) for c in SERSIC_COLUMNS}
    status = np.full(nsrc, "skipped", dtype="U80")
    if fit_sersic:
        if psf is not None:
            psf = np.asarray(psf, np.float64)
            if psf.shape[0] > 31 or psf.shape[1] > 31:  # the wings beyond 15 px carry little light; renormalised
                cy, cx = psf.shape[0] // 2, psf.shape[1] // 2
                psf = psf[max(cy - 15, 0) : cy + 16, max(cx - 15, 0) : cx + 16]
            psf = psf / psf.sum()
        ny, nx = sub.shape
        ell0 = 2 * e / (1 + e)  # e = (a-b)/(a+b) -> 1 - b/a
        for i in range(nsrc):
            rk = r[i] * a[i] if not circ[i] else apertures.min_radius
            h = int(np.clip(np.ceil(1.5 * rk) + 3, 8, stamp_max))
            xi, yi = int(round(x[i])), int(round(y[i]))
            ys = slice(max(yi - h, 0), min(yi + h + 1, ny))
            xs = slice(max(xi - h, 0), min(xi + h + 1, nx))
            st = sub[ys, xs].copy()
            lab = seg[ys, xs]
            st[(lab != 0) & (lab != ids[i])] = np.nan  # neighbours' footprints
            fit = fit_sersic_fn(
                st,
                x0=x[i] - xs.start,
                y0=y[i] - ys.start,
                r50=rad[i, 1],
                flux=f[i],
                ellip=ell0[i],
                theta=eth[i] if np.isfinite(eth[i]) else th[i],
                concentration=rad[i, 2] / rad[i, 0],
                psf=psf,
                sigma=rms,
                max_nfev=max_nfev,
            )
            for c, key in zip(SERSIC_COLUMNS, ("n", "r50", "ie", "ellip", "theta", "chi2")):
                res[c][i] = fit[key]
            status[i] = fit["status"]
    for c in SERSIC_COLUMNS:
        out[c] = res[c]
    out["sersic_status"] = status
    return out


fit_sersic_fn = fit_sersic  # measure_image's ``fit_sersic`` flag shadows the function name


def _pixel_comparison(ref: np.ndarray, img: np.ndarray, seg: np.ndarray, ids: np.ndarray):
    """Per footprint: RMS(img - ref) / peak(ref) and the pixel Pearson r (vectorised with bincount)."""
    ok = np.isfinite(ref) & np.isfinite(img) & (seg > 0)
    lab = np.where(ok, seg, 0).ravel()
    g = np.where(ok, ref, 0.0).ravel()
    v = np.where(ok, img, 0.0).ravel()
    n = int(seg.max()) + 1

    def s(w):
        return np.bincount(lab, weights=w, minlength=n)[ids]

    cnt = s(np.ones_like(g))
    peak = np.zeros(n)
    np.maximum.at(peak, lab, g)
    peak = peak[ids]
    with np.errstate(invalid="ignore", divide="ignore"):
        rmse = np.sqrt(s((v - g) ** 2) / cnt) / np.where(peak > 0, peak, np.nan)
        mg, mv = s(g) / cnt, s(v) / cnt
        cov = s(g * v) / cnt - mg * mv
        vg, vv = s(g * g) / cnt - mg**2, s(v * v) / cnt - mv**2
        r = cov / np.sqrt(vg * vv)
    r = np.where(cnt >= 3, r, np.nan)
    return rmse, r


def _psf_for(psf: PsfArg, key: str):
    if isinstance(psf, Mapping):
        return psf.get(key)
    return psf


def measure_morphology_many(
    gt: np.ndarray,
    lq: np.ndarray,
    restorations: Mapping[str, np.ndarray],
    *,
    scale: Optional[int] = None,
    aperture_on: str = "lq",
    thresh: float = 1.5,
    minarea: int = 5,
    psf: PsfArg = None,
    fit_sersic: bool = True,
    k: float = 2.5,
    min_radius: float = 3.5,
    max_sources: int = 500,
    max_nfev: int = 400,
) -> dict[str, QTable]:
    """:func:`measure_morphology` for several restorations, measuring GT and LQ only once.

    Apertures are defined on LQ (or GT with ``aperture_on='gt'``; ``'rs'`` uses the first
    restoration) and shared by all tables. Returns ``{name: table}`` with the same layout as
    :func:`measure_morphology` (the restoration's columns are always ``*_rs``); ``psf`` may map
    ``"gt"``, ``"lq"`` and each restoration name (or ``"rs"``) to its own kernel.
    """
    gt_a = np.asarray(gt, dtype=np.float64)
    if gt_a.ndim != 2:
        raise AstroSRError(f"GT must be a 2-D image, got shape {gt_a.shape}.")
    shape = gt_a.shape
    lq_a = np.asarray(lq, dtype=np.float64)
    if scale is not None and int(scale) != 1:
        lq_a = lq_to_reference_grid(lq_a, shape, int(scale))
    if lq_a.shape != shape:
        raise AstroSRError(
            f"LQ shape {lq_a.shape} differs from GT {shape}; pass scale=S (LQ on its own grid, "
            "S GT pixels per LQ pixel) or resample it onto the GT grid first (flux-conserving)."
        )
    if not restorations:
        raise AstroSRError("no restoration given: pass at least one RS image.")
    rs_arrs = {}
    for name, im in restorations.items():
        a = np.asarray(im, dtype=np.float64)
        if a.shape != shape:
            raise AstroSRError(
                f"RS {name!r} shape {a.shape} differs from GT {shape}; restore at the GT scale or "
                "resample it onto the GT grid first."
            )
        rs_arrs[name] = a
    if aperture_on not in ("lq", "gt", "rs"):
        raise AstroSRError(f"aperture_on={aperture_on!r}: use 'lq', 'gt' or 'rs'.")
    base = {"lq": lq_a, "gt": gt_a, "rs": next(iter(rs_arrs.values()))}[aperture_on]
    ap = define_apertures(
        base,
        thresh=thresh,
        minarea=minarea,
        k=k,
        min_radius=min_radius,
        max_sources=max_sources,
        defined_on=aperture_on,
    )
    kw = dict(fit_sersic=fit_sersic, max_nfev=max_nfev)
    meas = {
        "gt": measure_image(gt_a, ap, psf=_psf_for(psf, "gt"), name="GT", **kw),
        "lq": measure_image(lq_a, ap, psf=_psf_for(psf, "lq"), name="LQ", **kw),
    }
    sub_gt = _prepared(gt_a, "GT")[0]
    px_lq = _pixel_comparison(sub_gt, _prepared(lq_a, "LQ")[0], ap.segmap, ap.ids)
    tables = {}
    for name, a in rs_arrs.items():
        p = _psf_for(psf, name) if isinstance(psf, Mapping) and name in psf else _psf_for(psf, "rs")
        m_rs = measure_image(a, ap, psf=p, name=f"RS {name}", **kw)
        px_rs = _pixel_comparison(sub_gt, _prepared(a, "RS")[0], ap.segmap, ap.ids)
        t = QTable()
        for c in ("id", "x", "y", "a", "b", "theta", "kron_radius"):
            t[c] = ap.sources[c]
        for c in m_rs.colnames:
            for key, m in (("gt", meas["gt"]), ("lq", meas["lq"]), ("rs", m_rs)):
                t[f"{c}_{key}"] = m[c]
        t["pix_rmse_lq"], t["pix_r_lq"] = px_lq
        t["pix_rmse_rs"], t["pix_r_rs"] = px_rs
        t.meta.update(
            dict(
                aperture_on=aperture_on,
                lq_scale=int(scale or 1),
                thresh=float(thresh),
                minarea=int(minarea),
                kron_k=float(k),
                min_radius=float(min_radius),
                lq_resampling="block_split (flux per LQ pixel split equally)"
                if scale and scale > 1
                else "none (LQ given on the GT grid)",
                sersic="Sersic2D, 5x-oversampled core, PSF-convolved in the fit"
                if psf is not None
                else "Sersic2D, 5x-oversampled core, no PSF",
            )
        )
        tables[name] = t
    return tables


def measure_morphology(
    gt: np.ndarray,
    lq: np.ndarray,
    rs: np.ndarray,
    *,
    scale: Optional[int] = None,
    aperture_on: str = "lq",
    thresh: float = 1.5,
    minarea: int = 5,
    psf: PsfArg = None,
    fit_sersic: bool = True,
    k: float = 2.5,
    min_radius: float = 3.5,
    max_sources: int = 500,
    max_nfev: int = 400,
) -> QTable:
    """Per-galaxy isophotal/Kron flux, e1/e2, R50, Sersic fits and pixel agreement on GT, LQ and RS.

    Parameters
    ----------
    gt, rs : ndarray
        Ground truth and restoration on one pixel grid.
    lq : ndarray
        Degraded input: on the GT grid, or on its own grid ``scale`` x coarser (see ``scale``).
    scale : int, optional
        GT pixels per LQ pixel when LQ is on its own grid: LQ is split flux-conservingly onto the
        GT grid (:func:`lq_to_reference_grid`) before anything is measured.
    aperture_on : {'lq', 'gt', 'rs'}
        The image the isophotes and Kron ellipses are defined on (once; applied to all three).
    thresh, minarea : float, int
        sep detection on that image (sigma, pixels).
    psf : ndarray or dict, optional
        Kernel (GT pixels) convolved into the Sersic model; a dict ``{"gt", "lq", "rs"}`` gives
        each image its own. None: unconvolved Sersic.
    fit_sersic : bool
        Skip the (slowest) Sersic fits when False (columns NaN, status ``skipped``).
    k, min_radius : float
        Kron factor and minimum circular radius (pixels).
    max_sources : int
        Brightest sources kept.
    max_nfev : int
        Evaluation budget per Sersic start.

    Returns
    -------
    QTable
        ``id, x, y, a, b, theta, kron_radius`` (of the aperture image), ``<col>_<gt|lq|rs>`` for
        :data:`QUANTITIES` and the Sersic columns (``sersic_ie, sersic_ellip, sersic_theta,
        sersic_chi2, sersic_status``), and ``pix_rmse_<lq|rs>``, ``pix_r_<lq|rs>``.
    """
    return measure_morphology_many(
        gt,
        lq,
        {"rs": rs},
        scale=scale,
        aperture_on=aperture_on,
        thresh=thresh,
        minarea=minarea,
        psf=psf,
        fit_sersic=fit_sersic,
        k=k,
        min_radius=min_radius,
        max_sources=max_sources,
        max_nfev=max_nfev,
    )["rs"]

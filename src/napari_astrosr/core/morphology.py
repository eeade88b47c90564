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
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Union

import numpy as np
from astropy.modeling import Fittable2DModel, Parameter
from astropy.table import QTable

from ..exceptions import AstroSRError, NoSourcesWarning

__all__ = ["measure_morphology", "measure_morphology_many", "define_apertures", "measure_image",
           "lq_to_reference_grid", "fit_sersic", "PSFConvolvedSersic2D", "Apertures",
           "morphology_summary", "morphology_figure", "plot_morphology", "QUANTITIES"]

QUANTITIES = ("iso_flux", "kron_flux", "e1", "e2", "r50", "sersic_n", "sersic_r50")
SERSIC_COLUMNS = ("sersic_n", "sersic_r50", "sersic_ie", "sersic_ellip", "sersic_theta", "sersic_chi2")
IMAGES = ("gt", "lq", "rs")
PsfArg = Union[None, np.ndarray, Mapping[str, Optional[np.ndarray]]]


# ---------------------------------------------------------------------------------------------
# Grids and apertures
# ---------------------------------------------------------------------------------------------

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
        raise AstroSRError(f"LQ shape {a.shape} x scale {s} = {big} does not match the GT shape {tuple(shape)}; "
                           "check --scale (GT pixels per LQ pixel) or resample LQ onto the GT grid.")
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
        return np.asarray(self.sources["id"], dtype=np.int64)

    def ellipses(self):
        """(x, y, a, b, theta, kron_r, circ): Kron ellipse ``r = k * kron_radius`` in units of (a, b);
        ``circ`` marks sources measured in the ``min_radius`` circle instead."""
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


# ---------------------------------------------------------------------------------------------
# Sersic model with the PSF convolved in
# ---------------------------------------------------------------------------------------------

def _render_sersic(ny, nx, amplitude, r_eff, n, x_0, y_0, ellip, theta, *, psf=None, oversample=5, core=3):
    """Sersic2D on the (ny, nx) pixel grid (pixel-integrated in a 5x-oversampled core), PSF-convolved.

    Why the core only: the profile is smooth beyond a few pixels where centre sampling is
    accurate; the cusp of high-n profiles sits in the central pixels. Evaluated on a grid padded
    by the PSF half-size and convolved with ``mode='valid'`` so light from just outside the stamp
    is blurred in correctly.
    """
    from astropy.modeling.models import Sersic2D

    py, px = (psf.shape[0] // 2, psf.shape[1] // 2) if psf is not None else (0, 0)
    yy, xx = np.mgrid[-py: ny + py, -px: nx + px].astype(np.float64)
    with np.errstate(all="ignore"):
        m = Sersic2D.evaluate(xx, yy, amplitude, r_eff, n, x_0, y_0, ellip, theta)
        os_ = int(oversample)
        if os_ > 1:
            ic, jc = int(round(y_0)) + py, int(round(x_0)) + px
            i0, i1 = max(ic - core, 0), min(ic + core + 1, m.shape[0])
            j0, j1 = max(jc - core, 0), min(jc + core + 1, m.shape[1])
            if i1 > i0 and j1 > j0:
                sub = (np.arange(os_) + 0.5) / os_ - 0.5
                ys = (np.arange(i0, i1) - py)[:, None] + sub[None, :]
                xs = (np.arange(j0, j1) - px)[:, None] + sub[None, :]
                Y, X = np.meshgrid(ys.ravel(), xs.ravel(), indexing="ij")
                fine = Sersic2D.evaluate(X, Y, amplitude, r_eff, n, x_0, y_0, ellip, theta)
                m[i0:i1, j0:j1] = fine.reshape(i1 - i0, os_, j1 - j0, os_).mean(axis=(1, 3))
    if psf is not None:
        m = _valid_convolve(m, psf)
    return m


_PSF_FFT_CACHE: dict = {}


def _valid_convolve(m: np.ndarray, psf: np.ndarray) -> np.ndarray:
    """``fftconvolve(m, psf, mode='valid')`` with the PSF's FFT cached per (psf, shape): a fit
    convolves hundreds of same-shape models with one PSF (scipy's wrapper overhead dominated)."""
    from scipy import fft

    ky, kx = psf.shape
    s = (fft.next_fast_len(m.shape[0] + ky - 1, real=True), fft.next_fast_len(m.shape[1] + kx - 1, real=True))
    key = (id(psf), psf.shape, s)
    hit = _PSF_FFT_CACHE.get(key)
    if hit is None or hit[0] is not psf:
        if len(_PSF_FFT_CACHE) > 64:
            _PSF_FFT_CACHE.clear()
        hit = (psf, fft.rfft2(psf, s))
        _PSF_FFT_CACHE[key] = hit
    full = fft.irfft2(fft.rfft2(m, s) * hit[1], s)
    return full[ky - 1: m.shape[0], kx - 1: m.shape[1]]


class PSFConvolvedSersic2D(Fittable2DModel):
    """astropy ``Sersic2D`` (same parameters) convolved with a PSF, pixel-integrated in the core.

    ``x, y`` must be a regular integer pixel grid (``np.mgrid[:ny, :nx]`` order: ``y, x = ...``;
    call as ``model(x, y)``); the PSF (odd, centred, on this pixel grid) is normalised to unit sum.
    Usable with astropy fitters; :func:`fit_sersic` drives it with scipy's bounded least squares.
    """

    amplitude = Parameter(default=1.0, bounds=(0, None), description="surface brightness at r_eff")
    r_eff = Parameter(default=2.0, bounds=(0.3, None), description="semi-major half-light radius (px)")
    n = Parameter(default=1.0, bounds=(0.2, 8.0), description="Sersic index")
    x_0 = Parameter(default=0.0)
    y_0 = Parameter(default=0.0)
    ellip = Parameter(default=0.0, bounds=(0.0, 0.95), description="1 - b/a")
    theta = Parameter(default=0.0, description="radians from +x counter-clockwise")

    def __init__(self, *args, psf: Optional[np.ndarray] = None, oversample: int = 5, **kwargs):
        super().__init__(*args, **kwargs)
        self.psf = None if psf is None else np.asarray(psf, np.float64) / float(np.sum(psf))
        self.oversample = int(oversample)

    def evaluate(self, x, y, amplitude, r_eff, n, x_0, y_0, ellip, theta):
        x = np.asarray(x)
        y = np.asarray(y)
        if x.ndim != 2:
            raise AstroSRError("PSFConvolvedSersic2D needs 2-D pixel grids x, y (np.mgrid).")
        x0, y0 = float(x[0, 0]), float(y[0, 0])
        p = [float(np.squeeze(v)) for v in (amplitude, r_eff, n, x_0, y_0, ellip, theta)]
        p[3] -= x0
        p[4] -= y0
        return _render_sersic(x.shape[0], x.shape[1], *p, psf=self.psf, oversample=self.oversample)


def _sersic_total_flux(ie, r_eff, n, ellip):
    from scipy.special import gamma, gammaincinv

    bn = gammaincinv(2 * n, 0.5)
    return 2 * np.pi * n * ie * r_eff**2 * (1 - ellip) * np.exp(bn) * bn ** (-2 * n) * gamma(2 * n)


_N_GRID = np.linspace(0.2, 8.0, 200)


def _n_from_concentration(c: float) -> float:
    """Sersic n whose circular R80/R20 equals ``c`` (a starting guess)."""
    from scipy.special import gammaincinv

    cg = (gammaincinv(2 * _N_GRID, 0.8) / gammaincinv(2 * _N_GRID, 0.2)) ** _N_GRID
    if not np.isfinite(c):
        return 1.5
    return float(np.interp(c, cg, _N_GRID))


def _psf_r50(psf: Optional[np.ndarray]) -> float:
    if psf is None:
        return 0.0
    yy, xx = np.indices(psf.shape)
    cy, cx = (psf.shape[0] - 1) / 2, (psf.shape[1] - 1) / 2
    r = np.hypot(yy - cy, xx - cx).ravel()
    o = np.argsort(r)
    c = np.cumsum(psf.ravel()[o]) / psf.sum()
    return float(np.interp(0.5, c, r[o]))


def fit_sersic(
    stamp: np.ndarray,
    *,
    x0: float,
    y0: float,
    r50: float,
    flux: float,
    ellip: float = 0.2,
    theta: float = 0.0,
    concentration: float = np.nan,
    psf: Optional[np.ndarray] = None,
    sigma: Optional[float] = None,
    max_nfev: int = 400,
    oversample: int = 5,
) -> dict:
    """Fit :class:`PSFConvolvedSersic2D` to a background-subtracted stamp (NaN = ignored pixel).

    Parameters
    ----------
    stamp : ndarray
        Cut-out; NaN pixels (neighbours, blanks) are excluded.
    x0, y0, r50, flux, ellip, theta, concentration
        Initial guesses in stamp pixels: centre, *observed* circular half-light radius (the PSF's
        is removed in quadrature), total flux, 1 - b/a, angle, R80/R20 (-> starting n).
    psf : ndarray, optional
        Kernel convolved into the model (unit sum, odd, centred, pixels of the stamp).
    sigma : float, optional
        Pixel noise (only scales the reported chi2); default: robust std of the outer stamp.
    max_nfev : int
        Evaluation budget of each start.

    Returns
    -------
    dict
        ``n, r50, ie, ellip, theta, x, y, chi2, nfev, status`` -- status is ``"ok"``,
        ``"at bound: <param>"`` (values kept) or ``"failed: <reason>"`` (values NaN). Never raises
        for bad data.
    """
    nan = dict(n=np.nan, r50=np.nan, ie=np.nan, ellip=np.nan, theta=np.nan, x=np.nan, y=np.nan, chi2=np.nan, nfev=0)
    stamp = np.asarray(stamp, np.float64)
    good = np.isfinite(stamp)
    if good.sum() < 12:
        return dict(nan, status="failed: fewer than 12 usable pixels")
    if not (np.isfinite(flux) and flux > 0 and np.isfinite(r50) and r50 > 0):
        return dict(nan, status="failed: non-positive flux or R50")
    if psf is not None:
        psf = np.asarray(psf, np.float64)
        psf = psf / psf.sum()
    ny, nx = stamp.shape
    if sigma is None or not np.isfinite(sigma) or sigma <= 0:
        edge = np.concatenate([stamp[:2].ravel(), stamp[-2:].ravel(), stamp[:, :2].ravel(), stamp[:, -2:].ravel()])
        edge = edge[np.isfinite(edge)]
        sigma = 1.4826 * float(np.median(np.abs(edge - np.median(edge)))) if edge.size else 0.0
        if sigma <= 0:
            sigma = 1e-3 * float(np.nanmax(np.abs(stamp)))
    sigma = max(float(sigma), 1e-30)

    def resid(p):
        m = _render_sersic(ny, nx, *p, psf=psf, oversample=oversample)
        return ((m - stamp) / sigma)[good]

    ell0 = float(np.clip(np.nan_to_num(ellip), 0.0, 0.8))
    # intrinsic circular R50 ~ observed one minus the PSF's in quadrature; Sersic r_eff is semi-major
    rc = np.sqrt(max(r50**2 - _psf_r50(psf) ** 2, (0.5 * r50) ** 2, 0.25))
    reff0 = rc / np.sqrt(1 - ell0)
    hi_r = float(max(ny, nx))
    lo = [0.0, 0.3, 0.2, x0 - 3, y0 - 3, 0.0, -np.inf]
    hi = [np.inf, hi_r, 8.0, x0 + 3, y0 + 3, 0.9, np.inf]
    n_first = float(np.clip(_n_from_concentration(concentration), 0.5, 6.0))

    def start(n0):
        ie0 = flux / _sersic_total_flux(1.0, reff0, n0, ell0)
        p0 = [ie0, min(reff0, hi_r * 0.9), n0, x0, y0, ell0, float(theta)]
        return np.clip(p0, np.array(lo) + 1e-9, np.array(hi) - 1e-9)

    with _one_blas_thread():
        best, msgs, nfev = _run_starts(resid, start, lo, hi, n_first, max_nfev)
    if best is None or best.status <= 0:
        return dict(nan, nfev=nfev, status=("failed: " + (msgs[-1] if msgs else "no fit"))[:80])
    amp, reff, n, xc, yc, ell, th = (float(v) for v in best.x)
    th = (th + np.pi / 2) % np.pi - np.pi / 2
    bound = _at_bound(best.x, lo, hi)
    status = f"at bound: {bound}" if bound else "ok"
    chi2 = float(2 * best.cost / max(good.sum() - 7, 1))
    return dict(n=n, r50=reff, ie=amp, ellip=ell, theta=th, x=xc, y=yc, chi2=chi2, nfev=nfev, status=status)


def _one_blas_thread():
    """Limit BLAS to one thread during a fit: the trust-region step's SVD of the tall, thin
    (pixels x 7) Jacobian is ~30x slower multi-threaded on a busy machine (measured 95 ms vs 3 ms)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: only speed depends on it
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def _run_starts(resid, start, lo, hi, n_first, max_nfev):
    from scipy.optimize import least_squares

    best, msgs, nfev = None, [], 0
    # a second and third start only when the first one fails or lands on a bound (rare; costly)
    for n0 in (n_first, 1.0, 4.0):
        try:
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                r = least_squares(resid, start(n0), bounds=(lo, hi), x_scale="jac", max_nfev=int(max_nfev),
                                  xtol=1e-6, ftol=1e-8)
        except Exception as exc:  # a failed fit is data, not an error
            msgs.append(f"{type(exc).__name__}: {exc}")
            continue
        nfev += int(r.nfev)
        if not np.all(np.isfinite(r.x)) or not np.isfinite(r.cost):
            msgs.append("non-finite result")
            continue
        if r.status <= 0:
            msgs.append(str(r.message))
            if best is None or r.cost < best.cost:
                best = r  # kept only to compare; reported as failed unless a later start converges
            continue
        if best is None or best.status <= 0 or r.cost < best.cost:
            best = r
        if not _at_bound(r.x, lo, hi):
            break
    return best, msgs, nfev


def _at_bound(x, lo, hi) -> str:
    names = ("amplitude", "r_eff", "n", "x", "y", "ellip")
    for i, nm in enumerate(names):
        if nm == "ellip":
            if x[i] >= hi[i] * 0.999:  # ellip = 0 is a legitimate round galaxy
                return nm
            continue
        span = hi[i] - lo[i] if np.isfinite(hi[i]) else abs(x[i]) + 1
        if np.isfinite(lo[i]) and x[i] - lo[i] <= 1e-3 * span and nm != "amplitude":
            return nm
        if np.isfinite(hi[i]) and hi[i] - x[i] <= 1e-3 * span:
            return nm
    return ""


# ---------------------------------------------------------------------------------------------
# Measurements
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
        raise AstroSRError(f"{name}: shape {sub.shape} differs from the apertures' grid {apertures.segmap.shape}; "
                           "resample it onto the reference grid first.")
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
                psf = psf[max(cy - 15, 0): cy + 16, max(cx - 15, 0): cx + 16]
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
            fit = fit_sersic_fn(st, x0=x[i] - xs.start, y0=y[i] - ys.start, r50=rad[i, 1], flux=f[i],
                                ellip=ell0[i], theta=eth[i] if np.isfinite(eth[i]) else th[i],
                                concentration=rad[i, 2] / rad[i, 0], psf=psf, sigma=rms, max_nfev=max_nfev)
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
        raise AstroSRError(f"LQ shape {lq_a.shape} differs from GT {shape}; pass scale=S (LQ on its own grid, "
                           "S GT pixels per LQ pixel) or resample it onto the GT grid first (flux-conserving).")
    if not restorations:
        raise AstroSRError("no restoration given: pass at least one RS image.")
    rs_arrs = {}
    for name, im in restorations.items():
        a = np.asarray(im, dtype=np.float64)
        if a.shape != shape:
            raise AstroSRError(f"RS {name!r} shape {a.shape} differs from GT {shape}; restore at the GT scale or "
                               "resample it onto the GT grid first.")
        rs_arrs[name] = a
    if aperture_on not in ("lq", "gt", "rs"):
        raise AstroSRError(f"aperture_on={aperture_on!r}: use 'lq', 'gt' or 'rs'.")
    base = {"lq": lq_a, "gt": gt_a, "rs": next(iter(rs_arrs.values()))}[aperture_on]
    ap = define_apertures(base, thresh=thresh, minarea=minarea, k=k, min_radius=min_radius,
                          max_sources=max_sources, defined_on=aperture_on)
    kw = dict(fit_sersic=fit_sersic, max_nfev=max_nfev)
    meas = {"gt": measure_image(gt_a, ap, psf=_psf_for(psf, "gt"), name="GT", **kw),
            "lq": measure_image(lq_a, ap, psf=_psf_for(psf, "lq"), name="LQ", **kw)}
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
        t.meta.update(dict(aperture_on=aperture_on, lq_scale=int(scale or 1), thresh=float(thresh),
                           minarea=int(minarea), kron_k=float(k), min_radius=float(min_radius),
                           lq_resampling="block_split (flux per LQ pixel split equally)" if scale and scale > 1
                           else "none (LQ given on the GT grid)",
                           sersic="Sersic2D, 5x-oversampled core, PSF-convolved in the fit" if psf is not None
                           else "Sersic2D, 5x-oversampled core, no PSF"))
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
    return measure_morphology_many(gt, lq, {"rs": rs}, scale=scale, aperture_on=aperture_on, thresh=thresh,
                                   minarea=minarea, psf=psf, fit_sersic=fit_sersic, k=k, min_radius=min_radius,
                                   max_sources=max_sources, max_nfev=max_nfev)["rs"]


# ---------------------------------------------------------------------------------------------
# Summary and plots
# ---------------------------------------------------------------------------------------------

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
                    np.asarray(table[f"sersic_status_{im}"]).astype(str) == "ok")
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
            pix[im] = dict(median_rmse_over_peak=float(np.nanmedian(e)) if np.isfinite(e).any() else None,
                           median_pearson_r=float(np.nanmedian(r)) if np.isfinite(r).any() else None)
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


_LABELS = {"iso_flux": "isophotal flux", "kron_flux": "Kron flux", "e1": "e1", "e2": "e2", "r50": "R50 [px]",
           "sersic_n": "Sersic n", "sersic_r50": "Sersic R50 [px]"}


def morphology_figure(table: QTable, *, quantities=QUANTITIES, title: Optional[str] = None, summary=None):
    """Matplotlib Figure (no pyplot; safe in a Qt app or headless): one row per quantity,
    GT vs LQ (left) and GT vs RS (right) with 1:1 lines and the RMSE in each panel."""
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
                    np.asarray(table[f"sersic_status_{im}"]).astype(str) == "ok")
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
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    import os
    import tempfile

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

"""Background estimation and source extraction with sep -> astropy QTable.

sep (Barbary 2016) is the library form of SExtractor: we use it rather than our own
thresholding so catalogs agree with what astronomers already trust (checked in the
tests against a real SExtractor catalog of an ESO NTT image).

Conventions
-----------
- Positions are 0-based pixel coordinates ``x`` (column), ``y`` (row), like sep and
  photutils. DS9 / FITS 1-based coordinates appear only in :mod:`.catalogs`.
- ``theta`` is in radians, counter-clockwise from the +x axis (sep's convention).
- ``flux`` is the Kron ("AUTO") flux measured by :func:`.photometry.kron_flux` on the
  background-subtracted image, ``flux_err`` its 1-sigma error from the background rms;
  ``flux_iso`` is sep's isophotal sum over the detection footprint.
- Columns are plain floats (no astropy units) so downstream numpy code stays simple;
  :mod:`.catalogs` attaches units when writing files.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Optional, Union

import numpy as np
from astropy.table import QTable

from ..exceptions import AstroSRError, AstroSRWarning, NoSourcesWarning
from .background import Background, _combined_mask, _filled, as_sep_array, estimate_background

__all__ = [
    "Background",
    "Detection",
    "as_sep_array",
    "estimate_background",
    "detect",
    "detect_sources",
    "empty_sources",
    "minarea_for_scale",
    "options_for_scale",
    "restored_scale",
    "COLUMNS",
    "MINAREA",
    "APERTURE_NOISE",
]

#: Column order of a detection table (``ra``/``dec`` are appended when a WCS is given).
COLUMNS = ("id", "x", "y", "a", "b", "theta", "flux", "flux_err", "kron_radius", "flux_iso", "flag", "peak", "npix")
_INT_COLUMNS = {"id", "flag", "npix"}

#: Default minimum area in pixels of the image as observed (SExtractor's DETECT_MINAREA).
MINAREA = 5


def minarea_for_scale(scale: float, minarea: int = MINAREA) -> int:
    """``minarea`` input pixels' sky area counted in the pixels of an image restored ``scale`` x finer.

    A restoration's noise is correlated over about one input pixel, so ``minarea`` of its smaller pixels lets
    noise peaks through. Measured (default FISR restores of noise-only 128^2 fields, 3 seeds, sep at 1.5 sigma):
    5 output pixels gave 139 false detections at x2 and 2302 at x4 where the input gave 0; 5 s^2 gave 0 at both,
    and on star fields of 120 stars gave 117 (x2) and 90 (x4) detections against the input's 111
    (``benchmarks/restored_detection.py``).
    """
    return max(1, int(round(int(minarea) * float(scale) ** 2)))


#: How ``flux_err`` treats the noise: ``pixel`` (independent pixels, sep's estimate) or ``empty`` (measured with
#: apertures on empty sky: right for correlated noise, e.g. a restored image).
APERTURE_NOISE = ("pixel", "empty")


def _empty_aperture_errors(work, ferr, segmap, bad, err, sigma1: float, meta: dict) -> np.ndarray:
    """``ferr`` (independent pixels) scaled by the empty-aperture ratio at its area (meta records the fit)."""
    from scipy import ndimage

    from .photometry import empty_aperture_noise

    # sources' pixels and a margin around them (their wings are not sky), and bad pixels
    mask = ndimage.binary_dilation(np.asarray(segmap) > 0, iterations=3) | bad
    fit = empty_aperture_noise(work, mask=mask, err=err)
    if fit is None:
        warnings.warn(
            "aperture_noise='empty': too little empty sky to measure the aperture noise; flux_err assumes "
            "independent pixels",
            AstroSRWarning,
            stacklevel=3,
        )
        meta["aperture_noise"] = "pixel (too little empty sky)"
        return ferr
    # the area an independent-pixel error corresponds to: ferr^2 ~ area * sigma1^2
    area = (np.asarray(ferr, dtype=np.float64) / sigma1) ** 2
    meta["aperture_noise"] = "empty"
    # the measured ratios, as "area:ratio" pairs (pixels), for the catalog's header
    meta["aperture_noise_ratio"] = " ".join(f"{a:.0f}:{r:.3f}" for a, r, _ in fit.points)
    return np.asarray(ferr, dtype=np.float64) * fit.factor(area)


#: Radius (pixels) of the circle a faint source's Kron flux is summed in, as the sep documentation recommends.
KRON_MIN_RADIUS = 3.5


def options_for_scale(scale: float) -> dict:
    """:func:`detect` options for an image restored ``scale`` x finer than the data it came from.

    Everything measured in pixels keeps the input's sky: the minimum area (:func:`minarea_for_scale`) and Kron's
    minimum circle (``3.5 scale`` pixels; 3.5 of the smaller pixels put sub-pixel apertures on sharpened peaks,
    whose flux the restored noise moves in and out), and the flux errors follow the restored image's correlated
    noise (``aperture_noise="empty"``). ``scale`` 1: the defaults.
    """
    s = float(scale)
    if not (np.isfinite(s) and s > 0):
        raise AstroSRError(f"scale={scale!r}: must be a positive number.")
    if s == 1:
        return {"minarea": MINAREA, "kron_min_radius": KRON_MIN_RADIUS, "aperture_noise": "pixel"}
    return {"minarea": minarea_for_scale(s), "kron_min_radius": KRON_MIN_RADIUS * s, "aperture_noise": "empty"}


def restored_scale(header: Any) -> float:
    """The enlargement of an image written by ``astrosr restore`` (its ``ASRPARAM`` card), else 1."""
    import json

    if header is None or "ASRMETH" not in header or "ASRPARAM" not in header:
        return 1.0
    try:
        s = float(json.loads(str(header["ASRPARAM"])).get("scale", 1))
    except (ValueError, TypeError, AttributeError):
        return 1.0
    return s if np.isfinite(s) and 0 < s <= 64 else 1.0


# sep keeps its buffer sizes as process-wide globals; crowded fields need more.
_PIXSTACK_STEPS = (300_000, 3_000_000, 30_000_000)
_SUBOBJ_STEPS = (1024, 8192, 65536)


@dataclass
class Detection:
    """Everything :func:`detect` measured: the catalog, segmentation and background."""

    sources: QTable
    segmap: np.ndarray
    background: Background
    mask: np.ndarray


def empty_sources(*, with_sky: bool = False) -> QTable:
    """An empty detection table with the right columns and dtypes."""
    cols = list(COLUMNS) + (["ra", "dec"] if with_sky else [])
    t = QTable()
    for c in cols:
        t[c] = np.zeros(0, dtype=np.int64 if c in _INT_COLUMNS else np.float64)
    return t


def _extract(data, thresh, err, bad, **kw):
    """Run sep.extract, retrying with larger buffers on crowded images."""
    import sep

    old_stack, old_sub = sep.get_extract_pixstack(), sep.get_sub_object_limit()
    last: Optional[Exception] = None
    try:
        for stack, sub in zip(_PIXSTACK_STEPS, _SUBOBJ_STEPS):
            sep.set_extract_pixstack(max(stack, old_stack))
            sep.set_sub_object_limit(max(sub, old_sub))
            try:
                return sep.extract(data, thresh, err=err, mask=bad, segmentation_map=True, **kw)
            except Exception as exc:  # sep raises plain Exception for buffer overflows
                msg = str(exc).lower()
                if "pixel buffer" in msg or "deblend" in msg or "object" in msg and "limit" in msg:
                    last = exc
                    continue
                raise AstroSRError(f"source extraction failed: {exc}") from exc
    finally:
        sep.set_extract_pixstack(old_stack)
        sep.set_sub_object_limit(old_sub)
    raise AstroSRError(
        f"source extraction overflowed sep's buffers even with {_PIXSTACK_STEPS[-1]} pixels "
        f"({last}); the field is too crowded at this threshold: raise --thresh or --minarea, "
        "or detect on smaller tiles."
    )


def detect(
    image: np.ndarray,
    *,
    thresh: float = 1.5,
    minarea: int = 5,
    deblend_nthresh: int = 32,
    deblend_cont: float = 0.005,
    box: int = 64,
    filter_size: int = 3,
    mask: Optional[np.ndarray] = None,
    wcs=None,
    err: Optional[Union[float, np.ndarray]] = None,
    subtract_background: bool = True,
    use_rms_map: bool = False,
    filter_kernel: Optional[np.ndarray] = "default",  # type: ignore[assignment]
    kron: bool = True,
    aperture_noise: str = "pixel",
    kron_min_radius: float = KRON_MIN_RADIUS,
) -> Detection:
    """Detect sources and return catalog, segmentation map and background.

    Same parameters as :func:`detect_sources`; see there.
    """
    data = as_sep_array(image)
    bad = _combined_mask(data, mask)
    if bad.all():
        raise AstroSRError("image: every pixel is masked or non-finite; nothing to detect.")
    if not np.isfinite(thresh) or thresh <= 0:
        raise AstroSRError(f"thresh: must be a positive number of sigma, got {thresh}.")
    if minarea < 1:
        raise AstroSRError(f"minarea: must be >= 1 pixel, got {minarea}.")
    if not (np.isfinite(kron_min_radius) and kron_min_radius > 0):
        raise AstroSRError(f"kron_min_radius: must be a positive number of pixels, got {kron_min_radius}.")
    if aperture_noise not in APERTURE_NOISE:
        raise AstroSRError(f"aperture_noise={aperture_noise!r}: use one of {', '.join(APERTURE_NOISE)}.")
    bkg = estimate_background(data, mask=bad, box=box, filter_size=filter_size)
    work = data.astype(np.float64)
    if subtract_background:
        work = work - bkg.back
    work = _filled(np.ascontiguousarray(work), bad)

    if err is None:
        # SExtractor/sep default: threshold in units of the global rms; a local rms map
        # follows a varying noise level at some cost in speed.
        noise: Union[float, np.ndarray] = bkg.rms if use_rms_map else bkg.globalrms
    elif np.ndim(err) == 0:
        noise = float(err)
    else:
        noise = as_sep_array(err, name="err").astype(np.float64)
        if noise.shape != data.shape:
            raise AstroSRError(f"err: shape {noise.shape} differs from the image's {data.shape}.")
    if np.ndim(noise) == 0 and not (np.isfinite(noise) and noise > 0):
        # A noiseless (simulated) image: fall back to an absolute threshold on the data range.
        peak = float(np.nanmax(np.abs(work))) if work.size else 0.0
        # (documented in detect_sources; no warning: simulated training patches hit this often)
        noise = peak * 1e-3 if peak > 0 else 1.0
    kw = dict(minarea=int(minarea), deblend_nthresh=int(deblend_nthresh), deblend_cont=float(deblend_cont))
    if filter_kernel is None:
        kw["filter_kernel"] = None
    elif not isinstance(filter_kernel, str):
        kw["filter_kernel"] = np.ascontiguousarray(filter_kernel, dtype=np.float32)
    objs, segmap = _extract(work, float(thresh), noise, bad, **kw)

    with_sky = wcs is not None and getattr(wcs, "has_celestial", False)
    if len(objs) == 0:
        warnings.warn(f"no sources found above {thresh} sigma (minarea {minarea})", NoSourcesWarning, stacklevel=2)
        return Detection(empty_sources(with_sky=with_sky), segmap, bkg, bad)

    t = QTable()
    t["id"] = np.arange(1, len(objs) + 1, dtype=np.int64)
    for c in ("x", "y", "a", "b", "theta"):
        t[c] = np.asarray(objs[c], dtype=np.float64)
    flag = np.asarray(objs["flag"], dtype=np.int64)
    rms_map = noise if np.ndim(noise) else None
    if kron:
        from .photometry import kron_flux

        err_arr = rms_map if rms_map is not None else bkg.rms
        flux, ferr, kr, kflag = kron_flux(
            work, t, err=err_arr, mask=bad, min_radius=float(kron_min_radius), return_flag=True
        )
        flag |= kflag
        if aperture_noise == "empty":
            ferr = _empty_aperture_errors(work, ferr, segmap, bad, err_arr, float(bkg.globalrms), t.meta)
    else:
        flux = np.asarray(objs["flux"], dtype=np.float64)
        ferr = np.full(len(objs), np.nan)
        kr = np.full(len(objs), np.nan)
    t["flux"] = flux
    t["flux_err"] = ferr
    t["kron_radius"] = kr
    t["flux_iso"] = np.asarray(objs["flux"], dtype=np.float64)
    t["flag"] = flag
    t["peak"] = np.asarray(objs["peak"], dtype=np.float64)
    t["npix"] = np.asarray(objs["npix"], dtype=np.int64)
    if with_sky:
        sky = wcs.celestial.pixel_to_world_values(t["x"], t["y"])
        t["ra"] = np.asarray(sky[0], dtype=np.float64)
        t["dec"] = np.asarray(sky[1], dtype=np.float64)
    t.meta["thresh"] = float(thresh)
    t.meta["minarea"] = int(minarea)
    t.meta["globalrms"] = float(bkg.globalrms)
    t.meta["globalback"] = float(bkg.globalback)
    return Detection(t, segmap, bkg, bad)


def detect_sources(
    image: np.ndarray,
    *,
    thresh: float = 1.5,
    minarea: int = 5,
    deblend_nthresh: int = 32,
    deblend_cont: float = 0.005,
    box: int = 64,
    filter_size: int = 3,
    mask: Optional[np.ndarray] = None,
    wcs=None,
    err: Optional[Union[float, np.ndarray]] = None,
    subtract_background: bool = True,
    use_rms_map: bool = False,
    aperture_noise: str = "pixel",
    kron_min_radius: float = KRON_MIN_RADIUS,
) -> QTable:
    """Detect sources with sep and measure their shapes and Kron fluxes.

    Parameters
    ----------
    image : ndarray
        2-D image (any float dtype or byte order; converted for sep). Non-finite pixels are masked.
    thresh : float
        Detection threshold in units of the background rms (``err`` if given).
    minarea : int
        Minimum number of connected pixels above threshold.
    deblend_nthresh, deblend_cont : int, float
        sep/SExtractor deblending parameters.
    box, filter_size : int
        Background mesh size (pixels) and median-filter size (meshes).
    mask : ndarray of bool, optional
        True where pixels must be ignored.
    wcs : astropy.wcs.WCS, optional
        When celestial, ``ra``/``dec`` columns (degrees) are added.
    err : float or ndarray, optional
        Noise level (scalar or per-pixel map); default the background's global rms. A noiseless
        image (zero rms) is thresholded at ``thresh`` x 1e-3 of its absolute peak instead.
    subtract_background : bool
        Subtract sep's background before extraction (disable for sky-subtracted images).
    use_rms_map : bool
        Threshold against the local rms map instead of the global rms.
    aperture_noise : {"pixel", "empty"}
        ``flux_err`` from independent pixels (sep), or scaled to the noise of apertures of the same area
        measured on empty sky (:func:`~napari_astrosr.core.photometry.empty_aperture_noise`): for correlated
        noise (a restored, drizzled or resampled image), where the independent-pixel error is too small
        (measured on default FISR restores: 1.2x at x2, 3.8x at x4). The table's meta records the ratios.
    kron_min_radius : float
        Radius in pixels of the circle used where the Kron ellipse is smaller (sep's recipe: 3.5).
        :func:`options_for_scale` gives all three for a restored image.

    Returns
    -------
    QTable
        Columns ``id x y a b theta flux flux_err kron_radius flux_iso flag peak npix`` (+ ``ra dec``),
        0-based positions. Empty (with these columns) and a :class:`NoSourcesWarning` when nothing is found.

    Raises
    ------
    AstroSRError
        Non-2-D or fully masked image, bad parameters, or a field too crowded for sep's buffers.
    """
    return detect(
        image,
        thresh=thresh,
        minarea=minarea,
        deblend_nthresh=deblend_nthresh,
        deblend_cont=deblend_cont,
        box=box,
        filter_size=filter_size,
        mask=mask,
        wcs=wcs,
        err=err,
        subtract_background=subtract_background,
        use_rms_map=use_rms_map,
        aperture_noise=aperture_noise,
        kron_min_radius=kron_min_radius,
    ).sources

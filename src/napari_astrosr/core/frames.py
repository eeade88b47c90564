"""A stack of registered exposures for a coadd: :class:`FrameStack`, built from arrays
(:func:`as_stack`) or FITS files (:func:`load_frames`).

:func:`load_frames` reads each frame's data, noise (:mod:`.frame_noise`), masks and PSF
(:mod:`.frame_psf`) and reprojects frames on another grid onto the first frame's WCS with the
flux-conserving :func:`napari_astrosr.core.resample.reproject_flux`. :mod:`.coadd` re-exports these names.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from ..exceptions import AstroSRError
from .frame_noise import dq_mask, estimate_noise, noise_from_rms, noise_from_weights, outlier_mask, saturation_mask
from .frame_psf import _odd_unit, crop_psf, is_psfex, psf_from_fwhm, read_psfex
from .psf_estimate import estimate_psf

PathLike = Union[str, os.PathLike]


@dataclass
class FrameStack:
    """A validated stack of registered exposures on one pixel grid.

    ``data``, ``sigma`` and ``mask`` are (N, H, W); ``mask`` is True where a pixel must not
    be used; masked pixels of ``data`` are finite (0) so downstream code never sees NaN.
    """

    data: np.ndarray
    sigma: np.ndarray
    mask: np.ndarray
    psfs: Optional[list[np.ndarray]] = None
    wcs: Optional[WCS] = None
    header: Optional[fits.Header] = None
    names: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    background: Optional[np.ndarray] = None
    notes: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        """Number of frames."""
        return int(self.data.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        """Shape (ny, nx) of one frame."""
        return (int(self.data.shape[1]), int(self.data.shape[2]))


def as_stack(
    frames: Union[np.ndarray, Sequence[np.ndarray]],
    *,
    sigmas=None,
    masks=None,
    psfs=None,
    require_psfs: bool = False,
    min_frames: int = 2,
    names: Optional[Sequence[str]] = None,
) -> FrameStack:
    """Validate in-memory inputs into a :class:`FrameStack` (the boundary of every coadd).

    Parameters
    ----------
    frames
        (N, H, W) array or a sequence of N (H, W) arrays, registered on one grid.
    sigmas
        (N, H, W) noise maps, (N,) per-frame scalars or None (estimated with sep).
    masks
        (N, H, W) bool, True = bad; NaN/inf pixels of ``frames`` are always masked.
    psfs
        N PSF images (odd, positive sum; normalised here), one PSF for all, or None.
    names
        What to call each frame in messages (its file name); default ``frame I`` (0-based).
    """

    def label(i: int) -> str:
        return str(names[i]) if names is not None and i < len(names) else f"frame {i}"

    if isinstance(frames, np.ndarray):
        arr = frames
    else:
        shapes = [np.shape(f) for f in frames]
        if len(set(shapes)) > 1:
            first = shapes[0]
            bad = next(i for i, s in enumerate(shapes) if s != first)
            raise AstroSRError(
                f"{label(bad)}: shape {shapes[bad]} differs from {label(0)}'s {first}; register/reproject the frames onto one grid first."
            )
        arr = np.stack([np.asarray(f) for f in frames]) if len(frames) else np.empty((0, 0, 0))
    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim != 3:
        raise AstroSRError(f"frames: expected a stack (N, H, W), got shape {arr.shape}.")
    n, h, w = arr.shape
    if n < min_frames:
        raise AstroSRError(f"frames: a coadd needs at least {min_frames} frames, got {n}.")
    if h < 8 or w < 8:
        raise AstroSRError(f"frames: {h}x{w} pixels is too small to coadd (need at least 8x8).")
    bad = ~np.isfinite(arr)
    if masks is not None:
        mk = np.asarray(masks)
        if mk.shape != arr.shape:
            raise AstroSRError(f"masks: shape {mk.shape} does not match the frames' {arr.shape}.")
        bad = bad | mk.astype(bool)
    data = np.where(bad, 0.0, arr).astype(np.float32)
    for i in range(n):
        if bad[i].all():
            raise AstroSRError(f"{label(i)}: every pixel is masked (mask or NaN/inf); drop this frame or fix its mask.")
    if sigmas is None:
        sig = np.empty_like(data)
        for i in range(n):
            _, sig[i] = estimate_noise(data[i], mask=bad[i])
    else:
        s = np.asarray(sigmas, dtype=np.float32)
        if s.ndim == 1 and s.shape[0] == n:
            s = np.broadcast_to(s[:, None, None], arr.shape)
        if s.shape != arr.shape:
            raise AstroSRError(f"sigmas: shape {s.shape} does not match the frames' {arr.shape} (or ({n},)).")
        s = np.array(s, dtype=np.float32)
        sbad = ~np.isfinite(s) | (s <= 0)
        bad = bad | sbad
        for i in range(n):
            if bad[i].all():
                why = (
                    "its noise map has no finite value > 0"
                    if sbad[i].all()
                    else "every pixel is masked or has no valid noise"
                )
                raise AstroSRError(f"{label(i)}: {why}; fix its noise/weight map or drop this frame.")
            s[i][sbad[i]] = s[i][~sbad[i]].max() if (~sbad[i]).any() else 1.0
        sig = s
    psf_list: Optional[list[np.ndarray]] = None
    if psfs is not None:
        if isinstance(psfs, np.ndarray) and psfs.ndim == 2:
            psf_list = [psfs] * n
        else:
            psf_list = list(psfs)
        if len(psf_list) != n:
            raise AstroSRError(f"psfs: {len(psf_list)} PSFs given for {n} frames; give one per frame (or one for all).")
        psf_list = [_odd_unit(p, f"PSF of frame {i}") for i, p in enumerate(psf_list)]
        for i, p in enumerate(psf_list):
            if p.shape[0] > h or p.shape[1] > w:
                raise AstroSRError(
                    f"PSF of frame {i}: {p.shape[0]}x{p.shape[1]} is larger than the {h}x{w} frame; crop the PSF (e.g. size=) or use larger frames."
                )
    elif require_psfs:
        raise AstroSRError("psfs: this coadd needs one PSF per frame (--psf, --psf-from-fwhm, or psf='estimate').")
    return FrameStack(data=data, sigma=sig.astype(np.float32), mask=bad, psfs=psf_list)


_STRUCTURAL = {
    "SIMPLE",
    "BITPIX",
    "NAXIS",
    "NAXIS1",
    "NAXIS2",
    "NAXIS3",
    "EXTEND",
    "XTENSION",
    "PCOUNT",
    "GCOUNT",
    "COMMENT",
    "HISTORY",
    "",
    "CHECKSUM",
    "DATASUM",
    "BSCALE",
    "BZERO",
    "BLANK",
}


def inherited_header(img) -> fits.Header:
    """The image HDU's header plus the primary header's keywords when ``INHERIT = T`` (MEF convention).

    DECam community-pipeline files keep FILTER, EXPTIME, ... in the primary header only.
    """
    hdr = img.header.copy()
    if img.hdu_index and img.path and hdr.get("INHERIT", False):
        try:
            prim = fits.getheader(img.path, 0)
        except Exception:
            return hdr
        for card in prim.cards:
            if card.keyword not in _STRUCTURAL and card.keyword not in hdr:
                hdr[card.keyword] = (card.value, card.comment)
    return hdr


def _frame_band(header: fits.Header) -> Optional[str]:
    f = header.get("FILTER") or header.get("BAND")
    return str(f).split()[0] if f else None


def load_frames(
    paths: Sequence[PathLike],
    *,
    hdu: Optional[Union[int, str]] = None,
    weights: Optional[Sequence[PathLike]] = None,
    rms: Optional[Sequence[PathLike]] = None,
    dq: Optional[Sequence[PathLike]] = None,
    psfs: Optional[Sequence[Union[str, PathLike, np.ndarray]]] = None,
    psf_from_fwhm_key: Optional[str] = None,
    saturate_keyword: Optional[str] = "SATURATE",
    subtract_background: bool = True,
    clip_outliers: Optional[float] = None,
    gain_keyword: Optional[str] = None,
    allow_mixed_bands: bool = False,
    psf_size: Optional[int] = None,
) -> FrameStack:
    """Read exposures (and their weights/DQ/PSFs) into a :class:`FrameStack` on the first frame's grid.

    Parameters
    ----------
    paths
        One FITS file per exposure, or a single file holding a cube (N, H, W), or a single
        multi-extension file with one 2-D image HDU per exposure (each HDU's header, with
        the primary header's keywords when ``INHERIT = T``, is that frame's header).
    weights, rms, dq
        Per-frame inverse-variance maps, rms maps, data-quality maps (nonzero = bad).
        Without either noise source the noise is estimated with sep.
    psfs
        Per-frame PSFs: a spec or FITS image (:func:`napari_astrosr.core.psf.parse_psf`),
        a PSFEx model (a FITS file with a ``PSF_MASK`` table, evaluated at the frame centre),
        ``"estimate"`` (:func:`estimate_psf`), or an array. One entry applies to all frames.
    psf_from_fwhm_key
        Build Gaussian PSFs from this header keyword (FWHM in pixels) instead.
    saturate_keyword
        Header keyword giving the saturation level (None: no saturation mask).
    subtract_background
        Subtract sep's background model from each frame (the DIP latent is non-negative,
        so a sky pedestal must go; the classical coadds do not care).
    clip_outliers
        Flag positive outliers across the stack at this many sigma (:func:`outlier_mask`).
    gain_keyword
        Header keyword with the gain (e-/ADU) to add source Poisson noise to estimated noise maps.
    allow_mixed_bands
        Accept frames with different FILTER keywords (coadding bands is rarely wanted).

    Notes
    -----
    Frames on a different grid than the first are reprojected with
    :func:`napari_astrosr.core.resample.reproject_flux` (exact overlap: the frame's total
    flux inside the common footprint is kept); their variance maps are reprojected the
    same way (pixel-area-preserving, so noise correlation from resampling is ignored) and
    pixels not fully covered are masked.
    """
    from .fits_read import read_fits

    paths = [Path(p) for p in paths]
    if not paths:
        raise AstroSRError("no input frames given.")
    for name, lst in (("weights", weights), ("rms", rms), ("dq", dq)):
        if lst is not None and len(lst) != len(paths):
            raise AstroSRError(f"--{name}: {len(lst)} files given for {len(paths)} frames; give one per frame.")
    if weights is not None and rms is not None:
        raise AstroSRError("give either weight maps or rms maps, not both.")

    from .fits_read import read_fits_all, read_layers

    images = [read_fits(p, hdu=hdu) for p in paths]
    if len(images) == 1 and hdu is None and images[0].data.ndim == 2:
        # one multi-extension file whose image HDUs the viewer shows as a stack (same
        # shape and EXTNAME, e.g. the bundled decam_stack.fits: FRAME,1..5; see
        # fits_io.read_layers) is a stack of frames, each HDU keeping its own header
        # (primary keywords inherited with INHERIT = T) for FILTER, SATURATE, FWHM, ...
        layers = read_layers(paths[0])
        if len(layers) == 1 and layers[0].frame_headers:
            images = read_fits_all(paths[0])
    cube_mode = len(images) == 1 and images[0].data.ndim == 3
    if cube_mode:
        img = images[0]
        planes = list(img.data)
        headers = [img.header] * len(planes)
        wcss = [img.wcs] * len(planes)
        names = [f"{img.path}[{i}]" for i in range(len(planes))]
    else:
        for im in images:
            if im.data.ndim != 2:
                raise AstroSRError(
                    f"{im.path}: is a {im.data.ndim}-D cube; give one 2-D frame per file or a single cube."
                )
        planes = [im.data for im in images]
        headers = [inherited_header(im) for im in images]
        wcss = [im.wcs for im in images]
        names = [Path(im.path).name if len(paths) > 1 else f"{Path(im.path).name}[{im.hdu_index}]" for im in images]
    n = len(planes)
    if n < 2:
        raise AstroSRError(
            f"{paths[0]}: a coadd needs at least 2 frames (one file per frame, a cube, "
            "or a multi-extension file of same-shape, same-EXTNAME image HDUs)."
        )

    bands = [_frame_band(h) for h in headers]
    if len({b for b in bands if b}) > 1 and not allow_mixed_bands:
        raise AstroSRError(
            f"frames have different FILTER bands ({', '.join(sorted({b for b in bands if b}))}); "
            "coadd each band separately or allow mixed bands (--allow-mixed-bands)."
        )

    def _aux(lst, i, what):
        if lst is None:
            return None
        a = read_fits(lst[i], hdu=hdu).data
        if a.shape != planes[i].shape:
            raise AstroSRError(
                f"{lst[i]}: {what} map shape {a.shape} does not match frame {names[i]} {planes[i].shape}."
            )
        return a

    sig_list, bad_list = [], []
    for i in range(n):
        d = planes[i]
        bad = ~np.isfinite(d)
        sig = None
        w_i = _aux(weights, i, "weight")
        r_i = _aux(rms, i, "rms")
        q_i = _aux(dq, i, "data-quality")
        if w_i is not None:
            sig, b = noise_from_weights(w_i)
            if b.all() and np.isfinite(d).any():
                raise AstroSRError(
                    f"{weights[i]}: no finite weight > 0 for {names[i]}; fix the weight map or drop --weights."
                )
            bad |= b
        elif r_i is not None:
            sig, b = noise_from_rms(r_i)
            if b.all() and np.isfinite(d).any():
                raise AstroSRError(f"{rms[i]}: no finite rms > 0 for {names[i]}; fix the rms map or drop --rms.")
            bad |= b
        if q_i is not None:
            bad |= dq_mask(np.nan_to_num(q_i, nan=1))
        if saturate_keyword:
            bad |= saturation_mask(d, headers[i], keyword=saturate_keyword)
        sig_list.append(sig)
        bad_list.append(bad)

    for i in range(n):  # before anything is estimated from it: name the file
        if bad_list[i].all():
            raise AstroSRError(
                f"{names[i]}: every pixel is masked (mask, DQ or NaN/inf); drop this frame or fix its mask."
            )

    # --- PSFs on the native grids (PSFEx positions are the frame's own pixels)
    psf_list: Optional[list[np.ndarray]] = None
    if psf_from_fwhm_key:
        psf_list = [
            psf_from_fwhm(h, keyword=psf_from_fwhm_key, size=psf_size, where=names[i]) for i, h in enumerate(headers)
        ]
    elif psfs is not None:
        specs = list(psfs) if not isinstance(psfs, (str, os.PathLike, np.ndarray)) else [psfs]
        if len(specs) == 1:
            specs = specs * n
        if len(specs) != n:
            raise AstroSRError(f"--psf: {len(specs)} PSFs given for {n} frames; give one per frame or one for all.")
        psf_list = []
        for i, spec in enumerate(specs):
            psf_list.append(_load_psf(spec, planes[i], bad_list[i], where=names[i], size=psf_size))

    # --- background subtraction and noise estimation on the native grid
    backs = np.zeros(n, np.float32)
    gains = [None] * n
    if gain_keyword:
        gains = [float(h[gain_keyword]) if gain_keyword in h else None for h in headers]
    for i in range(n):
        d = np.where(bad_list[i], 0.0, planes[i]).astype(np.float32)
        back, sig_est = estimate_noise(d, mask=bad_list[i], gain=gains[i])
        if subtract_background:
            d = d - back
            backs[i] = float(np.median(back))
        if sig_list[i] is None:
            sig_list[i] = sig_est
        planes[i] = d

    # --- reprojection onto the first frame's grid
    ref_shape, ref_wcs = planes[0].shape, wcss[0]
    notes: list[str] = []
    for i in range(1, n):
        same_shape = planes[i].shape == ref_shape
        same_grid = same_shape and (
            (wcss[i] is None and ref_wcs is None)
            or (wcss[i] is not None and ref_wcs is not None and _same_grid(wcss[i], ref_wcs, ref_shape))
        )
        if same_grid or (cube_mode and same_shape):
            continue
        if wcss[i] is None or ref_wcs is None:
            who = names[i] if wcss[i] is None else names[0]
            raise AstroSRError(
                f"{who}: has no WCS and frames differ in shape/grid, so it cannot be reprojected; register the frames first."
            )
        planes[i], sig_list[i], bad_list[i] = _reproject_frame(
            planes[i], sig_list[i], bad_list[i], wcss[i], ref_wcs, ref_shape, where=names[i]
        )
        notes.append(f"{names[i]}: reprojected onto {names[0]}'s grid (flux-conserving)")

    data = np.stack(planes).astype(np.float32)
    sigma = np.stack(sig_list).astype(np.float32)
    mask = np.stack(bad_list)
    if clip_outliers:
        mask |= outlier_mask(data, sigma, mask, nsigma=float(clip_outliers))
    stack = as_stack(data, sigmas=sigma, masks=mask, psfs=psf_list, names=names)
    stack.wcs = ref_wcs
    stack.header = headers[0].copy()
    stack.names = names
    stack.paths = [str(p) for p in paths]
    stack.background = backs
    stack.notes = notes
    return stack


def _load_psf(spec, image, mask, *, where: str, size: Optional[int]) -> np.ndarray:
    if isinstance(spec, np.ndarray):
        psf = spec
    elif isinstance(spec, str) and spec.strip().lower() == "estimate":
        psf = estimate_psf(image, mask=mask, size=size or 25, where=where)
    elif is_psfex(spec):
        psf = read_psfex(spec, shape=np.shape(image), size=size)
    else:
        from .psf import parse_psf

        psf = parse_psf(str(spec))
        if psf is None:
            raise AstroSRError(f"{where}: PSF 'none' cannot be used for a coadd; give a PSF.")
    psf = _odd_unit(psf, f"PSF of {where}")
    if size is not None and psf.shape[0] != size:
        psf = _odd_unit(crop_psf(psf, size), f"PSF of {where}")
    return psf


def _same_grid(a: WCS, b: WCS, shape: tuple[int, int]) -> bool:
    """True when two WCS put the frame corners/centre at the same pixels within 0.01 px."""
    h, w = shape
    xs = np.array([0, w - 1, 0, w - 1, (w - 1) / 2])
    ys = np.array([0, 0, h - 1, h - 1, (h - 1) / 2])
    try:
        ra, dec = a.pixel_to_world_values(xs, ys)
        x2, y2 = b.world_to_pixel_values(ra, dec)
    except Exception:
        return False
    return bool(np.all(np.hypot(x2 - xs, y2 - ys) < 0.01))


def _reproject_frame(data, sigma, bad, wcs_in, wcs_out, shape_out, *, where="frame"):
    from .resample import reproject_flux

    res = reproject_flux(np.where(bad, 0.0, data).astype(np.float64), wcs_in, wcs_out, shape_out, where=where)
    var = reproject_flux((sigma.astype(np.float64)) ** 2, wcs_in, wcs_out, shape_out)
    badr = reproject_flux(bad.astype(np.float64), wcs_in, wcs_out, shape_out)
    cov = np.asarray(res.coverage, np.float64) if res.coverage is not None else np.isfinite(res.data).astype(float)
    out_bad = (~np.isfinite(res.data)) | (cov < 0.999) | (np.nan_to_num(badr.data, nan=1.0) > 1e-3)
    d = np.where(out_bad, 0.0, np.nan_to_num(res.data)).astype(np.float32)
    v = np.nan_to_num(var.data, nan=0.0)
    s = np.sqrt(np.clip(v, 0, None)).astype(np.float32)
    if (~out_bad).any():
        s[out_bad | (s <= 0)] = s[~out_bad].max()
    return d, s, out_bad

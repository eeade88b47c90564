"""Find the PSF an image carries: from the user, the file, the header, or the image's own stars.

:func:`find_psf` resolves the PSF in a fixed order and says where it came from
(:class:`PsfInfo`, written to the output header with :meth:`PsfInfo.header_cards`):

1. an explicit spec (``--psf``; :func:`napari_astrosr.core.psf.parse_psf`);
2. a PSF image extension of the input file (EXTNAME ``PSF``, ``EPSF``, ``PSF_IMAGE``), or a PSF
   file named in the header (``PSF_FILE``, ``PSFFILE``; relative to the image's folder);
3. a FWHM header keyword (``PSF_FWHM``, ``FWHM``, ``SEEING``, ...), in arcsec or pixels (the
   card comment decides; otherwise ``SEEING`` is arcsec and the others pixels), converted with
   the WCS pixel scale, rendered as a Gaussian;
4. an effective PSF built from isolated stars of the image (:func:`estimate_psf`, photutils
   ``EPSFBuilder``). On small crops the star criteria are relaxed step by step (smaller stamps,
   lower S/N, looser isolation, fewer stars) and each relaxation is recorded in the notes;
5. otherwise :class:`~napari_astrosr.exceptions.AstroSRError` with one line saying what to pass.

Pixel grids: steps 2-4 give a PSF on the *input* grid (pixel-integrated by the input pixels).
The restore path wants the blur on the *output* grid (``scale`` x finer) that the forward model
``block_sum(convolve(hr, psf), scale)`` then integrates over the input pixel again, so the
input-grid kernel is resampled ``scale`` x finer and narrowed by the input pixel's extra box
width (its FWHM shrunk to ``sqrt(fwhm^2 - 8 ln2 (scale^2 - 1) / 12)`` in output pixels, shape
kept): without that the forward model would count the input pixel twice. An explicit spec is
taken as given, in output pixels (as ``--psf`` is documented).
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
from astropy.io import fits

from ..exceptions import AstroSRError
from .psf import _fit_size, gaussian_psf, measure_fwhm, normalize_psf, parse_psf, psf_from_fits, resample_psf

__all__ = [
    "PsfInfo",
    "find_psf",
    "estimate_psf",
    "psf_to_output_grid",
    "header_fwhm",
    "kernel_hash",
    "FWHM_KEYWORDS",
    "PSF_EXTNAMES",
]

PathLike = Union[str, os.PathLike]
FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))
FWHM_KEYWORDS = ("PSF_FWHM", "PSFFWHM", "FWHM_PSF", "FWHM", "SEEING", "SEEINGAS", "SEEINGPX", "L1FWHM")
PSF_EXTNAMES = ("PSF", "EPSF", "PSF_IMAGE", "PSFIMAGE")
PSF_FILE_KEYWORDS = ("PSF_FILE", "PSFFILE", "PSFNAME")


@dataclass
class PsfInfo:
    """Where a PSF came from and what it is.

    Attributes
    ----------
    source
        ``option``, ``extension``, ``header-file``, ``header-keyword`` or ``estimated``.
    fwhm
        FWHM in output pixels (the grid the kernel is returned on).
    fwhm_input
        FWHM in input pixels (``fwhm / scale`` for a kernel given in output pixels).
    hash
        First 16 hex digits of the SHA-256 of the kernel (float64 bytes) or of the PSF file.
    description
        Short text: the spec, the extension / file name, the keyword and value, or the stars used.
    notes
        What was assumed or relaxed on the way (units, relaxed star criteria, ...).
    n_stars
        Stars the ePSF was built from (estimated PSFs only).
    """

    source: str
    fwhm: float
    fwhm_input: float
    hash: str
    description: str = ""
    notes: list[str] = field(default_factory=list)
    n_stars: int = 0

    def header_cards(self) -> list[tuple[str, Any, str]]:
        """FITS cards ``(keyword, value, comment)`` recording the PSF used (for the output header)."""
        cards = [
            ("PSFSRC", self.source, "where the PSF came from"),
            ("PSFFWHM", round(float(self.fwhm), 4), "[pix] PSF FWHM on the output grid"),
            ("PSFFWHMI", round(float(self.fwhm_input), 4), "[pix] PSF FWHM on the input grid"),
            ("PSFHASH", self.hash, "sha256[:16] of the PSF kernel or file"),
            ("PSFDESC", self.description[:68], "PSF spec / file / keyword"),
        ]
        if self.n_stars:
            cards.append(("PSFNSTAR", int(self.n_stars), "stars in the empirical PSF"))
        for i, note in enumerate(self.notes[:9]):
            cards.append((f"PSFNOTE{i + 1}", note[:68], ""))
        return cards


def kernel_hash(kernel: np.ndarray) -> str:
    """SHA-256 (first 16 hex digits) of a kernel's float64 bytes and shape."""
    k = np.ascontiguousarray(np.asarray(kernel, dtype=np.float64))
    h = hashlib.sha256(str(k.shape).encode())
    h.update(k.tobytes())
    return h.hexdigest()[:16]


def _file_hash(path: PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def psf_to_output_grid(kernel: np.ndarray, scale: int) -> np.ndarray:
    """An input-grid (pixel-integrated) PSF as the output-grid blur of the forward model.

    Resampled ``scale`` x finer, with the FWHM reduced by the input pixel's box beyond one
    output pixel (Gaussian quadrature: ``fwhm_out^2 = fwhm^2 - 8 ln2 (scale^2 - 1) / 12``, in
    output pixels) by resampling with a slightly smaller factor: the shape is kept, only the
    width changes. ``scale = 1`` returns the kernel unchanged (normalised).
    """
    k = normalize_psf(kernel)
    s = int(scale)
    if s <= 1:
        return k
    fine = resample_psf(k, float(s))
    f_in = measure_fwhm(fine)
    box_var = 8.0 * math.log(2.0) * (s * s - 1) / 12.0
    f_out = math.sqrt(max(f_in**2 - box_var, 0.25 * f_in**2))
    return resample_psf(k, float(s) * f_out / f_in)  # fewer output pixels per input pixel: narrower


# --------------------------------------------------------------------------- header keywords


def _pixel_scale_arcsec(header: Optional[fits.Header], wcs=None) -> Optional[float]:
    """Pixel scale (arcsec/px) from a celestial WCS (or the header's), else ``PIXSCALE``/``PIXSCAL1``."""
    from astropy.wcs import WCS
    from astropy.wcs.utils import proj_plane_pixel_scales

    w = wcs
    if w is None and header is not None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                w = WCS(header, naxis=2)
        except Exception:
            w = None
    if w is not None and getattr(w, "has_celestial", False):
        try:
            sc = proj_plane_pixel_scales(w.celestial) * 3600.0
            if np.all(np.isfinite(sc)) and np.all(sc > 0):
                return float(np.sqrt(sc[0] * sc[1]))
        except Exception:
            pass
    if header is not None:
        for key in ("PIXSCALE", "PIXSCAL1", "SECPIX", "PIXSCAL"):
            if key in header:
                try:
                    v = float(header[key])
                    if np.isfinite(v) and v > 0:
                        return v
                except (TypeError, ValueError):
                    pass
    return None


def header_fwhm(header: fits.Header, *, wcs=None, where: str = "image") -> Optional[tuple[float, str, list[str]]]:
    """The PSF FWHM in input pixels from the first FWHM-like header keyword, or None.

    Returns
    -------
    (fwhm_px, description, notes) or None
        Units: the card comment (``arcsec``/``"`` or ``pix``) decides; without one ``SEEING*``
        is read as arcsec (except ``SEEINGPX``) and the other keywords as pixels (the SExtractor /
        coadd convention), which is noted. Arcsec need the WCS pixel scale (or ``PIXSCALE``).
    """
    for key in FWHM_KEYWORDS:
        if key not in header:
            continue
        try:
            val = float(header[key])
        except (TypeError, ValueError):
            continue
        if not np.isfinite(val) or val <= 0:
            continue
        comment = (header.comments[key] or "").lower()
        notes: list[str] = []
        if "arcsec" in comment or '"' in comment or "asec" in comment or key == "SEEINGAS":
            unit = "arcsec"
        elif "pix" in comment or "px" in comment or key == "SEEINGPX":
            unit = "pix"
        else:
            unit = "arcsec" if key.startswith("SEEING") else "pix"
            notes.append(f"{key} has no unit in its comment; read as {unit}")
        if unit == "arcsec":
            ps = _pixel_scale_arcsec(header, wcs)
            if ps is None:
                raise AstroSRError(
                    f"{where}: header {key}={val} is in arcsec but the image has no celestial WCS or PIXSCALE "
                    "to convert it to pixels; give --psf."
                )
            fwhm = val / ps
            desc = f"{key}={val:g} arcsec / {ps:.4g} arcsec/px"
        else:
            fwhm = val
            desc = f"{key}={val:g} px"
        if not 0.5 <= fwhm <= 200:
            raise AstroSRError(
                f"{where}: header {key}={val} gives a FWHM of {fwhm:.3g} px, not plausible (0.5-200 px); give --psf."
            )
        return fwhm, desc, notes
    return None


# --------------------------------------------------------------------------- empirical PSF

# Star criteria, strict first: (stamp size, min S/N, isolation flux ratio, min b/a, min stars, sep flags
# ignored). Flag 16 (Kron aperture cut by the image edge) says nothing about the star and flags most
# stars of a small crop; flag 1 (deblended) is accepted last, the isolation test still applying.
_LADDER = (
    (25, 30.0, 0.10, 0.7, 3, 16),
    (15, 30.0, 0.10, 0.7, 3, 16),
    (11, 20.0, 0.10, 0.7, 3, 16),
    (11, 10.0, 0.25, 0.6, 2, 16),
    (9, 10.0, 0.25, 0.5, 1, 16),
    (9, 10.0, 0.25, 0.5, 1, 17),
)


def _candidates(img: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, Any]:
    from .detection import detect_sources, estimate_background

    h, w = img.shape
    box = max(16, min(64, h // 4, w // 4))
    clean = np.where(m, 0.0, img).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cat = detect_sources(clean, thresh=5.0, minarea=5, mask=m, box=box, subtract_background=True)
    back = estimate_background(clean, mask=m, box=box).back
    return clean - back, cat


def _select(
    cat,
    m: np.ndarray,
    shape: tuple[int, int],
    *,
    size: int,
    snr_min: float,
    iso: float,
    ba: float,
    ignore_flags: int = 16,
) -> np.ndarray:
    h, w = shape
    x = np.asarray(cat["x"], float)
    y = np.asarray(cat["y"], float)
    flux = np.asarray(cat["flux"], float)
    ferr = np.asarray(cat["flux_err"], float) if "flux_err" in cat.colnames else np.sqrt(np.abs(flux))
    a = np.asarray(cat["a"], float)
    b = np.asarray(cat["b"], float)
    flag = np.asarray(cat["flag"], int) if "flag" in cat.colnames else np.zeros(len(cat), int)
    half = size // 2 + 1
    snr = flux / np.maximum(ferr, 1e-30)
    # sep flags 1 deblended, 2 truncated, 4 overflow, 8 singular, 32+ masked aperture: drop (see _LADDER)
    ok = (snr > snr_min) & ((flag & ~ignore_flags) == 0) & (b / np.maximum(a, 1e-6) > ba)
    ok &= (x > half) & (x < w - 1 - half) & (y > half) & (y < h - 1 - half)
    for i in np.flatnonzero(ok):  # isolation: no neighbour brighter than `iso` of it within one stamp
        d = np.hypot(x - x[i], y - y[i])
        if ((d > 0) & (d < size) & (flux > iso * flux[i])).any():
            ok[i] = False
    for i in np.flatnonzero(ok):  # no masked (saturated, bad) pixel in the stamp
        yi, xi = int(round(y[i])), int(round(x[i]))
        if m[max(0, yi - half) : yi + half + 1, max(0, xi - half) : xi + half + 1].any():
            ok[i] = False
    idx = np.flatnonzero(ok)
    # extended sources: stars are the most concentrated sources (peak / flux = 1 / (1.13 FWHM^2) for a
    # Gaussian); keep those within 1.5x of the most concentrated one's FWHM-equivalent
    if idx.size >= 2 and "peak" in cat.colnames:
        conc = np.asarray(cat["peak"], float)[idx] / np.maximum(flux[idx], 1e-30)
        idx = idx[conc >= conc.max() / 1.5**2]
    return idx[np.argsort(-flux[idx])]


def estimate_psf(
    image: np.ndarray,
    *,
    mask: Optional[np.ndarray] = None,
    size: Optional[int] = 25,
    max_stars: int = 40,
    snr_min: float = 30.0,
    oversampling: int = 1,
    where: str = "frame",
    relax: bool = False,
    return_info: bool = False,
    smoothing: Optional[str] = None,
):
    """Empirical PSF from the image's isolated stars with photutils' ``EPSFBuilder``.

    Stars: sep detections (on the background-subtracted image) with S/N > ``snr_min``, no sep
    flags, no masked pixel in the stamp, away from the border and from neighbours brighter than
    10% of them, round (b/a > 0.7) and compact (size within 1.5x of the smallest sources': galaxies
    are rejected). The ePSF is built at ``oversampling`` x and block-summed back to image pixels.

    Parameters
    ----------
    image
        2-D image (NaN = missing).
    mask
        True where pixels are bad.
    size
        Odd stamp size (pixels) of the strict criteria; None: about 6 FWHM of the compact sources
        (sep's ``sqrt(a b)``), 11 to 25 px.
    max_stars
        Brightest stars kept.
    snr_min, oversampling
        See above.
    smoothing
        ``EPSFBuilder``'s smoothing kernel; default None: its ``"quartic"`` default widened
        a 2-px FWHM PSF by 19% on simulated star fields (benchmarks/psf_estimate.py).
    where
        Name used in error messages (file or frame).
    relax
        When too few stars pass, retry with relaxed criteria (smaller stamps, S/N > 20 then 10,
        isolation at 25%, b/a > 0.6 then 0.5, down to 2 then 1 star, finally deblended stars), for small crops. Each step taken
        is recorded in the info's notes.
    return_info
        Also return a dict: ``n_stars``, ``size``, ``notes`` (the relaxations), ``xy`` (star positions).

    Returns
    -------
    numpy.ndarray or (numpy.ndarray, dict)
        Odd, unit-sum kernel on the image's pixel grid.
    """
    from astropy.nddata import NDData
    from astropy.table import Table
    from photutils.psf import EPSFBuilder, extract_stars

    if size is not None and size % 2 == 0:
        raise AstroSRError(f"{where}: PSF size {size} must be odd.")
    img = np.asarray(image, dtype=np.float32)
    if img.ndim != 2:
        raise AstroSRError(f"{where}: image must be 2-D to estimate a PSF, got shape {img.shape}.")
    m = ~np.isfinite(img) if mask is None else (np.asarray(mask, bool) | ~np.isfinite(img))
    sub, cat = _candidates(img, m)
    if len(cat) == 0:
        raise AstroSRError(f"{where}: no stars detected; cannot estimate a PSF. Give --psf or --psf-from-fwhm.")
    if size is None:
        r = np.sqrt(np.asarray(cat["a"], float) * np.asarray(cat["b"], float))
        bright = np.asarray(cat["flux"], float) > np.percentile(np.asarray(cat["flux"], float), 50)
        fwhm_guess = 2.3548 * float(np.percentile(r[bright] if bright.any() else r, 25))
        size = int(np.clip(np.ceil(6.0 * fwhm_guess), 11, 25)) | 1
    ladder = [(size, snr_min, 0.10, 0.7, 3, 16)]
    if relax:
        for step in _LADDER[1:]:
            step = (min(step[0], size),) + step[1:]
            if step != ladder[-1]:
                ladder.append(step)
    notes: list[str] = []
    idx = np.array([], int)
    used = ladder[0]
    for k, (sz, snr, iso, ba, nmin, ign) in enumerate(ladder):
        idx = _select(cat, m, img.shape, size=sz, snr_min=snr, iso=iso, ba=ba, ignore_flags=ign)
        used = (sz, snr, iso, ba, nmin, ign)
        if idx.size >= nmin:
            if k > 0:
                notes.append(
                    f"relaxed star criteria: stamp {sz}px, S/N>{snr:g}, isolation {iso:g}, b/a>{ba:g}"
                    f"{', deblended ok' if ign & 1 else ''}, {idx.size} star(s)"
                )
            break
    else:
        raise AstroSRError(
            f"{where}: only {idx.size} isolated bright stars found (need {used[4]}) to estimate a PSF"
            f"{' even with relaxed criteria' if relax else ''}. Give --psf or --psf-from-fwhm."
        )
    sz = used[0]
    idx = idx[:max_stars]
    if idx.size < 3:
        notes.append(f"only {idx.size} star(s): a compact galaxy can pass for a star; check the FWHM")
    x = np.asarray(cat["x"], float)[idx]
    y = np.asarray(cat["y"], float)[idx]
    stars = extract_stars(NDData(sub), Table({"x": x, "y": y}), size=(sz, sz))
    builder = EPSFBuilder(oversampling=oversampling, maxiters=10, progress_bar=False, smoothing_kernel=smoothing)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        epsf, _ = builder(stars)
    psf = np.asarray(epsf.data, dtype=np.float64)
    if oversampling > 1:
        # the ePSF is already pixel-integrated, sampled ``oversampling`` x finer: take every
        # ``oversampling``-th sample through its centre (block-summing would integrate twice)
        cy, cx = psf.shape[0] // 2, psf.shape[1] // 2
        psf = psf[cy % oversampling :: oversampling, cx % oversampling :: oversampling]
    psf = np.clip(np.nan_to_num(psf), 0, None)
    if psf.shape[0] % 2 == 0 or psf.shape[1] % 2 == 0 or psf.shape[0] != sz:
        psf = _fit_size(psf, sz)
    if not psf.sum() > 0:
        raise AstroSRError(f"{where}: the star stamps gave an empty PSF. Give --psf or --psf-from-fwhm.")
    psf = normalize_psf(psf)
    if return_info:
        return psf, {"n_stars": int(len(idx)), "size": sz, "notes": notes, "xy": np.column_stack([x, y])}
    return psf


# --------------------------------------------------------------------------- the resolver


def _psf_from_file(path: Path, where: str) -> tuple[Optional[np.ndarray], str, str, list[str]]:
    """(kernel on the input grid, source, description, notes) from a PSF extension or header-named PSF file."""
    from .fits_open import list_image_hdus

    for idx, name, shape in list_image_hdus(path):
        if name.upper() in PSF_EXTNAMES and len(shape) in (2, 3):
            k = psf_from_fits(path, hdu=idx)
            return k, "extension", f"{path.name}[{name}]", []
    hdr = fits.getheader(path, 0)
    for key in PSF_FILE_KEYWORDS:
        val = hdr.get(key)
        if not isinstance(val, str) or not val.strip():
            continue
        cand = Path(val.strip())
        if not cand.is_absolute():
            cand = path.parent / cand
        if not cand.exists():
            raise AstroSRError(
                f"{where}: header {key}={val!r} names a PSF file that does not exist ({cand}); give --psf."
            )
        return psf_from_fits(cand), "header-file", f"{key}={cand.name}", [f"file sha256 {_file_hash(cand)}"]
    return None, "", "", []


def find_psf(
    data: np.ndarray,
    *,
    header: Optional[fits.Header] = None,
    hdul_or_path: Optional[Union[PathLike, fits.HDUList]] = None,
    psf: Optional[Union[str, np.ndarray]] = None,
    wcs=None,
    scale: int = 1,
    mask: Optional[np.ndarray] = None,
    estimate: bool = True,
    where: Optional[str] = None,
) -> tuple[np.ndarray, PsfInfo]:
    """Resolve the PSF for restoring ``data`` ``scale`` x, in the order of the module docstring.

    Parameters
    ----------
    data
        The 2-D input image.
    header
        Its header (FWHM keywords, PSF file keywords, WCS pixel scale).
    hdul_or_path
        The input file (path) or an open HDUList, for a PSF extension or a PSF file named in the header.
    psf
        An explicit spec (``--psf``: ``gaussian:SIGMA``, ``PATH.fits``, an array, ...), taken in
        *output* pixels; ``"none"`` is refused here (the forward model needs a PSF).
    wcs
        Celestial WCS for arcsec -> pixel conversion (default: from ``header``).
    scale
        Output pixels per input pixel; steps 2-4 are converted with :func:`psf_to_output_grid`.
    mask
        Bad pixels excluded from star selection.
    estimate
        Allow step 4 (the empirical PSF).
    where
        Name for messages (default: the file name, or "image").

    Returns
    -------
    kernel, info
        Odd, unit-sum kernel on the output grid and its :class:`PsfInfo`.

    Raises
    ------
    AstroSRError
        Nothing found (one line naming the file and ``--psf``), or a bad spec / file.
    """
    s = int(scale)
    if s < 1:
        raise AstroSRError(f"scale={scale}: must be a positive integer.")
    path = None
    hdul = None
    if isinstance(hdul_or_path, fits.HDUList):
        hdul = hdul_or_path
    elif hdul_or_path is not None:
        path = Path(hdul_or_path)
    where = where or (path.name if path is not None else "image")
    img = np.asarray(data)
    if img.ndim != 2:
        raise AstroSRError(f"{where}: image must be 2-D to find its PSF, got shape {img.shape}.")

    def done(
        k_in: np.ndarray, source: str, desc: str, notes: list[str], *, on_output: bool = False, n_stars: int = 0
    ) -> tuple[np.ndarray, PsfInfo]:
        k_in = normalize_psf(k_in)
        if on_output:
            k_out = k_in
            f_out = measure_fwhm(k_out)
            f_in = f_out / s
        else:
            k_out = psf_to_output_grid(k_in, s)
            f_in = measure_fwhm(k_in)
            f_out = measure_fwhm(k_out)
        return k_out, PsfInfo(
            source=source,
            fwhm=f_out,
            fwhm_input=f_in,
            hash=kernel_hash(k_out),
            description=desc,
            notes=list(notes),
            n_stars=n_stars,
        )

    # 1. explicit spec
    if psf is not None and not (isinstance(psf, str) and not psf.strip()):
        k = parse_psf(psf)
        if k is None:
            raise AstroSRError(
                f"{where}: --psf none gives no blur to restore; give a PSF or leave --psf out to find one."
            )
        from .psf import describe_psf

        notes = []
        if isinstance(psf, (str, os.PathLike)) and Path(str(psf).split(":")[0]).is_file():
            notes.append(f"file sha256 {_file_hash(Path(str(psf).split(':')[0]))}")
        return done(k, "option", describe_psf(psf), notes, on_output=True)

    # 2. PSF extension / file named in the header
    if hdul is not None:
        for h in hdul:
            if h.is_image and (h.name or "").upper() in PSF_EXTNAMES and h.data is not None:
                raw = np.asarray(h.data, dtype=np.float64)
                raw = raw[raw.shape[0] // 2] if raw.ndim == 3 else raw
                from .psf import _recentre

                return done(_recentre(np.clip(np.nan_to_num(raw), 0, None)), "extension", f"[{h.name}]", [])
    if path is not None and path.exists():
        k, source, desc, notes = _psf_from_file(path, where)
        if k is not None:
            return done(k, source, desc, notes)
    if header is None and hdul is not None:
        header = hdul[0].header

    # 3. header keyword
    if header is not None:
        hf = header_fwhm(header, wcs=wcs, where=where)
        if hf is not None:
            fwhm, desc, notes = hf
            from .psf import _odd

            k = gaussian_psf(fwhm * FWHM_TO_SIGMA, size=_odd(2 * math.ceil(2 * fwhm) + 1))
            return done(k, "header-keyword", desc, notes + ["Gaussian of that FWHM"])

    # 4. the image's own stars
    if estimate:
        try:
            k, info = estimate_psf(img, mask=mask, size=None, where=where, relax=True, return_info=True)
        except AstroSRError as exc:
            raise AstroSRError(
                f"{where}: no PSF found (no --psf, no PSF extension or FWHM keyword, and the image's stars "
                f"could not give one: {str(exc).split(': ', 1)[-1].split('. Give')[0]}). Give --psf."
            ) from exc
        return done(
            k,
            "estimated",
            f"ePSF from {info['n_stars']} star(s), {info['size']}px stamps",
            info["notes"],
            n_stars=info["n_stars"],
        )
    raise AstroSRError(f"{where}: no PSF found (no --psf, PSF extension or FWHM header keyword). Give --psf.")

"""Multi-frame coaddition: input preparation and classical coadds (no torch).

Input preparation turns a stack of registered exposures into what every coadd needs,
per frame: the data (background-subtracted on request), a noise map ``sigma``, a bad-pixel
``mask`` (True = bad) and a PSF (odd, unit sum, centred):

- noise from an inverse-variance/weight map (``sigma = 1/sqrt(w)``; ``w <= 0`` is masked),
  from an rms map, or estimated with sep's background rms (plus the sources' Poisson
  term when a gain is known);
- masks from data-quality maps (nonzero = bad), NaN/inf, saturation (``SATURATE``
  header keyword) and, optionally, sigma-clipped outliers across the stack;
- PSFs from a FITS image / spec (:func:`napari_astrosr.core.psf.parse_psf`), from a
  PSFEx model (:func:`read_psfex`), from a FWHM header keyword (:func:`psf_from_fwhm`),
  or estimated from the frame's stars (:func:`estimate_psf`, photutils ``EPSFBuilder``).

Frames on different pixel grids are reprojected onto the first frame's WCS with the
flux-conserving :func:`napari_astrosr.core.resample.reproject_flux`; frames without a
WCS must already share the grid (clear error otherwise).

Classical coadds (:func:`ivar_coadd`, :func:`median_coadd`) keep the input's flux scale:
a weighted *mean* of frames in the same units gives the same per-source flux as any one
frame (the per-frame fluxes are averaged, not summed), so photometry on the coadd is
directly comparable with photometry on the exposures. PSF homogenisation
(``homogenize=True``) convolves each frame with a unit-sum matching kernel to the worst
(widest) PSF, which conserves every frame's total and per-source flux (in apertures large
enough for the broader PSF) and gives a coadd with one well-defined PSF.

The deep-image-prior coadd (AstroClearNet) lives in :mod:`napari_astrosr.models.dip_coadd`
because it needs torch; it returns the same :class:`CoaddResult`.

This module is a facade kept for compatibility: the code lives in one module per job, and every
name below is re-exported from there.

- :mod:`.frame_noise`: noise maps and bad-pixel masks (``noise_from_weights``, ``noise_from_rms``,
  ``estimate_noise``, ``dq_mask``, ``saturation_mask``, ``outlier_mask``, ``noise_map_check``);
- :mod:`.frame_psf`: PSFEx models and frame PSFs (``read_psfex``, ``is_psfex``, ``psf_from_fwhm``,
  ``crop_psf``, ``psf_size_for``, ``common_psf_size``, ``homogenize_psfs``);
- :mod:`.frames`: the stack of frames (``FrameStack``, ``as_stack``, ``load_frames``, ``inherited_header``);
- :mod:`.combine`: classical coadds (``CoaddResult``, ``ivar_coadd``, ``median_coadd``, ``coadd_header``);
- :mod:`.coadd_metrics`: figures (``aperture_fluxes``, ``compare_fluxes``, ``image_metrics``,
  ``source_flux_report``, ``format_flux_bins``);
- :func:`.psf_estimate.estimate_psf` (the ePSF from a frame's stars).
"""

from __future__ import annotations

from .coadd_metrics import (
    SNR_BINS,
    aperture_fluxes,
    compare_fluxes,
    format_flux_bins,
    image_metrics,
    source_flux_report,
)
from .combine import CoaddResult, coadd_header, ivar_coadd, median_coadd, warn
from .frame_noise import (
    dq_mask,
    estimate_noise,
    noise_from_rms,
    noise_from_weights,
    noise_map_check,
    outlier_mask,
    saturation_mask,
)
from .frame_psf import (
    FWHM_TO_SIGMA,
    PathLike,
    common_psf_size,
    crop_psf,
    homogenize_psfs,
    is_psfex,
    psf_from_fwhm,
    psf_size_for,
    read_psfex,
)
from .frames import FrameStack, as_stack, inherited_header, load_frames
from .psf_estimate import estimate_psf

__all__ = [
    "noise_from_weights",
    "noise_from_rms",
    "estimate_noise",
    "dq_mask",
    "saturation_mask",
    "outlier_mask",
    "noise_map_check",
    "PathLike",
    "FWHM_TO_SIGMA",
    "read_psfex",
    "crop_psf",
    "psf_size_for",
    "psf_from_fwhm",
    "common_psf_size",
    "homogenize_psfs",
    "is_psfex",
    "FrameStack",
    "as_stack",
    "inherited_header",
    "load_frames",
    "CoaddResult",
    "ivar_coadd",
    "median_coadd",
    "coadd_header",
    "warn",
    "aperture_fluxes",
    "compare_fluxes",
    "image_metrics",
    "SNR_BINS",
    "source_flux_report",
    "format_flux_bins",
    "estimate_psf",
]

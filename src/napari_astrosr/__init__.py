"""napari-astrosr: flux-consistent restoration of astronomical images.

The public Python API re-exports the core and backend entry points. Every entry point is
imported lazily on first use (PEP 562), so ``import napari_astrosr`` loads neither astropy
nor torch nor napari, and ``astrosr --help`` and napari's start-up stay fast. The core
(``pip install napari-astrosr``) needs no torch; the networks need ``napari-astrosr[ml]``.

Examples
--------
>>> import napari_astrosr as asr
>>> img = asr.read_fits("field.fits")                                  # doctest: +SKIP
>>> res = asr.restore(img.data, method="backprojection", scale=2,
...                   psf="gaussian:1.0", wcs=img.wcs, header=img.header)  # doctest: +SKIP
>>> asr.write_fits("field_x2.fits", res.data, header=res.header, wcs=res.wcs)  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

from ._version import __version__
from .exceptions import AstroSRError, NoSourcesWarning, StoppedError

# name -> module holding it; imported on first attribute access (PEP 562)
_LAZY = {
    # FITS I/O and long-job helpers (astropy: ~0.4 s, so not at package import)
    "FitsImage": "napari_astrosr.core.fits_read",
    "read_fits": "napari_astrosr.core.fits_read",
    "read_fits_all": "napari_astrosr.core.fits_read",
    "write_fits": "napari_astrosr.core.fits_write",
    "Progress": "napari_astrosr.progress",
    "StopFlag": "napari_astrosr.progress",
    "run": "napari_astrosr.progress",
    # core (numpy/astropy/sep/photutils)
    "degrade": "napari_astrosr.core.degrade",
    "detect_sources": "napari_astrosr.core.detection",
    "estimate_background": "napari_astrosr.core.detection",
    "flux_map": "napari_astrosr.core.fluxmap",
    "evaluate": "napari_astrosr.core.metrics",
    "source_residuals": "napari_astrosr.core.metrics",
    "write_table": "napari_astrosr.core.catalogs",
    "write_regions": "napari_astrosr.core.catalogs",
    "read_regions": "napari_astrosr.core.catalogs",
    "parse_psf": "napari_astrosr.core.psf",
    "upsample": "napari_astrosr.core.resample",
    "downsample": "napari_astrosr.core.resample",
    "block_sum": "napari_astrosr.core.resample",
    "reproject_flux": "napari_astrosr.core.resample",
    "project_flux_exact": "napari_astrosr.core.projection",
    "ivar_coadd": "napari_astrosr.core.coadd",
    "median_coadd": "napari_astrosr.core.coadd",
    "measure_morphology": "napari_astrosr.core.morphology",
    # backend (torch, lazily)
    "restore": "napari_astrosr.restoration",
    "restore_job": "napari_astrosr.restoration",
    "list_methods": "napari_astrosr.method_table",
    "dip_coadd": "napari_astrosr.models.dip_coadd",
    "dip_coadd_job": "napari_astrosr.models.dip_coadd",
    "train_job": "napari_astrosr.training.loop",
    "load_config": "napari_astrosr.config",
    "restore_dask": "napari_astrosr.restore_jobs.tiling",
    "main_job": "napari_astrosr.pipeline",
}


def __getattr__(name: str) -> Any:
    """Import a public name's module on first access and cache the name here."""
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'napari_astrosr' has no attribute {name!r}")
    value = getattr(importlib.import_module(mod), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """Public names, the lazy ones included."""
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["__version__", "AstroSRError", "NoSourcesWarning", "StoppedError", *_LAZY]

"""Moved: the DIP coadd lives in :mod:`napari_astrosr.models.dip_coadd` and the coadd job
shared by the CLI and the widget in :mod:`napari_astrosr.coadd_job` (DIP coadd is not
training). This name is kept so existing imports keep working.
"""

from ..models.dip_coadd import compare_with_ivar, dip_coadd, dip_coadd_job, pick_device  # noqa: F401

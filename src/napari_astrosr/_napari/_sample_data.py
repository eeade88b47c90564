"""npe2 sample data: small real cutouts shipped in ``napari_astrosr/data/sample`` (offline)."""

from __future__ import annotations

from ..core.fits_io import read_layers
from ..data import sample_path
from ._layers import image_layer_tuple


def _load(key: str, name: str) -> list:
    from ._reader import prepare_current_viewer

    prepare_current_viewer()
    return [image_layer_tuple(img, name=name) for img in read_layers(sample_path(key))]


def hst_galaxy() -> list:
    """HST WFC3/IR F105W, Abell 2744 BCG field: 256x256 e-/s with TAN WCS."""
    return _load("hst_galaxy", "hst_galaxy")


def decam_stack() -> list:
    """Five registered DECam i-band exposures (128x128, seeing 3.6-5.9 px) as one stack layer."""
    return _load("decam_stack", "decam_stack")

"""napari-astrosr: flux-consistent restoration of astronomical images.

The public Python API re-exports the core and backend entry points; torch-based
parts are imported lazily so ``import napari_astrosr`` stays fast.
"""

from ._version import __version__
from .exceptions import AstroSRError, NoSourcesWarning
from .core.fits_io import FitsImage, read_fits, read_fits_all, write_fits

__all__ = [
    "__version__",
    "AstroSRError",
    "NoSourcesWarning",
    "FitsImage",
    "read_fits",
    "read_fits_all",
    "write_fits",
]

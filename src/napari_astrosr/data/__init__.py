"""Sample data shipped inside the package (small real cutouts; see sample/PROVENANCE.md)."""

from __future__ import annotations

from pathlib import Path

from ..exceptions import AstroSRError

SAMPLE_DIR = Path(__file__).resolve().parent / "sample"

SAMPLES = {
    "hst_galaxy": "hst_galaxy.fits",
    "decam_stack": "decam_stack.fits",
}
"""Sample key -> file name; the keys match the napari.yaml sample_data keys."""


def sample_path(name: str) -> Path:
    """Path of a shipped sample FITS file.

    Parameters
    ----------
    name
        ``"hst_galaxy"`` (256x256 HST WFC3/IR F105W, Abell 2744, with WCS) or
        ``"decam_stack"`` (5 registered DECam i-band frames, 128x128, one extension each).

    Raises
    ------
    AstroSRError
        Unknown name, or the file is missing from the installation.
    """
    try:
        p = SAMPLE_DIR / SAMPLES[name]
    except KeyError:
        raise AstroSRError(f"unknown sample {name!r}; choose one of {', '.join(SAMPLES)}.") from None
    if not p.exists():
        raise AstroSRError(f"{p}: sample file missing from the installation; reinstall napari-astrosr.")
    return p

"""Catalog files (ECSV / FITS table / CSV) and DS9 region files.

This module is the ONE place where 0-based pixel positions (numpy, sep, photutils,
astropy-regions ``PixCoord``) meet 1-based DS9/FITS image coordinates: astropy-regions
does the +1 / -1 itself when it serialises/parses the DS9 ``image`` frame, and the
``x_image``/``y_image`` columns (SExtractor's X_IMAGE convention) are added here.

Writes are atomic: a temporary file in the destination folder, then ``os.replace``; an
existing file is only replaced with ``overwrite=True``.
"""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
from astropy.table import Table

from ..exceptions import AstroSRError
from .atomic import atomic_output

__all__ = [
    "write_table",
    "write_regions",
    "read_regions",
    "load_regions",
    "region_to_mask",
    "table_to_regions",
    "COLUMN_UNITS",
]

PathLike = Union[str, os.PathLike]

FORMATS = {".ecsv": "ascii.ecsv", ".fits": "fits", ".fit": "fits", ".fts": "fits", ".csv": "ascii.csv"}

#: Units attached on writing (tables in memory are plain floats).
COLUMN_UNITS = {
    "x": "pix",
    "y": "pix",
    "x_image": "pix",
    "y_image": "pix",
    "a": "pix",
    "b": "pix",
    "theta": "rad",
    "kron_radius": "",
    "ra": "deg",
    "dec": "deg",
    "npix": "pix2",
    "delta_mag": "mag",
    "mag_ref": "mag",
    "mag_pred": "mag",
}
_FLUX_COLUMNS = {"flux", "flux_err", "flux_iso", "peak", "f_ref", "f_ref_err", "f_pred", "delta"}

COLUMN_DESCRIPTIONS = {
    "x": "0-based pixel column of the centroid",
    "y": "0-based pixel row of the centroid",
    "x_image": "1-based FITS/DS9 x (= x + 1)",
    "y_image": "1-based FITS/DS9 y (= y + 1)",
    "a": "rms along the major axis",
    "b": "rms along the minor axis",
    "theta": "position angle of the major axis, counter-clockwise from +x",
    "flux": "Kron (AUTO) flux",
    "flux_err": "1-sigma error of flux",
    "flux_iso": "isophotal flux",
    "kron_radius": "Kron radius in units of a, b",
    "flag": "sep extraction/aperture flags",
}


def _check_dest(path: PathLike, overwrite: bool) -> Path:
    p = Path(path)
    if p.exists() and not overwrite:
        raise AstroSRError(f"{p}: file exists; use --overwrite (overwrite=True) to replace it.")
    if not p.parent.exists():
        raise AstroSRError(f"{p}: folder {p.parent} does not exist.")
    if p.is_dir():
        raise AstroSRError(f"{p}: is a folder; give a file name.")
    return p


def _atomic(p: Path, write, *, overwrite: bool = True) -> Path:
    with atomic_output(p, suffix=p.suffix, overwrite=overwrite) as tmp:  # suffix: astropy picks the format from it
        write(tmp)
    return p


def write_table(
    table,
    path: PathLike,
    *,
    format: Optional[str] = None,
    overwrite: bool = False,
    meta: Optional[dict[str, Any]] = None,
    flux_unit: Optional[str] = None,
) -> Path:
    """Write a catalog with units, 1-based image coordinates and provenance metadata.

    Parameters
    ----------
    table : Table or QTable
        E.g. :func:`.detection.detect_sources` output (0-based x, y).
    path : path
        Destination; format from the suffix (.ecsv, .fits, .csv) unless ``format`` is given.
    format : str, optional
        "ecsv", "fits" or "csv".
    overwrite : bool
        Replace an existing file.
    meta : dict, optional
        Provenance (e.g. input file, threshold) stored in the table metadata (FITS: header keywords).
    flux_unit : str, optional
        Unit of the flux columns (the image's BUNIT).

    Returns
    -------
    Path
    """
    p = _check_dest(path, overwrite)
    fmt = FORMATS.get(p.suffix.lower()) if format is None else FORMATS.get("." + format.lower().lstrip("."))
    if fmt is None:
        raise AstroSRError(f"{p}: unknown catalog format; use a .ecsv, .fits or .csv suffix.")
    from .._version import __version__

    t = Table(table, copy=True)
    t.meta.clear()
    if "x" in t.colnames and "x_image" not in t.colnames:
        t.add_column(np.asarray(t["x"], np.float64) + 1.0, name="x_image", index=t.colnames.index("y") + 1)
        t.add_column(np.asarray(t["y"], np.float64) + 1.0, name="y_image", index=t.colnames.index("x_image") + 1)
    for c in t.colnames:
        unit = COLUMN_UNITS.get(c)
        if unit is None and c in _FLUX_COLUMNS and flux_unit:
            unit = flux_unit
        if unit:
            try:
                t[c].unit = unit
            except Exception:  # unparseable BUNIT: keep the column unitless
                pass
        if c in COLUMN_DESCRIPTIONS:
            t[c].description = COLUMN_DESCRIPTIONS[c]
    prov = {
        "creator": f"napari-astrosr {__version__}",
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "coords": "x, y 0-based pixel centres; x_image, y_image 1-based (FITS/DS9)",
    }
    prov.update(
        {
            str(k): v
            for k, v in (dict(table.meta) if hasattr(table, "meta") else {}).items()
            if isinstance(v, (str, int, float, bool))
        }
    )
    prov.update({str(k): v for k, v in (meta or {}).items()})
    if fmt == "fits":
        # FITS keywords are <= 8 chars: keep long names in HIERARCH cards via plain keys
        t.meta.update({k.upper()[:8] if len(k) <= 8 else f"HIERARCH {k}": _fits_value(v) for k, v in prov.items()})
    elif fmt == "ascii.csv":
        # plain CSV: one header row, no '#' lines, so Table.read(path), pandas and spreadsheets
        # all read it; units and provenance need ECSV or FITS (CSV has no place for them)
        pass
    else:
        t.meta.update(prov)

    def _write(tmp: str) -> None:
        if fmt == "ascii.csv":
            t.write(tmp, format=fmt, overwrite=True)
        else:
            t.write(tmp, format=fmt, overwrite=True)

    return _atomic(p, _write, overwrite=overwrite)


def _fits_value(v):
    if isinstance(v, (bool, int, float)):
        return v
    s = str(v)
    return s if len(s) <= 60 else s[:57] + "..."


def table_to_regions(table, *, wcs=None, sky: bool = False, k: float = 2.5, color: Optional[str] = None):
    """DS9 ellipses (k x a, k x b, theta) as astropy-regions objects (pixel, or sky with a WCS)."""
    from astropy import units as u
    from regions import EllipsePixelRegion, PixCoord

    if sky and (wcs is None or not getattr(wcs, "has_celestial", False)):
        raise AstroSRError("sky regions need a celestial WCS; the image has none (write image-coordinate regions).")
    regs = []
    ids = table["id"] if "id" in table.colnames else np.arange(1, len(table) + 1)
    for i in range(len(table)):
        x, y = float(table["x"][i]), float(table["y"][i])
        w, h = 2 * k * float(table["a"][i]), 2 * k * float(table["b"][i])  # full widths
        ang = np.degrees(float(table["theta"][i])) * u.deg
        r = EllipsePixelRegion(PixCoord(x, y), width=max(w, 1e-3), height=max(h, 1e-3), angle=ang)
        if sky:
            r = r.to_sky(wcs.celestial)
        r.meta["text"] = str(ids[i])
        if color:
            r.visual["color"] = color
        regs.append(r)
    return regs


def write_regions(
    table,
    path: PathLike,
    *,
    wcs=None,
    sky: bool = False,
    overwrite: bool = False,
    k: float = 2.5,
    color: Optional[str] = "green",
) -> Path:
    """Write the sources' k x (a, b, theta) ellipses as a DS9 region file (atomic).

    With ``sky=False`` the file is in DS9 ``image`` coordinates (1-based: astropy-regions
    adds 1 to our 0-based positions); with ``sky=True`` in ``fk5``/``icrs`` via ``wcs``.
    """
    from regions import Regions

    p = _check_dest(path, overwrite)
    regs = Regions(table_to_regions(table, wcs=wcs, sky=sky, k=k, color=color))
    return _atomic(p, lambda tmp: regs.write(tmp, format="ds9", overwrite=True), overwrite=overwrite)


def region_to_mask(region, shape, *, wcs=None) -> np.ndarray:
    """Boolean mask (True inside) of an astropy-regions region on an image of ``shape``.

    Sky regions need a celestial ``wcs``. Pixels are inside when their centre is
    (``mode="center"``). Raises AstroSRError for a region with no pixel on the image.
    """
    from regions import PixelRegion, SkyRegion

    shape = tuple(int(s) for s in shape)
    if isinstance(region, SkyRegion):
        if wcs is None or not getattr(wcs, "has_celestial", False):
            raise AstroSRError("a sky-coordinate region needs an image with a celestial WCS.")
        region = region.to_pixel(wcs.celestial)
    if not isinstance(region, PixelRegion):
        raise AstroSRError(f"cannot use {type(region).__name__} as a region of interest.")
    try:
        m = region.to_mask(mode="center")
        full = m.to_image(shape)
    except Exception as exc:  # e.g. zero-area or degenerate shapes
        raise AstroSRError(f"region {region!r} cannot be rasterised: {exc}") from None
    if full is None or not np.any(full):
        raise AstroSRError("region lies outside the image (or covers no pixel centre).")
    return np.asarray(full, dtype=bool)


def load_regions(path: PathLike) -> list[tuple[str, Any]]:
    """Read a DS9 region file as (name, astropy-regions region) pairs (name: ``text`` or ``roi<N>``)."""
    from regions import Regions

    p = Path(path)
    if not p.is_file():
        raise AstroSRError(f"{p}: region file not found.")
    try:
        regs = Regions.read(str(p), format="ds9")
    except Exception as exc:
        raise AstroSRError(f"{p}: not a readable DS9 region file ({exc}).") from None
    if len(regs) == 0:
        raise AstroSRError(f"{p}: contains no region.")
    return [(str(r.meta.get("text") or f"roi{n + 1}"), r) for n, r in enumerate(regs)]


def read_regions(path: PathLike, *, shape, wcs=None) -> list[tuple[str, np.ndarray]]:
    """Read a DS9 (or other astropy-regions) file as (name, bool mask) ROIs.

    The name is the region's ``text`` if set, else ``roi<N>``. Regions that cannot be used
    (outside the image, sky without WCS) raise AstroSRError naming the region.
    """
    p = Path(path)
    out = []
    for n, (name, r) in enumerate(load_regions(p)):
        try:
            out.append((name, region_to_mask(r, shape, wcs=wcs)))
        except AstroSRError as exc:
            raise AstroSRError(f"{p}: region {n + 1} ({name}): {exc}") from None
    return out

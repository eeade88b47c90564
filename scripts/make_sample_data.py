"""Regenerate the shipped sample data from ../shared/data (run once; outputs are committed).

- hst_galaxy.fits: 256x256 float32 cutout (Cutout2D, WCS updated) of the HST WFC3/IR F105W
  Abell 2744 BCG field (PetroFit docs data).
- decam_stack.fits: 5 registered DECam i-band exposures (sfft test data), central 128x128,
  float32, one image extension per frame (EXTNAME FRAME, EXTVER 1..5), each with its own
  header (FWHM, SWARP_O, ...) and updated TPV WCS; primary header ASRSTACK = T.

Usage: .venv/bin/python scripts/make_sample_data.py [SHARED_DATA_DIR]
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.nddata import Cutout2D
from astropy.wcs import WCS, FITSFixedWarning

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "src" / "napari_astrosr" / "data" / "sample"
DROP = ("CHECKSUM", "DATASUM", "BSCALE", "BZERO", "BLANK", "EXTEND", "NEXTEND")


def _cut(path: Path, size: int) -> tuple[np.ndarray, fits.Header]:
    with fits.open(path) as hdul:
        hdu = hdul[0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(hdu.header)
        ny, nx = hdu.data.shape
        cut = Cutout2D(hdu.data, ((nx - 1) / 2, (ny - 1) / 2), (size, size), wcs=wcs, mode="strict")
        hdr = hdu.header.copy()
    for key in DROP:
        hdr.remove(key, ignore_missing=True, remove_all=True)
    # Replace only the reference pixel: Cutout2D shifts CRPIX and keeps everything else
    # (including TPV PV terms), so the cutout maps to the same sky as the parent pixels.
    new = cut.wcs.to_header(relax=True)
    for key in ("CRPIX1", "CRPIX2"):
        hdr[key] = new[key]
    hdr["NAXIS1"], hdr["NAXIS2"] = size, size
    hdr["ASRCUT"] = (
        f"{path.name}[{cut.slices_original[0].start}:{cut.slices_original[0].stop},"
        f"{cut.slices_original[1].start}:{cut.slices_original[1].stop}]",
        "cutout of (y,x) slices",
    )
    return np.ascontiguousarray(cut.data, dtype=np.float32), hdr


def main(shared: Path) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    data, hdr = _cut(shared / "hst_wfc3ir_f105w_a2744" / "abell_2744_cd_galaxy_f105w.fits.gz", 256)
    fits.PrimaryHDU(data, header=hdr).writeto(OUT / "hst_galaxy.fits", overwrite=True, output_verify="silentfix")

    frames = ["DEC-OBS04a", "DEC-OBS04c", "DEC-OBS04e", "DEC-OBS18a", "DEC-OBS18c"]
    primary = fits.PrimaryHDU()
    primary.header["ASRSTACK"] = (True, "image extensions are frames of one stack")
    primary.header["ORIGIN"] = "napari-astrosr sample data (see PROVENANCE.md)"
    hdus = [primary]
    for i, name in enumerate(frames, start=1):
        d, h = _cut(shared / "stack_decam_i_sfft" / f"{name}.mini.fits", 128)
        h.remove("SIMPLE", ignore_missing=True)
        h["ORIGFILE"] = (f"{name}.mini.fits", "source file (sfft test data)")
        hdu = fits.ImageHDU(d, header=h, name="FRAME", ver=i)
        hdus.append(hdu)
    fits.HDUList(hdus).writeto(OUT / "decam_stack.fits", overwrite=True, output_verify="silentfix")
    for f in sorted(OUT.glob("*.fits")):
        print(f, f.stat().st_size)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO.parent / "shared" / "data")

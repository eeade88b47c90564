"""Print a table of the restore jobs' outputs (sha256 of the pixels, total flux) for diffing two trees.

A refactor of the restore jobs or the FITS I/O must leave every output bit for bit the same. This script
runs each path once on a seeded synthetic star field with a celestial WCS (classical methods: no weights,
seconds on one core) and prints one Markdown row per path: in memory (``restoration.restore`` +
``write_fits``), a dask array (``restore``'s lazy path), the streamed FITS restore
(``restore_fits_tiled``), the cluster batch in memory and tiled (``batch``, an in-process cluster). Only
public import paths are used, so the same file runs against an older tree:

    PYTHONPATH=OLD/src python scripts/restore_jobs_digest.py > old.md
    PYTHONPATH=NEW/src python scripts/restore_jobs_digest.py > new.md
    diff old.md new.md                      # empty: the outputs are identical

The header digest leaves out the version card (``ASRVERS``: a dev build names its commit) and the
batch's ``ASRHASH`` (which hashes the fingerprint, not the pixels); the pixel digest is of the data bytes.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np


def _field(n: int = 192, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:n, :n]
    img = 5.0 + rng.normal(0, 0.5, (n, n))
    for _ in range(40):
        y, x = rng.uniform(0, n, 2)
        img += rng.uniform(50, 2000) * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 1.3**2))
    return img.astype(np.float32)


def _digest(a: np.ndarray) -> str:
    a = np.ascontiguousarray(np.asarray(a, dtype=np.float32))
    return hashlib.sha256(a.tobytes()).hexdigest()[:16]


def _file_row(label: str, path: Path) -> str:
    from astropy.io import fits

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with fits.open(path) as hdul:
            data = np.asarray(hdul[0].data, dtype=np.float32)
            hdr = hdul[0].header.copy()
            ext = [h.name for h in hdul[1:]]
    for key in ("ASRVERS", "ASRHASH"):
        hdr.remove(key, ignore_missing=True)
    hh = hashlib.sha256(hdr.tostring().encode()).hexdigest()[:16]
    return f"| {label} | {data.shape} | {_digest(data)} | {float(np.nansum(data, dtype=np.float64)):.6e} | {hh} | {','.join(ext) or '-'} |"


def main() -> int:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import dask.array as da

    from napari_astrosr.batch import batch, restore_fits_tiled
    from napari_astrosr.core.fits_io import read_fits, write_fits
    from napari_astrosr.core.resample import pixel_wcs
    from napari_astrosr.restoration import restore

    img = _field()
    rows = [
        "| path | shape | sha256(pixels)[:16] | total flux | sha256(header)[:16] | extensions |",
        "|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = tmp / "field.fits"
        wcs = pixel_wcs(img.shape, pixel_scale_arcsec=0.5)
        write_fits(src, img, wcs=wcs)
        rows.append(_file_row("input (write_fits)", src))
        lr = read_fits(src)
        for method, kw in (("lanczos", {}), ("backprojection", {"psf": "gaussian:1.0"})):
            res = restore(lr.data, method=method, scale=2, wcs=lr.wcs, header=lr.header, **kw)
            out = tmp / f"mem_{method}.fits"
            write_fits(
                out,
                res.data,
                header=res.header,
                wcs=res.wcs,
                provenance=dict(method=method, parameters=res.params, inputs=[str(src)]),
                extra_hdus=[res.err_hdu()] if hasattr(res, "err_hdu") else [],
            )
            rows.append(_file_row(f"restore {method} (in memory)", out))
        lazy = restore(da.from_array(lr.data, chunks=(96, 96)), method="lanczos", scale=2).data.compute()
        rows.append(
            f"| restore lanczos (dask array) | {lazy.shape} | {_digest(lazy)} | "
            f"{float(np.nansum(lazy, dtype=np.float64)):.6e} | - | - |"
        )
        tiled = tmp / "tiled_lanczos.fits"
        restore_fits_tiled(src, tiled, method="lanczos", scale=2, chunk=64, scheduler="synchronous")
        rows.append(_file_row("restore_fits_tiled lanczos (chunk 64)", tiled))
        for label, kw in (("batch lanczos (in memory)", {}), ("batch lanczos (tiled, chunk 64)", {"chunk": 64})):
            outdir = tmp / ("batch_tiled" if kw else "batch_mem")
            res = batch([str(src)], outdir, method="lanczos", scale=2, workers=1, processes=False, **kw)
            if not res.ok:
                print(res.table(), file=sys.stderr)
                return 1
            rows.append(_file_row(label, Path(res.rows[0].output)))
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

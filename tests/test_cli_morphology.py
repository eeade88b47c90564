"""`astrosr evaluate --morphology` with the LQ input on its own (coarser) grid."""

import json

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS
from scipy.ndimage import gaussian_filter

from napari_astrosr.cli import main
from napari_astrosr.core.resample import block_sum, scale_wcs


def _wcs(shape, scale_deg=1e-5):
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [10.0, -30.0]
    w.wcs.crpix = [shape[1] / 2 + 0.5, shape[0] / 2 + 0.5]
    w.wcs.cdelt = [-scale_deg, scale_deg]
    return w


def _write(path, data, wcs=None):
    fits.writeto(path, data.astype(np.float32), header=wcs.to_header() if wcs is not None else None)


def test_evaluate_morphology_lq_on_its_own_grid(tmp_path, capsys):
    from core.test_morphology import _galaxies

    gt, _, rs = _galaxies()
    lq = block_sum(gaussian_filter(gt, 2.0), 2)  # 60 x 60: pixels twice as large, same sky
    w = _wcs(gt.shape)
    _write(tmp_path / "gt.fits", gt, w)
    _write(tmp_path / "rs.fits", rs, w)
    _write(tmp_path / "lq.fits", lq, scale_wcs(w, 0.5))
    _write(tmp_path / "lq_nowcs.fits", lq)
    base = [
        "evaluate",
        "--reference",
        str(tmp_path / "gt.fits"),
        "--prediction",
        str(tmp_path / "rs.fits"),
        "--morphology",
        "--no-sersic",
        "--json",
    ]
    # scale from the WCSs
    assert (
        main(
            base
            + [
                "--input",
                str(tmp_path / "lq.fits"),
                "--morph-table",
                str(tmp_path / "m.ecsv"),
                "--morph-plot",
                str(tmp_path / "m.png"),
            ]
        )
        == 0
    )
    m = json.loads(capsys.readouterr().out)["morphology"]
    assert m["lq_scale"] == 2 and m["n_galaxies"] == 6
    assert m["kron_flux"]["scatter_reduction"] > 1 and m["r50"]["scatter_reduction"] > 1
    t = Table.read(tmp_path / "m.ecsv")
    assert len(t) == 6 and "sersic_status_rs" in t.colnames
    assert (tmp_path / "m.png").read_bytes()[:4] == b"\x89PNG"
    # no WCS: from the shapes, or explicit --scale; same numbers
    assert main(base + ["--input", str(tmp_path / "lq_nowcs.fits")]) == 0
    m2 = json.loads(capsys.readouterr().out)["morphology"]
    assert main(base + ["--input", str(tmp_path / "lq_nowcs.fits"), "--scale", "2"]) == 0
    m3 = json.loads(capsys.readouterr().out)["morphology"]
    assert m2["kron_flux"] == m["kron_flux"] == m3["kron_flux"]
    # wrong scale, bad plot name: exit 2, a message, no files
    assert main(base + ["--input", str(tmp_path / "lq_nowcs.fits"), "--scale", "3"]) == 2
    assert "scale" in capsys.readouterr().err
    assert main(base + ["--input", str(tmp_path / "lq.fits"), "--morph-plot", str(tmp_path / "m.jpg")]) == 2
    assert ".png" in capsys.readouterr().err and not (tmp_path / "m.jpg").exists()


def test_evaluate_morphology_rejects_offset_lq_grid(tmp_path, capsys):
    from core.test_morphology import _galaxies

    gt, _, rs = _galaxies()
    lq = block_sum(gt, 2)
    w = _wcs(gt.shape)
    wl = scale_wcs(w, 0.5)
    wl.wcs.crpix = [wl.wcs.crpix[0] + 0.5, wl.wcs.crpix[1]]  # half an LQ pixel off
    _write(tmp_path / "gt.fits", gt, w)
    _write(tmp_path / "rs.fits", rs, w)
    _write(tmp_path / "lq.fits", lq, wl)
    assert (
        main(
            [
                "evaluate",
                "--reference",
                str(tmp_path / "gt.fits"),
                "--prediction",
                str(tmp_path / "rs.fits"),
                "--morphology",
                "--no-sersic",
                "--input",
                str(tmp_path / "lq.fits"),
            ]
        )
        == 2
    )
    assert "offset" in capsys.readouterr().err

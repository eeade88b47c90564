"""``astrosr degrade`` and ``astrosr simulate`` end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import QTable

from napari_astrosr.cli import main
from napari_astrosr.core.fits_io import read_fits

from conftest import shared_file


def test_simulate_then_degrade(tmp_path, capsys):
    img, truth = tmp_path / "sim.fits", tmp_path / "truth.ecsv"
    assert (
        main(
            [
                "simulate",
                "starfield",
                "-o",
                str(img),
                "--size",
                "96",
                "--seed",
                "3",
                "--truth",
                str(truth),
                "--noise",
                "none",
                "--sky",
                "0",
                "--pixel-scale",
                "0.05",
            ]
        )
        == 0
    )
    t = QTable.read(truth)
    hr = read_fits(img, dtype="float64")
    assert hr.data.shape == (96, 96) and len(t) > 0 and {"ra", "dec"} <= set(t.colnames)
    assert hr.data.sum() == pytest.approx(
        float(np.sum(t["flux"].value if hasattr(t["flux"], "value") else t["flux"])), rel=1e-5
    )
    assert hr.header["ASRMETH"] == "simulate-starfield"
    lr = tmp_path / "lr.fits"
    assert main(["degrade", str(img), "-o", str(lr), "--scale", "2", "--psf", "gaussian+airy:1,2", "--seed", "1"]) == 0
    out = read_fits(lr, dtype="float64")
    assert out.data.shape == (48, 48)
    assert out.data.sum() == pytest.approx(hr.data.sum(), rel=1e-5)
    assert out.header["ASRDSCAL"] == 2 and json.loads(out.header["ASRPARAM"])["psf"] == "gaussian+airy:1,2"
    assert out.wcs.wcs.cdelt[1] == pytest.approx(2 * hr.wcs.wcs.cdelt[1]) or out.wcs.pixel_scale_matrix[
        1, 1
    ] == pytest.approx(2 * hr.wcs.pixel_scale_matrix[1, 1])


@pytest.mark.parametrize("kind", ["galaxies", "blank"])
def test_simulate_kinds(tmp_path, kind):
    out = tmp_path / f"{kind}.fits"
    assert main(["simulate", kind, "-o", str(out), "--size", "64", "--seed", "0"]) == 0
    assert fits.getdata(out).shape == (64, 64)


def test_degrade_real_hst_psf_file(tmp_path):
    src = shared_file("hst_hsc_pair_cosmos_A/Cut_HST.fits")
    psf = shared_file("hst_cosmos_acs_f814w_galaxy/147246.0_150.416558_1.998697.sdsspsf.fits")
    out = tmp_path / "lr.fits"
    assert (
        main(
            [
                "degrade",
                str(src),
                "-o",
                str(out),
                "--scale",
                "5",
                "--psf",
                str(psf),
                "--noise",
                "gaussian:0.001",
                "--seed",
                "2",
            ]
        )
        == 0
    )
    lr = read_fits(out, dtype="float64")
    hr = read_fits(src, dtype="float64")
    assert lr.data.shape == (50, 50)
    assert lr.data.sum() == pytest.approx(hr.data.sum(), abs=50 * 0.001 * 5 + 1e-4 * abs(hr.data.sum()))


def test_degrade_errors_exit_2_and_no_output(tmp_path, capsys):
    src = tmp_path / "in.fits"
    fits.PrimaryHDU(np.ones((32, 32), np.float32)).writeto(src)
    out = tmp_path / "out.fits"
    for extra in (
        ["--scale", "0"],
        ["--scale", "-2"],
        ["--scale", "2", "--psf", "blob:1"],
        ["--scale", "2", "--psf", "gaussian:20"],
        ["--scale", "2", "--noise", "gaussian"],
    ):
        assert main(["degrade", str(src), "-o", str(out), *extra]) == 2
        assert not out.exists()
    err = capsys.readouterr().err
    assert "Traceback" not in err and "scale" in err
    # refuses to overwrite, even the input
    assert main(["degrade", str(src), "-o", str(src), "--scale", "2", "--overwrite"]) == 2
    assert fits.getdata(src).shape == (32, 32)
    assert main(["simulate", "blank", "-o", str(tmp_path / "x.fits"), "--size", "2"]) == 2

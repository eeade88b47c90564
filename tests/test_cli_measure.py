"""`astrosr detect` and `astrosr evaluate` end to end (in-process through the real parser)."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

sys.path.insert(0, str(Path(__file__).parent / "core"))
from napari_astrosr.cli import main  # noqa: E402

from _measure_sim import gaussian_field  # noqa: E402
from conftest import shared_file  # noqa: E402


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    img, _, truth = gaussian_field(seed=41, n=12)
    pred = img + np.random.default_rng(0).normal(0, 0.5, img.shape).astype(np.float32)
    fits.writeto(d / "ref.fits", img)
    fits.writeto(d / "pred.fits", pred)
    fits.writeto(d / "half.fits", img[::2, ::2])
    return d, truth


def test_detect_writes_catalog_and_regions(files, capsys):
    d, truth = files
    assert main(["detect", str(d / "ref.fits"), "-o", str(d / "cat.ecsv"), "--regions", str(d / "cat.reg")]) == 0
    t = Table.read(d / "cat.ecsv")
    assert len(t) == len(truth) and "x_image" in t.colnames and t.meta["input"] == "ref.fits"
    assert (d / "cat.reg").read_text().count("ellipse(") == len(truth)
    assert "12 sources" in capsys.readouterr().out
    # existing output without --overwrite: exit 2, the file untouched
    before = (d / "cat.ecsv").read_bytes()
    assert main(["detect", str(d / "ref.fits"), "-o", str(d / "cat.ecsv")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (d / "cat.ecsv").read_bytes() == before
    assert main(["detect", str(d / "ref.fits"), "-o", str(d / "cat.txt")]) == 2


def test_detect_csv_fits_and_empty_field(files, tmp_path, capsys):
    d, _ = files
    assert main(["detect", str(d / "ref.fits"), "-o", str(tmp_path / "c.fits"), "--thresh", "5"]) == 0
    assert main(["detect", str(d / "ref.fits"), "-o", str(tmp_path / "c.csv"), "--minarea", "3"]) == 0
    fits.writeto(tmp_path / "blank.fits", np.zeros((32, 32), np.float32))
    assert main(["detect", str(tmp_path / "blank.fits"), "-o", str(tmp_path / "e.ecsv")]) == 0
    assert len(Table.read(tmp_path / "e.ecsv")) == 0
    assert "no sources" in capsys.readouterr().out


def test_evaluate_json_rois_and_residuals(files, capsys):
    d, truth = files
    reg = d / "rois.reg"
    reg.write_text(
        "# Region file format: DS9\nimage\ncircle(50,50,20) # text={centre}\ncircle(5000,5000,3) # text={outside}\n"
    )
    code = main(
        [
            "evaluate",
            "--reference",
            str(d / "ref.fits"),
            "--prediction",
            str(d / "pred.fits"),
            "--rois",
            str(reg),
            "--json",
            "-o",
            str(d / "res.ecsv"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    obj = json.loads(out)  # exactly one JSON object on stdout
    for k in (
        "psnr",
        "ssim",
        "data_range",
        "flux_error",
        "flux_error_rel_median",
        "n_sources",
        "sharpness",
        "sky_sigma",
        "rois",
    ):
        assert k in obj
    assert obj["n_sources"] == len(truth) and obj["flux_error_rel_median"] < 0.01
    assert obj["rois"][0]["name"] == "centre" and obj["rois"][0]["js"] > 0
    assert obj["rois"][1]["kl"] is None and "outside" in obj["rois"][1]["error"]
    res = Table.read(d / "res.ecsv")
    assert {"f_ref", "f_pred", "delta", "rel_delta", "delta_mag"} <= set(res.colnames) and len(res) == len(truth)


def test_evaluate_table_and_data_range(files, capsys):
    d, _ = files
    assert (
        main(
            [
                "evaluate",
                "--reference",
                str(d / "ref.fits"),
                "--prediction",
                str(d / "pred.fits"),
                "--data-range",
                "1000",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "PSNR" in out and "1000 (given)" in out


def test_evaluate_shape_mismatch_exit_2(files, capsys):
    d, _ = files
    code = main(["evaluate", "--reference", str(d / "ref.fits"), "--prediction", str(d / "half.fits"), "--json"])
    err = capsys.readouterr().err
    assert code == 2 and "resample" in err and "Traceback" not in err


def test_detect_on_real_eso_image(tmp_path, capsys):
    img = shared_file("eso_ntt_sep_catalog/image.fits")
    assert main(["detect", str(img), "-o", str(tmp_path / "eso.ecsv"), "--deblend-cont", "0.05"]) == 0
    assert len(Table.read(tmp_path / "eso.ecsv")) == 65  # SExtractor's count on this image


def test_evaluate_morphology(tmp_path, capsys):

    from test_morphology import _galaxies

    gt, lq, rs = _galaxies()
    for name, a in (("gt", gt), ("lq", lq), ("rs", rs)):
        fits.writeto(tmp_path / f"{name}.fits", a.astype(np.float32))
    args = [
        "evaluate",
        "--reference",
        str(tmp_path / "gt.fits"),
        "--prediction",
        str(tmp_path / "rs.fits"),
        "--morphology",
        "--input",
        str(tmp_path / "lq.fits"),
        "--no-sersic",
        "--json",
        "--morph-table",
        str(tmp_path / "m.ecsv"),
        "--morph-plot",
        str(tmp_path / "m.png"),
    ]
    assert main(args) == 0
    obj = json.loads(capsys.readouterr().out)
    assert obj["morphology"]["n_galaxies"] == 6 and obj["morphology"]["kron_flux"]["scatter_reduction"] > 1
    assert len(Table.read(tmp_path / "m.ecsv")) == 6 and (tmp_path / "m.png").stat().st_size > 1000
    assert main(args[:6] + ["--morphology"]) == 2  # no --input
    assert "--input" in capsys.readouterr().err


def test_detect_on_a_restored_file_counts_minarea_in_input_pixels(tmp_path, capsys):
    """On an `astrosr restore --scale 2` output, detect's default minarea is 5 input pixels' area (20 output
    pixels): with 5 output pixels the restored noise's correlated peaks come out as sources."""
    rng = np.random.default_rng(3)
    fits.writeto(tmp_path / "noise.fits", rng.normal(0.0, 1.0, (96, 96)).astype(np.float32))
    assert main(["restore", str(tmp_path / "noise.fits"), "-o", str(tmp_path / "x2.fits"), "--method", "bicubic"]) == 0
    capsys.readouterr()
    assert main(["detect", str(tmp_path / "x2.fits"), "-o", str(tmp_path / "auto.ecsv")]) == 0
    out = capsys.readouterr().out
    assert "x2 restoration: minarea 20 pixels (the area of 5 input pixels)" in out and "empty-sky apertures" in out
    auto = Table.read(tmp_path / "auto.ecsv")
    assert auto.meta["minarea"] == 20 and auto.meta["kron_min_radius"] == 7 and auto.meta["aperture_noise"] == "empty"
    assert main(["detect", str(tmp_path / "x2.fits"), "-o", str(tmp_path / "five.ecsv"), "--minarea", "5"]) == 0
    assert "minarea 5 pixels, Kron" in capsys.readouterr().out
    five = Table.read(tmp_path / "five.ecsv")
    assert five.meta["minarea"] == 5
    assert main(["detect", str(tmp_path / "noise.fits"), "-o", str(tmp_path / "input.ecsv")]) == 0
    # noise only: the input gives (almost) nothing, 5 output pixels many false sources, 5 input pixels' area few
    n_in = len(Table.read(tmp_path / "input.ecsv"))
    assert len(five) > len(auto) + 10 and len(auto) <= n_in + 3

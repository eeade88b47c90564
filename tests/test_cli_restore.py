"""`astrosr restore` and `astrosr methods` end to end (exit codes, files, provenance)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from astropy.io import fits

from napari_astrosr.cli import main


def _write(tmp_path, data, name="in.fits"):
    from napari_astrosr.core.resample import pixel_wcs

    hdr = pixel_wcs(data.shape[-2:], pixel_scale_arcsec=0.06).to_header()
    hdr["BUNIT"] = "e-/s"
    p = tmp_path / name
    fits.PrimaryHDU(data=data, header=hdr).writeto(p)
    return p


def test_restore_bicubic_writes_scaled_wcs_and_provenance(tmp_path, rng):
    data = rng.random((24, 30)).astype(np.float32) + 1
    src = _write(tmp_path, data)
    out = tmp_path / "out.fits"
    assert main(["restore", str(src), "-o", str(out), "--method", "bicubic", "--scale", "2", "--quiet"]) == 0
    with fits.open(out) as h:
        hdr, res = h[0].header, h[0].data
    assert res.shape == (48, 60)
    assert np.isclose(res.sum(), data.sum(), rtol=1e-5)
    assert hdr["ASRMETH"] == "bicubic" and hdr["BUNIT"] == "e-/s" and hdr["ASRIN1"] == "in.fits"
    assert json.loads(hdr["ASRPARAM"])["scale"] == 2
    assert np.isclose(abs(hdr.get("CDELT2", hdr.get("CD2_2", 0))), 0.03 / 3600)
    # existing output without --overwrite: exit 2, file untouched
    before = out.read_bytes()
    assert main(["restore", str(src), "-o", str(out), "--method", "lanczos", "--quiet"]) == 2
    assert out.read_bytes() == before
    assert main(["restore", str(src), "-o", str(out), "--method", "lanczos", "--quiet", "--overwrite"]) == 0


def test_restore_errors_exit_2_without_output(tmp_path, rng, capsys):
    cube = _write(tmp_path, rng.random((3, 16, 16)).astype(np.float32), "cube.fits")
    img = _write(tmp_path, rng.random((16, 16)).astype(np.float32), "img.fits")
    out = tmp_path / "o.fits"
    assert main(["restore", str(cube), "-o", str(out), "--method", "bicubic"]) == 2
    # restormer x3 has no bundled checkpoint (fisr x2/x4, restormer x1/x2/x4 and pix2wgan x1 do)
    assert main(["restore", str(img), "-o", str(out), "--method", "restormer", "--scale", "3"]) == 2
    err = capsys.readouterr().err
    assert "no bundled weights for restormer x3" in err
    assert main(["restore", str(img), "-o", str(out), "--method", "backprojection"]) == 2
    assert not out.exists()


def test_restore_network_checkpoint_and_flux_exact(tmp_path, rng):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    from napari_astrosr.models.checkpoints import save_checkpoint
    from napari_astrosr.models.registry import build_model, resolve_config

    torch.manual_seed(0)
    cfg = resolve_config("fisr", preset="tiny")
    ck = save_checkpoint(
        tmp_path / "f.pt",
        build_model("fisr", preset=None, scale=2, **cfg),
        name="fisr",
        preset="tiny",
        scale=2,
        config=cfg,
        normalization={"kind": "median_std"},
    )
    src = _write(tmp_path, (rng.random((20, 20)) + 1).astype(np.float32))
    out = tmp_path / "sr.fits"
    assert (
        main(
            [
                "restore",
                str(src),
                "-o",
                str(out),
                "--method",
                "fisr",
                "--model",
                str(ck),
                "--device",
                "cpu",
                "--flux-exact",
                "--psf",
                "gaussian:1.0",
                "--quiet",
            ]
        )
        == 0
    )
    with fits.open(out) as h:
        assert h[0].data.shape == (40, 40) and h[0].header["ASRMODEL"]
    assert (
        main(
            [
                "restore",
                str(src),
                "-o",
                str(out),
                "--method",
                "fisr",
                "--model",
                str(ck),
                "--scale",
                "4",
                "--overwrite",
                "--quiet",
            ]
        )
        == 2
    )


@pytest.mark.slow  # FLOP counting of all presets: ~10 s idle, ~30 s on the loaded shared CPU
def test_methods_json(capsys):
    assert main(["methods", "--json", "--presets"]) == 0
    ms = json.loads(capsys.readouterr().out)
    names = [m["name"] for m in ms]
    assert names[:4] == ["bicubic", "lanczos", "richardson-lucy", "backprojection"]
    rest = {m["name"]: m for m in ms}["restormer"]
    assert rest["presets"]["paper"]["params"] > 2.5e7 and rest["flops"] > 0


def test_restore_keep_sky_option(tmp_path, rng, capsys):
    pytest.importorskip("torch")
    data = (5.0 + rng.normal(0, 1.0, (40, 44))).astype(np.float32)
    data[18:22, 20:24] += 300.0  # one source
    src = _write(tmp_path, data)
    for extra, levels in ((["--keep-sky"], [2.0, 5.0]), (["--keep-sky", "1,3"], [1.0, 3.0])):
        out = tmp_path / f"ks{levels[0]}.fits"
        assert (
            main(["restore", str(src), "-o", str(out), "--method", "restormer", *extra, "--no-projection", "--quiet"])
            == 0
        )
        with fits.open(out) as h:
            assert json.loads(h[0].header["ASRPARAM"])["keep_sky"] == levels
    bad = tmp_path / "bad.fits"
    assert main(["restore", str(src), "-o", str(bad), "--method", "bicubic", "--keep-sky", "--quiet"]) == 2
    assert main(["restore", str(src), "-o", str(bad), "--method", "restormer", "--keep-sky", "9,1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--keep-sky applies to the networks" in err and "LOW < HIGH" in err and not bad.exists()

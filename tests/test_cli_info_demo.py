"""``astrosr --help/--version/info`` exit codes and messages; ``astrosr demo --headless`` output."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from astropy.io import fits

from napari_astrosr import __version__
from napari_astrosr.cli import main
from napari_astrosr.data import sample_path


def test_help_and_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "info" in out and "demo" in out
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and __version__ in capsys.readouterr().out


def test_info_sample(capsys):
    assert main(["info", str(sample_path("hst_galaxy"))]) == 0
    out = capsys.readouterr().out
    assert "(256, 256)" in out and "RA---TAN" in out and "electron / s" in out


def _bad_files(tmp_path):
    garbage = tmp_path / "garbage.fits"
    garbage.write_bytes(os.urandom(4000))
    ok = tmp_path / "ok.fits"
    fits.PrimaryHDU(np.ones((64, 64), "f4")).writeto(ok)
    trunc = tmp_path / "trunc.fits"
    trunc.write_bytes(ok.read_bytes()[:3000])
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    return {"garbage": garbage, "trunc": trunc, "missing": tmp_path / "missing.fits", "folder": tmp_path, "text": text}


@pytest.mark.parametrize("kind", ["garbage", "trunc", "missing", "folder", "text"])
def test_info_bad_input_exit_2_one_line(tmp_path, capsys, kind):
    path = _bad_files(tmp_path)[kind]
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("astrosr info: error:") and len(err.splitlines()) == 1
    assert path.name in err
    assert "Traceback" not in err


def test_info_debug_shows_traceback(tmp_path):
    bad = tmp_path / "garbage.fits"
    bad.write_bytes(b"x" * 3000)
    r = subprocess.run(
        [sys.executable, "-m", "napari_astrosr", "--debug", "info", str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode != 0 and "Traceback" in r.stderr and "garbage.fits" in r.stderr


@pytest.mark.gui
@pytest.mark.slow
def test_demo_headless_writes_outputs(tmp_path):
    """The full demo (--no-validate for time) in a subprocess on the Xvfb display pytest-xvfb provides."""
    if not os.environ.get("DISPLAY"):
        pytest.skip("no X display (pytest-xvfb not active)")
    import json

    out = tmp_path / "demo"
    env = dict(os.environ)
    r = subprocess.run(
        [sys.executable, "-m", "napari_astrosr", "demo", "--headless", "--no-validate", "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.strip().splitlines()
    assert lines[-1] == str(out)
    metrics = json.loads((out / "metrics.json").read_text())
    method = metrics["method"]
    # the summary table names the method and the device actually used
    assert any(line.startswith(f"method  {method} x2 on {metrics['device']}") for line in lines)
    for name in (
        "screenshot.png",
        "canvas.png",
        "residual_zoom.png",
        "info.txt",
        "demo_log.json",
        f"hst_galaxy_{method}_x2.fits",
        f"hst_galaxy_{method}_residual.fits",
        "sources_input.ecsv",
        f"sources_{method}.ecsv",
        "sources_input.reg",
        "source_residuals.ecsv",
        "rois.reg",
    ):
        assert (out / name).stat().st_size > 0, name
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no staging/temp leftovers
    assert "hst_galaxy.fits" in (out / "info.txt").read_text()
    log = json.loads((out / "demo_log.json").read_text())
    assert not [e for e in log if e.get("error")], [e["message"] for e in log if e.get("error")]
    from imageio.v3 import imread

    shot = imread(out / "canvas.png")
    assert shot.ndim == 3 and shot[..., :3].std() > 5  # the image is drawn, not a blank canvas

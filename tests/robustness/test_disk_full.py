"""A full disk: a clear AstroSRError / exit 2 and nothing left behind (no temporary or
half-written file), the existing output and the inputs untouched.

Two ways: a real tiny tmpfs (needs root and mount rights; skipped otherwise) and a patched
``os.replace`` / HDU ``writeto`` raising ``OSError(ENOSPC)``.
"""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import QTable

from napari_astrosr.cli import main
from napari_astrosr.core import catalogs, fits_io
from napari_astrosr.core.fits_io import write_fits
from napari_astrosr.exceptions import AstroSRError


def _enospc(*_a, **_k):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.fixture
def tinyfs(tmp_path):
    """A 16 KiB tmpfs: anything bigger than a few blocks fails with ENOSPC, for real."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


@pytest.fixture
def image(tmp_path):
    p = tmp_path / "in.fits"
    rng = np.random.default_rng(0)
    data = rng.normal(10, 1, (64, 64)).astype(np.float32)
    data[20:23, 30:33] += 500
    fits.PrimaryHDU(data).writeto(p)
    return p


def _listing(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name != "lost+found")


def test_write_fits_on_full_tmpfs(tinyfs):
    data = np.zeros((256, 256), np.float32)  # 256 KiB > 16 KiB
    with pytest.raises(AstroSRError, match=r"big\.fits: could not be written.*(No space left|Not enough space)"):
        write_fits(tinyfs / "big.fits", data)
    assert _listing(tinyfs) == []


def test_write_fits_on_full_tmpfs_keeps_existing_output(tinyfs):
    (tinyfs / "big.fits").write_bytes(b"old result")
    with pytest.raises(AstroSRError, match="big.fits: could not be written"):
        write_fits(tinyfs / "big.fits", np.zeros((256, 256), np.float32), overwrite=True)
    assert (tinyfs / "big.fits").read_bytes() == b"old result"
    assert _listing(tinyfs) == ["big.fits"]


@pytest.mark.parametrize(
    "command",
    [
        ["restore", "{in}", "-o", "{out}/sr.fits", "--method", "bicubic", "--scale", "4", "--quiet"],
        ["degrade", "{in}", "-o", "{out}/lr.fits", "--scale", "1.01"],
        ["simulate", "blank", "-o", "{out}/sim.fits", "--size", "128"],
    ],
)
def test_cli_on_full_tmpfs(tinyfs, image, capsys, command):
    before = image.read_bytes()
    argv = [a.format(**{"in": image, "out": tinyfs}) for a in command]
    code = main(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith(f"astrosr {argv[0]}: error:")]
    assert code == 2 and "Traceback" not in err, err
    assert len(lines) == 1 and "could not be written" in lines[0] and str(tinyfs) in lines[0], err
    assert _listing(tinyfs) == []
    assert image.read_bytes() == before


def test_write_fits_patched_replace(tmp_path, monkeypatch):
    # publication is link(2) without overwrite (exclusive), rename with it: fail both
    monkeypatch.setattr(fits_io.os, "replace", _enospc)
    monkeypatch.setattr(fits_io.os, "link", _enospc)
    with pytest.raises(AstroSRError, match=r"out\.fits: could not be written"):
        write_fits(tmp_path / "out.fits", np.ones((8, 8), np.float32))
    assert _listing(tmp_path) == []


def test_write_fits_patched_writeto_half_written(tmp_path, monkeypatch):
    """writeto dies after writing part of the temporary file: it is removed."""
    real = fits.PrimaryHDU.writeto

    def half(self, name, *a, **k):
        real(self, name, *a, **k)
        with open(name, "r+b") as f:
            f.truncate(100)
        _enospc()

    monkeypatch.setattr(fits.PrimaryHDU, "writeto", half)
    with pytest.raises(AstroSRError, match="No space left"):
        write_fits(tmp_path / "out.fits", np.ones((8, 8), np.float32))
    assert _listing(tmp_path) == []


def _table():
    return QTable(
        {"x": [1.0, 2.0], "y": [3.0, 4.0], "a": [1.0, 1.0], "b": [1.0, 1.0], "theta": [0.0, 0.0], "flux": [10.0, 20.0]}
    )


@pytest.mark.parametrize("suffix", [".ecsv", ".fits", ".csv"])
def test_write_table_patched_replace(tmp_path, monkeypatch, suffix):
    monkeypatch.setattr(catalogs.os, "replace", _enospc)
    monkeypatch.setattr(catalogs.os, "link", _enospc)  # the exclusive publication (no overwrite)
    with pytest.raises(AstroSRError, match=rf"cat\{suffix}.*No space left"):
        catalogs.write_table(_table(), tmp_path / f"cat{suffix}")
    assert _listing(tmp_path) == []


def test_write_regions_patched_replace(tmp_path, monkeypatch):
    monkeypatch.setattr(catalogs.os, "replace", _enospc)
    monkeypatch.setattr(catalogs.os, "link", _enospc)  # the exclusive publication (no overwrite)
    with pytest.raises(AstroSRError, match=r"cat\.reg.*No space left"):
        catalogs.write_regions(_table(), tmp_path / "cat.reg")
    assert _listing(tmp_path) == []


def test_cli_detect_patched_replace(tmp_path, image, monkeypatch, capsys):
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr(os, "replace", _enospc)  # every module's os.replace
    monkeypatch.setattr(os, "link", _enospc)  # the exclusive publication (no overwrite)
    code = main(["detect", str(image), "-o", str(out / "cat.ecsv"), "--regions", str(out / "cat.reg")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    assert "No space left" in err and "cat.ecsv" in err
    assert _listing(out) == []


def test_save_checkpoint_patched_replace(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    from napari_astrosr.models.registry import build_model, resolve_config
    from napari_astrosr.training import checkpoints

    torch.set_num_threads(1)
    cfg = resolve_config("fisr", preset="tiny")
    m = build_model("fisr", preset=None, scale=2, **cfg)
    monkeypatch.setattr(checkpoints.os, "replace", _enospc)
    with pytest.raises(AstroSRError, match=r"m\.pt.*No space left"):
        checkpoints.save_checkpoint(
            tmp_path / "m.pt", m, name="fisr", preset="tiny", scale=2, config=cfg, normalization={"kind": "median_std"}
        )
    assert _listing(tmp_path) == []

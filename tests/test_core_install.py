"""The core install (``pip install napari-astrosr``, no extras): import, CLI, a classical restore.

``scripts/test.sh`` runs this module (``-m core_only``) in ``.venv-core``, a venv with only the
core installed (``ASTROSR_CORE_ONLY=1`` there makes the first test check that no extra crept in).
In the full venv it runs too: the one test that needs torch to be absent hides it from its own
subprocess (``sys.modules["torch"] = None``, so ``import torch`` fails as when not installed).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.core_only

# what the extras bring ([ml], [napari], [batch]); dask itself comes with the core (reproject needs it)
EXTRAS = ("torch", "napari", "qtpy", "distributed")
HIDE_TORCH = "import sys; sys.modules['torch'] = None; "


def _astrosr(*args: str, prelude: str = "", cwd: Path | None = None) -> subprocess.CompletedProcess:
    code = prelude + "import sys; from napari_astrosr.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        timeout=300,
    )


@pytest.fixture
def field(tmp_path: Path) -> Path:
    from astropy.io import fits

    rng = np.random.default_rng(3)
    data = rng.normal(10.0, 1.0, (40, 48)).astype(np.float32)
    data[20, 24] += 500.0
    path = tmp_path / "field.fits"
    fits.writeto(path, data)
    return path


@pytest.mark.skipif(os.environ.get("ASTROSR_CORE_ONLY") != "1", reason="only in the core-only venv")
def test_core_venv_has_no_extras():
    from napari_astrosr._extras import installed

    assert [p for p in EXTRAS if installed(p)] == []


def test_import_loads_no_heavy_package():
    code = f"import sys, napari_astrosr; print([m for m in {EXTRAS + ('dask', 'astropy')!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("args", [("--help",), ("methods",), ("methods", "--json")])
def test_help_and_methods_load_no_numpy(args):
    # issue 25 item 4: the method table is numpy-free and only the named command's parser is built
    code = (
        "import sys\nfrom napari_astrosr.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "print([m for m in ('numpy', 'pydantic', 'astropy', 'torch') if m in sys.modules], file=sys.stderr)"
    )
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True, timeout=120)
    assert out.stderr.strip().splitlines()[-1] == "[]"
    assert ("restore" if args == ("--help",) else "fisr") in out.stdout


def test_core_function_keeps_flux(field: Path):
    import napari_astrosr as asr

    img = asr.read_fits(field)
    up = asr.upsample(img.data, 2, method="bicubic")
    assert up.shape == (80, 96)
    np.testing.assert_allclose(asr.block_sum(up, 2), img.data, rtol=0, atol=1e-8 * np.abs(img.data).max())


def test_help_info_and_methods(field: Path):
    r = _astrosr("--help")
    assert r.returncode == 0 and "restore" in r.stdout
    r = _astrosr("info", str(field))
    assert r.returncode == 0 and "(40, 48)" in r.stdout
    r = _astrosr("methods", "--json")
    assert r.returncode == 0, r.stderr
    nets = {m["name"]: m for m in json.loads(r.stdout) if m["kind"] == "network"}
    assert nets["fisr"]["params"] > 0 and nets["fisr"]["flops"] > 0  # read from the sidecar, no torch needed


def test_classical_restore_keeps_flux(field: Path, tmp_path: Path):
    from astropy.io import fits

    out = tmp_path / "x2.fits"
    r = _astrosr("restore", str(field), "-o", str(out), "--method", "bicubic", "--scale", "2")
    assert r.returncode == 0, r.stderr
    a, b = fits.getdata(field), fits.getdata(out)
    assert b.shape == (80, 96)
    assert abs(float(b.sum(dtype=np.float64)) - float(a.sum(dtype=np.float64))) < 1e-6 * float(np.abs(a).sum())


def test_network_without_torch_says_which_extra(field: Path, tmp_path: Path):
    out = tmp_path / "net.fits"
    before = field.read_bytes()
    r = _astrosr("restore", str(field), "-o", str(out), "--method", "fisr", "--scale", "2", prelude=HIDE_TORCH)
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1].split("\r")[-1].strip()  # after the progress bar's carriage returns
    assert last.startswith("astrosr restore: error:") and "install napari-astrosr[ml]" in last
    assert "Traceback" not in r.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == [field]
    assert field.read_bytes() == before


def test_require_names_the_extra(monkeypatch):
    from napari_astrosr._extras import MissingExtraError, require
    from napari_astrosr.exceptions import AstroSRError

    require("numpy")  # installed: nothing happens
    monkeypatch.setitem(sys.modules, "torch", None)  # torch absent, as in the core install
    with pytest.raises(MissingExtraError, match=r"^training needs torch, .* install napari-astrosr\[ml\]") as exc:
        require("torch", what="training")
    assert isinstance(exc.value, AstroSRError) and isinstance(exc.value, ImportError)
    assert "\n" not in str(exc.value)

"""Every CLI command on bad input: exit code 2, one error line naming the file, no traceback,
no partial output, inputs byte-identical. In-process (``cli.main``) plus a few subprocesses."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from napari_astrosr.cli import main

sys.path.insert(0, str(Path(__file__).parent))
from _generate import absurd_naxis, image_file  # noqa: E402

ASTROSR = [sys.executable, "-m", "napari_astrosr"]


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "-"


def _star_image(shape=(64, 64), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    img = rng.normal(10.0, 1.0, shape)
    for _ in range(8):
        y, x = rng.uniform(5, shape[0] - 5), rng.uniform(5, shape[1] - 5)
        img += rng.uniform(200, 2000) * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 1.5**2))
    return img.astype(np.float32)


@pytest.fixture
def files(tmp_path):
    """good.fits plus bad inputs of each kind; an empty output folder."""
    d = tmp_path / "in"
    d.mkdir()
    good = d / "good.fits"
    fits.PrimaryHDU(_star_image()).writeto(good)
    raw = good.read_bytes()
    bad = {
        "truncated": (d / "truncated.fits", raw[: 2880 + 1000]),
        "garbage": (d / "garbage.fits", np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes()),
        "absurd": (d / "absurd.fits", absurd_naxis(np.random.default_rng(2), gz=False).data),
        "table": (d / "table.fits", None),
    }
    for name, (p, data) in bad.items():
        if data is not None:
            p.write_bytes(data)
    fits.HDUList(
        [fits.PrimaryHDU(), fits.BinTableHDU.from_columns([fits.Column("a", "E", array=np.ones(3, "f4"))])]
    ).writeto(bad["table"][0])
    paths = {k: v[0] for k, v in bad.items()}
    paths["missing"] = d / "missing.fits"
    paths["folder"] = d / "folder.fits"
    paths["folder"].mkdir()
    out = tmp_path / "out"
    out.mkdir()
    return dict(good=good, bad=paths, out=out, dir=d)


# {bad}: the bad input; {good}: a valid image; {out}: the output folder
COMMANDS = {
    "info": ["info", "{bad}"],
    "detect": ["detect", "{bad}", "-o", "{out}/cat.ecsv", "--regions", "{out}/cat.reg"],
    "evaluate-pred": ["evaluate", "--reference", "{good}", "--prediction", "{bad}", "-o", "{out}/res.ecsv"],
    "evaluate-ref": ["evaluate", "--reference", "{bad}", "--prediction", "{good}", "--json"],
    "degrade": ["degrade", "{bad}", "-o", "{out}/lr.fits", "--scale", "2", "--noise", "gaussian:1", "--seed", "1"],
    "restore": ["restore", "{bad}", "-o", "{out}/sr.fits", "--method", "bicubic", "--quiet"],
    "coadd": ["coadd", "{good}", "{bad}", "-o", "{out}/co.fits", "--method", "ivar"],
}


def _run(argv, capsys):
    code = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def _fill(argv, **kw):
    return [a.format(**{k: str(v) for k, v in kw.items()}) for a in argv]


def _assert_clear_error(code, err, name, cmd):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith(f"astrosr {cmd}: error: ")]
    assert code == 2, f"exit {code}: {err}"
    assert "Traceback" not in err, err
    assert len(errors) == 1, err
    assert name in errors[0], f"message does not name {name}: {errors[0]}"


@pytest.mark.parametrize("kind", ["truncated", "garbage", "absurd", "table", "missing", "folder"])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_bad_input_exit_2(files, capsys, command, kind):
    if command == "info" and kind == "table":
        pytest.skip("info describes any FITS file, tables included (exit 0 is right)")
    bad = files["bad"][kind]
    before = {p: _sha(p) for p in list(files["dir"].iterdir())}
    argv = _fill(COMMANDS[command], bad=bad, good=files["good"], out=files["out"])
    code, _, err = _run(argv, capsys)
    _assert_clear_error(code, err, bad.name, argv[0])
    assert list(files["out"].iterdir()) == [], "partial output left"
    assert {p: _sha(p) for p in files["dir"].iterdir()} == before, "an input was modified"


@pytest.mark.parametrize("command", ["detect", "degrade", "restore", "evaluate-pred", "info"])
@pytest.mark.parametrize("shape", [(1, 1), (1, 40), (40, 1), "nan"])
def test_degenerate_images_clear_or_ok(files, capsys, command, shape):
    """1x1, 1xN, Nx1 and all-NaN images: the command works or says why (exit 2), never crashes."""
    p = files["dir"] / "odd.fits"
    data = (
        np.full((16, 16), np.nan, np.float32)
        if shape == "nan"
        else np.random.default_rng(0).normal(5, 1, shape).astype(np.float32)
    )
    p.write_bytes(image_file(data))
    digest = _sha(p)
    argv = _fill(COMMANDS[command], bad=p, good=p, out=files["out"])
    code, _, err = _run(argv, capsys)
    assert code in (0, 2), err
    if code == 2:
        # evaluate names its inputs by their option (reference/prediction) - fine, it is the same file
        name = p.name if command != "evaluate-pred" or p.name in err else "reference"
        _assert_clear_error(code, err, name, argv[0])
        assert list(files["out"].iterdir()) == [], "partial output left"
    assert _sha(p) == digest


@pytest.mark.parametrize("command", ["detect", "degrade", "restore", "coadd"])
def test_output_folder_missing(files, capsys, command):
    argv = _fill(COMMANDS[command], bad=files["good"], good=files["good"], out=files["out"] / "nope")
    code, _, err = _run(argv, capsys)
    _assert_clear_error(code, err, "nope", argv[0])
    assert not (files["out"] / "nope").exists()


@pytest.mark.parametrize("command", ["detect", "degrade", "restore", "coadd"])
def test_existing_output_kept_without_overwrite(files, capsys, command):
    argv = _fill(COMMANDS[command], bad=files["good"], good=files["good"], out=files["out"])
    target = Path(argv[argv.index("-o") + 1])
    target.write_bytes(b"precious")
    code, _, err = _run(argv, capsys)
    _assert_clear_error(code, err, target.name, argv[0])
    assert target.read_bytes() == b"precious"
    assert sorted(p.name for p in files["out"].iterdir()) == [target.name]


@pytest.mark.parametrize("command", ["degrade", "restore"])
def test_output_is_input_refused_even_with_overwrite(files, capsys, command):
    good = files["good"]
    digest = _sha(good)
    argv = _fill(COMMANDS[command], bad=good, good=good, out=files["out"])
    argv[argv.index("-o") + 1] = str(good)
    code, _, err = _run(argv + ["--overwrite"], capsys)
    _assert_clear_error(code, err, good.name, argv[0])
    assert _sha(good) == digest
    assert sorted(p.name for p in files["dir"].iterdir() if p.name.startswith(".")) == []


def test_simulate_bad_output(files, capsys):
    code, _, err = _run(["simulate", "starfield", "-o", files["out"] / "no" / "x.fits"], capsys)
    _assert_clear_error(code, err, "x.fits", "simulate")


@pytest.mark.parametrize("content", ["missing", "folder", "not a mapping", "unknown_key: 1\n", ": : :\n\t["])
def test_train_bad_config(files, capsys, content):
    p = files["dir"] / "cfg.yaml"
    if content == "folder":
        p.mkdir()
    elif content != "missing":
        p.write_text(content)
    code, _, err = _run(["train", p, "--out", files["out"] / "run"], capsys)
    _assert_clear_error(code, err, "cfg.yaml", "train")
    assert not any(files["out"].rglob("*.pt"))


@pytest.mark.parametrize("argv_kind", [("info", "truncated"), ("restore", "garbage")])
def test_subprocess_exit_2_no_traceback(files, argv_kind):
    command, kind = argv_kind
    bad = files["bad"][kind]
    argv = _fill(COMMANDS[command], bad=bad, good=files["good"], out=files["out"])
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    r = subprocess.run(ASTROSR + argv, capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and bad.name in lines[0] and lines[0].startswith(f"astrosr {command}: error:"), r.stderr
    assert list(files["out"].iterdir()) == []

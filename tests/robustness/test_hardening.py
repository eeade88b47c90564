"""Issue 22: inputs never modified, exclusive atomic outputs, clear errors instead of
tracebacks, bounded configs, degenerate WCS, interruptible Richardson-Lucy, stale temporaries."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _fuzz import _BAD_CARDS, fits_bytes, star_image, wcs_cards  # noqa: E402

from napari_astrosr.cli import main  # noqa: E402
from napari_astrosr.core.atomic import atomic_output, remove_stale_temporaries  # noqa: E402
from napari_astrosr.exceptions import AstroSRError, StoppedError  # noqa: E402

from _generate import card  # noqa: E402


def _sha(p):
    return hashlib.sha256(Path(p).read_bytes()).hexdigest()


@pytest.fixture
def image(tmp_path):
    p = tmp_path / "in.fits"
    p.write_bytes(fits_bytes(star_image(np.random.default_rng(0)), wcs_cards()))
    return p


def _one_error(capsys, *names):
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 1 and "Traceback" not in err, err
    for n in names:
        assert n in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize(
    "argv",
    [
        ["detect", "{in}", "-o", "{in}", "--overwrite"],
        ["detect", "{in}", "-o", "{d}/c.ecsv", "--regions", "{d}/./in.fits", "--overwrite"],
        ["restore", "{in}", "-o", "{link}", "--method", "bicubic", "--overwrite", "--quiet"],
        ["degrade", "{in}", "-o", "{link}", "--scale", "2", "--overwrite"],
        ["evaluate", "--reference", "{in}", "--prediction", "{in}", "-o", "{in}", "--overwrite"],
    ],
)
def test_output_that_is_an_input_is_refused_even_with_overwrite(tmp_path, image, capsys, argv):
    link = tmp_path / "link.fits"
    os.link(image, link)  # same inode, another name
    before = _sha(image)
    code = main([a.format(**{"in": str(image), "d": str(tmp_path), "link": str(link)}) for a in argv])
    assert code == 2
    assert "is an input file" in _one_error(capsys)
    assert _sha(image) == before
    assert not (tmp_path / "c.ecsv").exists()


def test_two_writers_without_overwrite_exactly_one_wins(tmp_path):
    out = tmp_path / "o.txt"
    gate = threading.Barrier(2)
    results = []

    def write(tag):
        try:
            with atomic_output(out, overwrite=False) as tmp:
                Path(tmp).write_text(tag)
                gate.wait()  # both have written their temporary file before either publishes
            results.append(tag)
        except AstroSRError as exc:
            results.append(f"refused: {exc}")

    ts = [threading.Thread(target=write, args=(t,)) for t in ("a", "b")]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    winners = [r for r in results if not r.startswith("refused")]
    assert len(winners) == 1 and out.read_text() == winners[0]
    assert "already exists" in [r for r in results if r.startswith("refused")][0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.txt"]  # no temporary left


def test_long_and_odd_names(tmp_path, image, capsys):
    code = main(["restore", str(image), "-o", str(tmp_path / ("x" * 300 + ".fits")), "--method", "bicubic", "--quiet"])
    assert code == 2 and "limit is 255" in _one_error(capsys)
    odd = tmp_path / "in\x01\x1b\u00e9\u4e2d.fits"
    shutil.copy(image, odd)
    assert main(["restore", str(odd), "-o", str(tmp_path / "o.fits"), "--method", "bicubic", "--quiet"]) == 0
    from napari_astrosr.core.fits_io import read_fits

    assert read_fits(tmp_path / "o.fits").header["ASRIN1"].isascii()


@pytest.mark.filterwarnings("default::napari_astrosr.exceptions.AstroSRWarning")  # bad headers warn more than once
def test_unwritable_header_cards_are_dropped_with_a_warning(tmp_path, capsys):
    rng = np.random.default_rng(1)
    p = tmp_path / "h.fits"
    p.write_bytes(fits_bytes(star_image(rng), wcs_cards() + [f(rng) for f in _BAD_CARDS[:9]]))
    from napari_astrosr.exceptions import AstroSRWarning

    with pytest.warns(AstroSRWarning, match=r"ignored header card\(s\)"):
        assert main(["restore", str(p), "-o", str(tmp_path / "o.fits"), "--method", "bicubic", "--quiet"]) == 0
    assert "Traceback" not in capsys.readouterr().err
    from napari_astrosr.core.fits_io import read_fits

    out = read_fits(tmp_path / "o.fits")
    assert out.wcs is not None  # the good WCS survives the bad cards next to it


@pytest.mark.filterwarnings("default::napari_astrosr.exceptions.AstroSRWarning")  # bad headers warn more than once
@pytest.mark.parametrize(
    "extra,why",
    [
        ([card("WCSAXES", 100000)] + wcs_cards(), "WCSAXES"),
        (wcs_cards(cd=("0", "0", "0", "0")), ""),
        (wcs_cards(cd=("1E300", "0", "0", "1E300")), ""),
        (wcs_cards(crval=("1E999", "20")), "CRVAL1"),
        (wcs_cards(crpix=("1E15", "1E15")), "CRPIX"),
        (wcs_cards(extra=[card("RADESYS", "BOGUS")]), "RADESYS"),
        (wcs_cards(ct=("RA---TAN-SIP", "DEC--TAN-SIP"), extra=[card("A_ORDER", 100000)]), "A_ORDER"),
    ],
)
def test_degenerate_wcs_falls_back_to_pixels(tmp_path, capsys, extra, why):
    p = tmp_path / "w.fits"
    p.write_bytes(fits_bytes(star_image(np.random.default_rng(2)), extra))
    from napari_astrosr.exceptions import WCSWarning

    t0 = time.perf_counter()
    with pytest.warns(WCSWarning, match=f"unusable.*{why}.*pixel coordinates"):
        code = main(
            ["detect", str(p), "-o", str(tmp_path / "c.ecsv"), "--regions", str(tmp_path / "c.reg"), "--sky-regions"]
        )
    assert time.perf_counter() - t0 < 10
    err = capsys.readouterr().err
    assert code == 0 and "Traceback" not in err
    assert "regions written in image pixel coordinates" in err
    assert "image" in (tmp_path / "c.reg").read_text()


def test_a_good_wcs_is_kept(image):
    from napari_astrosr.core.fits_io import read_fits

    assert read_fits(image).wcs is not None


def test_evaluate_near_float32_max(tmp_path, capsys):
    a = np.full((48, 48), 3.0e38, ">f4")
    a[10:20, 10:20] = 3.4e38
    b = a.copy()
    b[30:40, 30:40] = -3.3e38
    (tmp_path / "a.fits").write_bytes(fits_bytes(a))
    (tmp_path / "b.fits").write_bytes(fits_bytes(b))
    code = main(
        ["evaluate", "--reference", str(tmp_path / "a.fits"), "--prediction", str(tmp_path / "b.fits"), "--json"]
    )
    assert code == 0, capsys.readouterr().err
    res = json.loads(capsys.readouterr().out)
    # float64: squared errors of (3.4e38 - -3.3e38) do not overflow to inf
    assert res["data_range"] > 3e37 and res["psnr"] is not None and np.isfinite(res["psnr"])


def test_model_budget_numbers_in_message():
    from napari_astrosr.models.checkpoints import check_model_budget
    from napari_astrosr.models.registry import resolve_config

    small = check_model_budget("fisr", resolve_config("fisr", preset="tiny"), scale=2, where="x")
    assert 0 < small["params"] < 1e6 and small["activation_bytes"] > 0
    with pytest.raises(AstroSRError, match=r"x: this pix2wgan config has [\d,]+ parameters .*limit is 200,000,000"):
        check_model_budget("pix2wgan", resolve_config("pix2wgan", preset="tiny", ngf=3000), scale=1, where="x")
    t0 = time.perf_counter()
    for bad in ({"dim": 200000}, {"dim": -8}, {"num_blocks": [10_000_000] * 4}, {"heads": list(range(100))}):
        with pytest.raises(AstroSRError, match="x: model config"):
            check_model_budget("fisr", {**resolve_config("fisr", preset="tiny"), **bad}, scale=2, where="x")
    assert time.perf_counter() - t0 < 5  # refused before anything is built


@pytest.mark.parametrize(
    "text,match",
    [
        ("name: " + "[" * 100000, "nested too deeply"),
        ("name: t\nrun:\n  steps: " + "9" * 5000 + "\n", "digits"),
        ("a: 1\n" * 300000, "at most 1,000,000 bytes"),
    ],
)
def test_yaml_bounds(tmp_path, capsys, text, match):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    assert main(["train", str(p), "--out", str(tmp_path / "run")]) == 2
    assert match in _one_error(capsys, "c.yaml")
    assert not (tmp_path / "run").exists()


def test_refused_training_leaves_nothing(tmp_path, capsys):
    import yaml

    sys.path.insert(0, str(Path(__file__).parents[1] / "training"))
    from test_loop import _cfg

    d = _cfg().model_dump(mode="json")
    d["data"]["sources"] = [{"kind": "degrade", "files": ["no_such_file.fits"]}]
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(d))
    assert main(["train", str(p), "--out", str(tmp_path / "a" / "run")]) == 2
    _one_error(capsys, "no_such_file.fits")
    assert sorted(x.name for x in tmp_path.iterdir()) == ["c.yaml"]  # no run folder, config.yaml or lock


def test_corrupt_resume_state_is_a_clear_error(tmp_path, capsys):
    import yaml

    sys.path.insert(0, str(Path(__file__).parents[1] / "training"))
    from test_loop import _cfg

    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(_cfg(run={"steps": 2, "val_images": 1}).model_dump(mode="json")))
    out = tmp_path / "run"
    assert main(["train", str(p), "--out", str(out), "--quiet"]) == 0
    (out / "resume.pt").write_bytes(b"not a torch file")
    assert main(["train", str(p), "--out", str(out), "--resume", "--steps", "4", "--quiet"]) == 2
    assert "cannot resume" in _one_error(capsys, "resume.pt")
    assert not (out / "train.lock").exists()


def test_richardson_lucy_own_loop_matches_skimage_and_stops():
    from skimage.restoration import richardson_lucy as sk_rl

    from napari_astrosr.core.classical import _rl_iterations
    from napari_astrosr.progress import StopFlag

    rng = np.random.default_rng(3)
    z = rng.random((60, 50))
    yy, xx = np.mgrid[-4:5, -4:5]
    k = np.exp(-(xx**2 + yy**2) / 4.0)
    k /= k.sum()
    np.testing.assert_allclose(
        _rl_iterations(z, k, 10), sk_rl(z, k, num_iter=10, clip=False, filter_epsilon=1e-12), rtol=1e-10, atol=1e-12
    )
    stop = StopFlag()
    stop.set()
    with pytest.raises(StoppedError, match="after 0 of 10"):
        _rl_iterations(z, k, 10, stop)


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path):
    dead = tmp_path / ".astrosr-999999999-abc.tmp"
    live = tmp_path / f".astrosr-{os.getpid()}-abc.tmp"
    other = tmp_path / "keep.fits"
    for p in (dead, live, other):
        p.write_bytes(b"x")
    assert remove_stale_temporaries(tmp_path) == [dead]
    assert live.exists() and other.exists() and not dead.exists()


@pytest.mark.slow
@pytest.mark.parametrize("sig,code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_signal_ends_richardson_lucy_restore_quickly(tmp_path, sig, code):
    import signal
    import subprocess

    img = tmp_path / "big.fits"
    img.write_bytes(fits_bytes(star_image(np.random.default_rng(4), 900)))
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        PYTHONPATH=str(Path(__file__).parents[2] / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "napari_astrosr",
            "restore",
            str(img),
            "-o",
            str(tmp_path / "o.fits"),
            "--method",
            "richardson-lucy",
            "--psf",
            "gaussian:1.5",
            "--iterations",
            "5000",
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    buf = ""
    while "richardson-lucy" not in buf:  # started: its progress bar shows
        ch = proc.stderr.read(1)
        if not ch:  # it ended before starting: fail with what it said instead of spinning on EOF
            proc.wait(timeout=30)
            pytest.fail(f"restore ended before its progress bar (rc {proc.returncode}): {buf}")
        buf += ch
    time.sleep(1.0)
    t = time.time()
    proc.send_signal(getattr(signal, sig))
    rest = proc.communicate(timeout=30)[1]
    assert proc.returncode == code and time.time() - t < 2.5
    assert "Traceback" not in buf + rest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.fits"]

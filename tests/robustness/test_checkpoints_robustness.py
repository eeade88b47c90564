"""Hostile and broken checkpoints: a clear AstroSRError, and a pickled object is never run."""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

torch = pytest.importorskip("torch")

from napari_astrosr.cli import main  # noqa: E402
from napari_astrosr.exceptions import AstroSRError  # noqa: E402
from napari_astrosr.models.checkpoints import load_checkpoint, save_checkpoint, sidecar_path  # noqa: E402
from napari_astrosr.models.registry import build_model, resolve_config  # noqa: E402

torch.set_num_threads(1)


def _save(path: Path, name="fisr", scale=2):
    torch.manual_seed(0)
    cfg = resolve_config(name, preset="tiny")
    m = build_model(name, preset=None, scale=scale, **cfg)
    return save_checkpoint(
        path, m, name=name, preset="tiny", scale=scale, config=cfg, normalization={"kind": "median_std"}, step=1
    )


def _edit_sidecar(pt: Path, **changes):
    side = sidecar_path(pt)
    meta = json.loads(side.read_text())
    meta.update(changes)
    side.write_text(json.dumps(meta))


@pytest.fixture
def ckpt(tmp_path):
    return _save(tmp_path / "fisr_x2.pt")


class _Payload:
    """Unpickling this runs Path.touch(marker): proof that arbitrary code would run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("how", ["torch.save", "raw pickle"])
def test_pickled_object_is_not_unpickled(tmp_path, ckpt, how):
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.pt"
    if how == "torch.save":
        torch.save({"model": {"w": _Payload(marker)}, "step": 0}, evil)
    else:
        evil.write_bytes(pickle.dumps({"model": _Payload(marker)}))
    sidecar_path(evil).write_text(sidecar_path(ckpt).read_text())
    with pytest.raises(AstroSRError, match=r"evil\.pt.*weights-only"):
        load_checkpoint(evil)
    assert not marker.exists(), "the pickled object was executed"


def test_other_architecture_refused_by_name(tmp_path):
    p = _save(tmp_path / "restormer.pt", name="restormer")
    with pytest.raises(AstroSRError, match=r"restormer\.pt: is a restormer checkpoint, not fisr"):
        load_checkpoint(p, expect_name="fisr")


def test_sidecar_lies_about_architecture(tmp_path):
    p = _save(tmp_path / "liar.pt", name="restormer")
    fisr_cfg = resolve_config("fisr", preset="tiny")
    _edit_sidecar(p, architecture="fisr", config=fisr_cfg)
    with pytest.raises(AstroSRError, match=r"liar\.pt: weights do not fit the fisr config"):
        load_checkpoint(p)


def test_sidecar_lies_about_scale(tmp_path, ckpt):
    _edit_sidecar(ckpt, scale=4)
    with pytest.raises(AstroSRError, match=r"fisr_x2\.pt"):
        load_checkpoint(ckpt)
    with pytest.raises(AstroSRError, match=r"trained for x4, not x2"):
        load_checkpoint(ckpt, expect_scale=2)


@pytest.mark.parametrize(
    "field,value",
    [
        ("scale", "two"),
        ("scale", None),
        ("scale", [2]),
        ("config", "not a dict"),
        ("config", {"bogus": 1}),
        ("architecture", 3),
        ("normalization", "zscore"),
        ("format_version", "1"),
    ],
)
def test_sidecar_wrong_types(ckpt, field, value):
    _edit_sidecar(ckpt, **{field: value})
    with pytest.raises(AstroSRError, match=r"fisr_x2\.(pt|json)"):
        load_checkpoint(ckpt)


@pytest.mark.parametrize("content", [b"", b"{not json", b"[1, 2]", b"null"])
def test_sidecar_garbage(ckpt, content):
    sidecar_path(ckpt).write_bytes(content)
    with pytest.raises(AstroSRError, match=r"fisr_x2\.json"):
        load_checkpoint(ckpt)


def test_sidecar_missing(ckpt):
    sidecar_path(ckpt).unlink()
    with pytest.raises(AstroSRError, match=r"fisr_x2\.pt: no sidecar"):
        load_checkpoint(ckpt)


@pytest.mark.parametrize("frac", [0.0, 0.1, 0.5, 0.99])
def test_truncated_pt(ckpt, frac):
    raw = ckpt.read_bytes()
    ckpt.write_bytes(raw[: int(len(raw) * frac)])
    with pytest.raises(AstroSRError, match=r"fisr_x2\.pt"):
        load_checkpoint(ckpt)


def test_random_bytes_and_folder(tmp_path, ckpt):
    ckpt.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(AstroSRError, match=r"fisr_x2\.pt"):
        load_checkpoint(ckpt)
    d = tmp_path / "dir.pt"
    d.mkdir()
    with pytest.raises(AstroSRError, match=r"dir\.pt"):
        load_checkpoint(d)


@pytest.mark.parametrize(
    "payload",
    [
        {"model": {"head.weight": 3}},
        {"model": [1, 2]},
        {"weights": {}},
        [1, 2, 3],
        {"model": {}},
    ],
)
def test_payload_of_wrong_shape(ckpt, payload):
    torch.save(payload, ckpt)
    with pytest.raises(AstroSRError, match=r"fisr_x2\.pt"):
        load_checkpoint(ckpt)


def test_zip_with_tampered_data(ckpt):
    """A .pt whose tensor storage was cut inside the zip: refused, not half-loaded."""
    with zipfile.ZipFile(ckpt) as z:
        items = [(i, z.read(i.filename)) for i in z.infolist()]
    with zipfile.ZipFile(ckpt, "w") as z:
        for info, data in items:
            z.writestr(info, data[: len(data) // 2] if "/data/" in info.filename else data)
    with pytest.raises(AstroSRError, match=r"fisr_x2\.pt"):
        load_checkpoint(ckpt)


@pytest.mark.parametrize("breakage", ["truncated", "evil", "other_arch", "scale"])
def test_cli_restore_bad_model_exit_2(tmp_path, capsys, breakage):
    img = tmp_path / "img.fits"
    fits.PrimaryHDU(np.random.default_rng(0).random((16, 16)).astype(np.float32)).writeto(img)
    pt = _save(tmp_path / "model.pt", name="restormer" if breakage == "other_arch" else "fisr")
    if breakage == "truncated":
        pt.write_bytes(pt.read_bytes()[:500])
    elif breakage == "evil":
        torch.save({"model": _Payload(tmp_path / "PWNED")}, pt)
    elif breakage == "scale":
        _edit_sidecar(pt, scale=4)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code = main(
        [
            "restore",
            str(img),
            "-o",
            str(out_dir / "sr.fits"),
            "--method",
            "fisr",
            "--scale",
            "2",
            "--model",
            str(pt),
            "--quiet",
            "--device",
            "cpu",
        ]
    )
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and "Traceback" not in err, err
    assert len(lines) == 1 and "model.pt" in lines[0], err
    assert list(out_dir.iterdir()) == []
    assert not (tmp_path / "PWNED").exists()

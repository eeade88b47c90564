"""Checkpoint save/load round trip and clear errors."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from napari_astrosr.exceptions import AstroSRError  # noqa: E402
from napari_astrosr.models.checkpoints import (  # noqa: E402
    bundled_checkpoint,
    file_sha256,
    load_checkpoint,
    save_checkpoint,
    sidecar_path,
)
from napari_astrosr.models.registry import build_model, resolve_config  # noqa: E402

torch.set_num_threads(1)


def _save(tmp_path, name="restormer", scale=2):
    torch.manual_seed(1)
    cfg = resolve_config(name, preset="tiny")
    m = build_model(name, preset=None, scale=scale, **cfg)
    p = save_checkpoint(
        tmp_path / f"{name}.pt",
        m,
        name=name,
        preset="tiny",
        scale=scale,
        config=cfg,
        normalization={"kind": "median_std"},
        step=5,
        extra={"data": "synthetic"},
    )
    return m, p


def test_round_trip_same_outputs(tmp_path):
    m, p = _save(tmp_path, "fisr")
    m2, meta = load_checkpoint(p, expect_name="fisr", expect_scale=2)
    x = torch.randn(1, 1, 16, 16)
    f = torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(m.eval()(x, f), m2(x, f))
    assert meta["sha256"] == file_sha256(p)
    assert meta["normalization"] == {"kind": "median_std"} and meta["step"] == 5
    assert json.loads(sidecar_path(p).read_text())["architecture"] == "fisr"


def test_wrong_architecture_scale_corrupt_missing(tmp_path):
    _, p = _save(tmp_path, "restormer", scale=2)
    with pytest.raises(AstroSRError, match="restormer checkpoint, not fisr"):
        load_checkpoint(p, expect_name="fisr")
    with pytest.raises(AstroSRError, match="trained for x2, not x4"):
        load_checkpoint(p, expect_scale=4)
    p.write_bytes(b"garbage" * 10)
    with pytest.raises(AstroSRError, match="could not be read"):
        load_checkpoint(p)
    with pytest.raises(AstroSRError, match="not found"):
        load_checkpoint(tmp_path / "none.pt")
    sidecar_path(p).unlink()
    with pytest.raises(AstroSRError, match="sidecar"):
        load_checkpoint(p)


def test_newer_format_refused_and_config_mismatch(tmp_path):
    _, p = _save(tmp_path)
    side = sidecar_path(p)
    meta = json.loads(side.read_text())
    meta["config"]["dim"] = 16  # weights were for dim 8
    side.write_text(json.dumps(meta))
    with pytest.raises(AstroSRError, match="do not fit"):
        load_checkpoint(p)
    meta["format_version"] = 99
    side.write_text(json.dumps(meta))
    with pytest.raises(AstroSRError, match="newer"):
        load_checkpoint(p)


def test_bundled_checkpoint_absent_is_none():
    assert bundled_checkpoint("no-such-method", 2) is None

"""Training configs: every shipped YAML validates; unknown keys and bad values fail clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from napari_astrosr.config import config_from_dict, load_config
from napari_astrosr.exceptions import AstroSRError

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))

MINIMAL = {
    "name": "t",
    "model": {"name": "fisr", "preset": "tiny", "scale": 2},
    "data": {"scale": 2, "sources": [{"kind": "simulate", "simulate": "starfield", "count": 1, "size": 64}]},
}


def _write(tmp_path, text: str) -> Path:
    p = tmp_path / "run.yaml"
    p.write_text(text)
    return p


def test_minimal_config_gets_defaults():
    cfg = config_from_dict(MINIMAL)
    assert cfg.loss.pixel == "l1" and cfg.optim.optimizer == "adamw" and cfg.optim.schedule == "cosine"
    assert cfg.gan.l1_weight == 100 and cfg.gan.gp_weight == 10 and cfg.gan.critic_steps == 3
    assert cfg.data.min_valid == 0.8


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_validate(path):
    cfg = load_config(path)
    assert cfg.name and cfg.run.steps > 0
    # the repository's configs/ is the packaged folder (one copy, shipped with the package)
    assert (REPO / "src" / "napari_astrosr" / "configs" / path.name).is_file()


def test_unknown_key_is_named_with_file(tmp_path):
    p = _write(
        tmp_path,
        "name: t\nmodel: {name: fisr, scale: 2}\ndata:\n  scale: 2\n  learning_rate: 3\n"
        "  sources: [{kind: simulate, simulate: starfield}]\n",
    )
    with pytest.raises(AstroSRError) as e:
        load_config(p)
    msg = str(e.value)
    assert "unknown key 'data.learning_rate'" in msg and str(p) in msg


def test_unknown_top_level_key(tmp_path):
    p = _write(
        tmp_path, "name: t\nepochs: 3\nmodel: {name: fisr}\ndata: {sources: [{kind: simulate, simulate: starfield}]}\n"
    )
    with pytest.raises(AstroSRError, match="unknown key 'epochs'"):
        load_config(p)


@pytest.mark.parametrize(
    "patch,where",
    [
        ({"run": {"steps": -3}}, "run.steps"),
        ({"optim": {"lr": 5.0}}, "optim.lr"),
        ({"data": {**MINIMAL["data"], "min_valid": 1.5}}, "data.min_valid"),
        ({"loss": {"pixel": "l3"}}, "loss.pixel"),
        ({"loss": {"pixel": "huber", "huber_delta": 0}}, "loss.huber_delta"),
        ({"loss": {"background_weight": -1}}, "loss.background_weight"),
        ({"optim": {"betas": [0.5, 1.5]}}, "betas"),
        ({"model": {"name": "fisr", "scale": 3}}, "model.scale"),
        (
            {"data": {"scale": 2, "sources": [{"kind": "simulate", "simulate": "galaxies", "density": "crowded"}]}},
            "density is for 'simulate: starfield'",
        ),
        (
            {"data": {"scale": 2, "sources": [{"kind": "simulate", "simulate": "starfield", "density": 0.5}]}},
            "density 0.5",
        ),
        (
            {"data": {"scale": 2, "sources": [{"kind": "simulate", "simulate": "starfield", "density": "packed"}]}},
            "density",
        ),
    ],
)
def test_bad_values_fail_with_key(patch, where):
    d = {**MINIMAL, **patch}
    with pytest.raises(AstroSRError) as e:
        config_from_dict(d, source="x.yaml")
    assert where in str(e.value) and "x.yaml" in str(e.value)


def test_source_consistency():
    d = {**MINIMAL, "data": {"sources": [{"kind": "degrade"}]}}
    with pytest.raises(AstroSRError, match="needs files"):
        config_from_dict(d)


def test_yaml_is_safe_loaded(tmp_path):
    p = _write(tmp_path, "!!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(AstroSRError, match="not valid YAML"):
        load_config(p)


def test_missing_file(tmp_path):
    with pytest.raises(AstroSRError, match="not found"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    "run, where",
    [
        ({"steps": 10, "fit_steps": 20}, "fit_steps 20 is more than steps 10"),
        ({"chunk_minutes": 0}, "'run.chunk_minutes'"),
        ({"time_budget_minutes": -1}, "'run.time_budget_minutes'"),
        ({"fit_measure_steps": 1}, "'run.fit_measure_steps'"),
        ({"fit_steps": "many"}, "'run.fit_steps'"),
    ],
)
def test_budget_fields_fail_in_one_line(run, where):
    with pytest.raises(AstroSRError) as exc:
        config_from_dict({**MINIMAL, "run": run}, source="b.yaml")
    msg = str(exc.value)
    assert where in msg and "b.yaml" in msg and "\n" not in msg


def test_budget_fields_accepted():
    cfg = config_from_dict({**MINIMAL, "run": {"time_budget_minutes": 8, "chunk_minutes": 2.5, "fit_steps": 900}})
    assert cfg.run.time_budget_minutes == 8 and cfg.run.chunk_minutes == 2.5 and cfg.run.fit_steps == 900
    assert cfg.run.fit_measure_steps == 20

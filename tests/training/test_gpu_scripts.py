"""The GPU recipe's helpers: what gpu_prepare carries (the held-out fields the evaluation reads) and gpu_train's
tiny configs (still valid, small enough for the dry run)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from napari_astrosr.config import config_from_dict

REPO = Path(__file__).resolve().parents[2]
RECIPE = ["fisr_x2_gpu", "fisr_x4_gpu", "restormer_x1_gpu"]


@pytest.fixture(scope="module")
def scripts():
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import gpu_prepare
        import gpu_train

        yield gpu_prepare, gpu_train
    finally:
        sys.path.remove(str(REPO / "scripts"))


def test_prepare_carries_the_evaluation_fields(scripts, shared_data):
    """The evaluation after training read fields the GPU machine did not have (empty tables): they travel now."""
    gpu_prepare, _ = scripts
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from quality import FIELDS
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    files = gpu_prepare.eval_files()
    assert files == [rel for _, rel, _ in FIELDS] and len(files) >= 3
    assert all((shared_data / rel).is_file() for rel in files)


@pytest.mark.parametrize("name", RECIPE)
def test_tiny_configs_validate_and_fit_the_budget(scripts, name):
    _, gpu_train = scripts
    d = gpu_train.tiny(yaml.safe_load((REPO / "configs" / f"{name}.yaml").read_text()))
    cfg = config_from_dict(d, source=name)
    assert cfg.data.patch <= (24 if cfg.data.scale > 1 else 32) and cfg.run.threads == 1
    # the schedule is fitted (2 warm-up + fit_measure_steps) before the tiny run ends
    assert 2 + cfg.run.fit_measure_steps < cfg.run.steps
    assert cfg.run.time_budget_minutes and cfg.run.max_minutes is None

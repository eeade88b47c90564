"""The cost each bundled weight's sidecar stores is what counting its network gives (not stale)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from napari_astrosr.models.checkpoints import WEIGHTS_DIR, read_sidecar  # noqa: E402
from napari_astrosr.models.registry import model_cost  # noqa: E402
from napari_astrosr.restoration import _stored_cost, list_methods  # noqa: E402

SIDECARS = sorted(WEIGHTS_DIR.glob("*.json"))


@pytest.mark.parametrize("side", SIDECARS, ids=[p.stem for p in SIDECARS])
def test_stored_cost_matches_the_network(side):
    meta = read_sidecar(side.with_suffix(".pt"))
    counted = model_cost(meta["architecture"], preset=None, scale=int(meta["scale"]), size=64, **meta["config"])
    # refresh with: python scripts/annotate_costs.py
    assert _stored_cost(meta) == counted


def test_list_methods_reports_the_stored_cost():
    nets = {m["name"]: m for m in list_methods() if m["kind"] == "network"}
    meta = read_sidecar(WEIGHTS_DIR / "fisr_x2.pt")
    assert (nets["fisr"]["params"], nets["fisr"]["flops"]) == (meta["cost"]["params"], meta["cost"]["flops"])

"""Shared fixtures: paths to the real data in ../shared/data (skipped when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ASTROSR_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real FITS files; tests using it skip where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} not present")
    return SHARED_DATA


def shared_file(rel: str) -> Path:
    """Path of one real file under shared/data, or skip the test."""
    p = SHARED_DATA / rel
    if not p.exists():
        pytest.skip(f"{p} not present")
    return p


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


def pytest_collection_modifyitems(config, items):
    """Every test under ``tests/gui`` needs a viewer under Xvfb: mark it ``gui`` even where its
    module forgot ``pytestmark`` (``-m "not gui"`` must leave out every viewer test)."""
    gui_dir = Path(__file__).parent / "gui"
    for item in items:
        if gui_dir in Path(str(item.fspath)).parents and item.get_closest_marker("gui") is None:
            item.add_marker(pytest.mark.gui)

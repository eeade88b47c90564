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


@pytest.fixture(autouse=True)
def _destroy_closed_widgets(request):
    """After each GUI test (and after napari's viewer fixture has closed its viewers), run the Qt
    deferred deletes and a garbage collection, so that a closed viewer's OpenGL widget is destroyed
    here and not at some event-loop turn of the next test.

    Why: every vispy canvas shares one OpenGL object namespace (``AA_ShareOpenGLContexts``), and under
    Mesa's software renderer (llvmpipe, Mesa 22.3 on this machine and CI) a process that makes and
    closes many viewers segfaulted now and then in ``glDrawArrays``. 50 repeats of
    ``test_remove_layers_while_a_job_runs_then_start_another`` in one process crashed 4 runs of 4, at
    repeats 23-26; with this fixture 100 of 100 passed. It is not enough for the whole GUI directory
    in one process (still crashed in 1 of 2 runs), so ``scripts/test.sh`` also runs that test's file in a
    process of its own.
    """
    yield
    if request.node.get_closest_marker("gui") is None:
        return
    import gc

    from qtpy.QtCore import QCoreApplication, QEvent
    from qtpy.QtWidgets import QApplication

    if QApplication.instance() is None:
        return
    for _ in range(3):
        QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
        QApplication.processEvents()
        gc.collect()

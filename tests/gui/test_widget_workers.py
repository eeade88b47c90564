"""JobPanel: progress, result tagging, Stop and errors, with small real generator jobs."""

from __future__ import annotations

import time

import numpy as np
import pytest
from napari.layers import Image

from napari_astrosr._napari._workers import (
    JobPanel,
    LayerCombo,
    aligned_geometry,
    find_layer,
    layer_array,
    tag_layer,
)
from napari_astrosr.exceptions import AstroSRError, StoppedError
from napari_astrosr.progress import Progress

from widget_helpers import Notes, wait_idle

pytestmark = pytest.mark.gui


def counting_job(n, *, delay=0.0, stop, fail_at=None, raise_on_stop=False):
    total = 0
    for i in range(n):
        if stop.is_set():
            if raise_on_stop:
                raise StoppedError("stopped before the end")
            return ("partial", total)
        if fail_at is not None and i == fail_at:
            raise AstroSRError(f"bad thing at step {i}; fix the input")
        total += i
        time.sleep(delay)
        yield Progress(i + 1, n, f"step {i + 1}")
    return ("full", total)


def test_aligned_geometry_pixel_centres():
    scale, translate = aligned_geometry((2.0, 3.0), (10.0, -4.0), 2)
    assert scale == (1.0, 1.5)
    # output pixel j centre in input pixel coordinates is (j+0.5)/2 - 0.5
    for j in range(5):
        world_out = np.array(translate) + np.array(scale) * j
        in_coord = (world_out - np.array([10.0, -4.0])) / np.array([2.0, 3.0])
        np.testing.assert_allclose(in_coord, (j + 0.5) / 2 - 0.5)


def test_job_result_progress_and_tag(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    layer = viewer.add_image(np.zeros((4, 5), np.float32), name="a", scale=(2, 2))
    panel = JobPanel()
    qtbot.addWidget(panel)
    events, results = [], []
    tag = tag_layer(layer)
    panel.start(
        lambda stop: counting_job(20, stop=stop),
        on_result=lambda r, t: results.append((r, t)),
        on_progress=lambda e, t: events.append(e.step),
        tag=tag,
        label="count",
    )
    assert panel.busy and not panel.bar.isHidden()
    wait_idle(qtbot, panel)
    assert results == [(("full", 190), tag)]
    assert events[-1] == 20 and events == sorted(events)
    assert panel.bar.isHidden() and panel.stop_button.isHidden()
    assert find_layer(viewer, tag) is layer
    assert tag.scale == (2.0, 2.0) and tag.shape == (4, 5)


def test_stop_returns_partial_and_error_notifies(qtbot):
    panel = JobPanel()
    qtbot.addWidget(panel)
    notes = Notes()
    results = []
    panel.start(
        lambda stop: counting_job(10_000, delay=0.002, stop=stop),
        on_result=lambda r, t: results.append(r),
        label="long",
    )
    qtbot.waitUntil(lambda: panel.bar.maximum() == 10_000, timeout=5000)
    panel.stop()
    wait_idle(qtbot, panel)
    assert results and results[0][0] == "partial"
    assert "stopped" in panel.last_status

    # a job raising StoppedError on stop is reported as stopped, not as an error
    panel.start(
        lambda stop: counting_job(10_000, delay=0.002, stop=stop, raise_on_stop=True),
        on_result=lambda r, t: results.append(r),
        label="long2",
    )
    panel.stop()
    wait_idle(qtbot, panel)
    assert len(results) == 1 and not notes.errors()

    panel.start(
        lambda stop: counting_job(10, stop=stop, fail_at=3), on_result=lambda r, t: results.append(r), label="failing"
    )
    wait_idle(qtbot, panel)
    assert len(results) == 1
    assert notes.errors() == ["failing: bad thing at step 3; fix the input"]
    assert panel.bar.isHidden() and isinstance(panel.last_error, AstroSRError)


def test_layer_combo_follows_viewer(make_napari_viewer):
    viewer = make_napari_viewer()
    combo = LayerCombo(viewer, Image)
    assert combo.value() is None
    a = viewer.add_image(np.ones((3, 3)), name="a")
    viewer.add_points(np.zeros((1, 2)), name="pts")
    b = viewer.add_image(np.ones((3, 3)), name="b")
    assert [combo.itemText(i) for i in range(combo.count())] == ["b", "a"]
    combo.set_value(a)
    a.name = "renamed"
    assert combo.itemText(1) == "renamed" and combo.value() is a
    viewer.layers.remove(b)
    assert combo.layers() == [a]
    copy = layer_array(a)
    copy[0, 0] = 7
    assert a.data[0, 0] == 1
    combo.deleteLater()


def test_deleting_the_panel_stops_its_job(qtbot):
    from qtpy.QtCore import QCoreApplication, QEvent

    panel = JobPanel()
    seen = []

    def job(stop):
        seen.append(stop)
        return (yield from counting_job(100_000, delay=0.002, stop=stop))

    worker = panel.start(job, on_result=lambda r, t: None)
    qtbot.waitUntil(lambda: panel.bar.maximum() == 100_000, timeout=5000)
    done = []
    worker.finished.connect(lambda: done.append(True))
    panel.deleteLater()  # what closing its dock does
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete.value)
    qtbot.waitUntil(lambda: bool(done), timeout=10_000)
    assert seen[0].is_set()


def test_stop_returns_to_idle_while_an_uninterruptible_step_ends_in_the_background(qtbot):
    """Issue 23: Stop leaves the widget usable within a second even when the job is inside a
    step it cannot leave; that step ends in the background, its result dropped (or handed to
    ``on_late_result``), and a second job runs meanwhile."""
    from napari_astrosr._napari._workers import STOP_GRACE_S

    panel = JobPanel(interval=0.0)
    qtbot.addWidget(panel)
    notes = Notes()
    results, late = [], []

    def stuck(stop):
        yield Progress(1, 2, "one long step")
        time.sleep(2.5)  # e.g. a projection: no stop check inside
        return "late"

    worker = panel.start(stuck, on_result=lambda r, t: results.append(r), on_late_result=lambda r, t: late.append(r))
    qtbot.waitUntil(lambda: panel.bar.maximum() == 2, timeout=5000)
    t0 = time.perf_counter()
    panel.stop()
    wait_idle(qtbot, panel, timeout=5000)
    idle_after = time.perf_counter() - t0
    assert STOP_GRACE_S <= idle_after < 1.5
    assert worker.is_running and panel.background == [worker]
    assert "stopped" in panel.last_status and "background" in panel.last_status
    # a second job starts and finishes while the first one's step is still running
    panel.start(lambda stop: counting_job(3, stop=stop), on_result=lambda r, t: results.append(r), label="second")
    wait_idle(qtbot, panel)
    assert results == [("full", 3)]
    qtbot.waitUntil(lambda: not panel.background, timeout=10_000)
    assert late == ["late"] and results == [("full", 3)] and not notes.errors()


def test_display_pyramid_and_full_resolution(make_napari_viewer, tmp_path):
    """Large results are shown as a multiscale pyramid; every consumer reads level 0, never the
    coarsest level that ``np.asarray`` of napari's multiscale data gives."""
    from napari_astrosr._napari._workers import display_pyramid, full_resolution

    small = np.ones((64, 64), np.float32)
    assert display_pyramid(small) is small
    big = np.arange(2050 * 1030, dtype=np.float32).reshape(2050, 1030)
    big[0, 0] = np.nan
    levels = display_pyramid(big, max_side=1024)
    assert [lv.shape for lv in levels] == [(2050, 1030), (1025, 515), (512, 257)]
    assert levels[0] is big
    # 2x2 means, NaN ignored
    assert np.isclose(levels[1][0, 1], big[:2, 2:4].mean()) and np.isclose(levels[1][0, 0], np.nanmean(big[:2, :2]))
    viewer = make_napari_viewer()
    layer = viewer.add_image(levels, multiscale=True, contrast_limits=(0, 1))
    assert np.asarray(layer.data).shape == (512, 257)  # napari's behaviour: the coarsest level
    assert full_resolution(layer.data) is big
    np.testing.assert_array_equal(layer_array(layer), big)
    # File > Save writes the full resolution too
    from astropy.io import fits

    from napari_astrosr._napari._writer import write_image

    (path,) = write_image(str(tmp_path / "big.fits"), layer.data, {"name": "big", "metadata": {}})
    np.testing.assert_array_equal(fits.getdata(path), big)


def _max_gap_while(panel, job_factory, qtbot) -> float:
    """Longest wait (s) between 10 ms timer ticks of the GUI thread while ``job_factory`` runs."""
    from qtpy.QtCore import QTimer

    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    t0 = time.perf_counter()
    results = []
    panel.start(job_factory, on_result=lambda r, t: results.append(r))
    qtbot.waitUntil(lambda: not panel.busy, timeout=120_000)
    timer.stop()
    assert results and results[0] >= 1, panel.last_status
    return float(np.max(np.diff([t0, *ticks])))


def test_a_gil_holding_job_does_not_freeze_the_gui(qtbot, monkeypatch):
    """A job's C calls that hold the GIL (sep, imports, gc) froze the viewer from a thread; not from the process."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1]))  # tests/: the job module, importable in the child too
    import process_jobs as pj

    from napari_astrosr._napari._process import in_process

    panel = JobPanel()
    qtbot.addWidget(panel)

    def job(stop):
        return (yield from in_process(pj.holds_the_gil, 1.5, stop=stop))

    monkeypatch.setenv("ASTROSR_JOBS_IN_PROCESS", "0")
    in_thread = _max_gap_while(panel, job, qtbot)
    monkeypatch.setenv("ASTROSR_JOBS_IN_PROCESS", "1")
    in_child = _max_gap_while(panel, job, qtbot)
    print(f"max gap: thread {in_thread * 1e3:.0f} ms, process {in_child * 1e3:.0f} ms")
    assert in_thread > 0.15, f"the test job no longer holds the GIL ({in_thread * 1e3:.0f} ms): it proves nothing"
    assert in_child < min(0.15, in_thread / 2), (in_child, in_thread)

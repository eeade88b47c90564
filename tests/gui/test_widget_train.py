"""Train widget: config loading/editing, live loss plot, Stop -> checkpoint listed in Restore."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from napari_astrosr._napari.widgets.train import INIT_BUNDLED, INIT_RANDOM, TrainWidget, example_configs  # noqa: E402
from napari_astrosr.config import config_from_dict  # noqa: E402

from widget_helpers import Notes, restore_widget, star_image, wait_idle  # noqa: E402

pytestmark = pytest.mark.gui

TINY = {
    "name": "widget_test",
    "model": {"name": "pix2wgan", "preset": "tiny", "scale": 1},
    "data": {
        "scale": 2,
        "psf": {"kind": "spec", "spec": "gaussian:1.0"},
        "patch": 16,
        "realizations": 1,
        "max_patches": 64,
        "sources": [{"kind": "simulate", "simulate": "starfield", "count": 2, "size": 64, "split": "halves"}],
    },
    "run": {
        "steps": 100000,
        "batch_size": 2,
        "val_every": 2,
        "checkpoint_every": 1000,
        "log_every": 1,
        "threads": 1,
        "val_images": 1,
    },
}


def test_config_loading_and_errors(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    w = TrainWidget(viewer)
    qtbot.addWidget(w)
    ex = example_configs()
    assert ex, "the repository's configs/ should be found"
    name = next(iter(ex))
    assert w.config is not None and w.config.name == name  # the first example is loaded
    w.steps.setValue(7)
    w.model_name.setCurrentText("restormer")
    cfg = w.edited_config()
    assert cfg.run.steps == 7 and cfg.model.name == "restormer"

    notes = Notes()
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodel: {name: fisr}\ndata: {sources: [{kind: simulate, simulate: starfield}]}\nbogus: 1\n")
    assert not w.load(bad)
    assert any("bogus" in m for m in notes.errors())
    w.out_dir.setText("")
    assert w.run() is None
    assert any("Output folder" in m for m in notes.errors())


def test_start_from_maps_to_init_from_and_checks_the_file(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    w = TrainWidget(viewer)
    qtbot.addWidget(w)
    w.set_config(config_from_dict({**TINY, "model": {**TINY["model"], "init_from": "bundled"}}))
    assert w.init_from.currentText() == INIT_BUNDLED
    assert w.edited_config().model.init_from == "bundled"
    w.init_from.setCurrentText(INIT_RANDOM)
    assert w.edited_config().model.init_from is None
    missing = tmp_path / "nowhere" / "model.pt"
    w.init_from.setCurrentText(str(missing))
    assert w.edited_config().model.init_from == str(missing)
    # a checkpoint that is not there: one line naming the field, nothing started, nothing written
    out = tmp_path / "run"
    w.out_dir.setText(str(out))
    notes = Notes()
    assert w.run() is None
    assert not w.jobs.busy and not out.exists()
    (msg,) = notes.errors()
    assert msg.startswith("Train: Start from:") and "not found" in msg and "\n" not in msg, msg


@pytest.mark.slow
def test_start_from_bundled_of_another_preset_is_refused_in_widget_words(make_napari_viewer, qtbot, tmp_path):
    # the bundled FISR x2 is the "lite" preset; this config builds "tiny": refused before any data is built
    viewer = make_napari_viewer()
    w = TrainWidget(viewer)
    qtbot.addWidget(w)
    w.set_config(config_from_dict({**TINY, "model": {"name": "fisr", "preset": "tiny", "scale": 2}}))
    w.init_from.setCurrentText(INIT_BUNDLED)
    out = tmp_path / "run"
    w.out_dir.setText(str(out))
    notes = Notes()
    assert w.run() is not None
    wait_idle(qtbot, w.jobs, timeout=120_000)
    errors = notes.errors()
    assert any("Start from:" in m and "choose the Preset it was trained with" in m for m in errors), errors
    assert not any("model.init_from" in m for m in errors), errors
    assert w.checkpoint is None and not (out / "model.pt").exists()


@pytest.mark.slow
def test_train_live_plot_stop_and_restore_lists_checkpoint(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    w = TrainWidget(viewer)
    qtbot.addWidget(w)
    w.set_config(config_from_dict(TINY))
    w.out_dir.setText(str(tmp_path / "run"))
    w.run()
    # loss values and a validation arrive while it trains
    qtbot.waitUntil(lambda: len(w.history["val_psnr"]) >= 1 and len(w.history["loss"]) >= 3, timeout=120_000)
    assert w.jobs.busy
    # the plot follows within its redraw interval: loss raw + smoothed; val PSNR + bicubic
    qtbot.waitUntil(lambda: len(w.ax.lines) == 2 and len(w.ax_val.lines) == 2, timeout=5_000)
    assert "psnr" in w.metrics.text()
    w.jobs.stop()
    wait_idle(qtbot, w.jobs, timeout=60_000)
    # the widget is usable within a second; the final validation and checkpoint may finish after that
    qtbot.waitUntil(lambda: not w.jobs.background and w.checkpoint is not None, timeout=60_000)
    # a clean stop saves a checkpoint at the current step
    assert w.checkpoint is not None and w.checkpoint.exists() and w.checkpoint.with_suffix(".json").exists()
    assert w.jobs.last_error is None

    r = restore_widget(viewer, qtbot)
    labels = [r.method.itemText(i) for i in range(r.method.count())]
    label = f"pix2wgan ({w.checkpoint.name})"
    assert label in labels
    r.method.setCurrentText(label)
    import json

    served = json.loads(w.checkpoint.with_suffix(".json").read_text())["scale"]
    assert served == 2  # a same-size network trained on x2 data serves --scale 2 (after bicubic)
    assert r.checkpoint.text() == str(w.checkpoint) and r.scale.value() == served
    opts = r.options()
    assert opts["method"] == "pix2wgan" and opts["model"] == str(w.checkpoint)
    # and the trained network restores an image
    viewer.add_image(star_image((32, 32)), name="img")
    r.input.set_value(viewer.layers["img"])
    r.psf.setText("gaussian:1.0")  # the blur it was trained for (the default projection needs it)
    r.run()
    wait_idle(qtbot, r.jobs, timeout=60_000)
    assert viewer.layers["img [pix2wgan]"].data.shape == (64, 64)


def test_loss_plot_redraws_at_most_every_redraw_interval(make_napari_viewer, qtbot):
    """Steps can arrive faster than matplotlib draws: the plot is redrawn (in a thread) at most
    every REDRAW_S seconds, and the last values are drawn once the interval has passed."""
    import time

    from napari_astrosr._napari.widgets.train import REDRAW_S
    from napari_astrosr.progress import Progress

    w = TrainWidget(make_napari_viewer())
    qtbot.addWidget(w)
    qtbot.wait(int(REDRAW_S * 1000) + 50)
    before = w.redraws
    t0 = time.monotonic()
    for step in range(1, 201):  # 200 steps within a fraction of REDRAW_S
        w._on_progress(Progress(step, 1000, values={"loss": 1.0 / step}), None)
    fed = time.monotonic() - t0
    assert w.redraws - before <= 1 + int(fed / REDRAW_S)
    qtbot.waitUntil(lambda: len(w.ax.lines) == 2 and len(w.ax.lines[0].get_xdata()) == 200, timeout=10_000)
    # drawn in a thread, shown as a picture: the widget shows the figure's pixels
    pix = w.canvas.pixmap()
    assert not pix.isNull() and (pix.width(), pix.height()) == (360, 260)


def test_dock_follows_its_form_when_it_grows_after_docking(make_napari_viewer, qtbot):
    # the docks scroll vertically with no horizontal bar: a form wider than its dock would be cut off at the
    # right edge (browse and Stop buttons out of reach), so a form that grows must widen its dock
    viewer = make_napari_viewer()
    w = TrainWidget(viewer)
    viewer.window.add_dock_widget(w, name="Train", area="right")
    viewer.window._qt_window.show()
    inner = w._astrosr_scroll.widget()

    def fits():
        return w._astrosr_scroll.viewport().width() >= inner.minimumSizeHint().width()

    qtbot.waitUntil(fits, timeout=5_000)
    before = w.width()
    w.resume.setText(w.resume.text() + " - a label made longer after the dock was laid out")
    qtbot.waitUntil(lambda: w.width() > before and fits(), timeout=5_000)

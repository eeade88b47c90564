"""Train widget: config loading/editing, live loss plot, Stop -> checkpoint listed in Restore."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from napari_astrosr._napari.widgets.train import TrainWidget, example_configs  # noqa: E402
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

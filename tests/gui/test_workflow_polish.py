"""Issue 23, item 4: the workflow defects a new user met, each driven through the real widgets."""

from __future__ import annotations

import numpy as np
import pytest

from napari_astrosr._napari._workers import ROLE, widget_language
from napari_astrosr._napari.widgets.detect import DetectWidget
from napari_astrosr._napari.widgets.inspect import InspectWidget

from widget_helpers import Notes, restore_widget, star_image, wait_idle

pytestmark = pytest.mark.gui


def test_widget_language_rewords_cli_options():
    msg = widget_language("backprojection needs --psf SPEC (the blur the input carries, in output pixels).")
    assert "--" not in msg and "PSF box" in msg
    msg = widget_language("out/model.pt: exists; pass --resume to continue it or choose another --out.")
    assert msg == "out/model.pt: exists; tick Resume to continue it or choose another output folder."
    assert (
        widget_language("--device cuda: CUDA is not available here; use --device cpu or auto.")
        == "Device cuda: CUDA is not available here; use Device cpu or auto."
    )
    # an option with no widget word loses its dashes; hyphenated words stay
    assert widget_language("use --frobnicate on a well-known case") == "use 'frobnicate' on a well-known case"


def test_restore_method_default_tile_truth_and_nan_report(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    img = star_image((40, 40), seed=4)
    img[10:14, 20:26] = np.nan
    viewer.add_image(img, name="holes", metadata={"bunit": "electron/s"})
    w = restore_widget(viewer, qtbot)
    # once the list has loaded the Method box holds a bundled network, not "checkpoint file..."
    info = w._methods[w.method.currentText()]
    assert info["kind"] == "network" and w.scale.value() in info["bundled"]
    assert w.tile.specialValueText() == "auto" and w.tile.value() == 0
    # a choice made by the user survives a refresh of the list
    w.method.setCurrentText("bicubic")
    w.method.activated.emit(w.method.currentIndex())
    w.refresh_methods()
    assert w.method.currentText() == "bicubic"

    notes = Notes()
    w.run()
    wait_idle(qtbot, w.jobs)
    out = viewer.layers["holes [bicubic]"]
    warns = notes.warnings()
    # the NaN input is reported up front (count, fraction) and again with the output's NaN area
    assert any("24 NaN/inf pixels (1.50% of its area)" in m for m in warns)
    frac = np.count_nonzero(~np.isfinite(out.data)) / out.data.size
    assert f"the result is NaN on {100 * frac:.2f}% of its area" in w.nan_report
    assert f"{frac / 0.015:.1f}x the input's NaN area" in w.nan_report

    # a network run says how many tiles ran, in the device line and in the Tile box
    w.method.setCurrentText(w.default_method())
    w.psf.setText("gaussian:1.0")  # the default projection needs the PSF the input carries
    w.run()
    wait_idle(qtbot, w.jobs, timeout=120_000)
    tiles = viewer.layers[f"holes [{w.options()['method']}]"].metadata["astrosr"]["params"]["tiles"]
    assert f"{tiles} tile" in w.device_used.text()
    assert w.tile.specialValueText() == f"auto (last run: {tiles} tile{'s' if tiles != 1 else ''})"


def test_restore_error_speaks_widget_language(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    # pure noise: no star to estimate the PSF from
    viewer.add_image(np.random.default_rng(1).normal(0.0, 1.0, (24, 24)).astype(np.float32), name="im")
    w = restore_widget(viewer, qtbot)
    notes = Notes()
    w.method.setCurrentText("backprojection")
    w.psf.setText("")
    w.run()
    wait_idle(qtbot, w.jobs)
    errs = [m for m in notes.errors() if "PSF" in m]
    assert errs and all("--" not in m and not m.startswith("Restore: Restore:") for m in errs)


def test_one_residual_per_comparison(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(star_image((32, 40), seed=6), name="lr")
    w = restore_widget(viewer, qtbot)
    w.method.setCurrentText("bicubic")
    w.run()
    wait_idle(qtbot, w.jobs)
    assert [ly.name for ly in viewer.layers if ly.metadata.get(ROLE) == "residual"] == ["lr [bicubic] residual"]
    iw = InspectWidget(viewer)
    qtbot.addWidget(iw)
    # residual layers are not offered as inputs
    assert "lr [bicubic] residual" not in [iw.reference.itemText(i) for i in range(iw.reference.count())]
    iw.reference.set_value(viewer.layers["lr"])
    iw.prediction.set_value(viewer.layers["lr [bicubic]"])
    iw.run()
    wait_idle(qtbot, iw.jobs)
    residuals = [ly for ly in viewer.layers if ly.metadata.get(ROLE) == "residual"]
    assert len(residuals) == 1 and residuals[0].name == "lr [bicubic] [residual]"
    # same pixels as Restore's: block sum of the x2 output minus the input
    assert residuals[0].data.shape == (32, 40)


def test_inspect_messages_not_doubled_and_scroll_area(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(star_image((32, 32)), name="a")
    iw = InspectWidget(viewer)
    dw = DetectWidget(viewer)
    notes = Notes()
    iw.reference.set_value(viewer.layers["a"])
    iw.prediction.set_value(viewer.layers["a"])
    assert iw.run() is None
    errs = notes.errors()
    assert errs and errs[-1].startswith("Inspect: ") and not errs[-1].startswith("Inspect: Inspect:")
    # both docked: the docks scroll, the window stays within the screen
    viewer.window.add_dock_widget(dw, name="Detect", area="right")
    viewer.window.add_dock_widget(iw, name="Inspect", area="right")
    viewer.window._qt_window.show()
    qtbot.wait(200)
    screen = viewer.window._qt_window.screen().availableGeometry()
    assert iw._astrosr_scroll.widget() is not None and dw._astrosr_scroll.widgetResizable()
    assert viewer.window._qt_window.frameGeometry().height() <= screen.height()


def test_detect_zero_sources_adds_nothing(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    flat = viewer.add_image(rng.normal(0, 1, (48, 48)).astype(np.float32), name="sky")
    w = DetectWidget(viewer)
    qtbot.addWidget(w)
    notes = Notes()
    w.thresh.setValue(50.0)
    w.run()
    wait_idle(qtbot, w.jobs)
    assert [ly.name for ly in viewer.layers] == ["sky"]
    assert w.input.value() is flat
    assert "no sources" in w.summary.text() and any("no sources in 'sky'" in m for m in notes.infos())


def test_flux_map_visible_over_zscale_image_and_csv_export(make_napari_viewer, qtbot, tmp_path):
    from astropy.table import Table

    from napari_astrosr._napari.widgets.display import apply_zscale

    viewer = make_napari_viewer(show=True)  # screenshots need a shown canvas
    img = star_image((64, 64), n=8, seed=9)
    layer = viewer.add_image(img, name="f", metadata={"bunit": "electron/s"})
    apply_zscale(layer)
    w = DetectWidget(viewer)
    qtbot.addWidget(w)
    w.thresh.setValue(5.0)
    w.show_ellipses.setChecked(False)
    w.run()
    wait_idle(qtbot, w.jobs)
    fm = viewer.layers["f [flux map]"]
    assert w.input.value() is layer  # an overlay never becomes the next input
    viewer.layers["f [sources]"].visible = False
    viewer.reset_view()
    with_map = viewer.screenshot(canvas_only=True, flash=False).astype(float)
    fm.visible = False
    without = viewer.screenshot(canvas_only=True, flash=False).astype(float)
    diff = np.abs(with_map[..., :3] - without[..., :3]).sum(axis=-1)
    # zscale saturates the stars to white, where an additive map adds nothing: ours colours them
    white = (without[..., :3] > 250).all(axis=-1)
    assert white.sum() > 50
    assert (diff[white] > 60).mean() > 0.5
    # and leaves the empty sky alone
    assert np.median(diff) < 5

    out = w.export(tmp_path / "cat.csv", fmt="CSV")
    back = Table.read(out)
    assert len(back) == len(w.catalog) and "flux" in back.colnames
    ecsv = Table.read(w.export(tmp_path / "cat.ecsv", fmt="ECSV"))
    assert str(ecsv["flux"].unit) == "electron / s"


def test_coadd_frames_exclude_results(make_napari_viewer, qtbot):
    from napari_astrosr._napari.widgets.coadd import CoaddWidget

    viewer = make_napari_viewer()
    viewer.add_image(star_image((32, 32), seed=1), name="f1")
    viewer.add_image(star_image((32, 32), seed=2), name="f2")
    w = CoaddWidget(viewer)
    qtbot.addWidget(w)
    dw = DetectWidget(viewer)
    qtbot.addWidget(dw)
    dw.input.set_value(viewer.layers["f1"])
    dw.thresh.setValue(5.0)
    dw.run()
    wait_idle(qtbot, dw.jobs)
    assert "f1 [flux map]" in viewer.layers
    assert [ly.name for ly in w._frame_layers] == ["f2", "f1"]


def test_progress_shows_an_estimate_from_the_first_step(qtbot):
    """A long job's status line says how long is left, from the rate since its first step."""
    import re
    import time

    from napari_astrosr._napari._workers import JobPanel
    from napari_astrosr.progress import Progress

    panel = JobPanel(interval=0.0)
    qtbot.addWidget(panel)
    seen: list[str] = []

    def job(stop):
        for i in range(12):
            yield Progress(i, 12, f"step {i}")
            time.sleep(0.15)
        return "ok"

    panel.start(job, on_result=lambda r, t: None, on_progress=lambda e, t: seen.append(panel.last_status), label="Job")
    qtbot.waitUntil(lambda: not panel.busy, timeout=20_000)
    lefts = [float(m.group(1)) for s in seen if (m := re.search(r"about (\d+) s left", s))]
    assert "about" not in seen[0]  # nothing to estimate from before the second step
    # 0.15 s per step: at step 2 about 10 steps (1.5 s) remain, so the first estimate says 1-2 s
    assert lefts and 1 <= lefts[0] <= 3


def test_estimate_at_the_first_step_of_a_job_reporting_after_it(qtbot):
    """A job whose first report already counts a finished step ("tile 1/8" after its setup and
    first tile) gets an estimate at once, from its start, instead of waiting for a second step."""
    import re
    import time

    from napari_astrosr._napari._workers import JobPanel
    from napari_astrosr.progress import Progress

    panel = JobPanel(interval=0.0)
    qtbot.addWidget(panel)
    seen: list[str] = []

    def job(stop):
        for i in range(1, 5):
            time.sleep(0.4)
            yield Progress(i, 8, f"tile {i}/8")
        return "ok"

    panel.start(job, on_result=lambda r, t: None, on_progress=lambda e, t: seen.append(panel.last_status), label="Job")
    qtbot.waitUntil(lambda: not panel.busy, timeout=20_000)
    m = re.search(r"about (\d+) s left", seen[0])
    # 0.4 s for the first step: 7 steps left, about 3 s
    assert m and 2 <= float(m.group(1)) <= 6, seen[0]


def test_method_descriptions_and_readout_in_widget_words(make_napari_viewer, qtbot):
    from napari_astrosr._napari.widgets.display import install_wcs_status

    viewer = make_napari_viewer()
    hdr = {"BUNIT": "MJy/sr"}
    from astropy.io import fits

    layer = viewer.add_image(star_image((24, 24)), name="im", metadata={"header": fits.Header(hdr)})
    w = restore_widget(viewer, qtbot)
    for i in range(w.method.count()):
        w.method.setCurrentIndex(i)
        assert "--" not in w.info.text(), (w.method.currentText(), w.info.text())
    # the unit comes from the header's BUNIT when metadata has no 'bunit'
    install_wcs_status(layer)
    assert layer.get_status((3, 4), world=True)["coordinates"].endswith("MJy/sr")

"""Inspect widget end to end: metrics, residual layers, per-source points, histogram,
live KL/JS regions, exports, and incompatible grids."""

from __future__ import annotations

import numpy as np
import pytest

from napari_astrosr._napari.widgets.inspect import InspectWidget, grid_relation  # noqa: E402
from napari_astrosr.core import metrics  # noqa: E402
from napari_astrosr.core.resample import block_sum  # noqa: E402

from widget_helpers import Notes, star_image, wait_idle  # noqa: E402

pytestmark = pytest.mark.gui


def test_grid_relation():
    assert grid_relation((10, 12), (10, 12)) == ("same", 1)
    assert grid_relation((10, 12), (30, 36)) == ("prediction", 3)
    assert grid_relation((20, 24), (10, 12)) == ("reference", 2)
    with pytest.raises(Exception, match="not on compatible grids"):
        grid_relation((10, 12), (21, 24))


def _pair():
    ref = star_image((64, 64), n=14, seed=11, noise=0.3)
    rng = np.random.default_rng(5)
    # a "prediction": the reference slightly blurred, with 5 % flux error and some noise
    from scipy.ndimage import gaussian_filter

    pred = (gaussian_filter(ref, 0.7) * 1.05 + rng.normal(0, 0.3, ref.shape)).astype(np.float32)
    return ref, pred


def test_inspect_end_to_end(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    ref, pred = _pair()
    viewer.add_image(ref, name="truth", scale=(0.5, 0.5), translate=(-0.25, -0.25))
    viewer.add_image(pred, name="pred", scale=(0.5, 0.5), translate=(-0.25, -0.25))
    w = InspectWidget(viewer)
    qtbot.addWidget(w)
    w.reference.set_value(viewer.layers["truth"])
    w.prediction.set_value(viewer.layers["pred"])
    w.run()
    wait_idle(qtbot, w.jobs)
    m = w.result.metrics
    assert m["psnr"] == pytest.approx(metrics.psnr(ref, pred), abs=1e-6)
    assert w.values["psnr"].text().startswith(f"{m['psnr']:.2f} dB")
    assert m["ssim"] == pytest.approx(metrics.ssim(ref, pred), abs=1e-6)
    assert 0.02 < m["flux_error_rel_median"] < 0.1  # about the 5 % we put in
    assert "same grid" in w.note.text()

    res = viewer.layers["pred [residual]"]
    np.testing.assert_allclose(res.data, pred - ref, atol=1e-5)
    assert tuple(res.scale) == (0.5, 0.5) and res.contrast_limits[0] == pytest.approx(-res.contrast_limits[1])
    pts = viewer.layers["pred [source residuals]"]
    assert len(pts.data) == len(w.result.residuals) == m["n_sources"] > 5
    assert {"f_ref", "f_pred", "rel_delta", "delta_mag"} <= set(pts.features.columns)
    # points in world coordinates of the (scaled) reference
    np.testing.assert_allclose(pts.data[:, 1], np.asarray(w.result.residuals["x"]) * 0.5 - 0.25)
    # a too-bright source is drawn red-ish (rel_delta > 0), bwr colormap
    i = int(np.nanargmax(np.asarray(pts.features["rel_delta"])))
    assert pts.face_color[i][0] > pts.face_color[i][2]
    assert len(w.ax.patches) >= 1  # the histogram was drawn

    # regions: add, move, delete a rectangle -> KL/JS update each time
    shapes = w.regions_layer
    assert shapes.name == "truth [regions]"
    shapes.add_rectangles(np.array([[9.6, 9.6], [19.6, 29.6]]))
    assert len(w.roi_values) == 1
    mask = np.zeros(ref.shape, bool)
    mask[10:20, 10:30] = True
    expect = metrics.region_divergence(ref, pred, mask)
    assert w.roi_values[0]["n_pixels"] == 200
    assert w.roi_values[0]["kl"] == pytest.approx(expect["kl"]) and w.roi_values[0]["js"] == pytest.approx(expect["js"])
    assert w.roi_table.rowCount() == 1 and w.roi_table.item(0, 2).text() == f"{expect['kl']:.4g}"
    shapes.data = [np.array([[39.6, 9.6], [39.6, 49.6], [59.6, 49.6], [59.6, 9.6]])]  # moved/resized
    mask2 = np.zeros(ref.shape, bool)
    mask2[40:60, 10:50] = True
    assert w.roi_values[0]["n_pixels"] == 800
    assert w.roi_values[0]["js"] == pytest.approx(metrics.region_divergence(ref, pred, mask2)["js"])
    shapes.add_rectangles(np.array([[0.6, 0.6], [5.6, 5.6]]))
    assert len(w.roi_values) == 2

    # exports: residual catalog and regions (DS9 read back to the same masks, and a table)
    from astropy.table import Table

    from napari_astrosr.core.catalogs import read_regions

    out = w.export_residuals(tmp_path / "res.ecsv")
    assert len(Table.read(out)) == len(w.result.residuals)
    reg = w.export_regions(tmp_path / "rois.reg")
    back = read_regions(reg, shape=ref.shape)
    assert len(back) == 2 and np.array_equal(back[0][1], mask2)
    assert "KL=" in reg.read_text()
    t = Table.read(w.export_regions(tmp_path / "rois.ecsv"))
    assert list(t["name"]) == ["roi1", "roi2"] and t["js"][0] == pytest.approx(w.roi_values[0]["js"])

    shapes.selected_data = {0, 1}
    shapes.remove_selected()
    assert w.roi_values == [] and w.roi_table.rowCount() == 0


def test_inspect_finer_prediction_and_bad_grid(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    ref, _ = _pair()
    lr = block_sum(ref, 2)
    viewer.add_image(lr, name="lr")
    viewer.add_image(ref, name="hr", scale=(0.5, 0.5), translate=(-0.25, -0.25))
    viewer.add_image(np.zeros((30, 30), np.float32), name="odd")
    w = InspectWidget(viewer)
    qtbot.addWidget(w)
    w.reference.set_value(viewer.layers["lr"])
    w.prediction.set_value(viewer.layers["hr"])
    w.run()
    wait_idle(qtbot, w.jobs)
    assert "prediction block-summed x2" in w.note.text()
    # block_sum(hr) == lr exactly: PSNR is infinite -> reported as undefined, no crash
    assert w.values["psnr"].text() == "undefined"
    assert viewer.layers["hr [residual]"].data.shape == lr.shape
    assert tuple(viewer.layers["hr [residual]"].scale) == (1.0, 1.0)

    notes = Notes()
    w.prediction.set_value(viewer.layers["odd"])
    assert w.run() is None
    assert any("not on compatible grids" in msg for msg in notes.errors())
    assert w.run_button.isEnabled()

"""The whole widget chain on the shipped HST sample: open sample -> restore -> detect -> inspect -> export."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table  # noqa: E402

from napari_astrosr._napari.widgets.detect import DetectWidget  # noqa: E402
from napari_astrosr._napari.widgets.inspect import InspectWidget  # noqa: E402
from napari_astrosr.core.resample import block_sum, scale_wcs  # noqa: E402

from widget_helpers import Notes, restore_widget, wait_idle  # noqa: E402

pytestmark = pytest.mark.gui


def test_sample_restore_detect_inspect_export(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    notes = Notes()
    layers = viewer.open_sample("napari-astrosr", "hst_galaxy")
    hr = layers[0]
    assert hr.data.shape == (256, 256) and hr.metadata["wcs"] is not None
    # a x2 low-resolution version, placed over the HR image in world coordinates
    lr = viewer.add_image(
        block_sum(np.asarray(hr.data), 2),
        name="lr",
        scale=(2, 2),
        translate=(0.5, 0.5),
        metadata={"wcs": scale_wcs(hr.metadata["wcs"], 0.5), "header": hr.metadata["header"]},
    )

    rw = restore_widget(viewer, qtbot)
    rw.input.set_value(lr)
    rw.method.setCurrentText("lanczos")
    rw.run()
    wait_idle(qtbot, rw.jobs)
    sr = viewer.layers["lr [lanczos]"]
    # the x2 restoration lands exactly on the HR grid, and its WCS agrees with the HR WCS
    assert sr.data.shape == hr.data.shape
    np.testing.assert_allclose(sr.scale, hr.scale)
    np.testing.assert_allclose(sr.translate, hr.translate, atol=1e-12)
    np.testing.assert_allclose(
        sr.metadata["wcs"].wcs_pix2world([[10, 200]], 0), hr.metadata["wcs"].wcs_pix2world([[10, 200]], 0), atol=1e-9
    )

    dw = DetectWidget(viewer)
    qtbot.addWidget(dw)
    dw.input.set_value(sr)
    dw.thresh.setValue(3.0)
    dw.run()
    wait_idle(qtbot, dw.jobs)
    pts = viewer.layers["lr [lanczos] [sources]"]
    assert len(pts.data) > 5 and {"ra", "dec"} <= set(pts.features.columns)
    cat = Table.read(dw.export(tmp_path / "sources.ecsv"))
    assert len(cat) == len(pts.data)

    iw = InspectWidget(viewer)
    qtbot.addWidget(iw)
    iw.reference.set_value(hr)
    iw.prediction.set_value(sr)
    iw.run()
    wait_idle(qtbot, iw.jobs)
    m = iw.result.metrics
    assert np.isfinite(m["psnr"]) and 0 < m["ssim"] <= 1 and m["n_sources"] > 0
    res = Table.read(iw.export_residuals(tmp_path / "residuals.ecsv"))
    assert len(res) == m["n_sources"] and np.isfinite(np.asarray(res["ra"], float)).all()
    iw.regions_layer.add_rectangles(np.array([[100.4, 100.4], [160.4, 160.4]]))
    assert iw.roi_values[0]["n_pixels"] == 60 * 60
    assert (tmp_path / "r.reg").exists() is False
    iw.export_regions(tmp_path / "r.reg")
    assert "polygon" in (tmp_path / "r.reg").read_text()
    assert not notes.errors()

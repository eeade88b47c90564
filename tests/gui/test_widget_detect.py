"""Detect widget end to end on a seeded synthetic star field."""

from __future__ import annotations

import numpy as np
import pytest

from napari_astrosr._napari.widgets import detect as detect_mod  # noqa: E402
from napari_astrosr._napari.widgets.detect import DetectWidget, ellipse_corners  # noqa: E402

from widget_helpers import Notes, star_image, wait_idle  # noqa: E402

pytestmark = pytest.mark.gui


def test_ellipse_corners_rotation():
    from astropy.table import QTable

    t = QTable({"x": [10.0], "y": [20.0], "a": [2.0], "b": [1.0], "theta": [np.pi / 2]})
    c = ellipse_corners(t, k=1.0)[0]
    # rotated by 90 degrees: the long axis (a) is along y
    assert np.ptp(c[:, 0]) == pytest.approx(4.0) and np.ptp(c[:, 1]) == pytest.approx(2.0)
    np.testing.assert_allclose(c.mean(axis=0), [20.0, 10.0])


def test_detect_layers_table_and_export(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    img = star_image((64, 72), n=10, seed=3)
    layer = viewer.add_image(img, name="field", scale=(2.0, 2.0), translate=(10.0, -4.0))
    w = DetectWidget(viewer)
    qtbot.addWidget(w)
    assert w.input.value() is layer
    w.thresh.setValue(5.0)
    w.run()
    wait_idle(qtbot, w.jobs)
    pts = viewer.layers["field [sources]"]
    tab = w.catalog
    n = len(tab)
    assert 6 <= n <= 14
    # features table is the catalog; positions in world coordinates of the input
    assert list(pts.features["x"]) == pytest.approx(list(np.asarray(tab["x"])))
    assert {"x", "y", "a", "b", "theta", "flux"} <= set(pts.features.columns)
    np.testing.assert_allclose(pts.data[:, 0], np.asarray(tab["y"]) * 2 + 10)
    np.testing.assert_allclose(pts.data[:, 1], np.asarray(tab["x"]) * 2 - 4)
    ell = viewer.layers["field [ellipses]"]
    assert ell.nshapes == n and set(ell.shape_type) == {"ellipse"}
    fmap = viewer.layers["field [flux map]"]
    assert fmap.data.shape == img.shape and tuple(fmap.scale) == (2.0, 2.0)
    # the flux map sums to the total |flux| of the catalog
    assert fmap.data.sum() == pytest.approx(np.abs(np.asarray(tab["flux"])).sum(), rel=0.02)

    # re-running replaces the results instead of adding "[1]" copies
    w.run()
    wait_idle(qtbot, w.jobs)
    assert len([ly for ly in viewer.layers if ly.name.startswith("field [sources]")]) == 1

    from astropy.table import Table

    for fmt, suffix in detect_mod.EXPORT_FORMATS.items():
        out = w.export(tmp_path / f"cat{suffix}", fmt=fmt)
        assert out.exists() and out.stat().st_size > 0
        if suffix in (".ecsv", ".fits"):
            back = Table.read(out)
            assert len(back) == n
            np.testing.assert_allclose(np.asarray(back["x"]), np.asarray(tab["x"]), rtol=1e-6)
    assert (tmp_path / "cat.reg").read_text().count("ellipse") == n


def test_detect_too_many_for_ellipses_and_error(make_napari_viewer, qtbot, monkeypatch):
    viewer = make_napari_viewer()
    viewer.add_image(star_image((64, 64), n=12, seed=5), name="stars")
    w = DetectWidget(viewer)
    qtbot.addWidget(w)
    monkeypatch.setattr(detect_mod, "MAX_ELLIPSES", 3)
    notes = Notes()
    w.thresh.setValue(5.0)
    w.run()
    wait_idle(qtbot, w.jobs)
    assert "stars [ellipses]" not in [ly.name for ly in viewer.layers]
    assert "ellipses skipped" in w.summary.text()
    assert any("ellipses not drawn" in m for m in notes.infos())

    # an all-NaN image is a user error: a notification, no crash, widget usable again
    viewer.add_image(np.full((32, 32), np.nan, np.float32), name="blank")
    w.input.set_value(viewer.layers["blank"])
    w.run()
    wait_idle(qtbot, w.jobs)
    assert any("masked or non-finite" in m for m in notes.errors())
    assert w.run_button.isEnabled() and w.jobs.bar.isHidden()


def test_min_area_follows_a_restored_input(make_napari_viewer, qtbot):
    """On a restored (x2) layer Min. area becomes 20 (5 input pixels' area), apertures and flux errors follow the
    input's sky; a Min. area typed by the user is kept."""
    viewer = make_napari_viewer()
    viewer.add_image(star_image((32, 32)), name="field")
    w = DetectWidget(viewer)
    qtbot.addWidget(w)
    assert w.minarea.value() == 5
    viewer.add_image(star_image((64, 64)), name="field [fisr]", metadata={"scale_factor": 2.0})
    w.input.set_value(viewer.layers["field [fisr]"])
    assert w.minarea.value() == 20 and "x2 restoration" in w.minarea.toolTip()
    # Kron's minimum circle on the input's sky, flux errors from empty-sky apertures (correlated noise)
    assert w.options()["kron_min_radius"] == 7.0 and w.options()["aperture_noise"] == "empty"
    w.input.set_value(viewer.layers["field"])
    assert w.minarea.value() == 5
    assert w.options()["kron_min_radius"] == 3.5 and w.options()["aperture_noise"] == "pixel"
    w.minarea.setValue(9)
    w.input.set_value(viewer.layers["field [fisr]"])
    assert w.minarea.value() == 9

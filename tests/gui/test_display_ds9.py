"""Issue 23, item 2: DS9-grade display in the Display widget: header viewer, colorbar with
BUNIT, units in the pixel readout, blink, side by side aligned on the sky, file-named layers."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from napari_astrosr._napari.widgets.display import DisplayWidget, align_on_sky, install_wcs_status
from napari_astrosr.core.resample import scale_wcs

from widget_helpers import star_image

pytestmark = pytest.mark.gui


def _wcs(shape, *, rot_deg=0.0, pix_arcsec=0.1):
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [53.1, -27.8]
    w.wcs.crpix = [shape[1] / 2 + 0.5, shape[0] / 2 + 0.5]
    c, s = np.cos(np.radians(rot_deg)), np.sin(np.radians(rot_deg))
    d = pix_arcsec / 3600
    w.wcs.cd = np.array([[-d * c, d * s], [d * s, d * c]])
    return w


def _header(wcs, bunit="electron/s"):
    h = wcs.to_header()
    h["BUNIT"] = bunit
    h["EXPTIME"] = (1203.5, "exposure time [s]")
    h["FILTER"] = "F160W"
    return h


@pytest.fixture
def field(make_napari_viewer):
    viewer = make_napari_viewer()
    img = star_image((32, 40), seed=7)
    wcs = _wcs(img.shape)
    layer = viewer.add_image(img, name="input", metadata={"wcs": wcs, "header": _header(wcs), "bunit": "electron/s"})
    return viewer, layer, img, wcs


def test_header_viewer_filters_cards(field, qtbot):
    viewer, layer, _, _ = field
    w = DisplayWidget(viewer)
    qtbot.addWidget(w)
    viewer.layers.selection.active = layer
    text = w.header_text.toPlainText()
    assert "EXPTIME" in text and "FILTER" in text and "BUNIT" in text
    n = len(text.splitlines())
    w.header_filter.setText("exptime")
    assert w.header_text.toPlainText().splitlines() == [ln for ln in text.splitlines() if "EXPTIME" in ln]
    assert w.header_count.text() == f"'input': 1 of {n} cards"
    # a layer without a header says so
    bare = viewer.add_image(np.zeros((4, 4)), name="bare")
    viewer.layers.selection.active = bare
    assert w.header_text.toPlainText() == "" and "has no FITS header" in w.header_count.text()


def test_colorbar_unit_and_readout(field, qtbot):
    viewer, layer, img, _ = field
    other = viewer.add_image(img * 2, name="other")
    w = DisplayWidget(viewer)
    qtbot.addWidget(w)
    viewer.layers.selection.active = layer
    assert layer.colorbar.visible and not other.colorbar.visible
    assert viewer.text_overlay.visible and viewer.text_overlay.text == "input: electron/s"
    assert w.unit.text() == "unit: electron/s"
    viewer.layers.selection.active = other
    assert other.colorbar.visible and not layer.colorbar.visible
    assert viewer.text_overlay.text == "other: no unit (BUNIT not set)"
    w.colorbar.setChecked(False)
    assert not other.colorbar.visible and not viewer.text_overlay.visible
    # the pixel readout: value, unit, then RA/Dec
    install_wcs_status(layer)
    st = layer.get_status((5, 6), world=True)
    coords = st["coordinates"]
    assert f"{img[5, 6]:.4g}"[:4] in coords and "electron/s" in coords and "RA " in coords
    assert coords.index("electron/s") < coords.index("RA ")


def test_blink_alternates_and_restores(field, qtbot):
    viewer, layer, img, _ = field
    b = viewer.add_image(img[::-1].copy(), name="b")
    w = DisplayWidget(viewer)
    qtbot.addWidget(w)
    w.set_compare([layer, b])
    w.blink_ms.setValue(100)
    w.blink_button.setChecked(True)
    seen = set()
    for _ in range(8):
        qtbot.wait(60)
        assert layer.visible != b.visible  # exactly one shown at a time
        seen.add(layer.visible)
    assert seen == {True, False}
    # removing a blinking layer stops the blink without error
    viewer.layers.remove(b)
    qtbot.wait(250)
    assert w.blinker is None or not w.blinker.running
    w.blink_button.setChecked(False)
    assert layer.visible


def test_side_by_side_aligns_x2_and_x4_on_the_sky(field, qtbot):
    viewer, layer, img, wcs = field
    # results opened from files: on their own pixel grids (scale 1), each with its scaled WCS
    x2 = viewer.add_image(np.kron(img, np.ones((2, 2))) / 4, name="x2", metadata={"wcs": scale_wcs(wcs, 2)})
    x4 = viewer.add_image(np.kron(img, np.ones((4, 4))) / 16, name="x4", metadata={"wcs": scale_wcs(wcs, 4)})
    notes = viewer.add_points(np.zeros((1, 2)), name="pts")
    w = DisplayWidget(viewer)
    qtbot.addWidget(w)
    w.set_compare([layer, x2, x4])
    w.side_button.setChecked(True)
    assert viewer.grid.enabled and tuple(viewer.grid.shape) == (1, 3)
    assert not notes.visible and layer.visible and x2.visible and x4.visible
    assert "2 aligned on the sky" in w.compare_note.text()
    # the same sky lands on the same world coordinate in every layer
    for lyr, f in ((x2, 2), (x4, 4)):
        for p in ((0.0, 0.0), (10.0, 17.0), (31.0, 39.0)):
            q = tuple((np.asarray(p) + 0.5) * f - 0.5)
            np.testing.assert_allclose(lyr.data_to_world(q), layer.data_to_world(p), atol=1e-6)
        assert tuple(lyr.scale) == pytest.approx((1 / f, 1 / f))
    w.side_button.setChecked(False)
    assert not viewer.grid.enabled and notes.visible


def test_align_rotated_image_uses_an_affine(field):
    viewer, layer, img, wcs = field
    rw = _wcs((40, 40), rot_deg=30.0, pix_arcsec=0.05)
    rot = viewer.add_image(np.zeros((40, 40)), name="rot", metadata={"wcs": rw})
    assert align_on_sky(rot, layer)
    for p in ((3.0, 4.0), (20.0, 20.0), (35.0, 10.0)):
        sky = rw.pixel_to_world(p[1], p[0])
        qx, qy = wcs.world_to_pixel(sky)
        np.testing.assert_allclose(rot.data_to_world(p), layer.data_to_world((float(qy), float(qx))), atol=1e-3)
    assert not align_on_sky(viewer.add_image(np.zeros((4, 4)), name="nowcs"), layer)


def test_reader_names_layers_after_the_file(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    p = tmp_path / "j8xi01.fits.gz"
    rng = np.random.default_rng(0)
    fits.HDUList(
        [
            fits.PrimaryHDU(),
            fits.ImageHDU(rng.normal(size=(8, 8)).astype("f4"), name="SCI"),
            fits.ImageHDU(np.ones((6, 6), "f4"), name="WHT"),
        ]
    ).writeto(p)
    single = tmp_path / "coadd.fits"
    fits.PrimaryHDU(rng.normal(size=(8, 8)).astype("f4")).writeto(single)
    names = [ly.name for ly in viewer.open(str(p), plugin="napari-astrosr")]
    names += [ly.name for ly in viewer.open(str(single), plugin="napari-astrosr")]
    assert names == ["j8xi01 [SCI]", "j8xi01 [WHT]", "coadd"]

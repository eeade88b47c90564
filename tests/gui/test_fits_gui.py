"""napari integration: reader, samples, display (zscale, stretch, orientation, RA/Dec), writer."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from napari_astrosr.core.display import zscale_limits
from napari_astrosr.core.fits_io import read_fits
from napari_astrosr.data import sample_path

from conftest import shared_file

pytestmark = pytest.mark.gui
PLUGIN = "napari-astrosr"


def _wcs_header(shape):
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = [shape[1] / 2, shape[0] / 2]
    w.wcs.cdelt = [-1e-5, 1e-5]
    return w.to_header()


def test_open_single_file_metadata_and_zscale(make_napari_viewer, tmp_path, rng):
    p = tmp_path / "img.fits"
    data = rng.normal(10, 2, size=(40, 50)).astype(">f4")
    hdu = fits.PrimaryHDU(data, header=_wcs_header(data.shape))
    hdu.header["BUNIT"] = "electron / s"
    hdu.writeto(p)
    viewer = make_napari_viewer()
    layers = viewer.open(str(p), plugin=PLUGIN)
    assert len(layers) == 1
    layer = layers[0]
    assert layer.data.dtype == np.float32 and layer.data.dtype.isnative
    md = layer.metadata
    assert md["wcs"] is not None and md["bunit"] == "electron / s" and md["path"] == str(p)
    assert "BUNIT" in md["header"]
    assert layer.contrast_limits == pytest.approx(zscale_limits(layer.data))
    # the reader set the FITS orientation on the viewer that opened the file
    assert tuple(viewer.scene.camera.orientation2d) == ("up", "right")


def test_mef_layers_and_file_stacks(make_napari_viewer, tmp_path, rng):
    """One viewer for: multi-extension -> several layers; several files -> one stack layer."""
    viewer = make_napari_viewer()
    p = tmp_path / "mef.fits"
    fits.HDUList(
        [
            fits.PrimaryHDU(),
            fits.ImageHDU(rng.normal(size=(8, 8)).astype("f4"), name="SCI"),
            fits.ImageHDU(np.ones((8, 8), "f4"), name="ERR"),
        ]
    ).writeto(p)
    layers = viewer.open(str(p), plugin=PLUGIN)
    # (issue 23) named after the file, EXTNAME as a suffix
    assert [ly.name for ly in layers] == ["mef [SCI]", "mef [ERR]"]

    paths = []
    for i in range(3):
        f = tmp_path / f"f{i}.fits"
        fits.PrimaryHDU(np.full((6, 7), float(i), "f4")).writeto(f)
        paths.append(str(f))
    layers = viewer.open(paths, plugin=PLUGIN, stack=True)
    assert len(layers) == 1 and layers[0].data.shape == (3, 6, 7)
    assert layers[0].data[:, 0, 0].tolist() == [0.0, 1.0, 2.0]


def test_bad_files_notify_not_raise(make_napari_viewer, tmp_path):
    from napari_astrosr._napari._reader import get_reader, read_fits_layers

    bad = tmp_path / "garbage.fits"
    bad.write_bytes(b"not a fits file at all" * 300)
    table = tmp_path / "table.fits"
    fits.HDUList(
        [fits.PrimaryHDU(), fits.BinTableHDU.from_columns([fits.Column("a", "E", array=np.ones(2, "f4"))])]
    ).writeto(table)
    make_napari_viewer()
    assert get_reader(str(tmp_path / "x.png")) is None
    assert get_reader(str(table)) is None  # declined: no image data (with a warning)
    reader = get_reader(str(bad))
    assert reader is not None
    assert reader(str(bad)) == [(None,)]  # napari's "nothing to add": no exception
    assert read_fits_layers(str(tmp_path / "missing.fits")) == [(None,)]


def test_samples(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "hst_galaxy")
    viewer.open_sample(PLUGIN, "decam_stack")
    names = [ly.name for ly in viewer.layers]
    assert names == ["hst_galaxy", "decam_stack"]
    assert viewer.layers["hst_galaxy"].metadata["wcs"] is not None
    assert viewer.layers["decam_stack"].data.shape == (5, 128, 128)
    # real files from shared/data opened together as a stack (skipped when absent)
    paths = [str(shared_file(f"stack_decam_i_sfft/DEC-OBS04{c}.mini.fits")) for c in "abc"]
    layers = viewer.open(paths, plugin=PLUGIN, stack=True)
    assert len(layers) == 1 and layers[0].data.shape == (3, 256, 256)
    assert len(layers[0].metadata["headers"]) == 3 and layers[0].metadata["wcs"] is not None


def test_stretch_keeps_raw_values_and_status_shows_radec(make_napari_viewer):
    from napari_astrosr._napari.widgets.display import DisplayWidget

    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(sample_path("hst_galaxy")), plugin=PLUGIN)
    raw = read_fits(sample_path("hst_galaxy")).data
    widget = DisplayWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Display")
    limits = tuple(layer.contrast_limits)
    for name in ("sqrt", "log", "asinh", "linear"):
        widget.stretch.setCurrentText(name)
        assert layer.metadata["stretch"] == name
        assert layer.colormap.name == f"astrosr_gray_{name}"
        np.testing.assert_array_equal(layer.data, raw)  # data untouched
        assert tuple(layer.contrast_limits) == limits
    widget.stretch.setCurrentText("log")
    # the colormap, not the data, carries the curve: mid-grey input maps brighter than linear
    rgba = layer.colormap.map(np.array([0.1]))
    assert rgba[0, 0] > 0.5
    # hover value is raw data; status carries RA/Dec from the WCS
    y, x = 100, 120
    status = layer.get_status((y, x), world=True)
    assert f"{raw[y, x]:.4g}"[:4] in status["value"]
    ra, dec = layer.metadata["wcs"].pixel_to_world_values(x, y)
    assert "RA " in status["coordinates"] and f"{float(ra):.5f}" in status["coordinates"]
    viewer.cursor.position = (y, x)
    assert f"{float(ra):.5f}" in widget.radec.text()
    widget.zscale.click()
    assert tuple(layer.contrast_limits) == pytest.approx(zscale_limits(raw))


def test_lower_left_origin_pixel_check(make_napari_viewer, qtbot):
    """A bright row 0 appears at the bottom of the canvas; without the orientation, at the top."""
    from napari_astrosr._napari.widgets.display import set_lower_left_origin

    viewer = make_napari_viewer(show=True)
    data = np.zeros((20, 20), "f4")
    data[0, :] = 1.0  # row 0 bright
    viewer.add_image(data, contrast_limits=(0, 1), interpolation2d="nearest")
    viewer.reset_view()

    def rows_with_signal():
        shot = viewer.screenshot(canvas_only=True, flash=False)
        bright = shot[..., 0].astype(float) > 128
        rows = np.nonzero(bright.any(axis=1))[0]
        return rows, shot.shape[0]

    set_lower_left_origin(viewer, False)
    qtbot.wait(50)
    rows, height = rows_with_signal()
    assert rows.size and rows.mean() < height / 2  # default napari: row 0 at the top
    set_lower_left_origin(viewer, True)
    qtbot.wait(50)
    rows, height = rows_with_signal()
    assert rows.size and rows.mean() > height / 2  # FITS convention: row 0 at the bottom


def test_writer_roundtrip_and_protects_source(make_napari_viewer, tmp_path):
    import shutil

    src = tmp_path / "in.fits"
    shutil.copy(sample_path("hst_galaxy"), src)
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(src), plugin=PLUGIN)
    out = tmp_path / "out.fits"
    written = viewer.layers.save(str(out), selected=False, plugin=PLUGIN)
    assert written == [str(out)]
    back = read_fits(out)
    np.testing.assert_array_equal(back.data, layer.data)
    assert back.header["ASRIN1"] == "in.fits" and back.header["TELESCOP"] == "HST"
    np.testing.assert_allclose(back.wcs.pixel_to_world_values(5, 6), layer.metadata["wcs"].pixel_to_world_values(5, 6))
    before = src.read_bytes()
    with pytest.warns(UserWarning):
        assert viewer.layers.save(str(src), selected=False, plugin=PLUGIN) == []
    assert src.read_bytes() == before
    assert not list(tmp_path.glob(".*.tmp"))

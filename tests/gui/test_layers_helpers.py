"""_napari/_layers.py helpers: LayerDataTuples, result alignment in world coordinates, points."""

from __future__ import annotations

import astropy.units as u
import numpy as np
import pytest
from astropy.table import QTable
from napari.layers import Image

from napari_astrosr._napari._layers import image_layer_tuple, result_layer_kwargs, sources_to_points
from napari_astrosr._napari._writer import write_image
from napari_astrosr.core.fits_io import read_fits, read_layers
from napari_astrosr.data import sample_path

pytestmark = pytest.mark.gui


def test_image_layer_tuple_from_sample():
    img = read_fits(sample_path("hst_galaxy"))
    data, kw, kind = image_layer_tuple(img)
    assert kind == "image" and data is img.data
    assert kw["metadata"]["wcs"] is img.wcs and kw["metadata"]["path"] == img.path
    lo, hi = kw["contrast_limits"]
    assert lo < np.median(data) < hi


@pytest.mark.parametrize("factor", [2, 3, 0.5])
def test_result_layer_pixels_tile_the_input(factor):
    src = Image(np.zeros((12, 12), "f4"), scale=(1.0, 1.0), translate=(5.0, -2.0), metadata={"bunit": "adu"})
    n = int(12 * factor)
    out = np.zeros((n, n), "f4")
    kw = result_layer_kwargs(src, out, scale_factor=factor, name="x [m]")
    res = Image(out, **kw)

    # world extent of the pixel *edges* matches exactly
    def edges(layer):
        lo = np.asarray(layer.data_to_world((-0.5, -0.5)))
        hi = np.asarray(layer.data_to_world(np.array(layer.data.shape) - 0.5))
        return lo, hi

    for a, b in zip(edges(src), edges(res)):
        np.testing.assert_allclose(a, b, atol=1e-9)
    assert kw["metadata"]["bunit"] == "adu" and kw["metadata"]["scale_factor"] == factor
    assert kw["metadata"]["wcs"] is None  # a resampled grid never inherits the input WCS silently


def test_result_layer_on_stack_source():
    src = Image(np.zeros((5, 8, 8), "f4"))
    kw = result_layer_kwargs(src, np.zeros((16, 16), "f4"), scale_factor=2, name="s")
    assert kw["scale"] == (0.5, 0.5) and kw["translate"] == (-0.25, -0.25)


def test_sources_to_points_yx_order_and_features():
    t = QTable({"x": [1.0, 10.0] * u.pix, "y": [2.0, 20.0] * u.pix, "flux": [5.0, 6.0] * u.adu})
    data, feats = sources_to_points(t)
    np.testing.assert_array_equal(data, [[2.0, 1.0], [20.0, 10.0]])
    assert list(feats.columns) == ["x", "y", "flux"] and feats["flux"].tolist() == [5.0, 6.0]
    data, _ = sources_to_points(t, scale=(0.5, 0.5), translate=(-0.25, -0.25))
    np.testing.assert_allclose(data[0], [0.75, 0.25])
    empty, ef = sources_to_points(t[:0])
    assert empty.shape == (0, 2) and len(ef) == 0


def test_writer_stack_and_protect(tmp_path):
    (stack,) = read_layers(sample_path("decam_stack"))
    meta = {"name": "decam_stack", "metadata": stack.metadata}
    out = tmp_path / "stack.fits"
    assert write_image(str(out), stack.data, meta) == [str(out)]
    back = read_fits(out)
    assert back.data.shape == (5, 128, 128)
    np.testing.assert_array_equal(back.data, stack.data)
    assert back.header["ASRIN1"] == "decam_stack.fits" and "ASRIN2" not in back.header
    assert back.header["FWHM"] == stack.header["FWHM"]

"""astropy's Astronomical Image Display API on napari: the package's own conformance suite
(``ImageAPITest``) plus checks that what napari shows is the API state.

Needs Python >= 3.12 and ``astro-image-display-api`` (``scripts/test_display_api.sh`` sets up
``.venv312`` and runs this file); skipped elsewhere.
"""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gui

pytest.importorskip("astro_image_display_api", reason="needs astro-image-display-api (Python >= 3.12)")

from astro_image_display_api.api_test import ImageAPITest  # noqa: E402
from astropy import units as u  # noqa: E402
from astropy.coordinates import SkyCoord  # noqa: E402
from astropy.table import Table  # noqa: E402
from astropy.visualization import AsymmetricPercentileInterval, LogStretch, SqrtStretch  # noqa: E402
from astropy.wcs import WCS  # noqa: E402
from matplotlib import colormaps  # noqa: E402

from napari_astrosr._napari.image_display_api import NapariImageViewer  # noqa: E402

_OPEN: list = []


def _make_viewer(*args, **kwargs) -> NapariImageViewer:
    v = NapariImageViewer(*args, **kwargs)
    _OPEN.append(v)
    return v


@pytest.fixture(autouse=True)
def _close_viewers(qapp):
    yield
    while _OPEN:
        _OPEN.pop().viewer.close()


class TestNapariImageAPI(ImageAPITest):
    """The package's conformance suite, unchanged, on napari."""

    image_widget_class = staticmethod(_make_viewer)


# --------------------------------------------------------------------- napari shows the API state


def _sky_wcs(shape):
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.1, 2.2]
    w.wcs.crpix = [shape[1] / 2, shape[0] / 2]
    w.wcs.cdelt = [-0.1 / 3600, 0.1 / 3600]
    return w


@pytest.fixture
def field():
    rng = np.random.default_rng(3)
    return rng.gamma(2.0, 10.0, (60, 90))


def test_layer_data_cuts_and_colormap_follow_the_api(field):
    v = _make_viewer()
    v.load_image(field, image_label="f")
    layer = v.image_layer("f")
    assert layer.name == "f" and layer.visible
    np.testing.assert_array_equal(layer.data, field)
    # default cuts (1-95 percentile) are the contrast limits
    np.testing.assert_allclose(layer.contrast_limits, np.percentile(field, [1, 95]), rtol=1e-9)
    v.set_cuts(AsymmetricPercentileInterval(5, 99.5))
    np.testing.assert_allclose(layer.contrast_limits, np.percentile(field, [5, 99.5]), rtol=1e-9)
    v.set_cuts((3.0, 70.0))
    assert tuple(layer.contrast_limits) == (3.0, 70.0)
    # stretch + colormap: napari's colour at the normalised value x is the matplotlib map at stretch(x)
    v.set_colormap("viridis")
    v.set_stretch(LogStretch())
    x = np.array([0.0, 0.01, 0.1, 0.5, 1.0])
    want = colormaps["viridis"](LogStretch()(x, clip=True))
    np.testing.assert_allclose(layer.colormap.map(x), want, atol=2 / 255)
    v.set_stretch(SqrtStretch())
    np.testing.assert_allclose(layer.colormap.map(x), colormaps["viridis"](np.sqrt(x)), atol=2 / 255)
    # raw data untouched by the display
    np.testing.assert_array_equal(layer.data, field)


def test_only_the_displayed_image_is_visible(field):
    v = _make_viewer()
    v.load_image(field, image_label="a")
    v.load_image(field[::-1], image_label="b")
    assert not v.image_layer("a").visible and v.image_layer("b").visible
    v.load_image(field, image_label="a")
    assert v.image_layer("a").visible and not v.image_layer("b").visible


def test_camera_follows_viewport_in_pixels_and_on_the_sky(field):
    v = _make_viewer()
    wcs = _sky_wcs(field.shape)
    from astropy.nddata import NDData

    v.load_image(NDData(field, wcs=wcs), image_label="sky")
    h, w = v._canvas_size()
    # loading shows the whole image: centre of the image, fov = the largest dimension (x here)
    np.testing.assert_allclose(v.viewer.camera.center[-2:], ((60 - 1) / 2, (90 - 1) / 2), atol=1e-6)
    assert v.viewer.camera.zoom == pytest.approx(w / 90)
    v.set_viewport(center=(20.0, 10.0), fov=30)
    np.testing.assert_allclose(v.viewer.camera.center[-2:], (10.0, 20.0), atol=1e-9)
    assert v.viewer.camera.zoom == pytest.approx(w / 30)
    # on the sky: a SkyCoord lands on its WCS pixel, an angular fov on pixels at 0.1"/px
    c = wcs.pixel_to_world(40.0, 25.0)
    v.set_viewport(center=c, fov=6 * u.arcsec)
    np.testing.assert_allclose(v.viewer.camera.center[-2:], (25.0, 40.0), atol=1e-6)
    assert v.viewer.camera.zoom == pytest.approx(w / 60, rel=1e-6)
    got = v.get_viewport(sky_or_pixel="sky")
    assert isinstance(got["center"], SkyCoord) and got["center"].separation(c).to_value(u.arcsec) < 1e-6


def test_catalog_points_follow_the_api(field):
    v = _make_viewer()
    wcs = _sky_wcs(field.shape)
    from astropy.nddata import NDData

    v.load_image(NDData(field, wcs=wcs))
    x, y = np.array([5.0, 30.5, 80.0]), np.array([10.0, 40.0, 55.5])
    v.load_catalog(
        Table({"x": x, "y": y}), catalog_label="stars", catalog_style={"shape": "square", "color": "yellow", "size": 4}
    )
    pts = v.catalog_layer("stars")
    np.testing.assert_allclose(pts.data, np.column_stack([y, x]))
    assert pts.symbol[0].value == "square" and np.all(pts.size == 8)
    np.testing.assert_allclose(pts.border_color[0], [1, 1, 0, 1])
    # sky-only catalog: placed through the image's WCS
    v.load_catalog(Table({"coord": wcs.pixel_to_world(x, y)}), catalog_label="sky", use_skycoord=True)
    np.testing.assert_allclose(v.catalog_layer("sky").data, np.column_stack([y, x]), atol=1e-6)
    v.set_catalog_style(catalog_label="sky", shape="circle", color="red", size=3)
    assert v.catalog_layer("sky").symbol[0].value == "ring"
    v.remove_catalog("*")
    assert [ly.name for ly in v.viewer.layers] == ["image"]


def test_save_renders_what_napari_shows(field, tmp_path):
    from matplotlib.image import imread

    v = _make_viewer()
    v.load_image(field)
    v.set_colormap("magma")
    v.set_cuts((10.0, 40.0))
    v.save(tmp_path / "view.png")
    png = imread(tmp_path / "view.png")
    assert png.shape[:2] == field.shape
    # row 0 of the PNG is the top: FITS row 0 is its last row (lower-left origin)
    layer = v.image_layer()
    want = layer.colormap.map(np.clip((field[0] - 10.0) / 30.0, 0, 1))
    np.testing.assert_allclose(png[-1, :, :3], want[:, :3], atol=2 / 255)

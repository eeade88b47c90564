"""astropy's Astronomical Image Display API, backed by a napari viewer.

:class:`NapariImageViewer` implements ``astro_image_display_api.ImageViewerInterface``
(PyPI ``astro-image-display-api`` 0.3, Python >= 3.12): scripts and notebooks written
against that API (load images and catalogs, cuts, stretch, colormap, viewport in pixels
or on the sky, save) drive napari unchanged::

    from napari_astrosr._napari.image_display_api import NapariImageViewer
    v = NapariImageViewer()                        # a new napari viewer (or pass viewer=...)
    v.load_image("field.fits", image_label="field")
    v.set_cuts(AsymmetricPercentileInterval(1, 99)); v.set_stretch(AsinhStretch())
    v.set_colormap("viridis"); v.set_viewport(center=SkyCoord(...), fov=30 * u.arcsec)
    v.load_catalog(table)                          # x/y and/or a SkyCoord column
    v.save("view.png")

The API's bookkeeping (labels, validation, sky <-> pixel conversion) is the package's
reference ``ImageViewerLogic``; this class pushes every state change into napari through
that class's rendering hooks, so what napari shows is the API state:

- each image is an Image layer (raw data, scale 1, lower-left origin as in DS9);
  only the displayed image is visible;
- cuts -> the layer's contrast limits (the interval evaluated on the data);
- stretch and colormap -> one napari colormap whose colours are the matplotlib map at
  the stretched value (data and hover values stay raw);
- viewport -> camera centre (pixel or sky through the WCS) and zoom (the field of view
  spans the canvas along the image's largest dimension);
- catalogs -> Points layers (symbol, colour, size from the catalog style);
- save -> a PNG of the canvas when the window is shown, else the displayed image
  rendered through its contrast limits and colormap at one pixel per image pixel.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import numpy as np
from astro_image_display_api.image_viewer_logic import (
    DEFAULT_LABEL,
    ImageViewerLogic,
    docs_from_image_viewer_logic_if_missing,
)
from astropy.coordinates import SkyCoord

__all__ = ["NapariImageViewer"]

#: catalog style ``shape`` -> napari Points symbol
_SYMBOLS = {
    "circle": "ring",
    "square": "square",
    "crosshair": "cross",
    "cross": "cross",
    "x": "x",
    "diamond": "diamond",
    "star": "star",
    "triangle": "triangle_up",
    "plus": "cross",
}
_N_COLORS = 256


@docs_from_image_viewer_logic_if_missing
class NapariImageViewer(ImageViewerLogic):
    """The Astronomical Image Display API on a napari viewer.

    Parameters
    ----------
    viewer : napari.Viewer, optional
        The viewer to drive; a new hidden one by default (``viewer.window.show()``
        shows it).
    """

    def __init__(self, viewer: Any = None, **kwargs: Any) -> None:
        super().__init__()
        if viewer is None:
            import napari

            viewer = napari.Viewer(show=False, title="napari-astrosr: image display API")
        from .widgets.display import set_lower_left_origin

        self.viewer = viewer
        set_lower_left_origin(viewer, True)
        self._image_layers: dict[str, Any] = {}
        self._catalog_layers: dict[str, Any] = {}

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _display_name(label: str) -> str:
        return "image" if label == DEFAULT_LABEL else str(label)

    def _array(self, label: str) -> np.ndarray:
        data = self._images[label].data
        return np.asarray(getattr(data, "data", data), dtype=float)

    def image_layer(self, image_label: Optional[str] = None) -> Any:
        """The napari Image layer showing ``image_label``."""
        return self._image_layers[self._resolve_image_label(image_label)]

    def catalog_layer(self, catalog_label: Optional[str] = None) -> Any:
        """The napari Points layer showing ``catalog_label``."""
        return self._catalog_layers[self._resolve_catalog_label(catalog_label)]

    # ------------------------------------------------------------------ rendering hooks

    def _render_image(self, image_label: str) -> None:
        from napari.layers import Image

        arr = self._array(image_label)
        wcs = self._images[image_label].wcs
        unit = getattr(self._images[image_label].data, "unit", None)
        layer = self._image_layers.get(image_label)
        if layer is not None and layer in self.viewer.layers:
            layer.data = arr
            layer.metadata.update(wcs=wcs, bunit=str(unit) if unit is not None else None)
        else:
            layer = Image(
                arr,
                name=self._display_name(image_label),
                interpolation2d="nearest",
                metadata={"wcs": wcs, "bunit": str(unit) if unit is not None else None, "image_label": image_label},
            )
            self.viewer.add_layer(layer)
            self._image_layers[image_label] = layer
        for label, other in self._image_layers.items():
            other.visible = label in self._displayed_image_labels

    def _apply_cuts(self, image_label: str) -> None:
        layer = self._image_layers[image_label]
        lo, hi = self.cut_limits(image_label)
        layer.contrast_limits_range = (min(lo, layer.contrast_limits_range[0]), max(hi, layer.contrast_limits_range[1]))
        layer.contrast_limits = (lo, hi)

    def cut_limits(self, image_label: Optional[str] = None) -> tuple[float, float]:
        """The cuts of ``image_label`` evaluated on its data: napari's contrast limits."""
        label = self._resolve_image_label(image_label)
        arr = self._array(label)
        lo, hi = (float(v) for v in self._images[label].cuts.get_limits(arr[np.isfinite(arr)]))
        if not hi > lo:  # a flat image or a degenerate interval: napari needs lo < hi
            hi = lo + (abs(lo) * 1e-6 or 1e-6)
        return lo, hi

    def display_colormap(self, image_label: Optional[str] = None) -> Any:
        """The napari Colormap showing ``image_label``: the matplotlib map at the stretched value."""
        from matplotlib import colormaps
        from napari.utils.colormaps import Colormap

        label = self._resolve_image_label(image_label)
        info = self._images[label]
        name = info.colormap or "gray"
        x = np.linspace(0.0, 1.0, _N_COLORS)
        stretched = np.clip(info.stretch(x, clip=True), 0.0, 1.0) if info.stretch is not None else x
        colors = colormaps[name](stretched)
        stretch = type(info.stretch).__name__ if info.stretch is not None else "LinearStretch"
        return Colormap(
            colors=colors,
            controls=x,
            name=f"astrosr_api_{name}_{stretch}_{id(info.stretch)}",
            display_name=f"{name} ({stretch})",
        )

    def _apply_stretch(self, image_label: str) -> None:
        self._image_layers[image_label].colormap = self.display_colormap(image_label)

    _apply_colormap = _apply_stretch

    def _camera_for(self, image_label: str) -> tuple[tuple[float, float], float]:
        """(y, x) camera centre and the field of view in image pixels."""
        view = self.get_viewport(sky_or_pixel="pixel", image_label=image_label)
        cx, cy = (float(np.asarray(c)) for c in view["center"])
        return (cy, cx), float(view["fov"])

    def _apply_viewport(self, image_label: str) -> None:
        (cy, cx), fov = self._camera_for(image_label)
        self.viewer.camera.center = (cy, cx)
        # the field of view spans the canvas along the image's largest dimension
        h, w = self._canvas_size()
        extent = w if self._images[image_label].largest_dimension == 1 else h
        if fov > 0:
            self.viewer.camera.zoom = extent / fov

    def _canvas_size(self) -> tuple[int, int]:
        size = getattr(self.viewer, "_canvas_size", None)
        if size is not None and min(size) > 1:
            return int(size[0]), int(size[1])
        return 600, 800  # napari's default canvas before the window is first laid out

    def _draw_catalog(self, catalog_label: str) -> None:
        from napari.layers import Points

        info = self._catalogs[catalog_label]
        table, style = info.data, dict(info.style or {})
        xy = self._catalog_pixels(table)
        symbol = _SYMBOLS.get(str(style.get("shape", "circle")), "ring")
        size = float(style.get("size", 5))
        color = style.get("color", "red")
        name = "catalog" if catalog_label == DEFAULT_LABEL else f"{catalog_label} [catalog]"
        layer = self._catalog_layers.get(catalog_label)
        if layer is not None and layer in self.viewer.layers:
            self.viewer.layers.remove(layer)
        # napari sizes are diameters; the style's size is a marker radius in image pixels
        layer = Points(
            xy,
            name=name,
            symbol=symbol,
            size=2 * size,
            face_color="transparent",
            border_color=color,
            border_width=0.15,
            border_width_is_relative=True,
            metadata={"catalog_label": catalog_label, "style": style},
        )
        self.viewer.add_layer(layer)
        self._catalog_layers[catalog_label] = layer

    def _catalog_pixels(self, table: Any) -> np.ndarray:
        """(N, 2) napari (y, x) positions of a stored catalog (pixel columns, else its sky
        coordinates through the displayed image's WCS).
        """
        n = len(table)
        if n == 0:
            return np.zeros((0, 2))
        x, y = table["x"], table["y"]
        if x.dtype != object and np.all([v is not None for v in x]):
            return np.column_stack([np.asarray(y, float), np.asarray(x, float)])
        wcs = self._catalog_conversion_wcs(conversion_required=False)
        coords = table["coord"]
        if wcs is None or not isinstance(coords, SkyCoord):
            return np.zeros((0, 2))
        px, py = wcs.world_to_pixel(coords)
        return np.column_stack([np.asarray(py, float), np.asarray(px, float)])

    def _remove_catalog_marks(self, catalog_label: str) -> None:
        layer = self._catalog_layers.pop(catalog_label, None)
        if layer is not None and layer in self.viewer.layers:
            self.viewer.layers.remove(layer)

    # ------------------------------------------------------------------ saving

    def save(self, filename: str | os.PathLike, overwrite: bool = False, **kwargs: Any) -> None:
        """Save the current view as a PNG.

        Parameters
        ----------
        filename : str or os.PathLike
            Destination (PNG).
        overwrite : bool, optional
            Replace an existing file (otherwise ``FileExistsError``).
        **kwargs
            Ignored (the API lets viewers accept more keywords).

        Notes
        -----
        With the window shown this is napari's canvas screenshot (the viewport, the
        catalog markers). A hidden viewer has no rendered canvas, so the displayed image
        is rendered through its cuts, stretch and colormap at one pixel per image pixel,
        lower-left origin; a blank PNG when no image is loaded.
        """
        p = Path(filename)
        if p.exists() and not overwrite:
            raise FileExistsError(f"File {filename} already exists. Use overwrite=True to overwrite it.")
        if self.viewer.window._qt_window.isVisible():
            self.viewer.screenshot(path=str(p), canvas_only=True, flash=False)
            return
        from matplotlib.image import imsave

        rgba = self.rendered_image()
        imsave(p, rgba if rgba is not None else np.zeros((8, 8, 4)), format="png")

    def rendered_image(self, image_label: Optional[str] = None) -> Optional[np.ndarray]:
        """The displayed image as napari colours it: (H, W, 4) floats in [0, 1], row 0 at top
        (FITS row 0 at the bottom); None when no image is loaded.
        """
        if not self._images:
            return None
        if image_label is None and len(self._displayed_image_labels) == 1:
            image_label = self._displayed_image_labels[0]
        label = self._resolve_image_label(image_label)
        layer = self._image_layers[label]
        lo, hi = layer.contrast_limits
        arr = self._array(label)
        norm = np.clip((np.nan_to_num(arr, nan=lo) - lo) / (hi - lo), 0.0, 1.0)
        rgba = np.asarray(layer.colormap.map(norm.ravel()), dtype=float).reshape(arr.shape + (4,))
        return rgba[::-1]

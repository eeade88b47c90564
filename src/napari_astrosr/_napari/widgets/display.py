"""The "Display" dock widget and the viewer set-up shared by the reader, samples and demo.

- origin at lower left (FITS convention) through the camera orientation, never by
  flipping data: ``viewer.scene.camera.orientation2d = ('up', 'right')`` puts array row 0
  at the bottom of the canvas;
- zscale contrast limits (``core.display.zscale_limits``);
- linear/sqrt/log/asinh stretches applied as grey *colormap curves*
  (``core.display.stretch_curve``), so layer data and hover values stay raw;
- RA/Dec of the cursor: image layers with a WCS in ``metadata['wcs']`` get their
  ``get_status`` wrapped (napari 0.9 computes the status bar text from the active
  layer's ``get_status`` in a background thread; a wrapper is the one hook that shows
  sky coordinates there), and the widget shows them in its own label too.
"""

from __future__ import annotations

import weakref
from typing import Any, Optional

import numpy as np
from napari.layers import Image
from napari.utils.colormaps import Colormap
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ...core.display import STRETCHES, format_radec, pixel_to_radec, stretch_curve, zscale_limits

LOWER_LEFT = ("up", "right")
UPPER_LEFT = ("down", "right")
_PREPARED: list = []  # weakrefs of viewers already set up (ViewerModel is not hashable)


def stretch_colormap(name: str = "linear", *, n: int = 256) -> Colormap:
    """A grey napari Colormap whose brightness follows the named stretch."""
    controls, levels = stretch_curve(name, n=n)
    colors = np.column_stack([levels, levels, levels, np.ones_like(levels)])
    return Colormap(colors=colors, controls=controls, name=f"astrosr_gray_{name}", display_name=f"gray ({name})")


def apply_stretch(layer: Image, name: str) -> None:
    """Show ``layer`` with a stretch; data and contrast limits are untouched."""
    layer.colormap = stretch_colormap(name)
    layer.metadata["stretch"] = name


def apply_zscale(layer: Image) -> tuple[float, float]:
    """Set zscale contrast limits on ``layer`` (over all its planes) and return them."""
    lo, hi = zscale_limits(np.asarray(layer.data))
    layer.contrast_limits_range = (min(lo, float(np.nanmin(layer.data))) if np.isfinite(layer.data).any() else lo,
                                   max(hi, float(np.nanmax(layer.data))) if np.isfinite(layer.data).any() else hi)
    layer.contrast_limits = (lo, hi)
    return lo, hi


def set_lower_left_origin(viewer: Any, on: bool = True) -> None:
    """Put array row 0 at the bottom (FITS/DS9 convention) or back at the top."""
    viewer.scene.camera.orientation2d = LOWER_LEFT if on else UPPER_LEFT


def layer_radec(layer: Any, world_position: Any) -> Optional[tuple[float, float]]:
    """RA/Dec under a world position for a layer with ``metadata['wcs']``, else None."""
    wcs = (getattr(layer, "metadata", None) or {}).get("wcs")
    if wcs is None or world_position is None:
        return None
    data_pos = np.asarray(layer.world_to_data(world_position), dtype=float)
    if data_pos.size < 2:
        return None
    return pixel_to_radec(wcs, data_pos[-1], data_pos[-2])


def install_wcs_status(layer: Any) -> None:
    """Append RA/Dec to the layer's status-bar text when it has a WCS (idempotent)."""
    if getattr(layer, "_astrosr_status", False) or not isinstance(layer, Image):
        return
    if (layer.metadata or {}).get("wcs") is None:
        return
    original = layer.get_status

    def get_status(position=None, *, view_direction=None, dims_displayed=None, world=False, value=None):
        status = original(position, view_direction=view_direction, dims_displayed=dims_displayed,
                          world=world, value=value)
        try:
            pos = position if world else (layer.data_to_world(position) if position is not None else None)
            radec = layer_radec(layer, pos)
        except Exception:  # never break the status bar
            radec = None
        if radec is not None:
            text = format_radec(*radec)
            status["coords"] = f"{status.get('coords', '')} {text}"
            status["coordinates"] = f"{status.get('coordinates', '')}  {text}"
        return status

    layer.get_status = get_status
    layer._astrosr_status = True


def _on_inserted(event: Any) -> None:
    layer = event.value
    install_wcs_status(layer)


def setup_viewer(viewer: Any) -> None:
    """Lower-left origin, and RA/Dec status for current and future FITS layers (idempotent)."""
    set_lower_left_origin(viewer, True)
    for layer in viewer.layers:
        install_wcs_status(layer)
    if any(ref() is viewer for ref in _PREPARED):
        return
    _PREPARED[:] = [r for r in _PREPARED if r() is not None]
    _PREPARED.append(weakref.ref(viewer))
    viewer.layers.events.inserted.connect(_on_inserted)


class DisplayWidget(QWidget):
    """Stretch, zscale, origin and the cursor's RA/Dec for the selected image layer."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.stretch = QComboBox()
        self.stretch.addItems(list(STRETCHES))
        self.stretch.setToolTip("Colormap curve: the picture changes, data and hover values stay raw.")
        self.zscale = QPushButton("zscale")
        self.zscale.setToolTip("Set contrast limits with IRAF zscale")
        self.lower_left = QCheckBox("origin at lower left (FITS)")
        self.lower_left.setChecked(True)
        self.radec = QLabel("RA/Dec: -")
        self.radec.setWordWrap(True)
        form = QFormLayout()
        form.addRow("stretch", self.stretch)
        row = QHBoxLayout()
        row.addWidget(self.zscale)
        row.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(row)
        layout.addWidget(self.lower_left)
        layout.addWidget(self.radec)
        layout.addStretch(1)

        setup_viewer(napari_viewer)
        self.stretch.currentTextChanged.connect(self._stretch_changed)
        self.zscale.clicked.connect(self._zscale_clicked)
        self.lower_left.toggled.connect(lambda on: set_lower_left_origin(self.viewer, on))
        napari_viewer.layers.selection.events.active.connect(self._active_changed)
        napari_viewer.cursor.events.position.connect(self._cursor_moved)
        self._active_changed()

    def _image(self) -> Optional[Image]:
        layer = self.viewer.layers.selection.active
        if isinstance(layer, Image):
            return layer
        images = [ly for ly in self.viewer.layers if isinstance(ly, Image)]
        return images[-1] if images else None

    def _stretch_changed(self, name: str) -> None:
        layer = self._image()
        if layer is not None:
            apply_stretch(layer, name)

    def _zscale_clicked(self) -> None:
        layer = self._image()
        if layer is not None:
            apply_zscale(layer)

    def _active_changed(self, event: Any = None) -> None:
        layer = self._image()
        name = (layer.metadata or {}).get("stretch", "linear") if layer is not None else "linear"
        self.stretch.blockSignals(True)
        self.stretch.setCurrentText(name)
        self.stretch.blockSignals(False)

    def _cursor_moved(self, event: Any = None) -> None:
        layer = self._image()
        if layer is None:
            self.radec.setText("RA/Dec: -")
            return
        try:
            radec = layer_radec(layer, self.viewer.cursor.position)
        except Exception:
            radec = None
        if radec is None:
            wcs = (layer.metadata or {}).get("wcs")
            self.radec.setText("RA/Dec: - (layer has no WCS)" if wcs is None else "RA/Dec: -")
        else:
            self.radec.setText(format_radec(*radec))

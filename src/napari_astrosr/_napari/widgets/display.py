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
  sky coordinates there), and the widget shows them in its own label too; the pixel
  value is followed by the layer's BUNIT;
- a searchable FITS header viewer for the selected layer;
- a colorbar (napari's layer colorbar overlay) for the selected image, its unit (BUNIT)
  written above the canvas;
- blink: a timer shows two chosen layers in turn;
- side by side: the chosen layers in a napari grid (one camera: pan and zoom are linked),
  first aligned on the sky through their WCSs when they all have one, so an x2 or x4
  result sits over the same sky as its input.
"""

from __future__ import annotations

import weakref
from typing import Any, Optional

import numpy as np
from napari.layers import Image
from napari.utils.colormaps import Colormap
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
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
    layer.contrast_limits_range = (
        min(lo, float(np.nanmin(layer.data))) if np.isfinite(layer.data).any() else lo,
        max(hi, float(np.nanmax(layer.data))) if np.isfinite(layer.data).any() else hi,
    )
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
    """Append the unit (BUNIT) and RA/Dec to the layer's status-bar text (idempotent)."""
    if getattr(layer, "_astrosr_status", False) or not isinstance(layer, Image):
        return
    if (layer.metadata or {}).get("wcs") is None and not layer_unit(layer):
        return
    original = layer.get_status

    def get_status(position=None, *, view_direction=None, dims_displayed=None, world=False, value=None):
        status = original(
            position, view_direction=view_direction, dims_displayed=dims_displayed, world=world, value=value
        )
        try:
            pos = position if world else (layer.data_to_world(position) if position is not None else None)
            radec = layer_radec(layer, pos)
        except Exception:  # never break the status bar
            radec = None
        bunit = layer_unit(layer)
        if bunit and isinstance(status, dict) and status.get("coordinates"):
            status["coordinates"] = f"{status['coordinates']} {bunit}"
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


# ----------------------------------------------------------------------------- header, units


def header_lines(layer: Any) -> list[str]:
    """The 80-character cards of a layer's FITS header (``metadata['header']``), blank ones dropped."""
    hdr = (getattr(layer, "metadata", None) or {}).get("header")
    if hdr is None:
        return []
    try:
        return [c.image.rstrip() for c in hdr.cards if c.image.strip()]
    except AttributeError:  # a plain dict header
        return [f"{k:<8}= {v!r}" for k, v in dict(hdr).items()]


def filter_lines(lines: list[str], text: str) -> list[str]:
    """Cards containing every word of ``text`` (case-insensitive)."""
    words = text.lower().split()
    return [ln for ln in lines if all(w in ln.lower() for w in words)]


def layer_unit(layer: Any) -> str:
    """The layer's BUNIT (metadata ``bunit``, else the header's), or ''."""
    md = getattr(layer, "metadata", None) or {}
    unit = md.get("bunit")
    if not unit and md.get("header") is not None:
        try:
            unit = md["header"].get("BUNIT")
        except AttributeError:
            unit = None
    return str(unit).strip() if unit else ""


def show_colorbar(viewer: Any, layer: Optional[Image], on: bool = True) -> str:
    """Show napari's colorbar for ``layer`` only, with its unit above the canvas; returns the caption."""
    for ly in viewer.layers:
        if isinstance(ly, Image) and hasattr(ly, "colorbar"):
            ly.colorbar.visible = bool(on) and ly is layer
    if layer is None or not on:
        viewer.text_overlay.visible = False
        return ""
    caption = f"{layer.name}: {layer_unit(layer) or 'no unit (BUNIT not set)'}"
    viewer.text_overlay.text = caption
    viewer.text_overlay.position = "top_left"
    viewer.text_overlay.visible = True
    return caption


# ----------------------------------------------------------------------------- sky alignment


def sky_affine(layer_wcs: Any, ref_wcs: Any, shape: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Linear map (2x2, offset) from a layer's (row, col) pixels to a reference image's
    (row, col) pixels through the sky, fitted at the layer's centre (exact for TAN
    images of a small field).
    """
    cy, cx = (shape[-2] - 1) / 2.0, (shape[-1] - 1) / 2.0
    pts = np.array([[cx, cy], [cx + 1, cy], [cx, cy + 1]], dtype=float)
    sky = layer_wcs.celestial.pixel_to_world(pts[:, 0], pts[:, 1])
    rx, ry = ref_wcs.celestial.world_to_pixel(sky)
    q = np.column_stack([np.asarray(ry, float), np.asarray(rx, float)])  # (row, col)
    d_col, d_row = q[1] - q[0], q[2] - q[0]  # images of a +1 step in col, in row
    a = np.column_stack([d_row, d_col])  # columns: d/d row, d/d col
    offset = q[0] - a @ np.array([cy, cx])
    return a, offset


def align_on_sky(layer: Any, reference: Any) -> bool:
    """Place ``layer`` over ``reference`` by their WCSs (scale/translate; affine if rotated).

    Returns False (nothing changed) when either has no celestial WCS.
    """
    wl, wr = (ly.metadata.get("wcs") for ly in (layer, reference))
    if wl is None or wr is None or not getattr(wl, "has_celestial", False) or not getattr(wr, "has_celestial", False):
        return False
    a, off = sky_affine(wl, wr, np.shape(layer.data))
    rs, rt = np.asarray(reference.scale[-2:], float), np.asarray(reference.translate[-2:], float)
    a_world = np.diag(rs) @ a
    off_world = rs * off + rt
    if abs(a_world[0, 1]) + abs(a_world[1, 0]) < 1e-6 * (abs(a_world[0, 0]) + abs(a_world[1, 1])):
        layer.affine = np.eye(3)
        layer.scale = tuple(np.diag(a_world))
        layer.translate = tuple(off_world)
    else:  # rotated or flipped relative to the reference
        m = np.eye(3)
        m[:2, :2], m[:2, 2] = a_world, off_world
        layer.scale, layer.translate = (1.0, 1.0), (0.0, 0.0)
        layer.affine = m
    return True


# ----------------------------------------------------------------------------- blink, side by side


class Blinker:
    """Show layers in turn (only one of them visible at a time) until stopped."""

    def __init__(self, viewer: Any, layers: list, interval_ms: int = 500) -> None:
        self.viewer, self.layers = viewer, list(layers)
        self._saved = {id(ly): ly.visible for ly in self.layers}
        self.index = 0
        self.timer = QTimer()
        self.timer.setInterval(int(interval_ms))
        self.timer.timeout.connect(self.step)

    def start(self) -> None:
        self._show(0)
        self.timer.start()

    def step(self) -> None:
        alive = [ly for ly in self.layers if ly in self.viewer.layers]
        if len(alive) < 2:  # a layer was deleted: nothing left to blink
            self.stop()
            return
        self.layers = alive
        self._show((self.index + 1) % len(self.layers))

    def _show(self, i: int) -> None:
        self.index = i
        for k, ly in enumerate(self.layers):
            ly.visible = k == i

    def stop(self) -> None:
        self.timer.stop()
        for ly in self.layers:
            if ly in self.viewer.layers:
                ly.visible = self._saved.get(id(ly), True)

    @property
    def running(self) -> bool:
        return self.timer.isActive()


class SideBySide:
    """The chosen layers side by side in napari's grid (linked pan/zoom), aligned on the sky."""

    def __init__(self, viewer: Any) -> None:
        self.viewer = viewer
        self._saved: Optional[dict] = None

    @property
    def active(self) -> bool:
        return self._saved is not None

    def show(self, layers: list, *, align: bool = True) -> int:
        """Grid of ``layers`` (the first is the sky reference); returns how many were aligned."""
        if len(layers) < 2:
            raise ValueError("choose at least two layers to compare side by side")
        if self._saved is None:
            self._saved = {
                "visible": {id(ly): ly.visible for ly in self.viewer.layers},
                "grid": (self.viewer.grid.enabled, tuple(self.viewer.grid.shape), self.viewer.grid.stride),
            }
        aligned = 0
        if align:
            aligned = sum(align_on_sky(ly, layers[0]) for ly in layers[1:])
        chosen = {id(ly) for ly in layers}
        for ly in self.viewer.layers:
            ly.visible = id(ly) in chosen
        self.viewer.grid.stride = 1
        self.viewer.grid.shape = (1, len(layers))
        self.viewer.grid.enabled = True
        self.viewer.reset_view()
        return aligned

    def restore(self) -> None:
        """Back to one overlaid view with the visibility the layers had."""
        if self._saved is None:
            return
        enabled, shape, stride = self._saved["grid"]
        self.viewer.grid.enabled, self.viewer.grid.shape, self.viewer.grid.stride = enabled, shape, stride
        for ly in self.viewer.layers:
            ly.visible = self._saved["visible"].get(id(ly), ly.visible)
        self._saved = None


class DisplayWidget(QWidget):
    """Stretch, zscale, origin, colorbar, the cursor's RA/Dec, the header, blink and side by side."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        from .._workers import scroll_body

        self.viewer = napari_viewer
        self.stretch = QComboBox()
        self.stretch.addItems(list(STRETCHES))
        self.stretch.setToolTip("Colormap curve: the picture changes, data and hover values stay raw.")
        self.zscale = QPushButton("zscale")
        self.zscale.setToolTip("Set contrast limits with IRAF zscale")
        self.lower_left = QCheckBox("origin at lower left (FITS)")
        self.lower_left.setChecked(True)
        self.colorbar = QCheckBox("colorbar (with BUNIT)")
        self.colorbar.setChecked(True)
        self.unit = QLabel("")
        self.radec = QLabel("RA/Dec: -")
        self.radec.setWordWrap(True)
        form = QFormLayout()
        form.addRow("stretch", self.stretch)
        row = QHBoxLayout()
        row.addWidget(self.zscale)
        row.addStretch(1)

        # header viewer
        self.header_filter = QLineEdit()
        self.header_filter.setPlaceholderText("filter cards, e.g. EXPTIME or 'CD1'")
        self.header_filter.setClearButtonEnabled(True)
        self.header_text = QPlainTextEdit()
        self.header_text.setReadOnly(True)
        self.header_text.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.header_text.setMinimumHeight(160)
        font = self.header_text.font()
        font.setFamily("monospace")
        self.header_text.setFont(font)
        self.header_count = QLabel("")
        hbox = QGroupBox("FITS header")
        hl = QVBoxLayout(hbox)
        hl.addWidget(self.header_filter)
        hl.addWidget(self.header_text)
        hl.addWidget(self.header_count)

        # compare: blink and side by side
        self.compare_list = QListWidget()
        self.compare_list.setMinimumHeight(90)
        self.compare_list.setToolTip("Tick the layers to compare; the first ticked (lowest) is the sky reference.")
        self.blink_ms = QSpinBox()
        self.blink_ms.setRange(100, 5000)
        self.blink_ms.setSingleStep(100)
        self.blink_ms.setValue(500)
        self.blink_ms.setSuffix(" ms")
        self.blink_button = QPushButton("Blink")
        self.blink_button.setCheckable(True)
        self.side_button = QPushButton("Side by side")
        self.side_button.setCheckable(True)
        self.side_button.setToolTip(
            "The ticked layers next to each other (pan/zoom linked), aligned on the sky by their WCS"
        )
        self.compare_note = QLabel("")
        self.compare_note.setWordWrap(True)
        cbox = QGroupBox("Compare")
        cl = QVBoxLayout(cbox)
        cl.addWidget(self.compare_list)
        brow = QHBoxLayout()
        brow.addWidget(self.blink_button)
        brow.addWidget(self.blink_ms)
        brow.addWidget(self.side_button)
        cl.addLayout(brow)
        cl.addWidget(self.compare_note)

        layout = scroll_body(self)
        layout.addLayout(form)
        layout.addLayout(row)
        layout.addWidget(self.lower_left)
        layout.addWidget(self.colorbar)
        layout.addWidget(self.unit)
        layout.addWidget(self.radec)
        layout.addWidget(hbox)
        layout.addWidget(cbox)
        layout.addStretch(1)

        self.blinker: Optional[Blinker] = None
        self.side = SideBySide(napari_viewer)
        setup_viewer(napari_viewer)
        self.stretch.currentTextChanged.connect(self._stretch_changed)
        self.zscale.clicked.connect(self._zscale_clicked)
        self.lower_left.toggled.connect(lambda on: set_lower_left_origin(self.viewer, on))
        self.colorbar.toggled.connect(lambda _on: self._active_changed())
        self.header_filter.textChanged.connect(self._show_header)
        self.blink_button.toggled.connect(self.blink)
        self.side_button.toggled.connect(self.side_by_side)
        napari_viewer.layers.selection.events.active.connect(self._active_changed)
        napari_viewer.cursor.events.position.connect(self._cursor_moved)
        ev = napari_viewer.layers.events
        for e in (ev.inserted, ev.removed, ev.reordered):
            e.connect(self._refresh_compare)
        self._compare_layers: list = []
        self._refresh_compare()
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
        try:
            show_colorbar(self.viewer, layer, self.colorbar.isChecked())
        except Exception:  # noqa: BLE001 - a display nicety must never break selection
            pass
        self.unit.setText(f"unit: {layer_unit(layer) or 'not set (no BUNIT)'}" if layer is not None else "")
        self._show_header()

    # -- header

    def _show_header(self, *_: Any) -> None:
        layer = self.viewer.layers.selection.active or self._image()
        lines = header_lines(layer) if layer is not None else []
        shown = filter_lines(lines, self.header_filter.text())
        self.header_text.setPlainText("\n".join(shown))
        if layer is None:
            self.header_count.setText("no layer selected")
        elif not lines:
            self.header_count.setText(f"'{layer.name}' has no FITS header")
        else:
            self.header_count.setText(f"'{layer.name}': {len(shown)} of {len(lines)} cards")

    # -- compare

    def _refresh_compare(self, *_: Any) -> None:
        try:
            ticked = {id(ly) for ly in self.compare_layers()}
        except RuntimeError:  # widget deleted, viewer still alive
            return
        self._compare_layers = [ly for ly in self.viewer.layers if isinstance(ly, Image)]
        self.compare_list.clear()
        for ly in self._compare_layers:
            item = QListWidgetItem(ly.name)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if id(ly) in ticked else Qt.CheckState.Unchecked)
            self.compare_list.addItem(item)

    def compare_layers(self) -> list:
        """The ticked layers, bottom of the layer list first."""
        out = []
        for i in range(self.compare_list.count()):
            if self.compare_list.item(i).checkState() == Qt.CheckState.Checked and i < len(self._compare_layers):
                out.append(self._compare_layers[i])
        return [ly for ly in out if ly in self.viewer.layers]

    def set_compare(self, layers: list) -> None:
        """Tick exactly ``layers``."""
        ids = {id(ly) for ly in layers}
        for i, ly in enumerate(self._compare_layers):
            self.compare_list.item(i).setCheckState(Qt.CheckState.Checked if id(ly) in ids else Qt.CheckState.Unchecked)

    def blink(self, on: bool = True) -> None:
        """Start (or stop) showing the ticked layers in turn."""
        if self.blinker is not None:
            self.blinker.stop()
            self.blinker = None
        if on:
            layers = self.compare_layers()
            if len(layers) < 2:
                self.compare_note.setText("Blink: tick at least two layers")
                self.blink_button.blockSignals(True)
                self.blink_button.setChecked(False)
                self.blink_button.blockSignals(False)
                return
            self.blinker = Blinker(self.viewer, layers, self.blink_ms.value())
            self.blinker.start()
            self.compare_note.setText(f"blinking {len(layers)} layers every {self.blink_ms.value()} ms")
        else:
            self.compare_note.setText("")

    def side_by_side(self, on: bool = True) -> None:
        """Show the ticked layers side by side (or go back to one overlaid view)."""
        if not on:
            self.side.restore()
            self.compare_note.setText("")
            return
        layers = self.compare_layers()
        try:
            aligned = self.side.show(layers)
        except ValueError as exc:
            self.compare_note.setText(f"Side by side: {exc}")
            self.side_button.blockSignals(True)
            self.side_button.setChecked(False)
            self.side_button.blockSignals(False)
            return
        self.compare_note.setText(
            f"{len(layers)} layers side by side, pan/zoom linked"
            + (f"; {aligned} aligned on the sky to '{layers[0].name}'" if aligned else "")
        )

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

"""Detect widget: sep source extraction on an image layer.

Runs :func:`napari_astrosr.core.detection.detect_sources` (and, on request,
:func:`napari_astrosr.core.fluxmap.flux_map`) in a thread worker and shows:

- ``<input> [sources]``: a Points layer at the source centroids whose ``features``
  table is the catalog (napari's features-table widget then lists it);
- ``<input> [ellipses]``: the sep ellipses (3 a x 3 b, the extent SExtractor plots)
  as a Shapes layer, only up to :data:`MAX_ELLIPSES` sources (napari Shapes become
  slow with thousands of shapes; beyond that the widget says it skipped them);
- ``<input> [flux map]``: the flux-map Gaussians FISR uses as flux guidance (sums to
  the total |flux| of the catalog).

All layers share the input's world coordinates; their data (positions, features, marker
sizes, ellipse corners, the flux map's limits) are built in the worker, the main thread
only adds the layers, without selecting them. The catalog can be exported as
ECSV / FITS / CSV (:func:`core.catalogs.write_table`) or DS9 regions
(:func:`core.catalogs.write_regions`).
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any, Optional

import numpy as np
from napari.layers import Image, Points, Shapes
from napari.utils.notifications import show_info
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QWidget,
)

from ...core.detection import MINAREA, minarea_for_scale, options_for_scale, restored_scale
from ...exceptions import AstroSRError
from ...progress import Progress
from ...progress import run as run_job
from .._jobs import detect_with_map
from .._layers import overlay_layer_kwargs, overlay_limits, sources_to_points
from .._process import in_process
from .._workers import (
    ROLE,
    JobPanel,
    LayerCombo,
    SourceTag,
    display_pyramid,
    find_layer,
    is_input_image,
    layer_array,
    notify_error,
    put_layer,
    scroll_body,
    tag_layer,
)

#: Above this many sources no ellipse Shapes layer is drawn (napari Shapes get slow).
MAX_ELLIPSES = 2000
#: Ellipses are drawn at this multiple of sep's a, b: the 2.5 x (a, b) aperture that the Flux Error
#: measures and that the exported DS9 regions show (core.catalogs.write_regions), so screen and file agree.
ELLIPSE_K = 2.5

EXPORT_FORMATS = {
    "ECSV": ".ecsv",
    "FITS": ".fits",
    "CSV": ".csv",
    "DS9 regions": ".reg",
}


def _is_2d_image(layer: Any) -> bool:
    return is_input_image(layer)


def ellipse_corners(table: Any, *, k: float = ELLIPSE_K) -> np.ndarray:
    """The four (y, x) corners of each source's rotated bounding box, (N, 4, 2).

    napari draws an ellipse inscribed in those four corners. ``theta`` is sep's angle
    (radians, counter-clockwise from +x in pixel coordinates).
    """
    n = len(table)
    if n == 0:
        return np.zeros((0, 4, 2))
    x, y, a, b, th = (np.asarray(table[c], dtype=float) for c in ("x", "y", "a", "b", "theta"))
    A, B = k * a, k * b
    c, s = np.cos(th), np.sin(th)
    uv = np.array([(-1, -1), (1, -1), (1, 1), (-1, 1)], dtype=float)
    u, v = uv[:, 0][None, :], uv[:, 1][None, :]
    xs = x[:, None] + A[:, None] * c[:, None] * u - B[:, None] * s[:, None] * v
    ys = y[:, None] + A[:, None] * s[:, None] * u + B[:, None] * c[:, None] * v
    return np.stack([ys, xs], axis=-1)


def _ellipse_layer(corners: np.ndarray, *, name: str, width: float) -> Shapes:
    return Shapes(
        list(corners),
        shape_type="ellipse",
        name=f"{name} [ellipses]",
        edge_color="yellow",
        face_color="transparent",
        edge_width=width,
        metadata={"source_layer": name},
    )


def prepare_layers(
    table: Any,
    fmap: Optional[np.ndarray],
    *,
    scale: tuple[float, ...],
    translate: tuple[float, ...],
    ellipses: bool = True,
    name: str = "image",
) -> dict:
    """The layer data of a catalog over an image of world ``scale``/``translate`` (worker side).

    ``points``: (y, x) world positions, ``features`` (one row per source), ``size`` (marker
    sizes); ``corners``: the ellipses' (N, 4, 2) world corners, or None when not drawn
    (``ellipses`` False or more than :data:`MAX_ELLIPSES` sources) and ``shapes``, the
    ``<name> [ellipses]`` Shapes layer of them; ``fmap`` (the flux map or its display
    pyramid) and ``fmap_limits``.
    """
    sy, sx = (float(v) for v in scale[-2:])
    ty, tx = (float(v) for v in translate[-2:])
    n = len(table)
    out: dict[str, Any] = {"n": n, "corners": None, "shapes": None, "fmap_limits": None}
    if n:
        out["points"], out["features"] = sources_to_points(table, scale=(sy, sx), translate=(ty, tx))
        # small centroid markers: the ellipses show the extents
        out["size"] = np.clip(2 * np.asarray(table["a"], dtype=float), 4, 12) * abs(sx)
        if ellipses and n <= MAX_ELLIPSES:
            out["corners"] = ellipse_corners(table) * np.array([sy, sx]) + np.array([ty, tx])
            # the Shapes layer itself: its constructor triangulates every ellipse (seconds for a
            # few hundred on a loaded CPU), so it is built here, not in the GUI thread; a layer
            # not yet in a viewer has no Qt or vispy side
            out["shapes"] = _ellipse_layer(out["corners"], name=name, width=0.5 * abs(sx))
    if fmap is not None:
        out["fmap_limits"] = overlay_limits(fmap)
        out["fmap"] = display_pyramid(fmap)  # a multiscale pyramid above 1024 px
    return out


class DetectWidget(QWidget):
    """Detect sources on the chosen image layer (see the module docstring)."""

    def __init__(self, napari_viewer: Any, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.catalog: Any = None  # the last catalog (astropy QTable)
        self.catalog_tag: Optional[SourceTag] = None

        self.input = LayerCombo(self.viewer, Image, predicate=_is_2d_image)
        self.thresh = QDoubleSpinBox()
        self.thresh.setRange(0.1, 1000)
        self.thresh.setDecimals(2)
        self.thresh.setValue(1.5)
        self.thresh.setToolTip("Detection threshold in units of the background rms")
        self.minarea = QSpinBox()
        self.minarea.setRange(1, 10000)
        self.minarea.setValue(MINAREA)
        self._input_scale = 1.0  # the chosen layer's restoration scale (1: not a restoration)
        self._auto_minarea = MINAREA  # the value the input's grid chose; a value typed by the user is kept
        self.nthresh = QSpinBox()
        self.nthresh.setRange(1, 256)
        self.nthresh.setValue(32)
        self.cont = QDoubleSpinBox()
        self.cont.setDecimals(4)
        self.cont.setRange(0.0, 1.0)
        self.cont.setSingleStep(0.001)
        self.cont.setValue(0.005)
        self.cont.setToolTip("Deblending minimum contrast (1 = no deblending)")
        self.box = QSpinBox()
        self.box.setRange(4, 4096)
        self.box.setValue(64)
        self.box.setToolTip("Background mesh size in pixels")
        self.filter_size = QSpinBox()
        self.filter_size.setRange(1, 15)
        self.filter_size.setValue(3)
        self.subtract = QCheckBox("subtract background")
        self.subtract.setChecked(True)
        self.show_ellipses = QCheckBox(f"ellipses (up to {MAX_ELLIPSES} sources)")
        self.show_ellipses.setChecked(True)
        self.show_fluxmap = QCheckBox("flux map")
        self.show_fluxmap.setChecked(True)
        self.kernel = QComboBox()
        self.kernel.addItems(["gaussian", "airy"])

        self.run_button = QPushButton("Detect")
        self.run_button.clicked.connect(self.run)
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        self.export_format = QComboBox()
        self.export_format.addItems(list(EXPORT_FORMATS))
        self.export_button = QPushButton("Export catalog…")
        self.export_button.clicked.connect(self._export_dialog)
        self.export_button.setEnabled(False)

        self.input.currentIndexChanged.connect(self._follow_input_grid)
        self._follow_input_grid()

        form = QFormLayout()
        form.addRow("Input", self.input)
        form.addRow("Threshold (σ)", self.thresh)
        form.addRow("Min. area (px)", self.minarea)
        form.addRow("Deblend thresholds", self.nthresh)
        form.addRow("Deblend contrast", self.cont)
        form.addRow("Background box", self.box)
        form.addRow("Background filter", self.filter_size)
        form.addRow("", self.subtract)
        form.addRow("Show", self.show_ellipses)
        fm = QHBoxLayout()
        fm.addWidget(self.show_fluxmap)
        fm.addWidget(self.kernel)
        form.addRow("", fm)
        exp = QHBoxLayout()
        exp.addWidget(self.export_format)
        exp.addWidget(self.export_button)

        self.jobs = JobPanel(busy_widgets=[self.run_button, self.export_button])
        lay = scroll_body(self)
        lay.addLayout(form)
        lay.addWidget(self.run_button)
        lay.addWidget(self.jobs)
        lay.addWidget(self.summary)
        lay.addLayout(exp)
        lay.addStretch(1)

    def _follow_input_grid(self, *_: Any) -> None:
        """Min. area: the sky area of 5 input pixels on a restored layer (5 x scale^2 of its pixels), unless typed."""
        layer = self.input.value()
        meta = getattr(layer, "metadata", None) or {}
        try:
            scale = float(meta.get("scale_factor") or 1.0)
        except (TypeError, ValueError):
            scale = 1.0
        if scale == 1.0:
            scale = restored_scale(meta.get("header"))
        if not (np.isfinite(scale) and scale > 0):
            scale = 1.0
        self._input_scale = scale
        auto = minarea_for_scale(scale)
        if self.minarea.value() == self._auto_minarea:
            self.minarea.setValue(auto)
        self._auto_minarea = auto
        self.minarea.setToolTip(
            "Minimum connected pixels above the threshold"
            + (
                f". This layer is a x{scale:g} restoration: {auto} of its pixels cover the sky of {MINAREA} input "
                "pixels (fewer let its correlated noise through as sources)"
                if auto != MINAREA
                else ""
            )
        )

    # ------------------------------------------------------------------ running

    def options(self) -> dict:
        """detect_sources keyword arguments chosen in the widget.

        On a restored layer (x*s*) Kron's minimum circle is 3.5 *s* pixels and ``flux_err`` comes from empty-sky
        apertures (``core.detection.options_for_scale``): the restored noise is correlated.
        """
        return options_for_scale(self._input_scale) | dict(
            thresh=float(self.thresh.value()),
            minarea=int(self.minarea.value()),
            deblend_nthresh=int(self.nthresh.value()),
            deblend_cont=float(self.cont.value()),
            box=int(self.box.value()),
            filter_size=int(self.filter_size.value()),
            subtract_background=self.subtract.isChecked(),
        )

    def run(self) -> Any:
        """Start detection on the chosen layer (returns the worker, or None on bad input)."""
        layer = self.input.value()
        try:
            if layer is None:
                raise AstroSRError("Input: open or choose a 2-D image layer first")
            data = layer_array(layer)
        except AstroSRError as exc:
            notify_error(exc, context="Detect")
            return None
        tag = tag_layer(layer)
        opts = self.options()
        want_map = self.show_fluxmap.isChecked()
        want_ellipses = self.show_ellipses.isChecked()
        kernel = self.kernel.currentText()
        wcs = tag.metadata.get("wcs")

        def job(stop):
            # sep holds the GIL while it extracts: the catalog and flux map come from a worker process
            table, fmap = yield from in_process(
                detect_with_map, data, wcs=wcs, opts=opts, want_map=want_map, kernel=kernel, stop=stop
            )
            yield Progress(2, 2, f"preparing the layers of {len(table)} sources")
            prepared = prepare_layers(
                table, fmap, scale=tag.scale, translate=tag.translate, ellipses=want_ellipses, name=tag.name
            )
            return table, fmap, prepared

        return self.jobs.start(job, on_result=self._on_result, tag=tag, label="Detect")

    def _on_result(self, out: tuple, tag: Optional[SourceTag]) -> Any:
        table, fmap = out[:2]
        assert tag is not None
        # one layer per event-loop turn (the panel runs the steps): napari draws each before the next
        return self.iter_result_layers(table, fmap, tag, prepared=out[2] if len(out) > 2 else None)

    def add_result_layers(
        self, table: Any, fmap: Optional[np.ndarray], tag: SourceTag, *, prepared: Optional[dict] = None
    ) -> list:
        """Turn a catalog (+ flux map) into Points / Shapes / Image layers over the source.

        ``prepared`` is :func:`prepare_layers`'s output for the source's geometry when the job
        started (computed in the worker); it is rebuilt here when missing or when the source
        layer was moved since.
        """
        return run_job(self.iter_result_layers(table, fmap, tag, prepared=prepared))

    def iter_result_layers(
        self, table: Any, fmap: Optional[np.ndarray], tag: SourceTag, *, prepared: Optional[dict] = None
    ) -> Generator[None, None, list]:
        """:meth:`add_result_layers` as steps: yields after adding each layer, returns the layers."""
        src = find_layer(self.viewer, tag)
        scale = tuple(src.scale) if src is not None else tag.scale
        translate = tuple(src.translate) if src is not None else tag.translate
        if prepared is None or (scale, translate) != (tuple(tag.scale), tuple(tag.translate)):
            prepared = prepare_layers(
                table, fmap, scale=scale, translate=translate, ellipses=self.show_ellipses.isChecked(), name=tag.name
            )
        self.catalog, self.catalog_tag = table, tag
        n = len(table)
        layers = []
        rms = table.meta.get("globalrms")
        if n == 0:
            # nothing to draw: no empty layers (they would also become the next input)
            msg = (
                f"no sources in '{tag.name}' above {self.thresh.value():g} σ"
                + (f" (background rms {rms:.4g})" if rms is not None else "")
                + "; lower the Threshold or the Min. area"
            )
            self.summary.setText(msg)
            show_info(f"Detect: {msg}")
            self.export_button.setEnabled(True)
            return layers

        points = Points(
            prepared["points"],
            name=f"{tag.name} [sources]",
            features=prepared["features"],
            size=prepared["size"],
            face_color="transparent",
            border_color="lime",
            border_width=0.2,
            metadata={"catalog": table, "wcs": tag.metadata.get("wcs"), "source_layer": tag.name},
        )
        layers.append(put_layer(self.viewer, points, source_id=tag.layer_id, activate=False))
        yield

        note = ""
        if self.show_ellipses.isChecked() and n:
            if prepared["shapes"] is not None:
                shapes = prepared["shapes"]
                layers.append(put_layer(self.viewer, shapes, source_id=tag.layer_id, activate=False))
                yield
            elif n > MAX_ELLIPSES:
                note = f"; ellipses skipped ({n} > {MAX_ELLIPSES} sources: Shapes would be slow)"
                show_info(f"Detect: {n} sources — ellipses not drawn (limit {MAX_ELLIPSES}); the points show them all")
        if fmap is not None:
            shown = prepared["fmap"]
            # translucent, transparent where the map is ~0: visible over a zscale grey image
            fm = Image(
                shown,
                multiscale=isinstance(shown, list),
                name=f"{tag.name} [flux map]",
                scale=scale,
                translate=translate,
                visible=True,
                metadata={
                    "wcs": tag.metadata.get("wcs"),
                    "source_layer": tag.name,
                    "bunit": tag.metadata.get("bunit"),
                    ROLE: "flux map",
                },
                **overlay_layer_kwargs(fmap, limits=prepared["fmap_limits"]),
            )
            layers.append(put_layer(self.viewer, fm, source_id=tag.layer_id, activate=False))
        self.summary.setText(
            f"{n} sources in '{tag.name}'" + (f" (background rms {rms:.4g})" if rms is not None else "") + note
        )
        self.export_button.setEnabled(True)
        return layers

    # ------------------------------------------------------------------ export

    def export(self, path: str | Path, *, fmt: Optional[str] = None, overwrite: bool = True) -> Path:
        """Write the last catalog: ECSV/FITS/CSV table or DS9 regions (from the suffix by default)."""
        if self.catalog is None:
            raise AstroSRError("Export: run Detect first; there is no catalog yet")
        from ...core.catalogs import write_regions, write_table

        path = Path(path)
        fmt = fmt or next((k for k, v in EXPORT_FORMATS.items() if path.suffix.lower() == v), "ECSV")
        if fmt == "DS9 regions":
            wcs = self.catalog_tag.metadata.get("wcs") if self.catalog_tag else None
            return write_regions(self.catalog, path, wcs=wcs, overwrite=overwrite)
        tag = self.catalog_tag
        return write_table(
            self.catalog,
            path,
            format=EXPORT_FORMATS[fmt].lstrip("."),
            overwrite=overwrite,
            flux_unit=tag.metadata.get("bunit") if tag else None,
            meta={"image": tag.name} if tag else None,
        )

    def _export_dialog(self) -> None:
        fmt = self.export_format.currentText()
        suffix = EXPORT_FORMATS[fmt]
        default = f"{self.catalog_tag.name if self.catalog_tag else 'catalog'}_sources{suffix}"
        path, _ = QFileDialog.getSaveFileName(self, "Export catalog", default, f"{fmt} (*{suffix})")
        if not path:
            return
        try:
            out = self.export(path, fmt=fmt)
        except Exception as exc:  # noqa: BLE001 - shown to the user
            notify_error(exc, context="Export")
            return
        show_info(f"wrote {out}")

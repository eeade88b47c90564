"""Inspect widget: compare a prediction with a reference.

Pick any two 2-D image layers on compatible grids: the same shape, or one an integer
factor finer than the other. In the second case the finer image is *block-summed*
(flux-conserving, :func:`core.resample.block_sum`) onto the coarser grid before
comparing, and the widget says which one. The comparison then runs
:func:`core.metrics.evaluate_with_residuals` in a thread worker and shows:

- PSNR (with the data range used), SSIM, STAR's Flux Error, the median relative flux
  error (S/N > 10 sources) and the number of sources;
- ``<prediction> [residual]``: prediction - reference on the comparison grid
  (diverging colormap, limits symmetric about zero);
- ``<prediction> [source residuals]``: one point per reference source coloured by its
  relative flux residual (blue: too faint, red: too bright), the residual table as
  the layer's ``features``;
- a histogram of the residual pixels (matplotlib, embedded);
- ``<reference> [regions]``: a Shapes layer for regions of interest. Draw, move or
  delete rectangles (or polygons / ellipses) and each region's KL(ref || pred) and
  Jensen-Shannon divergence (:func:`core.metrics.region_divergence`) update in the
  table. Regions are rasterised as the CLI rasterises DS9 files (pixel centres inside,
  :func:`core.catalogs.region_to_mask`), so exporting them and running
  ``astrosr evaluate --rois`` gives the same numbers.

The residual catalog exports as ECSV/FITS/CSV; the regions as DS9 (with KL/JS in each
region's text) plus, for .ecsv/.csv, a table of the values.

Galaxy morphology (optional section)
    With the reference as ground truth (GT), the prediction as restoration (RS) and a third
    layer as the degraded input (LQ; on the GT grid or an integer factor coarser -- the factor
    is read from the shapes and passed as ``scale``), "Compare morphology" runs
    :func:`core.morphology.measure_morphology` in a thread worker (Sersic fits only when
    ticked: they are slow) and shows :func:`core.morphology.morphology_summary` (scatter RMSE
    of LQ and RS against GT and the reduction factor LQ/RS per quantity) plus the GT-vs-LQ /
    GT-vs-RS scatter plots (:func:`core.morphology.morphology_figure`). The per-galaxy table
    exports as ECSV/FITS/CSV, the plot as PNG.

Where the code lives: this module holds the comparison (metrics, residuals, histogram, regions);
the morphology section is :mod:`._inspect_morphology`, the exports and their dialogs :mod:`._export`
(both mixins of :class:`InspectWidget`); grid matching is :mod:`napari_astrosr.core.grids`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
from napari.layers import Image, Points, Shapes
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QWidget,
)

from ...core import grids as _core_grids
from ...exceptions import AstroSRError
from ...progress import Progress
from .._jobs import compare_for_display
from .._layers import sources_to_points
from .._process import in_process
from .._workers import (
    JobPanel,
    LayerCombo,
    SourceTag,
    display_pyramid,
    is_input_image,
    layer_array,
    notify_error,
    put_layer,
    put_residual,
    scroll_body,
    tag_layer,
)
from ._export import TABLE_FORMATS, InspectExports
from ._inspect_morphology import (  # noqa: F401  (re-exported: tests and callers import them from here)
    MORPH_LABELS,
    MORPH_QUANTITIES,
    MORPH_ROW_PX,
    SERSIC_QUANTITIES,
    MorphologyComparison,
    MorphologyTool,
    lq_scale,
)
from .restore import RESIDUAL_CMAP, symmetric_limits

#: Regions whose masks cover fewer pixels than this are evaluated on the main thread.
SYNC_ROI_PIXELS = 1_000_000
HIST_BINS = 100
TOOLTIPS = {
    "psnr": "peak signal-to-noise ratio, with the data range used (default: the reference's max - min)",
    "ssim": "structural similarity (7x7 window), same data range",
    "flux_error": "STAR's Flux Error: mean |f_ref - f_pred| in 2.5 x (a, b) apertures at the reference's sources",
    "flux_error_rel_median": "median |f_pred - f_ref| / f_ref over sources with S/N > 10",
    "n_sources": "sources detected on the reference (1.5 sigma)",
    "recall": "reference sources found again in the prediction (within 2 px, one-to-one)",
}


def _is_2d_image(layer: Any) -> bool:
    return is_input_image(layer)


# the grid logic lives in core (shared with `astrosr evaluate`); re-exported here for the widget's callers
grid_relation = _core_grids.grid_relation
match_grids = _core_grids.match_grids


@dataclass
class Comparison:
    """What the last comparison computed (arrays on the comparison grid)."""

    ref: np.ndarray
    pred: np.ndarray
    metrics: dict
    residuals: Any  # QTable
    note: str
    ref_tag: SourceTag
    pred_tag: SourceTag
    grid_tag: SourceTag
    hist: tuple


def shape_to_region(vertices: np.ndarray, shape_type: str) -> Any:
    """An astropy-regions pixel region from a napari shape's (row, col) vertices."""
    from astropy import units as u
    from regions import EllipsePixelRegion, PixCoord, PolygonPixelRegion

    v = np.asarray(vertices, dtype=float)[:, -2:]
    y, x = v[:, 0], v[:, 1]
    if shape_type == "ellipse":
        # napari stores an ellipse as the 4 corners of its (possibly rotated) bounding box
        c = v.mean(axis=0)
        w = float(np.hypot(*(v[1] - v[0])))
        h = float(np.hypot(*(v[2] - v[1])))
        dy, dx = v[1] - v[0]
        ang = float(np.degrees(np.arctan2(dy, dx)))
        return EllipsePixelRegion(PixCoord(c[1], c[0]), width=max(w, 1e-3), height=max(h, 1e-3), angle=ang * u.deg)
    if shape_type in ("rectangle", "polygon"):
        return PolygonPixelRegion(PixCoord(x, y))
    raise AstroSRError(f"a {shape_type} is not an area; draw rectangles, polygons or ellipses")


class InspectWidget(MorphologyTool, InspectExports, QWidget):
    """Compare a prediction layer with a reference layer (see the module docstring).

    The morphology section is :class:`._inspect_morphology.MorphologyTool`, the exports and their
    dialogs :class:`._export.InspectExports` (mixins).
    """

    def __init__(self, napari_viewer: Any, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.result: Optional[Comparison] = None
        self.regions_layer: Optional[Shapes] = None
        self.roi_values: list[dict] = []

        self.reference = LayerCombo(self.viewer, Image, predicate=_is_2d_image)
        self.prediction = LayerCombo(self.viewer, Image, predicate=_is_2d_image)
        if self.prediction.count() > 1:
            self.prediction.setCurrentIndex(0)
            self.reference.setCurrentIndex(1)
        self.run_button = QPushButton("Compare")
        self.run_button.clicked.connect(self.run)
        self.note = QLabel("")
        self.note.setWordWrap(True)

        self.values: dict[str, QLabel] = {}
        grid = QGridLayout()
        for i, (key, label) in enumerate(
            [
                ("psnr", "PSNR"),
                ("ssim", "SSIM"),
                ("flux_error", "Flux Error"),
                ("flux_error_rel_median", "rel. flux error"),
                ("n_sources", "sources"),
                ("recall", "recall"),
            ]
        ):
            name = QLabel(label)
            name.setToolTip(TOOLTIPS.get(key, ""))
            grid.addWidget(name, i, 0)
            self.values[key] = QLabel("–")
            self.values[key].setWordWrap(True)
            grid.addWidget(self.values[key], i, 1)
        grid.setColumnStretch(1, 1)

        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(3.2, 2.0), tight_layout=True)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(160)
        self.ax = self.figure.add_subplot(111)
        self._empty_hist()

        self.roi_table = QTableWidget(0, 4)
        self.roi_table.setHorizontalHeaderLabels(["region", "pixels", "KL", "JS"])
        self.roi_table.setMinimumHeight(100)
        self.roi_table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.roi_table.verticalHeader().setVisible(False)
        self.roi_hint = QLabel("Draw rectangles in the regions layer to get KL/JS per region.")
        self.roi_hint.setWordWrap(True)
        self.roi_jobs = JobPanel()

        self.table_format = QComboBox()
        self.table_format.addItems(list(TABLE_FORMATS))
        self.export_res = QPushButton("Export residuals…")
        self.export_res.clicked.connect(self._export_residuals_dialog)
        self.export_reg = QPushButton("Export regions…")
        self.export_reg.clicked.connect(self._export_regions_dialog)
        for b in (self.export_res, self.export_reg):
            b.setEnabled(False)

        form = QFormLayout()
        form.addRow("Reference", self.reference)
        form.addRow("Prediction", self.prediction)
        exp = QHBoxLayout()
        exp.addWidget(self.table_format)
        exp.addWidget(self.export_res)
        exp.addWidget(self.export_reg)

        self.jobs = JobPanel(busy_widgets=[self.run_button, self.export_res, self.export_reg])
        lay = scroll_body(self)
        lay.addLayout(form)
        lay.addWidget(self.run_button)
        lay.addWidget(self.jobs)
        lay.addWidget(self.note)
        lay.addLayout(grid)
        lay.addWidget(self.canvas)
        lay.addWidget(self.roi_hint)
        lay.addWidget(self.roi_table)
        lay.addWidget(self.roi_jobs)
        lay.addLayout(exp)
        lay.addWidget(self._build_morphology())

    def run(self) -> Any:
        """Start the comparison (returns the worker, or None on bad input)."""
        ref_layer, pred_layer = self.reference.value(), self.prediction.value()
        try:
            if ref_layer is None or pred_layer is None:
                raise AstroSRError("Inspect: choose a reference and a prediction image layer")
            if ref_layer is pred_layer:
                raise AstroSRError("Inspect: reference and prediction are the same layer; choose two")
            grid_relation(np.shape(ref_layer.data), np.shape(pred_layer.data))  # fail fast, before copying
            ref, pred = layer_array(ref_layer), layer_array(pred_layer)
        except AstroSRError as exc:
            notify_error(exc, context="Inspect")
            return None
        ref_tag, pred_tag = tag_layer(ref_layer), tag_layer(pred_layer)

        wcs_ref, wcs_pred = ref_tag.metadata.get("wcs"), pred_tag.metadata.get("wcs")

        def job(stop):
            # sep's extraction holds the GIL: the comparison runs in the worker process
            out = yield from in_process(
                compare_for_display, ref, pred, wcs_ref=wcs_ref, wcs_pred=wcs_pred, bins=HIST_BINS, stop=stop
            )
            grid_tag = ref_tag if out["grid"] == "reference" else pred_tag
            comp = Comparison(
                out["ref"],
                out["pred"],
                out["metrics"],
                out["sources"],
                out["note"],
                ref_tag,
                pred_tag,
                grid_tag,
                out["hist"],
            )
            return comp, out["resid"], out["display"]

        return self.jobs.start(job, on_result=self._on_result, tag=pred_tag, label="Inspect")

    def _on_result(self, out: tuple, _tag: Any) -> None:
        comp, resid = out[:2]
        self.result = comp
        self.show_comparison(comp, resid, display=out[2] if len(out) > 2 else None)

    def show_comparison(self, comp: Comparison, resid: np.ndarray, *, display: Optional[dict] = None) -> None:
        """Metrics labels, residual and source layers, histogram, regions layer.

        ``display``: the residual's display pyramid and symmetric limits, computed in the
        worker (computed here when missing). The layers are added without being selected.
        """
        if display is None:
            display = {"residual": display_pyramid(resid), "limits": symmetric_limits(resid)}
        m = comp.metrics
        fmt = {
            "psnr": lambda v: f"{v:.2f} dB (range {m.get('data_range', float('nan')):.4g})",
            "ssim": lambda v: f"{v:.4f}",
            "flux_error": lambda v: f"{v:.4g}",
            "flux_error_rel_median": lambda v: f"{100 * v:.2f} % (median, S/N>10)",
            "n_sources": lambda v: f"{v} (S/N>10: {m.get('n_sources_snr10', '?')})",
            "recall": lambda v: f"{v:.3f}",
        }
        for key, lab in self.values.items():
            v = m.get(key)
            lab.setText("undefined" if v is None else fmt[key](v))
        warn = "; ".join(m.get("warnings", []))
        self.note.setText(f"{comp.pred_tag.name} vs {comp.ref_tag.name}: {comp.note}" + (f". {warn}" if warn else ""))

        g = comp.grid_tag
        scale, translate = g.scale[-2:], g.translate[-2:]
        source_id = (comp.ref_tag.layer_id, comp.pred_tag.layer_id)
        shown = display["residual"]
        rl = Image(
            shown,
            multiscale=isinstance(shown, list),
            name=f"{comp.pred_tag.name} [residual]",
            scale=scale,
            translate=translate,
            colormap=RESIDUAL_CMAP,
            contrast_limits=display["limits"],
            metadata={
                "wcs": g.metadata.get("wcs"),
                "bunit": g.metadata.get("bunit"),
                "astrosr": {"residual": "prediction - reference", "reference": comp.ref_tag.name, "grid": comp.note},
            },
        )
        rl.metadata["astrosr_source"] = source_id
        # one residual per pair: replaces Restore's "output - input" of the same two layers
        put_residual(self.viewer, rl, prediction=comp.pred_tag.name, reference=comp.ref_tag.name, activate=False)

        tab = comp.residuals
        pts, features = sources_to_points(tab, scale=scale, translate=translate)
        rel = np.asarray(tab["rel_delta"], dtype=float) if len(tab) else np.zeros(0)
        lim = symmetric_limits(rel[np.isfinite(rel)] if np.isfinite(rel).any() else np.ones(1))[1]
        from matplotlib import colormaps

        colors = colormaps[RESIDUAL_CMAP]((np.nan_to_num(rel, nan=0.0) / lim + 1) / 2) if len(tab) else "white"
        if len(tab):
            colors[~np.isfinite(rel)] = (0.5, 0.5, 0.5, 1.0)
        pl = Points(
            pts,
            name=f"{comp.pred_tag.name} [source residuals]",
            features=features,
            face_color=colors,
            border_color="black",
            border_width=0.1,
            size=6 * abs(scale[-1]),
            metadata={"catalog": tab, "rel_delta_limits": (-lim, lim), "wcs": g.metadata.get("wcs")},
        )
        put_layer(self.viewer, pl, source_id=source_id, activate=False)
        self._draw_hist(comp)
        self._ensure_regions_layer(comp)
        for b in (self.export_res, self.export_reg):
            b.setEnabled(True)
        self.update_regions()

    # ------------------------------------------------------------------ histogram

    def _empty_hist(self) -> None:
        self.ax.clear()
        self.ax.set_xlabel("prediction − reference")
        self.ax.set_ylabel("pixels")
        self.canvas.draw_idle()

    def _draw_hist(self, comp: Comparison) -> None:
        counts, edges, outside = comp.hist
        self.ax.clear()
        self.ax.stairs(counts, edges, fill=True, color="tab:gray")
        self.ax.axvline(0, color="k", lw=0.8)
        self.ax.set_yscale("log")
        self.ax.set_xlabel("prediction − reference" + (f"  ({outside} px beyond range)" if outside else ""))
        self.ax.set_ylabel("pixels")
        self.canvas.draw_idle()

    # ------------------------------------------------------------------ regions

    def _ensure_regions_layer(self, comp: Comparison) -> None:
        g = comp.grid_tag
        name = f"{comp.ref_tag.name} [regions]"
        layer = self.viewer.layers[name] if name in self.viewer.layers else None
        if not isinstance(layer, Shapes):
            layer = Shapes(
                name=name,
                scale=g.scale[-2:],
                translate=g.translate[-2:],
                edge_color="cyan",
                face_color="transparent",
                edge_width=max(1.0, 0.005 * max(comp.ref.shape)),
                ndim=2,
            )
            self.viewer.add_layer(layer)
        else:
            layer.scale, layer.translate = g.scale[-2:], g.translate[-2:]
        self.set_regions_layer(layer)

    def set_regions_layer(self, layer: Shapes) -> None:
        """Follow ``layer``: every added, moved or deleted shape re-computes KL/JS."""
        if self.regions_layer is layer:
            return
        if self.regions_layer is not None:
            try:
                self.regions_layer.events.data.disconnect(self._on_shapes_data)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.regions_layer = layer
        layer.events.data.connect(self._on_shapes_data)

    def _on_shapes_data(self, event: Any = None) -> None:
        action = str(getattr(event, "action", "changed")).lower()
        # napari emits "changing" continuously while dragging; compute when it settles
        if action.endswith("ing"):
            return
        self.update_regions()

    def region_masks(self) -> list[tuple[str, Any, Optional[np.ndarray], str]]:
        """(name, region, mask or None, problem) for each shape of the regions layer."""
        from ...core.catalogs import region_to_mask

        out = []
        if self.regions_layer is None or self.result is None:
            return out
        shape = self.result.ref.shape
        for i, (verts, kind) in enumerate(zip(self.regions_layer.data, self.regions_layer.shape_type)):
            name = f"roi{i + 1}"
            try:
                reg = shape_to_region(verts, kind)
                out.append((name, reg, region_to_mask(reg, shape), ""))
            except AstroSRError as exc:
                out.append((name, None, None, str(exc)))
        return out

    def update_regions(self) -> None:
        """Recompute KL/JS of every region (main thread when small, else a worker)."""
        if self.result is None or self.regions_layer is None:
            return
        rois = self.region_masks()
        ref, pred = self.result.ref, self.result.pred

        def compute(items):
            from ...core.metrics import region_divergence

            vals = []
            for name, reg, mask, problem in items:
                entry = dict(name=name, region=reg, kl=None, js=None, n_pixels=0, error=problem)
                if mask is not None:
                    try:
                        entry.update(region_divergence(ref, pred, mask))
                    except AstroSRError as exc:
                        entry["error"] = str(exc)
                vals.append(entry)
            return vals

        npix = sum(int(m.sum()) for _, _, m, _ in rois if m is not None)
        if npix <= SYNC_ROI_PIXELS:
            self._show_rois(compute(rois))
            return
        if self.roi_jobs.busy:  # the running job will be followed by this one
            self.roi_jobs.stop()
            self.roi_jobs.finished.connect(self._rerun_regions_once)
            return

        def job(stop):
            yield Progress(0, 1, f"KL/JS of {len(rois)} regions ({npix:,} pixels)")
            return compute(rois)

        self.roi_jobs.start(job, on_result=lambda vals, _t: self._show_rois(vals), label="Regions")

    def _rerun_regions_once(self, *_: Any) -> None:
        self.roi_jobs.finished.disconnect(self._rerun_regions_once)
        self.update_regions()

    def _show_rois(self, vals: list[dict]) -> None:
        self.roi_values = vals
        self.roi_table.setRowCount(len(vals))
        for r, v in enumerate(vals):
            cells = [
                v["name"],
                str(v["n_pixels"]),
                "–" if v["kl"] is None else f"{v['kl']:.4g}",
                "–" if v["js"] is None else f"{v['js']:.4g}",
            ]
            for c, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if v.get("error"):
                    item.setToolTip(v["error"])
                self.roi_table.setItem(r, c, item)

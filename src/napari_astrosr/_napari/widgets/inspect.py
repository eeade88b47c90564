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
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
from napari.layers import Image, Points, Shapes
from napari.utils.notifications import show_info
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QScrollArea,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ...exceptions import AstroSRError
from ...progress import Progress
from .._layers import sources_to_points
from .._workers import (
    JobPanel,
    LayerCombo,
    SourceTag,
    is_input_image,
    layer_array,
    notify_error,
    put_layer,
    put_residual,
    scroll_body,
    tag_layer,
)
from ...core import grids as _core_grids
from .restore import RESIDUAL_CMAP, symmetric_limits

#: Regions whose masks cover fewer pixels than this are evaluated on the main thread.
SYNC_ROI_PIXELS = 1_000_000
HIST_BINS = 100
TABLE_FORMATS = {"ECSV": ".ecsv", "FITS": ".fits", "CSV": ".csv"}
TOOLTIPS = {
    "psnr": "peak signal-to-noise ratio, with the data range used (default: the reference's max - min)",
    "ssim": "structural similarity (7x7 window), same data range",
    "flux_error": "STAR's Flux Error: mean |f_ref - f_pred| in 2.5 x (a, b) apertures at the reference's sources",
    "flux_error_rel_median": "median |f_pred - f_ref| / f_ref over sources with S/N > 10",
    "n_sources": "sources detected on the reference (1.5 sigma)",
    "recall": "reference sources found again in the prediction (within 2 px, one-to-one)",
}
#: Row labels of the morphology summary table (quantity keys of core.morphology).
MORPH_LABELS = {"iso_flux": "isophotal flux", "kron_flux": "Kron flux", "e1": "e1", "e2": "e2", "r50": "R50",
                "sersic_n": "Sersic n", "sersic_r50": "Sersic R50", "pixels": "pixels"}
MORPH_QUANTITIES = ("iso_flux", "kron_flux", "e1", "e2", "r50")
SERSIC_QUANTITIES = ("sersic_n", "sersic_r50")
#: Height (pixels) of one quantity's row of scatter plots in the widget; the canvas follows the
#: dock's width and scrolls vertically rather than squeezing five rows into the dock.
MORPH_ROW_PX = 180


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


def lq_scale(gt_shape: tuple, lq_shape: tuple) -> Optional[int]:
    """GT pixels per LQ pixel from the shapes (:func:`core.grids.lq_scale`): None when LQ is on the GT grid."""
    k = _core_grids.lq_scale(gt_shape, lq_shape)
    return None if k == 1 else k


@dataclass
class MorphologyComparison:
    """What the last morphology comparison computed."""

    table: Any  # QTable, one row per galaxy
    summary: dict
    figure: Any  # matplotlib Figure (no pyplot)
    quantities: tuple
    scale: Optional[int]
    fit_sersic: bool
    gt_tag: SourceTag
    lq_tag: SourceTag
    rs_tag: SourceTag


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


class InspectWidget(QWidget):
    """Compare a prediction layer with a reference layer (see the module docstring)."""

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
            [("psnr", "PSNR"), ("ssim", "SSIM"), ("flux_error", "Flux Error"),
             ("flux_error_rel_median", "rel. flux error"), ("n_sources", "sources"),
             ("recall", "recall")]
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

    # ------------------------------------------------------------------ morphology UI

    def _build_morphology(self) -> QGroupBox:
        self.morph_result: Optional[MorphologyComparison] = None
        box = QGroupBox("Galaxy morphology")
        self.lq = LayerCombo(self.viewer, Image, predicate=_is_2d_image)
        chosen = {self.reference.value(), self.prediction.value()}
        others = [lyr for lyr in self.lq.layers() if lyr not in chosen]
        if others:
            self.lq.set_value(others[0])
        self.lq.setToolTip("the degraded input: on the reference grid or an integer factor coarser")
        self.sersic = QCheckBox("Sersic fits (slow)")
        self.sersic.setChecked(False)
        self.sersic.setToolTip("PSF-free Sersic fits of every galaxy in GT, LQ and RS; adds Sersic n and R50")
        self.morph_button = QPushButton("Compare morphology")
        self.morph_button.setToolTip("reference = ground truth (GT), prediction = restoration (RS)")
        self.morph_button.clicked.connect(self.run_morphology)
        self.morph_note = QLabel("Reference = ground truth, prediction = restoration; choose the degraded input.")
        self.morph_note.setWordWrap(True)

        self.morph_table = QTableWidget(0, 5)
        # columns: scatter RMSE of LQ and of RS against GT, and their ratio (header tooltips say so)
        self.morph_table.setHorizontalHeaderLabels(["quantity", "N", "σ LQ", "σ RS", "LQ/RS"])
        header = self.morph_table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        self.morph_table.verticalHeader().setVisible(False)
        self.morph_table.setMinimumHeight(120)
        for c, tip in enumerate(["", "galaxies measured in both", "scatter (RMSE) of LQ vs GT (fluxes: relative)",
                                 "scatter (RMSE) of RS vs GT (fluxes: relative)",
                                 "scatter reduction σ LQ / σ RS: > 1 means the restoration is closer to GT"]):
            self.morph_table.horizontalHeaderItem(c).setToolTip(tip)

        self.morph_canvas: Any = None
        self.morph_scroll = QScrollArea()
        self.morph_scroll.setWidgetResizable(True)  # width follows the dock; the height scrolls
        self.morph_scroll.setMinimumHeight(260)

        self.export_morph = QPushButton("Export morphology table…")
        self.export_morph.clicked.connect(self._export_morphology_dialog)
        self.save_plot = QPushButton("Save plot…")
        self.save_plot.clicked.connect(self._save_plot_dialog)
        for b in (self.morph_button, self.export_morph, self.save_plot):
            self.jobs.add_busy_widget(b)

        form = QFormLayout()
        form.addRow("Input (LQ)", self.lq)
        row = QHBoxLayout()
        row.addWidget(self.sersic)
        row.addWidget(self.morph_button, 1)
        exp = QHBoxLayout()
        exp.addWidget(self.export_morph)
        exp.addWidget(self.save_plot)
        lay = QVBoxLayout(box)
        lay.addLayout(form)
        lay.addLayout(row)
        lay.addWidget(self.morph_note)
        lay.addWidget(self.morph_table)
        lay.addWidget(self.morph_scroll)
        lay.addLayout(exp)
        return box

    # ------------------------------------------------------------------ morphology run

    def run_morphology(self) -> Any:
        """Start the GT/LQ/RS morphology comparison (returns the worker, or None on bad input)."""
        gt_layer, rs_layer, lq_layer = self.reference.value(), self.prediction.value(), self.lq.value()
        fit = bool(self.sersic.isChecked())
        try:
            if gt_layer is None or rs_layer is None or lq_layer is None:
                raise AstroSRError("Morphology: choose reference (GT), prediction (RS) and input (LQ) image layers")
            if len({id(gt_layer), id(rs_layer), id(lq_layer)}) < 3:
                raise AstroSRError("Morphology: reference, prediction and input must be three different layers")
            gt_shape, rs_shape = np.shape(gt_layer.data), np.shape(rs_layer.data)
            if gt_shape != rs_shape:
                raise AstroSRError(f"Morphology: prediction (RS) {rs_shape} and reference (GT) {gt_shape} must be "
                                   "on the same grid; restore at the reference's scale")
            scale = lq_scale(gt_shape, np.shape(lq_layer.data))  # fail fast, before copying
            gt, lq, rs = layer_array(gt_layer), layer_array(lq_layer), layer_array(rs_layer)
        except AstroSRError as exc:
            notify_error(exc, context="Morphology")
            return None
        gt_tag, lq_tag, rs_tag = tag_layer(gt_layer), tag_layer(lq_layer), tag_layer(rs_layer)
        quantities = MORPH_QUANTITIES + (SERSIC_QUANTITIES if fit else ())
        title = f"{rs_tag.name} vs {gt_tag.name} (LQ: {lq_tag.name})"

        def job(stop):
            from ...core.morphology import measure_morphology, morphology_figure, morphology_summary

            yield Progress(0, 2, "apertures, fluxes, shapes" + (" and Sersic fits" if fit else ""))
            table = measure_morphology(gt, lq, rs, scale=scale, fit_sersic=fit)
            yield Progress(1, 2, "summary and plot")
            summary = morphology_summary(table, quantities=quantities)
            fig = morphology_figure(table, quantities=quantities, title=title, summary=summary)
            return MorphologyComparison(table, summary, fig, quantities, scale, fit, gt_tag, lq_tag, rs_tag)

        return self.jobs.start(job, on_result=self._on_morphology, tag=rs_tag, label="Morphology")

    def _on_morphology(self, res: MorphologyComparison, _tag: Any) -> None:
        self.morph_result = res
        self.show_morphology(res)

    def show_morphology(self, res: MorphologyComparison) -> None:
        """Fill the summary table and embed the scatter-plot figure."""
        s = res.summary
        rows = []
        for q in res.quantities + ("pixels",):
            e = s.get(q)
            if e is None:
                continue
            if q == "pixels":
                lq, rs = e["lq"]["median_rmse_over_peak"], e["rs"]["median_rmse_over_peak"]
                n = s["n_galaxies"]
            else:
                lq, rs, n = e["lq"]["rmse"], e["rs"]["rmse"], min(e["lq"]["n"], e["rs"]["n"])
            rows.append((MORPH_LABELS.get(q, q), n, lq, rs, e.get("scatter_reduction")))
        self.morph_table.setRowCount(len(rows))
        tips = {"isophotal flux": "relative: flux / GT flux - 1", "Kron flux": "relative: flux / GT flux - 1",
                "R50": "pixels", "Sersic R50": "pixels", "pixels": "median per-galaxy pixel RMSE / GT peak"}
        for r, (label, n, lq, rs, red) in enumerate(rows):
            cells = [label, str(n)] + ["–" if v is None else f"{v:.3g}" for v in (lq, rs, red)]
            for c, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setToolTip(tips.get(label, ""))
                self.morph_table.setItem(r, c, item)
        self.morph_table.resizeRowsToContents()
        t = self.morph_table
        t.setMinimumHeight(t.horizontalHeader().sizeHint().height() + sum(t.rowHeight(i) for i in range(len(rows)))
                           + t.horizontalScrollBar().sizeHint().height() + 2 * t.frameWidth() + 2)

        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg

        old = self.morph_scroll.takeWidget()
        if old is not None:
            old.deleteLater()
        fig = res.figure
        fig.set_dpi(72)  # 8-pt labels stay legible at dock size
        self.morph_canvas = FigureCanvasQTAgg(fig)
        self.morph_canvas.setMinimumSize(300, MORPH_ROW_PX * max(len(fig.axes) // 2, 1))
        self.morph_scroll.setWidget(self.morph_canvas)
        self.morph_canvas.draw_idle()
        scale = f"LQ x{res.scale} coarser, split flux-conservingly onto the GT grid" if res.scale else "LQ on the GT grid"
        fail = ""
        if res.fit_sersic:
            fail = ", Sersic fits failed: " + "/".join(f"{s.get(f'sersic_failures_{im}', 0)}" for im in ("gt", "lq", "rs"))
            fail += " (GT/LQ/RS)"
        self.morph_note.setText(f"{s['n_galaxies']} galaxies, apertures from LQ; {scale}{fail}.")

    # ------------------------------------------------------------------ morphology export

    def export_morphology(self, path: str | Path, *, overwrite: bool = True) -> Path:
        """Write the per-galaxy morphology table (ECSV/FITS/CSV from the suffix)."""
        if self.morph_result is None:
            raise AstroSRError("Export: run Compare morphology first")
        from ...core.catalogs import write_table

        r = self.morph_result
        meta = {"reference_gt": r.gt_tag.name, "input_lq": r.lq_tag.name, "restoration_rs": r.rs_tag.name,
                "fit_sersic": r.fit_sersic}
        return write_table(r.table, path, overwrite=overwrite, meta=meta)

    def save_morphology_plot(self, path: str | Path, *, overwrite: bool = True) -> Path:
        """Write the GT-vs-LQ / GT-vs-RS scatter plots as a PNG."""
        if self.morph_result is None:
            raise AstroSRError("Save plot: run Compare morphology first")
        path = Path(path)
        if path.exists() and not overwrite:
            raise AstroSRError(f"{path} exists; choose another name")
        from ...core.morphology import plot_morphology

        r = self.morph_result
        return plot_morphology(r.table, path, quantities=r.quantities,
                               title=f"{r.rs_tag.name} vs {r.gt_tag.name} (LQ: {r.lq_tag.name})")

    def _export_morphology_dialog(self) -> None:
        suffix = TABLE_FORMATS[self.table_format.currentText()]
        path = self._save_dialog("Export morphology table", f"morphology{suffix}", f"Table (*{suffix})")
        if path:
            try:
                show_info(f"wrote {self.export_morphology(path)}")
            except Exception as exc:  # noqa: BLE001
                notify_error(exc, context="Export")

    def _save_plot_dialog(self) -> None:
        path = self._save_dialog("Save morphology plot", "morphology.png", "PNG image (*.png)")
        if path:
            try:
                show_info(f"wrote {self.save_morphology_plot(path)}")
            except Exception as exc:  # noqa: BLE001
                notify_error(exc, context="Save plot")

    # ------------------------------------------------------------------ compare

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

        def job(stop):
            from ...core.metrics import evaluate_with_residuals

            yield Progress(0, 3, "matching grids")
            ref_c, pred_c, grid, note = match_grids(ref, pred)
            grid_tag = ref_tag if grid == "reference" else pred_tag
            yield Progress(1, 3, "PSNR, SSIM, sources and per-source flux")
            metrics, res = evaluate_with_residuals(ref_c, pred_c, wcs=grid_tag.metadata.get("wcs"))
            yield Progress(2, 3, "residual histogram")
            resid = (pred_c.astype(np.float64) - ref_c).astype(np.float32)
            finite = resid[np.isfinite(resid)]
            lim = float(np.percentile(np.abs(finite), 99.9)) if finite.size else 1.0
            lim = lim if lim > 0 else 1.0
            counts, edges = np.histogram(finite, bins=HIST_BINS, range=(-lim, lim))
            return Comparison(ref_c, pred_c, metrics, res, note, ref_tag, pred_tag, grid_tag,
                              (counts, edges, int(finite.size - counts.sum()))), resid

        return self.jobs.start(job, on_result=self._on_result, tag=pred_tag, label="Inspect")

    def _on_result(self, out: tuple, _tag: Any) -> None:
        comp, resid = out
        self.result = comp
        self.show_comparison(comp, resid)

    def show_comparison(self, comp: Comparison, resid: np.ndarray) -> None:
        """Metrics labels, residual and source layers, histogram, regions layer."""
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
        rl = Image(
            resid,
            name=f"{comp.pred_tag.name} [residual]",
            scale=scale,
            translate=translate,
            colormap=RESIDUAL_CMAP,
            contrast_limits=symmetric_limits(resid),
            metadata={"wcs": g.metadata.get("wcs"), "bunit": g.metadata.get("bunit"),
                      "astrosr": {"residual": "prediction - reference",
                                  "reference": comp.ref_tag.name, "grid": comp.note}},
        )
        rl.metadata["astrosr_source"] = source_id
        # one residual per pair: replaces Restore's "output - input" of the same two layers
        put_residual(self.viewer, rl, prediction=comp.pred_tag.name, reference=comp.ref_tag.name)

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
        put_layer(self.viewer, pl, source_id=source_id)
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
            cells = [v["name"], str(v["n_pixels"]),
                     "–" if v["kl"] is None else f"{v['kl']:.4g}",
                     "–" if v["js"] is None else f"{v['js']:.4g}"]
            for c, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if v.get("error"):
                    item.setToolTip(v["error"])
                self.roi_table.setItem(r, c, item)

    # ------------------------------------------------------------------ export

    def export_residuals(self, path: str | Path, *, overwrite: bool = True) -> Path:
        """Write the per-source residual table (ECSV/FITS/CSV from the suffix)."""
        if self.result is None:
            raise AstroSRError("Export: run Compare first")
        from ...core.catalogs import write_table

        meta = {"reference": self.result.ref_tag.name, "prediction": self.result.pred_tag.name,
                "grid": self.result.note}
        meta.update({k: v for k, v in self.result.metrics.items() if isinstance(v, (int, float, str)) and v is not None})
        return write_table(self.result.residuals, path, overwrite=overwrite, meta=meta,
                           flux_unit=self.result.grid_tag.metadata.get("bunit"))

    def export_regions(self, path: str | Path, *, overwrite: bool = True) -> Path:
        """Write the regions: ``.reg`` DS9 (KL/JS in each region's text), or a table (.ecsv/.csv/.fits)."""
        if self.result is None:
            raise AstroSRError("Export: run Compare first")
        vals = [v for v in self.roi_values if v.get("region") is not None]
        if not vals:
            raise AstroSRError("Export: draw at least one region in the regions layer first")
        path = Path(path)
        if path.exists() and not overwrite:
            raise AstroSRError(f"{path} exists; choose another name")
        if path.suffix.lower() == ".reg":
            from regions import Regions

            regs = []
            for v in vals:
                r = v["region"].copy()
                kl = "nan" if v["kl"] is None else f"{v['kl']:.4g}"
                js = "nan" if v["js"] is None else f"{v['js']:.4g}"
                r.meta["text"] = f"{v['name']} KL={kl} JS={js}"
                regs.append(r)
            tmp = path.with_name(path.name + ".tmp")
            Regions(regs).write(str(tmp), format="ds9", overwrite=True)
            tmp.replace(path)  # atomic: no half-written file on error
            return path
        from astropy.table import Table

        from ...core.catalogs import write_table

        t = Table(
            {
                "name": [v["name"] for v in vals],
                "n_pixels": [v["n_pixels"] for v in vals],
                "kl": [np.nan if v["kl"] is None else v["kl"] for v in vals],
                "js": [np.nan if v["js"] is None else v["js"] for v in vals],
                "region": [v["region"].serialize(format="ds9").strip().splitlines()[-1] for v in vals],
            }
        )
        return write_table(t, path, overwrite=overwrite,
                           meta={"reference": self.result.ref_tag.name, "prediction": self.result.pred_tag.name,
                                 "divergence": "KL(ref||pred), JS in nats, 64 shared bins"})

    def _save_dialog(self, title: str, default: str, filt: str) -> Optional[str]:
        path, _ = QFileDialog.getSaveFileName(self, title, default, filt)
        return path or None

    def _export_residuals_dialog(self) -> None:
        suffix = TABLE_FORMATS[self.table_format.currentText()]
        path = self._save_dialog("Export source residuals", f"residuals{suffix}", f"Table (*{suffix})")
        if path:
            try:
                show_info(f"wrote {self.export_residuals(path)}")
            except Exception as exc:  # noqa: BLE001
                notify_error(exc, context="Export")

    def _export_regions_dialog(self) -> None:
        path = self._save_dialog("Export regions", "regions.reg", "DS9 regions (*.reg);;Table (*.ecsv *.csv *.fits)")
        if path:
            try:
                show_info(f"wrote {self.export_regions(path)}")
            except Exception as exc:  # noqa: BLE001
                notify_error(exc, context="Export")

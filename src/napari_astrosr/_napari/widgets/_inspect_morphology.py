"""The Inspect widget's galaxy-morphology tool (GT / LQ / RS), a mixin of :class:`.inspect.InspectWidget`.

Builds the "Galaxy morphology" box, runs :func:`core.morphology.measure_morphology` in a thread
worker and shows :func:`core.morphology.morphology_summary` and the scatter plots. It uses the
widget's ``viewer``, ``reference``, ``prediction`` and ``jobs``; the exports are in :mod:`._export`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
from napari.layers import Image
from qtpy.QtWidgets import (
    QCheckBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QScrollArea,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

from ...core import grids as _core_grids
from ...exceptions import AstroSRError
from ...progress import Progress
from .._jobs import measure_morphology_job
from .._process import in_process
from .._workers import (
    LayerCombo,
    SourceTag,
    is_input_image,
    layer_array,
    notify_error,
    tag_layer,
)

#: Row labels of the morphology summary table (quantity keys of core.morphology).
MORPH_LABELS = {
    "iso_flux": "isophotal flux",
    "kron_flux": "Kron flux",
    "e1": "e1",
    "e2": "e2",
    "r50": "R50",
    "sersic_n": "Sersic n",
    "sersic_r50": "Sersic R50",
    "pixels": "pixels",
}
MORPH_QUANTITIES = ("iso_flux", "kron_flux", "e1", "e2", "r50")
SERSIC_QUANTITIES = ("sersic_n", "sersic_r50")
#: Height (pixels) of one quantity's row of scatter plots in the widget; the canvas follows the
#: dock's width and scrolls vertically rather than squeezing five rows into the dock.
MORPH_ROW_PX = 180


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


class MorphologyTool:
    """The morphology section of :class:`.inspect.InspectWidget` (a mixin: no ``__init__``)."""

    # ------------------------------------------------------------------ morphology UI

    def _build_morphology(self) -> QGroupBox:
        self.morph_result: Optional[MorphologyComparison] = None
        box = QGroupBox("Galaxy morphology")
        self.lq = LayerCombo(self.viewer, Image, predicate=is_input_image)
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
        for c, tip in enumerate(
            [
                "",
                "galaxies measured in both",
                "scatter (RMSE) of LQ vs GT (fluxes: relative)",
                "scatter (RMSE) of RS vs GT (fluxes: relative)",
                "scatter reduction σ LQ / σ RS: > 1 means the restoration is closer to GT",
            ]
        ):
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
                raise AstroSRError(
                    f"Morphology: prediction (RS) {rs_shape} and reference (GT) {gt_shape} must be "
                    "on the same grid; restore at the reference's scale"
                )
            scale = lq_scale(gt_shape, np.shape(lq_layer.data))  # fail fast, before copying
            gt, lq, rs = layer_array(gt_layer), layer_array(lq_layer), layer_array(rs_layer)
        except AstroSRError as exc:
            notify_error(exc, context="Morphology")
            return None
        gt_tag, lq_tag, rs_tag = tag_layer(gt_layer), tag_layer(lq_layer), tag_layer(rs_layer)
        quantities = MORPH_QUANTITIES + (SERSIC_QUANTITIES if fit else ())
        title = f"{rs_tag.name} vs {gt_tag.name} (LQ: {lq_tag.name})"

        def job(stop):
            from ...core.morphology import morphology_figure

            # the measurements in the worker process (photutils and the fits hold the GIL for long)
            table, summary = yield from in_process(
                measure_morphology_job, gt, lq, rs, scale=scale, fit=fit, quantities=quantities, stop=stop
            )
            yield Progress(1, 2, "summary and plot")
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
        tips = {
            "isophotal flux": "relative: flux / GT flux - 1",
            "Kron flux": "relative: flux / GT flux - 1",
            "R50": "pixels",
            "Sersic R50": "pixels",
            "pixels": "median per-galaxy pixel RMSE / GT peak",
        }
        for r, (label, n, lq, rs, red) in enumerate(rows):
            cells = [label, str(n)] + ["–" if v is None else f"{v:.3g}" for v in (lq, rs, red)]
            for c, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setToolTip(tips.get(label, ""))
                self.morph_table.setItem(r, c, item)
        self.morph_table.resizeRowsToContents()
        t = self.morph_table
        t.setMinimumHeight(
            t.horizontalHeader().sizeHint().height()
            + sum(t.rowHeight(i) for i in range(len(rows)))
            + t.horizontalScrollBar().sizeHint().height()
            + 2 * t.frameWidth()
            + 2
        )

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
        scale = (
            f"LQ x{res.scale} coarser, split flux-conservingly onto the GT grid" if res.scale else "LQ on the GT grid"
        )
        fail = ""
        if res.fit_sersic:
            fail = ", Sersic fits failed: " + "/".join(
                f"{s.get(f'sersic_failures_{im}', 0)}" for im in ("gt", "lq", "rs")
            )
            fail += " (GT/LQ/RS)"
        self.morph_note.setText(f"{s['n_galaxies']} galaxies, apertures from LQ; {scale}{fail}.")

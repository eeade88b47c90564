"""The Inspect widget's exports and their file dialogs, a mixin of :class:`.inspect.InspectWidget`.

Per-source residuals and the morphology table as ECSV/FITS/CSV (:func:`core.catalogs.write_table`),
regions as DS9 or a table, the morphology plot as PNG.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
from napari.utils.notifications import show_info
from qtpy.QtWidgets import (
    QFileDialog,
)

from ...exceptions import AstroSRError
from .._workers import (
    notify_error,
)

TABLE_FORMATS = {"ECSV": ".ecsv", "FITS": ".fits", "CSV": ".csv"}


class InspectExports:
    """Export methods and dialogs of :class:`.inspect.InspectWidget` (a mixin: no ``__init__``)."""

    # ------------------------------------------------------------------ morphology export

    def export_morphology(self, path: str | Path, *, overwrite: bool = True) -> Path:
        """Write the per-galaxy morphology table (ECSV/FITS/CSV from the suffix)."""
        if self.morph_result is None:
            raise AstroSRError("Export: run Compare morphology first")
        from ...core.catalogs import write_table

        r = self.morph_result
        meta = {
            "reference_gt": r.gt_tag.name,
            "input_lq": r.lq_tag.name,
            "restoration_rs": r.rs_tag.name,
            "fit_sersic": r.fit_sersic,
        }
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
        return plot_morphology(
            r.table, path, quantities=r.quantities, title=f"{r.rs_tag.name} vs {r.gt_tag.name} (LQ: {r.lq_tag.name})"
        )

    def _export_morphology_dialog(self) -> None:
        suffix = TABLE_FORMATS[self.table_format.currentText()]
        self._save_with_dialog(
            "Export morphology table", f"morphology{suffix}", f"Table (*{suffix})", self.export_morphology
        )

    def _save_plot_dialog(self) -> None:
        self._save_with_dialog(
            "Save morphology plot",
            "morphology.png",
            "PNG image (*.png)",
            self.save_morphology_plot,
            context="Save plot",
        )

    # ------------------------------------------------------------------ export

    def export_residuals(self, path: str | Path, *, overwrite: bool = True) -> Path:
        """Write the per-source residual table (ECSV/FITS/CSV from the suffix)."""
        if self.result is None:
            raise AstroSRError("Export: run Compare first")
        from ...core.catalogs import write_table

        meta = {
            "reference": self.result.ref_tag.name,
            "prediction": self.result.pred_tag.name,
            "grid": self.result.note,
        }
        meta.update(
            {k: v for k, v in self.result.metrics.items() if isinstance(v, (int, float, str)) and v is not None}
        )
        return write_table(
            self.result.residuals,
            path,
            overwrite=overwrite,
            meta=meta,
            flux_unit=self.result.grid_tag.metadata.get("bunit"),
        )

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
        return write_table(
            t,
            path,
            overwrite=overwrite,
            meta={
                "reference": self.result.ref_tag.name,
                "prediction": self.result.pred_tag.name,
                "divergence": "KL(ref||pred), JS in nats, 64 shared bins",
            },
        )

    def _save_dialog(self, title: str, default: str, filt: str) -> Optional[str]:
        path, _ = QFileDialog.getSaveFileName(self, title, default, filt)
        return path or None

    def _save_with_dialog(self, title: str, default: str, filt: str, write, *, context: str = "Export") -> None:
        """Ask for a path, call ``write(path)`` and say what was written (errors as notifications)."""
        path = self._save_dialog(title, default, filt)
        if path:
            try:
                show_info(f"wrote {write(path)}")
            except Exception as exc:  # noqa: BLE001 - any failure becomes a notification, not a traceback
                notify_error(exc, context=context)

    def _export_residuals_dialog(self) -> None:
        suffix = TABLE_FORMATS[self.table_format.currentText()]
        self._save_with_dialog(
            "Export source residuals", f"residuals{suffix}", f"Table (*{suffix})", self.export_residuals
        )

    def _export_regions_dialog(self) -> None:
        self._save_with_dialog(
            "Export regions", "regions.reg", "DS9 regions (*.reg);;Table (*.ecsv *.csv *.fits)", self.export_regions
        )

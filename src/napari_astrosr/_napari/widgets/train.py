"""Train widget: train a restoration network from a YAML config, with a live loss plot.

Choose an example config (the ``configs/`` shipped with the package) or any YAML file,
edit its key values (network, preset, steps, batch size, learning rate, time budget,
device), the data folder (``data.root``) and the output folder, then Train. The run is
:func:`napari_astrosr.training.loop.train_job` in a thread worker; the plot shows the
training loss and the validation PSNR (with the flux-conserving bicubic baseline), the
labels the latest validation metrics; the plot is redrawn at most every
:data:`REDRAW_S` seconds, however fast the steps come. Stop ends the run cleanly: the job
saves a checkpoint at the current step (if that takes longer than the panel waits, the
widget is usable at once and the checkpoint is listed when it is written). The
checkpoint then appears in the Restore widget's method list.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
from napari.utils.notifications import show_info
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QWidget,
)

from ...exceptions import AstroSRError
from ...progress import Progress
from .._workers import JobPanel, checkpoint_registry, notify_error, scroll_body

BROWSE_ITEM = "config file…"
#: Least seconds between two redraws of the loss plot (a matplotlib draw runs on the GUI thread).
REDRAW_S = 0.3


def example_configs() -> dict[str, Path]:
    """Example training configs: package ``configs/`` (installed) or the repository's ``configs/``."""
    here = Path(__file__).resolve()
    out: dict[str, Path] = {}
    for folder in (here.parents[2] / "configs", here.parents[4] / "configs"):
        if folder.is_dir():
            for p in sorted(folder.glob("*.yaml")):
                out.setdefault(p.stem, p)
    return out


def _path_row(edit: QLineEdit, button: QPushButton) -> QHBoxLayout:
    row = QHBoxLayout()
    row.addWidget(edit, 1)
    button.setMaximumWidth(30)
    row.addWidget(button)
    return row


class TrainWidget(QWidget):
    """Train a network (see the module docstring)."""

    def __init__(self, napari_viewer: Any, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.config: Any = None  # the loaded TrainConfig
        self.history: dict[str, list] = {"step": [], "loss": [], "val_step": [], "val_psnr": [], "val_psnr_bicubic": []}
        self.checkpoint: Optional[Path] = None

        self.config_choice = QComboBox()
        self._examples = example_configs()
        self.config_choice.addItems(list(self._examples) + [BROWSE_ITEM])
        self.config_choice.currentTextChanged.connect(self._config_chosen)
        self.config_path = QLineEdit()
        self.config_path.setPlaceholderText("training config .yaml")
        self.config_path.editingFinished.connect(lambda: self.load(self.config_path.text()))
        self.config_browse = QPushButton("…")
        self.config_browse.clicked.connect(self._browse_config)

        self.model_name = QComboBox()
        self.model_name.setEditable(True)
        self.preset = QComboBox()
        self.preset.setEditable(True)
        self.model_name.currentTextChanged.connect(self._fill_presets)
        self.steps = QSpinBox()
        self.steps.setRange(1, 10_000_000)
        self.batch = QSpinBox()
        self.batch.setRange(1, 1024)
        self.lr = QDoubleSpinBox()
        self.lr.setDecimals(6)
        self.lr.setRange(1e-6, 1.0)
        self.lr.setSingleStep(1e-4)
        self.minutes = QDoubleSpinBox()
        self.minutes.setRange(0.0, 100_000.0)
        self.minutes.setSpecialValueText("no limit")
        self.device = QComboBox()
        self.device.addItems(["cpu", "auto", "cuda", "mps"])
        self.data_root = QLineEdit()
        self.data_root.setPlaceholderText("default: $ASTROSR_SHARED_DATA or ../shared/data")
        self.data_browse = QPushButton("…")
        self.data_browse.clicked.connect(lambda: self._browse_dir(self.data_root, "Data folder"))
        self.out_dir = QLineEdit()
        self.out_dir.setPlaceholderText("folder for model.pt, log, curves")
        self.out_browse = QPushButton("…")
        self.out_browse.clicked.connect(lambda: self._browse_dir(self.out_dir, "Output folder"))
        self.resume = QCheckBox("Resume: continue the run saved in the output folder")

        self.run_button = QPushButton("Train")
        self.run_button.clicked.connect(self.run)
        self.metrics = QLabel("")
        self.metrics.setWordWrap(True)

        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(3.6, 2.6), tight_layout=True)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(200)
        self.ax = self.figure.add_subplot(111)
        self.ax_val = self.ax.twinx()
        self._last_draw = 0.0
        self.redraws = 0  # plot redraws during this widget's life (tests, benchmarks)
        from qtpy.QtCore import QTimer

        self._redraw_timer = QTimer(self)
        self._redraw_timer.setSingleShot(True)
        self._redraw_timer.timeout.connect(self._draw)
        self._draw()

        form = QFormLayout()
        form.addRow("Config", self.config_choice)
        form.addRow("", _path_row(self.config_path, self.config_browse))
        form.addRow("Network", self.model_name)
        form.addRow("Preset", self.preset)
        form.addRow("Steps", self.steps)
        form.addRow("Batch size", self.batch)
        form.addRow("Learning rate", self.lr)
        form.addRow("Time budget (min)", self.minutes)
        form.addRow("Device", self.device)
        form.addRow("Data folder", _path_row(self.data_root, self.data_browse))
        form.addRow("Output folder", _path_row(self.out_dir, self.out_browse))
        form.addRow("", self.resume)
        self.jobs = JobPanel(busy_widgets=[self.run_button], interval=0.1)
        lay = scroll_body(self)
        lay.addLayout(form)
        lay.addWidget(self.run_button)
        lay.addWidget(self.jobs)
        lay.addWidget(self.canvas)
        lay.addWidget(self.metrics)
        lay.addStretch(1)

        try:
            from ...models.registry import MODELS

            self.model_name.addItems(list(MODELS))
        except Exception as exc:  # noqa: BLE001 - the widget still opens
            notify_error(exc, context="listing networks")
        if self._examples:
            self._config_chosen(self.config_choice.currentText())

    # ------------------------------------------------------------------ config

    def _fill_presets(self, name: str) -> None:
        current = self.preset.currentText()
        self.preset.clear()
        try:
            from ...models.registry import MODELS

            self.preset.addItems(list(MODELS[name].presets))
        except Exception:  # noqa: BLE001 - unknown name typed: free text, checked at Train
            pass
        if current:
            self.preset.setCurrentText(current)

    def _config_chosen(self, label: str) -> None:
        if label == BROWSE_ITEM:
            self.config_path.setEnabled(True)
            return
        path = self._examples.get(label)
        if path is not None:
            self.config_path.setText(str(path))
            self.load(path)

    def _browse_config(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Training config", "", "YAML (*.yaml *.yml)")
        if path:
            self.config_choice.setCurrentText(BROWSE_ITEM)
            self.config_path.setText(path)
            self.load(path)

    def _browse_dir(self, edit: QLineEdit, title: str) -> None:
        path = QFileDialog.getExistingDirectory(self, title, edit.text() or "")
        if path:
            edit.setText(path)

    def load(self, path: Any) -> bool:
        """Load a config YAML and show its key values; errors become notifications."""
        from ...config import load_config

        if not str(path).strip():
            return False
        try:
            cfg = load_config(path)
        except AstroSRError as exc:
            notify_error(exc, context="Train config")
            return False
        self.set_config(cfg)
        return True

    def set_config(self, cfg: Any) -> None:
        """Show a TrainConfig's key values in the editors."""
        self.config = cfg
        src = str(cfg.source_path or "")
        label = next((k for k, p in self._examples.items() if str(p) == src), BROWSE_ITEM)
        self.config_choice.blockSignals(True)
        self.config_choice.setCurrentText(label)
        self.config_choice.blockSignals(False)
        self.config_path.setText(src if src and not src.startswith("<") else "")
        self.model_name.setCurrentText(cfg.model.name)
        self._fill_presets(cfg.model.name)
        self.preset.setCurrentText(cfg.model.preset)
        self.steps.setValue(int(cfg.run.steps))
        self.batch.setValue(int(cfg.run.batch_size))
        self.lr.setValue(float(cfg.optim.lr))
        self.minutes.setValue(float(cfg.run.max_minutes or 0.0))
        self.device.setCurrentText(cfg.run.device)
        self.data_root.setText(cfg.data.root or "")
        if not self.out_dir.text():
            self.out_dir.setText(str(Path.cwd() / "runs" / cfg.name))

    def edited_config(self) -> Any:
        """The loaded config with the widget's edits applied (validated again)."""
        from ...config import config_from_dict

        if self.config is None:
            raise AstroSRError("Config: choose an example or a config .yaml first")
        d = self.config.model_dump(mode="json")
        d["model"]["name"] = self.model_name.currentText().strip()
        d["model"]["preset"] = self.preset.currentText().strip()
        d["run"]["steps"] = int(self.steps.value())
        d["run"]["batch_size"] = int(self.batch.value())
        d["optim"]["lr"] = float(self.lr.value())
        d["run"]["max_minutes"] = float(self.minutes.value()) or None
        d["run"]["device"] = self.device.currentText()
        d["data"]["root"] = self.data_root.text().strip() or None
        source = self.config.source_path or "<widget>"
        return config_from_dict(d, source=source)

    # ------------------------------------------------------------------ running

    def run(self) -> Any:
        """Start training (returns the worker, or None on bad input)."""
        try:
            cfg = self.edited_config()
            out = self.out_dir.text().strip()
            if not out:
                raise AstroSRError("Output folder: choose where model.pt and the training log go")
        except AstroSRError as exc:
            notify_error(exc, context="Train")
            return None
        resume = self.resume.isChecked()
        for v in self.history.values():
            v.clear()
        self._draw()
        self.metrics.setText("")

        def job(stop):
            from ...training.loop import train_job

            return (yield from train_job(cfg, out_dir=out, resume=resume, stop=stop))

        return self.jobs.start(
            job,
            on_result=self._on_result,
            on_progress=self._on_progress,
            on_late_result=self._on_result,  # a checkpoint saved after the panel went idle on Stop
            label=f"Train [{cfg.model.name}]",
        )

    def _on_progress(self, event: Progress, _tag: Any) -> None:
        vals = event.values or {}
        if "loss" in vals and "checkpoint" not in vals:
            self.history["step"].append(event.step)
            self.history["loss"].append(float(vals["loss"]))
        if vals.get("val_psnr") is not None and "checkpoint" not in vals:
            self.history["val_step"].append(event.step)
            self.history["val_psnr"].append(float(vals["val_psnr"]))
            self.history["val_psnr_bicubic"].append(float(vals.get("val_psnr_bicubic", float("nan"))))
        val = {k: v for k, v in vals.items() if k.startswith("val_") and isinstance(v, (int, float))}
        if val:
            self.metrics.setText(f"step {event.step}: " + ", ".join(f"{k[4:]} {v:.4g}" for k, v in val.items()))
        self.request_draw()

    def request_draw(self) -> None:
        """Redraw the plot now, or once :data:`REDRAW_S` after the last redraw (coalesced)."""
        import time

        wait = self._last_draw + REDRAW_S - time.monotonic()
        if wait <= 0:
            self._redraw_timer.stop()
            self._draw()
        elif not self._redraw_timer.isActive():
            self._redraw_timer.start(int(wait * 1000) + 1)

    def _draw(self) -> None:
        import time

        from scipy.signal import lfilter

        self._last_draw = time.monotonic()
        self.redraws += 1
        h = self.history
        self.ax.clear()
        self.ax_val.clear()
        if h["loss"]:
            loss = np.asarray(h["loss"], dtype=float)
            self.ax.plot(h["step"], loss, color="tab:blue", lw=0.6, alpha=0.5)
            # an exponential moving average (0.9 of the previous, starting at the first value):
            # the raw per-batch loss is noisy
            ema = lfilter([0.1], [1.0, -0.9], loss, zi=[0.9 * loss[0]])[0]
            self.ax.plot(h["step"], ema, color="tab:blue", lw=1.5)
            pos = loss[loss > 0]
            if pos.size and pos.max() / pos.min() > 20:
                self.ax.set_yscale("log")
        if h["val_psnr"]:
            self.ax_val.plot(h["val_step"], h["val_psnr"], "o-", color="tab:red", ms=3, label="val PSNR")
            self.ax_val.plot(h["val_step"], h["val_psnr_bicubic"], "--", color="tab:gray", lw=1, label="bicubic")
            self.ax_val.legend(loc="lower left", fontsize=7, frameon=False)
        for ax in (self.ax, self.ax_val):
            ax.tick_params(labelsize=7)
        self.ax.set_xlabel("step", fontsize=8)
        self.ax.set_ylabel("training loss", color="tab:blue", fontsize=8)
        self.ax_val.set_ylabel("val PSNR (dB)", color="tab:red", fontsize=8)
        self.canvas.draw_idle()

    def _on_result(self, path: Any, _tag: Any) -> None:
        self.checkpoint = Path(path)
        checkpoint_registry().add(self.checkpoint)
        show_info(f"checkpoint {self.checkpoint} is now listed in the Restore widget")

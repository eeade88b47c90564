"""Train widget: train a restoration network from a YAML config, with a live loss plot.

Choose an example config (the ``configs/`` shipped with the package) or any YAML file,
edit its key values (network, preset, steps, batch size, learning rate, time budget,
device), the starting weights (``model.init_from``: random, the bundled weights or a
checkpoint file, to fine-tune), the data folder (``data.root``) and the output folder, then
Train. The run is
:func:`napari_astrosr.training.loop.train_job` in a thread worker; the plot shows the
training loss and the validation PSNR (with the flux-conserving bicubic baseline), the
labels the latest validation metrics; the plot is redrawn at most every
:data:`REDRAW_S` seconds (and never for more than a fifth of the GUI thread's time),
however fast the steps come. Stop ends the run cleanly: the job
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
from .._jobs import train_for_widget
from .._process import in_process
from .._workers import JobPanel, checkpoint_registry, notify_error, scroll_body

BROWSE_ITEM = "config file…"
#: "Start from" choices mapped to ``model.init_from`` (anything else typed or browsed is a checkpoint path).
INIT_RANDOM = "random weights"
INIT_BUNDLED = "bundled weights"
#: Least seconds between two redraws of the loss plot (a matplotlib draw runs on the GUI thread).
REDRAW_S = 0.3
#: ... and at least this many times the last draw's duration (the plot's share of the GUI thread <= 1/5).
DRAW_SHARE = 5.0
#: At most about this many points per plotted line (a long run is thinned to every k-th step).
MAX_PLOTTED = 2000


def example_configs() -> dict[str, Path]:
    """Example training configs: package ``configs/`` (installed) or the repository's ``configs/``."""
    here = Path(__file__).resolve()
    out: dict[str, Path] = {}
    for folder in (here.parents[2] / "configs", here.parents[4] / "configs"):
        if folder.is_dir():
            for p in sorted(folder.glob("*.yaml")):
                out.setdefault(p.stem, p)
    return out


def _path_row(edit: QWidget, button: QPushButton) -> QHBoxLayout:
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
        self.init_from = QComboBox()
        self.init_from.setEditable(True)
        self.init_from.addItems([INIT_RANDOM, INIT_BUNDLED])
        # a long checkpoint path must not widen the dock past the window (it scrolls in the box instead)
        self.init_from.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.init_from.setMinimumContentsLength(12)
        self.init_from.setToolTip(
            "The weights training starts from: random, the weights astrosr ships for this network and "
            "scale, or a checkpoint .pt of the same network (fine-tuning on your data)."
        )
        self.init_browse = QPushButton("…")
        self.init_browse.clicked.connect(self._browse_init)

        self.run_button = QPushButton("Train")
        self.run_button.clicked.connect(self.run)
        self.metrics = QLabel("")
        self.metrics.setWordWrap(True)

        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from qtpy.QtCore import QTimer

        # The figure is drawn with Agg in a thread (a draw takes ~1 s of the GUI thread on a loaded
        # CPU); the GUI thread only shows the finished picture in ``canvas`` (a QLabel). Fixed
        # margins: a tight layout would lay the figure out on every draw.
        self.figure = Figure(figsize=(3.6, 2.6), dpi=100)
        FigureCanvasAgg(self.figure)
        self.figure.subplots_adjust(left=0.17, right=0.83, bottom=0.17, top=0.96)
        self.ax = self.figure.add_subplot(111)
        self.ax_val = self.ax.twinx()
        self.canvas = QLabel()
        self.canvas.setMinimumHeight(200)
        self._lines: dict[str, Any] = {}
        self._last_draw = 0.0
        self._draw_cost = 0.0
        self._run_id = 0  # a new run clears the axes (in the drawing thread)
        self._drawn_run = 0
        self._render_worker: Any = None
        self._render_pending = False
        self.redraws = 0  # plot redraws during this widget's life (tests, benchmarks)
        self._redraw_timer = QTimer(self)
        self._redraw_timer.setSingleShot(True)
        self._redraw_timer.timeout.connect(self._draw)
        self._show_picture(self._render({k: [] for k in self.history}, 0))

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
        form.addRow("Start from", _path_row(self.init_from, self.init_browse))
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

    def _browse_init(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Start from checkpoint", "", "Checkpoint (*.pt)")
        if path:
            self.init_from.setCurrentText(path)

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
        m = cfg.model
        self.init_from.setCurrentText(
            INIT_RANDOM if not m.init_from else INIT_BUNDLED if m.init_from_bundled else str(m.init_from)
        )
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
        init = self.init_from.currentText().strip()
        d["model"]["init_from"] = (
            None if init in ("", INIT_RANDOM) else "bundled" if init == INIT_BUNDLED else str(Path(init).expanduser())
        )
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
            if cfg.model.init_from:
                from ...training.loop import init_from_checkpoint

                init_from_checkpoint(cfg)  # a missing file or no bundled weights: said now, no job started
        except AstroSRError as exc:
            notify_error(exc, context="Train")
            return None
        resume = self.resume.isChecked()
        for v in self.history.values():
            v.clear()
        self._redraw_timer.stop()
        self._run_id += 1
        self.request_draw()
        self.metrics.setText("")

        def job(stop):
            # in a worker process; never killed on Stop: it saves its checkpoint first (on_late_result)
            return (
                yield from in_process(train_for_widget, cfg, out_dir=out, resume=resume, stop=stop, kill_after=None)
            )

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
        """Redraw the plot now, or once the redraw interval has passed (coalesced).

        The interval is :data:`REDRAW_S`, or :data:`DRAW_SHARE` times the last draw's
        duration when that is longer; one draw at a time.
        """
        import time

        if self._render_worker is not None:
            self._render_pending = True
            return
        interval = max(REDRAW_S, DRAW_SHARE * self._draw_cost)
        wait = self._last_draw + interval - time.monotonic()
        if wait <= 0:
            self._redraw_timer.stop()
            self._draw()
        elif not self._redraw_timer.isActive():
            self._redraw_timer.start(int(wait * 1000) + 1)

    def _draw(self) -> None:
        """Draw a snapshot of the history in a thread; the picture is shown when ready."""
        import time

        from napari.qt.threading import create_worker

        if self._render_worker is not None:
            self._render_pending = True
            return
        snap = {k: list(v) for k, v in self.history.items()}
        worker = create_worker(self._render, snap, self._run_id, _ignore_errors=True, _start_thread=False)
        started = time.perf_counter()

        def _done(picture: Any = None) -> None:
            try:
                if picture is not None:
                    self._show_picture(picture)
                self._draw_cost = time.perf_counter() - started
            except RuntimeError:  # the widget was deleted meanwhile
                return
            self._last_draw = time.monotonic()
            self._render_worker = None
            if self._render_pending:
                self._render_pending = False
                self.request_draw()

        worker.returned.connect(_done)
        worker.errored.connect(lambda _exc: _done(None))
        self._render_worker = worker
        worker.start()

    def _render(self, h: dict, run_id: int) -> np.ndarray:
        """Update the lines to the history ``h`` and draw the figure (drawing thread); RGBA pixels."""
        from scipy.signal import lfilter

        lines = self._lines
        if run_id != self._drawn_run or not lines and not h["loss"]:
            self._drawn_run = run_id
            lines.clear()
            for ax in (self.ax, self.ax_val):
                ax.clear()
                ax.tick_params(labelsize=7)
            self.ax.set_yscale("linear")
            self.ax.set_xlabel("step", fontsize=8)
            self.ax.set_ylabel("training loss", color="tab:blue", fontsize=8)
            self.ax_val.set_ylabel("val PSNR (dB)", color="tab:red", fontsize=8)
        if h["loss"]:
            steps, loss = np.asarray(h["step"], dtype=float), np.asarray(h["loss"], dtype=float)
            # an exponential moving average (0.9 of the previous, starting at the first value):
            # the raw per-batch loss is noisy
            ema = lfilter([0.1], [1.0, -0.9], loss, zi=[0.9 * loss[0]])[0]
            k = max(1, len(loss) // MAX_PLOTTED)  # a long run: every k-th point is plenty for the screen
            if "loss" not in lines:
                (lines["loss"],) = self.ax.plot([], [], color="tab:blue", lw=0.6, alpha=0.5)
                (lines["ema"],) = self.ax.plot([], [], color="tab:blue", lw=1.5)
            lines["loss"].set_data(steps[::k], loss[::k])
            lines["ema"].set_data(steps[::k], ema[::k])
            pos = loss[loss > 0]
            if pos.size and pos.max() / pos.min() > 20 and self.ax.get_yscale() != "log":
                self.ax.set_yscale("log")
            self.ax.relim()
            self.ax.autoscale_view()
        if h["val_psnr"]:
            if "val" not in lines:
                (lines["val"],) = self.ax_val.plot([], [], "o-", color="tab:red", ms=3, label="val PSNR")
                (lines["bicubic"],) = self.ax_val.plot([], [], "--", color="tab:gray", lw=1, label="bicubic")
                self.ax_val.legend(loc="lower left", fontsize=7, frameon=False)
            lines["val"].set_data(h["val_step"], h["val_psnr"])
            lines["bicubic"].set_data(h["val_step"], h["val_psnr_bicubic"])
            self.ax_val.relim()
            self.ax_val.autoscale_view()
        self.figure.canvas.draw()
        self.redraws += 1
        return np.array(self.figure.canvas.buffer_rgba())  # a copy: the next draw reuses the buffer

    def _show_picture(self, rgba: np.ndarray) -> None:
        from qtpy.QtGui import QImage, QPixmap

        h, w = rgba.shape[:2]
        image = QImage(rgba.data, w, h, 4 * w, QImage.Format.Format_RGBA8888)
        self.canvas.setPixmap(QPixmap.fromImage(image.copy()))

    def _on_result(self, path: Any, _tag: Any) -> None:
        self.checkpoint = Path(path)
        checkpoint_registry().add(self.checkpoint)
        show_info(f"checkpoint {self.checkpoint} is now listed in the Restore widget")

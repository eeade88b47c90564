"""Thread-worker plumbing shared by every widget.

Every long backend call is a *job generator* (see :mod:`napari_astrosr.progress`):
it yields :class:`~napari_astrosr.progress.Progress` events, returns its result and
checks a ``stop`` flag between steps. :class:`JobPanel` runs one such job in a napari
thread worker and owns the widget's progress bar, status line and Stop button:

- the job runs in a worker thread; its events reach the main thread as batches
  (at most one batch every ``interval`` seconds, so a job that yields thousands of
  events cannot flood the event loop). The widgets' heavy jobs hand their compute on
  to a worker *process* from that thread (:func:`._process.in_process`), so work
  that holds the GIL cannot stall the GUI;
- Stop sets the job's stop flag; the job then returns its best result so far
  (e.g. the current DIP latent) or raises :class:`~napari_astrosr.exceptions.StoppedError`;
- an error closes the progress bar, is shown with
  :func:`napari.utils.notifications.show_error` and leaves the widget usable;
- an :class:`~napari_astrosr.exceptions.AstroSRWarning` raised in the job (e.g. "this
  projection amplifies noise") becomes a warning notification; the job goes on;
- the result comes back with the :class:`SourceTag` captured when the job started,
  so it is placed over the image it was computed from even if the user selected,
  moved or deleted layers meanwhile;
- when the job has not ended :data:`STOP_GRACE_S` after Stop (a step that cannot be
  interrupted, e.g. a projection), the panel returns to idle anyway and says so; the
  job's thread finishes that step in the background and its result is dropped, so a
  second job can start at once.

Layer data must be copied on the main thread *before* :meth:`JobPanel.start`
(:func:`layer_array` does that); workers never touch layers in the viewer. Everything
heavy that displaying a result needs (contrast limits, residuals, the display pyramid
of a large image, point and shape arrays) is computed in the job too, so the main
thread only adds ready layers (:func:`display_pyramid`, :func:`put_layer`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QObject, Qt, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from ..exceptions import AstroSRError, AstroSRWarning, StoppedError
from ..progress import Progress, StopFlag, batches
from ._jobs import PYRAMID_MAX_SIDE, display_pyramid, nan_note  # noqa: F401 - re-exported
from ._layers import full_resolution

__all__ = [
    "SourceTag",
    "tag_layer",
    "find_layer",
    "layer_array",
    "aligned_geometry",
    "LayerCombo",
    "JobPanel",
    "error_message",
    "notify_error",
    "checkpoint_registry",
    "put_layer",
    "put_residual",
    "is_overlay",
    "is_input_image",
    "widget_language",
    "scroll_body",
    "nan_note",
    "full_resolution",
    "display_pyramid",
    "STOP_GRACE_S",
]

#: Seconds a job gets to end after Stop before its panel returns to idle without it.
STOP_GRACE_S = 0.6

#: ``layer.metadata[ROLE]`` of layers drawn *over* an image (flux maps, residuals,
#: uncertainties): never offered as the input of another job.
ROLE = "astrosr_role"
OVERLAY_ROLES = ("flux map", "residual", "uncertainty")


# ----------------------------------------------------------------------------- layers


@dataclass
class SourceTag:
    """What a result needs to know about the layer it was computed from.

    Captured on the main thread when a job starts. ``layer_id`` is napari's
    ``Layer.unique_id``; the geometry and metadata are snapshots so a result can
    still be placed correctly when the source layer was deleted meanwhile.
    """

    layer_id: Any
    name: str
    scale: tuple[float, ...]
    translate: tuple[float, ...]
    shape: tuple[int, ...]
    metadata: dict = field(default_factory=dict)


def tag_layer(layer: Any) -> SourceTag:
    """Snapshot a layer's identity, geometry and metadata (main thread only)."""
    return SourceTag(
        layer_id=getattr(layer, "unique_id", id(layer)),
        name=str(layer.name),
        scale=tuple(float(s) for s in layer.scale),
        translate=tuple(float(t) for t in layer.translate),
        shape=tuple(int(n) for n in np.shape(layer.data)),
        metadata=dict(layer.metadata),
    )


def find_layer(viewer: Any, tag: SourceTag) -> Optional[Any]:
    """The layer a :class:`SourceTag` was taken from, or None if it is gone."""
    for layer in viewer.layers:
        if getattr(layer, "unique_id", id(layer)) == tag.layer_id:
            return layer
    return None


def is_overlay(layer: Any) -> bool:
    """True for layers drawn over an image (flux map, residual, uncertainty)."""
    return (getattr(layer, "metadata", None) or {}).get(ROLE) in OVERLAY_ROLES


def is_input_image(layer: Any) -> bool:
    """A 2-D single-band image layer that is not an overlay: what a job can take as input."""
    from napari.layers import Image

    return isinstance(layer, Image) and not layer.rgb and np.ndim(layer.data) == 2 and not is_overlay(layer)


class _DockScroll(QScrollArea):
    """A scroll area as wide as its content and at most ``MAX_DOCK_HEIGHT`` of the screen tall:
    napari sizes docks from their size hints, so the dock neither clips its form nor grows
    the window beyond the screen.
    """

    MAX_DOCK_HEIGHT = 0.6

    def _content_hint(self) -> Any:
        inner = self.widget()
        return inner.sizeHint() if inner is not None else super().sizeHint()

    def sizeHint(self) -> Any:  # noqa: N802 - Qt API
        from qtpy.QtCore import QSize

        hint = self._content_hint()
        screen = self.screen()
        cap = int(screen.availableGeometry().height() * self.MAX_DOCK_HEIGHT) if screen is not None else 600
        bar = self.verticalScrollBar().sizeHint().width()
        return QSize(hint.width() + bar + 2, min(hint.height() + 2, cap))

    def minimumSizeHint(self) -> Any:  # noqa: N802 - Qt API
        from qtpy.QtCore import QSize

        inner = self.widget()
        w = inner.minimumSizeHint().width() if inner is not None else 100
        return QSize(w + self.verticalScrollBar().sizeHint().width() + 2, 120)

    def eventFilter(self, obj: Any, event: Any) -> bool:  # noqa: N802 - Qt API
        # QScrollArea does not pass its content's layout changes on: without this the dock keeps the width
        # its content had when it was docked, and a form that grew later (a config loaded, a plot drawn) is
        # clipped at the right edge, its buttons out of reach (the horizontal bar is off by design)
        from qtpy.QtCore import QEvent

        if obj is self.widget() and event.type() == QEvent.Type.LayoutRequest:
            self.updateGeometry()
        return super().eventFilter(obj, event)


def scroll_body(widget: QWidget) -> QVBoxLayout:
    """Give a dock widget a scroll area and return the layout to fill inside it.

    A long dock then scrolls instead of growing napari's window beyond the screen.
    """
    inner = QWidget()
    body = QVBoxLayout(inner)
    scroll = _DockScroll()
    scroll.setWidgetResizable(True)
    scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    scroll.setFrameShape(QScrollArea.Shape.NoFrame)
    scroll.setWidget(inner)
    inner.installEventFilter(scroll)  # content layout changes resize the dock (_DockScroll.eventFilter)
    outer = QVBoxLayout(widget)
    outer.setContentsMargins(0, 0, 0, 0)
    outer.addWidget(scroll)
    widget._astrosr_scroll = scroll  # tests and screenshots scroll it
    return body


def layer_array(layer: Any, *, dtype: Any = np.float32) -> np.ndarray:
    """A private, C-contiguous copy of a layer's data (call on the main thread).

    The worker then owns its input: editing or deleting the layer while the job
    runs cannot change what the job sees. A multiscale layer gives its full resolution.
    """
    data = np.asarray(full_resolution(layer.data))
    if data.ndim > 2 and getattr(layer, "rgb", False):
        raise AstroSRError(f"layer '{layer.name}' is RGB; choose a single-band image")
    return np.array(data, dtype=dtype, copy=True, order="C")


def aligned_geometry(
    scale: Sequence[float], translate: Sequence[float], factor: float
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Scale/translate of a result on a grid ``factor`` times finer than its input.

    Output pixel ``j`` has its centre at input pixel coordinate ``(j + 0.5)/factor - 0.5``
    (pixel *edges* coincide), so in world coordinates

    ``scale_out = scale_in / factor`` and
    ``translate_out = translate_in + scale_in * (0.5/factor - 0.5)``.

    ``factor < 1`` (a coarser result, e.g. a block sum) uses the same formula.
    """
    s = np.asarray(scale, dtype=float)
    t = np.asarray(translate, dtype=float)
    f = float(factor)
    return tuple((s / f).tolist()), tuple((t + s * (0.5 / f - 0.5)).tolist())


# ----------------------------------------------------------------------------- errors


def error_message(exc: BaseException) -> str:
    """One line for the user: AstroSRError as is, anything else with its type."""
    if isinstance(exc, AstroSRError):
        return str(exc)
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else 'unexpected error'}"


# CLI wording in backend messages -> the widgets' words (longest patterns first)
_WIDGET_WORDS: list[tuple[str, str]] = [
    (
        r"pass --resume to continue it or choose another --out",
        "tick Resume to continue it or choose another output folder",
    ),
    (r"run without --resume", "untick Resume"),
    (r"use --overwrite \(overwrite=True\) to replace it", "choose another name or allow replacing it"),
    (r"pass overwrite=True \(--overwrite\)", "allow replacing it"),
    (r"(?:pass |give )?--psf SPEC", "a PSF (PSF box, e.g. gaussian:1.0)"),
    (r"or pass --model CKPT\.pt", "or choose a checkpoint file"),
    (r"--psf-from-fwhm", "PSF from the header"),
    (r"--psf", "the PSF box"),
    (r"--flux-exact", "'Flux-exact'"),
    (r"--flux-noise", "'only where above the noise'"),
    (r"--keep-sky", "'keep the input's sky'"),
    (r"--scale", "Scale"),
    (r"--method", "Method"),
    (r"--device", "Device"),
    (r"--tile", "Tile"),
    (r"--thresh", "the Threshold"),
    (r"--minarea", "the Min. area"),
    (r"--noise", "Noise"),
    (r"--out", "the output folder"),
    (r"--resume", "Resume"),
    # Train widget's "Start from" (model.init_from in a config, --init-from on the command line)
    (r"^.*?: model\.init_from:", "Start from:"),
    (r"or 'bundled'", "or the bundled weights"),
    (r"set model\.preset / model\.overrides to match it", "choose the Preset it was trained with"),
]


def widget_language(msg: str) -> str:
    """Reword a backend message written for the CLI (``--psf SPEC``...) for a widget."""
    for pat, repl in _WIDGET_WORDS:
        msg = re.sub(pat, repl, msg)
    # any option left: name it without the dashes
    return re.sub(r"(?<![\w-])--([a-z][a-z-]*)", lambda m: f"'{m.group(1).replace('-', ' ')}'", msg)


def notify_error(exc: BaseException, *, context: str = "") -> None:
    """Show an error as a napari notification, in the widget's words (never raises)."""
    msg = widget_language(error_message(exc))
    # messages that already name their widget ("Inspect: choose ...") get no second prefix
    if context and not msg.lower().startswith(context.lower()):
        msg = f"{context}: {msg}"
    show_error(msg)


# ----------------------------------------------------------------------------- layer chooser


class LayerCombo(QComboBox):
    """A combo box listing the viewer's layers of some types, kept up to date.

    Unlike a magicgui layer combo it needs no ``reset_choices`` call from the dock:
    it follows ``viewer.layers`` insert/remove/reorder events and layer renames.
    """

    def __init__(
        self,
        viewer: Any,
        layer_types: Sequence[type] | type,
        *,
        allow_none: bool = False,
        none_label: str = "(none)",
        predicate: Optional[Callable[[Any], bool]] = None,
        parent: Optional[QWidget] = None,
    ) -> None:
        super().__init__(parent)
        self._viewer = viewer
        self._types = tuple(layer_types) if isinstance(layer_types, (list, tuple)) else (layer_types,)
        self._allow_none = allow_none
        self._none_label = none_label
        self._predicate = predicate
        self._layers: list[Any] = []
        ev = viewer.layers.events
        ev.inserted.connect(self._on_inserted)
        ev.removed.connect(self.refresh)
        ev.reordered.connect(self.refresh)
        for layer in viewer.layers:
            layer.events.name.connect(self.refresh)
        self.refresh()
        self.destroyed.connect(self._disconnect)

    def _disconnect(self, *_: Any) -> None:
        ev = self._viewer.layers.events
        for sig, cb in ((ev.inserted, self._on_inserted), (ev.removed, self.refresh), (ev.reordered, self.refresh)):
            try:
                sig.disconnect(cb)
            except Exception:  # noqa: BLE001 - viewer already closed
                pass

    def _on_inserted(self, event: Any = None) -> None:
        layer = getattr(event, "value", None)
        if layer is not None:
            layer.events.name.connect(self.refresh)
        self.refresh()

    def _wanted(self, layer: Any) -> bool:
        if not isinstance(layer, self._types):
            return False
        return self._predicate is None or bool(self._predicate(layer))

    def refresh(self, *_: Any) -> None:
        """Re-list the layers, keeping the current choice when it still exists."""
        try:
            current = self.value()
        except RuntimeError:  # the Qt object is being deleted
            return
        layers = [lyr for lyr in reversed(list(self._viewer.layers)) if self._wanted(lyr)]
        self.blockSignals(True)
        self.clear()
        self._layers = ([None] if self._allow_none else []) + layers
        for lyr in self._layers:
            self.addItem(self._none_label if lyr is None else lyr.name)
        if current is not None and current in self._layers:
            self.setCurrentIndex(self._layers.index(current))
        self.blockSignals(False)
        self.currentIndexChanged.emit(self.currentIndex())

    def value(self) -> Optional[Any]:
        """The chosen layer (or None)."""
        i = self.currentIndex()
        if 0 <= i < len(self._layers):
            return self._layers[i]
        return None

    def set_value(self, layer: Any) -> None:
        """Select ``layer`` (must be listed)."""
        self.setCurrentIndex(self._layers.index(layer))

    def layers(self) -> list[Any]:
        """All listed layers."""
        return [lyr for lyr in self._layers if lyr is not None]


# ----------------------------------------------------------------------------- the job panel


def _drive(job: Generator[Progress, None, Any], interval: float) -> Generator[list, None, Any]:
    """Run a job generator, passing its events on in batches (worker thread)."""
    return (yield from batches(job, interval))


def _is_deleted(obj: Any) -> bool:
    """True once the C++ object behind a Qt wrapper is gone (safe from any thread)."""
    try:
        from qtpy import sip  # PyQt5/6

        return bool(sip.isdeleted(obj))
    except ImportError:  # PySide
        import shiboken6

        return not shiboken6.isValid(obj)


class _PanelStop(StopFlag):
    """The stop flag of a JobPanel's job: also set once the panel (its widget) is deleted,
    so closing a widget mid-run stops its job instead of leaving it running.
    """

    def __init__(self, panel: QWidget) -> None:
        import weakref

        super().__init__()
        self._panel = weakref.ref(panel)

    def is_set(self) -> bool:
        if super().is_set():
            return True
        panel = self._panel()
        return panel is None or _is_deleted(panel)


def _alive(widget: QWidget) -> bool:
    """False once the Qt object behind ``widget`` was deleted (its dock was closed)."""
    return not _is_deleted(widget)


class JobPanel(QWidget):
    """Progress bar, status line and Stop button running one job at a time.

    Parameters
    ----------
    busy_widgets
        Widgets disabled while a job runs (typically the Run button).
    interval
        Minimum seconds between progress batches delivered to the main thread.

    Signals
    -------
    finished(str)
        Emitted on the main thread after every job with ``"done"``, ``"stopped"``
        or ``"error"``.
    """

    finished = Signal(str)

    def __init__(
        self,
        *,
        busy_widgets: Iterable[QWidget] = (),
        interval: float = 0.05,
        parent: Optional[QWidget] = None,
    ) -> None:
        super().__init__(parent)
        self._busy_widgets = list(busy_widgets)
        # a worker process for the jobs, started now so the first Run does not wait for its imports
        from . import _process

        _process.prewarm()
        self._interval = float(interval)
        self.worker: Any = None
        self.stop_flag: Optional[StopFlag] = None
        self.tag: Optional[SourceTag] = None
        self.last_status = ""
        self.last_error: Optional[BaseException] = None
        #: perf_counter() when the last result reached the main thread (before layers were made)
        self.returned_at: Optional[float] = None
        self._eta_origin: Optional[tuple[float, float]] = None
        self._started_at: Optional[float] = None
        self._label = ""
        #: workers released after Stop that still finish their current step (kept referenced)
        self.background: list[Any] = []

        self.bar = QProgressBar()
        self.bar.setTextVisible(True)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Ask the running job to stop; it keeps its best result so far when it can.")
        self.stop_button.clicked.connect(self.stop)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.bar, 1)
        row.addWidget(self.stop_button)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(row)
        lay.addWidget(self.status)
        self._set_running(False)

    # -- state

    def add_busy_widget(self, w: QWidget) -> None:
        self._busy_widgets.append(w)

    @property
    def busy(self) -> bool:
        return self.worker is not None

    def _set_running(self, running: bool) -> None:
        self.bar.setVisible(running)
        self.stop_button.setVisible(running)
        self.stop_button.setEnabled(running)
        for w in self._busy_widgets:
            w.setEnabled(not running)
        if running:
            self.bar.setRange(0, 0)  # indeterminate until the first event with a total
            self.bar.setValue(0)
            self.bar.setFormat("%p%")

    def set_status(self, text: str) -> None:
        self.last_status = text
        self.status.setText(text)

    # -- running

    def start(
        self,
        job_factory: Callable[[StopFlag], Generator[Progress, None, Any]],
        *,
        on_result: Callable[[Any, Optional[SourceTag]], None],
        on_progress: Optional[Callable[[Progress, Optional[SourceTag]], None]] = None,
        on_error: Optional[Callable[[BaseException], None]] = None,
        on_late_result: Optional[Callable[[Any, Optional[SourceTag]], None]] = None,
        tag: Optional[SourceTag] = None,
        label: str = "",
    ) -> Any:
        """Run ``job_factory(stop_flag)`` in a thread worker.

        ``job_factory`` is called on the main thread; it must only *create* the
        generator (generators do no work until iterated), from data already copied.
        ``on_progress(event, tag)`` runs on the main thread for every event;
        ``on_result(result, tag)`` once with the job's return value; ``on_error(exc)`` (optional)
        before a failure is notified, e.g. to highlight the field the error is about.
        ``on_late_result(result, tag)`` (optional) receives the result of a job that ended
        after the panel had already returned to idle following Stop (e.g. the checkpoint a
        stopped training run saves); without it that result is dropped.
        """
        if self.busy:
            raise AstroSRError("a job is already running in this widget; wait or press Stop")
        self.stop_flag = _PanelStop(self)
        self.tag = tag
        self.last_error = None
        try:
            job = job_factory(self.stop_flag)
        except Exception as exc:  # bad options detected up front
            self._fail(exc, label)
            return None
        self._set_running(True)
        self._eta_origin = None
        self._started_at = time.perf_counter()
        self._label = label
        self.set_status(f"{label}: starting…" if label else "starting…")

        worker = create_worker(_drive, job, self._interval, _ignore_errors=True, _start_thread=False)
        self.worker = worker

        def _yielded(batch: list) -> None:
            if self.worker is not worker or not _alive(self):  # late batch, or the widget is gone
                return
            for event in batch:
                self._show_progress(event, label)
                if on_progress is not None:
                    try:
                        on_progress(event, tag)
                    except Exception as exc:  # noqa: BLE001 - never kill the loop for a preview
                        notify_error(exc, context="progress display")

        def _returned(result: Any) -> None:
            if not _alive(self):
                return
            if self.worker is not worker:  # released after Stop: the panel moved on
                if on_late_result is not None:
                    try:
                        on_late_result(result, tag)
                    except Exception as exc:  # noqa: BLE001 - reported, the panel stays usable
                        notify_error(exc, context=label)
                return
            self.returned_at = time.perf_counter()
            stopped = self.stop_flag is not None and self.stop_flag.is_set()
            try:
                steps = on_result(result, tag)
            except Exception as exc:  # noqa: BLE001 - e.g. a layer could not be added
                self._fail(exc, label)
                return
            how = "stopped" if stopped else "done"
            if isinstance(steps, Iterator):
                self._step_through(steps, how, label)
                return
            self._finish(how, label)

        def _errored(exc: BaseException) -> None:
            if not _alive(self):
                return
            if self.worker is not worker:  # released after Stop: only a real failure is worth a word
                if not isinstance(exc, StoppedError):
                    notify_error(exc, context=label)
                return
            if isinstance(exc, StoppedError):
                self._finish("stopped", label, str(exc))
            else:
                if on_error is not None:
                    try:
                        on_error(exc)
                    except Exception:  # noqa: BLE001 - the failure itself is still reported below
                        pass
                self._fail(exc, label)

        def _warned(args: tuple) -> None:
            # napari's own relay of worker warnings is not connected for create_worker's GeneratorWorker
            # (its notifying mixin sits after the sip wrapper in the MRO), so ours are shown here. Only
            # AstroSRWarning: library deprecation chatter would bury them.
            if not _alive(self) or len(args) < 2:
                return
            message, category = args[0], args[1]
            if isinstance(category, type) and issubclass(category, AstroSRWarning):
                show_warning(f"{label}: {message}" if label else str(message))

        worker.yielded.connect(_yielded)
        worker.returned.connect(_returned)
        worker.errored.connect(_errored)
        worker.warned.connect(_warned)
        worker.start()
        return worker

    def _step_through(self, steps: Iterator, how: str, label: str) -> None:
        """Run ``on_result``'s steps one per event-loop turn, then finish.

        An ``on_result`` that adds several layers yields after each: napari builds a layer's
        visuals and draws it for the first time on the GUI thread (100-300 ms each under
        software OpenGL), and between steps the viewer handles its events and draws. The
        panel stays busy until the last step, so callers waiting for idle see every layer.
        """
        from qtpy.QtCore import QTimer

        def turn() -> None:
            if not _alive(self):
                return
            try:
                next(steps)
            except StopIteration:
                self._finish(how, label)
                return
            except Exception as exc:  # noqa: BLE001 - e.g. a layer could not be added
                self._fail(exc, label)
                return
            QTimer.singleShot(1, turn)  # a real timer: pending paints and ticks run first

        turn()

    def _show_progress(self, event: Progress, label: str) -> None:
        if event.total:
            self.bar.setRange(0, int(event.total))
            self.bar.setValue(min(int(event.step), int(event.total)))
        msg = event.message or (f"{event.step}/{event.total}" if event.total else f"step {event.step}")
        eta = self._estimate(event)
        if eta:
            msg = f"{msg} ({eta})"
        self.set_status(f"{label}: {msg}" if label else msg)

    def _estimate(self, event: Progress) -> str:
        """'about 40 s left', from the first counted step on ('' before any step is done).

        The clock starts at the first event with a total. When that event already counts
        done steps (a job whose first report comes after its first step, e.g. "tile 1/64"),
        the first estimate is made from the job's start, so it shows at once; the later
        ones use the rate since that first event (setup time excluded).
        """
        if not event.total or event.step is None:
            return ""
        now = time.perf_counter()
        step, total = float(event.step), float(event.total)
        if self._eta_origin is None or step < self._eta_origin[1]:
            first = self._eta_origin is None
            self._eta_origin = (now, step)  # the clock starts here
            if not (first and step > 0 and self._started_at is not None):
                return ""
            t0, s0 = self._started_at, 0.0
        else:
            t0, s0 = self._eta_origin
        if step <= s0 or step >= total:
            return ""
        left = (now - t0) / (step - s0) * (total - step)
        if left < 1:
            return ""
        return f"about {left:.0f} s left" if left < 90 else f"about {left / 60:.0f} min left"

    def stop(self) -> None:
        """Ask the running job to stop (returns immediately).

        The job checks its stop flag between steps (a network between tiles and, with
        :func:`~napari_astrosr.models.inference.stop_hooks`, between its blocks). If it
        has not ended :data:`STOP_GRACE_S` later, the panel returns to idle anyway
        (:meth:`release`): the job's current step ends in the background.
        """
        if self.stop_flag is not None:
            self.stop_flag.set()
            self.stop_button.setEnabled(False)
            self.set_status("stopping…")
            worker = self.worker
            if worker is not None:
                from qtpy.QtCore import QTimer

                QTimer.singleShot(int(STOP_GRACE_S * 1000), lambda: self.release(worker))

    def release(self, worker: Any) -> None:
        """Return to idle without waiting for ``worker`` (stopped, still inside a step).

        The worker stays referenced in :attr:`background` until it ends; its result is
        dropped (or handed to ``on_late_result``). napari's thread pool is widened by
        one thread so the next job does not queue behind it.
        """
        if not _alive(self) or worker is None or self.worker is not worker or not worker.is_running:
            return
        from qtpy.QtCore import QThreadPool

        self.background.append(worker)

        def _gone(*_: Any) -> None:
            if worker in self.background:
                self.background.remove(worker)

        worker.finished.connect(_gone)
        pool = QThreadPool.globalInstance()
        pool.setMaxThreadCount(max(pool.maxThreadCount(), pool.activeThreadCount() + 1))
        self._finish("stopped", self._label, "(its current step ends in the background)", notify=False)

    def _finish(self, how: str, label: str, extra: str = "", *, notify: bool = True) -> None:
        self.worker = None
        self._set_running(False)
        text = {"done": "done", "stopped": "stopped", "error": "failed"}[how]
        self.set_status(" ".join(x for x in (f"{label}:" if label else "", text, extra) if x))
        if how == "stopped" and notify:
            show_info(f"{label or 'job'} stopped" + (f": {extra}" if extra else ""))
        self.finished.emit(how)

    def _fail(self, exc: BaseException, label: str) -> None:
        self.last_error = exc
        notify_error(exc, context=label)
        self._finish("error", label, error_message(exc))

    def wait(self, timeout: float = 30.0) -> None:
        """Block (processing events) until the job finished; for scripts and tests."""
        from qtpy.QtWidgets import QApplication

        end = time.monotonic() + timeout
        while self.busy and time.monotonic() < end:
            QApplication.processEvents()
            time.sleep(0.005)
        if self.busy:
            raise TimeoutError("job still running")


# ----------------------------------------------------------------------------- trained checkpoints


class _CheckpointRegistry(QObject):
    """Checkpoints written during this session (Train widget -> Restore widget)."""

    changed = Signal()

    def __init__(self) -> None:
        super().__init__()
        self.paths: list[str] = []

    def add(self, path: Any) -> None:
        p = str(path)
        if p not in self.paths:
            self.paths.append(p)
            self.changed.emit()


_REGISTRY: Optional[_CheckpointRegistry] = None


def checkpoint_registry() -> _CheckpointRegistry:
    """The session-wide list of trained checkpoints (created on first use)."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = _CheckpointRegistry()
    return _REGISTRY


# ----------------------------------------------------------------------------- result layers


def _insert(viewer: Any, index: Optional[int], layer: Any, activate: bool) -> None:
    """Insert (``index``) or append a layer; ``activate=False`` keeps the current selection,
    so napari does not switch the layer controls (a re-render) for each result added.
    """
    layers = viewer.layers
    before = getattr(layers, "_activate_on_insert", None)
    if not activate and before is not None:
        layers._activate_on_insert = False
    try:
        if index is None:
            viewer.add_layer(layer)
        else:
            layers.insert(index, layer)
    finally:
        if before is not None:
            layers._activate_on_insert = before


def _update_in_place(old: Any, new: Any) -> bool:
    """Give an existing Image layer the new one's data, geometry, limits, colormap and metadata.

    Removing a layer from napari costs a forced garbage collection and a scene-graph rebuild
    (0.3-0.5 s each on a loaded CPU, measured); a re-run's result therefore replaces the old
    layer's content instead. Only between Image layers of the same kind (both multiscale or
    both not, same dimensionality); returns False when it cannot.
    """
    from napari.layers import Image

    if not (isinstance(old, Image) and isinstance(new, Image)):
        return False
    if old.multiscale != new.multiscale or old.ndim != new.ndim or old.rgb != new.rgb:
        return False
    old.data = new.data
    old.scale, old.translate = new.scale, new.translate
    old.contrast_limits_range = new.contrast_limits_range
    old.contrast_limits = new.contrast_limits
    old.colormap = new.colormap
    old.metadata = dict(new.metadata)
    return True


def put_layer(viewer: Any, layer: Any, *, source_id: Any, activate: bool = True) -> Any:
    """Add a result layer, replacing the same-named one computed from the same source.

    Re-running a widget on the same input then replaces its previous result (at the
    same place in the layer list) instead of piling up ``name [1]``, ``name [2]``...
    A same-named layer from another source is left alone (napari de-duplicates the
    new name). ``activate=False`` adds it without selecting it. An Image layer replaced
    keeps its identity (:func:`_update_in_place`): the returned layer is then the old one.
    """
    layer.metadata["astrosr_source"] = source_id
    for i, old in enumerate(list(viewer.layers)):
        if old.name == layer.name and type(old) is type(layer) and old.metadata.get("astrosr_source") == source_id:
            if _update_in_place(old, layer):
                return old
            viewer.layers.remove(old)
            _insert(viewer, i, layer, activate)
            return layer
    _insert(viewer, None, layer, activate)
    return layer


def put_residual(viewer: Any, layer: Any, *, prediction: str, reference: str, activate: bool = True) -> Any:
    """Add a residual layer of ``prediction`` against ``reference``, replacing any earlier
    residual of the same pair (Restore's "output - input" and Inspect's comparison of
    the same two layers are one residual, shown once).
    """
    key = [str(prediction), str(reference)]
    layer.metadata[ROLE] = "residual"
    layer.metadata["astrosr_residual_pair"] = key
    for i, old in enumerate(list(viewer.layers)):
        if old.metadata.get("astrosr_residual_pair") == key:
            if old.name == layer.name and _update_in_place(old, layer):
                return old
            viewer.layers.remove(old)
            _insert(viewer, i, layer, activate)
            return layer
    _insert(viewer, None, layer, activate)
    return layer

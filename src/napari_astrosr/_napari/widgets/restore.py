"""Restore widget: super-resolve / restore an image layer with any method.

The widget only translates: it copies the chosen layer's data on the main thread,
calls :func:`napari_astrosr.restoration.restore_job` in a thread worker and turns the
:class:`~napari_astrosr.restoration.RestoreResult` into layers:

- ``<input> [<method>]``, aligned over the input in world coordinates (an x2 output
  has half the input's pixel scale, and is translated so pixel *edges* coincide:
  output pixel ``j`` is centred at input coordinate ``(j + 0.5)/s - 0.5``), with the
  result header and WCS in ``metadata``;
- optionally ``<input> [<method>] residual``: the flux-conserving block sum of the
  output minus the input, on the input grid, with a diverging colormap centred on
  zero. For a flux-conserving method it is zero up to rounding; for flux-exact
  restoration it shows what the forward model does not reproduce.

Everything displaying them needs (residual, zscale and symmetric limits, the multiscale
pyramid of an image larger than 1024 px) is computed in the worker; the main thread only
adds the ready layers, without selecting them.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any, Optional

import numpy as np
from napari.layers import Image
from napari.utils.notifications import show_warning
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
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
from ...progress import run as run_job
from ...restore_options import METHODS, describe_choices, options_from_kwargs
from .._jobs import prepare_display, restore_for_display, symmetric_limits  # noqa: F401 - re-exported
from .._layers import result_layer_kwargs
from .._process import in_process
from .._workers import (
    JobPanel,
    LayerCombo,
    SourceTag,
    checkpoint_registry,
    find_layer,
    is_input_image,
    layer_array,
    nan_note,
    notify_error,
    put_layer,
    put_residual,
    scroll_body,
    tag_layer,
    widget_language,
)

CHECKPOINT_ITEM = "checkpoint file…"
RESIDUAL_CMAP = "bwr"  # diverging, white at the centre of the (symmetric) limits


def _is_2d_image(layer: Any) -> bool:
    return is_input_image(layer)


def _checkpoint_meta(path: str) -> dict:
    """The JSON sidecar of a checkpoint (architecture, scale, ...); raises AstroSRError if unusable."""
    from ...models.checkpoints import read_sidecar

    return read_sidecar(path)


class _GeometryProxy:
    """Stands in for a deleted source layer: its snapshot geometry and metadata."""

    def __init__(self, tag: SourceTag, scale: tuple, translate: tuple) -> None:
        self.name, self.metadata = tag.name, tag.metadata
        self.scale, self.translate = scale, translate


class RestoreWidget(QWidget):
    """Restore / super-resolve the chosen image layer (see the module docstring)."""

    def __init__(self, napari_viewer: Any, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self._methods: dict[str, dict] = {}

        self.input = LayerCombo(self.viewer, Image, predicate=_is_2d_image)
        self.method = QComboBox()
        self.checkpoint = QLineEdit()
        self.checkpoint.setPlaceholderText("checkpoint .pt written by `astrosr train`")
        self.browse = QPushButton("…")
        self.browse.setMaximumWidth(30)
        self.browse.clicked.connect(self._browse)
        ck_row = QHBoxLayout()
        ck_row.addWidget(self.checkpoint, 1)
        ck_row.addWidget(self.browse)
        self.scale = QSpinBox()
        self.scale.setRange(1, 8)
        self.scale.setValue(2)
        self.device = QComboBox()
        self.device.addItems(["auto", "cpu", "cuda", "mps"])
        # (not resolved here: that would import torch and slow the widget's opening)
        self.device.setToolTip("auto: cuda if available, then mps, then cpu; the device used is shown after a run")
        self.device_used = QLabel("")
        self.choices_used = QLabel("")  # what the projection/sky defaults did on the last run
        self.choices_used.setWordWrap(True)
        self.tile = QSpinBox()
        self.tile.setRange(0, 8192)
        self.tile.setSingleStep(64)
        self.tile.setSpecialValueText("auto")
        self.tile.setToolTip(
            "Tile size in input pixels for network inference\n"
            "(auto: the whole image when it fits in memory, else tiles; the run reports how many)"
        )
        self.flux_exact = QCheckBox("project onto the forward model (recommended)")
        self.flux_exact.setToolTip(
            "Least change so that PSF blur + flux-conserving downsampling of the output reproduces the input:\n"
            "sources keep the flux the data give them. On by default for the networks and backprojection\n"
            "(uncheck to see a network's output alone); without a PSF it uses the block sum alone."
        )
        self.flux_noise = QCheckBox("measure the noise: exact on clean data, only above the noise on noisy data")
        self.flux_noise.setToolTip(
            "Automatic (default): the input's noise is measured; on clean data the projection is exact, on\n"
            "noisy data it reproduces the input only where the residual rises above that noise (a Wiener\n"
            "filter of the residual). Unchecked: always exact (fits the noise of a noisy input)."
        )
        self.flux_noise.setChecked(True)
        self.keep_sky = QCheckBox("keep the input's sky (network only on sources)")
        self.keep_sky.setToolTip(
            "Networks: apply the network's change only where the input shows signal (S/N above 2, fully above 5);\n"
            "the sky stays the input's flux-conserving upsampling. The networks otherwise change the sky's\n"
            "distribution, which lowers the background sep/SExtractor measure and raises aperture fluxes\n"
            "(measured: +3.4% on the bright galaxies of a noisy HST crop). Applied before any projection."
        )
        self.psf = QLineEdit()
        self.psf.setPlaceholderText("gaussian:1.0 | airy:2.0 | gaussian+airy:1,2 | moffat:3,2.5 | PSF.fits | none")
        self.psf.setEnabled(False)
        self.flux_exact.toggled.connect(self._update_psf_enabled)
        self.residual = QCheckBox("add residual layer (block sum of output − input)")
        self.residual.setChecked(True)
        self.run_button = QPushButton("Restore")
        self.run_button.clicked.connect(self.run)
        self.info = QLabel("")
        self.info.setWordWrap(True)

        form = QFormLayout()
        form.addRow("Input", self.input)
        form.addRow("Method", self.method)
        form.addRow("Checkpoint", ck_row)
        form.addRow("Scale", self.scale)
        form.addRow("Device", self.device)
        form.addRow("", self.device_used)
        form.addRow("Tile", self.tile)
        form.addRow("Flux-exact", self.flux_exact)
        form.addRow("", self.flux_noise)
        form.addRow("Sky", self.keep_sky)
        form.addRow("PSF", self.psf)
        form.addRow("", self.residual)
        form.addRow("", self.choices_used)

        self.jobs = JobPanel(busy_widgets=[self.run_button])
        lay = scroll_body(self)
        lay.addLayout(form)
        lay.addWidget(self.info)
        lay.addWidget(self.run_button)
        lay.addWidget(self.jobs)
        lay.addStretch(1)

        self.method.currentIndexChanged.connect(self._method_changed)
        # a choice made by the user survives the list loading; the default does not
        self._user_chose = False
        self.method.activated.connect(self._user_activated)
        self.checkpoint.textChanged.connect(self._checkpoint_changed)
        checkpoint_registry().changed.connect(self.refresh_methods)
        self._listed: Optional[list] = None
        #: the last run's NaN report ('' when input and output were finite)
        self.nan_report = ""
        self.refresh_methods()
        self._load_methods()

    # ------------------------------------------------------------------ methods list

    @property
    def methods_ready(self) -> bool:
        """True once the method list has been loaded (it loads in the background)."""
        return self._listed is not None

    def _load_methods(self) -> None:
        """Load ``list_methods()`` in a thread: it imports torch (seconds), which would
        otherwise freeze napari while the widget opens.
        """
        from napari.qt.threading import create_worker

        def _list() -> list:
            from ...method_table import list_methods

            # costs are read from the bundled weights' sidecars: no torch import, no network build
            return list_methods()

        def _done(methods: list) -> None:
            self._listed = list(methods)
            self.refresh_methods()

        def _failed(exc: BaseException) -> None:
            self._listed = []
            notify_error(exc, context="listing restoration methods")
            self.refresh_methods()

        self.info.setText("loading the list of methods…")
        worker = create_worker(_list, _ignore_errors=True, _start_thread=False)
        worker.returned.connect(_done)
        worker.errored.connect(_failed)
        self._methods_worker = worker  # keep a reference while it runs
        worker.start()

    def refresh_methods(self) -> None:
        """List every method of ``list_methods()``, trained checkpoints and 'checkpoint file…'."""
        current = self.method.currentText()
        self._methods = {}
        for m in self._listed or []:
            self._methods[m["name"]] = dict(m)
        for path in checkpoint_registry().paths:
            try:
                meta = _checkpoint_meta(path)
            except Exception:  # noqa: BLE001 - a deleted/unreadable file is simply not listed
                continue
            label = f"{meta['architecture']} ({Path(path).name})"
            self._methods[label] = {
                "name": meta["architecture"],
                "kind": "checkpoint",
                "checkpoint": path,
                "scales": (meta["scale"],) if "scale" in meta else (),
                "description": f"trained this session: {path}",
            }
        self.method.blockSignals(True)
        self.method.clear()
        self.method.addItems(list(self._methods) + [CHECKPOINT_ITEM])
        if self._user_chose and (current in self._methods or current == CHECKPOINT_ITEM):
            self.method.setCurrentText(current)
        elif self._methods:
            self.method.setCurrentText(self.default_method())
        self.method.blockSignals(False)
        self._method_changed()

    def _user_activated(self, *_: Any) -> None:
        self._user_chose = True

    def default_method(self) -> str:
        """The first network with bundled weights for the current scale, else the first
        network with any bundled weights, else the first method listed.
        """
        nets = [(k, v) for k, v in self._methods.items() if v.get("kind") == "network" and v.get("bundled")]
        for k, v in nets:
            if self.scale.value() in (v.get("bundled") or ()):
                return k
        if nets:
            return nets[0][0]
        return next(iter(self._methods), CHECKPOINT_ITEM)

    def _method_changed(self, *_: Any) -> None:
        self.psf.setStyleSheet("")
        label = self.method.currentText()
        info = self._methods.get(label, {})
        is_file = label == CHECKPOINT_ITEM
        self._update_psf_enabled()
        is_net = is_file or info.get("kind") in ("network", "checkpoint")
        self.keep_sky.setEnabled(is_net)
        # the method's defaults (one registry: restore_options.METHODS)
        name = str(info.get("name", label))
        projects = is_net or (name in METHODS and METHODS[name].projects)
        self.flux_exact.setChecked(projects)
        self.flux_exact.setEnabled(name != "backprojection")  # it is the projection
        self.keep_sky.setChecked(is_net)
        self.checkpoint.setEnabled(is_file)
        self.browse.setEnabled(is_file)
        if info.get("kind") == "checkpoint":
            self.checkpoint.setText(info["checkpoint"])
        scales = tuple(info.get("scales") or ())
        if scales and self.scale.value() not in scales:
            self.scale.setValue(int(scales[0]))
        bits = []
        if info.get("description"):
            bits.append(str(info["description"]))
        if scales:
            bits.append("scales: " + ", ".join(f"x{s}" for s in scales))
        if info.get("params"):
            bits.append(f"{int(info['params']):,} parameters")
        if info.get("kind") == "network" and self.scale.value() not in (info.get("bundled") or []):
            bits.append(f"no bundled weights for x{self.scale.value()}: choose a checkpoint file")
        if info.get("needs_psf"):
            bits.append("needs a PSF")
        if info.get("flux"):
            bits.append(f"flux: {info['flux']}")
        self.info.setText(widget_language(" · ".join(bits)))  # descriptions are written for the CLI

    def _checkpoint_changed(self, text: str) -> None:
        """A readable checkpoint sets the scale it was trained for and describes itself."""
        if not text or not Path(text).is_file():
            return
        try:
            meta = _checkpoint_meta(text)
        except Exception as exc:  # noqa: BLE001 - shown inline, the run will report it again
            self.info.setText(str(exc))
            return
        self.scale.setValue(int(meta["scale"]))
        self.info.setText(
            f"{meta['architecture']} x{meta['scale']} checkpoint"
            + (f" (preset {meta['preset']})" if meta.get("preset") else "")
            + f", step {meta.get('step', '?')}"
        )

    def _update_psf_enabled(self, *_: Any) -> None:
        info = self._methods.get(self.method.currentText(), {})
        self.psf.setEnabled(bool(info.get("needs_psf")) or self.flux_exact.isChecked())

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Model checkpoint", "", "Checkpoints (*.pt *.pth);;All files (*)")
        if path:
            self.checkpoint.setText(path)

    # ------------------------------------------------------------------ running

    def options(self) -> dict:
        """The restore_job keyword arguments chosen in the widget (validated through ``RestoreOptions``)."""
        label = self.method.currentText()
        info = self._methods.get(label, {})
        model: Optional[str] = None
        if label == CHECKPOINT_ITEM or info.get("kind") == "checkpoint":
            model = self.checkpoint.text().strip()
            if not model:
                raise AstroSRError("Checkpoint: choose a .pt file written by `astrosr train`")
            if not Path(model).is_file():
                raise AstroSRError(f"Checkpoint: {model} does not exist")
            method = str(_checkpoint_meta(model)["architecture"])
        else:
            method = str(info.get("name", label))
        psf = self.psf.text().strip() or None if self.psf.isEnabled() else None
        project = self.flux_exact.isChecked()
        kw = dict(
            method=method,
            scale=int(self.scale.value()),
            model=model,
            device=self.device.currentText(),
            tile=int(self.tile.value()) or None,
            psf=psf,
            # only a choice that differs from the method's default is passed (its errors stay the default's)
            project=None
            if method == "backprojection" or project == (METHODS[method].projects if method in METHODS else False)
            else project,
            # checked: the default (noise measured, exact or noise-aware); unchecked: always exact
            flux_noise=None if self.flux_noise.isChecked() or not project else "exact",
            keep_sky=(True if self.keep_sky.isChecked() else False) if self.keep_sky.isEnabled() else None,
        )
        opts = options_from_kwargs(**kw)
        self.psf.setStyleSheet("")
        # with the field empty the job finds the PSF in the data (header, PSF extension, the image's stars);
        # when it cannot, the run fails and _psf_error highlights the field
        return opts.model_dump()

    def _psf_error(self, exc: BaseException) -> None:
        """Highlight the PSF field when a run failed for want of a PSF."""
        if "PSF" in str(exc) or "--psf" in str(exc):
            self.psf.setStyleSheet("border: 2px solid #d9534f;")

    def run(self) -> Any:
        """Start restoring the chosen layer (returns the worker, or None on bad input)."""
        layer = self.input.value()
        try:
            if layer is None:
                raise AstroSRError("Input: open or choose a 2-D image layer first")
            opts = self.options()
            data = layer_array(layer)  # main-thread copy: the worker owns its input
        except AstroSRError as exc:
            notify_error(exc, context="Restore")
            return None
        tag = tag_layer(layer)
        want_residual = self.residual.isChecked()
        if nan_note(data):
            show_warning(f"Restore: {nan_note(data)}; NaN regions stay NaN and can grow in the output")
        wcs = tag.metadata.get("wcs")
        header = tag.metadata.get("header")

        def job(stop):
            # in a worker process: nothing it computes can hold the GUI thread's GIL
            return (
                yield from in_process(
                    restore_for_display, data, wcs=wcs, header=header, opts=opts, want_residual=want_residual, stop=stop
                )
            )

        self.device_used.setText("")
        self.choices_used.setText("")
        return self.jobs.start(
            job, on_result=self._on_result, on_error=self._psf_error, tag=tag, label=f"Restore [{opts['method']}]"
        )

    def _on_result(self, out: tuple, tag: Optional[SourceTag]) -> None:
        res, residual = out[:2]
        note = out[2] if len(out) > 2 else ""
        display = out[3] if len(out) > 3 else None
        assert tag is not None
        tiles = (getattr(res, "params", None) or {}).get("tiles")
        tile = (getattr(res, "params", None) or {}).get("tile")
        used = f"device used: {res.device}"
        plural = "s" if tiles and int(tiles) != 1 else ""
        if tiles:
            used += f" · {tiles} tile{plural}" + (f" of {tile} px" if tile and int(tiles) > 1 else "")
        self.device_used.setText(used)
        # the Tile box tells what "auto" did
        self.tile.setSpecialValueText(f"auto (last run: {tiles} tile{plural})" if tiles else "auto")
        self.choices_used.setText(describe_choices(res.params))
        self.nan_report = note
        if note:
            show_warning(f"Restore: {note}")
        # one layer per event-loop turn (the panel runs the steps): napari draws the first before the second
        return self.iter_result_layers(res, residual, tag, display=display)

    def add_result_layers(
        self, res: Any, residual: Optional[np.ndarray], tag: SourceTag, *, display: Optional[dict] = None
    ) -> list:
        """Turn a RestoreResult (+ residual) into layers aligned over the source image.

        ``display`` is :func:`prepare_display`'s output, computed in the worker; without it
        it is computed here (on the calling thread).
        """
        return run_job(self.iter_result_layers(res, residual, tag, display=display))

    def iter_result_layers(
        self, res: Any, residual: Optional[np.ndarray], tag: SourceTag, *, display: Optional[dict] = None
    ) -> Generator[None, None, list]:
        """:meth:`add_result_layers` as steps: yields after adding each layer, returns the layers."""
        if display is None:
            display = prepare_display(res.data, residual)
        src = find_layer(self.viewer, tag)
        # the source may have been moved or deleted since the job started: use its
        # current geometry when it is still there, the snapshot otherwise
        scale = tuple(src.scale) if src is not None else tag.scale
        translate = tuple(src.translate) if src is not None else tag.translate
        name = f"{tag.name} [{res.method}]"
        s = int(res.scale)
        kwargs = result_layer_kwargs(
            src if src is not None else _GeometryProxy(tag, scale, translate),
            res.data,
            scale_factor=s,
            name=name,
            wcs=res.wcs,
            header=res.header,
            contrast_limits=display["limits"],
        )
        kwargs.pop("name")
        kwargs["metadata"]["astrosr"] = {
            "method": res.method,
            "scale": s,
            "device": res.device,
            "params": dict(getattr(res, "params", {}) or {}),
            "timings": dict(getattr(res, "timings", {}) or {}),
            "source": tag.name,
        }
        if getattr(res, "err", None) is not None:
            # File > Save writes it as the ERR extension, as `astrosr restore` does (_writer.write_image)
            kwargs["metadata"]["err"] = {"data": res.err, "how": res.err_how, "filter": res.err_filter}
        shown = display["data"]
        out = Image(shown, multiscale=isinstance(shown, list), name=name, **kwargs)
        layers = [put_layer(self.viewer, out, source_id=tag.layer_id, activate=False)]
        if residual is not None:
            yield  # (placed like the result, even if the source moved in between)
            shown = display["residual"]
            resid = Image(
                shown,
                multiscale=isinstance(shown, list),
                name=f"{name} residual",
                scale=scale,
                translate=translate,
                colormap=RESIDUAL_CMAP,
                contrast_limits=display["residual_limits"],
                metadata={
                    "wcs": tag.metadata.get("wcs"),
                    "header": tag.metadata.get("header"),
                    "bunit": tag.metadata.get("bunit"),
                    "astrosr": {"residual_of": name},
                },
            )
            resid.metadata["astrosr_source"] = tag.layer_id
            layers.append(put_residual(self.viewer, resid, prediction=name, reference=tag.name, activate=False))
        return layers

"""Coadd widget: combine registered frames (DIP / inverse variance / median).

Frames come from one stack layer (N, H, W) or several 2-D layers of one shape, ticked
in the list. Noise: estimated with sep, or a layer of sigma maps (or inverse-variance
weights); mask: a layer whose non-zero pixels are bad; PSF: a spec (``gaussian:1.5``,
``moffat:3,2.5``, ``PSF.fits``), estimated from each frame's stars (photutils ePSF), or
a PSF layer (2-D: all frames; 3-D: one per frame).

All methods run :func:`napari_astrosr.coadd_job.coadd_job`, the job behind ``astrosr
coadd`` (same options model, same checks, same report):

- **DIP** (AstroClearNet): the latent layer ``<frames> [coadd dip]`` updates live from the
  job's previews; the progress line gives an estimate of the time left from the first
  step; Stop (checked every optimisation step) keeps the current latent.
- **inverse variance** / **median**: one step each.

The text below the buttons says what was checked against the inverse-variance coadd (S_F,
sky sigma, per-source flux by S/N bin) and what came out.

The widget only translates layers into these calls; the results keep the frames' world
coordinates (a 2x super-resolved DIP latent is aligned like an x2 restoration).
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
from napari.layers import Image, Labels
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ...exceptions import AstroSRError
from ...progress import Progress
from .._jobs import coadd_for_display, latent_limits
from .._process import in_process
from .._workers import (
    JobPanel,
    LayerCombo,
    SourceTag,
    aligned_geometry,
    find_layer,
    layer_array,
    notify_error,
    put_layer,
    tag_layer,
)

METHODS = {"DIP (AstroClearNet)": "dip", "inverse variance": "ivar", "median": "median"}
PSF_SPEC, PSF_ESTIMATE, PSF_HEADER = "spec", "estimate from stars", "header FWHM"
#: DIP steps between live updates of the latent layer (a preview is one small array copy)
PREVIEW_EVERY = 25


def _image_2d_or_3d(layer: Any) -> bool:
    return isinstance(layer, Image) and not layer.rgb and np.ndim(layer.data) in (2, 3)


class CoaddWidget(QWidget):
    """Coadd the ticked frames (see the module docstring)."""

    def __init__(self, napari_viewer: Any, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.latent_layer: Optional[Image] = None
        self._limits_set: Optional[tuple] = None
        self.preview_every = PREVIEW_EVERY
        self.previews = 0  # latent previews shown during the last run

        self.frames = QListWidget()
        self.frames.setToolTip("Tick one stack layer (N, H, W) or several 2-D layers of one shape")
        self.frames.setMaximumHeight(120)
        self._frame_layers: list[Any] = []
        ev = self.viewer.layers.events
        for e in (ev.inserted, ev.removed, ev.reordered):
            e.connect(self.refresh_frames)
        self.refresh_frames()

        self.noise = LayerCombo(
            self.viewer, Image, allow_none=True, none_label="(estimate with sep)", predicate=_image_2d_or_3d
        )
        self.noise_is_weight = QCheckBox("layer holds inverse-variance weights")
        self.mask = LayerCombo(
            self.viewer, (Image, Labels), allow_none=True, predicate=lambda ly: np.ndim(ly.data) in (2, 3)
        )
        self.psf_mode = QComboBox()
        self.psf_layer = LayerCombo(self.viewer, Image, predicate=_image_2d_or_3d)
        self.psf_mode.addItems([PSF_SPEC, PSF_HEADER, PSF_ESTIMATE, "layer"])
        self.psf_spec = QLineEdit("gaussian:1.5")
        self.psf_spec.setToolTip(
            "gaussian:SIGMA | airy:R | gaussian+airy:S,R | moffat:FWHM,BETA | PSF.fits (frame pixels)"
        )
        self.psf_mode.currentTextChanged.connect(self._psf_mode_changed)
        self.method = QComboBox()
        self.method.addItems(list(METHODS))
        self.method.currentTextChanged.connect(self._method_changed)
        from ...coadd_job import CoaddOptions

        defaults = CoaddOptions()  # the CLI's defaults: one options model for both
        self.iterations = QSpinBox()
        self.iterations.setRange(1, 100_000)
        self.iterations.setValue(int(defaults.iterations))
        self.iterations.setToolTip(
            "DIP: step cap; the fit stops earlier when its held-out pixels' chi2 reaches the noise "
            "model's expectation or stops improving"
        )
        self.noise_stop = QCheckBox("stop when held-out pixels reach the noise level")
        self.noise_stop.setChecked(bool(defaults.noise_stop))
        self.noise_stop.setToolTip(
            "DIP: stop when the chi2 of held-out pixels is at the noise model's expectation (used only "
            "where the noise maps pass a check against each frame's sky scatter). Off: only the plateau "
            "and the step cap stop the fit (sharper, slower)"
        )
        self.noise_tol_max = QDoubleSpinBox()
        self.noise_tol_max.setRange(0.0, 1.0)
        self.noise_tol_max.setDecimals(3)
        self.noise_tol_max.setSingleStep(0.01)
        self.noise_tol_max.setValue(float(defaults.noise_tol_max))
        self.noise_tol_max.setToolTip(
            "DIP: trust the noise maps for the chi2 target only if every frame's sky scatter / map is "
            "within 1 +- this value"
        )
        self.noise_stop.toggled.connect(self.noise_tol_max.setEnabled)
        self.holdout = QDoubleSpinBox()
        self.holdout.setRange(0.0, 0.49)
        self.holdout.setDecimals(2)
        self.holdout.setSingleStep(0.05)
        self.holdout.setValue(float(defaults.holdout))
        self.holdout.setToolTip(
            "DIP: fraction of each frame's pixels held out from the fit to decide when to stop (0: off)"
        )
        self.superres = QComboBox()
        self.superres.addItems(["1", "2"])
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.device = QComboBox()
        self.device.addItems(["auto", "cpu", "cuda", "mps"])
        self.run_button = QPushButton("Coadd")
        self.run_button.clicked.connect(self.run)
        self.summary = QLabel("")
        self.summary.setWordWrap(True)

        form = QFormLayout()
        form.addRow("Frames", self.frames)
        form.addRow("Noise", self.noise)
        form.addRow("", self.noise_is_weight)
        form.addRow("Mask", self.mask)
        form.addRow("PSF", self.psf_mode)
        form.addRow("PSF spec", self.psf_spec)
        form.addRow("PSF layer", self.psf_layer)
        form.addRow("Method", self.method)
        form.addRow("Iterations", self.iterations)
        form.addRow("Held out", self.holdout)
        form.addRow("", self.noise_stop)
        form.addRow("Map tolerance", self.noise_tol_max)
        form.addRow("Super-resolution", self.superres)
        form.addRow("Seed", self.seed)
        form.addRow("Device", self.device)
        self.jobs = JobPanel(busy_widgets=[self.run_button])
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.run_button)
        lay.addWidget(self.jobs)
        lay.addWidget(self.summary)
        lay.addStretch(1)
        self._psf_mode_changed(self.psf_mode.currentText())
        self._method_changed(self.method.currentText())

    # ------------------------------------------------------------------ frame list

    def refresh_frames(self, *_: Any) -> None:
        """List the 2-D/3-D image layers, keeping the ticks."""
        try:
            self.frames.count()
        except RuntimeError:  # the widget was deleted; the viewer outlived it
            return
        ticked = set(id(ly) for ly in self.checked_layers())
        # results of any widget (restorations, residuals, flux maps, earlier coadds) are not frames
        self._frame_layers = [
            ly
            for ly in reversed(list(self.viewer.layers))
            if _image_2d_or_3d(ly) and "astrosr_source" not in ly.metadata
        ]
        self.frames.clear()
        for ly in self._frame_layers:
            shape = "x".join(str(n) for n in np.shape(ly.data))
            item = QListWidgetItem(f"{ly.name}  ({shape})")
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if id(ly) in ticked else Qt.CheckState.Unchecked)
            self.frames.addItem(item)

    def checked_layers(self) -> list[Any]:
        """The ticked layers, in the viewer's layer order (bottom first: frame 0)."""
        out = []
        for i in range(self.frames.count()):
            if self.frames.item(i).checkState() == Qt.CheckState.Checked and i < len(self._frame_layers):
                out.append(self._frame_layers[i])
        order = {id(ly): k for k, ly in enumerate(self.viewer.layers)}
        return sorted(out, key=lambda ly: order.get(id(ly), 0))

    def set_frames(self, layers: list[Any]) -> None:
        """Tick exactly ``layers``."""
        ids = {id(ly) for ly in layers}
        for i, ly in enumerate(self._frame_layers):
            self.frames.item(i).setCheckState(Qt.CheckState.Checked if id(ly) in ids else Qt.CheckState.Unchecked)

    def _psf_mode_changed(self, mode: str) -> None:
        # the text field holds the PSF spec, or the header keyword with the FWHM in pixels
        self.psf_spec.setEnabled(mode in (PSF_SPEC, PSF_HEADER))
        if mode == PSF_HEADER and ":" in self.psf_spec.text():
            self.psf_spec.setText("FWHM")
        elif mode == PSF_SPEC and ":" not in self.psf_spec.text():
            self.psf_spec.setText("gaussian:1.5")
        self.psf_layer.setEnabled(mode == "layer")

    def _method_changed(self, label: str) -> None:
        dip = METHODS.get(label) == "dip"
        for w in (self.iterations, self.holdout, self.noise_stop, self.superres, self.seed, self.device):
            w.setEnabled(dip)
        self.noise_tol_max.setEnabled(dip and self.noise_stop.isChecked())

    # ------------------------------------------------------------------ inputs

    def _stack(self) -> tuple[np.ndarray, list[Any]]:
        layers = self.checked_layers()
        if not layers:
            raise AstroSRError("Frames: tick a stack layer or at least two image layers")
        if len(layers) == 1:
            if np.ndim(layers[0].data) != 3:
                raise AstroSRError(f"Frames: '{layers[0].name}' is a single image; tick a stack or several layers")
            return layer_array(layers[0]), layers
        if any(np.ndim(ly.data) != 2 for ly in layers):
            raise AstroSRError("Frames: tick either one stack layer or several 2-D layers, not both")
        shapes = {np.shape(ly.data) for ly in layers}
        if len(shapes) > 1:
            raise AstroSRError(f"Frames: the ticked layers have different shapes {sorted(shapes)}; register them first")
        return np.stack([layer_array(ly) for ly in layers]), layers

    @staticmethod
    def _per_frame(layer: Any, shape: tuple, what: str, dtype=np.float32) -> np.ndarray:
        a = layer_array(layer, dtype=dtype)
        if a.shape == shape[1:]:
            a = np.broadcast_to(a, shape).copy()
        if a.shape != shape:
            raise AstroSRError(f"{what}: layer '{layer.name}' has shape {a.shape}, the frames {shape}")
        return a

    def inputs(self) -> dict:
        """Frames, noise, masks and PSF choice copied from the layers (main thread)."""
        data, layers = self._stack()
        out: dict[str, Any] = dict(frames=data, layers=layers, sigmas=None, masks=None, psfs=None, weights=None)
        nl = self.noise.value()
        if nl is not None:
            a = self._per_frame(nl, data.shape, "Noise")
            if self.noise_is_weight.isChecked():
                out["weights"] = a
            else:
                out["sigmas"] = a
        ml = self.mask.value()
        if ml is not None:
            out["masks"] = self._per_frame(ml, data.shape, "Mask", dtype=np.float32) != 0
        mode = self.psf_mode.currentText()
        if mode == PSF_SPEC:
            out["psf_spec"] = self.psf_spec.text().strip()
            if not out["psf_spec"]:
                raise AstroSRError("PSF: give a spec such as gaussian:1.5, or choose 'estimate from stars'")
        elif mode == PSF_HEADER:
            key = self.psf_spec.text().strip() or "FWHM"
            if len(layers) == 1:
                headers = list(layers[0].metadata.get("headers") or [])
            else:
                headers = [ly.metadata.get("header") for ly in layers]
            if len(headers) != data.shape[0] or any(h is None for h in headers):
                raise AstroSRError("PSF: the frames carry no FITS headers (one per frame); give a PSF spec instead")
            from ...core.coadd import psf_from_fwhm

            out["psfs"] = [psf_from_fwhm(h, keyword=key, where=f"frame {i + 1}") for i, h in enumerate(headers)]
        elif mode == "layer":
            pl = self.psf_layer.value()
            if pl is None:
                raise AstroSRError("PSF layer: choose a PSF image layer")
            p = layer_array(pl)
            out["psfs"] = [p] * data.shape[0] if p.ndim == 2 else list(p)
        else:
            out["psf_estimate"] = True
        return out

    # ------------------------------------------------------------------ running

    def options(self) -> Any:
        """The :class:`~napari_astrosr.coadd_job.CoaddOptions` of the controls (CLI defaults otherwise)."""
        from ...coadd_job import CoaddOptions

        return CoaddOptions(
            method=METHODS[self.method.currentText()],
            iterations=int(self.iterations.value()),
            holdout=float(self.holdout.value()),
            noise_stop=bool(self.noise_stop.isChecked()),
            noise_tol_max=float(self.noise_tol_max.value()),
            superres=int(self.superres.currentText()),
            seed=int(self.seed.value()),
            device=self.device.currentText(),
            preview_every=int(self.preview_every),
        )

    def run(self) -> Any:
        """Start the coadd (returns the worker, or None on bad input)."""
        method = METHODS[self.method.currentText()]
        try:
            inp = self.inputs()
        except AstroSRError as exc:
            notify_error(exc, context="Coadd")
            return None
        first = inp.pop("layers")
        tag = tag_layer(first[0])
        tag.name = first[0].name if len(first) == 1 else f"{first[0].name}+{len(first) - 1}"
        opts = self.options()
        self.latent_layer = None
        self._limits_set = None

        def job(stop):
            # the same job as `astrosr coadd` (coadd_job), in a worker process: only the inputs come from layers
            return (
                yield from in_process(
                    coadd_for_display,
                    inp,
                    method=method,
                    wcs=tag.metadata.get("wcs"),
                    header=tag.metadata.get("header"),
                    opts=opts,
                    stop=stop,
                    kill_after=None,  # a DIP fit stops between steps and returns its latent (on_late_result)
                )
            )

        self._method = method
        self.previews = 0
        self._superres = opts.superres if method == "dip" else 1
        return self.jobs.start(
            job,
            on_result=self._on_result,
            on_progress=self._on_progress,
            # a DIP fit that ended after the panel went idle on Stop still delivers its latent,
            # unless another coadd has started meanwhile
            on_late_result=lambda out, t: None if self.jobs.busy else self._on_result(out, t),
            tag=tag,
            label=f"Coadd [{method}]",
        )

    def _geometry(self, tag: SourceTag, factor: int) -> tuple:
        src = find_layer(self.viewer, tag)
        scale = tuple(src.scale)[-2:] if src is not None else tag.scale[-2:]
        translate = tuple(src.translate)[-2:] if src is not None else tag.translate[-2:]
        return aligned_geometry(scale, translate, factor)

    def _result_name(self, tag: SourceTag) -> str:
        return f"{tag.name} [coadd {self._method}]"

    def _show_latent(
        self, data: np.ndarray, tag: SourceTag, meta: Optional[dict] = None, *, limits: Any = "auto"
    ) -> Image:
        data = np.asarray(data, dtype=np.float32)
        if isinstance(limits, str):
            limits = latent_limits(data)
        layer = self.latent_layer
        if layer is not None and layer in self.viewer.layers:
            # follow the latent's range while it evolves, unless the user changed the limits
            user_changed = self._limits_set is not None and tuple(layer.contrast_limits) != self._limits_set
            layer.data = data
            if meta:
                layer.metadata.update(meta)
            if not user_changed and limits is not None:
                layer.contrast_limits = limits
                self._limits_set = tuple(layer.contrast_limits)
            return layer
        scale, translate = self._geometry(tag, self._superres)
        layer = Image(
            data,
            name=self._result_name(tag),
            scale=scale,
            translate=translate,
            contrast_limits=limits,
            colormap="gray",
            metadata=dict(meta or {}),
        )
        self.latent_layer = put_layer(self.viewer, layer, source_id=tag.layer_id)
        self._limits_set = tuple(self.latent_layer.contrast_limits)
        return self.latent_layer

    def _on_progress(self, event: Progress, tag: Optional[SourceTag]) -> None:
        if event.preview is not None and tag is not None:
            self.previews += 1
            self._show_latent(event.preview, tag, limits=event.values.get("limits", "auto"))

    def _on_result(self, out: Any, tag: Optional[SourceTag]) -> None:
        assert tag is not None
        res, limits = out if isinstance(out, tuple) else (out, "auto")
        meta = {
            "header": res.header,
            "wcs": res.wcs,
            "astrosr": {"method": self._method, "metrics": res.metrics, "params": getattr(res, "params", {})},
        }
        layer = self._show_latent(res.data, tag, meta, limits=limits)
        if res.uncertainty is not None:
            scale, translate = self._geometry(tag, self._superres)
            unc = Image(
                np.asarray(res.uncertainty, dtype=np.float32),
                name=f"{self._result_name(tag)} uncertainty",
                scale=scale,
                translate=translate,
                colormap="viridis",
                visible=False,
                metadata={"wcs": res.wcs},
            )
            put_layer(self.viewer, unc, source_id=tag.layer_id, activate=False)
        from ...coadd_job import report_lines

        self.summary.setText("\n".join([f"{layer.name}:"] + report_lines(res)))

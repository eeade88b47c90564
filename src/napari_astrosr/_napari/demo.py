"""``astrosr demo``: the main job on a bundled sample, loaded into napari.

The computation lives in :mod:`napari_astrosr.pipeline` (no napari): restore the sample
with the default model (bundled FISR x2, else backprojection), detect on input and output,
compare them (residual image, per-source residuals, KL/JS in default regions), validate the
method against bicubic on a degraded copy, and export FITS/ECSV/DS9/metrics.json. The demo
then shows all of it: input, ``<input> [<method>]`` (scale 0.5 for x2, aligned in world
coordinates), ``<input> [<method>] residual`` (diverging colormap, limits symmetric about
zero), source Points for input and output (features tables), per-source residual points
coloured by the relative flux residual, and the ROI Shapes; screenshots go to the output folder.

The demo is a plain sequence of steps (:data:`STEPS`), each a function taking the shared
:class:`DemoContext`. To add a step (restore, detect, compare, export, ...), write a
function ``def step_x(ctx): ...`` and insert it into :data:`STEPS` before
``step_screenshot`` (or call :func:`add_step`). A step that fails is logged and the demo
goes on, so one broken feature never hides the others.

Both modes write the main job's files plus ``screenshot.png`` (whole window, residual
layers visible), ``canvas.png`` (the canvas) and ``residual_zoom.png`` (canvas zoomed to the
brightest source's region), ``info.txt`` and ``demo_log.json`` into ``out_dir``. Headless
(``headless=True``, under the current X display; scripts/demo.sh wraps the command in
``xvfb-run``) then closes the viewer; otherwise napari stays open with everything loaded.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

PLUGIN = "napari-astrosr"


@dataclass
class DemoContext:
    """State shared by the demo steps."""

    headless: bool
    out_dir: Path
    sample: str = "hst_galaxy"
    viewer: Any = None
    layers: dict[str, Any] = field(default_factory=dict)
    """Named layers steps produce (e.g. ``"input"``, ``"restored"``) for later steps."""
    widgets: dict[str, Any] = field(default_factory=dict)
    docks: dict[str, Any] = field(default_factory=dict)
    log: list[dict[str, Any]] = field(default_factory=list)
    result: Any = None
    """The :class:`napari_astrosr.pipeline.MainJobResult` once ``step_main_job`` ran."""
    options: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments for :func:`napari_astrosr.pipeline.main_job` (method, device, validate, ...)."""

    def note(self, step: str, message: str, **values: Any) -> None:
        self.log.append({"step": step, "message": message, **values})
        print(f"[demo] {step}: {message}", flush=True)


def default_out_dir() -> Path:
    from ..pipeline import default_out_dir as _d

    return _d()


RESIDUAL_CMAP = "RdBu_r"  # diverging: blue = output has less flux than the input, red = more


# --- steps ----------------------------------------------------------------------------


def step_viewer(ctx: DemoContext) -> None:
    """Create the viewer (shown: screenshots need a realised window)."""
    import napari

    ctx.viewer = napari.Viewer(title="napari-astrosr demo", show=True)
    if ctx.headless:  # a fixed size so screenshots are comparable between runs
        ctx.viewer.window.resize(1400, 900)
    ctx.note("viewer", f"napari {napari.__version__}")


def step_load_sample(ctx: DemoContext) -> None:
    """Load the sample through the plugin's own reader (as a user would)."""
    from ..data import sample_path

    path = sample_path(ctx.sample)
    layers = ctx.viewer.open(str(path), plugin=PLUGIN)
    ctx.layers["input"] = layers[0]
    ctx.note(
        "load",
        f"{path.name} -> {[ly.name for ly in layers]}",
        shape=list(layers[0].data.shape),
        wcs=layers[0].metadata.get("wcs") is not None,
    )


def step_dock_widgets(ctx: DemoContext) -> None:
    """Dock every widget the plugin declares in napari.yaml (Display first)."""
    from npe2 import PluginManager

    manifest = PluginManager.instance().get_manifest(PLUGIN)
    declared = [w.display_name for w in (manifest.contributions.widgets or [])]
    names = sorted(declared, key=lambda n: (n != "Display", declared.index(n)))
    docks = ctx.docks
    for name in names:
        try:
            dock, widget = ctx.viewer.window.add_plugin_dock_widget(PLUGIN, name, tabify=True)
            ctx.widgets[name] = widget
            docks[name] = dock
            ctx.note("dock", f"docked {name!r}")
        except Exception as exc:  # another engineer's widget failing must not stop the demo
            ctx.note("dock", f"could not dock {name!r}: {type(exc).__name__}: {exc}", error=True)
    display = ctx.widgets.get("Display")
    if display is not None:
        display.stretch.setCurrentText("sqrt")
        ctx.note("display", "sqrt stretch, zscale limits, origin lower left")


def _process_events() -> None:
    from qtpy.QtWidgets import QApplication

    QApplication.processEvents()


def step_main_job(ctx: DemoContext) -> None:
    """Run the main job (pipeline.main_job) on the sample; the window repaints between steps."""
    from ..data import sample_path
    from ..pipeline import main_job
    from ..progress import run

    def on_progress(ev) -> None:
        ctx.viewer.status = f"astrosr: {ev.message}"
        _process_events()

    ctx.result = run(main_job(sample_path(ctx.sample), out_dir=ctx.out_dir, **ctx.options), on_progress=on_progress)
    r = ctx.result
    ctx.note(
        "main_job",
        f"{r.method} x{r.restored.scale} on {r.restored.device}: {r.method_reason}",
        method=r.method,
        device=r.restored.device,
        timings={k: round(v, 3) for k, v in r.timings.items()},
        files=sorted(p.name for p in r.files.values()),
    )


def _symmetric(values: Any, percentile: float = 99.5) -> float:
    import numpy as np

    a = np.abs(np.asarray(values, dtype=float))
    a = a[np.isfinite(a)]
    m = float(np.percentile(a, percentile)) if a.size else 0.0
    return m if m > 0 else (float(a.max()) if a.size and a.max() > 0 else 1.0)


def step_result_layers(ctx: DemoContext) -> None:
    """Add the restored image, residual, detections, per-source residuals and ROIs as layers."""
    import numpy as np

    from ._layers import result_layer_kwargs, sources_to_points

    r = ctx.result
    if r is None:
        raise RuntimeError("the main job did not run")
    v = ctx.viewer
    src = ctx.layers["input"]
    res = r.restored
    s = int(res.scale)
    name = f"{src.name} [{r.method}]"
    kw = result_layer_kwargs(src, res.data, scale_factor=s, name=name, wcs=res.wcs, header=res.header)
    kw["metadata"]["astrosr"] = {
        "method": r.method,
        "scale": s,
        "device": res.device,
        "params": res.params,
        "timings": res.timings,
        "reason": r.method_reason,
        "path": str(r.files.get("restored", "")),
    }
    out_layer = v.add_image(res.data, **kw)
    ctx.layers["restored"] = out_layer
    src_scale, src_translate = tuple(src.scale[-2:]), tuple(src.translate[-2:])
    m = _symmetric(r.residual)
    resid = v.add_image(
        r.residual,
        name=f"{name} residual",
        scale=src_scale,
        translate=src_translate,
        colormap=RESIDUAL_CMAP,
        contrast_limits=(-m, m),
        interpolation2d="nearest",
        metadata={
            "wcs": src.metadata.get("wcs"),
            "header": src.metadata.get("header"),
            "bunit": src.metadata.get("bunit"),
            "astrosr": {
                "residual_of": name,
                "definition": f"block_sum(output, {s}) - input",
                "path": str(r.files.get("residual", "")),
            },
        },
    )
    ctx.layers["residual"] = resid

    pts, feats = sources_to_points(r.sources_input, scale=src_scale, translate=src_translate)
    ctx.layers["sources_input"] = v.add_points(
        pts,
        features=feats,
        name=f"{src.name} sources",
        size=12,
        symbol="disc",
        face_color="transparent",
        border_color="lime",
        border_width=0.08,
        border_width_is_relative=True,
    )
    pts, feats = sources_to_points(
        r.sources_output, scale=tuple(out_layer.scale[-2:]), translate=tuple(out_layer.translate[-2:])
    )
    ctx.layers["sources_output"] = v.add_points(
        pts, features=feats, name=f"{name} sources", size=4, symbol="cross", face_color="cyan", border_width=0
    )

    pts, feats = sources_to_points(r.source_residuals, scale=src_scale, translate=src_translate)
    lim = _symmetric(feats["rel_delta"]) if len(feats) else 1.0
    if len(feats):
        feats = feats.assign(rel_delta=np.nan_to_num(feats["rel_delta"].to_numpy(float), nan=0.0))
    kw_pts: dict[str, Any] = {"face_color": "white"}
    if len(feats):
        kw_pts = dict(face_color="rel_delta", face_colormap=RESIDUAL_CMAP, face_contrast_limits=(-lim, lim))
    ctx.layers["flux_residuals"] = v.add_points(
        pts, features=feats, name=f"{name} flux residuals", size=8, symbol="ring", border_width=0, opacity=1.0, **kw_pts
    )  # a ring: the residual image stays visible at the source centre

    sy, sx = src_scale
    ty, tx = src_translate
    rects = [np.array([[r0.y0 - 0.5, r0.x0 - 0.5], [r0.y1 - 0.5, r0.x1 - 0.5]]) * (sy, sx) + (ty, tx) for r0 in r.rois]
    rects = [np.array([[a[0, 0], a[0, 1]], [a[0, 0], a[1, 1]], [a[1, 0], a[1, 1]], [a[1, 0], a[0, 1]]]) for a in rects]
    import pandas as pd

    ctx.layers["rois"] = v.add_shapes(
        rects,
        shape_type="rectangle",
        name="ROIs (KL/JS)",
        edge_color="yellow",
        face_color="transparent",
        edge_width=1.0,
        features=pd.DataFrame(
            {
                "name": [q.name for q in r.rois],
                "kl": [e.get("kl") for e in r.metrics["consistency"]["rois"]],
                "js": [e.get("js") for e in r.metrics["consistency"]["rois"]],
            }
        ),
        text={"string": "{name}", "color": "yellow", "anchor": "upper_left", "size": 10},
    )
    v.layers.selection.active = resid
    ctx.note(
        "layers",
        ", ".join(ly.name for ly in v.layers),
        layers={ly.name: [float(x) for x in ly.scale[-2:]] for ly in v.layers},
    )


def _zoom_to(viewer: Any, box: tuple[float, float, float, float], margin: float = 1.15) -> None:
    """Centre the camera on the world box (y0, y1, x0, x1) and zoom so it fills the canvas."""
    y0, y1, x0, x1 = box
    viewer.camera.center = ((y0 + y1) / 2, (x0 + x1) / 2)
    h, w = viewer.canvas.size
    viewer.camera.zoom = min(h / ((y1 - y0) * margin), w / ((x1 - x0) * margin))


def step_screenshot(ctx: DemoContext) -> None:
    """Save the window (residual layers visible), the canvas, and the canvas zoomed to the residual."""
    v = ctx.viewer
    if "Display" in ctx.docks:  # tabified docks: show the Display tab, not the one docked last
        ctx.docks["Display"].show()
        ctx.docks["Display"].raise_()
    _process_events()
    v.reset_view()
    _process_events()
    window = ctx.out_dir / "screenshot.png"
    canvas = ctx.out_dir / "canvas.png"
    v.screenshot(str(window), canvas_only=False, flash=False)
    v.screenshot(str(canvas), canvas_only=True, flash=False)
    names = [window.name, canvas.name]
    r = ctx.result
    if r is not None and r.rois:
        roi = next((q for q in r.rois if q.name == "bright"), r.rois[0])
        src = ctx.layers["input"]
        (sy, sx), (ty, tx) = src.scale[-2:], src.translate[-2:]
        _zoom_to(v, (roi.y0 * sy + ty, roi.y1 * sy + ty, roi.x0 * sx + tx, roi.x1 * sx + tx))
        # the residual itself, not the markers, at the zoomed source
        hidden = [ly for ly in v.layers if ly._type_string == "points" and ly.visible]
        for ly in hidden:
            ly.visible = False
        _process_events()
        zoom = ctx.out_dir / "residual_zoom.png"
        try:
            v.screenshot(str(zoom), canvas_only=True, flash=False)
        finally:
            for ly in hidden:
                ly.visible = True
        names.append(zoom.name)
        v.reset_view()
    ctx.note("screenshot", ", ".join(names))


def step_info(ctx: DemoContext) -> None:
    """Write the sample's ``astrosr info`` text."""
    from ..core.fits_io import describe
    from ..data import sample_path

    (ctx.out_dir / "info.txt").write_text(describe(sample_path(ctx.sample)) + "\n")
    ctx.note("info", "info.txt")


STEPS: list[Callable[[DemoContext], None]] = [
    step_viewer,
    step_load_sample,
    step_dock_widgets,
    step_main_job,
    step_result_layers,
    # insert further steps here: they see ctx.layers and ctx.result
    step_screenshot,
    step_info,
]
"""The demo, in order. ``step_viewer`` and ``step_load_sample`` are required; the others may fail."""

REQUIRED = {"step_viewer", "step_load_sample"}


def add_step(step: Callable[[DemoContext], None], *, before: str = "step_screenshot") -> None:
    """Insert ``step`` before the step named ``before`` (idempotent)."""
    if step in STEPS:
        return
    names = [s.__name__ for s in STEPS]
    STEPS.insert(names.index(before) if before in names else len(STEPS), step)


def run_demo(
    *,
    headless: bool,
    out_dir: Optional[Path] = None,
    sample: str = "hst_galaxy",
    steps: Optional[list[Callable[[DemoContext], None]]] = None,
    viewer: Any = None,
    options: Optional[dict[str, Any]] = None,
    quiet: bool = False,
) -> Path:
    """Run the demo; returns the output folder.

    Parameters
    ----------
    headless
        Close the viewer at the end instead of entering ``napari.run()``.
    out_dir
        Output folder (created; default ``./astrosr-output/<timestamp>``).
    sample
        Bundled sample key (``hst_galaxy``).
    steps
        The steps to run (default :data:`STEPS`).
    viewer
        An existing viewer to use (tests: ``make_napari_viewer``); ``step_viewer`` is then
        skipped and the viewer is neither closed nor run.
    options
        Keyword arguments for :func:`napari_astrosr.pipeline.main_job` (``method``, ``device``,
        ``validate``, ``overwrite``, ...).
    quiet
        Do not print the summary table.

    Raises
    ------
    AstroSRError
        Unknown sample, unusable output folder, or (headless) the main job failed (the log
        in ``demo_log.json`` has the details).
    """
    from ..data import sample_path
    from ..exceptions import AstroSRError

    sample_path(sample)  # unknown sample: clear error before any window opens
    out = Path(out_dir) if out_dir is not None else default_out_dir()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AstroSRError(f"{out}: cannot create the output folder ({exc}).") from exc
    ctx = DemoContext(headless=headless, out_dir=out, sample=sample, viewer=viewer, options=dict(options or {}))
    seconds: dict[str, float] = {}
    failed: dict[str, str] = {}
    t_demo = time.perf_counter()
    try:
        for step in steps or STEPS:
            if viewer is not None and step is step_viewer:
                continue
            t0 = time.perf_counter()
            n_log = len(ctx.log)
            try:
                step(ctx)
            except Exception as exc:
                if step.__name__ in REQUIRED:
                    raise
                failed[step.__name__] = f"{type(exc).__name__}: {exc}"
                ctx.note(
                    step.__name__, f"failed: {type(exc).__name__}: {exc}", error=True, traceback=traceback.format_exc()
                )
            seconds[step.__name__.removeprefix("step_")] = time.perf_counter() - t0
            if len(ctx.log) > n_log:
                ctx.log[-1].setdefault("seconds", round(seconds[step.__name__.removeprefix("step_")], 3))
        seconds["demo total"] = time.perf_counter() - t_demo
        ctx.log.append(
            {
                "step": "summary",
                "message": "seconds per demo step",
                "seconds": {k: round(v, 3) for k, v in seconds.items()},
            }
        )
        (out / "demo_log.json").write_text(json.dumps(ctx.log, indent=2, default=str) + "\n")
        if ctx.result is not None and not quiet:
            from ..pipeline import summary_table

            demo_steps = {f"[demo] {k}": v for k, v in seconds.items() if k != "main_job"}
            print("\n" + summary_table(ctx.result.metrics, extra_timings=demo_steps), flush=True)
        if "step_main_job" in failed and headless:
            raise AstroSRError(f"the main job failed ({failed['step_main_job']}); details in {out / 'demo_log.json'}.")
        if not headless and viewer is None:
            import napari

            print(f"\nresults in {out}; close the napari window to exit.", flush=True)
            napari.run()
    finally:
        if headless and viewer is None and ctx.viewer is not None:
            ctx.viewer.close()
    return out

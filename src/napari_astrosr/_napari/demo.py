"""``astrosr demo``: open napari with a sample loaded and the plugin's widgets docked.

The demo is a plain sequence of steps (:data:`STEPS`), each a function taking the shared
:class:`DemoContext`. To add a step (restore, detect, compare, export, ...), write a
function ``def step_x(ctx): ...`` and insert it into :data:`STEPS` before
``step_screenshot`` (or call :func:`add_step`). A step that fails is logged and the demo
goes on, so one broken feature never hides the others.

Headless (``headless=True``): the same steps under the current X display (scripts/demo.sh
wraps the command in ``xvfb-run``); then the window is saved as ``screenshot.png``, the
canvas as ``canvas.png``, the sample's ``astrosr info`` text as ``info.txt`` and a step log
as ``demo_log.json`` in ``out_dir``.
"""

from __future__ import annotations

import json
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Optional

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
    log: list[dict[str, Any]] = field(default_factory=list)

    def note(self, step: str, message: str, **values: Any) -> None:
        self.log.append({"step": step, "message": message, **values})
        print(f"[demo] {step}: {message}", flush=True)


def default_out_dir() -> Path:
    return Path.cwd() / "astrosr-output" / datetime.now().strftime("%Y%m%d-%H%M%S")


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
    ctx.note("load", f"{path.name} -> {[ly.name for ly in layers]}",
             shape=list(layers[0].data.shape), wcs=layers[0].metadata.get("wcs") is not None)


def step_dock_widgets(ctx: DemoContext) -> None:
    """Dock every widget the plugin declares in napari.yaml (Display first)."""
    from npe2 import PluginManager

    manifest = PluginManager.instance().get_manifest(PLUGIN)
    declared = [w.display_name for w in (manifest.contributions.widgets or [])]
    names = sorted(declared, key=lambda n: (n != "Display", declared.index(n)))
    for name in names:
        try:
            dock, widget = ctx.viewer.window.add_plugin_dock_widget(PLUGIN, name, tabify=True)
            ctx.widgets[name] = widget
            ctx.note("dock", f"docked {name!r}")
        except Exception as exc:  # another engineer's widget failing must not stop the demo
            ctx.note("dock", f"could not dock {name!r}: {type(exc).__name__}: {exc}", error=True)
    display = ctx.widgets.get("Display")
    if display is not None:
        display.stretch.setCurrentText("sqrt")
        ctx.note("display", "sqrt stretch, zscale limits, origin lower left")


def step_screenshot(ctx: DemoContext) -> None:
    """Headless: save the window and the canvas as PNG."""
    if not ctx.headless:
        return
    from qtpy.QtWidgets import QApplication

    QApplication.processEvents()
    ctx.viewer.reset_view()
    QApplication.processEvents()
    window = ctx.out_dir / "screenshot.png"
    canvas = ctx.out_dir / "canvas.png"
    ctx.viewer.screenshot(str(window), canvas_only=False, flash=False)
    ctx.viewer.screenshot(str(canvas), canvas_only=True, flash=False)
    ctx.note("screenshot", f"{window.name}, {canvas.name}")


def step_info(ctx: DemoContext) -> None:
    """Headless: write the sample's ``astrosr info`` text."""
    if not ctx.headless:
        return
    from ..core.fits_io import describe
    from ..data import sample_path

    (ctx.out_dir / "info.txt").write_text(describe(sample_path(ctx.sample)) + "\n")
    ctx.note("info", "info.txt")


STEPS: list[Callable[[DemoContext], None]] = [
    step_viewer,
    step_load_sample,
    step_dock_widgets,
    # insert processing steps here (restore, detect, compare, export): they see ctx.layers
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


def run_demo(*, headless: bool, out_dir: Optional[Path] = None, sample: str = "hst_galaxy",
             steps: Optional[list[Callable[[DemoContext], None]]] = None) -> Path:
    """Run the demo; returns the output folder (created in headless mode).

    Interactive mode ends in ``napari.run()`` (returns when the window closes).
    """
    from ..data import sample_path
    from ..exceptions import AstroSRError

    sample_path(sample)  # unknown sample: clear error before any window opens
    out = Path(out_dir) if out_dir is not None else default_out_dir()
    if headless:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise AstroSRError(f"{out}: cannot create the output folder ({exc}).") from exc
    ctx = DemoContext(headless=headless, out_dir=out, sample=sample)
    try:
        for step in steps or STEPS:
            t0 = time.perf_counter()
            try:
                step(ctx)
            except Exception as exc:
                if step.__name__ in REQUIRED:
                    raise
                ctx.note(step.__name__, f"failed: {type(exc).__name__}: {exc}", error=True,
                         traceback=traceback.format_exc())
            if ctx.log:
                ctx.log[-1].setdefault("seconds", round(time.perf_counter() - t0, 3))
        if headless:
            (out / "demo_log.json").write_text(json.dumps(ctx.log, indent=2, default=str) + "\n")
        else:
            import napari

            napari.run()
    finally:
        if headless and ctx.viewer is not None:
            ctx.viewer.close()
    return out

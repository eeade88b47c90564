"""Regenerate the widget screenshots of docs/user_guide_widgets.md.

Run under a virtual display (no real screen needed)::

    xvfb-run -a .venv/bin/python scripts/screenshots.py            # all widgets
    xvfb-run -a .venv/bin/python scripts/screenshots.py restore    # some of them

Each screenshot is ``viewer.screenshot(canvas_only=False)`` of a napari window with the
widget docked after it ran on the shipped samples (HST galaxy field, DECam stack), so
the images show real results. Written to ``docs/images/widget_<name>.png``; the
``walkthrough`` shots (the main job step by step) to ``docs/images/walk_<n>_<step>.png``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "docs" / "images"


def pump(seconds: float = 0.3) -> None:
    """Let Qt process events (draws, worker signals) for a while."""
    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.01)


def wait_until(cond, timeout: float = 300.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise TimeoutError("screenshot step timed out")
        pump(0.05)


def new_viewer():
    import napari

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1500, 950)
    pump(0.5)
    return viewer


def dock(viewer, widget, name: str):
    viewer.window.add_dock_widget(widget, name=name, area="right")
    pump(0.3)
    return widget


def hr_and_lr(viewer):
    """The HST sample and a x2 block-summed version placed over it."""
    from napari_astrosr.core.resample import block_sum, scale_wcs

    hr = viewer.open_sample("napari-astrosr", "hst_galaxy")[0]
    lr = viewer.add_image(
        block_sum(np.asarray(hr.data), 2),
        name="hst_galaxy_x2lr",
        scale=(2, 2),
        translate=(0.5, 0.5),
        metadata={"wcs": scale_wcs(hr.metadata["wcs"], 0.5), "header": hr.metadata["header"]},
        contrast_limits=tuple(4 * np.asarray(hr.contrast_limits)),
        colormap="gray",
    )
    return hr, lr


def shot(viewer, name: str) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    pump(0.8)
    path = OUT / f"widget_{name}.png"
    viewer.screenshot(str(path), canvas_only=False)
    print(f"wrote {path}")
    return path


def restore() -> None:
    from napari_astrosr._napari.widgets.restore import RestoreWidget

    viewer = new_viewer()
    hr, lr = hr_and_lr(viewer)
    hr.visible = False
    w = dock(viewer, RestoreWidget(viewer), "Restore")
    wait_until(lambda: w.methods_ready)
    w.input.set_value(lr)
    w.method.setCurrentText("lanczos")
    w.run()
    wait_until(lambda: not w.jobs.busy)
    viewer.layers["hst_galaxy_x2lr [lanczos] residual"].visible = False
    viewer.layers.selection.active = viewer.layers["hst_galaxy_x2lr [lanczos]"]
    viewer.reset_view()
    shot(viewer, "restore")
    viewer.close()


def detect() -> None:
    from napari_astrosr._napari.widgets.detect import DetectWidget

    viewer = new_viewer()
    hr = viewer.open_sample("napari-astrosr", "hst_galaxy")[0]
    w = dock(viewer, DetectWidget(viewer), "Detect")
    w.input.set_value(hr)
    w.thresh.setValue(3.0)
    w.run()
    wait_until(lambda: not w.jobs.busy)
    viewer.layers["hst_galaxy [flux map]"].visible = False
    viewer.layers.selection.active = viewer.layers["hst_galaxy [sources]"]
    viewer.reset_view()
    shot(viewer, "detect")
    viewer.close()


def inspect() -> None:
    from napari_astrosr._napari.widgets.inspect import InspectWidget
    from napari_astrosr._napari.widgets.restore import RestoreWidget

    viewer = new_viewer()
    hr, lr = hr_and_lr(viewer)
    r = RestoreWidget(viewer)
    wait_until(lambda: r.methods_ready)
    r.input.set_value(lr)
    r.method.setCurrentText("lanczos")
    r.residual.setChecked(False)
    r.run()
    wait_until(lambda: not r.jobs.busy)
    sr = viewer.layers["hst_galaxy_x2lr [lanczos]"]
    lr.visible = False
    w = dock(viewer, InspectWidget(viewer), "Inspect")
    w.reference.set_value(hr)
    w.prediction.set_value(sr)
    w.run()
    wait_until(lambda: not w.jobs.busy)
    sr.visible = False
    hr.visible = False
    w.regions_layer.add_rectangles(np.array([[100.5, 100.5], [170.5, 170.5]]))
    w.regions_layer.add_rectangles(np.array([[10.5, 150.5], [60.5, 240.5]]))
    viewer.reset_view()
    shot(viewer, "inspect")
    viewer.close()


def coadd(seconds: float = 180.0) -> None:
    from napari_astrosr._napari.widgets.coadd import CoaddWidget

    viewer = new_viewer()
    stack = viewer.open_sample("napari-astrosr", "decam_stack")[0]
    w = dock(viewer, CoaddWidget(viewer), "Coadd")
    w.set_frames([stack])
    w.psf_mode.setCurrentText("header FWHM")  # the DECam headers carry each exposure's seeing
    w.method.setCurrentText("inverse variance")
    w.run()
    wait_until(lambda: not w.jobs.busy)
    w.set_frames([stack])
    w.method.setCurrentText("DIP (AstroClearNet)")
    w.device.setCurrentText("cpu")
    w.preview_every = 10
    w.run()
    # the live latent while the DIP fit runs (progress bar and Stop visible); this CPU
    # does a few steps per second, so the picture shows an early latent
    t0 = time.monotonic()
    wait_until(lambda: (w.previews >= 1 and time.monotonic() - t0 > seconds) or not w.jobs.busy, timeout=seconds + 600)
    # side by side: the inverse-variance coadd and the live DIP latent
    stack.visible = False
    viewer.layers["decam_stack [coadd ivar] uncertainty"].visible = False
    viewer.layers["decam_stack [coadd ivar]"].visible = True
    viewer.grid.enabled = True
    viewer.grid.shape = (1, -1)
    viewer.reset_view()
    shot(viewer, "coadd")
    w.jobs.stop()
    wait_until(lambda: not w.jobs.busy, timeout=600)
    viewer.close()


def train() -> None:
    from napari_astrosr._napari.widgets.train import TrainWidget
    from napari_astrosr.config import config_from_dict

    viewer = new_viewer()
    w = dock(viewer, TrainWidget(viewer), "Train")
    cfg = {
        "name": "screenshot_demo",
        "model": {"name": "pix2wgan", "preset": "tiny", "scale": 1},
        "data": {
            "scale": 2,
            "psf": {"kind": "spec", "spec": "gaussian:1.0"},
            "patch": 16,
            "realizations": 1,
            "max_patches": 128,
            "sources": [{"kind": "simulate", "simulate": "starfield", "count": 2, "size": 96, "split": "halves"}],
        },
        "run": {
            "steps": 400,
            "batch_size": 4,
            "val_every": 5,
            "checkpoint_every": 10000,
            "log_every": 1,
            "threads": 1,
            "val_images": 1,
        },
    }
    w.set_config(config_from_dict(cfg))
    w.out_dir.setText(tempfile.mkdtemp(prefix="astrosr_train_shot_"))
    w.run()
    wait_until(lambda: len(w.history["val_psnr"]) >= 12 or not w.jobs.busy, timeout=900)
    shot(viewer, "train")
    w.jobs.stop()
    wait_until(lambda: not w.jobs.busy, timeout=300)
    viewer.close()


def display() -> None:
    """Display widget: header viewer (filtered), colorbar with BUNIT, on the HST sample."""
    from napari_astrosr._napari.widgets.display import DisplayWidget, apply_stretch

    viewer = new_viewer()
    hr = viewer.open_sample("napari-astrosr", "hst_galaxy")[0]
    apply_stretch(hr, "asinh")
    w = dock(viewer, DisplayWidget(viewer), "Display")
    viewer.layers.selection.active = hr
    w.header_filter.setText("PHOT")
    viewer.reset_view()
    shot(viewer, "display")
    viewer.close()


def walk_shot(viewer, n: int, step: str) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    pump(0.8)
    path = OUT / f"walk_{n}_{step}.png"
    viewer.screenshot(str(path), canvas_only=False)
    print(f"wrote {path}")
    return path


def walkthrough() -> None:
    """The main job step by step: open, restore x2, compare side by side, inspect."""
    from napari_astrosr._napari.widgets.display import DisplayWidget
    from napari_astrosr._napari.widgets.inspect import InspectWidget
    from napari_astrosr._napari.widgets.restore import RestoreWidget

    viewer = new_viewer()
    hr, lr = hr_and_lr(viewer)
    hr.visible = False
    viewer.layers.selection.active = lr
    d = dock(viewer, DisplayWidget(viewer), "Display")
    viewer.reset_view()
    walk_shot(viewer, 1, "open")

    r = dock(viewer, RestoreWidget(viewer), "Restore")
    wait_until(lambda: r.methods_ready)
    r.input.set_value(lr)
    r.method.setCurrentText(r.default_method())
    r.scale.setValue(2)
    r.run()
    wait_until(lambda: not r.jobs.busy, timeout=900)
    name = f"hst_galaxy_x2lr [{r.options()['method']}]"
    viewer.layers[f"{name} residual"].visible = False
    viewer.layers.selection.active = viewer.layers[name]
    viewer.reset_view()
    walk_shot(viewer, 2, "restore")

    d.set_compare([lr, viewer.layers[name], viewer.layers[f"{name} residual"]])
    d.side_button.setChecked(True)
    pump(0.5)
    viewer.camera.zoom *= 2.5
    walk_shot(viewer, 3, "side_by_side")
    d.side_button.setChecked(False)

    i = dock(viewer, InspectWidget(viewer), "Inspect")
    i.reference.set_value(hr)
    i.prediction.set_value(viewer.layers[name])
    i.run()
    wait_until(lambda: not i.jobs.busy)
    for ly in viewer.layers:
        ly.visible = ly.name in (f"{name} [residual]", f"{name} [source residuals]")
    viewer.reset_view()
    walk_shot(viewer, 4, "inspect")
    viewer.close()


SHOTS = {
    "restore": restore,
    "detect": detect,
    "inspect": inspect,
    "coadd": coadd,
    "train": train,
    "display": display,
    "walkthrough": walkthrough,
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", help=f"widgets among {', '.join(SHOTS)} (default: all)")
    args = p.parse_args(argv)
    unknown = [n for n in args.names if n not in SHOTS]
    if unknown:
        p.error(f"unknown widget(s) {', '.join(unknown)}; choose from {', '.join(SHOTS)}")
    for name in args.names or SHOTS:
        SHOTS[name]()
    return 0


if __name__ == "__main__":
    sys.exit(main())

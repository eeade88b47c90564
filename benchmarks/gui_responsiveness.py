"""Is napari ever frozen while a widget job runs? Event-loop gaps under Xvfb, and Stop -> idle.

A 10 ms QTimer records its ticks on the main thread while the real widgets run real jobs
in a shown napari viewer; a gap between ticks is how long the GUI could not react.

Jobs: Restore (``--method``, x``--scale``, a ``--size``² input), Detect on the same input,
a DIP Coadd of three 256² frames and a Train run (a tiny Pix2WGAN on simulated star fields).
Phases measured per job: ``run`` (from Run until the result reaches the main thread, or
until Stop for the open-ended DIP and Train runs), ``add layers`` (turning the result
into layers, until the job panel reports done, plus the next 0.5 s during which napari
uploads the new textures) and ``Stop → idle`` (from pressing Stop until the widget can
start another job; the row also says when the worker thread itself ended). A second
Restore with ``--stop-method`` (Restormer by default: its tiles take seconds) is stopped
``--stop-after`` seconds in. Target (issue 23): max gap < 200 ms everywhere; Stop < 1 s.

Usage (a display is needed; Xvfb does)::

    xvfb-run -a -s "-screen 0 1600x1000x24" python benchmarks/gui_responsiveness.py \
        --size 1024 --method fisr --scale 2

The images are seeded synthetic star fields (responsiveness does not depend on content).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "gui"))

#: the Train job: a tiny same-size network on simulated star fields (no data files needed)
TRAIN_CONFIG = {
    "name": "gui_responsiveness",
    "model": {"name": "pix2wgan", "preset": "tiny", "scale": 1},
    "data": {
        "scale": 2,
        "psf": {"kind": "spec", "spec": "gaussian:1.0"},
        "patch": 32,
        "realizations": 1,
        "max_patches": 64,
        "sources": [{"kind": "simulate", "simulate": "starfield", "count": 2, "size": 128, "split": "halves"}],
    },
    "run": {
        "steps": 100000,
        "batch_size": 4,
        "val_every": 5,
        "checkpoint_every": 100000,
        "log_every": 1,
        "threads": 1,
        "val_images": 1,
    },
}


def _ticks_between(ticks: list[float], t0: float, t1: float, label: str = "") -> np.ndarray:
    if label:
        _note_long(*label.split(" | ", 1), ticks, t0, t1)
    sel = [t for t in ticks if t0 <= t <= t1]
    return np.diff([t0, *sel, t1]) if sel else np.array([t1 - t0])


_LONG: list[str] = []


def _note_long(job: str, phase: str, ticks: list[float], t0: float, t1: float, limit: float = 0.1) -> None:
    """Remember each gap over ``limit`` s: when it began (s after the phase started) and how long it was."""
    sel = [t0, *[t for t in ticks if t0 <= t <= t1], t1]
    for a, b in zip(sel[:-1], sel[1:]):
        if b - a > limit:
            _LONG.append(f"{job} / {phase}: {1e3 * (b - a):.0f} ms gap from t = {a - t0:.2f} s")


def _watch_main_thread(ticks: list[float], limit: float = 0.15) -> None:
    """A daemon thread printing the GUI thread's stack whenever no tick came for ``limit`` s (diagnosis)."""
    import threading
    import traceback

    main_id = threading.main_thread().ident

    def watch() -> None:
        last_seen = None
        while True:
            time.sleep(0.03)
            if not ticks:
                continue
            stalled = time.perf_counter() - ticks[-1]
            if stalled > limit and ticks[-1] != last_seen:
                last_seen = ticks[-1]
                frame = sys._current_frames().get(main_id)
                stack = "".join(traceback.format_stack(frame, limit=14)) if frame is not None else "?"
                print(f"--- GUI thread stalled {stalled * 1e3:.0f} ms, now in:\n{stack}", flush=True)

    threading.Thread(target=watch, daemon=True).start()


def _row(job: str, phase: str, gaps: np.ndarray, wall: float) -> str:
    return (
        f"| {job} | {phase} | {wall:6.2f} | {np.median(gaps) * 1e3:6.0f} | {np.percentile(gaps, 99) * 1e3:6.0f} "
        f"| {gaps.max() * 1e3:6.0f} | {'yes' if gaps.max() < 0.2 else 'no'} |"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1024, help="Restore/Detect input is SIZE x SIZE (default 1024)")
    ap.add_argument("--method", default="fisr", help="restore method (default fisr)")
    ap.add_argument("--scale", type=int, default=2)
    ap.add_argument("--tile", type=int, default=0, help="Tile box (0: auto)")
    ap.add_argument("--stop-method", default="restormer", help="restore method of the Stop run (default restormer)")
    ap.add_argument("--stop-after", type=float, default=3.0, help="seconds into a run before Stop (default 3)")
    ap.add_argument("--rerun", action="store_true", help="restore a second time (its layers replace the first's)")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds a run may take (default 900)")
    ap.add_argument("--gaps", action="store_true", help="also list every gap over 100 ms with its start time")
    ap.add_argument(
        "--stacks", action="store_true", help="print the GUI thread's stack whenever it is stalled over 150 ms"
    )
    ap.add_argument("--skip", nargs="*", default=[], choices=["restore", "detect", "coadd", "train"])
    args = ap.parse_args(argv)

    import napari
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    from widget_helpers import star_image

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1400, 900)
    app = QApplication.instance()
    img = star_image((args.size, args.size), n=max(50, args.size // 4), seed=7)
    viewer.add_image(img, name="big")

    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    if args.stacks:
        _watch_main_thread(ticks)

    def wait(cond, timeout=900.0):
        end = time.monotonic() + timeout
        while not cond() and time.monotonic() < end:
            app.processEvents()
            time.sleep(0.002)

    def settle(seconds: float = 1.0) -> None:
        t_end = time.perf_counter() + seconds
        wait(lambda: time.perf_counter() > t_end)

    rows: list[str] = []

    def run_and_add(job: str, panel, start, *, again: bool = False) -> None:
        """Run to completion: the run and add-layers phases (``again``: a re-run replacing its layers)."""
        t0 = time.perf_counter()
        start()
        wait(lambda: not panel.busy, args.timeout)
        if panel.busy:
            print(f"[{job}] still running after {args.timeout:.0f} s; stopped, not measured", flush=True)
            panel.stop()
            wait(lambda: not panel.busy)
            return
        t_done = time.perf_counter()
        t_ret = panel.returned_at or t_done
        wait(lambda: time.perf_counter() > t_done + 0.5)
        t_end = time.perf_counter()
        tail = " (re-run)" if again else ""
        rows.append(_row(job, "run" + tail, _ticks_between(ticks, t0, t_ret, f"{job} | run{tail}"), t_ret - t0))
        rows.append(
            _row(job, "add layers" + tail, _ticks_between(ticks, t_ret, t_end, f"{job} | add{tail}"), t_done - t_ret)
        )
        print(f"[{job}] {panel.last_status}", flush=True)

    def run_and_stop(job: str, panel, start, *, ready=lambda: True, run_row: bool = False) -> None:
        """Start, press Stop ``--stop-after`` s after ``ready()``, measure Stop -> idle."""
        t0 = time.perf_counter()
        start()
        wait(lambda: ready() or not panel.busy)
        t_r = time.perf_counter()
        wait(lambda: time.perf_counter() > t_r + args.stop_after or not panel.busy)
        if not panel.busy:
            print(f"[{job}] the run ended before Stop; not measured ({panel.last_status})", flush=True)
            return
        worker = panel.worker
        t_stop = time.perf_counter()
        if run_row:
            rows.append(_row(job, "run", _ticks_between(ticks, t0, t_stop, f"{job} | run"), t_stop - t0))
        panel.stop()
        wait(lambda: not panel.busy)
        t_idle = time.perf_counter()
        # the worker thread itself (with the new panel it may finish its current step in the background)
        wait(lambda: worker is None or not worker.is_running, 120)
        t_gone = time.perf_counter()
        wait(lambda: time.perf_counter() > t_idle + 0.5)
        t_end = time.perf_counter()
        rows.append(
            _row(
                job,
                f"Stop → idle {t_idle - t_stop:.2f} s (worker ended {t_gone - t_stop:.2f} s)",
                _ticks_between(ticks, t_stop, t_end, f"{job} | stop"),
                t_end - t_stop,
            )
        )
        print(f"[{job} stop] {panel.last_status}", flush=True)

    if "restore" not in args.skip:
        from napari_astrosr._napari.widgets.restore import RestoreWidget

        w = RestoreWidget(viewer)
        viewer.window.add_dock_widget(w, name="Restore")
        settle()  # the dock's first layout and paint are not the job's
        wait(lambda: w.methods_ready, 120)
        w.method.setCurrentText(args.method)
        w.scale.setValue(args.scale)
        w.tile.setValue(args.tile)
        w.residual.setChecked(True)
        job = f"restore {args.method} x{args.scale} {args.size}²"
        run_and_add(job, w.jobs, w.run)
        print(f"[restore] device line: {w.device_used.text()}", flush=True)
        if args.rerun:
            run_and_add(job, w.jobs, w.run, again=True)
        run_and_stop(job, w.jobs, w.run)
        if args.stop_method and args.stop_method != args.method:
            w.method.setCurrentText(args.stop_method)
            w.scale.setValue(args.scale)
            run_and_stop(
                f"restore {args.stop_method} x{args.scale} {args.size}²",
                w.jobs,
                w.run,
                ready=lambda: "tile" in w.jobs.last_status,
            )

    if "detect" not in args.skip:
        from napari_astrosr._napari.widgets.detect import DetectWidget

        d = DetectWidget(viewer)
        viewer.window.add_dock_widget(d, name="Detect")
        settle()  # the dock's first layout and paint are not the job's
        d.input.set_value(viewer.layers["big"])
        d.thresh.setValue(5.0)
        run_and_add(f"detect {args.size}²", d.jobs, d.run)

    if "coadd" not in args.skip:
        from scipy.ndimage import gaussian_filter

        from napari_astrosr._napari.widgets.coadd import CoaddWidget

        truth = star_image((256, 256), n=60, noise=0.0, sky=0.0, seed=3)
        rng = np.random.default_rng(0)
        blurred = gaussian_filter(truth.astype(np.float64), 1.5)
        frames = np.stack([blurred + rng.normal(0, 0.5, truth.shape) for _ in range(3)]).astype(np.float32)
        stack = viewer.add_image(frames, name="frames")
        c = CoaddWidget(viewer)
        viewer.window.add_dock_widget(c, name="Coadd")
        settle()  # the dock's first layout and paint are not the job's
        c.set_frames([stack])
        c.method.setCurrentText("DIP (AstroClearNet)")
        c.psf_mode.setCurrentText("spec")
        c.psf_spec.setText("gaussian:1.5")
        c.iterations.setValue(100_000)
        c.device.setCurrentText("cpu")
        run_and_stop("coadd dip 3×256²", c.jobs, c.run, ready=lambda: c.previews >= 1, run_row=True)

    if "train" not in args.skip:
        from napari_astrosr._napari.widgets.train import TrainWidget
        from napari_astrosr.config import config_from_dict

        t = TrainWidget(viewer)
        viewer.window.add_dock_widget(t, name="Train")
        settle()  # the dock's first layout and paint are not the job's
        t.set_config(config_from_dict(TRAIN_CONFIG))
        with tempfile.TemporaryDirectory() as tmp:
            t.out_dir.setText(str(Path(tmp) / "run"))
            run_and_stop("train pix2wgan tiny", t.jobs, t.run, ready=lambda: len(t.history["loss"]) >= 1, run_row=True)
    timer.stop()

    print("\n| job | phase | wall s | median gap ms | p99 gap ms | max gap ms | < 200 ms |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(r)
    if args.gaps:
        print("\ngaps over 100 ms:")
        print("\n".join(_LONG) or "none")
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

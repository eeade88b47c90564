"""Is napari ever frozen while a widget job runs? Event-loop gaps under Xvfb.

A 10 ms QTimer records its ticks on the main thread while the real widgets run real jobs
in a shown napari viewer; a gap between ticks is how long the GUI could not react.

Phases measured per job: ``run`` (from Run until the result reaches the main thread),
``add`` (turning the result into layers, until the job panel reports done, plus the
next 0.5 s during which napari uploads the new textures), and ``stop`` (how long Stop
takes to end a running job). Target (issue 23): max gap < 200 ms everywhere; Stop < 1 s.

Usage (a display is needed; Xvfb does)::

    xvfb-run -a -s "-screen 0 1600x1000x24" python benchmarks/gui_responsiveness.py \
        --size 1024 --method fisr --scale 2

The image is a seeded synthetic star field (responsiveness does not depend on content).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "gui"))


def _ticks_between(ticks: list[float], t0: float, t1: float) -> np.ndarray:
    sel = [t for t in ticks if t0 <= t <= t1]
    return np.diff([t0, *sel, t1]) if sel else np.array([t1 - t0])


def _row(job: str, phase: str, gaps: np.ndarray, wall: float) -> str:
    return (
        f"| {job} | {phase} | {wall:6.2f} | {np.median(gaps) * 1e3:6.0f} | {np.percentile(gaps, 99) * 1e3:6.0f} "
        f"| {gaps.max() * 1e3:6.0f} | {'yes' if gaps.max() < 0.2 else 'no'} |"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1024, help="input is SIZE x SIZE (default 1024)")
    ap.add_argument("--method", default="fisr", help="restore method (default fisr)")
    ap.add_argument("--scale", type=int, default=2)
    ap.add_argument("--tile", type=int, default=0, help="Tile box (0: auto)")
    ap.add_argument("--stop-after", type=float, default=1.0, help="seconds into a second run before Stop")
    ap.add_argument("--skip-detect", action="store_true")
    args = ap.parse_args(argv)

    import napari
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    from napari_astrosr._napari.widgets.detect import DetectWidget
    from napari_astrosr._napari.widgets.restore import RestoreWidget

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

    def wait(cond, timeout=900.0):
        end = time.monotonic() + timeout
        while not cond() and time.monotonic() < end:
            app.processEvents()
            time.sleep(0.002)

    rows = []
    w = RestoreWidget(viewer)
    viewer.window.add_dock_widget(w, name="Restore")
    wait(lambda: w.methods_ready, 120)
    w.method.setCurrentText(args.method)
    w.scale.setValue(args.scale)
    w.tile.setValue(args.tile)
    w.residual.setChecked(True)

    t0 = time.perf_counter()
    w.run()
    wait(lambda: not w.jobs.busy)
    t_done = time.perf_counter()
    t_ret = w.jobs.returned_at or t_done
    wait(lambda: time.perf_counter() > t_done + 0.5)
    t_end = time.perf_counter()
    job = f"restore {args.method} x{args.scale} {args.size}²"
    rows.append(_row(job, "run", _ticks_between(ticks, t0, t_ret), t_ret - t0))
    rows.append(_row(job, "add layers", _ticks_between(ticks, t_ret, t_end), t_done - t_ret))
    print(f"[restore] status: {w.jobs.last_status}; device line: {w.device_used.text()}", flush=True)

    # Stop latency: start again, press Stop after --stop-after seconds
    w.run()
    t_s = time.perf_counter()
    wait(lambda: time.perf_counter() > t_s + args.stop_after or not w.jobs.busy)
    if w.jobs.busy:
        t_stop = time.perf_counter()
        w.jobs.stop()
        wait(lambda: not w.jobs.busy)
        t_end = time.perf_counter()
        rows.append(
            _row(job, f"Stop → idle ({t_end - t_stop:.2f} s)", _ticks_between(ticks, t_stop, t_end), t_end - t_stop)
        )
    else:
        print("[stop] the run ended before Stop; not measured", flush=True)

    if not args.skip_detect:
        d = DetectWidget(viewer)
        viewer.window.add_dock_widget(d, name="Detect")
        d.input.set_value(viewer.layers["big"])
        d.thresh.setValue(5.0)
        t0 = time.perf_counter()
        d.run()
        wait(lambda: not d.jobs.busy)
        t_done = time.perf_counter()
        t_ret = d.jobs.returned_at or t_done
        wait(lambda: time.perf_counter() > t_done + 0.5)
        t_end = time.perf_counter()
        rows.append(_row(f"detect {args.size}²", "run", _ticks_between(ticks, t0, t_ret), t_ret - t0))
        rows.append(_row(f"detect {args.size}²", "add layers", _ticks_between(ticks, t_ret, t_end), t_done - t_ret))
    timer.stop()

    print("\n| job | phase | wall s | median gap ms | p99 gap ms | max gap ms | < 200 ms |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(r)
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

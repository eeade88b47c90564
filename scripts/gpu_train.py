"""Train several configs at once on one machine (one GPU shared), each with a wall-time cap, then pack results.

Used by ``scripts/gpu_train.sh``; runs the same way on CPU (``--tiny`` shrinks every config to a
smoke test, so the script can be checked end to end where there is no GPU).

Each config runs as its own ``python -m napari_astrosr train CONFIG --out RUNS/NAME
--time-budget-minutes M`` process (the loop fits its LR schedule to the steps that fit in the budget,
stops cleanly when it is spent, validates, saves and plots). A process still running at the hard deadline gets SIGINT (clean stop with a checkpoint),
then SIGKILL 45 s later. Afterwards each run's weights are exported without optimizer state
(``training.loop.export_checkpoint``) and packed with its log, curves, config and console output
into at most ``--max-files`` tar.gz files of under 15 MiB each in ``--pack``.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import yaml

LIMIT = 15 * 1024 * 1024
GRACE = 45  # seconds between SIGINT (clean stop: finish the step, validate, save, plot) and SIGKILL


def tiny(cfg: dict) -> dict:
    """The same config shrunk to seconds: one small image per source, a few steps, tiny batches."""
    d = cfg["data"]
    d["max_patches"] = min(d.get("max_patches", 4000), 300)
    # small LR patches: the projected loss's (A A^T)^-1 per PSF is (patch^2)^2, built on first use
    d["patch"] = min(d["patch"], 24 if d["scale"] > 1 else 32)
    d["stride"] = min(d.get("stride", 8), d["patch"] // 2)
    d["realizations"] = 1
    for s in d["sources"]:
        if s["kind"] == "simulate":
            s["count"], s["size"] = 1, max(64, 3 * d["patch"] * d["scale"])
        elif s["kind"] == "degrade":
            s["files"] = s["files"][:1]
    r = cfg["run"]
    # 6 steps: 2 warm-up + 2 timed, the schedule fitted to the budget at step 4, then 2 more
    r.update(steps=6, batch_size=4, val_every=3, checkpoint_every=3, log_every=1, val_images=1, fit_measure_steps=2)
    r["threads"] = 1  # the runs share the CPU
    return cfg


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("configs", nargs="+")
    ap.add_argument("--runs", default="runs/gpu", help="folder of the run folders")
    ap.add_argument(
        "--minutes", type=float, required=True, help="training wall-time budget of each run (run.time_budget_minutes)"
    )
    ap.add_argument("--deadline", type=float, required=True, help="seconds from now when every run must be over")
    ap.add_argument("--pack", default=None, help="folder for the tar.gz files (e.g. $OUT)")
    ap.add_argument("--max-files", type=int, default=6)
    ap.add_argument("--tiny", action="store_true", help="shrink every config to a smoke test")
    ap.add_argument("--device", default=None, help="override run.device (e.g. cpu)")
    a = ap.parse_args(argv)
    t_end = time.time() + a.deadline
    runs = Path(a.runs)
    (runs / "_configs").mkdir(parents=True, exist_ok=True)
    procs = {}
    for c in a.configs:
        cfg = yaml.safe_load(Path(c).read_text())
        if a.tiny:
            cfg = tiny(cfg)
        if a.device:
            cfg["run"]["device"] = a.device
        name = cfg["name"]
        cpath = runs / "_configs" / f"{name}.yaml"
        cpath.write_text(yaml.safe_dump(cfg, sort_keys=False))
        out = runs / name
        log = (runs / f"{name}.log").open("w")
        cmd = [
            sys.executable,
            "-u",
            "-m",
            "napari_astrosr",
            "train",
            str(cpath),
            "--out",
            str(out),
            "--time-budget-minutes",
            str(a.minutes),
        ]
        procs[name] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=False), log, out)
        print(f"[gpu_train] started {name} (pid {procs[name][0].pid})", flush=True)
    interrupted: set[str] = set()
    while any(p.poll() is None for p, _, _ in procs.values()):
        now = time.time()
        for name, (p, _, _) in procs.items():
            if p.poll() is None and now > t_end and name not in interrupted:
                print(f"[gpu_train] {name}: past the deadline, SIGINT (clean stop)", flush=True)
                p.send_signal(signal.SIGINT)
                interrupted.add(name)
            elif p.poll() is None and now > t_end + GRACE:
                print(f"[gpu_train] {name}: killed", flush=True)
                p.kill()
        time.sleep(1)
    for name, (p, log, out) in procs.items():
        log.close()
        tail = (runs / f"{name}.log").read_text().strip().splitlines()[-1:]
        print(f"[gpu_train] {name}: exit {p.returncode}: {tail[0] if tail else ''}", flush=True)
    if a.pack:
        pack(runs, list(procs), Path(a.pack), a.max_files)
    return 0 if all(p.returncode == 0 for p, _, _ in procs.values()) else 1


def pack(runs: Path, names: list[str], dest: Path, max_files: int) -> list[Path]:
    """Export weights (no optimizer state) and pack runs into <= max_files tar.gz files under 15 MiB."""
    from napari_astrosr.training.loop import export_checkpoint

    dest.mkdir(parents=True, exist_ok=True)
    items = []
    for name in names:
        d = runs / name
        files = []
        if (d / "model.pt").exists():
            exp = d / "export"
            exp.mkdir(exist_ok=True)
            export_checkpoint(d / "model.pt", exp / "model.pt")
            files += [exp / "model.pt", exp / "model.json"]
        files += [f for f in (d / "log.csv", d / "curves.png", d / "config.yaml", runs / f"{name}.log") if f.exists()]
        items.append((name, files, sum(f.stat().st_size for f in files)))
    # first-fit by size; a run that alone exceeds the limit goes without its weights' optimizer (already) - and alone
    bins: list[list] = []
    for name, files, size in sorted(items, key=lambda t: -t[2]):
        for b in bins:
            if b[0] + size <= LIMIT:
                b[0] += size
                b[1].append((name, files))
                break
        else:
            bins.append([size, [(name, files)]])
    if len(bins) > max_files:
        print(
            f"[gpu_train] {len(bins)} packs needed, only {max_files} allowed: the smallest runs are left out",
            flush=True,
        )
        bins = bins[:max_files]
    out = []
    for i, (_, members) in enumerate(bins):
        tp = dest / f"runs{i}.tar.gz"
        with tarfile.open(tp, "w:gz") as tf:
            for name, files in members:
                for f in files:
                    arc = f"{name}/{f.name}" if f.parent.name != "export" else f"{name}/export_{f.name}"
                    if f.suffix == ".log":
                        arc = f"{name}/console.log"
                    tf.add(f, arcname=arc)
        print(
            f"[gpu_train] packed {tp.name}: {', '.join(n for n, _ in members)} ({tp.stat().st_size / 2**20:.1f} MiB)",
            flush=True,
        )
        out.append(tp)
    return out


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())

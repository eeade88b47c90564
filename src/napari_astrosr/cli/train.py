"""``astrosr train CONFIG.yaml [--out DIR] [--resume]``: train a network from a YAML config.

Ctrl-C asks the loop to stop: it finishes the current step, saves a checkpoint (resumable
with ``--resume``) and exits; a second Ctrl-C aborts at once. A run ended by its wall-time
budget prints ``stopped (budget)``, one ended by its chunk length ``stopped (chunk)`` (run the
same command with ``--resume`` for the next chunk; ``scripts/train_chunks.sh`` loops them), a
finished one ``trained``.
"""

from __future__ import annotations

import argparse

NAME = "train"
HELP = "train a network from a YAML config (configs/*.yaml); Ctrl-C saves a checkpoint"
#: Seconds between the first Ctrl-C / SIGTERM and an abort (keeping the last complete checkpoint).
STOP_DEADLINE_S = 1.2
ORDER = 60


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="training config YAML (see configs/ in the repository)")
    p.add_argument("--out", default=None, help="output folder (default: runs/<config name>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--steps", type=int, default=None, help="override run.steps")
    p.add_argument("--max-minutes", type=float, default=None, help="override run.max_minutes (wall-time cap)")
    p.add_argument(
        "--time-budget-minutes",
        type=float,
        default=None,
        help="override run.time_budget_minutes (wall-time budget of the run; the LR schedule is fitted to it)",
    )
    p.add_argument("--fit-steps", type=int, default=None, help="override run.fit_steps (the LR schedule's length)")
    p.add_argument(
        "--chunk-minutes", type=float, default=None, help="override run.chunk_minutes (save and exit after this long)"
    )
    p.add_argument(
        "--init-from",
        default=None,
        metavar="CKPT|bundled",
        help="override model.init_from: fine-tune from this checkpoint, or from the bundled weights of the "
        "config's network and scale",
    )
    p.add_argument("--data-root", default=None, help="folder the config's data paths are relative to")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    import signal
    import sys
    from pathlib import Path

    from ..config import config_from_dict, load_config
    from ..exceptions import AstroSRError
    from ..progress import StopFlag
    from ..training.loop import train_job
    from .common import run_with_bar

    cfg = load_config(args.config)
    over = {
        "steps": args.steps,
        "max_minutes": args.max_minutes,
        "time_budget_minutes": args.time_budget_minutes,
        "fit_steps": args.fit_steps,
        "chunk_minutes": args.chunk_minutes,
    }
    over = {k: v for k, v in over.items() if v is not None}
    if over or args.init_from is not None:
        d = cfg.model_dump(mode="json")
        d["run"].update(over)
        if args.init_from is not None:
            d["model"]["init_from"] = args.init_from
        cfg = config_from_dict(d, source=str(args.config))
    out = Path(args.out) if args.out else Path("runs") / cfg.name
    if args.data_root and not Path(args.data_root).is_dir():
        raise AstroSRError(f"--data-root {args.data_root}: not a folder.")
    stop = StopFlag()

    from . import Terminated

    kind = [signal.SIGINT]

    def interrupt():
        return Terminated() if kind[0] == signal.SIGTERM else KeyboardInterrupt()

    def on_signal(signum, frame):  # first Ctrl-C / SIGTERM: clean stop with a checkpoint; second: abort
        if stop.is_set():
            raise interrupt()
        kind[0] = signum
        stop.set()
        print(
            f"\nastrosr train: stopping after this step and saving a checkpoint (at most {STOP_DEADLINE_S:.0f} s; "
            "Ctrl-C again to abort)",
            file=sys.stderr,
        )
        # a step or the final validation may take longer than a person waits: abort then, keeping the last
        # complete checkpoint (checkpoints are written with signals held, never half)
        signal.setitimer(signal.ITIMER_REAL, STOP_DEADLINE_S)

    def on_alarm(signum, frame):
        raise interrupt()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    old[signal.SIGALRM] = signal.signal(signal.SIGALRM, on_alarm)
    try:
        job = train_job(
            cfg, out_dir=out, resume=args.resume, stop=stop, root=Path(args.data_root) if args.data_root else None
        )
        ckpt = run_with_bar(job, desc=f"train {cfg.name}", quiet=args.quiet)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for s, h in old.items():
            signal.signal(s, h)
    import json

    meta = json.loads(ckpt.with_suffix(".json").read_text())
    tr = meta.get("training", {})
    val = tr.get("validation", {})
    reason = tr.get("stop_reason") or ("stop" if stop.is_set() else None)
    what = ("stopped (interrupted)" if reason == "stop" else f"stopped ({reason})") if reason else "trained"
    line = f"{what} {cfg.name}: step {meta.get('step')} of {tr.get('schedule_steps', '?')} in {tr.get('wall_time_s')} s"
    if "val_psnr" in val:
        line += (
            f"; validation PSNR {val['val_psnr']:.2f} dB (bicubic {val.get('val_psnr_bicubic', float('nan')):.2f}),"
            f" median rel. flux error {val.get('val_flux_rel', float('nan')):.4f}"
            f" (bicubic {val.get('val_flux_rel_bicubic', float('nan')):.4f})"
        )
    print(line)
    print(f"checkpoint: {ckpt}")
    if reason:
        again = f"astrosr train {args.config} --out {out} --resume"
        if reason == "budget":
            print(
                f"to continue: {again} with a --time-budget-minutes (or --max-minutes) above the "
                f"{tr.get('wall_time_s')} s spent"
            )
        else:
            print(f"to continue: {again}")
    return 0

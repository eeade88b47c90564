"""Training-step speed per GPU config against the network's bare forward + backward, as a Markdown table.

    python benchmarks/train_speed.py [--configs configs/fisr_x2_gpu.yaml ...] [--steps 30] [--batch N]
                                     [--device auto] [--out docs/results_train_speed.md]
                                     [--profile] [--projection new|old|both] [--presets small,paper]

For each config the real loop (``training.loop.train_job``: batch drawn on the device, bf16
autocast on CUDA, losses, the projection's batched solve, optimizer, logging) runs ``--warmup``
+ ``--steps`` steps on a shrunk data set (one image per source: the pool's size does not change
a step's cost), timed between the loop's per-step progress events (each holds ``loss.item()``,
so the GPU is synchronised). The same network then runs bare: forward + backward on a random
batch of the same shape under the same autocast, synchronised. ``net share`` = bare / step: the
fraction of a training step that is the network (the target on a GPU is >= 60%).

``--profile`` also times each part of the loop's step (``training.loop.StepProfile``: data, network
forward, the other losses, the projected loss's forward, backward of everything, optimizer, logging;
the device is synchronised at each boundary) and prints its share, and times the projected loss alone
(forward + backward on a batch of the config's shape, the loop's own PSF bank and projector) with the
old path (PSF blur by a direct grouped convolution, the inverses applied by a gathered ``bmm``) and the
new one (FFT blur; on CPU one matrix product per distinct PSF). ``--projection old`` runs the loop on the
old path, ``--projection both`` runs each config both ways in one run, side by side. ``--presets`` runs each config once per model preset.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
DEFAULT = ["fisr_x2_gpu", "restormer_x2_gpu", "fisr_x4_gpu", "restormer_x1_gpu", "pix2wgan_gpu", "restormer_x4_gpu"]


def shrink(cfg: dict, steps: int, batch: int | None) -> dict:
    d = cfg["data"]
    d["realizations"] = 1
    d["max_patches"] = min(d.get("max_patches", 4000), 2000)
    for s in d["sources"]:
        if s["kind"] == "simulate":
            s["count"], s["size"] = 1, max(128, 2 * d["patch"] * d["scale"])
        elif s["kind"] == "degrade":
            s["files"] = s["files"][:1]
    r = cfg["run"]
    r.update(steps=steps, val_every=10**6, checkpoint_every=10**6, log_every=10**6, val_images=0, max_minutes=None)
    for k in ("time_budget_minutes", "fit_steps", "chunk_minutes"):
        r.pop(k, None)
    if batch:
        r["batch_size"] = batch
    return cfg


def bare(cfg, device: str, steps: int, warmup: int) -> float:
    """Seconds per forward + backward of the config's network on a random batch shaped like its training batch."""
    import torch

    from napari_astrosr.models.inference import autocast_context
    from napari_astrosr.models.registry import build_model, get_spec

    spec = get_spec(cfg.model.name)
    name = "pix2wgan" if cfg.model.name == "pix2wgan-cascade" else cfg.model.name
    model = build_model(name, preset=cfg.model.preset, scale=cfg.model.scale).to(device).train()
    amp, _ = autocast_context(device, "auto" if cfg.run.precision == "auto" else cfg.run.precision)
    p = cfg.data.patch * (cfg.data.scale // cfg.model.scale if cfg.model.scale == 1 else 1)
    b = cfg.run.batch_size
    x = torch.randn(b, 1, p, p, device=device)
    f = torch.rand(b, 1, p, p, device=device)

    def one():
        with amp:
            y = model(x, f) if spec.needs_flux_map else model(x)
        y.float().abs().mean().backward()
        model.zero_grad(set_to_none=True)

    for _ in range(warmup):
        one()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        one()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / steps


class blur_mode:
    """Within the block the projected loss runs the ``new`` path (PSF blur by FFT, on CPU one matrix product per
    distinct PSF) or the ``old`` one (direct grouped convolution, gathered ``bmm``: the loop before issue 21's
    profile).
    """

    def __init__(self, mode: str):
        self.mode = mode

    def __enter__(self):
        from napari_astrosr.training import physics

        self.old = (physics.FFT_MIN_KERNEL, physics.FFT_MIN_KERNEL_CPU, physics.GROUPED_SOLVE_CPU)
        if self.mode == "old":
            physics.FFT_MIN_KERNEL = physics.FFT_MIN_KERNEL_CPU = 10**9
            physics.GROUPED_SOLVE_CPU = False

    def __exit__(self, *exc):
        from napari_astrosr.training import physics

        physics.FFT_MIN_KERNEL, physics.FFT_MIN_KERNEL_CPU, physics.GROUPED_SOLVE_CPU = self.old


def loop_step(cfg, steps: int, warmup: int, profile=None) -> tuple[float, str]:
    """Seconds per step of the real training loop, and the device/precision line.

    Timed from the event of step ``warmup`` to that of step ``warmup + steps``: the run has one step
    more, whose event comes after the loop's end-of-run validation, which is not a training step.
    """
    from napari_astrosr.training.loop import train_job

    with tempfile.TemporaryDirectory() as tmp:
        stamps, info, frozen = {}, "", None
        for ev in train_job(cfg, out_dir=Path(tmp) / "run", profile=profile):
            if ev.step == 0 and "params" in (ev.values or {}):
                info = ev.message
            if ev.step and "loss" in (ev.values or {}):
                stamps[ev.step] = time.perf_counter()
                if profile is not None and ev.step == warmup:
                    profile.reset()
                if profile is not None and ev.step == warmup + steps:
                    frozen = (dict(profile.seconds), profile.steps)
        if warmup not in stamps or warmup + steps not in stamps or steps < 1:
            raise RuntimeError("too few steps timed; raise --steps")
        if profile is not None:
            profile.seconds, profile.steps = frozen
        return (stamps[warmup + steps] - stamps[warmup]) / steps, info


def projection_alone(cfg, projector, device: str, reps: int = 3) -> dict[str, float]:
    """Milliseconds per forward + backward of the projected loss alone, direct blur vs FFT blur, and the
    relative difference of the two losses (same batch: the config's batch size and HR patch, random PSFs
    of the loop's bank, a random quarter turn + flip).
    """
    import torch

    from napari_astrosr.training.losses import pixel_loss

    ds = cfg.data.scale
    b, p = cfg.run.batch_size, cfg.data.patch
    g = torch.Generator().manual_seed(0)
    pred0 = torch.rand(b, 1, p * ds, p * ds, generator=g).to(device)
    x = torch.rand(b, 1, p, p, generator=g).to(device)
    y = torch.rand(b, 1, p * ds, p * ds, generator=g).to(device)
    ids = torch.randint(0, projector.bank.shape[0], (b,), generator=g).tolist()
    out = {}
    for mode in ("old", "new"):
        with blur_mode(mode):

            def one():
                pred = pred0.clone().requires_grad_(True)
                pj = projector.project(pred, x, ids, rot90=1, flip=True)
                lo = pixel_loss(pj, y)
                lo.backward()
                return float(lo.detach())

            one()  # builds the inverses of these PSFs once (either mode)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t = time.perf_counter()
            for _ in range(reps):
                out[f"{mode}_loss"] = one()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            out[mode] = (time.perf_counter() - t) / reps * 1e3
    out["rel"] = abs(out["new_loss"] - out["old_loss"]) / abs(out["old_loss"])
    out["k"] = int(projector.bank.shape[-1])
    out["psfs"] = int(projector.bank.shape[0])
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="*", default=None, help="config files (default: configs/*_gpu.yaml)")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch", type=int, default=None, help="override run.batch_size (small on a CPU)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None, help="also write the table to this Markdown file")
    ap.add_argument("--profile", action="store_true", help="time each part of the step; projected loss alone")
    ap.add_argument(
        "--projection",
        choices=("new", "old", "both"),
        default="new",
        help="projected loss path: new (FFT blur, grouped solve), old (direct conv, gathered bmm), both side by side",
    )
    ap.add_argument("--presets", default=None, help="comma-separated model presets to run each config with")
    a = ap.parse_args(argv)
    import torch

    from napari_astrosr.config import config_from_dict
    from napari_astrosr.models.inference import pick_device

    dev = pick_device(a.device)
    if a.threads:
        torch.set_num_threads(a.threads)
    hw = (
        torch.cuda.get_device_name()
        if dev.startswith("cuda")
        else f"CPU {platform.machine()}, {torch.get_num_threads()} threads"
    )
    paths = a.configs or [str(REPO / "configs" / f"{n}.yaml") for n in DEFAULT]
    rows = []
    cmd = "python benchmarks/train_speed.py " + " ".join(sys.argv[1:] if argv is None else argv)
    head = (
        "| config | model | projection | batch | patch (net in) | loop steps/s | samples/s | bare fwd+bwd ms | loop step ms "
        "| net share |\n|---|---|---|---|---|---|---|---|---|---|"
    )
    from napari_astrosr.training.loop import StepProfile

    profiles = []
    print(f"# Training step vs bare network ({hw}, torch {torch.__version__})\n\n`{cmd}`\n", flush=True)
    print(head, flush=True)
    title = f"# Training step vs bare network ({hw}, torch {torch.__version__})\n\n`{cmd}`\n\n"
    if a.out:  # written row by row: a run cut short by a time limit keeps the rows it measured
        Path(a.out).write_text(title + head + "\n")
    modes = ("old", "new") if a.projection == "both" else (a.projection,)
    runs = []
    for p in paths:
        for preset in a.presets.split(",") if a.presets else [None]:
            for mode in modes:
                runs.append((p, preset, mode))
    for p, preset, mode in runs:
        d = shrink(yaml.safe_load(Path(p).read_text()), a.warmup + a.steps + 1, a.batch)
        d["run"]["device"] = dev
        if preset:
            d["model"]["preset"] = preset
        if a.threads:
            d["run"]["threads"] = a.threads
        cfg = config_from_dict(d, source=p)
        t0 = time.perf_counter()
        prof = StepProfile() if a.profile else None
        with blur_mode(mode):
            step, info = loop_step(cfg, a.steps, a.warmup, prof)
        net = bare(cfg, dev, max(3, a.steps // 2), 2)
        pin = cfg.data.patch * (cfg.data.scale if cfg.model.scale == 1 else 1)
        proj = cfg.loss.projection_weight > 0
        row = (
            f"| {cfg.name} | {cfg.model.name}/{cfg.model.preset} | {mode if proj else '-'} | {cfg.run.batch_size} "
            f"| {pin} | {1 / step:.2f} | {cfg.run.batch_size / step:.0f} | {net * 1e3:.1f} | {step * 1e3:.1f} "
            f"| {net / step:.0%} |"
        )
        rows.append(row)
        print(row, f"<!-- {time.perf_counter() - t0:.0f} s; {info} -->", flush=True)
        if a.out:
            with open(a.out, "a") as fh:
                fh.write(row + "\n")
        if prof is not None:
            alone = projection_alone(cfg, prof.projector, dev) if prof.projector is not None else None
            profiles.append((cfg, mode if proj else "-", prof, alone))
    if profiles:
        lines = profile_tables(profiles)
        print("\n".join(lines), flush=True)
        if a.out:
            with open(a.out, "a") as fh:
                fh.write("\n".join(lines) + "\n")
    return 0


def profile_tables(profiles) -> list[str]:
    """The share of each part of the step per run, and the projected loss alone, direct vs FFT blur."""
    from napari_astrosr.training.loop import StepProfile

    parts = StepProfile.PARTS
    lines = [
        "",
        "Parts of a step (ms per step; share of the step), device synchronised at each boundary:",
        "",
        "| config | model | projection | " + " | ".join(parts) + " | total ms |",
        "|---|---|---|" + "---|" * len(parts) + "---|",
    ]
    for cfg, mode, prof, _ in profiles:
        n = max(prof.steps, 1)
        total = sum(prof.seconds.values()) / n
        cells = [f"{prof.seconds[k] / n * 1e3:.1f} ({prof.seconds[k] / n / total:.0%})" for k in parts]
        lines.append(
            f"| {cfg.name} | {cfg.model.name}/{cfg.model.preset} | {mode} | "
            + " | ".join(cells)
            + f" | {total * 1e3:.1f} |"
        )
    alone = [(cfg, al) for cfg, _, _, al in profiles if al is not None]
    if alone:
        lines += [
            "",
            "The projected loss alone (forward + backward, the config's batch and HR patch, the loop's PSF bank):",
            "",
            "| config | batch | HR patch | PSF bank (n, side px) | old ms | new ms | speed-up | loss rel. diff |",
            "|---|---|---|---|---|---|---|---|",
        ]
        seen = set()
        for cfg, al in alone:
            if cfg.name in seen:
                continue
            seen.add(cfg.name)
            lines.append(
                f"| {cfg.name} | {cfg.run.batch_size} | {cfg.data.patch * cfg.data.scale} | {al['psfs']}, {al['k']} "
                f"| {al['old']:.1f} | {al['new']:.1f} | {al['old'] / al['new']:.1f}x | {al['rel']:.1e} |"
            )
    return lines


if __name__ == "__main__":
    sys.exit(main())

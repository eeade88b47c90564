"""Training-step speed per GPU config against the network's bare forward + backward, as a Markdown table.

    python benchmarks/train_speed.py [--configs configs/fisr_x2_gpu.yaml ...] [--steps 30] [--batch N]
                                     [--device auto] [--out docs/results_train_speed.md]

For each config the real loop (``training.loop.train_job``: batch drawn on the device, bf16
autocast on CUDA, losses, the projection's batched solve, optimizer, logging) runs ``--warmup``
+ ``--steps`` steps on a shrunk data set (one image per source: the pool's size does not change
a step's cost), timed between the loop's per-step progress events (each holds ``loss.item()``,
so the GPU is synchronised). The same network then runs bare: forward + backward on a random
batch of the same shape under the same autocast, synchronised. ``net share`` = bare / step: the
fraction of a training step that is the network (the target on a GPU is >= 60%).
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


def loop_step(cfg, steps: int, warmup: int) -> tuple[float, str]:
    """Seconds per step of the real training loop (after ``warmup`` steps), and the device/precision line."""
    from napari_astrosr.training.loop import train_job

    with tempfile.TemporaryDirectory() as tmp:
        stamps, info = [], ""
        for ev in train_job(cfg, out_dir=Path(tmp) / "run"):
            if ev.step == 0 and "params" in (ev.values or {}):
                info = ev.message
            if ev.step and "loss" in (ev.values or {}):
                stamps.append((ev.step, time.perf_counter()))
        t = [s for s in stamps if s[0] > warmup]
        if len(t) < 2:
            raise RuntimeError("too few steps timed; raise --steps")
        return (t[-1][1] - t[0][1]) / (t[-1][0] - t[0][0]), info


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="*", default=None, help="config files (default: configs/*_gpu.yaml)")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch", type=int, default=None, help="override run.batch_size (small on a CPU)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None, help="also write the table to this Markdown file")
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
        "| config | model | batch | patch (net in) | loop steps/s | samples/s | bare fwd+bwd ms | loop step ms "
        "| net share |\n|---|---|---|---|---|---|---|---|---|"
    )
    print(f"# Training step vs bare network ({hw}, torch {torch.__version__})\n\n`{cmd}`\n", flush=True)
    print(head, flush=True)
    title = f"# Training step vs bare network ({hw}, torch {torch.__version__})\n\n`{cmd}`\n\n"
    if a.out:  # written row by row: a run cut short by a time limit keeps the rows it measured
        Path(a.out).write_text(title + head + "\n")
    for p in paths:
        d = shrink(yaml.safe_load(Path(p).read_text()), a.warmup + a.steps, a.batch)
        d["run"]["device"] = dev
        if a.threads:
            d["run"]["threads"] = a.threads
        cfg = config_from_dict(d, source=p)
        t0 = time.perf_counter()
        step, info = loop_step(cfg, a.steps, a.warmup)
        net = bare(cfg, dev, max(3, a.steps // 2), 2)
        pin = cfg.data.patch * (cfg.data.scale if cfg.model.scale == 1 else 1)
        row = (
            f"| {cfg.name} | {cfg.model.name}/{cfg.model.preset} | {cfg.run.batch_size} | {pin} | {1 / step:.2f} | "
            f"{cfg.run.batch_size / step:.0f} | {net * 1e3:.1f} | {step * 1e3:.1f} | {net / step:.0%} |"
        )
        rows.append(row)
        print(row, f"<!-- {time.perf_counter() - t0:.0f} s; {info} -->", flush=True)
        if a.out:
            with open(a.out, "a") as fh:
                fh.write(row + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

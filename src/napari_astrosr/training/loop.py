"""The training loop: ``train_job(config, out_dir=...)`` (a long job, see :mod:`progress`).

One loop serves every registered network:

- supervised (FISR, Restormer, Pix2WGAN generator without a critic): pixel L1/L2
  + ``loss.fcl_weight`` x FISR's Flux Consistency Loss, AdamW (or Adam), linear warm-up
  then cosine decay (Park et al.), gradient-norm clipping;
- WGAN-GP (``gan.enabled``; Pix2WGAN): ``gan.critic_steps`` critic updates per generator
  update, critic loss D(fake) - D(real) + gp_weight x GP, generator loss -D(fake) +
  l1_weight x L1, Adam(0.5, 0.999); with ``gan.cascade`` the second generator of
  ``pix2wgan-cascade`` is trained on the output of a frozen first stage.

Outputs in ``out_dir``: ``config.yaml`` (the exact run), ``model.pt`` + ``model.json``
(``models.checkpoints.save_checkpoint``: weights, config, optimizer, package version,
training record), ``resume.pt`` (scheduler/critic state for ``--resume``), ``log.csv``
(losses and validation metrics) and ``curves.png``. The batch of step ``k`` is drawn from
``default_rng([seed, k])``, so a resumed run continues exactly where it stopped.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..config import TrainConfig, resolve_data_root, save_config
from ..core.atomic import atomic_output, deferred_signals
from ..exceptions import AstroSRError
from ..progress import NEVER, Progress

__all__ = ["train_job", "train", "predict_image", "LOG_FIELDS"]

LOG_FIELDS = [
    "step",
    "wall_s",
    "lr",
    "loss",
    "loss_pixel",
    "loss_fcl",
    "loss_pool",
    "loss_proj",
    "loss_adv",
    "critic_loss",
    "wasserstein",
    "gp",
    "val_loss",
    "val_psnr",
    "val_psnr_bicubic",
    "val_flux_error",
    "val_flux_error_bicubic",
    "val_flux_rel",
    "val_flux_rel_bicubic",
]


# ---------------------------------------------------------------------------------------------
# helpers


class _Schedule:
    """LR multiplier of a step: linear warm-up, then cosine decay (or constant) to step ``total``.

    A callable object, not a closure, so ``LambdaLR.state_dict()`` saves its attributes (plain
    numbers: loadable with ``weights_only``) and a resumed chunk gets the fitted ``total`` back.
    """

    def __init__(self, cfg: TrainConfig, total: int):
        self.warmup = int(cfg.optim.warmup_steps)
        self.kind = str(cfg.optim.schedule)
        self.min_ratio = float(cfg.optim.min_lr_ratio)
        self.total = int(total)

    def __call__(self, step: int) -> float:
        if self.warmup and step < self.warmup:
            return (step + 1) / self.warmup
        if self.kind == "constant":
            return 1.0
        t = (step - self.warmup) / max(1, self.total - self.warmup)
        t = min(max(t, 0.0), 1.0)
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * t))


def _lr_lambda(cfg: TrainConfig):
    return _Schedule(cfg, cfg.run.fit_steps or cfg.run.steps)


FIT_WARMUP_STEPS = 2
"""Steps of each process not timed for the budget fit (first calls: allocations, cuDNN/compile, PSF inverses)."""
FIT_SAFETY = 0.95
"""Share of the remaining budget the fitted schedule plans to use: validations and checkpoints need the rest."""


class StepProfile:
    """Wall time spent in each part of the training step, for ``benchmarks/train_speed.py --profile``.

    Pass one to :func:`train_job`; the loop then synchronises the device at each boundary (so a
    profiled run is slightly slower) and adds the seconds to :attr:`seconds`. ``reset()`` after the
    warm-up steps. :attr:`projector` is the loop's ``physics.DirectProjector`` (None without the
    projected loss), so a benchmark can time it alone on the same PSF bank.
    """

    PARTS = ("data", "network fwd", "losses", "projection loss", "backward", "optimizer", "log/val/ckpt")

    def __init__(self) -> None:
        self.projector = None
        self.device = "cpu"
        self.reset()

    def reset(self) -> None:
        """Forget the time so far (call between steps)."""
        self.seconds = dict.fromkeys(self.PARTS, 0.0)
        self.steps = 0
        self._t = time.perf_counter()

    def mark(self, part: str) -> None:
        """Charge the time since the last mark to ``part``."""
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
        t = time.perf_counter()
        self.seconds[part] += t - self._t
        self._t = t


def _make_optimizer(params, cfg: TrainConfig, fused: bool = False):
    import torch

    o = cfg.optim
    kw = {"fused": True} if fused else {}  # CUDA: one kernel for the whole update
    if o.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay, **kw)
    return torch.optim.Adam(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay, **kw)


def _forward(model, needs_flux: bool, x, fmap):
    return model(x, fmap) if needs_flux else model(x)


def predict_image(
    model,
    lr: np.ndarray,
    *,
    needs_flux: bool,
    data_scale: int,
    model_scale: int,
    fluxmap_thresh: float = 1.5,
    normalization: Optional[dict] = None,
    device: str = "cpu",
) -> np.ndarray:
    """Whole-image prediction in flux units through the production path (``models.inference.infer``).

    Same-size networks get the flux-conserving bicubic upsampling of ``lr`` (as
    ``restoration.py`` feeds them); FISR gets the LR flux map.
    """
    from ..core.fluxmap import flux_map_from_image
    from ..models.inference import infer
    from .data import NORMALIZATION, _input_image

    lr = np.asarray(lr, dtype=np.float32)
    x = _input_image(lr, data_scale, model_scale)
    fm = flux_map_from_image(np.nan_to_num(lr), thresh=fluxmap_thresh) if needs_flux else None
    out, _ = infer(
        model,
        x,
        scale=model_scale,
        flux_map=fm,
        normalization=normalization or NORMALIZATION,
        device=device,
        precision="fp32",
    )
    return out


def _zero_last(model) -> None:
    """Zero the last (transposed) convolution: residual nets then start as their base (ReZero-style)."""
    import torch

    last = None
    for m in model.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            last = m
    if last is not None:
        with torch.no_grad():
            last.weight.zero_()
            if last.bias is not None:
                last.bias.zero_()


def _train_mode(model, cfg: TrainConfig) -> None:
    model.train()
    if cfg.gan.cascade:
        model.stages[0].eval()  # frozen first stage: running BatchNorm statistics, no dropout


def _bicubic(lr: np.ndarray, s: int) -> np.ndarray:
    from ..core.resample import upsample

    return np.asarray(upsample(np.nan_to_num(lr), s, method="bicubic"), dtype=np.float32)


def _validate(
    model, data, cfg: TrainConfig, needs_flux: bool, pixel_kind: str, baseline_cache: dict, device: str = "cpu"
) -> dict:
    """Validation loss on held-out patches + PSNR and Flux Error on whole held-out images."""
    import torch

    from ..core import metrics
    from .data import normalization_of
    from .losses import pixel_loss

    model.eval()
    out: dict[str, Any] = {}
    with torch.no_grad():
        v = data.val
        n = min(len(v), 64)
        x = torch.from_numpy(v.x[:n]).to(device)
        y = torch.from_numpy(v.y[:n]).to(device)
        f = torch.from_numpy(v.fmap_in[:n]).to(device)
        out["val_loss"] = float(
            pixel_loss(_forward(model, needs_flux, x, f), y, kind=pixel_kind, delta=cfg.loss.huber_delta)
        )
    ps, fe, fr = [], [], []
    for i, pair in enumerate(data.val_images):
        pred = predict_image(
            model,
            pair.lr,
            needs_flux=needs_flux,
            data_scale=cfg.data.scale,
            model_scale=cfg.model.scale,
            fluxmap_thresh=cfg.loss.fcl_thresh,
            normalization=normalization_of(cfg),
            device=device,
        )
        hr = np.nan_to_num(pair.hr)
        ps.append(metrics.psnr(hr, pred))
        m = metrics.flux_error(hr, pred)
        fe.append(m["flux_error"])
        fr.append(m["flux_error_rel_median"])
        if i not in baseline_cache:
            b = _bicubic(pair.lr, cfg.data.scale)
            mb = metrics.flux_error(hr, b)
            baseline_cache[i] = (metrics.psnr(hr, b), mb["flux_error"], mb["flux_error_rel_median"])
    _train_mode(model, cfg)
    if ps:
        out["val_psnr"] = float(np.mean(ps))
        out["val_flux_error"] = float(np.nanmean(fe))
        out["val_flux_rel"] = float(np.nanmedian(fr))
        bc = [baseline_cache[i] for i in range(len(ps))]
        out["val_psnr_bicubic"] = float(np.mean([b[0] for b in bc]))
        out["val_flux_error_bicubic"] = float(np.nanmean([b[1] for b in bc]))
        out["val_flux_rel_bicubic"] = float(np.nanmedian([b[2] for b in bc]))
    return out


def _plot(log_path: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    with log_path.open() as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return

    def col(k):
        pts = [(float(r["step"]), float(r[k])) for r in rows if r.get(k) not in (None, "", "nan")]
        return np.array(pts).T if pts else None

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for k in ("loss", "val_loss"):
        c = col(k)
        if c is not None:
            axes[0].plot(c[0], c[1], label=k, marker="." if k.startswith("val") else None)
    axes[0].set_yscale("log")
    axes[0].set_xlabel("step")
    for k in ("val_psnr", "val_psnr_bicubic"):
        c = col(k)
        if c is not None:
            axes[1].plot(c[0], c[1], label=k, marker=".")
    axes[1].set_xlabel("step")
    axes[1].set_ylabel("PSNR [dB]")
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:  # a run stopped before its first validation has no PSNR curve yet
            ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)


class _Log:
    def __init__(self, path: Path, append: bool):
        self.path = path
        new = not (append and path.exists())
        self.f = path.open("w" if new else "a", newline="")
        self.w = csv.DictWriter(self.f, fieldnames=LOG_FIELDS, extrasaction="ignore")
        if new:
            self.w.writeheader()

    def row(self, values: dict) -> None:
        self.w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in values.items()})
        self.f.flush()

    def close(self) -> None:
        self.f.close()


# ---------------------------------------------------------------------------------------------
# the job


def train_job(
    config: TrainConfig,
    *,
    out_dir,
    resume: bool = False,
    stop=NEVER,
    root: Optional[Path] = None,
    profile: Optional[StepProfile] = None,
) -> Generator[Progress, None, Path]:
    """Train the network a :class:`config.TrainConfig` describes; returns the checkpoint path.

    Parameters
    ----------
    config
        Validated run description (:func:`config.load_config`).
    out_dir
        Folder for the checkpoint, log, curves and the config copy (created).
    resume
        Continue from ``out_dir/model.pt`` + ``resume.pt`` at the step they hold.
    stop
        Stop flag; when set the loop saves a checkpoint and returns it (clean stop).
    root
        Data root override (else ``config.data.root`` / ``$ASTROSR_SHARED_DATA`` / ``../shared/data``).
    profile
        A :class:`StepProfile` to fill with the time of each part of a step (benchmarks only).

    Yields
    ------
    Progress
        ``values`` holds ``loss`` (and ``val_psnr`` etc. after validations); the last event's
        ``values["stop_reason"]`` is None when the run is done, else ``"budget"``
        (``run.time_budget_minutes`` / ``run.max_minutes`` spent), ``"chunk"`` (``run.chunk_minutes``
        spent: resume to continue) or ``"stop"`` (the stop flag).

    Notes
    -----
    The run ends at ``run.steps``, or at ``run.fit_steps``, or, with ``run.time_budget_minutes`` and no
    ``fit_steps``, at the step count fitted to the budget: after ``FIT_WARMUP_STEPS`` steps the loop times
    ``run.fit_measure_steps`` steps and sets the LR schedule's length (cosine to its end) to the steps
    done plus ``FIT_SAFETY`` x the remaining budget x the measured steps/s (at most ``run.steps``).
    The fitted length is saved in ``resume.pt`` so a resumed chunk continues the same schedule.
    """
    from .._extras import require

    require("torch", extra="ml", what="training")
    cfg = config
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise AstroSRError(f"--out {out}: exists and is not a folder; choose another output folder.")
    created = [p for p in [out, *out.parents] if not p.exists()]  # removed again if the run leaves nothing
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AstroSRError(
            f"--out {out}: cannot create the folder ({exc.strerror or exc}); choose another place."
        ) from None
    try:
        return (yield from _train_in(cfg, out, resume, stop, root, profile))
    finally:
        for d in created:  # folders this call made and nothing was left in (a refused run)
            try:
                d.rmdir()
            except OSError:
                break


def _train_in(cfg: TrainConfig, out: Path, resume: bool, stop, root, profile=None):
    import torch

    from ..models.checkpoints import check_model_budget
    from ..models.registry import get_spec, resolve_config

    ckpt_path = out / "model.pt"
    state_path = out / "resume.pt"
    if resume and not (ckpt_path.exists() and state_path.exists()):
        raise AstroSRError(f"{out}: nothing to resume (model.pt and resume.pt missing); run without --resume.")
    if not resume and ckpt_path.exists():
        raise AstroSRError(f"{ckpt_path}: exists; pass --resume to continue it or choose another --out.")
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    torch.manual_seed(cfg.run.seed)
    spec = get_spec(cfg.model.name)
    ms, ds = cfg.model.scale, cfg.data.scale
    if spec.upsamples and ms == 1:
        raise AstroSRError(
            f"{cfg.source_path}: model.scale: {cfg.model.name} upsamples; set model.scale to data.scale ({ds})."
        )
    if not spec.upsamples and ms != 1:
        raise AstroSRError(
            f"{cfg.source_path}: model.scale: {cfg.model.name} is a same-size network; set model.scale: 1 "
            "(its input is the flux-conserving bicubic upsampling of the LR image)."
        )
    if not cfg.gan.cascade:  # the cascade's size is its stage-1 checkpoint's, checked when that is loaded
        where = f"{cfg.source_path or cfg.name}: model"
        try:
            full = resolve_config(cfg.model.name, preset=cfg.model.preset, **cfg.model.overrides)
        except AstroSRError as exc:
            raise AstroSRError(f"{where}: {exc}") from None
        check_model_budget(cfg.model.name, full, scale=ms, where=where)
    if cfg.model.init_from and not resume:
        _check_init_from(cfg, full if not cfg.gan.cascade else {})  # before minutes of data building
    lock = _acquire_lock(out)
    before = {p.name for p in out.iterdir()}
    try:
        return (yield from _train(cfg, out, ckpt_path, state_path, resume, stop, root, profile))
    except BaseException:
        # a run that fails or is interrupted before its first checkpoint leaves nothing it created
        if not ckpt_path.exists():
            for p in out.iterdir():
                if p.name not in before and p.name != lock.name and p.is_file():
                    p.unlink(missing_ok=True)
        raise
    finally:
        lock.unlink(missing_ok=True)


def _acquire_lock(out: Path) -> Path:
    """One run per output folder: two runs writing the same log and checkpoint corrupt both."""
    import os

    lock = out / "train.lock"
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        try:
            pid = int(lock.read_text().strip() or 0)
            os.kill(pid, 0)
            alive = pid != os.getpid()
        except (ValueError, ProcessLookupError, PermissionError, OSError):
            alive = False
        if alive:
            raise AstroSRError(
                f"{out}: another astrosr train (pid {pid}) is using this folder; wait for it or choose another --out."
            ) from None
        lock.unlink(missing_ok=True)  # stale lock of a dead run
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    return lock


def init_from_checkpoint(cfg: TrainConfig) -> Path:
    """The checkpoint file ``cfg.model.init_from`` names (bundled weights resolved), or one clear error.

    The checks that need no torch and no network (a cascade, no bundled weights, a missing file): the Train
    widget runs them in the GUI process before it starts a job; :func:`_check_init_from` adds the rest.
    """
    from ..models.checkpoints import bundled_checkpoint

    where = f"{cfg.source_path or 'config'}: model.init_from"
    if cfg.gan.cascade:
        raise AstroSRError(f"{where}: not for a cascade (its first stage comes from gan.stage1).")
    scale = cfg.model.pipeline_scale or cfg.data.scale
    if cfg.model.init_from_bundled:
        path = bundled_checkpoint(cfg.model.name, scale)
        if path is None:
            raise AstroSRError(f"{where}: no bundled {cfg.model.name} x{scale} weights; give a checkpoint path.")
        return path
    path = Path(str(cfg.model.init_from)).expanduser()
    if not path.is_file():
        raise AstroSRError(f"{where}: {path} not found; give a checkpoint (.pt with its .json) or 'bundled'.")
    return path


def _check_init_from(cfg: TrainConfig, full_cfg: dict) -> Path:
    """The checkpoint ``cfg.model.init_from`` names (fine-tuning), checked before any data is built.

    It must be the same network: architecture, resolved configuration, the scale it serves and the input
    normalization, or its weights would mean something else; each mismatch is one clear error.
    """
    from ..models.checkpoints import read_sidecar
    from .data import normalization_of

    where = f"{cfg.source_path or 'config'}: model.init_from"
    scale = cfg.model.pipeline_scale or cfg.data.scale
    path = init_from_checkpoint(cfg)
    try:
        meta = read_sidecar(path)
    except AstroSRError as exc:
        raise AstroSRError(f"{where}: {exc}") from None
    if meta.get("architecture") != cfg.model.name or int(meta.get("scale", 0)) != scale:
        raise AstroSRError(
            f"{where}: {Path(path).name} is a {meta.get('architecture')} x{meta.get('scale')} checkpoint; this config "
            f"trains {cfg.model.name} x{scale}."
        )
    if dict(meta.get("config") or {}) != dict(full_cfg):
        raise AstroSRError(
            f"{where}: {Path(path).name} is a {cfg.model.name} with config {meta.get('config')}, this config builds "
            f"{full_cfg}; set model.preset / model.overrides to match it."
        )
    norm = normalization_of(cfg)
    if dict(meta.get("normalization") or {}) != norm:
        raise AstroSRError(
            f"{where}: {Path(path).name} was trained with normalization {meta.get('normalization')}, this config "
            f"uses {norm}; set data.normalization to match it."
        )
    return Path(path)


def _init_from(model, cfg: TrainConfig, full_cfg: dict) -> dict:
    """Load ``cfg.model.init_from``'s weights into ``model``; what was loaded (name, sha256, step), for the sidecar."""
    from ..models.checkpoints import load_checkpoint

    path = _check_init_from(cfg, full_cfg)
    src, meta = load_checkpoint(
        path, expect_name=cfg.model.name, expect_scale=cfg.model.pipeline_scale or cfg.data.scale
    )
    model.load_state_dict(src.state_dict())
    return {"path": path.name, "sha256": meta.get("sha256"), "step": meta.get("step")}


def _train(cfg: TrainConfig, out: Path, ckpt_path: Path, state_path: Path, resume: bool, stop, root, profile=None):
    import torch

    from ..models.checkpoints import bundled_checkpoint, load_checkpoint, save_checkpoint
    from ..models.inference import autocast_context, pick_device
    from ..models.registry import build_model, get_spec, resolve_config
    from .data import DevicePool, build_train_data, normalization_of
    from .losses import (
        background_loss,
        critic_loss,
        flux_consistency_loss,
        generator_adversarial_loss,
        pixel_loss,
        pooled_loss,
        sample_weights,
    )

    spec = get_spec(cfg.model.name)
    needs_flux = bool(spec.needs_flux_map)
    ms, ds = cfg.model.scale, cfg.data.scale
    save_config(cfg, out / "config.yaml")
    dev = pick_device(cfg.run.device)
    if dev.startswith("cuda"):
        torch.backends.cudnn.benchmark = True  # fixed patch shapes: let cuDNN pick its fastest kernels once
    # bf16 autocast for the network's forward on CUDA; losses and the projection stay fp32
    amp, precision = autocast_context(dev, "auto" if cfg.run.precision == "auto" else cfg.run.precision)

    yield Progress(0, cfg.run.steps, "building training data")
    t_data = time.perf_counter()
    data = build_train_data(cfg, root=root)
    t_data = time.perf_counter() - t_data

    overrides = dict(cfg.model.overrides)
    stage1_meta = None
    if cfg.gan.cascade:
        if cfg.model.name != "pix2wgan-cascade":
            raise AstroSRError(f"{cfg.source_path}: gan.cascade needs model.name: pix2wgan-cascade.")
        s1 = Path(cfg.gan.stage1) if cfg.gan.stage1 else bundled_checkpoint("pix2wgan", cfg.model.pipeline_scale or ds)
        if s1 is None or not Path(s1).exists():
            raise AstroSRError(
                f"{cfg.source_path}: gan.stage1: no first-stage pix2wgan checkpoint found ({s1}); "
                "train pix2wgan first or give gan.stage1."
            )
        stage1, stage1_meta = load_checkpoint(s1, expect_name="pix2wgan")
        stage2_cfg = resolve_config("pix2wgan", preset=cfg.model.preset)
        overrides = {"stages": [stage1_meta["config"], stage2_cfg]}
        model = build_model(cfg.model.name, preset=None, scale=ms, **overrides)
        model.stages[0].load_state_dict(stage1.state_dict())
        for p in model.stages[0].parameters():
            p.requires_grad_(False)
        full_cfg = overrides
    else:
        model = build_model(cfg.model.name, preset=cfg.model.preset, scale=ms, **overrides)
        full_cfg = resolve_config(cfg.model.name, preset=cfg.model.preset, **overrides)
    if cfg.model.zero_init_last and not resume:
        _zero_last(model.stages[-1] if cfg.gan.cascade else model)
    init_meta = None
    if cfg.model.init_from and not resume:  # a resumed run has its own weights in model.pt
        init_meta = _init_from(model, cfg, full_cfg)
    model.to(dev)
    _train_mode(model, cfg)
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = _make_optimizer(trainable, cfg, fused=dev.startswith("cuda"))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg))
    critic = opt_c = None
    if cfg.gan.enabled:
        from ..models.pix2wgan import build_critic

        critic = build_critic("small", ndf=cfg.gan.critic_width).to(dev)
        opt_c = torch.optim.Adam(critic.parameters(), lr=cfg.gan.critic_lr, betas=tuple(cfg.optim.betas))
    n_params = sum(p.numel() for p in trainable)

    step, wall_before = 0, 0.0
    history: dict[str, Any] = {}
    budget_s = cfg.run.time_budget_minutes * 60 if cfg.run.time_budget_minutes else None
    # the schedule's length (and the run's last step): fit_steps, else steps until fitted to the budget
    fit: dict[str, Any] = {
        "steps": cfg.run.fit_steps or cfg.run.steps,
        "fitted": bool(cfg.run.fit_steps) or budget_s is None,
        "steps_per_s": None,
    }
    if resume:
        _, meta, payload = load_checkpoint(ckpt_path, expect_name=cfg.model.name, with_payload=True)
        model.load_state_dict(payload["model"])
        if "optimizer" in payload:
            opt.load_state_dict(payload["optimizer"])
        try:
            st = torch.load(state_path, map_location="cpu", weights_only=True)
            sched.load_state_dict(st["scheduler"])
            if critic is not None and "critic" in st:
                critic.load_state_dict(st["critic"])
                opt_c.load_state_dict(st["critic_opt"])
            step = int(st["step"])
        except Exception as exc:  # truncated, not a torch file, or not the dict save() writes
            first = (str(exc).strip().splitlines() or [""])[0][:100]
            raise AstroSRError(
                f"{state_path}: cannot resume from it ({type(exc).__name__}: {first}); it is "
                "damaged: remove model.pt and resume.pt to start over, or use another --out."
            ) from None
        if "torch_rng" in st:
            torch.set_rng_state(st["torch_rng"])  # dropout etc. continue as if never stopped
        if "cuda_rng" in st and dev.startswith("cuda"):
            torch.cuda.set_rng_state(st["cuda_rng"])
        wall_before = float(st.get("wall_s", 0.0))
        history = dict(meta.get("training", {}).get("history", {}))
        init_meta = meta.get("training", {}).get("init_from")  # the fine-tuning's start, kept across chunks
        fit = dict(st.get("fit", fit))
    sched.lr_lambdas[0].total = int(fit["steps"])  # a resumed chunk keeps the length fitted in the first one
    baseline: dict = {}
    hardware = _hardware(dev)
    cost = _cost(cfg, full_cfg)
    # the pool lives on the training device: a batch is an index_select there, no host copy
    pool = DevicePool(data.train, dev)
    net = model
    if cfg.run.compile and dev.startswith("cuda"):
        try:
            net = torch.compile(model)
        except Exception:  # noqa: BLE001 - compile is an optimisation, never a requirement
            net = model
    stop_reason: Optional[str] = None
    t0 = time.perf_counter()

    def wall() -> float:
        return wall_before + time.perf_counter() - t0

    def save(final_val: Optional[dict] = None) -> Path:
        extra = {
            "config_name": cfg.name,
            "config_file": Path(cfg.source_path).name if cfg.source_path else None,
            "run": cfg.model_dump(mode="json"),
            "data": data.summary,
            "steps": step,
            "wall_time_s": round(wall(), 1),
            "data_build_s": round(t_data, 1),
            "params": n_params,
            "torch_threads": torch.get_num_threads(),
            "hardware": hardware,
            "device": dev,
            "precision": precision,
            "batch_size": cfg.run.batch_size,
            "validation": final_val or history.get("last_val", {}),
            "schedule_steps": int(fit["steps"]),
            "fitted_steps_per_s": fit["steps_per_s"],
            "stop_reason": stop_reason,
            "history": history,
            "stage1": (
                {"path": Path(stage1_meta["path"]).name, "sha256": stage1_meta.get("sha256")} if stage1_meta else None
            ),
            "init_from": init_meta,
        }
        st = {
            "step": step,
            "scheduler": sched.state_dict(),
            "wall_s": wall(),
            "torch_rng": torch.get_rng_state(),
            "fit": dict(fit),
        }
        if dev.startswith("cuda"):
            st["cuda_rng"] = torch.cuda.get_rng_state()
        if critic is not None:
            st["critic"] = critic.state_dict()
            st["critic_opt"] = opt_c.state_dict()
        # Ctrl-C / SIGTERM wait until model.pt, its sidecar and resume.pt are all written: a complete
        # checkpoint or the previous one, never a mix
        with deferred_signals():
            save_checkpoint(
                ckpt_path,
                model,
                name=cfg.model.name,
                preset=cfg.model.preset if not cfg.gan.cascade else None,
                scale=cfg.model.pipeline_scale or ds,
                config=full_cfg,
                normalization=normalization_of(cfg),
                optimizer=opt,
                step=step,
                extra=extra,
                cost=cost,
            )
            with atomic_output(state_path) as tmp:
                torch.save(st, tmp)
        return ckpt_path

    # the pooled term stays L1 unless the pixel loss is Huber (existing configs reproduce bit for bit)
    pool_kw = {"kind": "huber", "delta": cfg.loss.huber_delta} if cfg.loss.pixel == "huber" else {}
    use_proj = cfg.loss.projection_weight > 0
    if use_proj:
        from . import physics

        if ms not in (ds, 1) or ds == 1 or not data.psfs:
            raise AstroSRError(
                f"{cfg.source_path}: loss.projection_weight needs an SR network (model.scale == "
                "data.scale > 1) or a same-size network on the upsampled grid (model.scale 1, "
                "data.scale > 1), and degraded/simulated data whose PSF is known; set it to 0."
            )
        bank = physics.psf_bank(data.psfs)
        margin = cfg.loss.projection_margin or bank.shape[-1] // 2
        # exact (A A^T)^-1 per PSF, built on first use (~0.3 s each for 24-px LR patches)
        projector = physics.DirectProjector(bank, ds, (cfg.data.patch, cfg.data.patch)).to(dev)
        if 2 * margin >= cfg.data.patch * ds:
            raise AstroSRError(
                f"{cfg.source_path}: loss.projection_margin {margin} HR px leaves nothing of a "
                f"{cfg.data.patch * ds}-px HR patch; use a larger data.patch or a smaller margin."
            )
        if profile is not None:
            profile.projector = projector
            for i in range(bank.shape[0]):  # a profile times steady steps: every PSF's inverse built first
                projector.inverse(i)

    def batch(k: int, salt: int = 0):
        b = pool.sample(cfg.run.batch_size, np.random.default_rng([cfg.run.seed, k, salt]), gain=cfg.data.gain_augment)
        out = {key: v for key, v in b.items() if key in ("x", "y", "fmap_in", "fmap_hr")}
        if cfg.loss.gain_invariant and "gain" in b:
            w = 1.0 / b["gain"].astype(np.float32)
            out["gain_w"] = torch.from_numpy(w / w.mean()).to(dev)
        if use_proj:
            sel = np.flatnonzero(b["clean"] & (b["psf_id"] >= 0))
            if len(sel):
                # the projector rotates/flips each sample's PSF like the batch (DirectProjector.project)
                out["proj_idx"] = torch.from_numpy(sel).to(dev)
                out["proj_ids"] = b["psf_id"][sel]
                out["proj_aug"] = (int(b["rot90"]), bool(b["flip"]))
        return out

    def projected_loss(pred, b):
        """The pixel (+ pooled + FCL) loss of the flux-exact projection of the prediction, on the
        noiseless samples, inside a margin: the objective of what 'model + --flux-exact' returns.
        """
        idx = b["proj_idx"]
        x = b["x"][idx]
        if ms == 1:
            # same-size network: its input is the flux-conserving upsampling, whose block means
            # are the LR image in these units (training.data normalises input and target alike)
            x = torch.nn.functional.avg_pool2d(x, ds)
        rot, flip = b["proj_aug"]
        pj = projector.project(pred[idx], x, b["proj_ids"], rot90=rot, flip=flip)
        m = margin
        pj, yt = pj[..., m:-m, m:-m], b["y"][idx][..., m:-m, m:-m]
        w = b["gain_w"][idx] if "gain_w" in b else None
        lo = pixel_loss(pj, yt, kind=cfg.loss.pixel, weight=w, delta=cfg.loss.huber_delta)
        if cfg.loss.pool_weight > 0:
            lo = lo + cfg.loss.pool_weight * pooled_loss(pj, yt, size=cfg.loss.pool_size or 2 * ds, weight=w, **pool_kw)
        if cfg.loss.fcl_weight > 0:
            lo = lo + cfg.loss.fcl_weight * flux_consistency_loss(pj, yt, b["fmap_hr"][idx][..., m:-m, m:-m], weight=w)
        return lo

    msg = (
        f"{cfg.model.name}/{cfg.model.preset} on {hardware} ({precision}): {n_params / 1e6:.2f}M params, "
        f"{len(data.train)} train / "
        f"{len(data.val)} val patches ({t_data:.0f} s to build)"
    )
    yield Progress(step, fit["steps"], msg, values={"params": n_params, **data.summary})
    running: dict[str, float] = {}
    chunk_s = cfg.run.chunk_minutes * 60 if cfg.run.chunk_minutes else None
    cap_s = min(v for v in (budget_s, cfg.run.max_minutes and cfg.run.max_minutes * 60, 1e30) if v)
    step0 = step  # the first step of this process (a resumed chunk starts later)
    fit_from = step0 + FIT_WARMUP_STEPS
    t_fit = 0.0
    if profile is not None:
        profile.device = dev
        profile.reset()

    def mark(part: str) -> None:
        if profile is not None:
            profile.mark(part)

    # opened only now, after every check that can refuse the config: a refused run leaves no log open or behind
    log = _Log(out / "log.csv", append=resume)
    try:
        while step < fit["steps"]:
            if stop.is_set():
                stop_reason = "stop"
            elif wall() > cap_s:
                stop_reason = "budget"
            elif chunk_s and step > step0 and time.perf_counter() - t0 > chunk_s:
                stop_reason = "chunk"  # at least one step per chunk: chunks always make progress
            if stop_reason:
                break
            if step == fit_from:
                t_fit = time.perf_counter()
            row: dict[str, Any] = {}
            if critic is not None:
                # WGAN-GP: several critic updates per generator update, each on a fresh batch
                for c in range(cfg.gan.critic_steps):
                    b = batch(step, 1 + c)
                    with torch.no_grad(), amp:
                        fake = net(b["x"])
                    fake = fake.float()
                    lc, info = critic_loss(
                        critic,
                        b["y"],
                        fake,
                        cond=b["x"],
                        gp_weight=cfg.gan.gp_weight,
                        generator=torch.Generator(device=dev).manual_seed(cfg.run.seed * 7919 + step * 13 + c),
                    )
                    opt_c.zero_grad(set_to_none=True)
                    lc.backward()
                    opt_c.step()
                row.update(critic_loss=lc.item(), wasserstein=info["wasserstein"], gp=info["gp"])
            b = batch(step)
            mark("data")
            with amp:
                pred = _forward(net, needs_flux, b["x"], b["fmap_in"])
            pred = pred.float()
            mark("network fwd")
            sw = sample_weights(b["x"], floor=cfg.loss.relative_floor) if cfg.loss.patch_relative else None
            if "gain_w" in b:
                sw = b["gain_w"] if sw is None else sw * b["gain_w"]
            lp = pixel_loss(pred, b["y"], kind=cfg.loss.pixel, weight=sw, delta=cfg.loss.huber_delta)
            loss = lp * (cfg.gan.l1_weight if critic is not None else 1.0)
            row["loss_pixel"] = lp.detach()
            if cfg.loss.fcl_weight > 0:
                lf = flux_consistency_loss(pred, b["y"], b["fmap_hr"], weight=sw)
                loss = loss + cfg.loss.fcl_weight * lf * (cfg.gan.l1_weight if critic is not None else 1.0)
                row["loss_fcl"] = lf.detach()
            if cfg.loss.pool_weight > 0:
                lpool = pooled_loss(pred, b["y"], size=cfg.loss.pool_size or 2 * ds, weight=sw, **pool_kw)
                loss = loss + cfg.loss.pool_weight * lpool * (cfg.gan.l1_weight if critic is not None else 1.0)
                row["loss_pool"] = lpool.detach()
            if cfg.loss.background_weight > 0:
                lbkg = background_loss(pred, b["y"], weight=sw)
                loss = loss + cfg.loss.background_weight * lbkg * (cfg.gan.l1_weight if critic is not None else 1.0)
                row["loss_bkg"] = lbkg.detach()
            if critic is not None:
                la = generator_adversarial_loss(critic, pred, cond=b["x"])
                loss = loss + la
                row["loss_adv"] = la.detach()
            mark("losses")
            if use_proj and "proj_idx" in b:
                lproj = projected_loss(pred, b)
                loss = loss + cfg.loss.projection_weight * lproj
                row["loss_proj"] = lproj.detach()
            mark("projection loss")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            mark("backward")
            if cfg.optim.grad_clip:
                torch.nn.utils.clip_grad_norm_(trainable, cfg.optim.grad_clip)
            # one device->host copy per step for every logged term (each .item() stalls a GPU)
            tkeys = [k for k, v in row.items() if torch.is_tensor(v)]
            vals = torch.stack([row[k].float() for k in tkeys] + [loss.detach().float()]).tolist()
            row.update(zip(tkeys, vals[:-1]))
            if not math.isfinite(vals[-1]):
                raise AstroSRError(
                    f"{cfg.name}: loss became {vals[-1]} at step {step}; lower optim.lr or set optim.grad_clip."
                )
            opt.step()
            sched.step()
            step += 1
            mark("optimizer")
            if not fit["fitted"] and step == fit_from + cfg.run.fit_measure_steps:
                rate = cfg.run.fit_measure_steps / max(time.perf_counter() - t_fit, 1e-9)
                left = max(0.0, budget_s - wall()) * FIT_SAFETY
                fit.update(steps=int(min(cfg.run.steps, step + int(rate * left))), fitted=True, steps_per_s=rate)
                sched.lr_lambdas[0].total = fit["steps"]
            row["loss"] = vals[-1]
            for k, v in row.items():
                running[k] = running.get(k, 0.0) + v
            running["_n"] = running.get("_n", 0) + 1
            values: dict[str, Any] = {"loss": vals[-1]}
            is_val = step % cfg.run.val_every == 0 or step == fit["steps"]
            if step % cfg.run.log_every == 0 or is_val:
                n = running.pop("_n")
                rec = {k: v / n for k, v in running.items()}
                running = {}
                rec.update(step=step, wall_s=round(wall(), 2), lr=float(sched.get_last_lr()[0]))
                if is_val:
                    val = _validate(model, data, cfg, needs_flux, cfg.loss.pixel, baseline, dev)
                    rec.update(val)
                    values.update(val)
                    history["last_val"] = {"step": step, **val}
                    history.setdefault("val_psnr", []).append([step, val.get("val_psnr")])
                log.row(rec)
            if step % cfg.run.checkpoint_every == 0:
                save()
            text = f"loss {vals[-1]:.4g}"
            if "val_psnr" in values:
                text += f"  val PSNR {values['val_psnr']:.2f} dB (bicubic {values['val_psnr_bicubic']:.2f})"
            mark("log/val/ckpt")
            if profile is not None:
                profile.steps += 1
            yield Progress(step, fit["steps"], text, values=values)
    finally:
        log.close()
    # a chunk's end skips the validation (the next chunk continues; the run's end validates)
    if stop_reason != "chunk" and (stop_reason or "last_val" not in history or history["last_val"].get("step") != step):
        val = _validate(model, data, cfg, needs_flux, cfg.loss.pixel, baseline, dev)
        history["last_val"] = {"step": step, **val}
        # a validation-only row, so the log and curves.png of a stopped run end with its final validation too
        final = _Log(out / "log.csv", append=True)
        try:
            final.row({"step": step, "wall_s": round(wall(), 2), **val})
        finally:
            final.close()
    path = save(history.get("last_val"))
    try:
        _plot(out / "log.csv", out / "curves.png")
    except Exception as exc:  # noqa: BLE001 - a plotting problem must not lose a trained model
        import warnings

        warnings.warn(f"could not plot training curves: {exc}", stacklevel=2)
    why = f"stopped ({stop_reason})" if stop_reason else "done"
    yield Progress(
        step,
        fit["steps"],
        f"{why}: {path} ({wall():.0f} s)",
        values={"checkpoint": str(path), "stop_reason": stop_reason, **history.get("last_val", {})},
    )
    return path


def _hardware(dev: str) -> str:
    """What the run trained on, for the sidecar (GPU name, else the CPU)."""
    import platform

    import torch

    if dev.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(dev))
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _cost(cfg: TrainConfig, full_cfg: dict) -> Optional[dict]:
    """``models.registry.model_cost`` of the trained architecture on a 64x64 input (None if it cannot)."""
    from ..models.registry import model_cost

    try:
        if cfg.gan.cascade:
            return model_cost(cfg.model.name, preset=None, scale=cfg.model.scale, **full_cfg)
        return model_cost(cfg.model.name, preset=cfg.model.preset, scale=cfg.model.scale, **dict(cfg.model.overrides))
    except Exception:  # noqa: BLE001 - a cost the counter cannot trace must not lose a trained model
        return None


def train(config: TrainConfig, *, out_dir, resume: bool = False, stop=NEVER, root: Optional[Path] = None) -> Path:
    """Synchronous :func:`train_job`."""
    from ..progress import run

    return run(train_job(config, out_dir=out_dir, resume=resume, stop=stop, root=root))


def data_root(config: TrainConfig) -> Path:
    """The data folder this config reads (see :func:`config.resolve_data_root`)."""
    return resolve_data_root(config)


def export_checkpoint(src, dst) -> Path:
    """Copy a trained checkpoint for shipping: weights only (no optimizer state), sidecar updated.

    ``dst`` is e.g. ``src/napari_astrosr/weights/fisr_x2.pt`` (the name
    ``models.checkpoints.bundled_checkpoint`` looks for). The sidecar keeps the training
    record and gets the new file's SHA-256.
    """
    import json
    import os

    import torch

    from ..models.checkpoints import file_sha256, read_sidecar, sidecar_path

    src, dst = Path(src), Path(dst)
    meta = read_sidecar(src)
    payload = torch.load(src, map_location="cpu", weights_only=True)
    torch.save({"model": payload["model"], "step": payload.get("step", meta.get("step", 0))}, dst)
    meta = dict(meta, sha256=file_sha256(dst), exported_from=src.name)
    sidecar_path(dst).write_text(json.dumps(meta, indent=2, sort_keys=True))
    for p in (dst, sidecar_path(dst)):
        os.chmod(p, 0o644)
    return dst

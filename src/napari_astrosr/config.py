"""Validated training configurations (pydantic, unknown keys rejected) and safe YAML I/O.

A training run is fully described by one YAML file (``configs/*.yaml``) that
:func:`load_config` turns into a :class:`TrainConfig`. Every model is strict
(``extra="forbid"``) and every number is bounded, so a typo (``learning_rate`` for
``lr``) or an absurd value (``steps: -3``) fails at once with a message naming the key
and the file, instead of silently training something else for minutes.

YAML is read with :func:`yaml.safe_load` only (no arbitrary Python objects).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .exceptions import AstroSRError

__all__ = [
    "PsfSpec",
    "NoiseSpec",
    "DataSource",
    "DataConfig",
    "ModelConfig",
    "LossConfig",
    "OptimConfig",
    "GanConfig",
    "RunConfig",
    "TrainConfig",
    "load_config",
    "config_from_dict",
    "save_config",
    "resolve_data_root",
]


#: Bounds on a network's constructor arguments (overrides, checkpoint sidecars), checked before
#: anything is built: the real presets use widths <= 64, <= 8 blocks per level, 4 levels.
MAX_CONFIG_INT = 4096
MAX_TOTAL_BLOCKS = 256
MAX_CONFIG_LIST = 16
MAX_CONFIG_DEPTH = 4
MAX_YAML_BYTES = 1_000_000
_BLOCK_KEYS = ("num_blocks", "refinement", "prompt_len", "stages")


def _depth(obj: Any, limit: int) -> int:
    """Nesting depth of plain containers, iteratively (no recursion to blow up); stops past ``limit``."""
    deepest, stack = 0, [(obj, 0)]
    while stack:
        o, d = stack.pop()
        deepest = max(deepest, d)
        if deepest > limit:
            return deepest
        if isinstance(o, dict):
            stack.extend((v, d + 1) for v in o.values())
        elif isinstance(o, (list, tuple)):
            stack.extend((v, d + 1) for v in o)
    return deepest


def check_model_config(cfg: Any, *, where: str) -> None:
    """Refuse constructor arguments no network here could want, before anything is built.

    Every integer in 0..``MAX_CONFIG_INT`` (widths, heads, sizes), at most ``MAX_TOTAL_BLOCKS``
    blocks in all, lists of at most ``MAX_CONFIG_LIST`` items, finite floats within 1e6, short
    strings, nesting at most ``MAX_CONFIG_DEPTH``. The parameter count and activation memory
    are checked afterwards on the meta device (``models.checkpoints.check_model_budget``).
    """
    if not isinstance(cfg, dict):
        raise AstroSRError(f"{where}: model config must be a mapping of constructor arguments.")
    if _depth(cfg, MAX_CONFIG_DEPTH) > MAX_CONFIG_DEPTH:
        raise AstroSRError(f"{where}: model config is nested deeper than {MAX_CONFIG_DEPTH} levels; fix it.")
    blocks = 0
    stack: list[tuple[str, Any]] = [(str(k), v) for k, v in cfg.items()]
    while stack:
        key, v = stack.pop()
        if isinstance(v, dict):
            stack.extend((f"{key}.{k}", x) for k, x in v.items())
            continue
        if isinstance(v, (list, tuple)):
            if len(v) > MAX_CONFIG_LIST:
                raise AstroSRError(f"{where}: model config '{key}' has {len(v)} items (at most {MAX_CONFIG_LIST}).")
            if key.rsplit(".", 1)[-1] == "stages":
                blocks += len(v)
            stack.extend((f"{key}[{i}]", x) for i, x in enumerate(v))
            continue
        if isinstance(v, bool) or v is None:
            continue
        if isinstance(v, int):
            if not 0 <= v <= MAX_CONFIG_INT:
                shown = str(v) if abs(v) < 10**12 else f"an integer of {len(str(abs(v)))} digits"
                raise AstroSRError(
                    f"{where}: model config '{key}' = {shown} is out of range (0 to {MAX_CONFIG_INT}); fix the value."
                )
            if key.split("[")[0].rsplit(".", 1)[-1] in _BLOCK_KEYS:
                blocks += v
        elif isinstance(v, float):
            if not (v == v and abs(v) <= 1e6):
                raise AstroSRError(f"{where}: model config '{key}' = {v} is not a finite number within 1e6.")
        elif isinstance(v, str):
            if len(v) > 64:
                raise AstroSRError(f"{where}: model config '{key}' is a {len(v)}-character string (at most 64).")
        else:
            raise AstroSRError(f"{where}: model config '{key}' has an unsupported type {type(v).__name__}.")
    if blocks > MAX_TOTAL_BLOCKS:
        raise AstroSRError(
            f"{where}: model config asks for {blocks} blocks in all (at most {MAX_TOTAL_BLOCKS}); "
            "use a preset or smaller num_blocks."
        )


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class PsfSpec(_Strict):
    """The blur applied to HR images before downsampling (STAR's degradation).

    ``kind="random"`` draws a new PSF per realisation from STAR's ranges
    (``core.degrade.random_star_psf``) with ``family`` gaussian or gaussian+airy;
    ``kind="spec"`` uses one fixed :func:`core.psf.parse_psf` string such as
    ``"gaussian:1.0"`` or a FITS path (relative paths are resolved against the data root).
    """

    kind: Literal["random", "spec", "none"] = "random"
    family: Literal["gaussian", "gaussian+airy", "mixed"] = "mixed"
    spec: Optional[str] = Field(default=None, max_length=500)
    plane: Optional[int] = Field(
        default=None, ge=0, le=100, description="cube plane of a PSF FITS (e.g. 2 = HSC i band)"
    )
    pixel_scale: Optional[float] = Field(
        default=None,
        gt=0.0,
        le=3600.0,
        description="arcsec/pixel of a PSF file; it is resampled to each training image's pixel scale (from its WCS)",
    )
    files: list[str] = Field(
        default_factory=list,
        max_length=100,
        description="kind random: real PSF FITS files (relative to the data root, in HR pixels) drawn instead of a "
        "STAR PSF with probability file_prob, each resampled by a factor drawn in file_scale",
    )
    file_prob: float = Field(default=0.0, ge=0.0, le=1.0)
    file_scale: tuple[float, float] = Field(default=(1.0, 1.0), description="[lo, hi] resampling factor of a PSF file")
    sigma_range: Optional[tuple[float, float]] = Field(
        default=None,
        description="kind random: [lo, hi] Gaussian sigma (HR pixels) instead of STAR's 0.8-1.2, for both families "
        "(e.g. a same-size deconvolution of inputs blurred more than STAR's)",
    )

    @model_validator(mode="after")
    def _need_spec(self) -> PsfSpec:
        if self.kind == "spec" and not self.spec:
            raise ValueError("psf.kind 'spec' needs psf.spec (e.g. 'gaussian:1.0' or a PSF FITS path)")
        if self.sigma_range is not None and not (0 < self.sigma_range[0] <= self.sigma_range[1] <= 20):
            raise ValueError(f"psf.sigma_range {list(self.sigma_range)}: need 0 < lo <= hi <= 20 (HR pixels)")
        return self


class NoiseSpec(_Strict):
    """Noise added to the degraded (LR) image, relative to its robust peak.

    ``sigma_rel`` draws, per realisation, a Gaussian sigma uniformly in
    [min, max] x (99.5th percentile of the LR image); ``prob`` is the probability
    that a realisation gets noise at all (noise augmentation: clean and noisy mixed).
    """

    prob: float = Field(default=0.0, ge=0.0, le=1.0)
    poisson_prob: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="of the noisy realisations, the fraction whose noise is Poisson (source + sky shot noise) + "
        "Gaussian read noise of the same background sigma, instead of white Gaussian",
    )
    correlated_prob: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="of the noisy realisations, the fraction whose noise is correlated like a resampled "
        "(drizzled / interpolated) image's: white noise through a random bilinear-shift kernel, rescaled to sigma",
    )
    sigma_rel_min: float = Field(default=0.0, ge=0.0, le=1.0)
    sigma_rel_max: float = Field(default=0.0, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _order(self) -> NoiseSpec:
        if self.sigma_rel_max < self.sigma_rel_min:
            raise ValueError("noise.sigma_rel_max must be >= noise.sigma_rel_min")
        return self


class DataSource(_Strict):
    """One source of HR/LR training pairs.

    - ``simulate``: synthetic star fields or Sersic galaxies (``core.simulate``), or
      ``sky``: realistic skies (``training.skies``: bulge + disk galaxies with knots from a
      GalSim stamp bank, stars sparse to crowded, blends); ``count`` images of ``size`` px;
      validation images use disjoint seeds.
    - ``degrade``: real FITS files (``files``, relative to the data root) degraded on the
      fly with the STAR pipeline (``core.degrade``).
    - ``paired``: real LR/HR pairs already on matching grids (``lr`` and ``hr`` files,
      LR pixels ``scale`` times larger than HR).
    """

    kind: Literal["simulate", "degrade", "paired"]
    simulate: Optional[Literal["starfield", "galaxies", "sky"]] = None
    count: int = Field(default=4, ge=1, le=1000)
    size: int = Field(default=256, ge=32, le=4096)
    files: list[str] = Field(default_factory=list, max_length=200)
    lr: Optional[str] = Field(default=None, max_length=500)
    hr: Optional[str] = Field(default=None, max_length=500)
    lr_hdu: Optional[int] = Field(default=None, ge=0, le=100)
    split: Literal["train", "val", "halves"] = Field(
        default="train",
        description="train / val: the whole source is used for one side only; halves: left "
        "half of every image trains, right half validates (split by sky region, never by random patches)",
    )
    weight: float = Field(default=1.0, gt=0.0, le=100.0, description="sampling weight of this source's patches")
    pixel_scale: Optional[float] = Field(
        default=None,
        gt=0.0,
        le=3600.0,
        description="arcsec/pixel a simulated image stands for (simulations carry no WCS): needed to resample a "
        "PSF file given with psf.pixel_scale",
    )
    density: Optional[Union[Literal["sparse", "medium", "crowded"], float]] = Field(
        default=None,
        description="stars per pixel of a simulated star field: sparse (2e-4), medium (1e-3, the default), crowded "
        "(5e-3) or a number in (0, 0.05]",
    )

    @model_validator(mode="after")
    def _consistent(self) -> DataSource:
        if self.kind == "simulate" and self.simulate is None:
            raise ValueError("a 'simulate' source needs simulate: starfield | galaxies | sky")
        if self.kind == "degrade" and not self.files:
            raise ValueError("a 'degrade' source needs files: [...] (FITS paths relative to data.root)")
        if self.kind == "paired" and (not self.lr or not self.hr):
            raise ValueError("a 'paired' source needs both lr: and hr: file paths")
        if self.pixel_scale is not None and self.kind != "simulate":
            raise ValueError("pixel_scale is for 'simulate' sources; real files take it from their WCS")
        if self.density is not None:
            if self.simulate not in ("starfield", "sky"):
                raise ValueError("density is for 'simulate: starfield' and 'simulate: sky' sources")
            if not isinstance(self.density, str) and not 0 < self.density <= 0.05:
                raise ValueError(
                    f"density {self.density}: use sparse | medium | crowded or stars per pixel in (0, 0.05]"
                )
        return self


class DataConfig(_Strict):
    """How training pairs are made."""

    root: Optional[str] = Field(
        default=None,
        max_length=1000,
        description="folder the file paths are relative to; default $ASTROSR_SHARED_DATA or ../shared/data "
        "next to the repository",
    )
    scale: int = Field(default=2, ge=1, le=8, description="HR/LR pixel ratio of the degradation")
    psf: PsfSpec = Field(default_factory=PsfSpec)
    noise: NoiseSpec = Field(default_factory=NoiseSpec)
    realizations: int = Field(default=4, ge=1, le=200, description="degraded versions drawn per real image")
    patch: int = Field(default=32, ge=8, le=512, description="LR patch size in pixels")
    stride: Optional[int] = Field(default=None, ge=1, le=512)
    min_valid: float = Field(default=0.8, ge=0.0, le=1.0)
    max_patches: int = Field(default=4000, ge=1, le=1_000_000)
    source_boost: float = Field(
        default=0.0,
        ge=0.0,
        le=100.0,
        description="sampling weight of a patch = 1 + source_boost x (fraction of its LR pixels on detected sources): "
        "batches are not all empty sky",
    )
    upsample_input: bool = Field(
        default=False,
        description="feed the network the flux-conserving bicubic upsampling of the LR patch (for "
        "same-size models such as restormer/pix2wgan used for SR); set automatically when the model is scale 1",
    )
    normalization: Literal["median_std", "patch_median_std"] = Field(
        default="median_std",
        description="median_std: (x - median) / std of the whole network-input image (the bundled weights before "
        "patch_median_std); patch_median_std: per patch at training / per tile at inference, over a norm_window "
        "window, std floored at the image's robust noise (DESIGN.md section 8: best for faint-source flux)",
    )
    norm_window: Optional[int] = Field(
        default=None,
        ge=8,
        le=1024,
        description="patch_median_std: statistics window in network-input pixels (= the inference tile); "
        "default 2 x patch (x the upsampling factor for same-size networks)",
    )
    gain_augment: Optional[tuple[float, float]] = Field(
        default=None,
        description="per-sample amplitude factor drawn log-uniformly from [lo, hi] and applied to the normalised "
        "input, target and flux maps of a batch (a linear rescaling of the image about its median, which keeps "
        "every pair and the forward model consistent): bright, high-dynamic-range sources (galaxy cores) "
        "become in-distribution",
    )
    sources: list[DataSource] = Field(min_length=1, max_length=50)

    @model_validator(mode="after")
    def _gain(self) -> DataConfig:
        g = self.gain_augment
        if g is not None and not (0.0 < g[0] <= g[1] <= 1e4):
            raise ValueError(f"data.gain_augment {list(g)}: need 0 < lo <= hi <= 1e4")
        return self


class ModelConfig(_Strict):
    """Which network of :data:`models.registry.MODELS` to train."""

    name: str = Field(min_length=1, max_length=64)
    preset: str = Field(default="small", min_length=1, max_length=64)
    scale: int = Field(default=2, ge=1, le=8, description="the network's own output/input size ratio")
    overrides: dict[str, Union[int, float, bool, str, list[int]]] = Field(default_factory=dict)
    zero_init_last: bool = Field(
        default=True,
        description="zero the output convolution at start, so a residual network starts as exactly its "
        "flux-conserving base (bicubic / identity) and training can only move away from it on evidence",
    )
    init_from: Optional[str] = Field(
        default=None,
        min_length=1,
        max_length=1000,
        description="fine-tune: start from this checkpoint's weights (a .pt path, or 'bundled' for the weights "
        "astrosr ships for this network and scale) instead of a fresh network; its architecture, configuration, "
        "scale and normalization must match this config's",
    )
    pipeline_scale: Optional[int] = Field(
        default=None,
        ge=1,
        le=8,
        description="the --scale the checkpoint serves (default data.scale); 1 for a same-size network whose "
        "input is already on the target grid (e.g. pix2wgan on a ground-based image resampled onto the HST grid)",
    )

    @property
    def init_from_bundled(self) -> bool:
        """``init_from`` names the bundled weights (``'bundled'``, any case)."""
        return str(self.init_from or "").strip().lower() == "bundled"

    @model_validator(mode="after")
    def _bounded(self) -> ModelConfig:
        try:
            check_model_config(self.overrides, where="model.overrides")
        except AstroSRError as exc:
            raise ValueError(str(exc).removeprefix("model.overrides: ")) from None
        return self


class LossConfig(_Strict):
    """Pixel loss plus FISR's Flux Consistency Loss (usable with any model)."""

    pixel: Literal["l1", "l2", "huber"] = Field(
        default="l1",
        description="per-pixel loss; 'huber' (smooth L1, beta = huber_delta) is also used for the pooled term: "
        "mean-seeking for small errors, so faint sources in noise keep their flux (L1 is median-seeking)",
    )
    huber_delta: float = Field(
        default=0.5,
        gt=0.0,
        le=100.0,
        description="where 'huber' turns from quadratic to linear, in normalised image units",
    )
    fcl_weight: float = Field(
        default=0.0, ge=0.0, le=100.0, description="lambda of the flux-consistency term (FISR: 0.01)"
    )
    fcl_thresh: float = Field(
        default=1.5, gt=0.0, le=100.0, description="detection threshold (sigma) for the HR flux map"
    )
    pool_weight: float = Field(
        default=0.0,
        ge=0.0,
        le=100.0,
        description="weight of an L1 term on pool_size x pool_size block means of output and target: flux at "
        "aperture scale. Per-pixel L1 is median-seeking and shrinks uncertain peaks (loses source flux); block "
        "means average that skew away",
    )
    background_weight: float = Field(
        default=0.0,
        ge=0.0,
        le=100.0,
        description="weight of an L1 term between the patch's sky level in output and target (the mean of the "
        "middle fifth of its sorted pixels, a robust background like SExtractor's): restorations that keep the "
        "mean but reshape the sky move the background photometry subtracts (docs/results_keep_sky.md)",
    )
    patch_relative: bool = Field(
        default=False,
        description="weight each sample by 1 / (std of its input patch + relative_floor), normalised to mean 1: "
        "inputs keep the whole-image normalisation inference uses, but errors on faint patches count as much as "
        "on bright ones (a BCG would otherwise set the scale and faint sources get erased)",
    )
    relative_floor: float = Field(default=0.05, gt=0.0, le=100.0)
    pool_size: int = Field(
        default=0, ge=0, le=64, description="HR pixels per block of the pooled term (0: 2 x data.scale)"
    )
    projection_weight: float = Field(
        default=0.0,
        ge=0.0,
        le=100.0,
        description="weight of the same loss (pixel + pooled + FCL) on the flux-exact projection of the output (what "
        "'model + --flux-exact' returns), on noiseless patches whose PSF is known; the network then learns what the "
        "projection cannot recover (STAR's forward model, training.physics)",
    )
    gain_invariant: bool = Field(
        default=False,
        description="with data.gain_augment: weight each sample's loss by 1 / its amplitude factor, so the "
        "augmentation changes what the network sees but not how much a sample counts (L1 grows with the "
        "amplitude otherwise, and bright copies dominate)",
    )
    projection_margin: int = Field(
        default=0,
        ge=0,
        le=64,
        description="HR pixels at each patch edge left out of the projected term (0: the PSF radius): the patch's "
        "zero-padded blur differs from the whole image's there",
    )


class OptimConfig(_Strict):
    """Optimiser and learning-rate schedule (Park et al.: AdamW + cosine)."""

    optimizer: Literal["adamw", "adam"] = "adamw"
    lr: float = Field(default=1e-3, gt=0.0, le=1.0)
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = Field(default=1e-4, ge=0.0, le=1.0)
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup_steps: int = Field(default=50, ge=0, le=1_000_000)
    min_lr_ratio: float = Field(default=0.02, ge=0.0, le=1.0)
    grad_clip: Optional[float] = Field(default=1.0, gt=0.0, le=1e6)

    @model_validator(mode="after")
    def _betas(self) -> OptimConfig:
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError("optim.betas must both lie in [0, 1)")
        return self


class GanConfig(_Strict):
    """Pix2WGAN's WGAN-GP (Adam(0.5, 0.999), L1 x100, GP x10, 3 critic steps per generator step)."""

    enabled: bool = False
    l1_weight: float = Field(default=100.0, ge=0.0, le=1e5)
    gp_weight: float = Field(default=10.0, ge=0.0, le=1e5)
    critic_steps: int = Field(default=3, ge=1, le=20)
    critic_lr: float = Field(default=1e-4, gt=0.0, le=1.0)
    critic_width: int = Field(default=32, ge=4, le=256)
    cascade: bool = Field(default=False, description="train the second stage of the cascade on the frozen first stage")
    stage1: Optional[str] = Field(
        default=None, max_length=1000, description="checkpoint of the first stage (default: the bundled pix2wgan)"
    )


class RunConfig(_Strict):
    """Length, batching, logging and reproducibility of a run."""

    steps: int = Field(default=1000, ge=1, le=10_000_000)
    batch_size: int = Field(default=16, ge=1, le=1024)
    max_minutes: Optional[float] = Field(
        default=None, gt=0.0, le=100_000.0, description="wall-time cap; stops cleanly (the LR schedule is not fitted)"
    )
    time_budget_minutes: Optional[float] = Field(
        default=None,
        gt=0.0,
        le=100_000.0,
        description="wall-time budget of the whole run (all chunks): stops cleanly when spent, and the LR schedule "
        "is fitted to the steps that fit (steps/s measured over the first fit_measure_steps steps)",
    )
    fit_steps: Optional[int] = Field(
        default=None,
        ge=1,
        le=10_000_000,
        description="length of the LR schedule and of the run, instead of the one fitted to time_budget_minutes "
        "(reproducible whatever the machine's speed)",
    )
    fit_measure_steps: int = Field(
        default=20,
        ge=2,
        le=100_000,
        description="steps timed (after 2 warm-up steps) to fit the schedule to the budget",
    )
    chunk_minutes: Optional[float] = Field(
        default=None,
        gt=0.0,
        le=100_000.0,
        description="train in chunks of at most this wall time: each saves a resumable checkpoint and exits; "
        "--resume continues exactly (scripts/train_chunks.sh loops them)",
    )
    val_every: int = Field(default=100, ge=1, le=1_000_000)
    checkpoint_every: int = Field(default=200, ge=1, le=1_000_000)
    log_every: int = Field(default=10, ge=1, le=1_000_000)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    threads: Optional[int] = Field(default=None, ge=1, le=256)
    device: Literal["auto", "cpu", "cuda", "mps"] = "cpu"
    precision: Literal["auto", "fp32", "bf16"] = Field(
        default="auto", description="training forward pass: auto = bf16 autocast on CUDA, fp32 elsewhere"
    )
    compile: bool = Field(default=False, description="torch.compile the network (CUDA only; falls back if it fails)")
    val_images: int = Field(default=3, ge=0, le=100, description="whole validation images used for Flux Error")

    @model_validator(mode="after")
    def _fit(self) -> RunConfig:
        if self.fit_steps is not None and self.fit_steps > self.steps:
            raise ValueError(
                f"fit_steps {self.fit_steps} is more than steps {self.steps}; raise steps or lower fit_steps"
            )
        return self


class TrainConfig(_Strict):
    """A complete, validated training run."""

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.+-]+$")
    description: str = Field(default="", max_length=2000)
    model: ModelConfig
    data: DataConfig
    loss: LossConfig = Field(default_factory=LossConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    gan: GanConfig = Field(default_factory=GanConfig)
    run: RunConfig = Field(default_factory=RunConfig)
    source_path: Optional[str] = Field(default=None, exclude=True, description="the YAML file it came from")

    @model_validator(mode="after")
    def _scales(self) -> TrainConfig:
        m, d = self.model.scale, self.data.scale
        if m not in (1, d):
            raise ValueError(f"model.scale {m} must be 1 (same-size network) or equal data.scale {d}")
        return self


def _format_errors(exc: ValidationError, where: str) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err.get("loc", ())) or "(top level)"
        if err.get("type") == "extra_forbidden":
            parts.append(f"unknown key '{loc}'")
        else:
            msg = err.get("msg", "invalid").removeprefix("Value error, ")
            parts.append(f"'{loc}': {msg}")
    return (
        f"{where}: invalid training config: " + "; ".join(parts) + " (fix the YAML; see configs/*.yaml for examples)."
    )


def config_from_dict(data: Any, *, source: str = "<config>") -> TrainConfig:
    """Validate a plain dict into a :class:`TrainConfig` (errors name the key and ``source``)."""
    if not isinstance(data, dict):
        raise AstroSRError(f"{source}: a training config must be a YAML mapping, got {type(data).__name__}.")
    try:
        cfg = TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise AstroSRError(_format_errors(exc, source)) from None
    cfg.source_path = source
    return cfg


def load_config(path: Union[str, os.PathLike]) -> TrainConfig:
    """Read and validate a training config YAML file (``yaml.safe_load``; unknown keys rejected).

    Raises
    ------
    AstroSRError
        Missing/unreadable file, YAML syntax error, unknown key or bad value (named).
    """
    import yaml

    p = Path(path)
    if not p.is_file():
        raise AstroSRError(f"{p}: training config not found; check the path.")
    try:
        size = p.stat().st_size
        if size > MAX_YAML_BYTES:
            raise AstroSRError(f"{p}: is {size:,} bytes; a training config is at most {MAX_YAML_BYTES:,} bytes.")
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AstroSRError(f"{p}: cannot read config ({exc}).") from None
    # nesting is bounded before the parser recurses into it (flow-style brackets or indentation)
    if (
        max((len(line) - len(line.lstrip(" ")) for line in text.splitlines()), default=0) > 400
        or max(text.count("["), text.count("{")) > 2000
    ):
        raise AstroSRError(f"{p}: nested too deeply or too many brackets for a training config; fix the YAML.")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise AstroSRError(f"{p}: not valid YAML ({str(exc).splitlines()[0]}).") from None
    except (RecursionError, ValueError, OverflowError) as exc:  # deep nesting; a 5,000-digit integer
        raise AstroSRError(
            f"{p}: not a usable YAML config ({type(exc).__name__}: "
            f"{(str(exc).splitlines() or [''])[0][:100]}); fix the YAML."
        ) from None
    if _depth(data, 12) > 12:
        raise AstroSRError(f"{p}: nested deeper than a training config can be (12 levels); fix the YAML.")
    return config_from_dict(data, source=str(p))


def save_config(config: TrainConfig, path: Union[str, os.PathLike]) -> Path:
    """Write a config back as YAML (the exact run description stored next to checkpoints)."""
    import yaml

    p = Path(path)
    p.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False), encoding="utf-8")
    return p


def resolve_data_root(config: TrainConfig) -> Path:
    """The folder relative data paths refer to.

    Order: ``data.root`` (relative to the config file's folder), ``$ASTROSR_SHARED_DATA``,
    then ``../shared/data`` relative to the current directory and to the repository.
    """
    if config.data.root:
        root = Path(config.data.root).expanduser()
        if not root.is_absolute() and config.source_path and Path(config.source_path).exists():
            root = Path(config.source_path).resolve().parent / root
        return root
    env = os.environ.get("ASTROSR_SHARED_DATA")
    if env:
        return Path(env)
    for cand in (Path.cwd() / ".." / "shared" / "data", Path(__file__).resolve().parents[3] / "shared" / "data"):
        if cand.is_dir():
            return cand.resolve()
    return Path.cwd() / ".." / "shared" / "data"

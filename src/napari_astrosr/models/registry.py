"""Name -> network registry.

Every network is built by name and preset::

    build_model("restormer", preset="small", scale=2)

Two kinds of network:

- ``upsamples=True`` (``fisr``): ``forward(x, flux_map)`` maps a (B,1,H,W) low-resolution
  input and its flux map on the same grid to (B,1,sH,sW).
- ``upsamples=False`` (``restormer``, ``pix2wgan``, ``pix2wgan-cascade``): ``forward(x)``
  returns the input's size. For super-resolution the pipeline (``restoration.py``)
  first brings the input to the target grid with flux-conserving bicubic upsampling;
  ``scale`` then records the factor the model was trained for.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

from ..exceptions import AstroSRError


@dataclass(frozen=True)
class ModelSpec:
    """What the registry knows about one architecture."""

    name: str
    builder: Callable[..., Any]
    presets: Mapping[str, dict]
    scales: tuple[int, ...]
    needs_flux_map: bool
    description: str
    paper: str
    upsamples: bool = False
    normalization: dict = field(default_factory=lambda: {"kind": "median_std"})
    multiple: int = 8
    default_preset: str = "small"


def _restormer(**kw):
    from .restormer import build

    return build(**kw)


def _fisr(**kw):
    from .fisr import build

    return build(**kw)


def _pix2wgan(**kw):
    from .pix2wgan import build_generator

    return build_generator(**kw)


def _cascade(**kw):
    from .pix2wgan import build_cascade

    return build_cascade(**kw)


class _LazyPresets(Mapping):
    """A network's presets, read from its module on first use.

    The presets live next to the network code, whose module imports torch (1-3 s); the
    registry (names, scales, descriptions) must not, so ``astrosr methods`` and the core
    install (no torch) can list the networks.
    """

    def __init__(self, module: str, *names: str) -> None:
        self._module, self._names = module, names
        self._presets: Optional[dict[str, dict]] = None

    def _get(self) -> dict[str, dict]:
        if self._presets is None:
            mod = importlib.import_module(f"{__package__}.{self._module}")
            self._presets = {k: v for n in self._names for k, v in getattr(mod, n).items()}
        return self._presets

    def __getitem__(self, key: str) -> dict:
        return self._get()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())


def _make_registry() -> dict[str, ModelSpec]:
    return {
        "restormer": ModelSpec(
            name="restormer",
            builder=_restormer,
            presets=_LazyPresets("restormer", "PRESETS"),
            scales=(1, 2, 3, 4),
            needs_flux_map=False,
            upsamples=False,
            multiple=8,
            description="Restormer transformer (MDTA + GDFN), same-size restoration; SR after flux-conserving bicubic",
            paper="Zamir et al. 2022 (CVPR); Park et al. galaxy restoration",
        ),
        "fisr": ModelSpec(
            name="fisr",
            builder=_fisr,
            presets=_LazyPresets("fisr", "PRESETS", "LITE_PRESETS"),
            scales=(2, 4),
            needs_flux_map=True,
            upsamples=True,
            multiple=8,
            description="FISR: PromptIR-style encoder-decoder with flux-guidance controllers; residual on "
            'flux-conserving bicubic, PixelShuffle x2/x4; preset "lite": fast shallow '
            "full-resolution residual CNN with flux-map gating",
            paper="FISR / STAR flux-guided super-resolution (PromptIR backbone, Potlapalli et al. 2023)",
        ),
        "pix2wgan": ModelSpec(
            name="pix2wgan",
            builder=_pix2wgan,
            presets=_LazyPresets("pix2wgan", "PRESETS"),
            scales=(1, 2, 3, 4),
            needs_flux_map=False,
            upsamples=False,
            multiple=64,
            normalization={"kind": "median_std"},
            description="Pix2WGAN U-Net generator (6 down/6 up) trained with a PatchGAN WGAN-GP critic; "
            "same-size translation on the target grid",
            paper="Pix2WGAN survey-to-survey translation (pix2pix U-Net + WGAN-GP)",
        ),
        "pix2wgan-cascade": ModelSpec(
            name="pix2wgan-cascade",
            builder=_cascade,
            presets=_LazyPresets("pix2wgan", "CASCADE_PRESETS"),
            scales=(1, 2, 3, 4),
            needs_flux_map=False,
            upsamples=False,
            multiple=64,
            description="two Pix2WGAN generators in a row (e.g. SDSS-like -> DECaLS-like -> HSC-like)",
            paper="Pix2WGAN cascade",
        ),
    }


_REGISTRY: Optional[dict[str, ModelSpec]] = None


def registry() -> dict[str, ModelSpec]:
    """All registered architectures (built once)."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = _make_registry()
    return _REGISTRY


class _LazyModels(dict):
    """``MODELS`` mapping that fills itself on first access (keeps ``import`` cheap)."""

    def _fill(self) -> None:
        if not dict.__len__(self):
            dict.update(self, registry())

    def __getitem__(self, k):
        self._fill()
        return dict.__getitem__(self, k)

    def __contains__(self, k):
        self._fill()
        return dict.__contains__(self, k)

    def __iter__(self):
        self._fill()
        return dict.__iter__(self)

    def __len__(self):
        self._fill()
        return dict.__len__(self)

    def keys(self):
        self._fill()
        return dict.keys(self)

    def items(self):
        self._fill()
        return dict.items(self)

    def values(self):
        self._fill()
        return dict.values(self)

    def get(self, k, default=None):
        self._fill()
        return dict.get(self, k, default)


MODELS: dict[str, ModelSpec] = _LazyModels()


def get_spec(name: str) -> ModelSpec:
    """The spec of ``name`` or a clear :class:`AstroSRError`."""
    if name not in MODELS:
        raise AstroSRError(f"unknown network {name!r}; known: {', '.join(sorted(MODELS))}.")
    return MODELS[name]


def resolve_config(name: str, *, preset: Optional[str] = "small", **overrides) -> dict:
    """Preset values updated by ``overrides`` (the full constructor config)."""
    spec = get_spec(name)
    if preset is None:
        cfg: dict = {}
    else:
        if preset not in spec.presets:
            raise AstroSRError(f"unknown preset {preset!r} for {name}; known: {', '.join(spec.presets)}.")
        cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in spec.presets[preset].items()}
    cfg.update(overrides)
    return cfg


def build_model(name: str, *, preset: Optional[str] = "small", scale: int = 2, **overrides):
    """Build a network by registry name.

    Parameters
    ----------
    name
        Registry name (``restormer``, ``fisr``, ``pix2wgan``, ``pix2wgan-cascade``).
    preset
        ``"paper"``, ``"small"`` or ``"tiny"``; ``None`` means ``overrides`` is the full config
        (as stored in a checkpoint sidecar).
    scale
        SR factor. FISR builds a PixelShuffle tail for it; same-size networks ignore it.
    overrides
        Constructor arguments replacing the preset's.
    """
    spec = get_spec(name)
    if scale not in spec.scales:
        raise AstroSRError(f"{name} supports scales {spec.scales}, not {scale}.")
    cfg = resolve_config(name, preset=preset, **overrides)
    try:
        return spec.builder(scale=scale, **cfg)
    except TypeError as exc:
        raise AstroSRError(f"bad configuration for {name}: {exc}") from exc


def model_cost(name: str, *, preset: Optional[str] = "small", scale: int = 2, size: int = 64, **overrides) -> dict:
    """Parameter count and forward FLOPs on a ``size x size`` single-image input.

    Counted with :class:`torch.utils.flop_counter.FlopCounterMode` on the *meta* device
    (shapes only, no arithmetic), so even the paper presets cost milliseconds. ``size`` is
    the network's input size: the LR grid for FISR, the target grid for same-size nets.
    FLOPs count a multiply-add as 2 (FlopCounterMode's convention).
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    spec = get_spec(name)
    with torch.device("meta"):
        model = build_model(name, preset=preset, scale=scale, **overrides)
        x = torch.empty(1, 1, size, size)
        args = (x, torch.empty(1, 1, size, size)) if spec.needs_flux_map else (x,)
    params = sum(p.numel() for p in model.parameters())
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(*args)
    return {"params": int(params), "flops": int(counter.get_total_flops()), "flops_input": f"{size}x{size}"}

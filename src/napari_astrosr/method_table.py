"""The method table: every restoration method's name, kind, flux statement, defaults and listing.

Pure Python (no numpy, pydantic or torch at import), so ``astrosr methods`` and the Restore
widget's method list cost an interpreter start, not the science stack. ``METHODS`` is the one
registry; :mod:`napari_astrosr.restore_options` and :mod:`napari_astrosr.restoration`
re-export it and :func:`list_methods` under their old names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

__all__ = ["CLASSICAL", "METHODS", "NETWORKS", "MethodInfo", "list_methods"]


@dataclass(frozen=True)
class MethodInfo:
    """One restoration method: what it is, what it does to flux, and its defaults."""

    name: str
    kind: Literal["classical", "network"]
    flux: str
    description: str = ""
    needs_psf: bool = False
    projects: bool = False  # forward-model projection on by default
    keeps_sky: bool = False  # sky gate on by default


_GAN_FLUX = (
    "GAN translation: flux not constrained by the network (measured to move flux out of faint "
    "sources); the default projection onto the forward model restores it (give --psf)"
)
_NET_FLUX = (
    "network output projected by default onto the forward model (blur + block sum reproduce the "
    "input: exactly on clean data, above the noise on noisy data); --no-projection: approximate"
)

# the one registry: names, kinds, flux statements and defaults (network descriptions/scales come from
# models.registry through list_methods)
METHODS: dict[str, MethodInfo] = {
    m.name: m
    for m in (
        MethodInfo(
            "bicubic",
            "classical",
            "conserved exactly: block_sum(output) == input (every pixel, so every source)",
            "flux-conserving bicubic (Keys cubic convolution) upsampling",
        ),
        MethodInfo(
            "lanczos",
            "classical",
            "conserved exactly: block_sum(output) == input (every pixel, so every source)",
            "flux-conserving Lanczos-3 upsampling",
        ),
        MethodInfo(
            "richardson-lucy",
            "classical",
            "total conserved exactly (global rescale); per-source flux approximately",
            "Richardson-Lucy deconvolution (skimage) with --psf, then flux-conserving bicubic",
            needs_psf=True,
        ),
        MethodInfo(
            "backprojection",
            "classical",
            "blur + block-sum of the output reproduce every input pixel (to CG tolerance; above the noise on "
            "noisy data)",
            "flux-conserving bicubic + projection through the PSF forward model (--psf)",
            needs_psf=True,
            projects=True,
        ),
        MethodInfo("fisr", "network", _NET_FLUX, projects=True, keeps_sky=True),
        MethodInfo(
            "restormer",
            "network",
            _NET_FLUX
            + "; at --scale 1 (same-size deconvolution, give --psf) the PSF blur of the output reproduces the "
            "input (network alone: total within 1% on a held-out HST crop)",
            projects=True,
            keeps_sky=True,
        ),
        MethodInfo("pix2wgan", "network", _GAN_FLUX, projects=True, keeps_sky=True),
        MethodInfo("pix2wgan-cascade", "network", _GAN_FLUX, projects=True, keeps_sky=True),
    )
}
CLASSICAL: tuple[str, ...] = tuple(n for n, m in METHODS.items() if m.kind == "classical")
NETWORKS: tuple[str, ...] = tuple(n for n, m in METHODS.items() if m.kind == "network")


def _available_devices() -> list[str]:
    try:
        import torch
    except ImportError:  # pragma: no cover
        return ["cpu"]
    devs = ["cpu"]
    if torch.cuda.is_available():
        devs.append("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        devs.append("mps")
    return devs


_COST_CACHE: dict = {}


def _cost(arch: str, preset: Optional[str], scale: int, config: Optional[dict] = None) -> dict:
    from .models.registry import model_cost

    key = (arch, preset, scale, repr(sorted((config or {}).items())))
    if key not in _COST_CACHE:
        if config is not None:
            _COST_CACHE[key] = model_cost(arch, preset=None, scale=scale, **config)
        else:
            _COST_CACHE[key] = model_cost(arch, preset=preset, scale=scale)
    return _COST_CACHE[key]


def _listed_devices() -> list[str]:
    """Devices for ``list_methods`` without importing torch (~1-2 s) when it is not loaded yet.

    With torch imported, :func:`_available_devices` asks it. Otherwise: none without torch
    (the networks need ``napari-astrosr[ml]``); cpu, plus cuda when the installed torch is a
    CUDA/ROCm build (its ``torch/version.py``) and an NVIDIA/AMD driver is loaded, plus mps on
    Apple silicon. ``restore(device=...)`` still checks the device for real.
    """
    import sys

    if "torch" in sys.modules:
        return _available_devices()
    from ._extras import installed

    if not installed("torch"):
        return []
    import importlib.util
    import os
    import platform
    import re

    devs = ["cpu"]
    try:
        spec = importlib.util.find_spec("torch")
        text = Path(spec.submodule_search_locations[0], "version.py").read_text()
    except (OSError, TypeError, IndexError, AttributeError):
        text = ""
    cuda_build = re.search(r"^(cuda|hip)\b[^=]*=\s*['\"]", text, re.M) is not None
    if cuda_build and (os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/kfd")):
        devs.append("cuda")
    if sys.platform == "darwin" and platform.machine() == "arm64":
        devs.append("mps")
    return devs


def _stored_cost(meta: dict) -> Optional[dict]:
    """The ``"cost"`` a sidecar stores (``scripts/annotate_costs.py``, or written at save time), if valid."""
    c = meta.get("cost")
    if isinstance(c, dict) and isinstance(c.get("params"), int) and isinstance(c.get("flops"), int):
        return {"params": c["params"], "flops": c["flops"], "flops_input": str(c.get("flops_input", "64x64"))}
    return None


def list_methods(*, costs: bool = True, presets: bool = False) -> list[dict]:
    """Every method: name, kind, scales, params, flops, devices, bundled weights, description, flux.

    For networks, ``params``/``flops`` are those of the bundled x2 checkpoint (or of the
    default ``small`` preset without one), read from the ``"cost"`` its sidecar stores, so
    listing needs neither torch nor a network build (milliseconds); only a network without
    a stored cost is built to count them (needs torch; without it they stay None). With
    ``presets=True`` an entry ``presets`` lists every preset's cost (built and counted: a few
    seconds; ``astrosr methods --presets``). FLOPs are counted by
    ``torch.utils.flop_counter.FlopCounterMode`` for one 64x64 network input (the LR grid
    for FISR, the target grid for the same-size networks), multiply-add = 2. ``devices`` is
    empty when torch is not installed (the networks need ``napari-astrosr[ml]``).
    """
    out: list[dict] = []
    for name in CLASSICAL:
        info = dict(description=METHODS[name].description, flux=METHODS[name].flux)
        out.append(
            dict(
                name=name,
                kind="classical",
                scales=[1, 2, 3, 4, 8] if name == "richardson-lucy" else [2, 3, 4, 8],
                params=0,
                flops=None,
                devices=["cpu"],
                bundled=[],
                needs_psf=name in ("richardson-lucy", "backprojection"),
                **info,
            )
        )
    from ._extras import installed, require
    from .models.checkpoints import bundled_checkpoint, read_sidecar
    from .models.registry import MODELS

    devices = _listed_devices()
    can_count = installed("torch")
    if costs and presets:
        require("torch", extra="ml", what="counting every preset's parameters and FLOPs (--presets)")
    for name in NETWORKS:
        info = dict(flux=METHODS[name].flux)
        spec = MODELS[name]
        bundled = [s for s in spec.scales if bundled_checkpoint(name, s) is not None]
        entry: dict[str, Any] = dict(
            name=name,
            kind="network",
            scales=list(spec.scales),
            params=None,
            flops=None,
            flops_input="64x64",
            devices=devices,
            bundled=bundled,
            needs_psf=False,
            description=spec.description,
            paper=spec.paper,
            preset=spec.default_preset,
            **info,
        )
        if costs:
            ref = bundled_checkpoint(name, 2 if 2 in bundled else (bundled[0] if bundled else 2))
            c: Optional[dict] = None
            if ref is not None and bundled:
                meta = read_sidecar(ref)
                entry["preset"] = meta.get("preset")
                c = _stored_cost(meta)
                if c is None and can_count:
                    c = _cost(name, meta.get("preset"), int(meta["scale"]), meta["config"])
            elif can_count:
                c = _cost(name, spec.default_preset, 2)
            if c is not None:
                entry.update(params=c["params"], flops=c["flops"], flops_input=c["flops_input"])
        if costs and presets:
            entry["presets"] = {
                p: {k: v for k, v in _cost(name, p, 2).items() if k != "flops_input"} for p in spec.presets
            }
        out.append(entry)
    return out

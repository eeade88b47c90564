"""Checkpoints: a ``.pt`` file of state dicts plus a ``.json`` sidecar.

``model.pt``  -> ``{"model": state_dict, "optimizer": state_dict (optional), "step": int}``
loaded with ``torch.load(..., weights_only=True)`` (tensors and plain containers only;
never arbitrary pickles).

``model.json`` -> ``{"format": "napari-astrosr-checkpoint", "format_version": 1,
"architecture": "fisr", "preset": "small", "config": {...full constructor config...},
"scale": 2, "normalization": {"kind": "median_std"}, "package_version": "0.1.0",
"step": 1234, "training": {...}, "sha256": "<of the .pt>"}``

The sidecar is what makes a checkpoint self-describing: the network is rebuilt from
``architecture`` + ``config``, the pipeline normalises inputs the way ``normalization``
says, and a checkpoint of another architecture or scale is refused with a clear message.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any, Optional, Union

from .._version import __version__
from ..core.atomic import atomic_output
from ..exceptions import AstroSRError

FORMAT = "napari-astrosr-checkpoint"
#: Budget of a network rebuilt from a sidecar or a training config, checked on the meta device
#: (shapes only, nothing allocated) before it is built for real: the paper presets need 26 M
#: parameters at most; activations are counted for one ``BUDGET_INPUT`` x ``BUDGET_INPUT`` input.
MAX_PARAMS = 200_000_000
MAX_ACTIVATION_BYTES = 16 * 2**30
BUDGET_INPUT = 256
MAX_SIDECAR_BYTES = 1_000_000
FORMAT_VERSION = 1
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"

PathLike = Union[str, "os.PathLike[str]"]


def sidecar_path(path: PathLike) -> Path:
    """``model.pt`` -> ``model.json``."""
    return Path(path).with_suffix(".json")


def file_sha256(path: PathLike) -> str:
    """SHA-256 of a file (the checkpoint hash recorded in output provenance)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _atomic_write(path: Path, write) -> None:
    with atomic_output(path) as tmp:
        write(tmp)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return obj.item()
    return obj


def save_checkpoint(
    path: PathLike,
    model,
    *,
    name: str,
    preset: Optional[str],
    scale: int,
    config: dict,
    normalization: dict,
    optimizer=None,
    step: int = 0,
    extra: Optional[dict] = None,
    state_dicts: Optional[dict] = None,
    cost: Optional[dict] = None,
    half: bool = False,
) -> Path:
    """Write ``path`` (.pt, state dicts only) and its ``.json`` sidecar, both atomically.

    Parameters
    ----------
    path
        Output ``.pt`` file; the sidecar is the same name with ``.json``.
    model
        The network (its ``state_dict()`` is saved).
    name, preset, scale, config
        Registry name, preset it started from, SR factor, and the *full* constructor
        config (``models.registry.resolve_config``) so :func:`load_checkpoint` can rebuild it.
    normalization
        How inputs were normalised in training, e.g. ``{"kind": "median_std"}``.
    optimizer
        Optional optimizer whose state is saved for resuming.
    step
        Training step.
    extra
        Training information for the sidecar (data, losses, metrics, time).
    state_dicts
        More state dicts to store (e.g. ``{"critic": critic.state_dict()}``).
    cost
        ``models.registry.model_cost`` of the network (``{"params", "flops", "flops_input"}``),
        stored as the sidecar's top-level ``cost`` so readers need not build the network.
    half
        Store floating-point weights as float16 (half the file; loaders cast back to the
        model's dtype). For shipping only: resuming wants full precision.
    """
    import torch

    from ..models.registry import get_spec

    path = Path(path)
    if path.suffix != ".pt":
        raise AstroSRError(f"{path}: checkpoint files must end in .pt.")
    if not path.parent.exists():
        raise AstroSRError(f"{path.parent}: folder does not exist.")
    get_spec(name)
    if "kind" not in normalization:
        raise AstroSRError("normalization must be a dict with a 'kind' (e.g. {'kind': 'median_std'}).")
    # CPU copies: a checkpoint written on a GPU loads anywhere
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if half:
        sd = {k: (v.half() if v.is_floating_point() else v) for k, v in sd.items()}
    payload: dict[str, Any] = {"model": sd, "step": int(step)}
    if optimizer is not None:
        payload["optimizer"] = optimizer.state_dict()
    for key, sd in (state_dicts or {}).items():
        payload[key] = sd
    _atomic_write(path, lambda tmp: torch.save(payload, tmp))
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": name,
        "preset": preset,
        "config": _jsonable(config),
        "scale": int(scale),
        "normalization": _jsonable(normalization),
        "package_version": __version__,
        "step": int(step),
        "training": _jsonable(extra or {}),
        "sha256": file_sha256(path),
    }
    if cost is not None:
        meta["cost"] = _jsonable(cost)
    side = sidecar_path(path)
    _atomic_write(side, lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2, sort_keys=True)))
    return path


def check_model_budget(arch: str, config: dict, *, scale: int, where: str) -> dict:
    """Refuse a network too large to build, before allocating anything.

    The constructor arguments are bounded first (:func:`config.check_model_config`), then the
    network is built on torch's *meta* device (shapes only) to count its parameters and the
    activations of one forward pass on a ``BUDGET_INPUT`` square input.

    Returns
    -------
    dict
        ``params`` and ``activation_bytes``.

    Raises
    ------
    AstroSRError
        Out-of-range arguments, or more than ``MAX_PARAMS`` parameters or
        ``MAX_ACTIVATION_BYTES`` of activations (the numbers are in the message).
    """
    import torch

    from ..config import check_model_config
    from ..models.registry import build_model, get_spec

    check_model_config(config, where=where)
    spec = get_spec(arch)
    total = [0]

    def count(_module, _inputs, output):
        for t in output if isinstance(output, (tuple, list)) else (output,):
            if isinstance(t, torch.Tensor):
                total[0] += t.numel() * t.element_size()

    try:
        with torch.device("meta"):
            try:
                model = build_model(arch, preset=None, scale=scale, **config)
            except AstroSRError as exc:
                raise AstroSRError(f"{where}: {exc}") from None
        params = sum(p.numel() for p in model.parameters())
        if params > MAX_PARAMS:
            raise AstroSRError(
                f"{where}: this {arch} config has {params:,} parameters ({params * 4 / 2**30:.1f} GiB); "
                f"the limit is {MAX_PARAMS:,}. Use a smaller preset or dims."
            )
        hooks = [m.register_forward_hook(count) for m in model.modules() if not list(m.children())]
        n = BUDGET_INPUT // (scale if spec.needs_flux_map else 1)
        with torch.device("meta"), torch.no_grad():
            x = torch.empty(1, 1, n, n)
            model.eval()
            model(x, torch.empty(1, 1, n, n)) if spec.needs_flux_map else model(x)
        for h in hooks:
            h.remove()
    except AstroSRError:
        raise
    except Exception as exc:  # a config the constructor or the forward pass cannot make sense of
        first = (str(exc).strip().splitlines() or [""])[0][:120]
        raise AstroSRError(
            f"{where}: config cannot build a working {arch} ({type(exc).__name__}: {first}); fix the config."
        ) from None
    if total[0] > MAX_ACTIVATION_BYTES:
        raise AstroSRError(
            f"{where}: this {arch} config needs about {total[0] / 2**30:.1f} GiB of activations for a "
            f"{BUDGET_INPUT}x{BUDGET_INPUT} input (limit {MAX_ACTIVATION_BYTES / 2**30:.0f} GiB); "
            "use a smaller preset or dims."
        )
    return {"params": int(params), "activation_bytes": int(total[0])}


def read_sidecar(path: PathLike) -> dict:
    """The sidecar of checkpoint ``path``, validated; clear errors when missing or wrong."""
    side = sidecar_path(path)
    if not side.exists():
        raise AstroSRError(
            f"{path}: no sidecar {side.name} next to it; a checkpoint needs its .json (written by astrosr train)."
        )
    try:
        size = side.stat().st_size
        if size > MAX_SIDECAR_BYTES:
            raise AstroSRError(
                f"{side}: is {size:,} bytes; a checkpoint sidecar is at most {MAX_SIDECAR_BYTES:,}. "
                "Use the .json written by astrosr train."
            )
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: bad JSON, 5,000-digit integers, bad UTF-8
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        raise AstroSRError(
            f"{side}: not a valid checkpoint sidecar ({first}); use the .json written by astrosr train."
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise AstroSRError(f"{side}: not a napari-astrosr checkpoint sidecar (format field missing).")
    fv = meta.get("format_version")
    if isinstance(fv, bool) or not isinstance(fv, int) or fv < 1:
        raise AstroSRError(
            f"{side}: 'format_version' must be a positive integer, got {str(fv)[:40]!r}; "
            "use the .json written by astrosr train."
        )
    if fv > FORMAT_VERSION:
        raise AstroSRError(
            f"{side}: checkpoint format version {fv} is newer than this napari-astrosr "
            f"({__version__}) reads (up to {FORMAT_VERSION}); upgrade napari-astrosr."
        )
    for key in ("architecture", "config", "scale", "normalization"):
        if key not in meta:
            raise AstroSRError(f"{side}: sidecar lacks {key!r}.")
    # types too: a hand-edited sidecar must fail here, not as a TypeError deep in build_model
    scale = meta["scale"]
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise AstroSRError(f"{side}: 'scale' must be a positive integer, got {scale!r}.")
    if not isinstance(meta["architecture"], str):
        raise AstroSRError(f"{side}: 'architecture' must be a name, got {meta['architecture']!r}.")
    if not isinstance(meta["config"], dict):
        raise AstroSRError(f"{side}: 'config' must be a mapping of constructor arguments.")
    if not isinstance(meta["normalization"], dict) or "kind" not in meta["normalization"]:
        raise AstroSRError(f"{side}: 'normalization' must be a mapping with a 'kind'.")
    pv = str(meta.get("package_version", "0"))
    if pv.split(".")[0] != __version__.split(".")[0]:
        warnings.warn(f"{path}: written by napari-astrosr {pv}, running {__version__}", stacklevel=2)
    return meta


def load_checkpoint(
    path: PathLike,
    *,
    device: str = "cpu",
    expect_name: Optional[str] = None,
    expect_scale: Optional[int] = None,
    with_payload: bool = False,
):
    """Rebuild the network of a checkpoint and load its weights.

    Parameters
    ----------
    path
        The ``.pt`` file (its ``.json`` sidecar must sit next to it).
    device
        Where to put the model.
    expect_name, expect_scale
        Refuse (``AstroSRError``) a checkpoint of another architecture or SR factor.
    with_payload
        Also return the raw payload (optimizer state, step) for resuming training.

    Returns
    -------
    (model, meta) or (model, meta, payload)
        The model in eval mode; ``meta`` is the sidecar plus ``"path"``.
    """
    import torch

    from ..models.registry import MODELS, build_model

    path = Path(path)
    if not path.is_file():
        raise AstroSRError(f"{path}: checkpoint file not found.")
    meta = read_sidecar(path)
    arch, scale = meta["architecture"], int(meta["scale"])
    if arch not in MODELS:
        raise AstroSRError(
            f"{path}: architecture {arch!r} is unknown to this version (known: {', '.join(sorted(MODELS))})."
        )
    if expect_name is not None and arch != expect_name:
        raise AstroSRError(
            f"{path}: is a {arch} checkpoint, not {expect_name}; use --method {arch} or another --model."
        )
    if expect_scale is not None and scale != int(expect_scale):
        raise AstroSRError(
            f"{path}: was trained for x{scale}, not x{expect_scale}; use --scale {scale} "
            "or a checkpoint trained for that scale."
        )
    check_model_budget(arch, meta["config"], scale=scale, where=str(sidecar_path(path)))
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt/truncated/not a torch file/unsafe pickle
        first = (str(exc).strip().splitlines() or [""])[0][:120]  # EOFError has no message
        raise AstroSRError(
            f"{path}: could not be read as a weights-only torch checkpoint ({type(exc).__name__}: {first})."
        ) from exc
    if not isinstance(payload, dict) or not isinstance(payload.get("model"), dict):
        raise AstroSRError(f"{path}: does not contain a 'model' state dict.")
    try:
        model = build_model(arch, preset=None, scale=scale, **meta["config"])
    except AstroSRError as exc:
        raise AstroSRError(f"{path}: its config cannot build {arch}: {exc}") from exc
    try:
        model.load_state_dict(payload["model"], strict=True)
    except RuntimeError as exc:
        raise AstroSRError(
            f"{path}: weights do not fit the {arch} config in its sidecar ({str(exc).splitlines()[0][:160]})."
        ) from exc
    model.to(device).eval()
    meta = dict(meta, path=str(path), sha256=meta.get("sha256") or file_sha256(path))
    return (model, meta, payload) if with_payload else (model, meta)


def bundled_checkpoint(method: str, scale: int) -> Optional[Path]:
    """The checkpoint shipped in ``napari_astrosr/weights`` for ``method`` at ``scale``, or None.

    Looks for ``<method>_x<scale>.pt`` first, then any ``<method>_x<scale>_*.pt`` (sorted,
    first wins), each needing its ``.json`` sidecar.
    """
    if not WEIGHTS_DIR.is_dir():
        return None
    exact = WEIGHTS_DIR / f"{method}_x{scale}.pt"
    cands = [exact] if exact.exists() else sorted(WEIGHTS_DIR.glob(f"{method}_x{scale}_*.pt"))
    for c in cands:
        if sidecar_path(c).exists():
            return c
    return None

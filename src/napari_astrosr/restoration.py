"""The single restoration entry point for the CLI, the widgets, batch and the demo.

``restore_job(data, method=..., scale=...)`` is a long job (yields
:class:`~napari_astrosr.progress.Progress`, returns :class:`RestoreResult`);
``restore(...)`` runs it synchronously; ``list_methods()`` describes every method.

Methods and what they do to flux (also in ``list_methods()[i]["flux"]``):

==================  =========================================================================
bicubic, lanczos    flux-conserving interpolation: each input pixel's flux = sum of its block
richardson-lucy     RL deconvolution (needs ``psf``) then flux-conserving bicubic; total kept
backprojection      bicubic + flux-exact projection through blur + block-sum (needs ``psf``)
fisr                network: residual on flux-conserving bicubic, flux-guided; total approx.
restormer           network on the bicubic-upsampled image (same-size); total approximately
pix2wgan(-cascade)  GAN generator(s) on the bicubic-upsampled image; flux not constrained
==================  =========================================================================

``flux_exact=True`` (with ``psf``: the blur the input carries, on the output grid) projects
any method's output onto the forward model (``core.projection.project_flux_exact``) so that
blur + block-sum reproduce the input; it gains on clean data and fits the noise on noisy
data (DESIGN.md section 8).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generator, Optional, Union

import numpy as np

from ._version import __version__
from .exceptions import AstroSRError
from .progress import NEVER, Progress, run

CLASSICAL: dict[str, dict[str, Any]] = {
    "bicubic": dict(
        description="flux-conserving bicubic (Keys cubic convolution) upsampling",
        flux="conserved exactly: block_sum(output) == input (every pixel, so every source)"),
    "lanczos": dict(
        description="flux-conserving Lanczos-3 upsampling",
        flux="conserved exactly: block_sum(output) == input (every pixel, so every source)"),
    "richardson-lucy": dict(
        description="Richardson-Lucy deconvolution (skimage) with --psf, then flux-conserving bicubic",
        flux="total conserved exactly (global rescale); per-source flux approximately"),
    "backprojection": dict(
        description="flux-conserving bicubic + flux-exact projection through the PSF forward model (--psf)",
        flux="blur + block-sum of the output reproduce every input pixel (to CG tolerance)"),
}
# measured on held-out HST fields degraded with the HSC PSF: pooled median |rel. flux error| 0.64 vs the
# input's 0.48 (docs/results_quality.md)
_GAN_FLUX = ("GAN translation: flux not constrained (measured to move flux out of faint sources); give the "
             "survey PSF with --flux-exact --flux-noise auto to enforce the forward model")
NETWORKS: dict[str, dict[str, Any]] = {
    "fisr": dict(flux="residual on a flux-conserving base; total approximately kept; use --flux-exact for exact"),
    "restormer": dict(flux="runs on the flux-conserving bicubic image; total approximately kept; --flux-exact for exact"),
    "pix2wgan": dict(flux=_GAN_FLUX),
    "pix2wgan-cascade": dict(flux=_GAN_FLUX),
}
METHODS = tuple(CLASSICAL) + tuple(NETWORKS)


@dataclass
class RestoreResult:
    """What a restoration returns (``data`` in the input's flux units per output pixel)."""

    data: np.ndarray
    wcs: Any = None
    header: Any = None
    method: str = ""
    scale: int = 1
    device: str = "cpu"
    params: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    checkpoint_hash: Optional[str] = None

    @property
    def provenance(self) -> dict:
        """Keyword arguments for ``core.fits_io.write_fits(provenance=...)``."""
        return {"method": self.method, "parameters": self.params, "checkpoint_hash": self.checkpoint_hash}


def pick_device(device: str = "auto") -> str:
    """``auto`` -> cuda, then mps, then cpu; an explicit unavailable device is an error."""
    from .training.inference import pick_device as _pick

    return _pick(device)


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


def list_methods(*, costs: bool = True, presets: bool = False) -> list[dict]:
    """Every method: name, kind, scales, params, flops, devices, bundled weights, description, flux.

    For networks, ``params``/``flops`` are those of the bundled x2 checkpoint (or of the
    default ``small`` preset without one); with ``presets=True`` an entry ``presets`` lists
    every preset's cost (a few seconds: ``astrosr methods`` shows them). FLOPs are
    counted by ``torch.utils.flop_counter.FlopCounterMode`` for one 64x64 network input
    (the LR grid for FISR, the target grid for the same-size networks), multiply-add = 2.
    """
    out: list[dict] = []
    for name, info in CLASSICAL.items():
        out.append(dict(name=name, kind="classical", scales=[1, 2, 3, 4, 8] if name == "richardson-lucy"
                         else [2, 3, 4, 8], params=0, flops=None, devices=["cpu"], bundled=[],
                         needs_psf=name in ("richardson-lucy", "backprojection"), **info))
    from .models.registry import MODELS
    from .training.checkpoints import bundled_checkpoint, read_sidecar

    devices = _available_devices()
    for name, info in NETWORKS.items():
        spec = MODELS[name]
        bundled = [s for s in spec.scales if bundled_checkpoint(name, s) is not None]
        entry: dict[str, Any] = dict(name=name, kind="network", scales=list(spec.scales), params=None,
                                     flops=None, flops_input="64x64", devices=devices, bundled=bundled,
                                     needs_psf=False, description=spec.description, paper=spec.paper,
                                     preset=spec.default_preset, **info)
        if costs:
            ref = bundled_checkpoint(name, 2 if 2 in bundled else (bundled[0] if bundled else 2))
            if ref is not None and bundled:
                meta = read_sidecar(ref)
                c = _cost(name, meta.get("preset"), int(meta["scale"]), meta["config"])
                entry["preset"] = meta.get("preset")
            else:
                c = _cost(name, spec.default_preset, 2)
            entry.update(params=c["params"], flops=c["flops"])
        if costs and presets:
            entry["presets"] = {p: {k: v for k, v in _cost(name, p, 2).items() if k != "flops_input"}
                                for p in spec.presets}
        out.append(entry)
    return out


def _psf_label(psf: Any) -> Optional[str]:
    if psf is None:
        return None
    if isinstance(psf, np.ndarray):
        return f"array{psf.shape}"
    return str(psf)


def _resolve_model(method: str, scale: int, model: Any, device: str):
    """(module, meta) from a checkpoint path, a bundled checkpoint, or a module passed in."""
    from .training.checkpoints import bundled_checkpoint, load_checkpoint

    if model is not None and not isinstance(model, (str, Path)):
        # an in-memory module (training validation, tests): normalisation from its attribute
        meta = {"architecture": method, "scale": scale, "sha256": None, "preset": None,
                "normalization": getattr(model, "normalization", {"kind": "median_std"}), "path": None}
        return model, meta
    path = Path(model) if model is not None else bundled_checkpoint(method, scale)
    if path is None:
        raise AstroSRError(f"no bundled weights for {method} x{scale}; train one with `astrosr train CONFIG.yaml` "
                           f"(architecture {method}, scale {scale}) or pass --model CKPT.pt.")
    return load_checkpoint(path, device="cpu", expect_name=method, expect_scale=scale)


def check_flux_noise(flux_noise, *, flux_exact: bool, method: str) -> Union[None, float, str]:
    """Validate ``--flux-noise`` against the other options: None, ``"auto"`` or a sigma >= 0.

    Raises AstroSRError for a bad value, or when there is no projection to make noise-aware
    (it needs ``flux_exact`` or ``method="backprojection"``). ``"auto"`` is not measured here.
    """
    if flux_noise is None:
        return None
    if isinstance(flux_noise, str):
        if flux_noise.strip().lower() == "auto":
            flux_noise = "auto"
        else:
            try:
                flux_noise = float(flux_noise)
            except ValueError:
                raise AstroSRError(f"--flux-noise {flux_noise!r}: give the input's noise sigma per pixel or 'auto'.") from None
    if flux_noise != "auto":
        v = float(flux_noise)
        if not np.isfinite(v) or v < 0:
            raise AstroSRError(f"--flux-noise {flux_noise!r}: must be a finite number >= 0 or 'auto'.")
        flux_noise = v
    if not (flux_exact or method == "backprojection"):
        raise AstroSRError("--flux-noise makes the flux-exact projection noise-aware: use it with --flux-exact "
                           "or --method backprojection.")
    return flux_noise


def check_keep_sky(keep_sky, *, method: str) -> Optional[tuple[float, float]]:
    """Validate ``keep_sky`` (see :func:`restore_job`): ``(low, high)`` sigma levels or None."""
    from .core.skygate import parse_keep_sky

    levels = parse_keep_sky(keep_sky)
    if levels is not None and method in CLASSICAL:
        raise AstroSRError(f"--keep-sky applies to the networks (their changes in the sky); {method} is a classical "
                           "method: drop --keep-sky.")
    return levels


def _parse_flux_noise(flux_noise, arr: np.ndarray) -> float:
    """``--flux-noise`` as a number: a sigma (input units per pixel), or ``auto`` measured on ``arr``
    (sep background rms)."""
    v = check_flux_noise(flux_noise, flux_exact=True, method="")
    if v == "auto":
        from .core.projection import estimate_lr_noise

        return estimate_lr_noise(np.nan_to_num(arr))
    return float(v)


def restore_job(
    data: np.ndarray,
    *,
    method: str,
    scale: int = 2,
    model: Union[str, Path, Any, None] = None,
    device: str = "auto",
    tile: Optional[int] = None,
    flux_exact: bool = False,
    psf: Union[str, np.ndarray, None] = None,
    flux_noise: Union[None, float, str] = None,
    keep_sky: Union[None, bool, str, tuple] = None,
    sky_rms: Optional[float] = None,
    wcs: Any = None,
    header: Any = None,
    stop=NEVER,
    overlap: Optional[int] = None,
    precision: str = "auto",
    threads: Optional[int] = None,
    iterations: Optional[int] = None,
    flux_thresh: float = 1.5,
) -> Generator[Progress, None, RestoreResult]:
    """Restore (and enlarge by ``scale``) a 2-D image with ``method``.

    Parameters
    ----------
    data
        2-D image in flux per pixel; NaN/blank pixels allowed (they come back as NaN).
    method
        One of ``bicubic, lanczos, richardson-lucy, backprojection, fisr, restormer,
        pix2wgan, pix2wgan-cascade``.
    scale
        Integer enlargement. Networks must have been trained for it.
    model
        Checkpoint ``.pt`` (with its ``.json``); default: the bundled one for (method, scale).
        An in-memory ``torch.nn.Module`` is accepted too (its ``normalization`` attribute,
        default median/std).
    device
        ``auto`` (cuda, mps, cpu), ``cpu``, ``cuda``, ``mps``; the one used is in the result.
    tile
        Tile side in *input* pixels for networks (default: whole image up to 384 px, else 256).
    flux_exact
        Project the output through the forward model (needs ``psf``; pass ``"none"`` for
        an input with no blur beyond its pixels).
    psf
        The blur the input carries, on the *output* grid: ``gaussian:1.0``, ``airy:2``,
        ``PSF.fits``, an array, or ``"none"``. Needed by richardson-lucy, backprojection
        and ``flux_exact``.
    flux_noise
        Make the projection (``flux_exact`` or ``backprojection``) noise-aware: the input's
        per-pixel noise sigma, or ``"auto"`` (sep's background rms of the input). The output then
        reproduces the input only where the residual rises above that noise (a Wiener filter of
        the residual, :func:`core.projection.noise_aware_target`); None (default): exactly.
    keep_sky
        Networks only: keep the input's sky. The network's change is applied only where the
        input's local S/N exceeds LOW sigma, fully above HIGH (True: 2, 5; or ``"LOW,HIGH"`` / a
        pair); below, the output is the input's flux-conserving bicubic upsampling
        (:func:`core.skygate.sky_gate`: the networks skew the sky's distribution, which biases
        mode-based backgrounds and so bright sources' aperture fluxes). Applied before any projection.
    sky_rms
        The noise rms of the upsampled input that ``keep_sky`` measures S/N against (default: sep's
        global rms of it; the tiled batch measures it once per image so that every tile gates alike).
    wcs, header
        The input's WCS/header: the result carries the scaled WCS and a header with provenance.
    stop
        Stop flag (``is_set()``); a stop raises :class:`~napari_astrosr.exceptions.StoppedError`.
    overlap, precision, threads
        Tiling overlap (input pixels), GPU autocast precision, CPU thread count.
    iterations
        Richardson-Lucy iterations (default 30) / projection CG iterations (default 50).
    flux_thresh
        Detection threshold (sigma) of FISR's flux map.
    """
    from .training.inference import fill_invalid, validate_image

    t_start = time.perf_counter()
    if method not in METHODS:
        raise AstroSRError(f"--method {method!r}: unknown; choose one of {', '.join(METHODS)}.")
    if int(scale) != scale or scale < 1:
        raise AstroSRError(f"--scale {scale}: must be a positive integer.")
    scale = int(scale)
    arr = validate_image(data, what="input image")
    psf_given = psf is not None
    psf_label = _psf_label(psf)
    kernel = None
    if psf_given:
        from .core.psf import parse_psf

        kernel = parse_psf(psf)
    if flux_exact and not psf_given:
        raise AstroSRError("--flux-exact needs --psf SPEC (the blur the input carries, in output pixels, "
                           "e.g. gaussian:1.0); use --psf none for an unblurred input.")
    if flux_exact and kernel is None and scale == 1:
        raise AstroSRError("--flux-exact at --scale 1 with no PSF would just return the input; give --psf.")
    flux_noise = check_flux_noise(flux_noise, flux_exact=flux_exact, method=method)
    noise_sigma = _parse_flux_noise(flux_noise, arr) if flux_noise is not None else None
    sky_levels = check_keep_sky(keep_sky, method=method)
    params: dict[str, Any] = {"method": method, "scale": scale, "flux_exact": bool(flux_exact), "psf": psf_label,
                              "version": __version__}
    if noise_sigma is not None:
        params["flux_noise"] = noise_sigma
    if sky_levels is not None:
        params["keep_sky"] = list(sky_levels)
    timings: dict[str, float] = {}
    ckpt_hash = None
    used_device = "cpu"

    if method in CLASSICAL:
        from .core import classical

        yield Progress(0, 1, f"{method} x{scale}")
        if stop.is_set():
            from .exceptions import StoppedError
            raise StoppedError(f"{method} stopped before it started.")
        t0 = time.perf_counter()
        if method in ("bicubic", "lanczos"):
            if scale == 1:
                raise AstroSRError(f"--scale 1 with {method} would return the input unchanged; use 2 or more.")
            out = classical.interpolate(arr, scale=scale, method=method)
        elif method == "richardson-lucy":
            if kernel is None:
                raise AstroSRError("richardson-lucy needs --psf SPEC (the blur the input carries, in output pixels).")
            it = 30 if iterations is None else int(iterations)
            params["iterations"] = it
            out = classical.richardson_lucy(arr, kernel, scale=scale, iterations=it, stop=stop)
        else:
            if kernel is None:
                raise AstroSRError("backprojection needs --psf SPEC (the blur the input carries, in output "
                                   "pixels, e.g. gaussian:1.0).")
            it = 50 if iterations is None else int(iterations)
            params["iterations"] = it
            if noise_sigma is not None:
                # bicubic, then the noise-aware projection below (the same projection, not exact)
                out = classical.interpolate(arr, scale=scale, method="bicubic")
                flux_exact = True
            else:
                out = yield from _projection_progress(
                    classical.backprojection_iter(arr, kernel, scale=scale, iterations=it, stop=stop), it, method)
                flux_exact = False  # already projected
        timings[method] = time.perf_counter() - t0
        yield Progress(1, 1, f"{method} done")
    else:
        from .models.registry import get_spec
        from .training.inference import infer_job

        spec = get_spec(method)
        if scale not in spec.scales:
            raise AstroSRError(f"--scale {scale}: {method} supports {', '.join(map(str, spec.scales))}.")
        net, meta = _resolve_model(method, scale, model, device)
        ckpt_hash = meta.get("sha256")
        params.update(checkpoint=Path(meta["path"]).name if meta.get("path") else None,
                      preset=meta.get("preset"), normalization=meta.get("normalization"))
        filled, _ = fill_invalid(arr)
        flux_map = None
        t0 = time.perf_counter()
        if spec.upsamples:
            net_in, net_scale = arr, scale
            if spec.needs_flux_map:
                from .core.fluxmap import flux_map_from_image

                flux_map = flux_map_from_image(filled, thresh=flux_thresh)
                timings["flux_map"] = time.perf_counter() - t0
        else:
            from .core.resample import upsample

            # same-size networks work on the target grid: flux-conserving bicubic first
            net_in = upsample(arr, scale, method="bicubic") if scale > 1 else arr
            net_scale = 1
            timings["upsample"] = time.perf_counter() - t0
        net_tile = None if tile is None else int(tile) * (1 if spec.upsamples else scale)
        net_overlap = None if overlap is None else int(overlap) * (1 if spec.upsamples else scale)
        t0 = time.perf_counter()
        out, info = yield from infer_job(net, net_in, scale=net_scale, flux_map=flux_map,
                                         normalization=meta.get("normalization"), tile=net_tile,
                                         overlap=net_overlap, device=device, precision=precision,
                                         threads=threads, stop=stop)
        timings["network"] = time.perf_counter() - t0
        used_device = info["device"]
        if sky_levels is not None:
            from .core.skygate import sky_base, sky_gate

            t0 = time.perf_counter()
            yield Progress(0, 1, "keep the input's sky")
            base = net_in if not spec.upsamples else sky_base(filled, scale)
            nan_net = ~np.isfinite(out)
            out, ginfo = sky_gate(np.where(nan_net, base, out), base, low=sky_levels[0], high=sky_levels[1],
                                  rms=sky_rms)
            out[nan_net] = np.nan
            params["keep_sky_rms"] = float(f"{ginfo['rms']:.6g}")
            params["keep_sky_network_fraction"] = round(ginfo["network_fraction"], 4)
            timings["keep_sky"] = time.perf_counter() - t0
        params.update(device=used_device, precision=info["precision"], tiles=info["tiles"], tile=info["tile"],
                      overlap=info["overlap"])

    if flux_exact:
        from .core.projection import iter_project_flux_exact

        if stop.is_set():
            from .exceptions import StoppedError
            raise StoppedError("restoration stopped before the flux-exact projection.")
        yield Progress(0, 1, "flux-exact projection")
        t0 = time.perf_counter()
        nan_out = ~np.isfinite(out)
        it = 50 if iterations is None or method in CLASSICAL else int(iterations)
        target = arr
        damping = 0.0
        if noise_sigma is None and kernel is not None:
            from .core.projection import noise_gain

            gain = noise_gain(out.shape, scale=scale, psf=kernel)
            if gain > NOISE_GAIN_WARN:
                import warnings

                from .exceptions import AstroSRWarning

                warnings.warn(
                    f"--flux-exact with this PSF at --scale {scale} is close to an exact deconvolution: it "
                    "amplifies noise at the frequencies the PSF barely passes "
                    f"{'without bound' if not np.isfinite(gain) else f'by up to {gain:.0e}x'}. "
                    "On a noisy input add --flux-noise auto (the widget's 'only where above the noise').",
                    AstroSRWarning, stacklevel=2)
        if noise_sigma is not None:
            from .core.projection import NOISE_DAMPING, noise_aware_target

            target, ninfo = noise_aware_target(out, arr, scale=scale, psf=kernel, sigma=noise_sigma)
            params["flux_noise_power_kept"] = round(ninfo["power_kept"], 4)
            damping = NOISE_DAMPING
            if noise_sigma > 0 and ninfo["power_kept"] < FLUX_NOISE_KEPT_WARN:
                import warnings

                from .exceptions import AstroSRWarning

                # e.g. the HST galaxy crops of benchmarks/quality.py: their correlated noise sets sep's rms, and
                # no band of the residual rises above it (docs/results_flux_noise_variants.md)
                how = "measured by sep's background rms, which includes correlated noise and faint extended " \
                    "light; if the noise the result should not fit is lower, give it as --flux-noise SIGMA" \
                    if flux_noise == "auto" else "given with --flux-noise; check it is the noise per input pixel"
                warnings.warn(
                    f"--flux-noise: no part of the data residual rises above the noise sigma {noise_sigma:.4g} "
                    f"({how}). The projection leaves the output almost as the method made it, not corrected "
                    "towards the data.", AstroSRWarning, stacklevel=2)
        out, _ = yield from _projection_progress(
            iter_project_flux_exact(out, target, scale=scale, psf=kernel, iterations=it, damping=damping, stop=stop),
            it, "projection")
        out = np.asarray(out, dtype=np.float32)
        out[nan_out] = np.nan
        timings["projection"] = time.perf_counter() - t0
        yield Progress(1, 1, "flux-exact projection done")

    out_wcs = None
    if wcs is not None:
        from .core.resample import scale_wcs

        out_wcs = scale_wcs(wcs, scale)
    out_header = _result_header(header, method=method, params=params, checkpoint_hash=ckpt_hash)
    timings["total"] = time.perf_counter() - t_start
    return RestoreResult(data=np.ascontiguousarray(out, dtype=np.float32), wcs=out_wcs, header=out_header,
                         method=method, scale=scale, device=used_device, params=params, timings=timings,
                         checkpoint_hash=ckpt_hash)


# --flux-noise keeping less than this fraction of the data residual's power gets a warning (it changed ~nothing)
FLUX_NOISE_KEPT_WARN = 0.01

# exact projections whose correction can amplify a residual more than this get a warning (x2 with the STAR
# PSFs stays below 60; scale 1 with any blur, or a PSF much wider than the output pixel, exceeds it)
NOISE_GAIN_WARN = 100.0


def _projection_progress(gen, iterations: int, label: str):
    """Turn the projection's ``(iteration, residual_rel, round)`` stream into Progress events.

    The total is a guess (CG usually stops well before ``iterations``); the bar is
    completed by the caller's final event. Returns the wrapped generator's value.
    """
    while True:
        try:
            it, res, rnd = next(gen)
        except StopIteration as done:
            return done.value
        extra = f", nonneg round {rnd}" if rnd else ""
        yield Progress(min(it, iterations - 1), iterations, f"{label}: CG iteration {it}{extra}, residual {res:.1e}",
                       values={"iteration": it, "residual_rel": res, "nonneg_round": rnd})


def _result_header(header: Any, *, method: str, params: dict, checkpoint_hash: Optional[str]):
    """A copy of the input header (WCS keywords dropped: the result's WCS replaces them) with provenance."""
    from astropy.io import fits

    from .core.fits_io import provenance_cards

    hdr = fits.Header() if header is None else fits.Header(header).copy()
    for key in ("NAXIS1", "NAXIS2", "BSCALE", "BZERO", "BLANK", "CHECKSUM", "DATASUM"):
        hdr.remove(key, ignore_missing=True, remove_all=True)
    for key, value, comment in provenance_cards(method=method, parameters=params, checkpoint_hash=checkpoint_hash):
        hdr[key] = (value, comment)
    return hdr


def restore(data: Any, **kwargs) -> RestoreResult:
    """Synchronous :func:`restore_job` (same keyword arguments).

    ``data`` may also be a dask array (e.g. a mosaic larger than memory): the restoration is
    then built lazily block by block with overlap by :func:`napari_astrosr.batch.restore_dask`
    and ``RestoreResult.data`` is a dask array (compute it, or store it to disk section by
    section); the WCS is scaled as for numpy input. Options of ``restore_dask`` (``depth``,
    ``chunks``) pass through; ``stop``/progress do not apply to the lazy graph.
    """
    if type(data).__module__.startswith("dask.") and hasattr(data, "map_overlap"):
        from .batch import restore_dask
        from .core.resample import scale_wcs

        wcs, header = kwargs.pop("wcs", None), kwargs.pop("header", None)
        kwargs.pop("stop", None)
        allowed = ("method", "scale", "model", "flux_exact", "psf", "device", "tile", "depth", "chunks", "flux_noise",
                   "keep_sky")
        unknown = sorted(set(kwargs) - set(allowed))
        if unknown:
            raise AstroSRError(f"restore() of a dask array does not take {', '.join(unknown)}.")
        if kwargs.get("device", "auto") == "auto":
            kwargs["device"] = pick_device("auto")
        out = restore_dask(data, **kwargs)
        s = int(kwargs.get("scale", 2))
        return RestoreResult(data=out, wcs=scale_wcs(wcs, s) if wcs is not None else None, header=header,
                             method=kwargs["method"], scale=s, device=kwargs["device"],
                             params={k: v for k, v in kwargs.items() if k != "model"} | {"lazy": True})
    return run(restore_job(data, **kwargs))

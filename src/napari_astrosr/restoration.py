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
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ._version import __version__
from .exceptions import AstroSRError
from .method_table import _available_devices, _listed_devices, _stored_cost, list_methods  # noqa: F401
from .progress import NEVER, Progress, run
from .restore_options import CLASSICAL as _CLASSICAL_NAMES
from .restore_options import METHODS as _REGISTRY
from .restore_options import NETWORKS as _NETWORK_NAMES
from .restore_options import RestoreOptions, options_from_kwargs, projection_gain, resolve_noise, resolve_psf

# views of the one registry (restore_options.METHODS), kept for callers of these names
CLASSICAL: dict[str, dict[str, Any]] = {
    n: dict(description=_REGISTRY[n].description, flux=_REGISTRY[n].flux) for n in _CLASSICAL_NAMES
}
NETWORKS: dict[str, dict[str, Any]] = {n: dict(flux=_REGISTRY[n].flux) for n in _NETWORK_NAMES}
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
    err: Optional[np.ndarray] = None
    """1-sigma uncertainty per output pixel (same units), the input noise propagated (:func:`output_err`);
    None where there is no propagation (richardson-lucy, a lazy dask result, unknown noise)."""
    err_how: str = ""
    """How :attr:`err` was computed (the ``ERRMETH`` card)."""
    err_filter: Optional[float] = None
    """The ERR's factor for sep's default matched filter (``ERRFILT``: the output noise is correlated)."""

    def err_hdu(self):
        """The ``ERR`` image extension for the output file (None without :attr:`err`): float32 sigma with the
        image's BUNIT and WCS, ``ERRMETH`` and ``ERRFILT`` (``core.uncertainty.err_hdu``).
        """
        if self.err is None:
            return None
        from astropy.io import fits

        from .core.uncertainty import err_hdu

        # BUNIT from the header; the WCS from the validated output WCS (never re-parsed from a raw header)
        hdr = fits.Header()
        if self.header is not None and "BUNIT" in self.header:
            hdr["BUNIT"] = self.header["BUNIT"]
        return err_hdu(self.err, header=hdr, wcs=self.wcs, how=self.err_how, filter_factor=self.err_filter)

    @property
    def provenance(self) -> dict:
        """Keyword arguments for ``core.fits_io.write_fits(provenance=...)``."""
        return {"method": self.method, "parameters": self.params, "checkpoint_hash": self.checkpoint_hash}


def pick_device(device: str = "auto") -> str:
    """``auto`` -> cuda, then mps, then cpu; an explicit unavailable device is an error."""
    from .models.inference import pick_device as _pick

    return _pick(device)


def _psf_label(psf: Any) -> Optional[str]:
    if psf is None:
        return None
    if isinstance(psf, np.ndarray):
        return f"array{psf.shape}"
    return str(psf)


def _resolve_model(method: str, scale: int, model: Any, device: str):
    """(module, meta) from a checkpoint path, a bundled checkpoint, or a module passed in."""
    from ._extras import require
    from .models.checkpoints import bundled_checkpoint, load_checkpoint

    require("torch", extra="ml", what=f"--method {method}")

    if model is not None and not isinstance(model, (str, Path)):
        # an in-memory module (training validation, tests): normalisation from its attribute
        meta = {
            "architecture": method,
            "scale": scale,
            "sha256": None,
            "preset": None,
            "normalization": getattr(model, "normalization", {"kind": "median_std"}),
            "path": None,
        }
        return model, meta
    path = Path(model) if model is not None else bundled_checkpoint(method, scale)
    if path is None:
        raise AstroSRError(
            f"no bundled weights for {method} x{scale}; train one with `astrosr train CONFIG.yaml` "
            f"(architecture {method}, scale {scale}) or pass --model CKPT.pt."
        )
    return load_checkpoint(path, device="cpu", expect_name=method, expect_scale=scale)


def restore_job(
    data: np.ndarray,
    *,
    options: Optional[RestoreOptions] = None,
    wcs: Any = None,
    header: Any = None,
    source: Any = None,
    stop=NEVER,
    **option_kwargs: Any,
) -> Generator[Progress, None, RestoreResult]:
    """Restore (and enlarge by ``scale``) a 2-D image with ``method``.

    The options are one :class:`~napari_astrosr.restore_options.RestoreOptions`, given as ``options=`` or as
    its fields by keyword (``method=..., scale=..., psf=...``; ``flux_exact=True`` is the older spelling of
    ``project=True``). The main ones:

    Parameters
    ----------
    data
        2-D image in flux per pixel; NaN/blank pixels allowed (they come back as NaN).
    options
        A validated option set (else built from ``option_kwargs``).
    wcs, header
        The input's WCS/header: the result carries the scaled WCS and a header with provenance
        (``ASRPROJ``/``ASRNOISE``/``ASRPSF``/``ASRSKY``: the projection, noise and sky choices made;
        ``PSFSRC``/``PSFFWHM``/...: the PSF used; ``NOISESRC``/``NOISESIG``/...: the noise found).
    source
        The input FITS file, when there is one: its PSF extension / header-named PSF file and its ERR / VAR /
        IVAR / WHT extension are used (``core.psf_estimate.find_psf``, ``core.noise.find_noise``).
    stop
        Stop flag (``is_set()``); a stop raises :class:`~napari_astrosr.exceptions.StoppedError`.
    **option_kwargs
        ``method`` (``bicubic, lanczos, richardson-lucy, backprojection, fisr, restormer, pix2wgan,
        pix2wgan-cascade``); ``scale``; ``model`` (checkpoint ``.pt``, default the bundled one; an in-memory
        ``torch.nn.Module`` is accepted too, with its ``normalization`` attribute); ``device``; ``tile``,
        ``overlap`` (input pixels), ``precision``, ``threads``; ``iterations`` (Richardson-Lucy, default 30 /
        projection CG, default 50); ``flux_thresh`` (FISR's flux map).

        ``project`` (default: on for the networks and backprojection): project the output through the
        forward model (``psf`` blur + block sum) so that it reproduces the input. ``psf``: the blur the input
        carries, on the *output* grid (``gaussian:1.0``, ``airy:2``, ``PSF.fits``, an array or ``"none"``);
        without one it is found (:func:`~napari_astrosr.restore_options.resolve_psf`: the file's PSF extension
        or header-named PSF file, FWHM header keywords, else an ePSF from the image's stars); where none is
        found a projection is an error asking for ``psf`` or ``project=False`` (a projection through the block
        sum alone measured worse than bicubic on per-source flux).
        ``flux_noise``: ``None``/``"auto"`` measure the input's noise and project exactly on clean data,
        noise-aware (a Wiener filter of the residual, :func:`core.projection.noise_aware_target`) on noisy
        data (:func:`~napari_astrosr.restore_options.resolve_noise`); a sigma; or ``"exact"``.

        ``keep_sky`` (networks; default on, ``False`` to opt out): the network's change is applied only where
        the input's local S/N exceeds LOW sigma, fully above HIGH (True: 2, 5; or ``"LOW,HIGH"`` / a pair);
        below, the output is the input's flux-conserving bicubic upsampling (:func:`core.skygate.sky_gate`).
        Applied before the projection. ``sky_rms``: the noise rms the gate measures S/N against (default:
        sep's global rms of the upsampled input).
    """
    from .models.inference import fill_invalid, validate_image

    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    model_obj = option_kwargs.get("model")
    if model_obj is not None and not isinstance(model_obj, (str, Path)):
        option_kwargs = dict(option_kwargs, model=None)  # an in-memory module: not an option to validate
    else:
        model_obj = None
    if options is None:
        options = options_from_kwargs(**option_kwargs)
    elif option_kwargs:
        raise AstroSRError(f"restore_job: give options= or keywords, not both ({', '.join(option_kwargs)}).")
    opts = options
    method, scale, psf, iterations = opts.method, opts.scale, opts.psf, opts.iterations
    device, tile, overlap, precision, threads = opts.device, opts.tile, opts.overlap, opts.precision, opts.threads
    flux_thresh = opts.flux_thresh
    model = model_obj if model_obj is not None else opts.model
    arr = validate_image(data, what="input image")
    flux_exact = opts.projects
    psf_source = None
    psf_info = None
    psf_error = None
    if flux_exact or psf is not None or opts.info.needs_psf:
        t0 = time.perf_counter()
        choice = resolve_psf(psf, header=header, data=arr, scale=scale, path=source, wcs=wcs)
        psf, psf_source, psf_info, psf_error = choice.psf, choice.source, choice.info, choice.error
        timings["psf"] = time.perf_counter() - t0
    if psf is None and psf_error is not None and (method in CLASSICAL and (flux_exact or opts.info.needs_psf)):
        _no_psf(method, psf_error, explicit=bool(opts.project) and not opts.info.needs_psf)
    psf_label = _psf_label(psf) if psf_info is None or psf_info.source == "option" else psf_source
    kernel = None
    if psf is not None:
        from .core.psf import parse_psf

        kernel = parse_psf(psf)
    if flux_exact and kernel is None and scale == 1:
        raise AstroSRError("--flux-exact at --scale 1 with no PSF would just return the input; give --psf.")
    t0 = time.perf_counter()
    gain = projection_gain(arr.shape, scale=scale, psf=kernel) if flux_exact and kernel is not None else None
    noise = resolve_noise(
        arr,
        opts.flux_noise if flux_exact else "exact",
        path=source,
        measure=method != "richardson-lucy",
        gain=gain,
        scale=scale,
    )
    timings["noise"] = time.perf_counter() - t0
    noise_sigma = noise.sigma if flux_exact else None
    flux_noise = opts.flux_noise
    sky_levels = opts.sky_levels
    sky_rms = opts.sky_rms
    params: dict[str, Any] = {
        "method": method,
        "scale": scale,
        "flux_exact": bool(flux_exact),
        "psf": psf_label,
        "version": __version__,
    }
    if noise_sigma is not None:
        params["flux_noise"] = noise_sigma
    if sky_levels is not None:
        params["keep_sky"] = list(sky_levels)
    params["projection"] = noise.mode if flux_exact else "off"
    if not flux_exact and opts.project is None and opts.info.projects and scale == 1:
        # the one default that skips the projection: at scale 1 only a given blur defines the forward model
        params["projection_why"] = "scale 1 needs --psf, the blur to undo"
    if flux_exact:
        params["noise_source"] = noise.source
        params["psf_source"] = psf_source
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
                raise AstroSRError(
                    "backprojection needs --psf SPEC (the blur the input carries, in output pixels, e.g. gaussian:1.0)."
                )
            it = 50 if iterations is None else int(iterations)
            params["iterations"] = it
            if noise_sigma is not None:
                # bicubic, then the noise-aware projection below (the same projection, not exact)
                out = classical.interpolate(arr, scale=scale, method="bicubic")
                flux_exact = True
            else:
                out = yield from _projection_progress(
                    classical.backprojection_iter(arr, kernel, scale=scale, iterations=it, stop=stop), it, method
                )
                flux_exact = False  # already projected
        timings[method] = time.perf_counter() - t0
        yield Progress(1, 1, f"{method} done")
    else:
        from .models.inference import infer_job
        from .models.registry import get_spec

        spec = get_spec(method)
        if scale not in spec.scales:
            raise AstroSRError(f"--scale {scale}: {method} supports {', '.join(map(str, spec.scales))}.")
        net, meta = _resolve_model(method, scale, model, device)
        if flux_exact and psf is None:  # after the weights' check, before minutes of inference
            _no_psf(method, psf_error or "no PSF given", network=True)
        ckpt_hash = meta.get("sha256")
        params.update(
            checkpoint=Path(meta["path"]).name if meta.get("path") else None,
            preset=meta.get("preset"),
            normalization=meta.get("normalization"),
        )
        filled, _ = fill_invalid(arr)
        flux_map = None
        # the steps around the network run in torch on its device when that is a GPU (models.ops)
        from .models import ops

        used_device = pick_device(device)
        t0 = time.perf_counter()
        if spec.upsamples:
            net_in, net_scale = arr, scale
            if spec.needs_flux_map:
                flux_map = ops.flux_map_from_image(filled, thresh=flux_thresh, device=used_device)
                timings["flux_map"] = time.perf_counter() - t0
        else:
            # same-size networks work on the target grid: flux-conserving bicubic first
            net_in = ops.upsample(arr, scale, method="bicubic", device=used_device) if scale > 1 else arr
            net_scale = 1
            timings["upsample"] = time.perf_counter() - t0
        net_tile = None if tile is None else int(tile) * (1 if spec.upsamples else scale)
        net_overlap = None if overlap is None else int(overlap) * (1 if spec.upsamples else scale)
        t0 = time.perf_counter()
        out, info = yield from infer_job(
            net,
            net_in,
            scale=net_scale,
            flux_map=flux_map,
            normalization=meta.get("normalization"),
            tile=net_tile,
            overlap=net_overlap,
            device=device,
            precision=precision,
            threads=threads,
            stop=stop,
        )
        timings["network"] = time.perf_counter() - t0
        used_device = info["device"]
        if sky_levels is not None:
            from .core.skygate import sky_base, sky_gate

            t0 = time.perf_counter()
            yield Progress(0, 1, "keep the input's sky")
            base = net_in if not spec.upsamples else sky_base(filled, scale)
            nan_net = ~np.isfinite(out)
            out, ginfo = sky_gate(
                np.where(nan_net, base, out), base, low=sky_levels[0], high=sky_levels[1], rms=sky_rms
            )
            out[nan_net] = np.nan
            params["keep_sky_rms"] = float(f"{ginfo['rms']:.6g}")
            params["keep_sky_network_fraction"] = round(ginfo["network_fraction"], 4)
            timings["keep_sky"] = time.perf_counter() - t0
        params.update(
            device=used_device,
            precision=info["precision"],
            tiles=info["tiles"],
            tile=info["tile"],
            overlap=info["overlap"],
        )

    wiener, damping = None, 0.0  # the noise-aware projection's residual filter and damping (for the ERR)
    if flux_exact:
        from .core.projection import iter_project_flux_exact

        if used_device != "cpu":  # on the network's GPU (models.ops imports torch: not for CPU-only methods)
            from functools import partial

            from .models import ops

            iter_project_flux_exact = partial(ops.iter_project_flux_exact, device=used_device)

        if stop.is_set():
            from .exceptions import StoppedError

            raise StoppedError("restoration stopped before the flux-exact projection.")
        yield Progress(0, 1, "flux-exact projection")
        t0 = time.perf_counter()
        nan_out = ~np.isfinite(out)
        it = 50 if iterations is None or method in CLASSICAL else int(iterations)
        target = arr
        tols: dict[str, float] = {}
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
                    AstroSRWarning,
                    stacklevel=2,
                )
        if noise_sigma is not None:
            from .core.projection import NOISE_DAMPING, NOISE_ROUND_TOL, NOISE_TOL, noise_aware_target

            target, ninfo = noise_aware_target(out, arr, scale=scale, psf=kernel, sigma=noise_sigma, cap=True)
            params["flux_noise_power_kept"] = round(ninfo["power_kept"], 4)
            damping, wiener = NOISE_DAMPING, ninfo["filter"]
            # CG stops a little below the noise, not at tol (far below it): the same output, a fraction of the work
            tols = dict(noise_tol=NOISE_TOL * noise_sigma, round_noise_tol=NOISE_ROUND_TOL * noise_sigma)
            if noise_sigma > 0 and ninfo["power_kept"] < FLUX_NOISE_KEPT_WARN:
                import warnings

                from .exceptions import AstroSRWarning

                # e.g. the HST galaxy crops of benchmarks/quality.py: their correlated noise sets sep's rms, and
                # no band of the residual rises above it (docs/results_flux_noise_variants.md)
                how = (
                    "measured by sep's background rms, which includes correlated noise and faint extended "
                    "light; if the noise the result should not fit is lower, give it as --flux-noise SIGMA"
                    if flux_noise == "auto"
                    else "given with --flux-noise; check it is the noise per input pixel"
                )
                warnings.warn(
                    f"--flux-noise: no part of the data residual rises above the noise sigma {noise_sigma:.4g} "
                    f"({how}). The projection leaves the output almost as the method made it, not corrected "
                    "towards the data.",
                    AstroSRWarning,
                    stacklevel=2,
                )
        out, _ = yield from _projection_progress(
            iter_project_flux_exact(
                out, target, scale=scale, psf=kernel, iterations=it, damping=damping, stop=stop, **tols
            ),
            it,
            "projection",
        )
        out = np.asarray(out, dtype=np.float32)
        out[nan_out] = np.nan
        timings["projection"] = time.perf_counter() - t0
        yield Progress(1, 1, "flux-exact projection done")

    out_wcs = None
    if wcs is not None:
        from .core.resample import scale_wcs

        out_wcs = scale_wcs(wcs, scale)
    err, err_how, err_filter = None, "", None
    if method != "richardson-lucy" and noise.sigma_map is not None:
        t0 = time.perf_counter()
        yield Progress(0, 1, "propagate the input noise (ERR)")
        err, err_how, err_filter = output_err(
            noise.sigma_map,
            arr.shape,
            method=method,
            scale=scale,
            kernel=kernel,
            projected=bool(params["projection"] != "off"),
            noise_aware=params["projection"] == "noise-aware",
            wiener=wiener,
            damping=damping,
        )
        err[~np.isfinite(out)] = np.nan
        params["err"] = err_how
        timings["err"] = time.perf_counter() - t0
        yield Progress(1, 1, "ERR done")
    out_header = _result_header(header, method=method, params=params, checkpoint_hash=ckpt_hash)
    for key, value, comment in choice_cards(params):
        out_header[key] = (value, comment)
    if psf_info is not None and psf is not None:
        for key, value, comment in psf_info.header_cards():
            out_header[key] = (value, comment)
    if noise.info is not None:
        for key, value, comment in noise.info.header_cards():
            out_header[key] = (value, comment)
    timings["total"] = time.perf_counter() - t_start
    return RestoreResult(
        data=np.ascontiguousarray(out, dtype=np.float32),
        wcs=out_wcs,
        header=out_header,
        method=method,
        scale=scale,
        device=used_device,
        params=params,
        timings=timings,
        checkpoint_hash=ckpt_hash,
        err=err,
        err_how=err_how,
        err_filter=err_filter,
    )


def _no_psf(method: str, why: str, *, network: bool = False, explicit: bool = False) -> None:
    """The one-line error of a projection (or PSF method) for which no PSF was given or found."""
    why = why.rstrip(".").removesuffix(" Give --psf").rstrip(".")
    if network:
        raise AstroSRError(
            f"{method}: its default projection onto the forward model needs the PSF the input "
            f"carries and none was found ({why}): give --psf SPEC|PSF.fits (on the output grid, e.g. "
            "gaussian:1.0; 'none' for no blur) or --no-projection (the network's flux is then only "
            "approximate)."
        )
    if explicit:
        raise AstroSRError(
            f"--flux-exact needs --psf SPEC (the blur the input carries, in output pixels, e.g. "
            f"gaussian:1.0; 'none' for an unblurred input): none was found ({why})."
        )
    raise AstroSRError(
        f"{method} needs --psf SPEC (the blur the input carries, in output pixels, e.g. "
        f"gaussian:1.0): none was found ({why})."
    )


def output_err(
    sigma: Any,
    lr_shape: tuple[int, int],
    *,
    method: str,
    scale: int,
    kernel: Optional[np.ndarray],
    projected: bool,
    noise_aware: bool,
    wiener: Any = None,
    damping: float = 0.0,
) -> tuple[np.ndarray, str, float]:
    """The output's 1-sigma per pixel: the input ``sigma`` (scalar or map) through the restoration's linear
    part (``core.uncertainty``), with the ``ERRMETH`` text and sep's filter factor (``ERRFILT``).

    - bicubic / lanczos: exact propagation (:func:`~napari_astrosr.core.uncertainty.bicubic_err`).
    - an exact projection (backprojection, or a network then the projection): the data reach the output through
      the projection's pseudo-inverse, the network only adds its null-space part: ``backprojection_err``.
    - the noise-aware projection: its linear part, the Wiener filter ``wiener`` it built from the residual held
      fixed and its Tikhonov ``damping`` (``core.uncertainty.backprojection_err``). Without ``wiener`` the exact
      projection's ERR is used as an upper estimate, and ``ERRMETH`` says so: with a PSF wide against the output
      pixel it is orders of magnitude too large (measured 135x on a ground field, ``benchmarks/err_propagation.py``).
    - a network without projection: no linear part; the bicubic ERR is the documented estimate.

    Cheap: one impulse response (one CG solve for the projection) and one FFT convolution (seconds at 1024^2 x2).
    """
    from .core.uncertainty import backprojection_err, bicubic_err

    s = int(scale)
    if method in ("bicubic", "lanczos") and not projected:
        err, c = bicubic_err(sigma, lr_shape, scale=s, method=method, return_factor=True)
        how = f"{method} x{s}, input noise propagated"
    elif projected:
        linear = noise_aware and wiener is not None
        err, c = backprojection_err(
            sigma,
            lr_shape,
            scale=s,
            psf=kernel,
            return_factor=True,
            wiener=wiener if linear else None,
            damping=damping if linear else 0.0,
        )
        base = "backprojection" if method in CLASSICAL else f"{method}+projection"
        if linear:
            how = f"{base} x{s}: noise-aware projection, propagated"
        elif noise_aware:
            how = f"{base} x{s}: exact-projection ERR, upper estimate (noise-aware)"
        else:
            how = f"{base} x{s}, input noise propagated (linear part)"
    else:
        err, c = bicubic_err(sigma, lr_shape, scale=s, return_factor=True)
        how = f"{method} x{s} no projection: bicubic ERR, estimate"
    return np.asarray(err, dtype=np.float32), how, float(c)


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
        yield Progress(
            min(it, iterations - 1),
            iterations,
            f"{label}: CG iteration {it}{extra}, residual {res:.1e}",
            values={"iteration": it, "residual_rel": res, "nonneg_round": rnd},
        )


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
    then built lazily block by block with overlap by :func:`napari_astrosr.restore_jobs.tiling.restore_dask`
    and ``RestoreResult.data`` is a dask array (compute it, or store it to disk section by
    section); the WCS is scaled as for numpy input. Options of ``restore_dask`` (``depth``,
    ``chunks``) pass through; ``stop``/progress do not apply to the lazy graph.
    """
    if type(data).__module__.startswith("dask.") and hasattr(data, "map_overlap"):
        from .core.resample import scale_wcs
        from .restore_jobs.blocks import tile_restore  # imports no job: no import circle

        wcs, header = kwargs.pop("wcs", None), kwargs.pop("header", None)
        kwargs.pop("stop", None)
        kwargs.pop("source", None)  # a lazy graph: the PSF and noise are not looked up in the file
        lazy = {k: kwargs.pop(k) for k in ("depth", "chunks") if k in kwargs}
        opts = options_from_kwargs(**kwargs)
        if opts.device == "auto":
            opts = opts.model_copy(update={"device": pick_device("auto")})
        out = tile_restore(data, restore_array=restore, options=opts, **lazy)
        s = opts.scale
        return RestoreResult(
            data=out,
            wcs=scale_wcs(wcs, s) if wcs is not None else None,
            header=header,
            method=opts.method,
            scale=s,
            device=opts.device,
            params=opts.model_dump(exclude_defaults=True, exclude={"model", "psf"})
            | {"projects": opts.projects, "lazy": True},
        )
    return run(restore_job(data, **kwargs))


def choice_cards(params: dict) -> list[tuple[str, Any, str]]:
    """Header cards stating the projection, noise, PSF and sky choices a restoration made (from its params)."""
    cards: list[tuple[str, Any, str]] = [
        ("ASRPROJ", params.get("projection", "off"), "forward-model projection: exact, noise-aware or off")
    ]
    if params.get("flux_noise") is not None:
        cards.append(("ASRNOISE", float(params["flux_noise"]), "input noise sigma the projection kept above"))
    if params.get("projection", "off") != "off" and params.get("psf") is not None:
        cards.append(("ASRPSF", str(params["psf"])[:60], "PSF of the projection (output grid)"))
    cards.append(("ASRSKY", params.get("keep_sky") is not None, "network kept only above the input's noise"))
    return cards

"""The main job: restore an image, detect, compare, validate and export (no napari).

``main_job(path, out_dir=...)`` is a long job (yields :class:`~napari_astrosr.progress.Progress`,
returns :class:`MainJobResult`); ``run_main_job`` runs it synchronously. ``astrosr run``,
``astrosr demo`` (which then loads the results into napari) and the tests all call it.

What it computes, and why the numbers mean something:

(a) **Flux consistency of the real restoration.** The output cannot be compared with a truth
    we do not have, but it can be compared with the input it came from at the input's
    resolution: ``residual = block_sum(output, s) - input`` (the flux-conserving downsample
    of the output minus the input, on the input grid, in the input's units per input pixel).
    Zero means every input pixel's flux is kept; a sharpening method that moves flux from a
    source's wings into its core leaves a +/- pattern *inside* each source but (if it is
    flux-conserving per source) no per-source residual. Hence: a per-source residual table
    (reference = input, prediction = block_sum(output)) at the input's detections
    (elliptical 2.5 x (a, b) apertures, as STAR), and KL/JS of the pixel values inside default
    regions (the brightest source, a faint source, empty sky). For a method with a PSF
    (``backprojection``) we also report the forward-model residual
    ``block_sum(psf * output) - input``, which the method drives to ~0 by construction.
(b) **Validation with truth on this very image.** The input is degraded with the STAR
    recipe (Gaussian PSF sigma = 1 px on the input grid, flux-conserving x``scale``
    block sum, seeded; no extra noise: the image carries its own), restored with the same
    method and with flux-conserving bicubic, and both are evaluated against the input (PSNR,
    SSIM with the input's range, STAR Flux Error, median relative flux error, KL/JS in the
    same regions). The difference is what the method gains over bicubic here.

Outputs (all written into a hidden staging folder inside ``out_dir`` and moved into place
only when everything succeeded, so a failed or stopped run leaves no partial files):
``<stem>_<method>_x<s>.fits`` (restored, scaled WCS, provenance cards ASRMETH/ASRPARAM/...),
``<stem>_<method>_residual.fits`` (input grid and WCS), ``sources_input.ecsv/.reg``,
``sources_<method>.ecsv/.reg`` (RA/Dec; DS9 regions in fk5 when there is a WCS),
``source_residuals.ecsv``, ``rois.reg`` and ``metrics.json``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from .exceptions import AstroSRError, NoSourcesWarning, StoppedError
from .progress import NEVER, Progress, run

PathLike = Union[str, Path]

DEFAULT_PSF = "gaussian:1.0"
"""The blur assumed for the input, on the *output* grid, by PSF-aware methods (backprojection)."""

VALIDATION = dict(psf="gaussian:1.0", seed=0, noise=None)
"""STAR-style degradation of the validation (b): PSF on the input grid, seed, no added noise."""

N_STEPS = 8


@dataclass
class Roi:
    """A rectangular region on the input grid: rows ``y0:y1``, columns ``x0:x1`` (0-based, half-open)."""

    name: str
    y0: int
    y1: int
    x0: int
    x1: int
    why: str = ""

    def mask(self, shape: tuple[int, int]) -> np.ndarray:
        """Boolean mask of this box on an image of ``shape``."""
        m = np.zeros(shape, dtype=bool)
        m[self.y0 : self.y1, self.x0 : self.x1] = True
        return m

    def as_dict(self) -> dict:
        """The box as a plain dict (for metrics.json)."""
        return dict(name=self.name, x0=self.x0, x1=self.x1, y0=self.y0, y1=self.y1, why=self.why)


@dataclass
class MainJobResult:
    """Everything the main job computed (arrays in memory, files on disk)."""

    out_dir: Path
    input_path: Path
    input: Any  # core.fits_io.FitsImage
    method: str
    method_reason: str
    restored: Any  # restoration.RestoreResult
    residual: np.ndarray  # block_sum(output, s) - input, input grid
    sources_input: Any  # QTable (input grid)
    sources_output: Any  # QTable (output grid)
    source_residuals: Any  # QTable: input vs block_sum(output) at the input's detections
    rois: list[Roi]
    metrics: dict
    files: dict[str, Path] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


# ----------------------------------------------------------------------------- choices
def default_out_dir() -> Path:
    """``./astrosr-output/<YYYYmmdd-HHMMSS>`` (the demo's and ``astrosr run``'s default)."""
    from datetime import datetime

    return Path.cwd() / "astrosr-output" / datetime.now().strftime("%Y%m%d-%H%M%S")


def default_method(scale: int = 2) -> dict:
    """The method the main job uses: bundled FISR x``scale`` if shipped, else backprojection.

    Returns
    -------
    dict
        ``method``, ``model`` (checkpoint path or None), ``psf`` (None for FISR) and
        ``reason`` (one sentence for logs and metrics.json).
    """
    from .models.checkpoints import bundled_checkpoint

    ckpt = bundled_checkpoint("fisr", scale)
    if ckpt is not None:
        # flux-exact on: on clean inputs (the bundled sample is a deep HST drizzle) the network
        # alone loses faint-source flux while network + projection keeps it (docs/results_quality.md)
        return dict(
            method="fisr",
            model=ckpt,
            psf=DEFAULT_PSF,
            flux_exact=True,
            reason=f"bundled FISR x{scale} weights ({ckpt.name}) + flux-exact projection "
            f"(psf {DEFAULT_PSF}, output pixels)",
        )
    return dict(
        method="backprojection",
        model=None,
        psf=DEFAULT_PSF,
        reason=f"no bundled FISR x{scale} weights (napari_astrosr/weights/fisr_x{scale}.pt): "
        f"flux-exact backprojection with psf {DEFAULT_PSF} (output pixels)",
    )


def _clip_box(cy: float, cx: float, size: int, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    ny, nx = shape
    h, w = min(size, ny), min(size, nx)
    y0 = int(np.clip(round(cy - h / 2), 0, ny - h))
    x0 = int(np.clip(round(cx - w / 2), 0, nx - w))
    return y0, y0 + h, x0, x0 + w


def default_rois(
    image: np.ndarray, sources: Any, segmap: Optional[np.ndarray] = None, *, size: Optional[int] = None
) -> list[Roi]:
    """Three square regions: the brightest source, a faint source and the emptiest sky.

    Parameters
    ----------
    image
        The input image (2-D).
    sources
        Its detections (``x``, ``y``, ``flux``, ``peak``).
    segmap
        sep segmentation map (sources > 0); the sky box avoids it. Default: from ``sources``
        ellipses is not attempted, the whole image counts as sky candidates.
    size
        Box side in pixels (default ``max(16, min(shape) // 8)``).

    Returns
    -------
    list of Roi
        ``bright`` (centred on the source with the highest peak), ``faint`` (the detected source
        with the lowest positive flux whose box does not overlap ``bright``, if any) and ``sky``
        (the box with the fewest segmentation pixels, then the lowest |pixel sum|).
    """
    a = np.asarray(image, dtype=np.float64)
    shape = a.shape
    size = int(size or max(16, min(shape) // 8))
    rois: list[Roi] = []
    n = len(sources)
    if n:
        peak = np.asarray(sources["peak"], dtype=float)
        i = int(np.nanargmax(peak))
        y0, y1, x0, x1 = _clip_box(float(sources["y"][i]), float(sources["x"][i]), size, shape)
        rois.append(Roi("bright", y0, y1, x0, x1, why=f"brightest source (peak {peak[i]:.4g})"))
        flux = np.asarray(sources["flux"], dtype=float)
        order = [j for j in np.argsort(flux) if flux[j] > 0 and j != i]
        for j in order:
            b = _clip_box(float(sources["y"][j]), float(sources["x"][j]), size, shape)
            if b[1] <= y0 or b[0] >= y1 or b[3] <= x0 or b[2] >= x1:  # no overlap with "bright"
                rois.append(Roi("faint", *b, why=f"faintest detected source (flux {flux[j]:.4g})"))
                break
    # sky: integral images over all box positions (stride size/4) -> fewest source pixels, then least flux
    occupied = (np.asarray(segmap) > 0) if segmap is not None else np.zeros(shape, bool)
    occupied |= ~np.isfinite(a)
    h, w = min(size, shape[0]), min(size, shape[1])

    def box_sums(v: np.ndarray) -> np.ndarray:
        c = np.pad(np.cumsum(np.cumsum(v, 0), 1), ((1, 0), (1, 0)))
        return c[h:, w:] - c[:-h, w:] - c[h:, :-w] + c[:-h, :-w]

    occ = box_sums(occupied.astype(np.float64))
    flx = np.abs(box_sums(np.where(np.isfinite(a), a - np.nanmedian(a), 0.0)))
    stride = max(1, size // 4)
    ys, xs = np.arange(0, occ.shape[0], stride), np.arange(0, occ.shape[1], stride)
    occ, flx = occ[np.ix_(ys, xs)], flx[np.ix_(ys, xs)]
    best = np.lexsort((flx.ravel(), occ.ravel()))[0]
    by, bx = ys[best // len(xs)], xs[best % len(xs)]
    rois.append(
        Roi(
            "sky",
            int(by),
            int(by) + h,
            int(bx),
            int(bx) + w,
            why=f"emptiest sky ({int(occ.ravel()[best])} source pixels)",
        )
    )
    return rois


# ----------------------------------------------------------------------------- helpers
def _sub(job, step: int, prefix: str):
    """Relabel a sub-job's events as one step of the main job; return its result."""
    while True:
        try:
            ev = next(job)
        except StopIteration as done:
            return done.value
        yield Progress(
            step, N_STEPS, f"{prefix}: {ev.message}" if ev.message else prefix, preview=ev.preview, values=ev.values
        )


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    return str(obj)


def _stats(v: np.ndarray) -> dict:
    f = np.asarray(v, dtype=np.float64)
    f = f[np.isfinite(f)]
    if not f.size:
        return dict(sum=None, rms=None, max_abs=None)
    return dict(sum=float(f.sum()), rms=float(np.sqrt(np.mean(f**2))), max_abs=float(np.abs(f).max()))


def _detect(image: np.ndarray, wcs: Any, *, scale: float = 1):
    """Detect with sep's defaults; on an output ``scale`` x finer, with apertures and errors on the input's sky."""
    from .core.detection import detect, options_for_scale

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoSourcesWarning)
        return detect(image, wcs=wcs, **options_for_scale(scale))


def _to_input_grid(sources: Any, scale: int) -> np.ndarray:
    """(N, 2) x, y of output-grid detections in input pixel coordinates."""
    x = (np.asarray(sources["x"], float) + 0.5) / scale - 0.5
    y = (np.asarray(sources["y"], float) + 0.5) / scale - 0.5
    return np.column_stack([x, y])


def _per_source_summary(tab: Any, snr_min: float = 10.0) -> dict:
    if len(tab) == 0:
        return dict(
            n_sources=0, n_sources_snr10=0, rel_delta_median_abs=None, rel_delta_max_abs=None, delta_mag_median_abs=None
        )
    rel = np.abs(np.asarray(tab["rel_delta"], float))
    good = np.isfinite(np.asarray(tab["snr"], float)) & (np.asarray(tab["snr"], float) > snr_min)
    dm = np.abs(np.asarray(tab["delta_mag"], float))
    sel = rel[good & np.isfinite(rel)]
    return dict(
        n_sources=int(len(tab)),
        n_sources_snr10=int(good.sum()),
        rel_delta_median_abs=float(np.median(sel)) if sel.size else None,
        rel_delta_max_abs=float(sel.max()) if sel.size else None,
        delta_mag_median_abs=float(np.nanmedian(dm[good])) if np.isfinite(dm[good]).any() else None,
    )


def _short_eval(ev: dict) -> dict:
    return {
        k: ev.get(k)
        for k in (
            "psnr",
            "ssim",
            "data_range",
            "flux_error",
            "flux_error_rel_median",
            "n_sources",
            "n_sources_snr10",
            "n_sources_prediction",
            "recall",
            "sharpness",
            "sharpness_reference",
            "sky_sigma",
            "sky_sigma_reference",
            "rois",
            "warnings",
        )
    }


def output_names(stem: str, method: str, scale: int) -> dict[str, str]:
    """File names the main job writes (keys are the ``MainJobResult.files`` keys)."""
    return {
        "restored": f"{stem}_{method}_x{scale}.fits",
        "residual": f"{stem}_{method}_residual.fits",
        "sources_input": "sources_input.ecsv",
        "regions_input": "sources_input.reg",
        "sources_output": f"sources_{method}.ecsv",
        "regions_output": f"sources_{method}.reg",
        "source_residuals": "source_residuals.ecsv",
        "rois": "rois.reg",
        "metrics": "metrics.json",
    }


def _write_rois(rois: list[Roi], path: Path) -> None:
    from regions import PixCoord, RectanglePixelRegion, Regions

    regs = []
    for r in rois:
        # pixel i spans [i - 0.5, i + 0.5] (0-based); astropy-regions writes 1-based DS9 image coords
        reg = RectanglePixelRegion(
            PixCoord((r.x0 + r.x1 - 1) / 2, (r.y0 + r.y1 - 1) / 2), width=r.x1 - r.x0, height=r.y1 - r.y0
        )
        reg.meta["text"] = r.name
        reg.visual["color"] = "yellow"
        regs.append(reg)
    Regions(regs).write(str(path), format="ds9", overwrite=True)


# ----------------------------------------------------------------------------- the job
def main_job(
    path: PathLike,
    *,
    out_dir: PathLike,
    method: Optional[str] = None,
    model: Optional[PathLike] = None,
    scale: int = 2,
    psf: Optional[str] = None,
    device: str = "auto",
    validate: bool = True,
    overwrite: bool = False,
    stop=NEVER,
    flux_exact: Optional[bool] = None,
    flux_noise: Union[None, float, str] = None,
    keep_sky: Union[None, bool, str, tuple] = None,
) -> Generator[Progress, None, MainJobResult]:
    """Restore ``path``, detect and compare input/output, validate against bicubic, export.

    Parameters
    ----------
    path
        Input FITS image (2-D; the first image HDU is used).
    out_dir
        Output folder (created if missing). Existing files of the same names are an error
        unless ``overwrite``.
    method, model, psf
        Restoration method, checkpoint and PSF (output grid). Default: :func:`default_method`
        (bundled FISR x``scale``, else backprojection with ``gaussian:1.0``). ``psf`` defaults
        to ``gaussian:1.0`` for methods that need one.
    scale
        Integer enlargement (2).
    flux_exact
        Project the result through the forward model (``psf``, default ``gaussian:1.0``). None
        (default): the method's default (on for the networks and backprojection, restore_options.METHODS).
    flux_noise, keep_sky
        As in :func:`napari_astrosr.restoration.restore_job` (default: the noise is measured and the
        projection is exact on clean data, noise-aware on noisy data; networks keep the input's sky).
    device
        ``auto``/``cpu``/``cuda``/``mps`` for networks; the one used is in the result.
    validate
        Run the validation (b) (degrade -> restore with ``method`` and bicubic -> evaluate).
    stop
        Stop flag; checked between steps (raises :class:`StoppedError`, nothing written).

    Returns
    -------
    MainJobResult
    """
    from .core.fits_io import read_fits
    from .restoration import restore_job

    t_all = time.perf_counter()
    timings: dict[str, float] = {}
    src = Path(path)
    out = Path(out_dir)
    scale = int(scale)

    def check_stop(where: str) -> None:
        if stop.is_set():
            raise StoppedError(f"main job stopped {where}; nothing was written.")

    # ---- 1. read
    yield Progress(0, N_STEPS, f"reading {src.name}")
    t0 = time.perf_counter()
    img = read_fits(src)
    if img.data.ndim != 2:
        raise AstroSRError(f"{src}: the main job needs a 2-D image, got shape {img.data.shape}.")
    with open(src, "rb") as fh:
        input_sha = hashlib.sha256(fh.read()).hexdigest()
    data = np.asarray(img.data, dtype=np.float32)
    if method is None:
        choice = default_method(scale)
        if model is not None:
            choice["model"] = Path(model)
    else:
        choice = dict(
            method=method,
            model=Path(model) if model else None,
            psf=None,
            reason=f"method {method!r} chosen by the caller",
        )
    if flux_exact is not None:
        choice["flux_exact"] = bool(flux_exact)
        if flux_exact:
            choice["reason"] += " + flux-exact projection (asked for)"
    if psf is not None:
        choice["psf"] = psf
    elif (choice["method"] in ("backprojection", "richardson-lucy") or choice.get("flux_exact")) and choice[
        "psf"
    ] is None:
        choice["psf"] = DEFAULT_PSF
    meth = choice["method"]
    if choice["psf"] is not None:
        from .core.psf import parse_psf

        parse_psf(choice["psf"])  # a bad --psf is refused before the output folder is created
    names = output_names(Path(img.path or src).name.split(".")[0] or "image", meth, scale)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AstroSRError(f"{out}: cannot create the output folder ({exc}).") from exc
    clash = [n for n in names.values() if (out / n).exists()]
    if clash and not overwrite:
        raise AstroSRError(f"{out / clash[0]}: already exists; choose another output folder or pass --overwrite.")
    timings["read"] = time.perf_counter() - t0
    check_stop("after reading")

    # ---- 2. restore
    t0 = time.perf_counter()
    kw = dict(method=meth, scale=scale, device=device, wcs=img.wcs, header=img.header)
    if choice["model"] is not None:
        kw["model"] = choice["model"]
    if choice["psf"] is not None:
        kw["psf"] = choice["psf"]
    if choice.get("flux_exact"):
        kw["flux_exact"] = True
    elif choice.get("flux_exact") is False:
        kw["project"] = False
    if flux_noise is not None:
        kw["flux_noise"] = flux_noise
    if keep_sky is not None:
        kw["keep_sky"] = keep_sky
    try:
        res = yield from _sub(restore_job(data, stop=stop, **kw), 1, f"restore ({meth} x{scale})")
    except StoppedError:
        raise
    except AstroSRError as exc:
        if method is not None or meth == "backprojection":
            raise
        # the bundled network could not be used (e.g. unreadable weights): fall back, and say so
        choice = dict(
            method="backprojection",
            model=None,
            psf=psf or DEFAULT_PSF,
            reason=f"bundled FISR x{scale} failed ({exc}); fell back to backprojection",
        )
        meth = choice["method"]
        names = output_names(Path(img.path or src).name.split(".")[0] or "image", meth, scale)
        kw.update(method=meth, psf=choice["psf"])
        kw.pop("flux_exact", None)
        kw.pop("project", None)
        kw.pop("keep_sky", None)
        kw.pop("model", None)
        res = yield from _sub(restore_job(data, stop=stop, **kw), 1, f"restore ({meth} x{scale})")
    timings["restore"] = time.perf_counter() - t0
    check_stop("after restoring")

    # ---- 3. detect on input and output
    yield Progress(2, N_STEPS, "detecting sources on input and output")
    t0 = time.perf_counter()
    det_in = _detect(data, img.wcs)
    det_out = _detect(res.data, res.wcs, scale=scale)
    timings["detect"] = time.perf_counter() - t0
    check_stop("after detection")

    # ---- 4. compare (a): flux consistency at the input's resolution
    yield Progress(3, N_STEPS, "comparing: block_sum(output) vs input")
    t0 = time.perf_counter()
    from .core.grids import consistency_residual
    from .core.metrics import evaluate_with_residuals, match_sources
    from .core.resample import block_sum

    down = block_sum(np.asarray(res.data, dtype=np.float64), scale)  # the output on the input grid
    residual = consistency_residual(res.data, data, scale=scale)
    rois = default_rois(data, det_in.sources, det_in.segmap)
    roi_masks = [(r.name, r.mask(data.shape)) for r in rois]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoSourcesWarning)
        consistency, src_res = evaluate_with_residuals(data, down, rois=roi_masks, wcs=img.wcs)
    tot_in, tot_out = float(np.nansum(data, dtype=np.float64)), float(np.nansum(res.data, dtype=np.float64))
    i_match, _, _ = match_sources(
        np.column_stack([np.asarray(det_in.sources["x"], float), np.asarray(det_in.sources["y"], float)])
        if len(det_in.sources)
        else np.zeros((0, 2)),
        _to_input_grid(det_out.sources, scale) if len(det_out.sources) else np.zeros((0, 2)),
        max_dist=2.0,
    )
    part_a: dict[str, Any] = {
        "definition": "residual = block_sum(output, scale) - input (input grid, input units per input pixel); "
        "per-source: reference = input, prediction = block_sum(output), elliptical 2.5 x (a, b) "
        "apertures at the input's detections; KL/JS (nats) of pixel values in the ROIs",
        "total_flux_input": tot_in,
        "total_flux_output": tot_out,
        "total_flux_rel_diff": (tot_out - tot_in) / tot_in if tot_in else None,
        "residual": _stats(residual),
        "per_source": _per_source_summary(src_res),
        "n_sources_input": int(len(det_in.sources)),
        "n_sources_output": int(len(det_out.sources)),
        "n_matched_within_2px": int(len(i_match)),
        "psnr_blocksum_vs_input": consistency.get("psnr"),
        "ssim_blocksum_vs_input": consistency.get("ssim"),
        "flux_error": consistency.get("flux_error"),
        "flux_error_rel_median": consistency.get("flux_error_rel_median"),
        "rois": consistency.get("rois"),
    }
    kernel_spec = res.params.get("psf")
    if kernel_spec and kernel_spec != "none":  # the method was told the blur: check its forward model
        from .core.projection import forward_model
        from .core.psf import parse_psf

        fm = forward_model(res.data, scale=scale, psf=parse_psf(kernel_spec)) - data
        part_a["forward_model_residual"] = dict(
            _stats(fm), psf=kernel_spec, definition="block_sum(psf * output) - input"
        )
    timings["compare"] = time.perf_counter() - t0
    check_stop("after the comparison")

    # ---- 5. validation (b): degrade -> restore (method, bicubic) -> evaluate against the input
    part_b: dict[str, Any] = {}
    if validate:
        from .core.degrade import degrade

        t0 = time.perf_counter()
        deg = degrade(
            data, scale=scale, psf=VALIDATION["psf"], noise=VALIDATION["noise"], seed=VALIDATION["seed"], wcs=img.wcs
        )
        part_b = {
            "definition": f"input degraded (STAR: {VALIDATION['psf']} px PSF on the input grid, "
            f"flux-conserving x{scale} block sum, seed {VALIDATION['seed']}, no added noise), "
            "restored, evaluated against the input (PSNR/SSIM with the input's range)",
            "degradation": _json_safe(deg.params),
            "methods": {},
        }
        hr_shape = tuple(s * scale for s in deg.data.shape)
        ref = data[: hr_shape[0], : hr_shape[1]]  # odd sizes: the block sum dropped a row/column
        vroi = [(n, m[: hr_shape[0], : hr_shape[1]]) for n, m in roi_masks]
        vkw = {k: v for k, v in kw.items() if k not in ("wcs", "header")}
        # the method, the strongest classical baseline (backprojection) and plain bicubic, side by side
        for m in dict.fromkeys([meth, "backprojection", "bicubic"]):
            mk = dict(vkw, method=m)
            if m != meth:
                for k in ("model", "flux_exact", "project", "psf", "keep_sky"):
                    mk.pop(k, None)
                if m == "bicubic":
                    mk.pop("flux_noise", None)
            if m == "backprojection":
                mk["psf"] = kw.get("psf") or DEFAULT_PSF
            tv = time.perf_counter()
            vres = yield from _sub(restore_job(deg.data, stop=stop, **mk), 4, f"validation: {m}")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ev = evaluate_with_residuals(ref, vres.data, rois=vroi, wcs=img.wcs)[0]
            part_b["methods"][m] = dict(_short_eval(ev), seconds=time.perf_counter() - tv)
            check_stop("during the validation")
        if meth != "bicubic":
            a, b = part_b["methods"][meth], part_b["methods"]["bicubic"]

            def ratio(k: str) -> Optional[float]:
                return b[k] / a[k] if a.get(k) and b.get(k) is not None else None

            part_b["gain_over_bicubic"] = {
                "psnr_db": a["psnr"] - b["psnr"] if a["psnr"] is not None and b["psnr"] is not None else None,
                "ssim": a["ssim"] - b["ssim"] if a["ssim"] is not None and b["ssim"] is not None else None,
                "flux_error_ratio": ratio("flux_error"),
                "flux_error_rel_median_ratio": ratio("flux_error_rel_median"),
                "note": "ratios are bicubic / method: > 1 means the method's flux error is smaller",
            }
        timings["validate"] = time.perf_counter() - t0

    # ---- 6. export (staged: nothing appears in out_dir unless everything was written)
    check_stop("before export")
    yield Progress(5, N_STEPS, f"writing results to {out}")
    t0 = time.perf_counter()
    from .core.catalogs import write_regions, write_table
    from .core.fits_io import write_fits

    has_sky = img.wcs is not None and getattr(img.wcs, "has_celestial", False)
    metrics: dict[str, Any] = {
        "input": {
            "path": str(src),
            "name": src.name,
            "shape": list(data.shape),
            "bunit": img.unit,
            "sha256": input_sha,
            "wcs": has_sky,
        },
        "method": meth,
        "method_reason": choice["reason"],
        "scale": scale,
        "device": res.device,
        "params": res.params,
        "checkpoint_sha256": res.checkpoint_hash,
        "flux_exact": res.params.get("projection", "off") != "off",
        "projection": res.params.get("projection", "off"),
        "flux_noise": res.params.get("flux_noise"),
        "flux_exact_psf": choice["psf"],
        "consistency": part_a,
        "validation": part_b if validate else None,
        "rois": [r.as_dict() for r in rois],
        "files": names,
    }
    stage = Path(tempfile.mkdtemp(prefix=".astrosr-run-", dir=out))
    files: dict[str, Path] = {}
    try:
        prov_inputs = [str(src)]
        write_fits(
            stage / names["restored"],
            res.data,
            header=res.header,
            wcs=res.wcs,
            protect=[src],
            provenance=dict(
                method=meth, parameters=res.params, checkpoint_hash=res.checkpoint_hash, inputs=prov_inputs
            ),
        )
        from astropy.io import fits

        rhdr = fits.Header(img.header).copy() if img.header is not None else fits.Header()
        rhdr["ASRRESID"] = (f"block_sum({meth} x{scale}) - input", "residual definition")
        write_fits(
            stage / names["residual"],
            residual,
            header=rhdr,
            wcs=img.wcs,
            protect=[src],
            provenance=dict(
                method=f"residual of {meth} x{scale}",
                parameters={"definition": "block_sum(output, scale) - input", "scale": scale},
                inputs=prov_inputs,
            ),
        )
        meta = {"input": src.name, "method": meth}
        write_table(
            det_in.sources,
            stage / names["sources_input"],
            flux_unit=img.unit,
            meta=dict(meta, image=src.name, grid="input"),
        )
        write_table(
            det_out.sources,
            stage / names["sources_output"],
            flux_unit=img.unit,
            meta=dict(meta, image=names["restored"], grid=f"output (x{scale})"),
        )
        write_table(
            src_res,
            stage / names["source_residuals"],
            flux_unit=img.unit,
            meta=dict(meta, reference="input", prediction=f"block_sum({meth} x{scale})"),
        )
        write_regions(det_in.sources, stage / names["regions_input"], wcs=img.wcs, sky=has_sky)
        write_regions(det_out.sources, stage / names["regions_output"], wcs=res.wcs, sky=has_sky, color="cyan")
        _write_rois(rois, stage / names["rois"])
        timings["export"] = time.perf_counter() - t0
        timings["total"] = time.perf_counter() - t_all
        metrics["timings"] = timings
        (stage / names["metrics"]).write_text(json.dumps(_json_safe(metrics), indent=2) + "\n")
        umask = os.umask(0)
        os.umask(umask)
        for key, name in names.items():
            # the atomic writers create 0600 temp files (mkstemp): give results the usual permissions
            os.chmod(stage / name, 0o666 & ~umask)
            os.replace(stage / name, out / name)
            files[key] = out / name
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    yield Progress(N_STEPS, N_STEPS, "done")
    return MainJobResult(
        out_dir=out,
        input_path=src,
        input=img,
        method=meth,
        method_reason=choice["reason"],
        restored=res,
        residual=residual,
        sources_input=det_in.sources,
        sources_output=det_out.sources,
        source_residuals=src_res,
        rois=rois,
        metrics=_json_safe(metrics),
        files=files,
        timings=timings,
    )


def run_main_job(path: PathLike, **kwargs) -> MainJobResult:
    """Synchronous :func:`main_job` (same keyword arguments)."""
    return run(main_job(path, **kwargs))


# ----------------------------------------------------------------------------- report
def _fmt(v: Any, spec: str = ".4g") -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return format(v, spec)
    return str(v)


def summary_table(metrics: dict, *, extra_timings: Optional[dict] = None) -> str:
    """A short plain-text summary of ``metrics.json`` (method, device, step times, key numbers)."""
    a = metrics["consistency"]
    lines = [
        f"input   {metrics['input']['name']} {tuple(metrics['input']['shape'])} [{metrics['input']['bunit']}]",
        f"method  {metrics['method']} x{metrics['scale']} on {metrics['device']}  ({metrics['method_reason']})",
        "",
        "step           seconds",
    ]
    t = dict(metrics.get("timings", {}))
    t.update(extra_timings or {})
    for k, v in t.items():
        lines.append(f"  {k:<12} {v:7.2f}")
    lines += [
        "",
        "(a) flux consistency: block_sum(output) vs input",
        f"  total flux rel. diff          {_fmt(a['total_flux_rel_diff'], '.2e')}",
        f"  residual rms / max|.|         {_fmt(a['residual']['rms'])} / {_fmt(a['residual']['max_abs'])}",
    ]
    if "forward_model_residual" in a:
        f = a["forward_model_residual"]
        lines.append(f"  forward-model residual max|.| {_fmt(f['max_abs'], '.2e')}  (psf {f['psf']})")
    ps = a["per_source"]
    lines += [
        f"  sources in/out/matched         {a['n_sources_input']}/{a['n_sources_output']}/{a['n_matched_within_2px']}",
        f"  per-source median |rel. diff|  {_fmt(ps['rel_delta_median_abs'], '.2e')}"
        f"  (S/N>10: {ps['n_sources_snr10']})",
    ]
    for r in a.get("rois") or []:
        lines.append(f"  ROI {r['name']:<6} KL {_fmt(r.get('kl'), '.3g'):>9}  JS {_fmt(r.get('js'), '.3g'):>9}")
    b = metrics.get("validation")
    if b:
        lines += [
            "",
            f"(b) validation vs truth ({b['definition'].split(',')[0]}...)",
            f"  {'method':<16}{'PSNR':>8}{'SSIM':>9}{'FluxErr':>10}{'rel.FE':>10}",
        ]
        for m, ev in b["methods"].items():
            lines.append(
                f"  {m:<16}{_fmt(ev['psnr'], '8.2f')}{_fmt(ev['ssim'], '9.5f')}"
                f"{_fmt(ev['flux_error'], '10.4f')}{_fmt(ev['flux_error_rel_median'], '10.2e')}"
            )
        g = b.get("gain_over_bicubic")
        if g:
            lines.append(
                f"  vs bicubic: {_fmt(g['psnr_db'], '+.2f')} dB PSNR; flux error bicubic/method "
                f"{_fmt(g['flux_error_ratio'], '.2f')}, rel. median "
                f"{_fmt(g['flux_error_rel_median_ratio'], '.2f')} (> 1: method better)"
            )
    return "\n".join(lines)

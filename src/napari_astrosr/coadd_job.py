"""The coadd job shared by ``astrosr coadd`` and the Coadd widget.

One options model (:class:`CoaddOptions`), one generator job (:func:`coadd_job`: yields
:class:`~napari_astrosr.progress.Progress`, honours ``stop``, returns a
:class:`~napari_astrosr.core.coadd.CoaddResult`) and one report (:func:`coadd_report`),
so the CLI and the widget run the same code and say the same things:

- ``ivar`` / ``median``: :func:`~napari_astrosr.core.coadd.ivar_coadd`,
  :func:`~napari_astrosr.core.coadd.median_coadd`;
- ``dip``: the AstroClearNet deep-image-prior fit,
  :func:`~napari_astrosr.models.dip_coadd.dip_coadd_job`.

Every result is checked against the inverse-variance coadd of the same stack: S_F and
source-masked sky sigma, and per-source flux of every S/N > 10 source of the ivar coadd
(forced photometry at its positions, by S/N bin; the image is first convolved with the
ivar coadd's PSF so both have the same resolution). The numbers go into
``result.metrics`` (``report`` block), the FITS header (``FLUX*``, ``SKYCHG``, ``SFGAIN``)
and :func:`report_lines` (what the CLI prints and the widget shows).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Optional, Union

import numpy as np

from .core.coadd import CoaddResult, FrameStack, as_stack, coadd_header, ivar_coadd, median_coadd
from .exceptions import AstroSRError
from .progress import NEVER, Progress

METHODS = ("dip", "ivar", "median")


@dataclass
class CoaddOptions:
    """Options of one coadd (CLI arguments and widget controls map onto these fields).

    The DIP defaults are the measured ones of ``docs/results_coadd.md``: the network learns
    a correction to the ivar coadd (skip term), the fit stops when the chi-square of held-out
    pixels reaches the noise model's expectation (pooled within 2 sd of 1, per frame within
    the Sidak-corrected 2 sd; only where :func:`~napari_astrosr.core.coadd.noise_map_check`
    trusts the noise maps to ``noise_tol_max``; ``noise_stop=False``: off) or stops improving
    (``holdout``/``patience``; ``iterations`` is only a cap), the sky offsets' mean is
    pinned, a sky gate keeps the smoothed ivar coadd where it shows no source (``gate``)
    and a final flux projection (``project``) gives every source the ivar coadd's flux.
    """

    method: str = "dip"
    homogenize: bool = False
    sigma_clip: Optional[float] = 3.0
    iterations: int = 600
    seed: int = 0
    device: str = "auto"
    sky: str = "fit"
    pedestal: bool = False
    superres: int = 1
    blind: bool = False
    ensemble: int = 1
    skip: bool = True
    skip_smooth: float = 0.0
    gate: Optional[Sequence[float]] = (2.0, 5.0)
    gate_sigma: float = 1.5
    lr: float = 5e-4
    chi2_stop: Optional[float] = None
    holdout: float = 0.1
    patience: int = 100
    noise_stop: bool = True
    noise_tol_max: float = 0.05
    min_iterations: int = 100
    project: bool = True
    project_iterations: int = 3
    pin_sky: bool = True
    kernel_sizes: Sequence[int] = (3, 5)
    preview_every: int = 100
    threads: Optional[int] = None
    report: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        """Raise :class:`AstroSRError` (one line naming the option) on an invalid value."""
        if self.method not in METHODS:
            raise AstroSRError(f"method={self.method!r}: use one of {', '.join(METHODS)}.")
        if self.method != "dip":
            return
        if int(self.iterations) < 1:
            raise AstroSRError(f"iterations={self.iterations}: must be at least 1.")
        if int(self.superres) not in (1, 2):
            raise AstroSRError(f"superres={self.superres}: use 1 or 2.")
        if int(self.ensemble) < 1:
            raise AstroSRError(f"ensemble={self.ensemble}: must be at least 1.")
        if not 0 <= float(self.holdout) < 0.5:
            raise AstroSRError(f"holdout={self.holdout}: use a fraction in [0, 0.5).")
        if self.sky not in ("fit", "none"):
            raise AstroSRError(f"sky={self.sky!r}: use 'fit' or 'none'.")
        if not float(self.noise_tol_max) >= 0:
            raise AstroSRError(f"noise_tol_max={self.noise_tol_max}: must be >= 0.")

    def dip_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`~napari_astrosr.models.dip_coadd.dip_coadd_job`."""
        keys = (
            "iterations",
            "seed",
            "device",
            "sky",
            "pedestal",
            "superres",
            "blind",
            "ensemble",
            "skip",
            "skip_smooth",
            "lr",
            "chi2_stop",
            "holdout",
            "patience",
            "noise_stop",
            "noise_tol_max",
            "min_iterations",
            "project",
            "project_iterations",
            "pin_sky",
            "gate",
            "gate_sigma",
            "kernel_sizes",
            "preview_every",
            "threads",
        )
        out = {k: getattr(self, k) for k in keys}
        out["kernel_sizes"] = tuple(int(k) for k in self.kernel_sizes)
        out["gate"] = tuple(float(v) for v in self.gate) if self.gate else None
        out.update(self.extra)
        return out

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (provenance)."""
        d = asdict(self)
        d["kernel_sizes"] = list(self.kernel_sizes)
        d["gate"] = list(self.gate) if self.gate else None
        return d


def stack_from_arrays(
    frames: Union[np.ndarray, Sequence[np.ndarray]],
    *,
    sigmas: Optional[np.ndarray] = None,
    weights: Optional[np.ndarray] = None,
    masks: Optional[np.ndarray] = None,
    psfs: Optional[Sequence[np.ndarray]] = None,
    psf_spec: Optional[str] = None,
    estimate_psfs: bool = False,
    wcs=None,
    header=None,
    stop=NEVER,
) -> Generator[Progress, None, FrameStack]:
    """Frames held in memory (widget layers, API arrays) -> a :class:`FrameStack`.

    ``weights`` (inverse variance; ``<= 0`` masked) or ``sigmas`` give the noise, else sep
    estimates it; PSFs from ``psfs``, a ``psf_spec`` (``gaussian:1.5``...) for every frame,
    or ``estimate_psfs`` (photutils ePSF per frame, one progress event each).
    """
    from .core import coadd as cc

    data = np.asarray(frames, dtype=np.float32)
    if weights is not None:
        sigmas, wmask = cc.noise_from_weights(np.asarray(weights))
        masks = wmask if masks is None else (np.asarray(masks, bool) | wmask)
    if psf_spec:
        from .core.psf import parse_psf

        k = parse_psf(psf_spec)
        psfs = None if k is None else [k] * len(data)
    elif estimate_psfs:
        psfs = []
        for i, f in enumerate(data):
            yield Progress(i, len(data), f"estimating the PSF of frame {i + 1}/{len(data)}")
            if stop.is_set():
                break
            psfs.append(cc.estimate_psf(f, mask=None if masks is None else masks[i], where=f"frame {i + 1}"))
        if len(psfs) < len(data):
            psfs = None
    stack = as_stack(data, sigmas=sigmas, masks=masks, psfs=psfs)
    if wcs is not None:
        stack.wcs = wcs
    if header is not None:
        stack.header = header
    return stack


def coadd_job(
    stack: FrameStack,
    *,
    options: CoaddOptions,
    stop=NEVER,
) -> Generator[Progress, None, CoaddResult]:
    """Coadd ``stack`` with ``options``; the result carries the report (see the module docs).

    Parameters
    ----------
    stack
        Registered frames with noise, masks and (for DIP / homogenised ivar) PSFs.
    options
        :class:`CoaddOptions`.
    stop
        ``is_set()`` -> True ends a DIP fit early; its current latent is returned (and
        reported, ``stop_reason = "stopped"``).

    Returns
    -------
    CoaddResult
        Image, uncertainty, residuals, header and ``metrics`` (with ``metrics["report"]``).
    """
    options.check()
    if options.method in ("dip",) or options.homogenize:
        if stack.psfs is None:
            raise AstroSRError(
                f"PSF: method {options.method} needs one PSF per frame (--psf / --psf-from-fwhm, "
                "or the widget's PSF choice)."
            )
    if options.method == "ivar":
        yield Progress(0, 1, "inverse-variance coadd")
        res = ivar_coadd(stack, homogenize=options.homogenize)
        res.header = coadd_header(res.header, method="ivar", n_frames=stack.n)
    elif options.method == "median":
        yield Progress(0, 1, "median coadd")
        res = median_coadd(stack, sigma_clip=options.sigma_clip or None)
        res.header = coadd_header(res.header, method="median", n_frames=stack.n)
    else:
        from .models.dip_coadd import dip_coadd_job

        res = yield from dip_coadd_job(stack, metrics=False, stop=stop, **options.dip_kwargs())
    if options.report and stop.is_set():
        # Stop must act within a second: the check (detection, photometry) is skipped and
        # the result says so
        res.metrics["report"] = {"checked": "nothing: stopped by the user before the check"}
    elif options.report:
        yield Progress(1, 1, "checking flux, sky sigma and sharpness against the ivar coadd")
        rep = coadd_report(res, stack)
        res.metrics["report"] = rep
        for k in ("sharpness_gain", "sky_sigma_change", "flux_ratio_median", "flux_ratio_min", "n_sources", "flux_ok"):
            if k in rep:
                res.metrics[k] = rep[k]
        _report_header(res, rep)
    return res


def coadd_report(result: CoaddResult, stack: FrameStack) -> dict[str, Any]:
    """S_F, sky sigma and per-source flux (by S/N bin) of ``result`` against the ivar coadd.

    The image is compared on the frame grid (a 2x latent is block-summed, which conserves
    flux); for per-source flux it is convolved with the ivar coadd's PSF (the frames' PSFs
    weighted by their inverse variance) when it is sharper than that (DIP), so apertures,
    crowding and local backgrounds treat both alike.
    """
    from .core.coadd import image_metrics, source_flux_report
    from .core.psf import measure_fwhm

    iv = ivar_coadd(stack)
    img = np.asarray(result.data, np.float64)
    s = img.shape[0] // stack.shape[0]
    if s > 1:
        from .core.resample import block_sum

        img = block_sum(img, s)
    m_img, m_iv = image_metrics(img), image_metrics(iv.data)
    out: dict[str, Any] = {
        "sharpness": m_img["sharpness"],
        "ivar_sharpness": m_iv["sharpness"],
        "sky_sigma": m_img["sky_sigma"],
        "ivar_sky_sigma": m_iv["sky_sigma"],
        "sharpness_gain": (m_img["sharpness"] - m_iv["sharpness"]) / abs(m_iv["sharpness"]),
        "sky_sigma_change": (m_img["sky_sigma"] - m_iv["sky_sigma"]) / m_iv["sky_sigma"],
    }
    if stack.psfs is None:
        out["checked"] = "S_F and sky sigma against the ivar coadd; per-source flux not checked (no PSF given)"
        return out
    fwhm = max(measure_fwhm(p) for p in stack.psfs)
    kernel = None
    if result.method == "dip":
        from .models.dip_coadd import effective_psf

        kernel = effective_psf(stack)
    fl = source_flux_report(
        img, iv.data, fwhm=fwhm, reference_sigma=iv.uncertainty, mask=~np.isfinite(iv.data), match_kernel=kernel
    )
    fl.pop("table", None)
    out.update(fl)
    out["checked"] = (
        "S_F and source-masked sky sigma against the ivar coadd; "
        + fl["checked"]
        + ("; DIP image convolved with the ivar coadd's PSF first" if kernel is not None else "")
    )
    return out


def _report_header(res: CoaddResult, rep: dict[str, Any]) -> None:
    """Summarise the report in the FITS header (NaN-free values only)."""
    if res.header is None:
        return

    def put(key, val, comment):
        if isinstance(val, (bool, np.bool_)) or (isinstance(val, (int, float)) and np.isfinite(val)):
            res.header[key] = (val if isinstance(val, (bool, np.bool_, int)) else round(float(val), 5), comment)

    put("SFGAIN", rep.get("sharpness_gain"), "S_F change vs ivar coadd (fraction)")
    put("SKYCHG", rep.get("sky_sigma_change"), "sky sigma change vs ivar coadd (fraction)")
    if "n_sources" in rep:
        put("FLUXN", int(rep["n_sources"]), "S/N>10 sources in the flux check")
        put("FLUXMED", rep.get("flux_ratio_median"), "median flux / ivar-coadd flux")
        put("FLUXMIN", rep.get("flux_ratio_min"), "lowest flux / ivar-coadd flux")
        put("FLUXOK", bool(rep.get("flux_ok")), "flux within 2% per S/N bin, none < 0.9")


def report_lines(result: CoaddResult) -> list[str]:
    """What was checked and what came out, as short lines (CLI output, widget text)."""
    from .core.coadd import format_flux_bins

    m = result.metrics or {}
    rep = m.get("report") or {}
    lines = []
    if result.method == "dip":
        stop_txt = {
            "noise": "held-out chi2 at the noise model's expectation",
            "validation": "held-out chi2 stopped improving",
            "budget": "step cap reached",
            "stopped": "stopped by the user",
            "chi2": "chi2 reached its target",
            "plateau": "loss plateau",
        }
        lines.append(
            f"DIP: {m.get('steps')} steps in {m.get('seconds', float('nan')):.1f} s "
            f"({stop_txt.get(m.get('stop_reason'), m.get('stop_reason'))}), chi2 {m.get('chi2', float('nan')):.3f}"
            + (f", held-out chi2 {m['val_chi2']:.3f}" if m.get("val_chi2") is not None else "")
        )
        if m.get("stop_detail"):
            from .models.dip_coadd import stop_line

            lines.append(stop_line(m["stop_detail"]))
    if rep:
        lines.append(f"checked: {rep.get('checked', '')}")
    if "sharpness_gain" in rep:
        lines.append(
            f"S_F {100 * rep['sharpness_gain']:+.1f}%, sky sigma {100 * rep['sky_sigma_change']:+.1f}% vs ivar coadd"
        )
        if "bins" in rep:
            verdict = "flux kept" if rep.get("flux_ok") else "FLUX NOT KEPT"
            lines.append(
                f"{verdict}: {rep['n_sources']} sources, median {rep['flux_ratio_median']:.3f}, "
                f"min {rep['flux_ratio_min']:.3f}, {rep['n_below_floor']} below 0.9"
            )
            lines += ["  " + b for b in format_flux_bins(rep)]
    return lines

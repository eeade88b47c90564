"""Deep-image-prior multi-frame coaddition (AstroClearNet) as a long job.

The CLI and the widget call it through :func:`napari_astrosr.coadd_job.coadd_job` (one
options model, one report); this module holds the torch fit and its finishing steps
(:func:`gate_sky`, :func:`project_flux`).

``dip_coadd_job`` fits :class:`~napari_astrosr.models.astroclearnet.AstroClearNet` to one
stack (no training data: the network's structure is the prior). Loss: Huber on residuals
scaled by each pixel's sigma, over unmasked pixels; Adam (lr 5e-4, x0.95 every 1000 steps).
By default (``skip=True``, beyond the paper) the inverse-variance coadd is added to the
network output before the ReLU, so the fit starts at the classical coadd and learns a
correction; ``skip=False, lr=2e-3`` is the paper's flat start.
It yields :class:`~napari_astrosr.progress.Progress` events with the loss and, every
``preview_every`` steps, a preview of the latent; setting ``stop`` returns the current
latent (not an error). It ends at the step budget or on a plateau of the loss.

Finishing (options, on by default in ``coadd_job``): a sky gate blends back to the
Gaussian-smoothed ivar coadd where that shows no source (lower pixel noise, correlated), and
a flux projection adds the smoothed residual ``ivar - latent * PSF_eff`` so every source's
aperture flux becomes the ivar coadd's.

Flux. The latent is a deconvolved image on the frames' grid (or 2x finer): convolved with
frame i's PSF (and block-summed for ``superres=2``) it reproduces frame i, so the flux of a
source in the latent equals its flux in the frames (and in their ivar coadd) when measured
in apertures large enough for the frames' PSFs. The returned image is the latent plus the
mean fitted sky offset, i.e. on the input's (background-subtracted) zero point.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Sequence
from typing import Any, Optional, Union

import numpy as np

from ..core.coadd import CoaddResult, FrameStack, as_stack, coadd_header, compare_fluxes, image_metrics, ivar_coadd
from ..exceptions import AstroSRError
from ..progress import NEVER, Progress


def pick_device(device: str = "auto") -> str:
    """The torch device to use (``models.inference.pick_device``: auto -> cuda, mps, cpu)."""
    from .inference import pick_device as _pick

    return _pick(device)


def _fill_masked(data: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Network input: masked pixels replaced by the median of the other frames there (0 if none)."""
    masked = np.where(mask, np.nan, data)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(masked, axis=0)
    med = np.nan_to_num(med)
    return np.where(mask, med[None], data).astype(np.float32)


def _pad_psfs(psfs: Sequence[np.ndarray], superres: int) -> np.ndarray:
    from ..core.coadd import crop_psf
    from ..core.psf import resample_psf

    ps = [np.asarray(p, np.float64) for p in psfs]
    if superres > 1:
        ps = [
            resample_psf(p if p.shape[0] == p.shape[1] else crop_psf(p, max(p.shape) | 1), float(superres)) for p in ps
        ]
    size = int(max(max(p.shape) for p in ps)) | 1
    out = np.stack([crop_psf(p, size) for p in ps])
    return out / out.sum(axis=(1, 2), keepdims=True)


def _net_input(filled: np.ndarray, latent_shape: tuple[int, int], superres: int) -> np.ndarray:
    """Frames reflect-padded (and for superres, bilinearly upsampled) to the latent grid."""
    import torch
    import torch.nn.functional as F

    n, h, w = filled.shape
    hl, wl = latent_shape
    t = torch.from_numpy(filled)[None]
    if superres == 1:
        py, px = (hl - h) // 2, (wl - w) // 2
        # reflect padding needs pad < size; tile by repeated reflection for tiny frames
        while py > 0 or px > 0:
            sy, sx = min(py, t.shape[-2] - 1), min(px, t.shape[-1] - 1)
            t = F.pad(t, (sx, sx, sy, sy), mode="reflect")
            py, px = py - sy, px - sx
        return t[0].numpy()
    q = int(np.ceil(max(hl - superres * h, wl - superres * w) / (2 * superres))) + 1
    qq = min(q, h - 1, w - 1)
    tp = F.pad(t, (qq, qq, qq, qq), mode="reflect")
    if qq < q:
        tp = F.pad(tp, (q - qq,) * 4, mode="replicate")
    up = F.interpolate(tp, scale_factor=superres, mode="bilinear", align_corners=False) / (superres * superres)
    H, W = up.shape[-2:]
    oy, ox = (H - hl) // 2, (W - wl) // 2
    return up[0, :, oy : oy + hl, ox : ox + wl].contiguous().numpy()


def dip_coadd_job(
    frames: Union[np.ndarray, Sequence[np.ndarray], FrameStack],
    *,
    psfs: Optional[Sequence[np.ndarray]] = None,
    sigmas: Optional[np.ndarray] = None,
    masks: Optional[np.ndarray] = None,
    iterations: int = 2000,
    seed: int = 0,
    sky: str = "fit",
    floor_sigmas: float = 5.0,
    pedestal: bool = False,
    superres: int = 1,
    blind: bool = False,
    device: str = "auto",
    ensemble: int = 1,
    lr: float = 5e-4,
    lr_decay: float = 0.95,
    lr_step: int = 1000,
    huber_delta: float = 1.0,
    ema: float = 0.99,
    plateau_tol: float = 2e-4,
    plateau_window: int = 200,
    min_iterations: int = 300,
    preview_every: int = 100,
    kernel_sizes: Sequence[int] = (3, 5, 7, 9),
    multiplier: int = 2,
    hidden: int = 32,
    skip: bool = True,
    chi2_stop: Optional[float] = None,
    warmup: int = 0,
    channels_last: bool = True,
    metrics: bool = True,
    skip_smooth: float = 0.0,
    holdout: float = 0.0,
    patience: int = 100,
    val_every: int = 10,
    val_tol: float = 1e-3,
    noise_stop: bool = True,
    noise_nsd: float = 2.0,
    noise_tol_max: float = 0.05,
    project: bool = False,
    project_sigma: Optional[float] = None,
    project_iterations: int = 1,
    pin_sky: bool = False,
    gate: Optional[Sequence[float]] = None,
    gate_sigma: float = 1.5,
    wcs=None,
    header=None,
    threads: Optional[int] = None,
    stop=NEVER,
) -> Generator[Progress, None, CoaddResult]:
    """Deep-image-prior coadd of registered frames (AstroClearNet).

    Parameters
    ----------
    frames
        (N, H, W) stack, list of frames, or a :class:`~napari_astrosr.core.coadd.FrameStack`
        (its sigma, mask, PSFs, WCS and header are used).
    psfs
        One odd PSF per frame (frame pixels); required unless ``frames`` carries them.
    sigmas, masks
        Noise maps (or per-frame scalars) and bad-pixel masks (True = bad); see
        :func:`~napari_astrosr.core.coadd.as_stack`.
    iterations
        Step budget (per ensemble member).
    seed
        Seed of ``torch.manual_seed`` (member k uses ``seed + k``): same inputs and seed
        give the same latent on the same device.
    sky
        ``"fit"``: learn one sky offset per frame; ``"none"``: frames are assumed sky-free.
    pedestal
        Learn a small floor below the latent's ReLU (see the model docs).
    superres
        1 or 2: latent on the frame grid or 2x finer.
    blind
        Learn the PSFs too (softmax parametrisation: non-negative, unit sum).
    device
        ``"auto"`` (cuda, mps, cpu), ``"cpu"``, ``"cuda"``, ``"mps"``.
    ensemble
        Number of seeds; with K > 1 the result is their mean. ``uncertainty`` (any K) is
        the frames' noise propagated through the finished image (:func:`finished_noise`)
        and, for K > 1, the members' per-pixel scatter, in quadrature. It is an error bar
        for sky pixels (1-sigma coverage of the truth 0.58-0.67 on simulated stacks), not
        for source pixels, whose error is the DIP image's unknown resolution (see
        ``docs/results_coadd.md``).
    ema
        Decay of the exponential moving average of the latent that is returned (0: the last
        iterate). Previews show the current iterate.
    plateau_tol, plateau_window, min_iterations
        Stop early when the mean loss over the last window improved by less than
        ``plateau_tol`` (relative) on the previous window, after ``min_iterations``.
    skip
        Add the inverse-variance coadd (on the latent grid) to the network's output before
        the ReLU, so the latent starts at the classical coadd and the network learns the
        correction. A departure from the paper (its latent starts flat); see
        ``docs/results_coadd.md`` for the measured effect.
    chi2_stop
        Stop once the mean (residual/sigma)^2 over unmasked pixels of the current iterate
        falls to this value (e.g. 1.0: the discrepancy principle: fitting further would fit
        the noise), after ``min_iterations``. None: off.
    skip_smooth
        Gaussian sigma (frame pixels) of a flux-conserving smoothing of the ivar coadd before it
        becomes the skip term (0: none). The latent then starts without the coadd's pixel
        noise; the PSF-convolved data term barely constrains pixel-scale noise in the latent,
        so it stays low unless the data demand structure there (sources).
    holdout, patience, val_every, val_tol
        Hold out this fraction of the unmasked pixels of every frame from the loss; every
        ``val_every`` steps the returned (EMA) latent's chi-square on them is measured, and
        the fit stops when it has not improved by a fraction ``val_tol`` for ``patience`` steps (after
        ``min_iterations``), returning the latent of the best validation chi-square. A
        stopping rule from the data, not a step budget (``iterations`` is then a cap).
    noise_stop, noise_nsd, noise_tol_max
        The noise model's stopping rule (with ``holdout``): at every validation the held-out
        chi-square per pixel, ``(frame - model)^2 / sigma^2`` through each frame's PSF, is
        measured pooled and per frame; the fit stops (``stop_reason = "noise"``) once the
        pooled value is within ``noise_nsd`` standard deviations of 1 (two-sided;
        ``sd = sqrt(2 / n_held_out)``) and every frame's within ``z_N`` of its own sd, where
        ``z_N`` makes the N per-frame tests together as likely to pass for the truth as one
        ``noise_nsd`` test (Sidak: 2.83 sd for 10 frames at 2 sd; with 2 sd per frame the truth
        itself would fail one of 10 frames 37% of the time): the model then predicts pixels it
        never saw to within their noise, and fitting further can only fit noise. Used only where
        the noise maps are trustworthy: every frame's
        :func:`~napari_astrosr.core.coadd.noise_map_check` within ``noise_tol_max`` (plus twice
        the check's own sd, ``1.17 / sqrt(n_sky)``) of 1 (else only the plateau of the held-out
        chi-square stops the fit). ``metrics["stop_detail"]`` says which rule stopped the fit,
        with the values.
    project, project_sigma
        Final flux projection: add ``G * (ivar - latent * PSF_eff)`` to the latent, where
        ``PSF_eff`` is the ivar-weighted mean PSF (the ivar coadd's PSF) and ``G`` a unit-sum
        Gaussian of sigma ``project_sigma`` frame pixels (default: the widest PSF's sigma).
        Smoothing conserves flux, so every source's flux in apertures wider than the PSF
        becomes the ivar coadd's, while the pixel noise the step adds is that of the ivar
        residual averaged over ``~4 pi sigma^2`` pixels.
    gate, gate_sigma
        ``(low, high)`` sigma levels of a sky gate (:func:`~napari_astrosr.core.skygate.sky_gate`):
        where the ivar coadd smoothed by a Gaussian of ``gate_sigma`` frame pixels is below
        ``low`` sigma of its own noise the output is that smoothed coadd, above ``high`` the
        DIP latent, linear in between. Smoothing conserves flux; it lowers the sky's pixel
        noise but correlates it (no information is created). None: off. Applied before the
        flux projection.
    pin_sky
        Keep the mean of the fitted sky offsets at its start (only their differences are
        fitted), so the latent's sky cannot drift onto the ReLU floor (where noise is clipped).
    warmup
        Linear learning-rate warm-up over this many steps (0: none).
    channels_last
        Run the encoder in torch's channels-last memory format (faster depthwise
        convolutions on CPU; same result to float rounding).
    metrics
        Compute sharpness, sky sigma and per-source flux against the ivar coadd.
    stop
        ``is_set()`` -> True ends the fit and returns the current latent.

    Returns
    -------
    CoaddResult
        ``data`` on the first frame's grid (x``superres``), its WCS, a provenance header,
        per-frame ``residuals`` (frame - model, 0 where masked), fitted ``sky`` offsets,
        ``psfs`` (learned in blind mode) and ``metrics``.
    """
    from .._extras import require

    require("torch", extra="ml", what="the DIP coadd (--method dip)")
    import torch

    from ..models.astroclearnet import AstroClearNet, PSFDecoder

    if sky not in ("fit", "none"):
        raise AstroSRError(f"sky={sky!r}: use 'fit' or 'none'.")
    if superres not in (1, 2):
        raise AstroSRError(f"superres={superres}: use 1 or 2.")
    if int(iterations) < 1:
        raise AstroSRError(f"iterations={iterations}: must be at least 1.")
    if int(ensemble) < 1:
        raise AstroSRError(f"ensemble={ensemble}: must be at least 1.")
    if isinstance(frames, FrameStack):
        stack = frames
        if psfs is not None:
            stack = FrameStack(**{**stack.__dict__})
            stack.psfs = as_stack(stack.data, sigmas=stack.sigma, masks=stack.mask, psfs=psfs).psfs
    else:
        stack = as_stack(frames, sigmas=sigmas, masks=masks, psfs=psfs, require_psfs=True)
    if stack.psfs is None:
        raise AstroSRError("psfs: the DIP coadd needs one PSF per frame (--psf, --psf-from-fwhm, or estimate).")
    wcs = wcs if wcs is not None else stack.wcs
    header = header if header is not None else stack.header
    dev = pick_device(device)
    n, h, w = stack.data.shape
    s = int(superres)

    psf_arr = _pad_psfs(stack.psfs, s)
    p = psf_arr.shape[1]
    latent_shape = (s * h + p - 1, s * w + p - 1)
    # Normalise so the *latent* is O(1): a point source's latent peak is about its frame
    # peak / PSF peak. With the raw noise scale the last layer's weights would have to grow
    # to ~1e3 at Adam's ~lr per step, which costs thousands of steps (measured: 4x slower).
    # The loss is scale-free (residual / sigma), so this changes only the optimisation path.
    good = stack.data[~stack.mask]
    peak = float(np.percentile(np.abs(good), 99.9)) if good.size else 1.0
    noise = float(np.median(stack.sigma[~stack.mask])) if good.size else 1.0
    # (x s^2 for superres: a fine pixel holds 1/s^2 of the flux, and its sky/noise must sit at
    # the same size relative to Adam's steps as on the frame grid; without it one step
    # pushed the whole 2x latent below the ReLU floor with skip=True, measured)
    scale = max(peak, 5.0 * noise, 1e-30) / (float(np.mean(psf_arr.max(axis=(1, 2)))) * s * s)
    d_n = stack.data / scale
    s_n = stack.sigma / scale
    # Background handling: with fitted sky offsets the latent's sky starts (and can stay)
    # `floor_sigmas` frame-noise units above the ReLU's zero, the offsets starting at minus
    # that, so negative noise excursions and slightly negative sky are not clipped.
    level = float(floor_sigmas) * noise / scale if sky == "fit" else 0.01 * noise / scale
    x_in = _net_input(_fill_masked(d_n, stack.mask), latent_shape, s)
    skip_in = None
    if skip:
        w_n = np.where(stack.mask, 0.0, 1.0 / np.maximum(s_n.astype(np.float64), 1e-30) ** 2)
        wsum = w_n.sum(axis=0)
        iv_n = np.where(wsum > 0, (w_n * d_n).sum(axis=0) / np.where(wsum > 0, wsum, 1.0), 0.0)
        # same padding/upsampling as the network input: flux per latent pixel stays consistent
        if skip_smooth and skip_smooth > 0:
            from scipy.ndimage import gaussian_filter

            iv_n = gaussian_filter(iv_n, float(skip_smooth), mode="reflect", truncate=3.0)
        skip_in = _net_input(iv_n[None].astype(np.float32), latent_shape, s)
    # held-out validation pixels (the same for every member: the rule, not the seed, decides)
    hold = np.zeros(stack.data.shape, bool)
    if holdout and holdout > 0:
        if not 0 < float(holdout) < 0.5:
            raise AstroSRError(f"holdout={holdout}: use a fraction between 0 and 0.5.")
        hold = (~stack.mask) & (np.random.default_rng(int(seed)).random(stack.data.shape) < float(holdout))
    # held-out pixels per frame and the sd of their mean chi2 under the noise model (chi2_1 / n)
    n_hold = hold.sum(axis=(1, 2)).astype(np.float64)
    n_hold_all = float(n_hold.sum())
    noise_ratio = None
    noise_trusted = False
    if noise_stop and n_hold_all > 0:
        from ..core.coadd import noise_map_check

        noise_ratio, n_sky = noise_map_check(stack.data, stack.sigma, stack.mask, return_n=True)
        # tolerance: the systematic allowance plus twice the estimate's own sd (small frames)
        tol = float(noise_tol_max) + 2.0 * 1.17 / np.sqrt(np.maximum(n_sky, 1))
        used = n_hold > 0
        noise_trusted = bool(
            used.any()
            and np.all(np.isfinite(noise_ratio[used]))
            and np.all(np.abs(noise_ratio[used] - 1.0) <= tol[used])
        )
    sd_all = float(np.sqrt(2.0 / n_hold_all)) if n_hold_all > 0 else float("nan")
    sd_frames = np.sqrt(2.0 / np.maximum(n_hold, 1.0))
    nsd_frames = _sidak_nsd(float(noise_nsd), int((n_hold > 0).sum()))

    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        members = []
        t0 = time.perf_counter()
        total = int(iterations) * int(ensemble)
        done = 0
        stopped = False
        for k in range(int(ensemble)):
            torch.manual_seed(int(seed) + k)
            net = AstroClearNet(
                n,
                kernel_sizes=kernel_sizes,
                multiplier=multiplier,
                hidden=hidden,
                pedestal=pedestal,
                init_level=level,
                last_std=0.0 if skip else 1e-2,
            ).to(dev)
            dec = PSFDecoder(
                torch.from_numpy(psf_arr.astype(np.float32)),
                latent_shape,
                superres=s,
                blind=blind,
                fit_sky=(sky == "fit"),
                sky_init=-level * s * s if sky == "fit" else 0.0,
            ).to(dev)
            xt = torch.from_numpy(x_in)[None].to(dev)
            if channels_last:
                net = net.to(memory_format=torch.channels_last)
                xt = xt.contiguous(memory_format=torch.channels_last)
            st_skip = torch.from_numpy(skip_in)[None].to(dev) if skip_in is not None else None
            dt = torch.from_numpy(d_n.astype(np.float32)).to(dev)
            wt = torch.from_numpy((~stack.mask & ~hold).astype(np.float32) / s_n.astype(np.float32)).to(dev)
            vt = torch.from_numpy(hold.astype(np.float32) / s_n.astype(np.float32)).to(dev) if hold.any() else None
            nvalid = float((~stack.mask & ~hold).sum())
            nval = float(hold.sum())
            best_val, best_step, best_lat, best_sky = float("inf"), 0, None, None
            best_frames: Optional[np.ndarray] = None
            val_hist: list[tuple[int, float]] = []
            val_frames = None
            val_seconds = 0.0
            # superres: a fine pixel's sky and noise are 1/s^2 of a frame pixel's while a point
            # source's peak is not, so Adam's (scale-free) steps are s^2 larger relative to
            # the noise; lr / s^2 keeps them comparable (measured: at lr the first step pushed
            # the 2x latent below the ReLU floor with skip=True)
            lr_eff = float(lr) / (s * s)
            params = [{"params": net.parameters()}]
            if sky == "fit":
                params.append({"params": [dec.sky]})
            if blind:
                params.append({"params": [dec.logits], "lr": lr_eff * 0.5})
            opt = torch.optim.Adam(params, lr=lr_eff)
            sky0 = -level * s * s
            base_lrs = [g["lr"] for g in opt.param_groups]
            losses: list[float] = []
            ema_lat = ema_sky = None
            step = 0
            reason = "budget"
            t_member = time.perf_counter()
            for step in range(1, int(iterations) + 1):
                # linear warm-up (Adam's first steps are full-size whatever the gradient; from the
                # skip start they threw the fit away from the coadd) then x lr_decay per lr_step
                f = min(1.0, step / warmup) if warmup and warmup > 0 else 1.0
                f *= float(lr_decay) ** ((step - 1) // int(lr_step))
                for g, b0 in zip(opt.param_groups, base_lrs):
                    g["lr"] = b0 * f
                opt.zero_grad(set_to_none=True)
                latent = net(xt, st_skip)
                model = dec(latent)
                r = (model - dt) * wt
                loss = (
                    torch.nn.functional.huber_loss(r, torch.zeros_like(r), delta=huber_delta, reduction="sum") / nvalid
                )
                chi2_now = float((r.detach() ** 2).sum()) / nvalid if chi2_stop is not None else None
                loss.backward()
                opt.step()
                if pin_sky and dec.sky is not None:
                    # latent + c with sky - c is the same model: without pinning the mean offset
                    # the latent's sky drifted onto the ReLU floor and the noise was clipped
                    # (sky sigma -100% on a simulation, faint sources biased); measured
                    with torch.no_grad():
                        dec.sky.sub_(dec.sky.mean() - sky0)
                if ema:
                    # exponential moving average of the latent (and sky): Adam + batch norm make the
                    # DIP solution wander around the optimum (measured: loss oscillating
                    # +-15% over ~300 steps); the average is steadier and closer to the truth
                    with torch.no_grad():
                        cur = latent.detach()[0, 0]
                        cur_sky = dec.sky.detach().clone() if dec.sky is not None else None
                        if ema_lat is None:
                            ema_lat, ema_sky = cur.clone(), cur_sky
                        else:
                            ema_lat.mul_(ema).add_(cur, alpha=1 - ema)
                            if cur_sky is not None:
                                ema_sky.mul_(ema).add_(cur_sky, alpha=1 - ema)
                lv = float(loss.detach())
                if not np.isfinite(lv):
                    raise AstroSRError(
                        "DIP coadd diverged (loss is not finite); try a lower learning rate or check the noise maps."
                    )
                losses.append(lv)
                done += 1
                preview = None
                if preview_every and step % int(preview_every) == 0:
                    c = (p - 1) // 2
                    preview = (latent.detach()[0, 0, c : c + s * h, c : c + s * w].cpu().numpy() * scale).astype(
                        np.float32
                    )
                noise_met = False
                if vt is not None and ema_lat is not None and (step % int(val_every) == 0):
                    tv = time.perf_counter()
                    with torch.no_grad():
                        mv = dec_eval(dec, ema_lat, ema_sky)
                        r2v = ((mv - dt) * vt) ** 2
                        # (the pooled sum as before this rule, so the best step, and the image
                        # when the rule does not fire, are the same to the bit)
                        v = float(r2v.sum()) / nval
                        per = r2v.sum(dim=(1, 2)).double().cpu().numpy()
                    val_frames = np.where(n_hold > 0, per / np.maximum(n_hold, 1.0), np.nan)
                    val_hist.append((step, v))
                    # the noise model's expectation: chi2 per pixel 1 +- nsd sd pooled, +- nsd_frames
                    # sd in every frame
                    noise_met = bool(
                        noise_trusted
                        and abs(v - 1.0) <= float(noise_nsd) * sd_all
                        and np.all(np.abs(val_frames - 1.0)[n_hold > 0] <= nsd_frames * sd_frames[n_hold > 0])
                    )
                    if v < best_val * (1 - float(val_tol)) or (noise_met and step >= min_iterations):
                        best_val, best_step, best_frames = v, step, val_frames
                        best_lat = ema_lat.clone()
                        best_sky = ema_sky.clone() if ema_sky is not None else None
                    val_seconds += time.perf_counter() - tv
                if step % 10 == 0 or preview is not None or step == 1:
                    # estimate from the first step on: the rate so far times the steps left
                    # (an upper bound when a stopping rule ends the fit early)
                    rate = step / max(time.perf_counter() - t_member, 1e-9)
                    left = (total - done) / rate
                    msg = f"seed {int(seed) + k}: step {step}, loss {lv:.4f}, <= {_fmt_s(left)} left"
                    if val_hist:
                        msg += f", held-out chi2 {val_hist[-1][1]:.3f}"
                    yield Progress(
                        step=done,
                        total=total,
                        message=msg,
                        preview=preview,
                        values={
                            "loss": lv,
                            "step": step,
                            "member": k,
                            "eta_s": left,
                            "val_chi2": val_hist[-1][1] if val_hist else None,
                        },
                    )
                if stop.is_set():
                    stopped = True
                    reason = "stopped"
                    break
                if chi2_now is not None and step >= min_iterations and chi2_now <= float(chi2_stop):
                    reason = "chi2"
                    break
                if noise_met and step >= min_iterations:
                    reason = "noise"
                    break
                if vt is not None and step >= min_iterations and step - best_step >= int(patience):
                    reason = "validation"
                    break
                if plateau_tol and step >= max(min_iterations, 2 * plateau_window) and step % 50 == 0:
                    a = float(np.mean(losses[-plateau_window:]))
                    b = float(np.mean(losses[-2 * plateau_window : -plateau_window]))
                    if (b - a) / max(abs(b), 1e-12) < plateau_tol:
                        reason = "plateau"
                        break
            t_end = time.perf_counter()
            with torch.no_grad():
                if best_lat is not None:
                    latent = best_lat[None, None]
                    if best_sky is not None:
                        dec.sky.copy_(best_sky)
                elif ema and ema_lat is not None and step > 1:
                    latent = ema_lat[None, None]
                    if ema_sky is not None:
                        dec.sky.copy_(ema_sky)
                else:  # no average yet: one more forward pass of the current network
                    latent = net(xt, st_skip)
                model = dec(latent)
                members.append(
                    {
                        "latent": latent[0, 0].cpu().numpy().astype(np.float64) * scale,
                        "model": model.cpu().numpy().astype(np.float64) * scale,
                        "sky": (dec.sky.cpu().numpy().astype(np.float64) * scale)
                        if dec.sky is not None
                        else np.zeros(n),
                        "psfs": dec.psfs().cpu().numpy().astype(np.float64),
                        "pedestal": float(net.pedestal().detach().cpu()) * scale if pedestal else 0.0,
                        "steps": step,
                        "reason": reason,
                        "loss": losses[-1] if losses else float("nan"),
                        "best_step": best_step,
                        "val_chi2": best_val if np.isfinite(best_val) else None,
                        "val_hist": val_hist,
                        "val_frames": best_frames,
                        "last_frames": val_frames,
                        "val_seconds": val_seconds,
                        "fit_seconds": t_end - t_member,
                    }
                )
            if stopped:
                break
        elapsed = time.perf_counter() - t0
    finally:
        if threads:
            torch.set_num_threads(old_threads)

    c = (p - 1) // 2
    # the sky offsets are per frame pixel; a latent pixel is 1/s^2 of one
    imgs = np.stack([m["latent"][c : c + s * h, c : c + s * w] + m["sky"].mean() / (s * s) for m in members])
    # The finishing steps are linear in the latent for a fixed gate (the gate's weights come
    # from the ivar coadd alone), so finishing each member and averaging equals finishing the
    # mean; the members' scatter is then measured on what is returned.
    gate_map = None
    gate_info = None
    if gate:
        fin = []
        for im in imgs:
            out, gate_info = gate_sky(im, stack, superres=s, levels=gate, sigma=gate_sigma)
            fin.append(out)
        gate_map = gate_info.pop("weights")
        imgs = np.stack(fin)
    if project:
        imgs = np.stack(
            [project_flux(im, stack, superres=s, sigma=project_sigma, iterations=project_iterations) for im in imgs]
        )
    data = imgs.mean(axis=0).astype(np.float32)
    seed_std = imgs.std(axis=0, ddof=1) if len(members) > 1 else None
    # (skipped after Stop, which must return within a second: the result then has the seed
    # scatter only, or no map)
    noise = 0.0
    if not stopped:
        noise = finished_noise(
            stack,
            gate_map=gate_map,
            gate_sigma=gate_sigma if gate else None,
            superres=s,
            project_sigma=project_sigma,
            project_iterations=project_iterations if project else 0,
            seed=int(seed),
        )
    unc = None
    if not stopped or seed_std is not None:
        unc = np.sqrt(noise**2 + (seed_std**2 if seed_std is not None else 0.0)).astype(np.float32)
    model = np.mean([m["model"] for m in members], axis=0)
    resid = np.where(stack.mask, 0.0, stack.data - model).astype(np.float32)
    sky_fit = np.mean([m["sky"] for m in members], axis=0)
    psfs_out = [q for q in np.mean([m["psfs"] for m in members], axis=0)]
    steps_total = int(sum(m["steps"] for m in members))
    chi2 = float(np.mean((resid[~stack.mask] / stack.sigma[~stack.mask]) ** 2))
    chi2_frames = [
        float(np.mean((resid[i][~stack.mask[i]] / stack.sigma[i][~stack.mask[i]]) ** 2))
        if (~stack.mask[i]).any()
        else float("nan")
        for i in range(n)
    ]
    out_wcs = wcs
    if wcs is not None and s > 1:
        from ..core.resample import scale_wcs

        out_wcs = scale_wcs(wcs, float(s))
    par = {
        "iterations": int(iterations),
        "seed": int(seed),
        "sky": sky,
        "floor_sigmas": floor_sigmas,
        "pedestal": bool(pedestal),
        "superres": s,
        "blind": bool(blind),
        "ensemble": int(ensemble),
        "lr": lr,
        "lr_decay": lr_decay,
        "lr_step": lr_step,
        "huber_delta": huber_delta,
        "ema": ema,
        "skip": bool(skip),
        "chi2_stop": chi2_stop,
        "warmup": int(warmup),
        "channels_last": bool(channels_last),
        "kernel_sizes": list(kernel_sizes),
        "multiplier": multiplier,
        "hidden": hidden,
        "psf_size": int(p),
        "device": dev,
        "n_frames": n,
        "skip_smooth": float(skip_smooth),
        "holdout": float(holdout),
        "patience": int(patience),
        "noise_stop": bool(noise_stop),
        "noise_nsd": float(noise_nsd),
        "noise_tol_max": float(noise_tol_max),
        "gate": list(gate) if gate else None,
        "gate_sigma": float(gate_sigma),
        "project": bool(project),
        "project_sigma": project_sigma,
        "project_iterations": int(project_iterations),
        "pin_sky": bool(pin_sky),
    }
    finish_s = time.perf_counter() - t_end
    met: dict[str, Any] = {
        "finish_seconds": finish_s,
        "steps": steps_total,
        "stop_reason": members[-1]["reason"],
        "loss": members[-1]["loss"],
        "chi2": chi2,
        "seconds": elapsed,
        "steps_per_s": steps_total / max(elapsed, 1e-9),
        "pedestal": float(np.mean([m["pedestal"] for m in members])),
        "chi2_frames": chi2_frames,
        "best_step": int(members[-1]["best_step"]),
        "val_curve": [[int(a), float(b)] for a, b in members[-1]["val_hist"]],
        "stop_detail": _stop_detail(
            members,
            holdout=float(holdout) if hold.any() else 0.0,
            n_hold=n_hold,
            sd_all=sd_all,
            sd_frames=sd_frames,
            nsd=float(noise_nsd),
            nsd_frames=nsd_frames,
            noise_ratio=noise_ratio,
            noise_trusted=noise_trusted,
            noise_stop=bool(noise_stop),
            noise_tol_max=float(noise_tol_max),
            iterations=int(iterations),
        ),
    }
    if gate_info is not None:
        met["gate_network_fraction"] = gate_info["network_fraction"]
    if members[-1]["val_chi2"] is not None:
        met["val_chi2"] = float(members[-1]["val_chi2"])
    hdr = coadd_header(
        header,
        method="dip",
        n_frames=n,
        extra={
            "DIPSTEPS": (steps_total, "DIP optimisation steps"),
            "DIPSEED": (int(seed), "torch seed"),
            "DIPCHI2": (round(chi2, 5), "mean (residual/sigma)^2 over unmasked pixels"),
            "DIPSUPER": (s, "latent oversampling factor"),
        },
    )
    result = CoaddResult(
        data=data,
        wcs=out_wcs,
        header=hdr,
        uncertainty=unc,
        residuals=resid,
        metrics=met,
        method="dip",
        params=par,
        sky=sky_fit,
        psfs=psfs_out,
    )
    if metrics:
        yield Progress(step=done, total=total, message="measuring against the ivar coadd")
        result.metrics.update(compare_with_ivar(result, stack))
    return result


def _sidak_nsd(nsd: float, n: int) -> float:
    """Per-test sd multiple such that ``n`` independent two-sided tests all pass as often as one at ``nsd``."""
    from statistics import NormalDist

    if n <= 1:
        return float(nsd)
    p_one = 2.0 * NormalDist().cdf(nsd) - 1.0  # (0.9545 at 2 sd)
    return float(NormalDist().inv_cdf(0.5 + 0.5 * p_one ** (1.0 / n)))


def _stop_detail(
    members: list[dict],
    *,
    holdout: float,
    n_hold: np.ndarray,
    sd_all: float,
    sd_frames: np.ndarray,
    nsd: float,
    nsd_frames: float,
    noise_ratio: Optional[np.ndarray],
    noise_trusted: bool,
    noise_stop: bool,
    noise_tol_max: float,
    iterations: int,
) -> dict[str, Any]:
    """Why the fit stopped, with the held-out chi2 values (JSON-ready; the last member's)."""
    m = members[-1]
    why = {
        "noise": f"held-out chi2 reached the noise model's expectation (pooled within {nsd:g} sd of 1, "
        f"every frame within {nsd_frames:.2f} sd)",
        "validation": "held-out chi2 stopped improving",
        "budget": f"step cap {iterations} reached",
        "stopped": "stopped by the user",
        "chi2": "fitted chi2 reached its target",
        "plateau": "loss plateau",
    }
    out: dict[str, Any] = {
        "reason": m["reason"],
        "text": why.get(m["reason"], m["reason"]),
        "step": int(m["steps"]),
        "returned_step": int(m["best_step"]) if m["val_chi2"] is not None else int(m["steps"]),
        "holdout": holdout,
        "n_held_out": int(n_hold.sum()),
    }
    if len(members) > 1:
        out["member_reasons"] = [str(q["reason"]) for q in members]
        out["member_steps"] = [int(q["steps"]) for q in members]
    if holdout <= 0:
        out["rule"] = "no held-out pixels: the held-out rules are off"
        return out
    vf = m["val_frames"] if m["val_frames"] is not None else m["last_frames"]
    out.update(
        {
            "val_chi2": m["val_chi2"],
            "val_chi2_frames": None if vf is None else [None if not np.isfinite(x) else float(x) for x in vf],
            "target": [1.0 - nsd * sd_all, 1.0 + nsd * sd_all],
            "sd": sd_all,
            "sd_frames": [float(x) for x in sd_frames],
            "nsd": nsd,
            "nsd_frames": float(nsd_frames),
            "val_seconds": float(sum(q["val_seconds"] for q in members)),
            "val_time_fraction": float(sum(q["val_seconds"] for q in members))
            / max(float(sum(q["fit_seconds"] for q in members)), 1e-9),
        }
    )
    if noise_ratio is not None:
        out["noise_ratio"] = [None if not np.isfinite(x) else float(x) for x in noise_ratio]
    out["noise_trusted"] = bool(noise_trusted)
    if not noise_stop:
        out["rule"] = "noise-model rule off; plateau of the held-out chi2 only"
    elif noise_trusted:
        out["rule"] = f"noise maps checked (every frame within {noise_tol_max:g} + 2 sd of 1): chi2 target and plateau"
    else:
        out["rule"] = (
            f"noise maps not trusted (a frame's sky scatter / map outside 1 +- {noise_tol_max:g}, or one frame): "
            "plateau of the held-out chi2 only"
        )
    return out


def stop_line(detail: dict[str, Any]) -> str:
    """One line for the CLI and the widget: ``stop: why, at which step, the held-out chi2 values``."""
    if not detail:
        return ""
    txt = f"stop: {detail['text']} at step {detail['step']}"
    if detail.get("val_chi2") is not None:
        lo, hi = detail["target"]
        txt += f"; held-out chi2 {detail['val_chi2']:.3f} (step {detail['returned_step']}, target {lo:.3f}-{hi:.3f})"
        fr = [f"{x:.2f}" if x is not None else "-" for x in (detail.get("val_chi2_frames") or [])]
        if fr:
            txt += ", frames " + " ".join(fr)
    nr = [x for x in (detail.get("noise_ratio") or []) if x is not None]
    rng = f"sky scatter / map {min(nr):.2f}-{max(nr):.2f}" if nr else "not checkable (one frame)"
    if detail.get("holdout", 0) <= 0:
        txt += "; no held-out pixels"
    elif str(detail.get("rule", "")).startswith("noise-model rule off"):
        txt += "; chi2 target off: plateau rule only"
    elif detail.get("noise_trusted"):
        txt += f"; noise maps trusted ({rng})"
    else:
        txt += f"; noise maps not trusted ({rng}): plateau rule only"
    return txt


def _fmt_s(sec: float) -> str:
    return f"{sec:.0f} s" if sec < 120 else f"{sec / 60:.1f} min"


def dec_eval(dec, lat, sky):
    """The decoder's frames for a given latent and sky offsets (without touching its parameters)."""
    model = dec(lat[None, None])
    if sky is not None and dec.sky is not None:
        model = model - dec.sky[:, None, None] + sky[:, None, None]
    return model


def effective_psf(stack: FrameStack) -> np.ndarray:
    """The ivar coadd's PSF: the frames' PSFs weighted by each frame's median inverse variance."""
    from ..core.coadd import common_psf_size, crop_psf

    size = common_psf_size(stack.psfs)
    w = np.array(
        [
            np.median(1.0 / stack.sigma[i][~stack.mask[i]].astype(np.float64) ** 2) if (~stack.mask[i]).any() else 0.0
            for i in range(stack.n)
        ]
    )
    ps = np.stack([crop_psf(np.asarray(q, np.float64), size) for q in stack.psfs])
    ps /= ps.sum(axis=(1, 2), keepdims=True)
    out = (w[:, None, None] * ps).sum(axis=0) / max(w.sum(), 1e-300)
    return out / out.sum()


def project_flux(
    data: np.ndarray, stack: FrameStack, *, superres: int = 1, sigma: Optional[float] = None, iterations: int = 1
) -> np.ndarray:
    """Add the smoothed difference between the ivar coadd and the latent re-blurred to its PSF.

    ``data`` (frame grid x ``superres``) -> ``data + G * (ivar - data * PSF_eff)`` (on the
    frame grid; spread evenly over the fine pixels for ``superres=2``). ``G`` is a unit-sum
    Gaussian of ``sigma`` frame pixels (default: the widest PSF's Gaussian sigma). Flux:
    the total and every source's aperture flux (apertures wider than PSF + ``G``) become
    the ivar coadd's; the added pixel noise is the ivar residual's averaged by ``G``.
    ``iterations > 1`` repeats the step on its own output (the residual left after one step,
    ``(1 - G * PSF_eff)`` of the first, shrinks each time).
    """
    # (scipy.ndimage, not scipy.signal: importing the latter took ~4 s on the loaded machine,
    # inside the time between Stop and the result)
    from scipy.ndimage import convolve, gaussian_filter

    from ..core.psf import measure_fwhm

    s = int(superres)
    img = np.asarray(data, np.float64)
    iv = ivar_coadd(stack).data.astype(np.float64)
    ok = np.isfinite(iv)
    pe = effective_psf(stack)
    if sigma is None:
        sigma = max(measure_fwhm(q) for q in stack.psfs) / 2.3548
    for _ in range(max(1, int(iterations))):
        frame = img if s == 1 else img.reshape(img.shape[0] // s, s, img.shape[1] // s, s).sum(axis=(1, 3))
        blurred = convolve(frame, pe, mode="reflect")  # true convolution (ndimage flips the kernel)
        resid = np.where(ok, iv - blurred, 0.0)
        corr = gaussian_filter(resid, float(sigma), mode="reflect", truncate=4.0)
        if s > 1:
            corr = np.kron(corr, np.ones((s, s))) / (s * s)
        img = img + corr
    return img


def finished_noise(
    stack: FrameStack,
    *,
    gate_map: Optional[np.ndarray] = None,
    gate_sigma: Optional[float] = 1.5,
    superres: int = 1,
    project_sigma: Optional[float] = None,
    project_iterations: int = 3,
    draws: int = 16,
    seed: int = 0,
    return_draws: bool = False,
) -> np.ndarray:
    """Per-pixel 1-sigma noise of the finished DIP image, propagated by Monte Carlo.

    The frames' noise enters the result through the ivar coadd (noise ``eps`` with the
    coadd's propagated sigma, independent per pixel): the latent carries ``eps`` (the skip
    term starts it at the ivar coadd and the PSF-convolved data term does not remove
    pixel-scale noise, assumed), the gate blends it with the smoothed ``G * eps`` by its
    weights, and each projection pass adds ``G_p * (eps - PSF_eff * image)``. ``draws``
    seeded realisations are pushed through these linear steps and their per-pixel std
    returned (frame grid x ``superres``; with ``return_draws`` the realisations themselves,
    e.g. to propagate the noise into aperture fluxes). Measured on simulated stacks
    (``benchmarks/coadd.py``): 1-sigma coverage of the truth 0.58-0.67 on sky pixels. It is the
    noise only: on source pixels the DIP image's error is dominated by its unknown,
    brightness-dependent resolution, which no per-pixel noise map describes.
    """
    from scipy.ndimage import gaussian_filter

    from ..core.psf import measure_fwhm

    s = int(superres)
    iv = ivar_coadd(stack)
    siv = np.nan_to_num(np.asarray(iv.uncertainty, np.float64), nan=0.0, posinf=0.0)
    pe = effective_psf(stack)
    if project_sigma is None:
        project_sigma = max(measure_fwhm(q) for q in stack.psfs) / 2.3548
    rng = np.random.default_rng(int(seed))
    nd = max(2, int(draws))
    h, w = siv.shape

    def fine(a):
        return a if s == 1 else np.kron(a, np.ones((1, s, s))) / (s * s)

    def smooth(a, sig):
        return gaussian_filter(a, (0.0, float(sig), float(sig)), mode="reflect", truncate=4.0)

    # PSF_eff convolution of all draws at once by FFT, with the same reflected borders as
    # project_flux's ndimage.convolve (ndimage "reflect" = numpy "symmetric"); ~10x faster
    # than direct convolution at 256^2 with a 25^2 PSF
    k = pe.shape[0] // 2
    shape = (h + 2 * k, w + 2 * k)
    kf = np.fft.rfft2(np.pad(pe, ((0, shape[0] - pe.shape[0]), (0, shape[1] - pe.shape[1]))), shape)

    def blur(a):
        pad = np.pad(a, ((0, 0), (k, k), (k, k)), mode="symmetric")
        full = np.fft.irfft2(np.fft.rfft2(pad, shape) * kf, shape)
        return full[:, 2 * k : 2 * k + h, 2 * k : 2 * k + w]

    eps = rng.standard_normal((nd, h, w)) * siv
    img = fine(eps)
    if gate_map is not None:
        base = fine(smooth(eps, gate_sigma)) if gate_sigma else img
        img = base + gate_map * (img - base)
    for _ in range(int(project_iterations)):
        frame = img if s == 1 else img.reshape(nd, h, s, w, s).sum(axis=(2, 4))
        img = img + fine(smooth(eps - blur(frame), project_sigma))
    if return_draws:
        return img
    return np.std(img, axis=0, ddof=1)


def gate_sky(
    data: np.ndarray, stack: FrameStack, *, superres: int = 1, levels: Sequence[float] = (2.0, 5.0), sigma: float = 1.5
) -> tuple[np.ndarray, dict]:
    """Blend the latent back to the Gaussian-smoothed ivar coadd where that shows no source.

    See ``gate`` in :func:`dip_coadd_job`. For ``superres=2`` the smoothed coadd is spread
    evenly over each frame pixel's 2x2 fine pixels (flux-conserving).
    """
    from scipy.ndimage import gaussian_filter

    from ..core.skygate import sky_gate

    iv = ivar_coadd(stack).data.astype(np.float64)
    ok = np.isfinite(iv)
    base = np.where(ok, iv, 0.0)
    if sigma > 0:
        base = gaussian_filter(base, float(sigma), mode="reflect", truncate=4.0)
    s = int(superres)
    if s > 1:
        base = np.kron(base, np.ones((s, s))) / (s * s)
    low, high = (float(v) for v in levels)
    # the base is already smoothed (SExtractor-style filtered detection): no second smoothing
    r = np.asarray(data, np.float64)
    out, info = sky_gate(r, base, low=low, high=high, smooth=0.0)
    # the gate's weight per pixel (0: smoothed coadd, 1: latent), for the noise propagation;
    # where latent and base coincide its value does not change the image: take the latent's
    den = r - base
    tiny = np.abs(den) <= 1e-9 * max(float(np.nanmax(np.abs(base))), 1e-30)
    g = np.where(tiny, 1.0, (np.nan_to_num(out) - base) / np.where(tiny, 1.0, den))
    info["weights"] = np.clip(np.nan_to_num(g, nan=1.0), 0.0, 1.0)
    return np.where(np.isfinite(out), out, data), info


def compare_with_ivar(result: CoaddResult, stack: FrameStack, *, snr_min: float = 20.0) -> dict[str, Any]:
    """S_F, sky sigma and per-source flux of a DIP latent beside the ivar coadd of the same stack."""
    from ..core.psf import measure_fwhm

    iv = ivar_coadd(stack)
    img = result.data
    s = img.shape[0] // stack.shape[0]
    if s > 1:
        from ..core.resample import block_sum

        img = block_sum(img, s)  # compare on the frame grid (flux-conserving)
    fwhm = max(measure_fwhm(p) for p in stack.psfs)
    m_dip = image_metrics(img)
    m_iv = image_metrics(iv.data)
    fl = compare_fluxes(
        img, iv.data, fwhm=fwhm, reference_sigma=iv.uncertainty, snr_min=snr_min, mask=~np.isfinite(iv.data)
    )
    fl.pop("table", None)
    out = {
        "sharpness": m_dip["sharpness"],
        "sky_sigma": m_dip["sky_sigma"],
        "ivar_sharpness": m_iv["sharpness"],
        "ivar_sky_sigma": m_iv["sky_sigma"],
        "sharpness_gain": (m_dip["sharpness"] - m_iv["sharpness"]) / abs(m_iv["sharpness"]),
        "sky_sigma_change": (m_dip["sky_sigma"] - m_iv["sky_sigma"]) / m_iv["sky_sigma"],
    }
    out.update({f"flux_{k}" if not k.startswith("flux") else k: v for k, v in fl.items()})
    return out


def dip_coadd(frames, **kwargs) -> CoaddResult:
    """Run :func:`dip_coadd_job` synchronously."""
    from ..progress import run

    return run(dip_coadd_job(frames, **kwargs))

"""Training losses: pixel L1/L2, FISR's Flux Consistency Loss, WGAN-GP.

All losses act on tensors of shape (B, 1, H, W) in the *normalised* units of
:mod:`training.data` (per-patch median/std), so their weights are scale free.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "pixel_loss",
    "pooled_loss",
    "background_loss",
    "sample_weights",
    "flux_consistency_loss",
    "normalise_flux_map",
    "gradient_penalty",
    "critic_loss",
    "generator_adversarial_loss",
]


def _reduce(err: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    if weight is None:
        return err.mean()
    return (err.flatten(1).mean(1) * weight.flatten()).mean()


def sample_weights(x: torch.Tensor, *, floor: float = 0.05) -> torch.Tensor:
    """Per-sample weights 1 / (std of the input patch + floor), normalised to mean 1 (see LossConfig.patch_relative)."""
    w = 1.0 / (x.flatten(1).std(1) + floor)
    return (w / w.mean()).detach()


def pixel_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    kind: str = "l1",
    weight: torch.Tensor | None = None,
    delta: float = 0.5,
) -> torch.Tensor:
    """Mean absolute (``l1``), squared (``l2``) or Huber (``huber``) error; optional per-sample ``weight`` (B,).

    ``huber`` is torch's smooth L1 with ``beta = delta``: ``e^2 / (2 delta)`` below ``delta``, ``|e| - delta/2``
    above. Why: small errors (faint sources in noise) are then fitted in the mean, which keeps their flux
    (aperture flux is linear, so the mean of the posterior has the right expected flux while the L1 median
    shrinks uncertain peaks towards zero); large errors (bright cores) keep L1's robustness and scale.
    """
    if kind == "l1":
        return _reduce((pred - target).abs(), weight)
    if kind == "l2":
        return _reduce((pred - target) ** 2, weight)
    if kind == "huber":
        return _reduce(F.smooth_l1_loss(pred, target, reduction="none", beta=float(delta)), weight)
    raise ValueError(f"unknown pixel loss {kind!r}; use 'l1', 'l2' or 'huber'")


def pooled_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    size: int,
    weight: torch.Tensor | None = None,
    kind: str = "l1",
    delta: float = 0.5,
) -> torch.Tensor:
    """L1 between ``size x size`` block means: flux consistency at aperture scale.

    Why: per-pixel L1 regresses to the conditional *median*, which for a pixel near an
    uncertain source is below the mean, so sources lose flux. Block sums of ``size`` pixels
    are much less skewed and their L1 keeps the local flux. ``kind``/``delta`` as in :func:`pixel_loss`
    (``huber``: block means fitted in the mean for small errors).
    """
    if size <= 1:
        return pixel_loss(pred, target, weight=weight, kind=kind, delta=delta)
    return pixel_loss(
        F.avg_pool2d(pred, size, ceil_mode=True),
        F.avg_pool2d(target, size, ceil_mode=True),
        kind=kind,
        weight=weight,
        delta=delta,
    )


def background_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    weight: torch.Tensor | None = None,
    band: tuple[float, float] = (0.4, 0.6),
) -> torch.Tensor:
    """L1 between each sample's sky level in ``pred`` and ``target``: the mean of the ``band`` quantile range of
    its sorted pixels (a trimmed mean around the median, robust to sources like SExtractor's background).

    Why: a restoration can keep every mean (pixel, pooled, flux terms) and still reshape the sky's distribution
    (faint structure smoothed into a raised floor, or noise turned into peaks over a lowered one); photometry
    subtracts a mode-like background, so every aperture flux moves with it (docs/results_keep_sky.md). The trimmed
    mean passes gradient to a fifth of the pixels instead of the median's one.
    """
    n = pred[0].numel()
    lo, hi = int(band[0] * n), max(int(band[0] * n) + 1, int(band[1] * n))

    def level(x: torch.Tensor) -> torch.Tensor:
        return torch.sort(x.flatten(1), dim=1).values[:, lo:hi].mean(1)

    return _reduce((level(pred) - level(target)).abs()[:, None], weight)


def normalise_flux_map(flux_map: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Scale each map of a (B, 1, H, W) batch to unit mean over its pixels.

    Why: the flux map of :func:`core.fluxmap.flux_map` is in image flux units, which
    differ by orders of magnitude between surveys; unit mean keeps lambda meaningful
    (lambda=0.01 then weighs the flux term at ~1% of L1 where flux is spread evenly and
    more on the sources). Patches without sources get an all-zero weight map.
    """
    m = flux_map.abs()
    mean = m.mean(dim=(-2, -1), keepdim=True)
    return torch.where(mean > eps, m / mean.clamp_min(eps), torch.zeros_like(m))


def flux_consistency_loss(
    pred: torch.Tensor, target: torch.Tensor, flux_map: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """FISR's Flux Consistency Loss: L1 weighted by the ground truth's flux map.

    ``flux_map`` is the map of the *target* (HR) detections on the target grid,
    :func:`normalise_flux_map`-ed here, so pixels carrying source flux weigh more.
    Used as ``pixel_loss + lambda * flux_consistency_loss`` (lambda = 0.01 in FISR).
    """
    if flux_map.shape[-2:] != pred.shape[-2:]:
        raise ValueError(f"flux map {tuple(flux_map.shape)} does not match prediction {tuple(pred.shape)}")
    w = normalise_flux_map(flux_map.to(pred.dtype))
    return _reduce(w * (pred - target).abs(), weight)


def _call(critic, x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
    return critic(x) if cond is None else critic(cond, x)


def gradient_penalty(
    critic: torch.nn.Module,
    real: torch.Tensor,
    fake: torch.Tensor,
    *,
    cond: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """WGAN-GP penalty E[(||grad_x D(x_hat)||_2 - 1)^2] on random interpolates (Gulrajani et al. 2017).

    With ``cond`` (the conditioning input, pix2pix style) the critic is called as
    ``critic(cond, x)`` (``models.pix2wgan.PatchCritic``), else ``critic(x)``; the gradient
    is taken w.r.t. the sample only.
    """
    b = real.shape[0]
    alpha = torch.rand((b, 1, 1, 1), generator=generator, dtype=real.dtype, device=real.device)
    x_hat = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    # per-sample critic score = mean over the PatchGAN map (as in critic_loss)
    out = _call(critic, x_hat, cond).flatten(1).mean(1)
    (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
    norms = grad.flatten(1).norm(2, dim=1)
    return ((norms - 1.0) ** 2).mean()


def critic_loss(
    critic: torch.nn.Module,
    real: torch.Tensor,
    fake: torch.Tensor,
    *,
    cond: torch.Tensor | None = None,
    gp_weight: float = 10.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict]:
    """WGAN-GP critic loss: D(fake) - D(real) + gp_weight * GP (minimised by the critic)."""

    def d(x):
        return _call(critic, x, cond).mean()

    d_real = d(real)
    d_fake = d(fake.detach())
    gp = gradient_penalty(critic, real, fake, cond=cond, generator=generator)
    loss = d_fake - d_real + gp_weight * gp
    return loss, {
        "d_real": d_real.item(),
        "d_fake": d_fake.item(),
        "gp": gp.item(),
        "wasserstein": (d_real - d_fake).item(),
    }


def generator_adversarial_loss(
    critic: torch.nn.Module, fake: torch.Tensor, *, cond: torch.Tensor | None = None
) -> torch.Tensor:
    """-E[D(G(z))]: the generator's WGAN term."""
    return -_call(critic, fake, cond).mean()

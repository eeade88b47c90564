"""Training losses: pixel L1/L2, FISR's Flux Consistency Loss, WGAN-GP.

All losses act on tensors of shape (B, 1, H, W) in the *normalised* units of
:mod:`training.data` (per-patch median/std), so their weights are scale free.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "pixel_loss",
    "flux_consistency_loss",
    "normalise_flux_map",
    "gradient_penalty",
    "critic_loss",
    "generator_adversarial_loss",
]


def pixel_loss(pred: torch.Tensor, target: torch.Tensor, *, kind: str = "l1") -> torch.Tensor:
    """Mean absolute (``l1``) or squared (``l2``) error."""
    if kind == "l1":
        return F.l1_loss(pred, target)
    if kind == "l2":
        return F.mse_loss(pred, target)
    raise ValueError(f"unknown pixel loss {kind!r}; use 'l1' or 'l2'")


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


def flux_consistency_loss(pred: torch.Tensor, target: torch.Tensor, flux_map: torch.Tensor) -> torch.Tensor:
    """FISR's Flux Consistency Loss: L1 weighted by the ground truth's flux map.

    ``flux_map`` is the map of the *target* (HR) detections on the target grid,
    :func:`normalise_flux_map`-ed here, so pixels carrying source flux weigh more.
    Used as ``pixel_loss + lambda * flux_consistency_loss`` (lambda = 0.01 in FISR).
    """
    if flux_map.shape[-2:] != pred.shape[-2:]:
        raise ValueError(f"flux map {tuple(flux_map.shape)} does not match prediction {tuple(pred.shape)}")
    w = normalise_flux_map(flux_map.to(pred.dtype))
    return (w * (pred - target).abs()).mean()


def _call(critic, x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
    return critic(x) if cond is None else critic(cond, x)


def gradient_penalty(critic: torch.nn.Module, real: torch.Tensor, fake: torch.Tensor,
                     *, cond: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
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


def critic_loss(critic: torch.nn.Module, real: torch.Tensor, fake: torch.Tensor, *, cond: torch.Tensor | None = None,
                gp_weight: float = 10.0, generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
    """WGAN-GP critic loss: D(fake) - D(real) + gp_weight * GP (minimised by the critic)."""
    def d(x):
        return _call(critic, x, cond).mean()

    d_real = d(real)
    d_fake = d(fake.detach())
    gp = gradient_penalty(critic, real, fake, cond=cond, generator=generator)
    loss = d_fake - d_real + gp_weight * gp
    return loss, {"d_real": float(d_real), "d_fake": float(d_fake), "gp": float(gp),
                  "wasserstein": float(d_real - d_fake)}


def generator_adversarial_loss(critic: torch.nn.Module, fake: torch.Tensor, *, cond: torch.Tensor | None = None) -> torch.Tensor:
    """-E[D(G(z))]: the generator's WGAN term."""
    return -_call(critic, fake, cond).mean()

"""Losses: FCL weights flux and lets gradients flow; the WGAN-GP penalty is right on a known critic."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from napari_astrosr.training.losses import (  # noqa: E402
    background_loss,
    critic_loss,
    flux_consistency_loss,
    gradient_penalty,
    normalise_flux_map,
    pixel_loss,
    pooled_loss,
)


def test_pixel_losses():
    a, b = torch.zeros(2, 1, 4, 4), torch.full((2, 1, 4, 4), 2.0)
    assert float(pixel_loss(a, b, kind="l1")) == pytest.approx(2.0)
    assert float(pixel_loss(a, b, kind="l2")) == pytest.approx(4.0)
    with pytest.raises(ValueError):
        pixel_loss(a, b, kind="l3")
    # Huber (smooth L1): quadratic below delta, L1 minus delta/2 above
    assert float(pixel_loss(a, b, kind="huber", delta=4.0)) == pytest.approx(0.5 * 4.0 / 4.0)
    assert float(pixel_loss(a, b, kind="huber", delta=0.5)) == pytest.approx(2.0 - 0.25)


def test_huber_fits_a_faint_uncertain_source_in_the_mean_where_l1_takes_the_median():
    """Why loss.pixel 'huber': a pixel that holds a faint source in 30% of the plausible skies
    (flux 1, else 0). The constant minimising L1 is the median (0: the source's flux is lost), the
    one minimising Huber with delta above the error is the mean (0.3: expected flux kept)."""
    target = torch.zeros(10, 1, 1, 1)
    target[:3] = 1.0
    cs = torch.linspace(0.0, 1.0, 101)

    def argmin(kind, **kw):
        losses = [float(pixel_loss(torch.full_like(target, float(c)), target, kind=kind, **kw)) for c in cs]
        return float(cs[int(torch.tensor(losses).argmin())])

    assert argmin("l1") == pytest.approx(0.0, abs=1e-6)
    assert argmin("huber", delta=2.0) == pytest.approx(0.3, abs=0.011)
    # the pooled term with kind='huber' is the same loss on block means
    p, t = torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 8)
    assert float(pooled_loss(p, t, size=4, kind="huber", delta=0.1)) == pytest.approx(
        float(
            pixel_loss(
                torch.nn.functional.avg_pool2d(p, 4), torch.nn.functional.avg_pool2d(t, 4), kind="huber", delta=0.1
            )
        )
    )


def test_fcl_weights_source_pixels_and_gradient_flows():
    g = torch.Generator().manual_seed(0)
    target = torch.rand(2, 1, 16, 16, generator=g)
    fmap = torch.zeros(2, 1, 16, 16)
    fmap[:, :, 6:10, 6:10] = 1e-3  # tiny flux units: normalisation makes lambda scale free
    pred = target.clone().requires_grad_(True)
    # an error on the sky costs nothing, the same error on the source costs
    sky = pred.detach().clone()
    sky[:, :, 0, 0] += 1.0
    src = pred.detach().clone()
    src[:, :, 7, 7] += 1.0
    assert float(flux_consistency_loss(sky, target, fmap)) == 0.0
    assert float(flux_consistency_loss(src, target, fmap)) > 0.0
    loss = flux_consistency_loss(pred + 0.1, target, fmap)
    loss.backward()
    grad = pred.grad
    assert grad is not None and float(grad[:, :, 7, 7].abs().min()) > 0
    assert float(grad[:, :, 0, 0].abs().max()) == 0.0
    # normalised to unit mean per map, empty maps give zero weight
    w = normalise_flux_map(torch.cat([fmap[:1], torch.zeros(1, 1, 16, 16)]))
    assert float(w[0].mean()) == pytest.approx(1.0) and float(w[1].abs().sum()) == 0.0


class _Linear(torch.nn.Module):
    """D(x) = <w, x>: its gradient w.r.t. x is w everywhere, norm known."""

    def __init__(self, w):
        super().__init__()
        self.w = torch.nn.Parameter(w)

    def forward(self, x):
        return (x * self.w).flatten(1).sum(1, keepdim=True)


@pytest.mark.parametrize("norm", [0.5, 1.0, 3.0])
def test_gradient_penalty_on_linear_critic(norm):
    w = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    w = w / w.norm() * norm
    d = _Linear(w)
    real, fake = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8)
    gp = gradient_penalty(d, real, fake)
    assert float(gp) == pytest.approx((norm - 1.0) ** 2, rel=1e-5, abs=1e-6)
    # the penalty trains the critic towards unit gradient norm
    gp.backward()
    if norm != 1.0:
        assert float(d.w.grad.norm()) > 0


def test_conditional_critic_and_loss_signs():
    class Cond(torch.nn.Module):
        def forward(self, cond, x):
            return (x - cond).mean(dim=(1, 2, 3), keepdim=True)

    real = torch.ones(3, 1, 4, 4)
    fake = torch.zeros(3, 1, 4, 4)
    cond = torch.zeros(3, 1, 4, 4)
    loss, info = critic_loss(Cond(), real, fake, cond=cond, gp_weight=10.0)
    # D(real)=1, D(fake)=0, grad of mean over 16 px has norm 1/4 -> gp=(0.25-1)^2
    assert info["wasserstein"] == pytest.approx(1.0)
    assert info["gp"] == pytest.approx(0.5625)
    assert float(loss) == pytest.approx(-1.0 + 10 * 0.5625)


def test_background_loss_sees_a_reshaped_sky_that_keeps_the_mean():
    """Why loss.background_weight: a sky turned into sparse peaks over a lower floor keeps the mean (pixel L1 on
    block means, the pooled term, sees nothing) but moves the robust level photometry subtracts."""
    g = torch.Generator().manual_seed(0)
    target = 10.0 + torch.randn(4, 1, 32, 32, generator=g)
    shifted = target + 0.5
    assert float(background_loss(shifted, target)) == pytest.approx(0.5, rel=1e-5)
    assert float(background_loss(target, target)) == 0.0
    # same mean per sample, skewed: every 10th pixel carries a peak (+2.7), the other nine a floor 0.3 lower
    mask = (torch.arange(32 * 32) % 10 == 0).view(1, 1, 32, 32).expand_as(target)
    peaky = torch.where(mask, target + 2.7, target - 0.3)
    peaky = peaky - (peaky.mean(dim=(1, 2, 3), keepdim=True) - target.mean(dim=(1, 2, 3), keepdim=True))
    assert torch.allclose(peaky.mean(dim=(1, 2, 3)), target.mean(dim=(1, 2, 3)), atol=1e-4)
    assert float(pooled_loss(peaky, target, size=32)) < 1e-4
    assert float(background_loss(peaky, target)) > 0.1  # measured 0.17: the floor moved
    # the gradient reaches the middle fifth of the pixels (a trimmed mean, not the median's single pixel)
    x = shifted.clone().requires_grad_(True)
    background_loss(x, target).backward()
    frac = float((x.grad != 0).float().mean())
    assert 0.15 < frac < 0.25

"""Forward shapes of every registered network (tiny presets, odd sizes), registry, critic."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from napari_astrosr.exceptions import AstroSRError  # noqa: E402
from napari_astrosr.models.common import LayerNorm2d, flux_conserving_upsample  # noqa: E402
from napari_astrosr.models.registry import MODELS, build_model, model_cost  # noqa: E402

torch.set_num_threads(1)


@pytest.mark.parametrize("shape", [(17, 23), (32, 32), (9, 41)])
@pytest.mark.parametrize("name", ["restormer", "pix2wgan", "pix2wgan-cascade"])
def test_same_size_networks_keep_shape(name, shape):
    torch.manual_seed(0)
    m = build_model(name, preset="tiny", scale=2).eval()
    x = torch.randn(2, 1, *shape)
    with torch.no_grad():
        y = m(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize("shape", [(13, 21), (16, 16)])
def test_fisr_upsamples(scale, shape):
    torch.manual_seed(0)
    m = build_model("fisr", preset="tiny", scale=scale).eval()
    x = torch.randn(1, 1, *shape)
    with torch.no_grad():
        y = m(x, torch.rand(1, 1, *shape))
    assert y.shape == (1, 1, shape[0] * scale, shape[1] * scale)


def test_fisr_flux_map_matters_and_shape_checked():
    torch.manual_seed(0)
    m = build_model("fisr", preset="tiny", scale=2).eval()
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        a = m(x, torch.zeros(1, 1, 16, 16))
        b = m(x, 10 * torch.rand(1, 1, 16, 16))
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError):
        m(x, torch.zeros(1, 1, 8, 8))


def test_restormer_paper_preset_matches_paper_size():
    # Zamir et al. report 26.1M parameters for this configuration (3 channels; 1 here)
    c = model_cost("restormer", preset="paper", scale=1, size=64)
    assert 25.5e6 < c["params"] < 26.5e6
    assert c["flops"] > 1e10


def test_registry_lists_presets_and_rejects_bad_names():
    assert {"restormer", "fisr", "pix2wgan", "pix2wgan-cascade"} <= set(MODELS)
    for spec in MODELS.values():
        assert {"paper", "small", "tiny"} <= set(spec.presets)
    with pytest.raises(AstroSRError, match="unknown network"):
        build_model("nope")
    with pytest.raises(AstroSRError, match="preset"):
        build_model("restormer", preset="huge")
    with pytest.raises(AstroSRError, match="scales"):
        build_model("fisr", preset="tiny", scale=3)


def test_bias_free_layernorm_and_torch_flux_conserving_upsample():
    torch.manual_seed(0)
    x = torch.rand(1, 4, 5, 5) + 3.0
    y = LayerNorm2d(4, bias_free=True)(x)
    # bias-free: no mean subtraction, unit variance scale
    assert torch.allclose(y, x / torch.sqrt(x.var(1, keepdim=True, unbiased=False) + 1e-5))
    z = torch.rand(2, 1, 7, 9)
    up = flux_conserving_upsample(z, 3)
    assert torch.allclose(torch.nn.functional.avg_pool2d(up, 3), z, atol=1e-6)


def test_pix2wgan_critic_has_no_batchnorm():
    from napari_astrosr.models.pix2wgan import build_critic

    c = build_critic("tiny")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in c.modules())
    out = c(torch.randn(2, 1, 64, 64), torch.randn(2, 1, 64, 64))
    assert out.shape[0] == 2 and out.shape[1] == 1
    with pytest.raises(ValueError):
        build_critic("tiny", norm="batch")

"""FISR "lite" preset: shapes on odd sizes, flux-conserving start, config round trip."""

import pytest

torch = pytest.importorskip("torch")

from napari_astrosr.models.common import flux_conserving_upsample  # noqa: E402
from napari_astrosr.models.registry import build_model, resolve_config  # noqa: E402


@pytest.mark.parametrize("scale", [2, 4])
def test_lite_shape_and_zero_tail_is_flux_conserving_base(scale):
    torch.manual_seed(0)
    m = build_model("fisr", preset="lite", scale=scale).eval()
    assert 0.1e6 < sum(p.numel() for p in m.parameters()) < 0.2e6
    x = torch.rand(2, 1, 13, 17)
    fm = torch.rand(2, 1, 13, 17)
    with torch.no_grad():
        m.tail[0].weight.zero_()
        m.tail[0].bias.zero_()
        y = m(x, fm)
    assert y.shape == (2, 1, 13 * scale, 17 * scale)
    torch.testing.assert_close(y, flux_conserving_upsample(x, scale))
    # each output block averages to its input pixel (surface-brightness units)
    torch.testing.assert_close(torch.nn.functional.avg_pool2d(y, scale), x, atol=1e-5, rtol=1e-5)


def test_lite_config_round_trips_through_preset_none_and_old_presets_unchanged():
    cfg = resolve_config("fisr", preset="lite")
    assert cfg["variant"] == "lite"
    a = build_model("fisr", preset="lite", scale=2)
    b = build_model("fisr", preset=None, scale=2, **cfg)
    b.load_state_dict(a.state_dict())  # a sidecar's config rebuilds the same network
    assert type(build_model("fisr", preset="tiny", scale=2)).__name__ == "FISR"
    with pytest.raises(Exception, match="variant"):
        build_model("fisr", preset=None, scale=2, variant="nope")

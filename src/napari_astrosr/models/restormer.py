"""Restormer (Zamir et al. 2022), as used by Park et al. for galaxy image restoration.

Four-level encoder-decoder of transformer blocks (MDTA attention + GDFN feed-forward,
bias-free LayerNorm), refinement blocks, and a global residual: ``out = x + net(x)``.
The output has the input's size (scale 1). For super-resolution it runs on an input
already brought to the target grid by flux-conserving upsampling (``restoration.py``).

Flux: the network itself does not conserve flux; normalisation is undone by the caller
and ``flux_exact=True`` projects the output onto the forward model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .common import Downsample, Upsample, blocks, pad_to_multiple

PRESETS: dict[str, dict] = {
    # Zamir et al. / Park et al. configuration (single channel)
    "paper": dict(dim=48, num_blocks=(4, 6, 6, 8), heads=(1, 2, 4, 8), refinement=4, expansion=2.66),
    # CPU-friendly versions of the same architecture
    "small": dict(dim=24, num_blocks=(2, 2, 2, 4), heads=(1, 2, 4, 8), refinement=2, expansion=2.66),
    "tiny": dict(dim=8, num_blocks=(1, 1, 1, 1), heads=(1, 1, 2, 2), refinement=1, expansion=2.0),
}


class Restormer(nn.Module):
    """Restormer for single-channel images; forward(x: (B,C,H,W)) -> (B,C,H,W), any H, W."""

    multiple = 8  # three 2x downsamplings

    def __init__(
        self,
        *,
        in_channels: int = 1,
        dim: int = 48,
        num_blocks: Sequence[int] = (4, 6, 6, 8),
        heads: Sequence[int] = (1, 2, 4, 8),
        refinement: int = 4,
        expansion: float = 2.66,
        bias: bool = False,
        bias_free_norm: bool = True,
    ) -> None:
        super().__init__()
        if len(num_blocks) != 4 or len(heads) != 4:
            raise ValueError("Restormer needs 4 levels: num_blocks and heads of length 4")
        kw = dict(bias=bias, bias_free_norm=bias_free_norm)
        nb, hd, e = list(num_blocks), list(heads), expansion
        self.in_channels = in_channels
        self.patch_embed = nn.Conv2d(in_channels, dim, 3, padding=1, bias=bias)
        self.enc1 = blocks(nb[0], dim, hd[0], e, **kw)
        self.down1 = Downsample(dim, bias=bias)
        self.enc2 = blocks(nb[1], dim * 2, hd[1], e, **kw)
        self.down2 = Downsample(dim * 2, bias=bias)
        self.enc3 = blocks(nb[2], dim * 4, hd[2], e, **kw)
        self.down3 = Downsample(dim * 4, bias=bias)
        self.latent = blocks(nb[3], dim * 8, hd[3], e, **kw)
        self.up3 = Upsample(dim * 8, bias=bias)
        self.reduce3 = nn.Conv2d(dim * 8, dim * 4, 1, bias=bias)
        self.dec3 = blocks(nb[2], dim * 4, hd[2], e, **kw)
        self.up2 = Upsample(dim * 4, bias=bias)
        self.reduce2 = nn.Conv2d(dim * 4, dim * 2, 1, bias=bias)
        self.dec2 = blocks(nb[1], dim * 2, hd[1], e, **kw)
        self.up1 = Upsample(dim * 2, bias=bias)
        self.dec1 = blocks(nb[0], dim * 2, hd[0], e, **kw)
        self.refine = blocks(refinement, dim * 2, hd[0], e, **kw)
        self.output = nn.Conv2d(dim * 2, in_channels, 3, padding=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"Restormer expects (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        xp, (h, w) = pad_to_multiple(x, self.multiple)
        e1 = self.enc1(self.patch_embed(xp))
        e2 = self.enc2(self.down1(e1))
        e3 = self.enc3(self.down2(e2))
        lat = self.latent(self.down3(e3))
        d3 = self.dec3(self.reduce3(torch.cat([self.up3(lat), e3], 1)))
        d2 = self.dec2(self.reduce2(torch.cat([self.up2(d3), e2], 1)))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], 1))
        out = self.output(self.refine(d1)) + xp
        return out[..., :h, :w]


def build(*, scale: int = 1, **config) -> Restormer:
    """Registry builder (``scale`` is the SR factor of the surrounding pipeline, not used by the net)."""
    return Restormer(**config)

"""Pix2WGAN: pix2pix U-Net generator + PatchGAN critic trained as a WGAN-GP.

- :class:`UNetGenerator`: 6 down / 6 up (4x4 stride-2 convolutions), skip connections,
  dropout in the first three up blocks (pix2pix), BatchNorm except at the outermost and
  innermost layers (in eval mode it uses running statistics, so tiles of one image are
  treated identically). Same-size output; the input needs H, W multiples of 64, which
  the forward pads to (reflect) and crops back.
- :class:`PatchCritic`: PatchGAN critic on (condition, image) pairs, **no batch
  normalisation** (the WGAN-GP gradient penalty is per-sample; Gulrajani et al.), optional
  instance/layer norm.
- :class:`Cascade`: generators in a row (e.g. SDSS-like -> DECaLS-like -> HSC-like).

Output activation: ``out_act="tanh"`` (paper, data min-max scaled to [-1, 1]) or
``"none"`` with ``residual=True`` (default for the CPU presets: learns a correction to
the input in median/std units). Flux is not constrained by the network; the pipeline
undoes the normalisation and can project (``flux_exact``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch
from torch import nn

from .common import pad_to_multiple

PRESETS: dict[str, dict] = {
    "paper": dict(ngf=64, dropout=0.5, out_act="tanh", residual=False),
    "small": dict(ngf=16, dropout=0.5, out_act="none", residual=True),
    "tiny": dict(ngf=4, dropout=0.5, out_act="none", residual=True),
}

CASCADE_PRESETS: dict[str, dict] = {k: dict(stages=[dict(v), dict(v)]) for k, v in PRESETS.items()}

CRITIC_PRESETS: dict[str, dict] = {
    "paper": dict(ndf=64, n_layers=3, norm="none"),
    "small": dict(ndf=16, n_layers=3, norm="none"),
    "tiny": dict(ndf=4, n_layers=2, norm="none"),
}


def _norm(kind: str, ch: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(ch)
    if kind == "instance":
        return nn.InstanceNorm2d(ch, affine=True)
    if kind == "layer":
        return nn.GroupNorm(1, ch)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}")


class UNetGenerator(nn.Module):
    """pix2pix U-Net with 6 down and 6 up blocks; forward(x (B,C,H,W)) -> (B,C,H,W)."""

    multiple = 64

    def __init__(
        self,
        *,
        in_channels: int = 1,
        out_channels: int = 1,
        ngf: int = 64,
        dropout: float = 0.5,
        norm: str = "batch",
        out_act: str = "tanh",
        residual: bool = False,
    ) -> None:
        super().__init__()
        if residual and in_channels != out_channels:
            raise ValueError("residual needs in_channels == out_channels")
        self.in_channels, self.residual, self.out_act = in_channels, residual, out_act
        ch = [ngf, ngf * 2, ngf * 4, ngf * 8, ngf * 8, ngf * 8]
        self.downs = nn.ModuleList()
        prev = in_channels
        for i, c in enumerate(ch):
            layers: list[nn.Module] = [nn.Conv2d(prev, c, 4, stride=2, padding=1, bias=(i in (0, 5)))]
            if i not in (0, 5):  # no norm at the outermost and innermost layers
                layers.append(_norm(norm, c))
            layers.append(nn.LeakyReLU(0.2, inplace=True) if i < 5 else nn.ReLU(inplace=True))
            self.downs.append(nn.Sequential(*layers))
            prev = c
        self.ups = nn.ModuleList()
        up_out = [ngf * 8, ngf * 8, ngf * 4, ngf * 2, ngf, out_channels]
        for i, c in enumerate(up_out):
            cin = ch[5] if i == 0 else up_out[i - 1] + ch[5 - i]
            last = i == 5
            layers = [nn.ConvTranspose2d(cin, c, 4, stride=2, padding=1, bias=last)]
            if not last:
                layers.append(_norm(norm, c))
                if i < 3 and dropout > 0:
                    layers.append(nn.Dropout(dropout))
                layers.append(nn.ReLU(inplace=True))
            self.ups.append(nn.Sequential(*layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"UNetGenerator expects (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        xp, (h, w) = pad_to_multiple(x, self.multiple)
        skips = []
        y = xp
        for down in self.downs:
            y = down(y)
            skips.append(y)
        y = self.ups[0](skips[-1])
        for i in range(1, 6):
            y = self.ups[i](torch.cat([y, skips[5 - i]], dim=1))
        if self.out_act == "tanh":
            y = torch.tanh(y)
        if self.residual:
            y = y + xp
        return y[..., :h, :w]


class PatchCritic(nn.Module):
    """PatchGAN critic for WGAN-GP: forward(condition, image) -> (B,1,h,w) scores, no batch norm."""

    def __init__(self, *, in_channels: int = 2, ndf: int = 64, n_layers: int = 3, norm: str = "none") -> None:
        super().__init__()
        if norm == "batch":
            raise ValueError("WGAN-GP critic must not use batch normalisation")
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2**n, 8)
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, 4, stride=2, padding=1),
                _norm(norm, ndf * mult),
                nn.LeakyReLU(0.2, True),
            ]
        prev, mult = mult, min(2**n_layers, 8)
        layers += [
            nn.Conv2d(ndf * prev, ndf * mult, 4, stride=1, padding=1),
            _norm(norm, ndf * mult),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1),
        ]
        self.net = nn.Sequential(*layers)

    def forward(self, condition: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([condition, image], dim=1))


class Cascade(nn.Module):
    """Generators applied in a row; forward(x) -> last stage's output (same size)."""

    multiple = 64

    def __init__(self, stages: Sequence[nn.Module]) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor, *, return_all: bool = False):
        outs = []
        for g in self.stages:
            x = g(x)
            outs.append(x)
        return outs if return_all else x


def build_generator(*, scale: int = 1, **config) -> UNetGenerator:
    """Registry builder for ``pix2wgan`` (``scale`` is the pipeline's SR factor, unused by the net)."""
    return UNetGenerator(**config)


def build_cascade(*, scale: int = 1, stages: Optional[Sequence[dict]] = None) -> Cascade:
    """Registry builder for ``pix2wgan-cascade``: one generator config per stage (default two small)."""
    stages = stages if stages is not None else CASCADE_PRESETS["small"]["stages"]
    if len(stages) < 2:
        raise ValueError("a cascade needs at least two stages")
    return Cascade([UNetGenerator(**dict(s)) for s in stages])


def build_critic(preset: str = "small", **overrides) -> PatchCritic:
    """The WGAN-GP critic for the training engineer (``in_channels`` = condition + image)."""
    cfg = dict(CRITIC_PRESETS[preset])
    cfg.update(overrides)
    return PatchCritic(**cfg)

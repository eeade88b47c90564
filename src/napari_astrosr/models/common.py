"""Building blocks shared by the networks (torch only).

Restormer's bias-free LayerNorm, MDTA attention and GDFN feed-forward are used by both
:mod:`.restormer` and :mod:`.fisr` (PromptIR is a Restormer with prompt blocks), so they
live here once. Also: padding to a multiple, and a flux-conserving bicubic upsampling
in torch (used inside FISR, where it must be differentiable and batched).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LayerNorm2d(nn.Module):
    """Per-pixel LayerNorm over channels of a (B, C, H, W) tensor.

    ``bias_free=True`` is Restormer's BiasFree_LayerNorm: the mean is *not* subtracted
    (x / sqrt(var + eps) * weight), which keeps a flat sky level meaningful.
    """

    def __init__(self, channels: int, *, bias_free: bool = True, eps: float = 1e-5) -> None:
        super().__init__()
        self.bias_free = bias_free
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = None if bias_free else nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var = x.var(dim=1, keepdim=True, unbiased=False)
        w = self.weight.view(1, -1, 1, 1)
        if self.bias_free:
            return x / torch.sqrt(var + self.eps) * w
        mu = x.mean(dim=1, keepdim=True)
        return (x - mu) / torch.sqrt(var + self.eps) * w + self.bias.view(1, -1, 1, 1)


class MDTA(nn.Module):
    """Multi-Dconv-head Transposed Attention (Restormer): attention across channels.

    Cost is linear in the number of pixels (the attention map is C x C per head), which is
    what makes a transformer usable on large astronomical images.
    """

    def __init__(self, dim: int, heads: int, *, bias: bool = False) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} not divisible by heads {heads}")
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, 1, bias=bias)
        self.qkv_dw = nn.Conv2d(dim * 3, dim * 3, 3, padding=1, groups=dim * 3, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv_dw(self.qkv(x)).chunk(3, dim=1)
        q = q.reshape(b, self.heads, c // self.heads, h * w)
        k = k.reshape(b, self.heads, c // self.heads, h * w)
        v = v.reshape(b, self.heads, c // self.heads, h * w)
        q = F.normalize(q, dim=-1)
        k = F.normalize(k, dim=-1)
        attn = (q @ k.transpose(-2, -1)) * self.temperature
        out = attn.softmax(dim=-1) @ v
        return self.project_out(out.reshape(b, c, h, w))


class GDFN(nn.Module):
    """Gated-Dconv Feed-forward Network (Restormer)."""

    def __init__(self, dim: int, expansion: float, *, bias: bool = False) -> None:
        super().__init__()
        hidden = int(dim * expansion)
        self.project_in = nn.Conv2d(dim, hidden * 2, 1, bias=bias)
        self.dw = nn.Conv2d(hidden * 2, hidden * 2, 3, padding=1, groups=hidden * 2, bias=bias)
        self.project_out = nn.Conv2d(hidden, dim, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.dw(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(x1) * x2)


class TransformerBlock(nn.Module):
    """Restormer block: x + MDTA(LN(x)), then x + GDFN(LN(x))."""

    def __init__(
        self, dim: int, heads: int, expansion: float, *, bias: bool = False, bias_free_norm: bool = True
    ) -> None:
        super().__init__()
        self.norm1 = LayerNorm2d(dim, bias_free=bias_free_norm)
        self.attn = MDTA(dim, heads, bias=bias)
        self.norm2 = LayerNorm2d(dim, bias_free=bias_free_norm)
        self.ffn = GDFN(dim, expansion, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


def blocks(n: int, dim: int, heads: int, expansion: float, *, bias: bool, bias_free_norm: bool) -> nn.Sequential:
    """``n`` transformer blocks in a row."""
    return nn.Sequential(
        *[TransformerBlock(dim, heads, expansion, bias=bias, bias_free_norm=bias_free_norm) for _ in range(n)]
    )


class Downsample(nn.Module):
    """Halve H, W and double channels (conv + PixelUnshuffle, as in Restormer)."""

    def __init__(self, dim: int, *, bias: bool = False) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(dim, dim // 2, 3, padding=1, bias=bias), nn.PixelUnshuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Upsample(nn.Module):
    """Double H, W and halve channels (conv + PixelShuffle, as in Restormer)."""

    def __init__(self, dim: int, *, bias: bool = False) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(dim, dim * 2, 3, padding=1, bias=bias), nn.PixelShuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad (B, C, H, W) at the bottom/right to a multiple of ``multiple``.

    Reflect padding where the image is large enough, replicate otherwise (reflect
    needs pad < size). Returns the padded tensor and the original (H, W).
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        mode = "reflect" if (ph < h and pw < w) else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x, (h, w)


def flux_conserving_upsample(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Bicubic upsampling corrected so that each output ``scale x scale`` block averages to its input pixel.

    Works in surface-brightness units (block *mean* == input), i.e. the torch twin of
    ``core.resample.upsample`` up to the factor ``scale**2``. Written here rather than
    calling the numpy version because it runs inside the network on batches and must stay
    differentiable and on the device. One additive correction per block makes the
    constraint exact (to float rounding).
    """
    if scale == 1:
        return x
    up = F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)
    err = x - F.avg_pool2d(up, scale)
    return up + F.interpolate(err, scale_factor=scale, mode="nearest")


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)

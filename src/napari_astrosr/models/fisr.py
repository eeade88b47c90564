"""FISR: flux-guided super-resolution on a PromptIR-style encoder-decoder.

Architecture (torch only)::

    x (B,1,H,W) --embed--> Restormer encoder (4 levels, MDTA + GDFN blocks)
    flux map (B,1,H,W) --FluxEncoder--> features at 1, 1/2, 1/4 of the LR grid
    decoder levels 1/4, 1/2, 1: up + skip + transformer blocks + FluxGuidanceController
    refinement -> conv -> PixelShuffle(scale) -> residual
    out = flux_conserving_bicubic(x, scale) + residual          (B,1,sH,sW)

A :class:`FluxGuidanceController` is PromptIR's prompt block with FISR's flux guidance:
a learned bank of ``prompt_len`` prompts whose combination weights come from the pooled
image features *and* the pooled flux features, spatially modulated by the flux features
(where the sources are), concatenated to the decoder features, mixed by a transformer
block and reduced back.

The flux map is computed outside the model (``core.fluxmap.flux_map_from_image`` on the
LR input, in ``restoration.py``) and passed in the same normalised units as the image;
the model compresses it with ``asinh`` so bright and faint sources both register.

Flux: the base is flux-conserving in surface-brightness units (each output block averages
to its input pixel), the learned residual is not constrained; use ``flux_exact=True``
in ``restoration.restore`` for a forward-model-consistent output.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .common import Downsample, TransformerBlock, Upsample, blocks, flux_conserving_upsample, pad_to_multiple

PRESETS: dict[str, dict] = {
    # PromptIR / FISR size (Restormer backbone widths, 5 prompts per controller)
    "paper": dict(
        dim=48, num_blocks=(4, 6, 6, 8), heads=(1, 2, 4, 8), refinement=4, expansion=2.66, prompt_len=5, prompt_size=16
    ),
    "small": dict(
        dim=16, num_blocks=(1, 2, 2, 2), heads=(1, 2, 4, 8), refinement=1, expansion=2.0, prompt_len=5, prompt_size=16
    ),
    "tiny": dict(
        dim=8, num_blocks=(1, 1, 1, 1), heads=(1, 1, 2, 2), refinement=1, expansion=2.0, prompt_len=3, prompt_size=8
    ),
}


class FluxEncoder(nn.Module):
    """Encodes the flux map at three scales (1, 1/2, 1/4 of the LR grid)."""

    def __init__(self, dim: int, *, bias: bool = False) -> None:
        super().__init__()
        self.embed = nn.Sequential(
            nn.Conv2d(1, dim, 3, padding=1, bias=bias), nn.GELU(), nn.Conv2d(dim, dim, 3, padding=1, bias=bias)
        )
        self.down1 = nn.Sequential(Downsample(dim, bias=bias), nn.GELU())
        self.down2 = nn.Sequential(Downsample(dim * 2, bias=bias), nn.GELU())

    def forward(self, fm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f1 = self.embed(torch.asinh(fm))
        f2 = self.down1(f1)
        return f1, f2, self.down2(f2)


class FluxGuidanceController(nn.Module):
    """Prompt bank combined by image+flux features, injected into decoder features."""

    def __init__(
        self,
        feat_ch: int,
        flux_ch: int,
        *,
        prompt_len: int,
        prompt_size: int,
        heads: int,
        expansion: float,
        bias: bool = False,
        bias_free_norm: bool = True,
    ) -> None:
        super().__init__()
        self.prompts = nn.Parameter(torch.rand(prompt_len, feat_ch, prompt_size, prompt_size))
        self.weights = nn.Linear(feat_ch + flux_ch, prompt_len)
        self.prompt_conv = nn.Conv2d(feat_ch, feat_ch, 3, padding=1, bias=False)
        self.flux_mod = nn.Conv2d(flux_ch, feat_ch, 1, bias=True)
        self.mix = TransformerBlock(feat_ch * 2, heads, expansion, bias=bias, bias_free_norm=bias_free_norm)
        self.reduce = nn.Conv2d(feat_ch * 2, feat_ch, 1, bias=bias)

    def forward(self, feat: torch.Tensor, flux: torch.Tensor) -> torch.Tensor:
        b, _, h, w = feat.shape
        pooled = torch.cat([feat.mean(dim=(-2, -1)), flux.mean(dim=(-2, -1))], dim=1)
        wts = self.weights(pooled).softmax(dim=1)  # (B, L)
        prompt = torch.einsum("bl,lchw->bchw", wts, self.prompts)
        prompt = F.interpolate(prompt, size=(h, w), mode="bilinear", align_corners=False)
        prompt = self.prompt_conv(prompt) * (1 + self.flux_mod(flux))  # flux says *where*
        return feat + self.reduce(self.mix(torch.cat([feat, prompt], dim=1)))


class FISR(nn.Module):
    """forward(x (B,1,H,W), flux_map (B,1,H,W)) -> (B,1,sH,sW); any H, W."""

    multiple = 8

    def __init__(
        self,
        *,
        scale: int = 2,
        in_channels: int = 1,
        dim: int = 48,
        num_blocks: Sequence[int] = (4, 6, 6, 8),
        heads: Sequence[int] = (1, 2, 4, 8),
        refinement: int = 4,
        expansion: float = 2.66,
        prompt_len: int = 5,
        prompt_size: int = 16,
        bias: bool = False,
        bias_free_norm: bool = True,
    ) -> None:
        super().__init__()
        if scale not in (1, 2, 3, 4):
            raise ValueError(f"FISR scale must be 1-4, got {scale}")
        nb, hd, e = list(num_blocks), list(heads), expansion
        kw = dict(bias=bias, bias_free_norm=bias_free_norm)
        self.scale = scale
        self.in_channels = in_channels
        self.patch_embed = nn.Conv2d(in_channels, dim, 3, padding=1, bias=bias)
        self.enc1 = blocks(nb[0], dim, hd[0], e, **kw)
        self.down1 = Downsample(dim, bias=bias)
        self.enc2 = blocks(nb[1], dim * 2, hd[1], e, **kw)
        self.down2 = Downsample(dim * 2, bias=bias)
        self.enc3 = blocks(nb[2], dim * 4, hd[2], e, **kw)
        self.down3 = Downsample(dim * 4, bias=bias)
        self.latent = blocks(nb[3], dim * 8, hd[3], e, **kw)
        self.flux_encoder = FluxEncoder(dim, bias=bias)
        pk = dict(prompt_len=prompt_len, prompt_size=prompt_size, expansion=e, **kw)
        self.up3 = Upsample(dim * 8, bias=bias)
        self.reduce3 = nn.Conv2d(dim * 8, dim * 4, 1, bias=bias)
        self.dec3 = blocks(nb[2], dim * 4, hd[2], e, **kw)
        self.fgc3 = FluxGuidanceController(dim * 4, dim * 4, heads=hd[2], **pk)
        self.up2 = Upsample(dim * 4, bias=bias)
        self.reduce2 = nn.Conv2d(dim * 4, dim * 2, 1, bias=bias)
        self.dec2 = blocks(nb[1], dim * 2, hd[1], e, **kw)
        self.fgc2 = FluxGuidanceController(dim * 2, dim * 2, heads=hd[1], **pk)
        self.up1 = Upsample(dim * 2, bias=bias)
        self.dec1 = blocks(nb[0], dim * 2, hd[0], e, **kw)
        self.fgc1 = FluxGuidanceController(dim * 2, dim, heads=hd[0], **pk)
        self.refine = blocks(refinement, dim * 2, hd[0], e, **kw)
        self.tail = nn.Sequential(
            nn.Conv2d(dim * 2, in_channels * scale * scale, 3, padding=1, bias=bias), nn.PixelShuffle(scale)
        )

    def forward(self, x: torch.Tensor, flux_map: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"FISR expects (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        if flux_map.shape != x.shape[:1] + (1,) + x.shape[2:]:
            raise ValueError(f"flux map shape {tuple(flux_map.shape)} does not match image {tuple(x.shape)}")
        xp, (h, w) = pad_to_multiple(x, self.multiple)
        fp, _ = pad_to_multiple(flux_map, self.multiple)
        f1, f2, f3 = self.flux_encoder(fp)
        e1 = self.enc1(self.patch_embed(xp))
        e2 = self.enc2(self.down1(e1))
        e3 = self.enc3(self.down2(e2))
        lat = self.latent(self.down3(e3))
        d3 = self.fgc3(self.dec3(self.reduce3(torch.cat([self.up3(lat), e3], 1))), f3)
        d2 = self.fgc2(self.dec2(self.reduce2(torch.cat([self.up2(d3), e2], 1))), f2)
        d1 = self.fgc1(self.dec1(torch.cat([self.up1(d2), e1], 1)), f1)
        out = flux_conserving_upsample(xp, self.scale) + self.tail(self.refine(d1))
        s = self.scale
        return out[..., : s * h, : s * w]


# Fast CPU variant (registry preset "lite"). Why a separate class: the PromptIR encoder-decoder
# reaches ~30 patches/s on this CPU and under-trains in minutes, while a shallow full-resolution
# residual CNN on the flux-conserving base trains several times faster (DESIGN section 8); its
# blocks run on the input grid (a target-grid body measured slower than "tiny" here).
LITE_PRESETS: dict[str, dict] = {
    "lite": dict(variant="lite", dim=32, num_blocks=8, flux_dim=8),
}


class _ResBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(dim, dim, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(dim, dim, 3, padding=1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class FISRLite(nn.Module):
    """Minimal FISR: flux-map guidance + shallow residual CNN, no down-sampling.

    ``out = flux_conserving_bicubic(x) + PixelShuffle(tail(gate * blocks(head([x, asinh(flux)]))))``
    with the blocks at full input resolution (cheaper by ``scale**2`` than the target grid), where
    ``gate = 1 + conv(flux features)``: the flux map enters as an input channel and modulates the
    features (FISR's "flux says where", without the prompt bank). forward(x, flux_map) like FISR.
    Flux: the base is flux-conserving; the residual is not constrained (use ``flux_exact``).
    """

    multiple = 1

    def __init__(
        self, *, scale: int = 2, in_channels: int = 1, dim: int = 32, num_blocks: int = 8, flux_dim: int = 8
    ) -> None:
        super().__init__()
        if scale not in (1, 2, 3, 4):
            raise ValueError(f"FISR scale must be 1-4, got {scale}")
        self.scale = scale
        self.in_channels = in_channels
        self.flux_embed = nn.Sequential(nn.Conv2d(1, flux_dim, 3, padding=1), nn.ReLU(inplace=True))
        self.head = nn.Conv2d(in_channels + flux_dim, dim, 3, padding=1)
        self.body = nn.Sequential(*[_ResBlock(dim) for _ in range(int(num_blocks))])
        self.flux_gate = nn.Conv2d(flux_dim, dim, 1)
        self.tail = nn.Sequential(nn.Conv2d(dim, in_channels * scale * scale, 3, padding=1), nn.PixelShuffle(scale))

    def forward(self, x: torch.Tensor, flux_map: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"FISR expects (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        if flux_map.shape != x.shape[:1] + (1,) + x.shape[2:]:
            raise ValueError(f"flux map shape {tuple(flux_map.shape)} does not match image {tuple(x.shape)}")
        base = flux_conserving_upsample(x, self.scale)
        ff = self.flux_embed(torch.asinh(flux_map))
        feat = self.body(self.head(torch.cat([x, ff], dim=1)))
        return base + self.tail(feat * (1 + self.flux_gate(ff)))


def build(*, scale: int = 2, variant: str = "unet", **config) -> nn.Module:
    """Registry builder (``variant="lite"`` builds :class:`FISRLite`)."""
    if variant == "lite":
        return FISRLite(scale=scale, **config)
    if variant != "unet":
        raise ValueError(f"unknown FISR variant {variant!r}; known: unet, lite")
    return FISR(scale=scale, **config)

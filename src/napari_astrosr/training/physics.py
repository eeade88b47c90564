"""The STAR forward model and the flux-exact projection in torch, for training.

Why this exists beside :mod:`napari_astrosr.core.projection`: training wants the loss on
what the user will actually get from ``model + --flux-exact``, i.e. on the *projected*
output, and that needs a projection torch can differentiate through, batched over samples
that each have their own PSF. The core (numpy) projection stays the one used at inference.

Operator, in the normalised surface-brightness units the training patches use (an LR pixel
value is the mean of its ``s x s`` HR block after blur)::

    A(y) = avg_pool_s(blur(y, psf))          HR (B,1,H,W) -> LR (B,1,H/s,W/s)
    A^T(z) = blur^T(upsample_nearest(z) / s^2)

``blur`` is a zero-padded 'same' correlation with each sample's PSF; its exact adjoint is
the correlation with the flipped PSF. Zero padding differs from the
core's edge renormalisation within a PSF radius of the patch edge, which is why the loop
scores the projected output only inside a margin.

:func:`project` returns ``y + A^T (A A^T)^{-1} (x - A y)``: the least change to ``y`` whose
blur + block-mean reproduces ``x``; ``(A A^T)^{-1}`` by a fixed number of batched conjugate
gradient iterations, unrolled so gradients flow to ``y``.

Flux: ``A`` conserves flux in these units (unit-sum PSF, block mean), so the projection sets
every LR block's flux (after blur) to the observed one; away from patch edges the projected
patch's total equals the input's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["psf_bank", "blur", "blur_adjoint", "forward", "adjoint", "project", "DirectProjector", "fft_correlate"]


def psf_bank(psfs: list, size: int | None = None) -> torch.Tensor:
    """Stack odd, centred PSFs (numpy or None = delta) into a (N, 1, k, k) tensor, zero-padded to one size."""
    import numpy as np

    arrs = [np.ones((1, 1), np.float32) if p is None else np.asarray(p, np.float32) for p in psfs]
    k = max([a.shape[0] for a in arrs] + [a.shape[1] for a in arrs] + [size or 1])
    k += 1 - k % 2
    out = np.zeros((len(arrs), 1, k, k), np.float32)
    for i, a in enumerate(arrs):
        if a.shape[0] % 2 == 0 or a.shape[1] % 2 == 0:
            raise ValueError(f"PSF {i} has even shape {a.shape}; PSFs must be odd-sized and centred")
        oy, ox = (k - a.shape[0]) // 2, (k - a.shape[1]) // 2
        out[i, 0, oy : oy + a.shape[0], ox : ox + a.shape[1]] = a / a.sum()
    return torch.from_numpy(out)


FFT_MIN_KERNEL = 7
"""On CUDA, PSFs at least this wide are applied by FFT (grouped large-kernel convolutions are slow there)."""

FFT_MIN_KERNEL_CPU = 11
"""On CPU, PSFs at least this wide are applied by FFT. Measured (one thread, 64x64 HR patches, per-sample
PSFs): k = 7 direct 0.2 ms vs FFT 3.1 ms for 8 samples; k = 15 11.8 vs 2.3 ms; k = 41 97 vs 1.8 ms (506 vs 24 ms
for 64 samples)."""


def fft_correlate(y: torch.Tensor, psf: torch.Tensor) -> torch.Tensor:
    """Zero-padded 'same' correlation of (B,1,H,W) with (B or 1,1,k,k), by FFT on a (H+k-1, W+k-1) grid.

    Equal (to float round-off, ~1e-6 relative) to ``F.conv2d`` with ``padding=k//2``: the linear
    convolution with the flipped kernel, cropped to the centre. One batched rfft2 on the tensors'
    device; used for every PSF at least :data:`FFT_MIN_KERNEL` (CUDA) / :data:`FFT_MIN_KERNEL_CPU` wide.
    """
    h, w = y.shape[-2:]
    k = psf.shape[-1]
    r = k // 2
    s = (h + k - 1, w + k - 1)
    dt = torch.float64 if y.dtype == torch.float64 else torch.float32  # float64 stays float64 (exact-adjoint checks)
    spec = torch.fft.rfft2(y.to(dt), s=s) * torch.fft.rfft2(torch.flip(psf.to(dt), dims=(-2, -1)), s=s)
    return torch.fft.irfft2(spec, s=s)[..., r : r + h, r : r + w].to(y.dtype)


def _grouped(y: torch.Tensor, psf: torch.Tensor, transpose: bool) -> torch.Tensor:
    # the adjoint of a zero-padded 'same' correlation is the correlation with the flipped kernel;
    # conv2d with a flipped kernel instead of conv_transpose2d: measured 15x faster on CPU
    if transpose:
        psf = torch.flip(psf, dims=(-2, -1))
    b, c, h, w = y.shape
    r = psf.shape[-1] // 2
    if c == 1 and psf.shape[0] in (1, b) and psf.shape[-1] >= (FFT_MIN_KERNEL if y.is_cuda else FFT_MIN_KERNEL_CPU):
        return fft_correlate(y, psf)
    if c == 1 and psf.shape[0] == 1:  # one PSF for the whole batch: a plain (much faster) convolution
        return F.conv2d(y, psf, padding=r)
    if c != 1 or psf.shape[0] != b:
        raise ValueError(
            f"blur: images {tuple(y.shape)} need one single-channel PSF per sample, got {tuple(psf.shape)}"
        )
    return F.conv2d(y.reshape(1, b, h, w), psf, padding=r, groups=b).reshape(b, 1, h, w)


def blur(y: torch.Tensor, psf: torch.Tensor) -> torch.Tensor:
    """Per-sample zero-padded 'same' correlation of (B,1,H,W) images with (B,1,k,k) PSFs."""
    return _grouped(y, psf, transpose=False)


def blur_adjoint(z: torch.Tensor, psf: torch.Tensor) -> torch.Tensor:
    """Exact adjoint of :func:`blur`."""
    return _grouped(z, psf, transpose=True)


def forward(y: torch.Tensor, psf: torch.Tensor, scale: int) -> torch.Tensor:
    """``A y``: blur then ``scale x scale`` block mean (HR -> LR)."""
    b = blur(y, psf)
    return F.avg_pool2d(b, scale) if scale > 1 else b


def adjoint(z: torch.Tensor, psf: torch.Tensor, scale: int) -> torch.Tensor:
    """``A^T z``: replicate each LR pixel over its block divided by ``scale^2``, then blur^T."""
    if scale > 1:
        z = F.interpolate(z, scale_factor=scale, mode="nearest") / float(scale * scale)
    return blur_adjoint(z, psf)


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum(dim=(1, 2, 3), keepdim=True)


def project(y: torch.Tensor, x: torch.Tensor, psf: torch.Tensor, scale: int, *, iterations: int = 15) -> torch.Tensor:
    """Least change to ``y`` (HR) so that ``forward(y') == x`` (LR), differentiable in ``y``.

    Batched conjugate gradients on ``A A^T v = x - A y`` (one independent system per sample),
    a fixed number of iterations, unpreconditioned. At x4 15 iterations reach a relative
    data residual of ~1e-5; at x2 with Gaussian+Airy PSFs convergence is slow (~2e-2 after 15,
    3e-4 after 120 on 24-px LR patches): for training use :class:`DirectProjector`, exact
    at any scale.
    """
    if x.shape[-2] * scale != y.shape[-2] or x.shape[-1] * scale != y.shape[-1]:
        raise ValueError(f"project: HR {tuple(y.shape)} is not scale={scale} x LR {tuple(x.shape)}")

    def M(v):
        return forward(adjoint(v, psf, scale), psf, scale)

    r = x - forward(y, psf, scale)
    v = torch.zeros_like(r)
    p = r
    rr = _dot(r, r)
    tiny = torch.finfo(y.dtype).tiny
    for _ in range(int(iterations)):
        mp = M(p)
        alpha = rr / _dot(p, mp).clamp_min(tiny)
        v = v + alpha * p
        r = r - alpha * mp
        rr_new = _dot(r, r)
        p = r + (rr_new / rr.clamp_min(tiny)) * p
        rr = rr_new
    return y + adjoint(v, psf, scale)


GROUPED_SOLVE_CPU = True
"""On CPU, apply the inverses one distinct PSF at a time (:func:`_grouped_solve`) rather than by a gathered ``bmm``."""


def _grouped_solve(stack: torch.Tensor, rows: list[int], r: torch.Tensor) -> torch.Tensor:
    """``stack[rows[i]] @ r[i]`` for every sample ``i`` of ``r`` (B, n), one matrix product per distinct PSF.

    Why, on CPU: ``bmm`` of B gathered (n, n) inverses is memory-bound twice over (the gather copies
    B x n^2 floats, then each is read once per sample); here each inverse is read once per step for all the
    samples sharing it (profiled: bmm + index_select were 80% of the projected loss at batch 8, 29-px PSFs).
    The inverses are symmetric, so ``r_g @ inv`` is ``(inv @ r_g^T)^T``.
    """
    order = sorted(range(len(rows)), key=lambda i: rows[i])
    parts, start = [], 0
    while start < len(order):
        end = start
        while end < len(order) and rows[order[end]] == rows[order[start]]:
            end += 1
        idx = torch.as_tensor(order[start:end], device=r.device)
        parts.append(r.index_select(0, idx).to(stack.dtype) @ stack[rows[order[start]]])
        start = end
    back = torch.empty(len(order), dtype=torch.long)
    back[torch.as_tensor(order)] = torch.arange(len(order))
    return torch.cat(parts).index_select(0, back.to(r.device)).to(r.dtype)


class DirectProjector:
    """Exact batched projection for a fixed PSF bank and LR patch shape, by precomputed ``(A A^T)^{-1}``.

    Why not CG: at x2 the zero-padded patch systems converge slowly (see :func:`project`),
    and a training step cannot afford hundreds of iterations. ``A A^T`` is only
    ``(h*w)^2`` (576^2 for 24-px LR patches), so its inverse is built once per PSF (lazily,
    float64) and applied as a matrix product. Augmented samples (``k`` quarter turns, then
    an optional left-right flip, applied to image and PSF alike) use the same inverse:
    ``A_T = T A T^-1`` for those symmetries, so ``(A_T A_T^T)^-1 = T (A A^T)^-1 T^-1``.
    """

    def __init__(self, bank: torch.Tensor, scale: int, lr_shape: tuple[int, int]):
        self.bank = bank
        self.scale = int(scale)
        self.lr_shape = (int(lr_shape[0]), int(lr_shape[1]))
        self._inv: dict[int, torch.Tensor] = {}
        self._stack: torch.Tensor | None = None  # the cached inverses as one (P, n, n) tensor, for one bmm
        self._row: dict[int, int] = {}

    def to(self, device) -> DirectProjector:
        """Move the PSF bank (and any inverses built so far) to ``device``; returns self."""
        self.bank = self.bank.to(device)
        self._inv = {i: m.to(device) for i, m in self._inv.items()}
        self._stack, self._row = None, {}
        return self

    def inverse(self, i: int) -> torch.Tensor:
        """``(A A^T)^{-1}`` for PSF ``i`` (un-augmented), shape (h*w, h*w), float32, on the bank's device."""
        if i not in self._inv:
            h, w = self.lr_shape
            n = h * w
            # columns of A^T (one HR image per LR pixel) by a batched float32 convolution (fast
            # on CPU, unlike float64), then A A^T = (A^T)^T A^T as one float64 matrix product
            dev = self.bank.device
            eye = torch.eye(n, dtype=torch.float32, device=dev).reshape(n, 1, h, w)
            at = adjoint(eye, self.bank[i : i + 1].float(), self.scale).reshape(n, -1).double()
            m = at @ at.T
            self._inv[i] = torch.linalg.inv(m).float()
        return self._inv[i]

    def _stacked(self, ids: list[int]) -> tuple[torch.Tensor, list[int]]:
        """The inverses of ``ids`` stacked once (rebuilt only when a new PSF appears) and each id's row."""
        if any(i not in self._row for i in ids):
            for i in ids:
                self.inverse(i)
            keys = sorted(self._inv)
            self._stack = torch.stack([self._inv[i] for i in keys])
            self._row = {i: r for r, i in enumerate(keys)}
        return self._stack, [self._row[i] for i in ids]

    def project(
        self,
        y: torch.Tensor,
        x: torch.Tensor,
        psf_ids,
        *,
        rot90: int = 0,
        flip: bool = False,
        psf: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Project each sample of ``y`` (B,1,H,W) onto ``forward(.) == x`` for its (augmented) PSF.

        ``psf`` is the augmented PSF batch (B,1,k,k); built from the bank when not given.
        """
        b = y.shape[0]
        if tuple(x.shape[-2:]) != self.lr_shape:
            raise ValueError(f"DirectProjector built for LR {self.lr_shape}, got {tuple(x.shape[-2:])}")
        ids = [int(i) for i in psf_ids]
        if psf is None:
            psf = torch.rot90(self.bank[torch.as_tensor(ids, device=self.bank.device)], rot90, dims=(-2, -1))
            psf = torch.flip(psf, dims=(-1,)) if flip else psf
        r = x - forward(y, psf, self.scale)
        # undo the augmentation on the residual, solve, redo it
        if flip:
            r = torch.flip(r, dims=(-1,))
        r = torch.rot90(r, -rot90, dims=(-2, -1))
        h, w = r.shape[-2:]
        stack, rows = self._stacked(ids)
        if r.is_cuda or not GROUPED_SOLVE_CPU:
            # one batched matrix product (a Python loop of mat-vecs per sample dominated the GPU step)
            inv = stack.index_select(0, torch.as_tensor(rows, device=stack.device))
            v = torch.bmm(inv, r.reshape(b, -1, 1).to(inv.dtype)).reshape(b, 1, h, w)
        else:
            v = _grouped_solve(stack, rows, r.reshape(b, -1)).reshape(b, 1, h, w)
        v = torch.rot90(v, rot90, dims=(-2, -1))
        if flip:
            v = torch.flip(v, dims=(-1,))
        return y + adjoint(v, psf, self.scale)

r"""Flux-exact projection: make an SR image consistent with the observed LR image.

The observation model (DESIGN.md section 3, "Flux-exact means consistent with the forward
model") is

    lr = A(hr) = block_sum(convolve(hr, psf), scale)

with :func:`napari_astrosr.core.psf.convolve` (flux-conserving, zero-padded with scatter
renormalisation at the edges) and :func:`napari_astrosr.core.resample.block_sum`.
:func:`project_flux_exact` returns the image closest to ``sr`` (least squares) that
reproduces ``lr`` exactly through this model::

    x = sr + A^T y,   (A A^T) y = lr - A sr

solved by conjugate gradients on the LR grid, preconditioned by the Fourier inverse
of ``A A^T`` (nearly a convolution on the LR grid). ``A^T`` is the exact adjoint: replicate each
LR pixel over its block (block_split *without* the 1/s^2), then apply the convolution's
adjoint (correlation with the PSF, then the same edge renormalisation).

Cost: CG never leaves the LR grid. ``A A^T`` is applied as an LR convolution (the PSF's
autocorrelation folded by the block sums) plus an exact correction on four thin strips along the
edges (:class:`_NormalLR`), and ``A`` / ``A^T`` themselves run by phases on the LR grid
(:class:`_BlurBlockSum`); one HR adjoint per solve gives the correction. Measured at 2048^2 output
(``benchmarks/bench_projection.py --against``, docs/results_speed.md): 2x faster exact, 3x
noise-aware, same residuals.

Flux: the total flux of ``x`` equals the total of ``lr`` (the model conserves flux), and
every LR pixel's flux is reproduced after blur + block-sum. With ``psf=None`` each block of
``x`` sums exactly to its LR pixel.

When *not* to use it: on noisy input the projection fits the noise too (the
constraint is exact), typically costing 1-3 dB; use it on clean or high-S/N data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from ..exceptions import AstroSRError
from .psf import normalize_psf
from .resample import _int_factor

__all__ = [
    "ForwardModel",
    "forward_model",
    "iter_project_flux_exact",
    "project_flux_exact",
    "noise_aware_target",
    "WienerFilter",
    "estimate_lr_noise",
]


# The non-negativity rounds stop once a round cuts the clipped (negative) flux by less than this fraction: on fields
# where the clipping does not converge (a ground image's saturated stars, a PSF the data do not quite follow) the
# rounds went on to their cap, about 60% of the projection's time at 2048^2, and changed per-source photometry
# against the truth by nothing measurable (benchmarks/nonneg_rounds.py, docs/results_speed.md).
NONNEG_STAGNATION = 0.02


def _block_sum(x: np.ndarray, s: int) -> np.ndarray:
    """Sum ``s x s`` blocks of a 2-D array whose sides are multiples of ``s``.

    Strided slice additions instead of ``reshape(...).sum(axis=(1, 3))``: numpy reduces
    over the two inner axes of that 4-D view slowly (measured 95 ms vs 12 ms on a 2048^2
    float32 image), and the projection calls this once per CG iteration.
    """
    t = x[0::s]
    for i in range(1, s):
        t = t + x[i::s]
    out = t[:, 0::s]
    for j in range(1, s):
        out = out + t[:, j::s]
    return out if s > 1 else np.array(out)


class _BlurBlockSum:
    """``B K W`` and its adjoint for one PSF, scale and HR shape, computed on the LR grid by phases.

    ``K`` is :class:`~napari_astrosr.core.psf.FluxConvolver`'s zero-padded convolution, ``W`` its
    scatter renormalisation ``1 / w`` (same edge weights), ``B`` the ``s x s`` block sum. Splitting
    the HR image into its ``s^2`` phases ``x[a0::s, a1::s]`` makes ``B K`` a sum of LR convolutions,
    ``(B K x)[I] = sum_a sum_J x_a[J] h_a[I - J]`` with ``h_a[D] = sum_{c in [0, s)^2} psf[s D + c - a + o]``
    (``o`` the PSF's centre), so a blur + block sum costs ``s^2`` LR forward transforms and one
    inverse (``s^2 + 1`` LR transforms against two HR ones, ``2 s^2``); the adjoint is the
    reverse. Same operator as blurring with :func:`~napari_astrosr.core.psf.convolve` and summing
    blocks, to rounding (``tests/core/test_projection.py::test_adjoint_exact``).
    """

    def __init__(self, psf: np.ndarray, s: int, shape: tuple[int, int], dtype=np.float64):
        from scipy import fft as sfft

        from .psf import _check_image_psf

        self._fft = sfft
        self.psf = normalize_psf(psf)
        ky, kx = self.psf.shape
        if ky % 2 == 0 or kx % 2 == 0:
            raise AstroSRError(f"PSF has even shape {self.psf.shape}; use an odd, centred kernel.")
        _check_image_psf(np.empty(shape), self.psf)
        self.s, self.shape, self.dtype = s, shape, np.dtype(dtype)
        self.lr_shape = (shape[0] // s, shape[1] // s)
        # h_a[D] is zero for |D| > l: s D + c - a + o must reach [0, k) for some c, a in [0, s)
        self.ly, self.lx = -(-((ky - 1) // 2 + s - 1) // s), -(-((kx - 1) // 2 + s - 1) // s)
        self.fshape = tuple(sfft.next_fast_len(n + 2 * m, real=True) for n, m in zip(self.lr_shape, (self.ly, self.lx)))

        def phase_sums(k, o, ell):  # (s, 2 ell + 1, k): which PSF rows/columns phase a sends to offset D
            m = np.zeros((s, 2 * ell + 1, k))
            for a in range(s):
                for d in range(-ell, ell + 1):
                    for c in range(s):
                        i = s * d + c - a + o
                        if 0 <= i < k:
                            m[a, d + ell, i] = 1.0
            return m

        my, mx = phase_sums(ky, (ky - 1) // 2, self.ly), phase_sums(kx, (kx - 1) // 2, self.lx)
        h = np.einsum("adi,ij,bej->abde", my, self.psf, mx)  # h[a0, a1] on offsets -l..l
        cplx = np.complex64 if self.dtype == np.float32 else np.complex128
        self.hf = sfft.rfft2(h, self.fshape).astype(cplx)
        self.hf_adj = sfft.rfft2(h[:, :, ::-1, ::-1], self.fshape).astype(cplx)
        w = self._adjoint(np.ones(self.lr_shape, self.dtype))
        self.inv_w = np.where(w > 1e-12, 1.0 / np.maximum(w, 1e-12), 0.0).astype(self.dtype)

    def astype(self, dtype) -> _BlurBlockSum:
        """The same operator evaluated in ``dtype`` (the transforms are cast, not recomputed)."""
        twin = object.__new__(_BlurBlockSum)
        twin.__dict__.update(self.__dict__)
        twin.dtype = np.dtype(dtype)
        cplx = np.complex64 if twin.dtype == np.float32 else np.complex128
        twin.hf, twin.hf_adj = self.hf.astype(cplx), self.hf_adj.astype(cplx)
        twin.inv_w = self.inv_w.astype(twin.dtype)
        return twin

    def apply(self, x: np.ndarray) -> np.ndarray:
        """``B K W x`` (HR -> LR; leading axes are a batch)."""
        f, s, (n0, n1) = self._fft, self.s, self.lr_shape
        xw = np.multiply(x, self.inv_w, dtype=self.dtype)  # one pass, in the operator's precision
        k = xw.ndim - 2
        # the s^2 phases as (..., a0, a1, n0, n1), transformed in one call
        ph = xw.reshape(*xw.shape[:-2], n0, s, n1, s).transpose(*range(k), k + 1, k + 3, k, k + 2)
        acc = (f.rfft2(ph, self.fshape, workers=-1) * self.hf).sum(axis=(-4, -3))
        full = f.irfft2(acc, self.fshape, workers=-1)
        return full[..., self.ly : self.ly + n0, self.lx : self.lx + n1]

    def _adjoint(self, y: np.ndarray, inv_w: Optional[np.ndarray] = None) -> np.ndarray:
        f, s, (n0, n1) = self._fft, self.s, self.lr_shape
        yf = f.rfft2(y.astype(self.dtype, copy=False), self.fshape, workers=-1)
        full = f.irfft2(yf[..., None, None, :, :] * self.hf_adj, self.fshape, workers=-1)
        ph = full[..., self.ly : self.ly + n0, self.lx : self.lx + n1]  # (..., a0, a1, n0, n1)
        k = ph.ndim - 4
        b = y.shape[:-2]
        out = np.empty((*b, *self.shape), self.dtype)
        blocks = out.reshape(*b, n0, s, n1, s)
        hr = ph.transpose(*range(k), k + 2, k, k + 3, k + 1)  # back to (..., n0, a0, n1, a1)
        if inv_w is None:
            blocks[...] = hr
        else:  # the renormalisation in the same pass as the interleaving
            np.multiply(hr, inv_w.reshape(n0, s, n1, s), out=blocks)
        return out

    def adjoint(self, y: np.ndarray) -> np.ndarray:
        """``W K^T B^T y`` (LR -> HR)."""
        return self._adjoint(y, self.inv_w)


class ForwardModel:
    """The linear operator ``A = block_sum o convolve`` for one HR shape, scale and PSF.

    Parameters
    ----------
    shape
        HR shape; must be divisible by ``scale``.
    scale
        Integer block size.
    psf
        Unit-sum odd kernel on the HR grid, or None (pure block sum).
    """

    def __init__(self, shape: tuple[int, int], *, scale: int, psf: Optional[np.ndarray] = None):
        self.scale = s = _int_factor(scale, name="scale")
        self.shape = (int(shape[0]), int(shape[1]))
        if self.shape[0] % s or self.shape[1] % s:
            raise AstroSRError(f"HR shape {self.shape} is not divisible by scale={s}.")
        self.lr_shape = (self.shape[0] // s, self.shape[1] // s)
        self.conv = None if psf is None else _BlurBlockSum(psf, s, self.shape)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """``A x``: blur then block-sum (HR -> LR)."""
        if self.conv is not None:
            return self.conv.apply(np.asarray(x, dtype=np.float64))
        return _block_sum(x, self.scale)

    def adjoint(self, y: np.ndarray) -> np.ndarray:
        """``A^T y``: replicate each LR pixel over its block, then the convolution adjoint (LR -> HR)."""
        if self.conv is not None:
            return self.conv.adjoint(np.asarray(y, dtype=np.float64))
        s = self.scale
        x = np.broadcast_to(y[:, None, :, None], (self.lr_shape[0], s, self.lr_shape[1], s)).reshape(self.shape)
        return np.array(x)


def forward_model(hr: np.ndarray, *, scale: int, psf: Optional[np.ndarray] = None) -> np.ndarray:
    """Simulate the LR observation of ``hr``: ``block_sum(convolve(hr, psf), scale)``.

    NaN pixels are excluded from the blur (see :func:`~napari_astrosr.core.psf.convolve`)
    and make their LR pixel NaN. Trailing rows/columns not filling a block are dropped.
    """
    from .psf import convolve
    from .resample import block_sum

    a = np.asarray(hr, dtype=np.float64)
    if a.ndim != 2:
        raise AstroSRError(f"hr must be 2-D, got shape {a.shape}.")
    s = _int_factor(scale, name="scale")
    blurred = a if psf is None else convolve(a, psf)
    return block_sum(blurred, s)


class _Preconditioner:
    """Fourier-domain inverse of ``A A^T`` treated as a circulant on the LR grid.

    Away from the edges ``A A^T`` is a convolution on the LR grid with kernel
    ``g = A A^T delta``; dividing by its transfer function makes CG converge in a few
    iterations instead of dozens (a wide PSF makes ``A A^T`` ill-conditioned). Frequencies
    where ``g`` has (almost) no power are floored at ``1e-6`` of its maximum, which keeps
    the preconditioner symmetric positive definite.
    """

    def __init__(self, op: ForwardModel):
        from scipy import fft as sfft

        self._fft = sfft
        ny, nx = op.lr_shape
        delta = np.zeros(op.lr_shape)
        cy, cx = ny // 2, nx // 2
        delta[cy, cx] = 1.0
        g = op.normal(delta) if hasattr(op, "normal") else op.apply(op.adjoint(delta))
        g = np.roll(g, (-cy, -cx), axis=(0, 1))
        gf = sfft.rfft2(g).real
        self.inv = 1.0 / np.maximum(gf, 1e-6 * gf.max())
        self._inv32: Optional[np.ndarray] = None
        self._gf = np.maximum(gf, 0.0)
        self.gf0 = max(float(gf[0, 0]), 1e-300)  # A A^T's response to a constant (s^2 for a unit-sum PSF)
        self.transfer = self._gf / self.gf0  # A A^T's spectrum, 1 at zero frequency
        self.shape = op.lr_shape

    def damped(self, damping: float):
        """The preconditioner of ``A A^T + damping`` (absolute units), as a callable like this one."""
        inv = 1.0 / (self._gf + float(damping))
        inv32 = inv.astype(np.float32)
        return lambda r: self._apply(r, inv32 if r.dtype == np.float32 else inv)

    def _apply(self, r: np.ndarray, inv: np.ndarray) -> np.ndarray:
        # a float32 residual is filtered in float32 (half the time; CG only needs an approximate inverse)
        f = self._fft
        return f.irfft2(f.rfft2(r, workers=-1) * inv, self.shape, workers=-1)

    def __call__(self, r: np.ndarray) -> np.ndarray:
        if r.dtype == np.float32:
            if self._inv32 is None:
                self._inv32 = self.inv.astype(np.float32)
            return self._apply(r, self._inv32)
        return self._apply(r, self.inv)


class _Float32Model:
    """The same operator as a :class:`ForwardModel` with a PSF, evaluated in float32.

    Used for the CG *corrections* only: they are small next to the image, so float32's
    ~1e-7 relative rounding stays far below the tolerance, and float32 FFTs take half the
    time of float64 ones (measured 0.09 s vs 0.18 s per 2064^2 rfft2+irfft2 pair). The
    residual that decides convergence is always recomputed in float64
    (:func:`iter_project_flux_exact`'s refinement loop), so the result meets ``tol``
    exactly as before.
    """

    def __init__(self, op: ForwardModel):
        self.conv = op.conv.astype(np.float32)
        self.scale, self.lr_shape, self.shape = op.scale, op.lr_shape, op.shape

    def apply(self, x):
        return self.conv.apply(x)

    def adjoint(self, y):
        return self.conv.adjoint(y)


def _box_autocorrelation_kernel(psf: np.ndarray, s: int) -> np.ndarray:
    """The LR kernel ``g`` of ``A A^T`` away from the edges: ``(A A^T v)[I] = sum_J g[I - J] v[J]``.

    In the interior ``K K^T`` is the convolution with the PSF's autocorrelation ``q``; the block
    sums on both sides make ``g[D] = sum_{a, b in [0, s)^2} q[s D + a - b]``: ``q`` convolved with
    the ``s x s`` box twice (a triangle of base ``2s - 1`` per axis), sampled every ``s``-th pixel.
    """

    def full_conv(a, b):  # small kernels: direct sums (scipy.signal's import alone costs ~1 s)
        out = np.zeros((a.shape[0] + b.shape[0] - 1, a.shape[1] + b.shape[1] - 1))
        for (i, j), v in np.ndenumerate(b):
            out[i : i + a.shape[0], j : j + a.shape[1]] += v * a
        return out

    q = full_conv(psf, psf[::-1, ::-1])
    tri = np.convolve(np.ones(s), np.ones(s))
    h = full_conv(q, np.outer(tri, tri))  # odd sides, centred, symmetric
    cy, cx = (h.shape[0] - 1) // 2, (h.shape[1] - 1) // 2
    ry, rx = cy // s, cx // s
    return np.ascontiguousarray(h[cy - s * ry : cy + s * ry + 1 : s, cx - s * rx : cx + s * rx + 1 : s])


class _NormalLR:
    """``A A^T`` applied on the LR grid, exactly: an LR convolution plus a correction in the edge bands.

    Away from the edges ``A A^T`` is the (zero-padded) convolution with
    :func:`_box_autocorrelation_kernel`, applied by FFTs of the LR grid: ``s^2`` fewer pixels than
    each of the HR transforms ``A`` and ``A^T`` need. Within ``b = ceil((k - 1) / s)`` LR pixels of
    an edge (``k`` the PSF's side) the zero padding and the scatter renormalisation of
    :class:`~napari_astrosr.core.psf.FluxConvolver` make the operator differ; there the difference
    is recomputed exactly, through the real operator on four strips ``2b + 1`` LR pixels wide along
    the edges. A strip's own inner edge only changes the ``b`` pixels next to it, which are not read
    back, and every pixel the ``b`` read rows interact with lies inside the strip.

    An image too small for the strips to pay (a strip wider than a quarter of the image) uses
    ``A (A^T v)`` as a whole, as before.

    Parameters
    ----------
    op
        The HR forward model (with a PSF).
    dtype
        ``np.float32`` (the CG corrections) or ``np.float64``.
    """

    def __init__(self, op: ForwardModel, dtype=np.float64):
        from scipy import fft as sfft

        self._fft = sfft
        self.dtype = np.dtype(dtype)
        s, (n0, n1), (ny, nx) = op.scale, op.lr_shape, op.shape
        psf = op.conv.psf
        self.lr_shape = op.lr_shape
        self._cplx = np.complex64 if self.dtype == np.float32 else np.complex128

        def wrap(m):
            return _Float32Model(m) if self.dtype == np.float32 else m

        self.by, self.bx = -(-(psf.shape[0] - 1) // s), -(-(psf.shape[1] - 1) // s)
        self.hy, self.hx = 2 * self.by + 1, 2 * self.bx + 1
        self.edges = 4 * self.hy <= n0 and 4 * self.hx <= n1
        if not self.edges:
            self._full = wrap(op)
            return
        self._g = _box_autocorrelation_kernel(psf, s)
        self._gf: dict = {}
        self._rows = wrap(ForwardModel((s * self.hy, nx), scale=s, psf=psf))
        self._cols = wrap(ForwardModel((ny, s * self.hx), scale=s, psf=psf))
        for shape in (self.lr_shape, (self.hy, n1), (n0, self.hx)):
            self._conv(np.zeros(shape, self.dtype))  # the kernel transforms, once

    def _conv(self, v: np.ndarray) -> np.ndarray:
        """``G v``: the interior operator, zero padded (its kernel is symmetric: convolution = correlation)."""
        f = self._fft
        ry, rx = (self._g.shape[0] - 1) // 2, (self._g.shape[1] - 1) // 2
        fshape = (f.next_fast_len(v.shape[-2] + 2 * ry, real=True), f.next_fast_len(v.shape[-1] + 2 * rx, real=True))
        gf = self._gf.get(fshape)
        if gf is None:
            gf = self._gf[fshape] = f.rfft2(self._g, fshape).astype(self._cplx)
        full = f.irfft2(f.rfft2(v, fshape, workers=-1) * gf, fshape, workers=-1)
        return full[..., ry : ry + v.shape[-2], rx : rx + v.shape[-1]]

    def _edge(self, model, v: np.ndarray) -> np.ndarray:
        """``(A A^T - G) v`` on a batch of strips (exact away from each strip's inner edge)."""
        return model.apply(model.adjoint(v)) - self._conv(v)

    def __call__(self, v: np.ndarray) -> np.ndarray:
        if not self.edges:
            return self._full.apply(self._full.adjoint(v))
        v = v.astype(self.dtype, copy=False)
        n0, n1 = self.lr_shape
        by, bx, hy, hx = self.by, self.bx, self.hy, self.hx
        out = np.array(self._conv(v), dtype=self.dtype)
        top, bottom = self._edge(self._rows, np.stack([v[:hy], v[n0 - hy :]]))
        out[:by] += top[:by]
        out[n0 - by :] += bottom[hy - by :]
        # the side strips add the rows between the top and bottom bands (the corners are done)
        left, right = self._edge(self._cols, np.stack([v[:, :hx], v[:, n1 - hx :]]))
        out[by : n0 - by, :bx] += left[by : n0 - by, :bx]
        out[by : n0 - by, n1 - bx :] += right[by : n0 - by, hx - bx :]
        return out


def _cg(
    normal,
    rhs: np.ndarray,
    mask: Optional[np.ndarray],
    *,
    iterations: int,
    atol: float,
    precond=None,
    damping: float = 0.0,
):
    """Preconditioned conjugate gradients for ``(P A A^T P + damping) y = rhs`` (P masks invalid LR pixels).

    ``normal`` applies ``A A^T`` on the LR grid (:class:`_NormalLR`), so an iteration costs LR-sized
    transforms only. A generator: yields the residual norm after every iteration (so callers can
    report progress and honour a stop flag between iterations) and returns ``(P y, iterations,
    rnorm, r)`` (``r``: the recurrence's residual); the HR correction is ``A^T P y``, one adjoint
    per solve. Works in ``rhs``'s dtype.
    """
    dt = rhs.dtype
    r = rhs.copy()
    rnorm = float(np.linalg.norm(r))
    y = np.zeros(rhs.shape, dtype=dt)
    it = 0
    if rnorm <= atol:  # already consistent (e.g. a nonneg round that clipped nothing)
        return y, it, rnorm, r

    def Pinv(v):
        if precond is None:
            return v
        z = precond(v).astype(dt, copy=False)
        return z * mask if mask is not None else z

    z = Pinv(r)
    p = z.copy()
    rz = float(np.vdot(r, z))
    while it < iterations and rnorm > atol:
        Mp = normal(p * mask if mask is not None else p).astype(dt, copy=False)
        if mask is not None:
            Mp *= mask
        if damping:
            Mp += dt.type(damping) * p
        pMp = float(np.vdot(p, Mp))
        if pMp <= 0 or rz <= 0:
            break
        alpha = rz / pMp
        y += dt.type(alpha) * p
        r -= dt.type(alpha) * Mp
        rnorm = float(np.linalg.norm(r))
        it += 1
        yield rnorm
        if rnorm <= atol:
            break
        z = Pinv(r)
        rz_new = float(np.vdot(r, z))
        p = z + dt.type(rz_new / rz) * p
        rz = rz_new
    return (y * mask if mask is not None else y), it, rnorm, r


def _apply_sparse(op: ForwardModel, values: np.ndarray, idx: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """``A d`` for the HR image ``d`` that is ``values`` at the pixels ``idx`` and zero elsewhere.

    A non-negativity round changes only the pixels it clips, usually a small fraction of the image:
    adding their blurred, block-summed flux directly costs ``len(idx) * psf.size`` operations
    instead of two HR transforms. Same operator as :meth:`ForwardModel.apply` (to rounding).
    """
    iy, ix = idx
    psf = op.conv.psf
    ky, kx = psf.shape
    s, (n0, n1), (ny, nx) = op.scale, op.lr_shape, op.shape
    vals = values * op.conv.inv_w[iy, ix]
    # the convolution sends pixel k to k + (a, b) - (ky - 1, kx - 1) / 2 with weight psf[a, b]
    ty = iy[:, None] + (np.arange(ky) - (ky - 1) // 2)[None, :]  # (pixels, ky)
    tx = ix[:, None] + (np.arange(kx) - (kx - 1) // 2)[None, :]
    ok = ((ty >= 0) & (ty < ny))[:, :, None] & ((tx >= 0) & (tx < nx))[:, None, :]
    lr_index = (ty // s * n1)[:, :, None] + (tx // s)[:, None, :]
    weight = vals[:, None, None] * psf[None, :, :]
    out = np.bincount(lr_index[ok], weights=weight[ok], minlength=n0 * n1)
    return out.reshape(n0, n1)


# One cached (ForwardModel, preconditioner) pair: repeated projections of the same shape,
# scale and PSF (a restore followed by a re-run, tiles of one size, benchmarks) skip the
# kernel FFTs, the edge weights and the preconditioner set-up (~6 full-size FFTs).
_OP_CACHE: dict = {}


def _operator(shape: tuple[int, int], scale: int, psf: Optional[np.ndarray]):
    key = (shape, scale, None if psf is None else (np.asarray(psf).shape, np.asarray(psf, dtype=np.float64).tobytes()))
    hit = _OP_CACHE.get(key)
    if hit is not None:
        return hit
    op = ForwardModel(shape, scale=scale, psf=psf)
    if op.conv is not None:
        op.normal = _NormalLR(op)  # float64: the preconditioner's kernel
        op32 = _Float32Model(op)
        op32.normal = _NormalLR(op, np.float32)  # the CG's operator
    else:  # a block sum: A A^T = s^2 I exactly
        op.normal, op32 = (lambda v, s2=float(op.scale**2): v * s2), None
    pair = (op, _Preconditioner(op) if op.conv is not None else None, op32)
    _OP_CACHE.clear()  # keep one entry: a 2048^2 operator holds ~100 MB of transforms
    _OP_CACHE[key] = pair
    return pair


def stop_tolerances(
    atol: float, n_valid: int, noise_tol: Optional[float], round_noise_tol: Optional[float]
) -> tuple[float, float]:
    """CG's absolute residual targets (last solve, non-negativity rounds before it) of the projection.

    No point solving below the noise: the last solve stops at an rms residual of ``noise_tol`` per valid
    LR pixel (if given), the rounds before it, which only steer the clipping, at ``round_noise_tol``;
    never below ``atol``. Shared by the numpy solver here and its torch twin (``models.ops``).
    """
    sqrt_n = float(np.sqrt(n_valid))
    for name, v in (("noise_tol", noise_tol), ("round_noise_tol", round_noise_tol)):
        if v is not None and not (np.isfinite(v) and v >= 0):
            raise AstroSRError(f"{name}={v!r}: must be a finite number >= 0.")
    if noise_tol is not None:
        atol = max(atol, float(noise_tol) * sqrt_n)
    round_atol = atol if round_noise_tol is None else max(atol, float(round_noise_tol) * sqrt_n)
    return atol, round_atol


def iter_project_flux_exact(
    sr: np.ndarray,
    lr: np.ndarray,
    *,
    scale: int,
    psf: Optional[np.ndarray] = None,
    iterations: int = 50,
    tol: float = 1e-7,
    nonneg: Optional[bool] = None,
    nonneg_rounds: int = 10,
    neg_flux_tol: float = 1e-6,
    damping: float = 0.0,
    noise_tol: Optional[float] = None,
    round_noise_tol: Optional[float] = None,
    stop=None,
    stagnation: Optional[float] = NONNEG_STAGNATION,
):
    """:func:`project_flux_exact` as a generator (same parameters, plus ``stop``).

    Yields ``(iteration, residual_rel, nonneg_round)`` after every CG iteration (iteration
    counts over all rounds) and returns ``(x, info)``. ``stop`` (anything with ``is_set()``)
    is checked between iterations; when set,
    :class:`~napari_astrosr.exceptions.StoppedError` is raised (an unfinished projection
    does not reproduce ``lr``, so there is no partial result).
    """
    x0 = np.asarray(sr)
    y_obs = np.asarray(lr, dtype=np.float64)
    if x0.ndim != 2 or y_obs.ndim != 2:
        raise AstroSRError(f"sr and lr must be 2-D, got {x0.shape} and {y_obs.shape}.")
    s = _int_factor(scale, name="scale")
    if x0.shape != (y_obs.shape[0] * s, y_obs.shape[1] * s):
        raise AstroSRError(
            f"sr shape {x0.shape} must be lr shape {y_obs.shape} times scale={s} "
            f"= {(y_obs.shape[0] * s, y_obs.shape[1] * s)}."
        )
    if iterations < 1:
        raise AstroSRError(f"iterations={iterations}: must be >= 1.")
    if damping is None or not np.isfinite(damping) or damping < 0:
        raise AstroSRError(f"damping={damping!r}: must be a finite number >= 0.")
    lr_valid = np.isfinite(y_obs)
    if not lr_valid.any():
        raise AstroSRError("lr is entirely NaN/blank; nothing to project onto.")
    op, precond, op32 = _operator(x0.shape, s, psf)
    mask = None if lr_valid.all() else lr_valid.astype(np.float64)
    y_obs0 = np.where(lr_valid, y_obs, 0.0)
    sr_nan = ~np.isfinite(x0)
    x = x0.astype(np.float64)
    if sr_nan.any():
        # unknown SR pixels start from the flux-conserving split of their LR pixel
        split = np.repeat(np.repeat(y_obs0, s, axis=0), s, axis=1) / (s * s)
        x[sr_nan] = split[sr_nan]
    if nonneg is None:
        nonneg = bool(np.nanmin(y_obs) >= 0)
    norm = max(float(np.linalg.norm(y_obs0)), 1e-300)
    atol, round_atol = stop_tolerances(tol * norm, int(lr_valid.sum()), noise_tol, round_noise_tol)
    state: dict[str, Any] = {"its": 0, "round": 0, "neg": None}
    if stagnation is not None and not (np.isfinite(stagnation) and 0 <= stagnation < 1):
        raise AstroSRError(f"stagnation={stagnation!r}: must be a number in [0, 1).")
    # CG on the corrections runs in float32 when there is a PSF (the FFT-bound case); a
    # PSF-free model is a block sum (no FFTs) and stays float64 (exact in one iteration)
    cg_op, cg_dtype = (op32, np.float32) if op32 is not None else (op, np.float64)
    lam = 0.0
    if damping > 0:
        # Tikhonov: solve (A A^T + lam) y = r, lam relative to A A^T's zero-frequency response, with the damped
        # preconditioner; the result reproduces lr only where the PSF transmits >> damping. The damped system is
        # well conditioned and its answer is not meant to be exact, so the float32 operator is enough (measured,
        # backprojection + flux-noise of a 1024^2 input: 3.8 s in float64, 1.7 s in float32, results within 5e-6
        # of the peak).
        lam = float(damping) * (precond.gf0 if precond is not None else float(s * s))
        precond = precond.damped(lam) if precond is not None else None

    def residual(v):
        r = y_obs0 - op.apply(v)
        return r * mask if mask is not None else r

    def solve(v, r, tol_abs=atol):
        """CG for the correction of ``v`` given its residual ``r`` (a generator)."""
        rn = float(np.linalg.norm(r))
        # float32 CG cannot push its own residual much below ~1e-6 of where it started;
        # the float64 refinement (refine) takes it the rest of the way
        cg_atol = tol_abs if cg_dtype == np.float64 else max(tol_abs, 2e-6 * rn)
        cg = _cg(
            cg_op.normal,
            r.astype(cg_dtype),
            None if mask is None else mask.astype(cg_dtype),
            iterations=iterations,
            atol=cg_atol,
            precond=precond,
            damping=lam,
        )
        while True:
            if stop is not None and stop.is_set():
                from ..exceptions import StoppedError

                raise StoppedError(f"flux-exact projection stopped after {state['its']} iterations.")
            try:
                rn = next(cg)
            except StopIteration as done:
                y, _, rn, r_end = done.value
                break
            state["its"] += 1
            yield state["its"], rn / norm, state["round"]
        # the data residual of the result: CG's own is the damped system's, lam * y below it
        return v + cg_op.adjoint(y), (r_end + cg_dtype(lam) * y if lam else r_end)

    def refine(v, r):
        """Float64 residual check + float32 CG corrections until ``||r|| <= atol``."""
        rn = float(np.linalg.norm(r))
        if lam:  # the damped solution is not meant to zero the residual: one solve, report what is left
            # (CG's own data residual: recomputing it in float64 would cost a full-size A x, for the info only)
            v, r_end = yield from solve(v, r)
            return v, float(np.linalg.norm(r_end))
        for _ in range(8):
            if rn <= atol:
                break
            v, r_end = yield from solve(v, r)
            if cg_dtype == np.float64:  # float64 CG already met atol (or hit `iterations`)
                rn = float(np.linalg.norm(r_end))
                break
            r = residual(v)
            rn = float(np.linalg.norm(r))
        return v, rn

    if not nonneg:
        x, res = yield from refine(x, residual(x))
    else:
        x, r = yield from solve(x, residual(x))
        peak = float(np.max(np.abs(x))) or 1.0
        while state["round"] < nonneg_rounds:
            # stop once the negatives are negligible: none below -1e-4 * peak, or their
            # total flux below neg_flux_tol of the image's absolute flux (further rounds
            # each cost a full projection and change the image by less than that)
            clipped = np.nonzero(x < 0)
            x_neg = x[clipped]
            if not x_neg.size or float(x_neg.min()) >= -1e-4 * peak:
                break
            xc = np.maximum(x, 0.0)  # np.clip(x, 0, None) takes 7x longer on a 2048^2 image
            neg_flux = -float(x_neg.sum())
            if neg_flux < neg_flux_tol * (float(xc.sum()) + neg_flux):
                break
            # stagnating (the clipping does not converge, e.g. around saturated stars or with a PSF the data do not
            # quite follow): further rounds cost a projection each and change no source's photometry measurably
            if stagnation is not None and state["neg"] is not None and neg_flux > (1 - stagnation) * state["neg"]:
                break
            state["neg"] = neg_flux
            state["round"] += 1
            # POCS: clip, then project again. Intermediate rounds need not meet tol (the
            # final float64 refinement below does), so the clipped image's residual is
            # updated from CG's own (linearity: r(xc) = r(x) - A (xc - x)) in CG precision;
            # the clipped pixels are usually few, so their blur is scattered directly
            if op.conv is not None and x_neg.size * op.conv.psf.size < x.size // 4:
                r = r - _apply_sparse(op, -x_neg, clipped).astype(cg_dtype)
            else:
                r = r - cg_op.apply((xc - x).astype(cg_dtype))
            if mask is not None:
                r = r * mask
            x, r = yield from solve(xc, r, round_atol)
        # damped: the last solve starts from the rounds' own residual (CG's, in CG precision; the stopping rule
        # is far above its rounding) instead of a full-size A x in float64; exact: from the float64 residual
        x, res = yield from refine(x, r.astype(np.float64) if lam else residual(x))
    bad = sr_nan | ~np.repeat(np.repeat(lr_valid, s, axis=0), s, axis=1)
    if bad.any():
        x[bad] = np.nan
    out = x if x0.dtype == np.float64 else x.astype(np.float32)
    info = {"iterations": state["its"], "residual_rel": res / norm, "nonneg_rounds": state["round"], "nonneg": nonneg}
    return out, info


def project_flux_exact(
    sr: np.ndarray,
    lr: np.ndarray,
    *,
    scale: int,
    psf: Optional[np.ndarray] = None,
    iterations: int = 50,
    tol: float = 1e-7,
    nonneg: Optional[bool] = None,
    nonneg_rounds: int = 10,
    neg_flux_tol: float = 1e-6,
    damping: float = 0.0,
    noise_tol: Optional[float] = None,
    round_noise_tol: Optional[float] = None,
    return_info: bool = False,
    callback: Optional[Callable[[int, float], Any]] = None,
    stop=None,
    stagnation: Optional[float] = NONNEG_STAGNATION,
):
    """Least change to ``sr`` such that ``forward_model(x, scale, psf) == lr``.

    Parameters
    ----------
    sr
        Super-resolved estimate, shape ``(lr.shape[0]*scale, lr.shape[1]*scale)``.
    lr
        The observed LR image (NaN pixels are left unconstrained).
    scale
        Integer SR factor.
    psf
        The blur the LR image carries, *on the HR grid* (unit sum, odd); None = no blur.
    iterations
        Maximum CG iterations per projection.
    tol
        Stop when ``||lr - A x|| <= tol * ||lr||`` (finite LR pixels).
    nonneg
        Keep the result >= 0 by alternating projections (POCS onto two convex sets): clip
        negatives to 0, re-project, up to ``nonneg_rounds`` times, stopping early once no
        pixel is below ``-1e-4 * max`` or the negative pixels hold less than
        ``neg_flux_tol`` of the image's absolute flux (on a sky-dominated 512^2 ground
        image that is after 1-2 rounds instead of 10). Later rounds are cheap (warm start; measured on a
        64x64 star field: min -4.4 -> -0.05 after 10 rounds, 5x the cost of one projection). The last step is always a projection (so ``lr`` is reproduced;
        tiny negatives may remain when the constraint and positivity conflict).
        Default: True when ``nanmin(lr) >= 0`` (no sky-subtracted negatives).
    neg_flux_tol
        See ``nonneg``.
    stagnation
        Also stop the non-negativity rounds once a round cuts the clipped flux by less than this fraction
        (:data:`NONNEG_STAGNATION`; None: run to ``nonneg_rounds``).
    damping
        0 (default): the exact projection. ``> 0``: a Tikhonov-damped one, ``x = sr + A^T (A A^T +
        damping m0)^-1 (lr - A sr)`` with ``m0`` the response of ``A A^T`` to a constant image, so
        frequencies the PSF passes with power below ~``damping`` are left as ``sr`` has them
        instead of being deconvolved (their noise would be amplified without bound at scale 1 with
        a wide PSF). The total-flux residual is still corrected by a factor ``1 / (1 + damping)``.
        Used by the noise-aware projection (``restore(..., flux_noise=...)``) with 1e-3.
    noise_tol
        Also stop once the residual's rms per valid LR pixel is below this (in ``lr``'s units): the
        noise-aware projection passes a small fraction of the noise sigma (:data:`NOISE_TOL`), since solving
        far below the noise changes nothing measurable (``tol`` alone took every CG solve of a ground image
        with a 15-px PSF to its ``iterations`` cap). None: ``tol`` only.
    round_noise_tol
        The same for the solves of the non-negativity rounds before the last one, which only steer the
        clipping (:data:`NOISE_ROUND_TOL`); the last solve always meets ``tol`` / ``noise_tol``. None: as
        the last.
    return_info
        Also return a dict (iterations, residual_rel, rounds).
    callback
        Called as ``callback(iteration, residual_rel)`` after every CG iteration.
    stop
        Anything with ``is_set()``; checked between CG iterations, raises
        :class:`~napari_astrosr.exceptions.StoppedError` when set.

    Returns
    -------
    numpy.ndarray or (numpy.ndarray, dict)
        float64 for float64 ``sr``, else float32. NaN where ``sr`` was NaN or the LR pixel
        is NaN.
    """
    gen = iter_project_flux_exact(
        sr,
        lr,
        scale=scale,
        psf=psf,
        iterations=iterations,
        tol=tol,
        nonneg=nonneg,
        nonneg_rounds=nonneg_rounds,
        neg_flux_tol=neg_flux_tol,
        damping=damping,
        noise_tol=noise_tol,
        round_noise_tol=round_noise_tol,
        stop=stop,
        stagnation=stagnation,
    )
    while True:
        try:
            it, res, _ = next(gen)
        except StopIteration as done:
            out, info = done.value
            break
        if callback is not None:
            callback(it, res)
    return (out, info) if return_info else out


def noise_gain(shape: tuple[int, int], *, scale: int, psf: Optional[np.ndarray]) -> float:
    """Largest amplitude gain the exact projection applies to a residual, relative to zero frequency.

    The correction ``A^T (A A^T)^-1 r`` scales a residual component at LR frequency ``k`` by
    ``1 / sqrt(m(k))``, ``m`` being ``A A^T``'s spectrum normalised to 1 at zero frequency; this
    returns ``1 / sqrt(min m)`` (``inf`` where the PSF passes nothing). A block sum alone gives 1;
    x2 with the STAR PSFs gives 15-60; any blur at scale 1 gives 1e4 or more (exact deconvolution).

    Parameters
    ----------
    shape
        Output (HR) shape, divisible by ``scale``.
    """
    if psf is None:
        return 1.0
    # built directly, not through _operator: its one-entry cache holds the full-size operator of the solve
    op = ForwardModel((int(shape[0]), int(shape[1])), scale=_int_factor(scale, name="scale"), psf=psf)
    if op.conv is None:
        return 1.0
    m = float(_Preconditioner(op).transfer.min())
    return float("inf") if m <= 0 else float(1.0 / np.sqrt(m))


def estimate_lr_noise(lr: np.ndarray) -> float:
    """Per-pixel noise sigma of an LR image: sep's global background rms (SExtractor's mesh estimate).

    Sources are clipped out of the mesh statistics, so a bright galaxy does not inflate it.
    """
    from .background import estimate_background

    bkg = estimate_background(np.asarray(lr, dtype=np.float64), box=min(32, max(8, min(np.shape(lr)) // 4)))
    return float(bkg.globalrms)


# CG stopping rule of the noise-aware projection, in units of the noise sigma per LR pixel: the last solve stops at
# an rms residual of NOISE_TOL sigma, the non-negativity rounds before it at NOISE_ROUND_TOL sigma. Measured on the
# default restore of a 512^2 ground field (15.5-px ePSF, noise-aware): 600 -> 153 CG iterations, output within
# 1.6e-3 of the peak and 0.05 sigma rms of the fully converged one (docs/results_speed.md, section 5).
NOISE_TOL = 0.01
NOISE_ROUND_TOL = 0.1

# Tikhonov damping of the noise-aware projection (relative to A A^T at zero frequency): caps the amplification
# of any residual at ~1/(2 sqrt(1e-3)) = 16x; at x2/x4 with the STAR PSFs it changes little (benchmark).
NOISE_DAMPING = 1e-3


def noise_aware_target(
    sr: np.ndarray,
    lr: np.ndarray,
    *,
    scale: int,
    psf: Optional[np.ndarray] = None,
    sigma: float,
    bins: int = 24,
    cap: bool = False,
) -> tuple[np.ndarray, dict]:
    """The LR image a noise-aware flux projection should reproduce: the data where they beat the noise.

    ``A(sr) + W(lr - A(sr))``, with ``W`` a Wiener filter of the data residual built from the
    residual itself: per radial frequency band, the gain is ``max(0, 1 - sigma^2 / P)`` where
    ``P`` is the band's mean residual power per Fourier coefficient and ``sigma^2`` the white
    noise's (``sigma`` per LR pixel). Residual structure well above the noise (a source whose flux
    the restoration got wrong: low frequencies) is kept and will be fitted; what looks like noise
    is dropped, so the projection no longer fits the noise. ``sigma = 0`` gives ``lr`` (the exact
    projection).

    Project onto the target with ``project_flux_exact(..., damping=NOISE_DAMPING)``: the exact
    solve would still divide what the gain lets through by the PSF's transfer function, which is
    unbounded for a PSF wide against the output pixel (measured: a ground-based PSF at scale 1
    gave -4 dB on a real HSC cutout).

    Why hand-written: a Wiener gain estimated from the residual's own spectrum against a known
    white-noise level is a few lines of numpy; no maintained package offers this data-consistency
    step for a forward model of our own.

    Flux: the band containing the zero frequency has gain ~1 whenever the total-flux residual
    exceeds the noise, so the projected image keeps the data's total flux to within the noise.

    ``cap``: never let the gain at LR frequency ``k`` exceed ``sqrt(m(k))``, ``m`` being ``A A^T``'s spectrum
    normalised to 1 at zero frequency (:func:`noise_gain`). The projection scales what the gain lets through
    by ``1 / sqrt(m(k))``, so with the cap no residual frequency, noise included, reaches the output above
    its own amplitude in the data: the low frequencies that set per-source flux (``m`` near 1) are fitted as
    the Wiener gain says, the frequencies the PSF barely passes are not deconvolved. Without it, the damped
    solve still amplifies what the gain lets through by up to ``1 / (2 sqrt(NOISE_DAMPING))``, which at
    scale 1 (any blur) turns a real image's noise into structure that moves flux between sources
    (``restoration.restore`` uses it: benchmarks/scale1_photometry.py).

    Returns
    -------
    target, info
        ``target`` has ``lr``'s shape (NaN where ``lr`` is); ``info``: sigma, the gain per band
        and the fraction of residual power kept.
    """
    lr = np.asarray(lr, dtype=np.float64)
    if sigma is None or not np.isfinite(sigma) or sigma < 0:
        raise AstroSRError(f"noise sigma {sigma!r}: must be a finite number >= 0.")
    hr = np.nan_to_num(np.asarray(sr, dtype=np.float64))
    s = _int_factor(scale, name="scale")
    op = precond = None
    if psf is not None and hr.shape == (lr.shape[0] * s, lr.shape[1] * s):
        # the operator the projection onto this target uses next (cached by _operator): A(sr) by its LR phases,
        # and the cap's transfer function from its preconditioner, instead of an HR convolution and a second
        # operator (the same values to rounding; measured 2048^2 input, 15-px PSF: seconds saved)
        op, precond, _ = _operator(hr.shape, s, psf)
    pred = op.apply(hr) if op is not None and op.conv is not None else forward_model(hr, scale=scale, psf=psf)
    valid = np.isfinite(lr)
    r = np.where(valid, lr - pred, 0.0)
    if sigma == 0 or not valid.any():
        return np.where(valid, lr, np.nan), {"sigma": float(sigma), "gain": [], "power_kept": 1.0}
    from scipy import fft as sfft

    rf = sfft.rfft2(r)
    power = np.abs(rf) ** 2
    fr = _radial_frequency(r.shape)
    edges = np.linspace(0.0, fr.max() + 1e-12, int(bins) + 1)
    idx = np.clip(np.digitize(fr, edges) - 1, 0, int(bins) - 1)
    # unnormalised FFT: white noise of variance sigma^2 on n valid pixels has E|N(f)|^2 = n sigma^2
    noise_power = float(valid.sum()) * float(sigma) ** 2
    band_p = np.bincount(idx.ravel(), weights=power.ravel(), minlength=int(bins))
    band_n = np.maximum(np.bincount(idx.ravel(), minlength=int(bins)), 1)
    band_mean = band_p / band_n
    gain_b = np.clip(1.0 - noise_power / np.maximum(band_mean, 1e-300), 0.0, 1.0)
    filt = WienerFilter(edges=tuple(map(float, edges)), gain=tuple(map(float, gain_b)), cap=bool(cap))
    # what the Wiener gain keeps of the residual, before the cap: "kept nothing" means no band rose above noise
    kept = float((power * filt.gains(r.shape) ** 2).sum() / max(power.sum(), 1e-300))
    transfer = None
    if cap and psf is not None:
        if precond is None:
            op = ForwardModel(np.shape(sr), scale=scale, psf=psf)
            precond = _Preconditioner(op) if op.conv is not None else None
        if precond is not None:
            transfer = precond.transfer
    rw = sfft.irfft2(rf * filt.gains(r.shape, transfer=transfer), s=r.shape)
    target = np.where(valid, pred + rw, np.nan)
    info = {"sigma": float(sigma), "gain": [round(float(g), 4) for g in gain_b], "power_kept": kept}
    # the filter itself, for propagating noise through it (core.uncertainty.backprojection_err)
    info["filter"] = filt
    return target, info


def _radial_frequency(shape: tuple[int, int]) -> np.ndarray:
    """|f| in cycles per pixel on the ``rfft2`` grid of ``shape``."""
    from scipy import fft as sfft

    return np.hypot(sfft.fftfreq(shape[0])[:, None], sfft.rfftfreq(shape[1])[None, :])


@dataclass(frozen=True)
class WienerFilter:
    """The residual filter :func:`noise_aware_target` built: a gain per radial frequency band.

    ``edges`` are the bands' limits in cycles per pixel (so the filter applies to any image size), ``gain``
    one value per band, ``cap``: the gain is also limited by ``sqrt`` of ``A A^T``'s normalised spectrum.
    """

    edges: tuple[float, ...]
    gain: tuple[float, ...]
    cap: bool

    def gains(self, shape: tuple[int, int], *, transfer: Optional[np.ndarray] = None) -> np.ndarray:
        """The gain on the ``rfft2`` grid of ``shape``; with ``cap``, limited by ``sqrt(transfer)`` (``A A^T``'s
        normalised spectrum on that grid, :class:`_Preconditioner`'s ``transfer``) when given.
        """
        idx = np.clip(np.digitize(_radial_frequency(shape), np.asarray(self.edges)) - 1, 0, len(self.gain) - 1)
        gain = np.asarray(self.gain)[idx]
        if self.cap and transfer is not None:
            gain = np.minimum(gain, np.sqrt(np.clip(transfer, 0.0, 1.0)))
        return gain

    def apply(self, r: np.ndarray, *, scale: int, psf: Optional[np.ndarray]) -> np.ndarray:
        """The filtered LR residual ``W r`` (the same operation as inside :func:`noise_aware_target`)."""
        from scipy import fft as sfft

        r = np.asarray(r, dtype=np.float64)
        transfer = None
        if self.cap and psf is not None:
            op = ForwardModel((r.shape[0] * scale, r.shape[1] * scale), scale=scale, psf=psf)
            if op.conv is not None:
                transfer = _Preconditioner(op).transfer
        return sfft.irfft2(sfft.rfft2(r) * self.gains(r.shape, transfer=transfer), s=r.shape)

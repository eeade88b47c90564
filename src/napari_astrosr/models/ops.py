"""Torch twins of the numpy steps around the network, so a GPU restore stays on the device.

The restore path (``restoration.restore_job``) calls the dispatchers here with the device the
network runs on: on ``cpu`` they call the numpy versions in ``core`` (``core`` stays torch-free);
on any other device (CUDA, MPS) they run these torch versions there, in float64 (float32 on MPS,
which has no float64), and return numpy arrays. ``use_torch=True`` forces the torch code on the
CPU, which is how the tests check them against ``core``.

- :func:`upsample` / :func:`upsample_torch`: ``core.resample.upsample`` (flux-conserving bicubic or
  Lanczos-3, the same per-phase taps, refinement on the LR grid, the exact per-block
  correction): each input pixel's flux is kept in its block to float64 rounding.
- :func:`render_flux_map` / :func:`flux_map_from_image`: ``core.fluxmap.flux_map`` (each source's
  truncated elliptical kernel normalised to sum to its |flux|); detection stays on the CPU (sep).
- :func:`iter_project_flux_exact`: ``core.projection.iter_project_flux_exact`` (least change
  that makes blur + block-sum reproduce the input; CG preconditioned by the Fourier inverse of
  ``A A^T``, Tikhonov damping, non-negativity by alternating projections, NaN masks), the same
  operator: a zero-padded FFT convolution with scatter renormalisation at the edges.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..core import fluxmap as _fm
from ..core import projection as _proj
from ..core import resample as _rs
from ..core.psf import normalize_psf
from ..exceptions import AstroSRError

__all__ = [
    "use_torch_on",
    "upsample",
    "upsample_torch",
    "render_flux_map",
    "flux_map_from_image",
    "iter_project_flux_exact",
]


def use_torch_on(device: Optional[str]) -> bool:
    """Whether the steps around the network run in torch for ``device`` (any device but the CPU)."""
    return device is not None and str(device).split(":")[0] not in ("cpu", "auto")


def _dtype(device) -> torch.dtype:
    return torch.float32 if torch.device(device).type == "mps" else torch.float64


# ----------------------------------------------------------------------------- upsampling
def _correlate(x: torch.Tensor, g: np.ndarray, axis: int) -> torch.Tensor:
    """``core.resample._correlate`` for a stack of filters ``g`` (P, K): returns (P, H, W)."""
    g = np.atleast_2d(g)
    off = g.shape[1] // 2
    n = x.shape[axis]
    idx = torch.as_tensor(_rs._reflect_index(np.arange(-off, n + off), n), device=x.device)
    xp = x.index_select(axis, idx)[None, None]
    w = torch.as_tensor(g, dtype=x.dtype, device=x.device)
    w = w[:, None, :, None] if axis == 0 else w[:, None, None, :]
    return F.conv2d(xp, w)[0]


def _interp_axis(x: torch.Tensor, f: int, method: str, axis: int) -> torch.Tensor:
    ph = _correlate(x, np.stack(_rs._phase_filters(f, method)), axis)  # (f, H, W)
    if axis == 0:
        return ph.permute(1, 0, 2).reshape(x.shape[0] * f, x.shape[1])
    return ph.permute(1, 2, 0).reshape(x.shape[0], x.shape[1] * f)


def _block_sum(x: torch.Tensor, f: int) -> torch.Tensor:
    h, w = x.shape[0] // f, x.shape[1] // f
    return x[: h * f, : w * f].reshape(h, f, w, f).sum(dim=(1, 3))


def _block_split_sum(x: torch.Tensor, f: int) -> torch.Tensor:
    """Replicate each pixel over its ``f x f`` block (no 1/f^2: the block-sum's adjoint)."""
    return x.repeat_interleave(f, 0).repeat_interleave(f, 1)


def upsample_torch(x: torch.Tensor, factor: int, *, method: str = "bicubic", refine: int = 2) -> torch.Tensor:
    """:func:`core.resample.upsample` of a finite 2-D tensor, on its device and in its dtype.

    ``block_sum(out, factor) == x`` to the dtype's rounding (every input pixel's flux in its block).
    """
    f = int(factor)
    if method not in ("bicubic", "lanczos", "nearest"):
        raise AstroSRError(f"method={method!r}: use 'bicubic', 'lanczos' or 'nearest'.")
    if f == 1:
        return x.clone()
    if method == "nearest":
        return _block_split_sum(x, f) / (f * f)
    g, _ = _rs._lr_taps(f, method)
    c = x / (f * f)
    for _ in range(max(0, int(refine))):
        c = c + (x - _correlate(_correlate(c, g, 0)[0], g, 1)[0]) / (f * f)
    out = _interp_axis(_interp_axis(c, f, method, 0), f, method, 1)
    res = (x - _block_sum(out, f)) / (f * f)
    return out + _block_split_sum(res, f)


def upsample(
    image: np.ndarray, factor: int, *, method: str = "bicubic", device: str = "cpu", use_torch: Optional[bool] = None
) -> np.ndarray:
    """``core.resample.upsample(image, factor, method=method)``, in torch on ``device`` unless it is the CPU.

    Same contract: NaN input pixels are interpolated over as 0 and their blocks come back NaN;
    float input keeps its dtype (integers give float64).
    """
    if not (use_torch if use_torch is not None else use_torch_on(device)):
        return _rs.upsample(image, factor, method=method)
    a = _rs._as_2d(image)
    f = _rs._int_factor(factor)
    valid = np.isfinite(a)
    if not valid.any():
        raise AstroSRError("image is entirely NaN/blank; nothing to upsample.")
    dt = _dtype(device)
    x = torch.as_tensor(np.where(valid, a, 0.0), dtype=dt, device=device)
    out = upsample_torch(x, f, method=method).cpu().numpy()
    if not valid.all():
        out[np.repeat(np.repeat(~valid, f, axis=0), f, axis=1)] = np.nan
    return out.astype(a.dtype if a.dtype.kind == "f" else np.float64, copy=False)


# ----------------------------------------------------------------------------- flux map
def render_flux_map(
    shape,
    sources,
    *,
    kernel: str = "gaussian",
    coord_scale: float = 1.0,
    nsigma: Optional[float] = None,
    min_sigma: float = 0.3,
    max_radius: int = 64,
    device: str = "cpu",
) -> torch.Tensor:
    """:func:`core.fluxmap.flux_map` drawn on ``device`` (a float64 tensor; float32 on MPS)."""
    if kernel not in _fm.KERNELS:
        raise AstroSRError(f"kernel: must be one of {_fm.KERNELS}, got {kernel!r}.")
    ny, nx = (int(v) for v in shape)
    dt = _dtype(device)
    out = torch.zeros(ny * nx, dtype=dt, device=device)
    if len(sources) == 0:
        return out.reshape(ny, nx)
    if nsigma is None:
        nsigma = 4.0 if kernel == "gaussian" else 6.0
    s = float(coord_scale)

    def col(name):
        return np.asarray(sources[name], np.float64)

    x, y = (col("x") + 0.5) * s - 0.5, (col("y") + 0.5) * s - 0.5
    a, b, th, f = col("a") * s, col("b") * s, col("theta"), np.abs(col("flux"))
    ok = np.isfinite(x) & np.isfinite(y) & np.isfinite(f) & (f > 0)
    a = np.maximum(np.where(np.isfinite(a), a, min_sigma), min_sigma)
    b = np.maximum(np.where(np.isfinite(b), b, min_sigma), min_sigma)
    th = np.where(np.isfinite(th), th, 0.0)
    x, y, a, b, th, f = (v[ok] for v in (x, y, a, b, th, f))
    c, sn = np.cos(th), np.sin(th)
    ia2, ib2 = 1.0 / a**2, 1.0 / b**2
    cxx, cyy, cxy = c**2 * ia2 + sn**2 * ib2, sn**2 * ia2 + c**2 * ib2, 2.0 * c * sn * (ia2 - ib2)
    half = np.clip(np.ceil(nsigma * np.maximum(a, b)).astype(int), 1, max_radius)
    xc, yc = np.round(x).astype(np.int64), np.round(y).astype(np.int64)

    def t(v):
        return torch.as_tensor(v, device=device)

    for r in np.unique(half):
        sel = np.nonzero(half == r)[0]
        off = torch.arange(-int(r), int(r) + 1, device=device)
        gy, gx = torch.meshgrid(off, off, indexing="ij")
        px = t(xc[sel])[:, None, None] + gx
        py = t(yc[sel])[:, None, None] + gy
        dx = px.to(dt) - t(x[sel]).to(dt)[:, None, None]
        dy = py.to(dt) - t(y[sel]).to(dt)[:, None, None]
        q = (
            t(cxx[sel]).to(dt)[:, None, None] * dx**2
            + t(cyy[sel]).to(dt)[:, None, None] * dy**2
            + t(cxy[sel]).to(dt)[:, None, None] * dx * dy
        )
        if kernel == "gaussian":
            w = torch.exp(-0.5 * q)
        else:  # the Airy profile needs scipy's j1: evaluated on the CPU, then moved
            w = torch.as_tensor(_fm._profile(q.cpu().numpy(), kernel), dtype=dt, device=device)
        inside = (px >= 0) & (px < nx) & (py >= 0) & (py < ny) & (q <= nsigma**2)
        w = torch.where(inside, w, torch.zeros((), dtype=dt, device=device))
        norm = w.sum(dim=(1, 2))
        keep = norm > 0
        w = w[keep] * (t(f[sel]).to(dt)[keep] / norm[keep])[:, None, None]
        flat = py[keep].clamp(0, ny - 1) * nx + px[keep].clamp(0, nx - 1)
        out.index_add_(0, flat.reshape(-1), w.reshape(-1))
    return out.reshape(ny, nx)


def flux_map_from_image(
    image: np.ndarray, *, thresh: float = 1.5, device: str = "cpu", use_torch: Optional[bool] = None, dtype=np.float32
) -> np.ndarray:
    """``core.fluxmap.flux_map_from_image`` with the map drawn on ``device`` (detection: sep, on the CPU)."""
    if not (use_torch if use_torch is not None else use_torch_on(device)):
        return _fm.flux_map_from_image(image, thresh=thresh, dtype=dtype)
    import warnings

    from ..core.detection import detect_sources
    from ..exceptions import NoSourcesWarning

    img = np.asarray(image)
    if not np.isfinite(img).any():
        return np.zeros(img.shape, dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoSourcesWarning)
        sources = detect_sources(img, thresh=thresh, minarea=5)
    return render_flux_map(img.shape, sources, device=device).cpu().numpy().astype(dtype)


# ----------------------------------------------------------------------------- projection
class _TorchModel:
    """``core.projection.ForwardModel`` (with its preconditioner) on a torch device."""

    def __init__(self, shape, scale: int, psf: Optional[np.ndarray], device, dtype):
        self.shape, self.scale, self.dev, self.dt = tuple(shape), int(scale), device, dtype
        self.lr_shape = (self.shape[0] // self.scale, self.shape[1] // self.scale)
        self.k = None
        if psf is not None:
            k = normalize_psf(psf)
            ky, kx = k.shape
            self.fshape = (self.shape[0] + ky - 1, self.shape[1] + kx - 1)
            self.off = ((ky - 1) // 2, (kx - 1) // 2)
            kt = torch.as_tensor(k, dtype=dtype, device=device)
            self.kf = torch.fft.rfft2(kt, s=self.fshape)
            self.kf_adj = torch.fft.rfft2(kt.flip(0, 1), s=self.fshape)
            w = self._filt(torch.ones(self.shape, dtype=dtype, device=device), self.kf_adj)
            self.inv_w = torch.where(w > 1e-12, 1.0 / w.clamp_min(1e-12), torch.zeros_like(w))
            self.k = k
        self._precond()

    def _filt(self, img, kf):
        full = torch.fft.irfft2(torch.fft.rfft2(img, s=self.fshape) * kf, s=self.fshape)
        oy, ox = self.off
        return full[oy : oy + self.shape[0], ox : ox + self.shape[1]]

    def apply(self, x):
        if self.k is not None:
            x = self._filt(x * self.inv_w, self.kf)
        return _block_sum(x, self.scale)

    def adjoint(self, y):
        x = _block_split_sum(y, self.scale)
        return self._filt(x, self.kf_adj) * self.inv_w if self.k is not None else x

    def _precond(self):
        ny, nx = self.lr_shape
        delta = torch.zeros(self.lr_shape, dtype=self.dt, device=self.dev)
        cy, cx = ny // 2, nx // 2
        delta[cy, cx] = 1.0
        g = torch.roll(self.apply(self.adjoint(delta)), (-cy, -cx), dims=(0, 1))
        gf = torch.fft.rfft2(g).real
        self.gf = gf.clamp_min(0.0)
        self.gf0 = max(float(gf[0, 0]), 1e-300)
        self.inv = 1.0 / torch.maximum(gf, 1e-6 * gf.max())

    def precond(self, lam: float = 0.0):
        if self.k is None:
            return None
        inv = self.inv if not lam else 1.0 / (self.gf + lam)
        return lambda r: torch.fft.irfft2(torch.fft.rfft2(r) * inv, s=self.lr_shape)


def _cg(op: _TorchModel, rhs, mask, *, iterations: int, atol: float, precond, damping: float):
    """``core.projection._cg`` in torch (a generator yielding the residual norm; returns (A^T y, r))."""
    r = rhs.clone()
    rnorm = float(torch.linalg.vector_norm(r))
    dx = torch.zeros(op.shape, dtype=rhs.dtype, device=rhs.device)
    if rnorm <= atol:
        return dx, r

    def pinv(v):
        if precond is None:
            return v
        z = precond(v)
        return z * mask if mask is not None else z

    z = pinv(r)
    p = z.clone()
    rz = float(torch.vdot(r.reshape(-1), z.reshape(-1)))
    it = 0
    while it < iterations and rnorm > atol:
        u = op.adjoint(p * mask if mask is not None else p)
        mp = op.apply(u)
        if mask is not None:
            mp = mp * mask
        if damping:
            mp = mp + damping * p
        pmp = float(torch.vdot(p.reshape(-1), mp.reshape(-1)))
        if pmp <= 0 or rz <= 0:
            break
        alpha = rz / pmp
        dx += alpha * u
        r -= alpha * mp
        rnorm = float(torch.linalg.vector_norm(r))
        it += 1
        yield rnorm
        if rnorm <= atol:
            break
        z = pinv(r)
        rz_new = float(torch.vdot(r.reshape(-1), z.reshape(-1)))
        p = z + (rz_new / rz) * p
        rz = rz_new
    return dx, r


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
    device: str = "cpu",
    use_torch: Optional[bool] = None,
    stagnation: Optional[float] = _proj.NONNEG_STAGNATION,
):
    """``core.projection.iter_project_flux_exact`` (same parameters, yields and result) on ``device``.

    CG runs in float64 on the device (float32 on MPS); the numpy version's float32 corrections
    and float64 refinement are a CPU-time saving that a GPU does not need.
    """
    if not (use_torch if use_torch is not None else use_torch_on(device)):
        return (
            yield from _proj.iter_project_flux_exact(
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
        )
    if stagnation is not None and not (np.isfinite(stagnation) and 0 <= stagnation < 1):
        raise AstroSRError(f"stagnation={stagnation!r}: must be a number in [0, 1).")
    x0 = np.asarray(sr)
    y_obs = np.asarray(lr, dtype=np.float64)
    if x0.ndim != 2 or y_obs.ndim != 2:
        raise AstroSRError(f"sr and lr must be 2-D, got {x0.shape} and {y_obs.shape}.")
    s = _rs._int_factor(scale, name="scale")
    if x0.shape != (y_obs.shape[0] * s, y_obs.shape[1] * s):
        raise AstroSRError(f"sr shape {x0.shape} must be lr shape {y_obs.shape} times scale={s}.")
    if iterations < 1:
        raise AstroSRError(f"iterations={iterations}: must be >= 1.")
    if damping is None or not np.isfinite(damping) or damping < 0:
        raise AstroSRError(f"damping={damping!r}: must be a finite number >= 0.")
    lr_valid = np.isfinite(y_obs)
    if not lr_valid.any():
        raise AstroSRError("lr is entirely NaN/blank; nothing to project onto.")
    dt = _dtype(device)
    op = _TorchModel(x0.shape, s, psf, device, dt)

    def T(a):
        return torch.as_tensor(np.ascontiguousarray(a), dtype=dt, device=device)

    mask = None if lr_valid.all() else T(lr_valid.astype(np.float64))
    y0 = np.where(lr_valid, y_obs, 0.0)
    sr_nan = ~np.isfinite(x0)
    xn = x0.astype(np.float64)
    if sr_nan.any():
        split = np.repeat(np.repeat(y0, s, axis=0), s, axis=1) / (s * s)
        xn[sr_nan] = split[sr_nan]
    if nonneg is None:
        nonneg = bool(np.nanmin(y_obs) >= 0)
    yt, x = T(y0), T(xn)
    norm = max(float(np.linalg.norm(y0)), 1e-300)
    atol, round_atol = _proj.stop_tolerances(tol * norm, int(lr_valid.sum()), noise_tol, round_noise_tol)
    lam = float(damping) * (op.gf0 if op.k is not None else float(s * s)) if damping > 0 else 0.0
    precond = op.precond(lam)
    state = {"its": 0, "round": 0}

    def residual(v):
        r = yt - op.apply(v)
        return r * mask if mask is not None else r

    def solve(v, r, tol_abs=atol):
        cg = _cg(op, r, mask, iterations=iterations, atol=tol_abs, precond=precond, damping=lam)
        while True:
            if stop is not None and stop.is_set():
                from ..exceptions import StoppedError

                raise StoppedError(f"flux-exact projection stopped after {state['its']} iterations.")
            try:
                rn = next(cg)
            except StopIteration as done:
                dx, r_end = done.value
                break
            state["its"] += 1
            yield state["its"], rn / norm, state["round"]
        return v + dx, r_end

    if not nonneg:
        x, _ = yield from solve(x, residual(x))
    else:
        x, r = yield from solve(x, residual(x))
        peak = float(x.abs().max()) or 1.0
        while state["round"] < nonneg_rounds:
            if float(x.min()) >= -1e-4 * peak:
                break
            xc = x.clamp_min(0.0)
            neg_flux = float(xc.sum()) - float(x.sum())
            if neg_flux < neg_flux_tol * (float(xc.sum()) + neg_flux):
                break
            # stagnating: the same rule as core.projection (NONNEG_STAGNATION)
            if stagnation is not None and state.get("neg") is not None and neg_flux > (1 - stagnation) * state["neg"]:
                break
            state["neg"] = neg_flux
            state["round"] += 1
            if lam:
                r = residual(xc)
            else:
                r = r - op.apply(xc - x)
                if mask is not None:
                    r = r * mask
            x, r = yield from solve(xc, r, round_atol)
        x, _ = yield from solve(x, residual(x))  # the last step is a projection (from the true residual)
    res = float(torch.linalg.vector_norm(residual(x)))
    out = x.cpu().numpy().astype(np.float64)
    bad = sr_nan | ~np.repeat(np.repeat(lr_valid, s, axis=0), s, axis=1)
    if bad.any():
        out[bad] = np.nan
    out = out if x0.dtype == np.float64 else out.astype(np.float32)
    info = {"iterations": state["its"], "residual_rel": res / norm, "nonneg_rounds": state["round"], "nonneg": nonneg}
    return out, info

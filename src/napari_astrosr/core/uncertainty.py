"""Uncertainty of a restored image: the input's per-pixel sigma propagated to the output grid.

For a linear restoration ``x = L(lr)`` with independent input noise of sigma ``s_q`` per input
pixel, the output variance is exactly ``var_p = sum_q L[p, q]^2 s_q^2``. The restorations here are
shift-invariant in the interior with period ``scale`` (every input pixel sees the same operator), so
``L[p, q] = h(p - scale * q)`` with ``h`` the operator's response to one input pixel, and

    var = (s^2 placed every ``scale`` output pixels) convolved with h^2

(:func:`propagate_sigma`, one FFT convolution). ``h`` is measured by applying the operator itself to
a delta in the middle of a small probe image, so it is the real operator's response, not a model
of it. Within the response's reach of the image edge the operators reflect or renormalise and the
interior ``h`` is an approximation there (measured in tests/core/test_uncertainty.py: within a few
percent of a Monte-Carlo sigma).

- :func:`bicubic_err`: the flux-conserving ``bicubic``/``lanczos`` upsampling
  (:func:`napari_astrosr.core.resample.upsample`), which is linear.
- :func:`backprojection_err`: bicubic followed by the exact flux projection through the PSF
  (``nonneg=False``: linear; with the non-negativity rounds it is near-linear). The projection
  deconvolves, so its output sigma is larger than bicubic's and strongly correlated.

A network followed by the exact projection passes the data through the same pseudo-inverse as
``backprojection``; only the null-space part (what the network adds) differs, so
``backprojection_err`` is the documented estimate for it; a network alone has no linear part to
propagate and ``bicubic_err`` is the estimate (its flux is tied to the data block by block only
with ``--flux-exact``).

Correlated input noise (e.g. drizzled data) is treated as independent per pixel: the output sigma
per pixel is then right only to the extent the input's per-pixel sigma is (the map's meaning).

:func:`err_hdu` makes an ``ERR`` image extension (sigma, in the image's BUNIT) for the output file.

Detection on resampled output: the ERR is the right per-pixel sigma, but the output noise is correlated,
and sep's default matched filter assumes independent pixels, so its S/N comes out too high by
:func:`filter_noise_factor` (1.81 for bicubic x2, 2.38 at x4, measured): detect with ``err = c * ERR``
(``ERRFILT`` card) or without the filter (benchmarks/err_propagation.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Optional, Union

import numpy as np
from astropy.io import fits

from ..exceptions import AstroSRError

__all__ = [
    "impulse_response",
    "propagate_sigma",
    "bicubic_err",
    "backprojection_err",
    "err_hdu",
    "add_err_extension",
    "filter_noise_factor",
    "SEP_DEFAULT_FILTER",
]

# sep.extract's default filter_kernel (SExtractor's default.conv)
SEP_DEFAULT_FILTER = np.array([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]])


def impulse_response(op: Callable[[np.ndarray], np.ndarray], *, scale: int, probe: int = 33) -> np.ndarray:
    """Response of a linear LR -> HR operator to a unit input pixel in the middle of a ``probe`` x ``probe`` image.

    Returns the (probe*scale, probe*scale) float64 output; the input pixel is ``(probe // 2, probe // 2)``.
    """
    if probe % 2 == 0 or probe < 5:
        raise AstroSRError(f"probe={probe}: must be an odd size >= 5.")
    d = np.zeros((probe, probe), np.float64)
    c = probe // 2
    d[c, c] = 1.0
    h = np.asarray(op(d), dtype=np.float64)
    if h.shape != (probe * scale, probe * scale):
        raise AstroSRError(f"operator returned shape {h.shape} for a {probe}x{probe} probe at scale {scale}.")
    return h


def _reach(response: np.ndarray, scale: int, energy: float = 1 - 1e-6) -> int:
    """Input pixels from the probe's centre that hold ``energy`` of the response's squared weight."""
    r2 = np.asarray(response, dtype=np.float64) ** 2
    n = r2.shape[0] // scale
    c = (n // 2) * scale + (scale - 1) / 2.0
    yy, xx = np.indices(r2.shape)
    d = np.maximum(np.abs(yy - c), np.abs(xx - c)) / scale  # Chebyshev distance, input pixels
    order = np.argsort(d.ravel())
    cum = np.cumsum(r2.ravel()[order])
    k = int(np.searchsorted(cum, energy * cum[-1]))
    return int(np.ceil(d.ravel()[order][min(k, order.size - 1)])) + 1


def _probe_var(op, var_in: np.ndarray, scale: int, reach: int) -> np.ndarray:
    """Exact output variance ``sum_q L[p, q]^2 var_q`` of a local operator, by interleaved probing.

    The input sigma is split into ``P x P`` interleaved classes (``P = 2 reach + 1``): within one class no
    two input pixels reach the same output pixel, so the squared outputs of the ``P^2`` class images sum to
    the variance exactly, with the operator's own edge handling. Costs ``P^2`` operator calls: for small
    images (and the small calibration image of :func:`_edge_ratio`).
    """
    s = int(scale)
    sub = np.sqrt(var_in)
    P = 2 * reach + 1
    iy, ix = np.indices(sub.shape)
    acc = np.zeros((sub.shape[0] * s, sub.shape[1] * s))
    for a in range(min(P, sub.shape[0])):
        for b in range(min(P, sub.shape[1])):
            z = np.where((iy % P == a) & (ix % P == b), sub, 0.0)
            if z.any():
                acc += np.asarray(op(z), dtype=np.float64) ** 2
    return acc


def _edge_ratio(op, r2: np.ndarray, s: int, reach: int, m: int, shape: tuple[int, int]) -> np.ndarray:
    """Exact / interior-response variance near the edges, measured on an ``m x m`` unit-sigma image.

    The operator's edge handling changes the squared weights within ``reach`` of the border, not how they
    scale with sigma, so the ratio measured at unit sigma corrects the interior estimate there (exact for a
    uniform sigma, and to first order for one that varies slowly over ``reach`` pixels). Rows and columns
    further than ``m // 2`` input pixels from the border get 1.
    """
    from scipy.signal import fftconvolve

    exact = _probe_var(op, np.ones((m, m)), s, reach)
    z = np.zeros((m * s, m * s))
    z[::s, ::s] = 1.0
    off = (r2.shape[0] // s // 2) * s
    approx = fftconvolve(z, r2, mode="full")[off : off + m * s, off : off + m * s]
    ratio = np.where(approx > 0, exact / np.maximum(approx, 1e-300), 1.0)
    h, w = shape
    half = (m // 2) * s  # output index of the small image's centre row/column (interior: ratio 1)

    def index(n_out: int) -> np.ndarray:
        i = np.full(n_out, half)
        lo = np.arange(min(half, n_out))
        i[lo] = lo
        hi = np.arange(max(n_out - (m * s - half - 1), half), n_out)
        i[hi] = hi - n_out + m * s
        return i

    iy, ix = index(h * s), index(w * s)
    return ratio[np.ix_(iy, ix)]


def propagate_sigma(
    sigma: Union[float, np.ndarray],
    shape: tuple[int, int],
    *,
    scale: int,
    response: np.ndarray,
    op: Optional[Callable[[np.ndarray], np.ndarray]] = None,
) -> np.ndarray:
    """Output sigma of a shift-invariant linear restoration with impulse ``response`` (see the module docstring).

    Parameters
    ----------
    sigma
        Input sigma: a scalar or a map of ``shape`` (NaN / inf = no data; those pixels' output
        blocks are NaN).
    shape
        Input (LR) shape.
    scale
        Output pixels per input pixel.
    response
        :func:`impulse_response` of the operator (its input pixel in the middle of the probe).
    op
        The operator itself: when given, the output within the response's reach of the image
        edges is corrected, where the interior response is wrong (reflected / renormalised edges: up
        to 2x off, measured): exactly by probing on small images (:func:`_probe_var`),
        else by the exact/interior ratio measured on a small unit-sigma image (:func:`_edge_ratio`).

    Returns
    -------
    numpy.ndarray
        float64 sigma on the output grid, ``(shape[0]*scale, shape[1]*scale)``.
    """
    from scipy import fft as sfft

    s = int(scale)
    h, w = int(shape[0]), int(shape[1])
    sig = np.broadcast_to(np.asarray(sigma, dtype=np.float64), (h, w))
    bad = ~np.isfinite(sig)
    var = np.where(bad, 0.0, sig**2)
    r2 = np.asarray(response, dtype=np.float64) ** 2
    n = r2.shape[0] // s  # the probe's side (odd); its input pixel n // 2 maps to output pixel (n // 2) * s
    # var_out[s I + a, s J + b] = sum_K var[K] r2[s (I - K) + (n // 2) s + a, ...]: output phase (a, b) is var
    # convolved on the input grid with r2[a::s, b::s] centred at n // 2; one forward transform of var and s^2
    # inverse ones of input size, instead of the convolution of var placed every s output pixels (the same sums;
    # 2-3x faster at 2048^2 x2)
    c = n // 2
    var_out = np.empty((h * s, w * s))
    if np.ndim(sigma) == 0 and not bad.any():
        # one sigma everywhere (the estimated noise): each output pixel's sum is sigma^2 times the sum of its
        # phase kernel over the offsets that land inside the image, a rectangle: read from a summed-area table
        iy, ix = np.arange(h), np.arange(w)
        r0, r1 = np.maximum(iy - (h - 1) + c, 0), np.minimum(iy + c + 1, n)
        c0, c1 = np.maximum(ix - (w - 1) + c, 0), np.minimum(ix + c + 1, n)
        v = float(var[0, 0])
        ey = np.flatnonzero((r0 > 0) | (r1 < n))  # rows and columns within the kernel's reach of an edge
        ex = np.flatnonzero((c0 > 0) | (c1 < n))
        for a in range(s):
            for b in range(s):
                t = np.zeros((n + 1, n + 1))
                t[1:, 1:] = r2[a::s, b::s].cumsum(0).cumsum(1)

                def box(ry, cx, t=t):
                    y0, y1, x0, x1 = r0[ry], r1[ry], c0[cx], c1[cx]
                    return t[np.ix_(y1, x1)] - t[np.ix_(y0, x1)] - t[np.ix_(y1, x0)] + t[np.ix_(y0, x0)]

                ph = np.full((h, w), v * t[n, n])  # the interior: the whole kernel
                ph[ey, :] = v * box(ey, ix)
                ph[:, ex] = v * box(iy, ex)
                var_out[a::s, b::s] = ph
    else:
        fshape = (sfft.next_fast_len(h + n - 1, real=True), sfft.next_fast_len(w + n - 1, real=True))
        vf = sfft.rfft2(var, fshape, workers=-1)
        for a in range(s):
            for b in range(s):
                full = sfft.irfft2(vf * sfft.rfft2(r2[a::s, b::s], fshape), fshape, workers=-1)
                var_out[a::s, b::s] = full[c : c + h, c : c + w]
    if op is not None:
        reach = _reach(response, s)
        m = 4 * reach + 3
        if h <= m or w <= m:  # small image: probe it exactly
            var_out = _probe_var(op, var, s, reach)
        else:
            var_out *= _edge_ratio(op, r2, s, reach, m, (h, w))
    out = np.sqrt(np.clip(var_out, 0, None))
    if bad.any():
        out[np.repeat(np.repeat(bad, s, axis=0), s, axis=1)] = np.nan
    return out


def bicubic_err(
    sigma: Union[float, np.ndarray],
    shape: tuple[int, int],
    *,
    scale: int,
    method: str = "bicubic",
    exact_edges: bool = True,
    return_factor: bool = False,
):
    """Output sigma of the flux-conserving ``bicubic`` / ``lanczos`` upsampling by ``scale``.

    Flux: the operator keeps every input pixel's flux in its block, so the block sums of the output
    carry exactly the input's noise; the ERR here is per output pixel. ``return_factor``: also return
    :func:`filter_noise_factor` for sep's default filter (measured 1.81 at x2, 2.38 at x4).
    """
    from .resample import upsample

    s = int(scale)
    if s == 1:
        sig = np.array(np.broadcast_to(np.asarray(sigma, dtype=np.float64), tuple(shape)))
        return (sig, 1.0) if return_factor else sig

    def op(x):
        return upsample(x, s, method=method)

    h = impulse_response(op, scale=s, probe=21)
    err = propagate_sigma(sigma, shape, scale=s, response=h, op=op if exact_edges else None)
    return (err, filter_noise_factor(h, scale=s)) if return_factor else err


def backprojection_err(
    sigma: Union[float, np.ndarray],
    shape: tuple[int, int],
    *,
    scale: int,
    psf: Optional[np.ndarray],
    iterations: int = 200,
    probe: int = 33,
    exact_edges: bool = False,
    return_factor: bool = False,
    wiener=None,
    damping: float = 0.0,
):
    """Output sigma of ``backprojection`` (bicubic + the flux projection through ``psf``).

    The projection is applied to the probe with ``nonneg=False`` (the linear operator; the
    non-negativity rounds change the output only where it would go negative) and a tight CG
    tolerance. ``psf`` is on the output grid, as for the restoration. Edges: the interior response is
    used (measured up to 2x too large within a few PSF widths of the border: conservative);
    ``exact_edges=True`` corrects them as :func:`propagate_sigma` does (slow: hundreds of CG solves). ``return_factor``: also
    return :func:`filter_noise_factor` for sep's default filter.

    ``wiener`` (a :class:`~napari_astrosr.core.projection.WienerFilter`, the ``"filter"`` of
    :func:`~napari_astrosr.core.projection.noise_aware_target`'s info) and ``damping`` (the projection's, e.g.
    ``NOISE_DAMPING``): the noise-aware projection instead, ``up + A^T (A A^T + damping)^-1 W (y - A up)``, with
    the filter ``W`` the restoration built from its own residual held fixed (its linear part). Without them, a
    noise-aware restoration's ERR would be the exact projection's, which with a PSF wide against the output pixel
    amplifies noise by orders of magnitude more than the noise-aware one does (measured: 135x its Monte-Carlo
    sigma on a ground field with a 16-px PSF; ``benchmarks/err_propagation.py``).
    """
    from .projection import forward_model, project_flux_exact
    from .resample import upsample

    s = int(scale)
    if damping < 0 or not np.isfinite(damping):
        raise AstroSRError(f"damping={damping!r}: must be a finite number >= 0.")

    def op(x):
        up = upsample(x, s, method="bicubic") if s > 1 else x.copy()
        if wiener is None:
            return project_flux_exact(up, x, scale=s, psf=psf, nonneg=False, iterations=iterations, tol=1e-10)
        pred = forward_model(up, scale=s, psf=psf)
        target = pred + wiener.apply(x - pred, scale=s, psf=psf)
        return project_flux_exact(
            up, target, scale=s, psf=psf, nonneg=False, iterations=iterations, tol=1e-10, damping=damping
        )

    if psf is not None and probe * s < 3 * max(np.shape(psf)):
        probe = int(np.ceil(3 * max(np.shape(psf)) / s)) | 1
    h = impulse_response(op, scale=s, probe=probe)
    err = propagate_sigma(sigma, shape, scale=s, response=h, op=op if exact_edges else None)
    return (err, filter_noise_factor(h, scale=s)) if return_factor else err


def filter_noise_factor(response: np.ndarray, *, scale: int, kernel: Optional[np.ndarray] = None) -> float:
    """How much a detection filter's S/N is inflated by the output's correlated noise.

    sep's matched filter (its default with an ``err`` map) computes ``sum k x / sqrt(sum k^2 err^2)``,
    which assumes independent pixels. Resampled output noise is correlated, so the filtered noise is larger
    than that by this factor ``c`` (1 for white noise): threshold ``T`` sigma against ``c * ERR`` to get
    the false-positive rate of ``T`` sigma on white noise, or detect without the filter.

    Parameters
    ----------
    response
        :func:`impulse_response` of the restoration.
    scale
        Output pixels per input pixel.
    kernel
        The detection filter; default sep's 3x3 default (:data:`SEP_DEFAULT_FILTER`).
    """
    from scipy.signal import fftconvolve

    k = SEP_DEFAULT_FILTER if kernel is None else np.asarray(kernel, dtype=np.float64)
    h = np.asarray(response, dtype=np.float64)
    hk = fftconvolve(h, k[::-1, ::-1], mode="same")  # correlation with k: the filtered output's response
    s = int(scale)
    # per output phase, the sum over input pixels of squared weights = variance for unit white input
    var_f = np.array([[np.sum(hk[a::s, b::s] ** 2) for b in range(s)] for a in range(s)])
    var_p = np.array([[np.sum(h[a::s, b::s] ** 2) for b in range(s)] for a in range(s)])
    white = np.sum(k**2) * var_p.mean()
    return float(np.sqrt(var_f.mean() / white))


def err_hdu(
    err: np.ndarray,
    *,
    header: Optional[fits.Header] = None,
    wcs=None,
    bunit: Optional[str] = None,
    how: str = "",
    filter_factor: Optional[float] = None,
) -> fits.ImageHDU:
    """An ``ERR`` image extension (1-sigma per pixel, float32, in the image's BUNIT) for an output file.

    ``header``: the output image's header; its BUNIT is copied, and its WCS when no ``wcs`` is given.
    ``wcs``: the output image's (validated) celestial WCS, copied so the ERR is on the same sky grid;
    prefer it over parsing ``header`` (a hostile header can make astropy's WCS parser hang).
    ``how``: a short text stored as ``ERRMETH`` (e.g. ``"bicubic x2, propagated"``).
    ``filter_factor``: :func:`filter_noise_factor`, stored as ``ERRFILT`` (multiply the ERR by it when
    detecting with sep's default matched filter: the output noise is correlated).
    """
    e = np.asarray(err, dtype=np.float32)
    if e.ndim != 2:
        raise AstroSRError(f"ERR must be 2-D, got shape {e.shape}.")
    hdr = fits.Header()
    if wcs is not None:
        hdr.update(wcs.to_header(relax=True))
    elif header is not None:
        import warnings

        from .fits_header import _make_wcs  # the reader's checked WCS parsing (bounded, validated)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            w, _ = _make_wcs(header, 2, "ERR", e.shape)
        if w is not None:
            hdr.update(w.to_header(relax=True))
    if header is not None:
        if bunit is None and "BUNIT" in header:
            bunit = str(header["BUNIT"])
    hdr["EXTNAME"] = ("ERR", "1-sigma uncertainty of the image")
    if bunit:
        hdr["BUNIT"] = (bunit, "same unit as the image")
    if how:
        hdr["ERRMETH"] = (how[:68], "how the uncertainty was computed")
    if filter_factor is not None:
        hdr["ERRFILT"] = (round(float(filter_factor), 4), "x ERR for sep's default 3x3 matched filter")
    return fits.ImageHDU(data=e, header=hdr, name="ERR")


def add_err_extension(
    path: Union[str, Path],
    err: np.ndarray,
    *,
    how: str = "",
    overwrite_err: bool = True,
    filter_factor: Optional[float] = None,
) -> Path:
    """Append (or replace) the ``ERR`` extension of an image written by ``write_fits``, atomically.

    The primary image must have ``err``'s shape; its header supplies the WCS and BUNIT.
    """
    import warnings

    from .atomic import atomic_output

    p = Path(path)
    with fits.open(p) as hdul:
        hdus = [h.copy() for h in hdul]
    prim = hdus[0]
    if prim.data is None or prim.data.shape != np.shape(err):
        raise AstroSRError(
            f"{p}: image shape {None if prim.data is None else prim.data.shape} differs from the ERR "
            f"shape {np.shape(err)}."
        )
    if any(h.name == "ERR" for h in hdus[1:]):
        if not overwrite_err:
            raise AstroSRError(f"{p}: already has an ERR extension.")
        hdus = [hdus[0]] + [h for h in hdus[1:] if h.name != "ERR"]
    hdus.append(err_hdu(err, header=prim.header, how=how, filter_factor=filter_factor))
    with atomic_output(p) as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fits.HDUList(hdus).writeto(tmp, overwrite=True, output_verify="silentfix")
    return p

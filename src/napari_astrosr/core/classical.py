"""Classical restoration baselines (numpy / scipy / scikit-image; no torch).

All take and return images in flux per pixel and say what they do to flux:

- :func:`interpolate` (``bicubic``/``lanczos``): flux-conserving upsampling
  (``core.resample.upsample``): every input pixel's flux is exactly the sum of its output
  block, so the total is conserved.
- :func:`richardson_lucy`: Richardson-Lucy deconvolution on the input grid, then
  flux-conserving upsampling. Total flux conserved exactly (a final global rescale
  corrects RL's small losses at the image edges); per-source flux approximately.
- :func:`backprojection`: bicubic then the flux-exact projection through the PSF-aware
  forward model (``core.projection.project_flux_exact``): blur + block-sum of the output
  reproduce every input pixel. Needs the PSF the input carries (on the output grid).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from ..exceptions import AstroSRError


def _check_scale(scale: int) -> int:
    if int(scale) != scale or not 1 <= int(scale) <= 8:
        raise AstroSRError(f"--scale {scale}: classical methods take an integer scale from 1 to 8.")
    return int(scale)


def interpolate(image: np.ndarray, *, scale: int = 2, method: str = "bicubic") -> np.ndarray:
    """Flux-conserving ``bicubic`` or ``lanczos`` upsampling by ``scale``.

    Flux: ``block_sum(out, scale) == image`` (so totals and every input pixel's flux are
    kept). NaN input pixels give NaN output blocks.
    """
    from .resample import upsample

    s = _check_scale(scale)
    if s == 1:
        return np.array(image, dtype=np.float32, copy=True)
    return upsample(np.asarray(image, dtype=np.float32), s, method=method)


def _rl_iterations(z: np.ndarray, k: np.ndarray, iterations: int, stop=None) -> np.ndarray:
    """Skimage's Richardson-Lucy update (start 0.5, ``mode="same"`` zero-padded convolutions,
    ratio 0 where the model is below 1e-12), in our own loop: each iteration is two FFT
    convolutions, so Ctrl-C and ``stop`` take effect within one iteration instead of after
    skimage's single uninterruptible call on the whole image.
    """
    from scipy.signal import fftconvolve

    from ..exceptions import StoppedError

    est = np.full(z.shape, 0.5)
    k_mirror = k[::-1, ::-1]
    for i in range(int(iterations)):
        if stop is not None and stop.is_set():
            raise StoppedError(f"richardson-lucy stopped after {i} of {iterations} iterations; nothing was written.")
        conv = fftconvolve(est, k, mode="same") + 1e-12
        ratio = np.where(conv < 1e-12, 0.0, z / conv)
        est *= fftconvolve(ratio, k_mirror, mode="same")
    return est


def richardson_lucy(
    image: np.ndarray, psf: np.ndarray, *, scale: int = 1, iterations: int = 30, psf_grid: str = "output", stop=None
) -> np.ndarray:
    """Richardson-Lucy deconvolution (``skimage.restoration.richardson_lucy``), then upsampling.

    RL needs non-negative data, so the image is shifted by its minimum (sky offsets and
    negative noise become >= 0) and scaled to [0, 1]; the shift and scale are undone
    afterwards (flux units restored), NaNs filled with the median before and restored
    after. A global factor then makes the total flux equal the input's exactly.

    Parameters
    ----------
    image
        2-D image in flux per pixel.
    psf
        The blur the image carries. ``psf_grid="output"`` (default, as ``--psf`` and
        ``astrosr degrade``): on the output (HR) grid; it is brought to the input grid with
        ``resample_psf(psf, 1/scale)``. ``psf_grid="input"``: already on the input grid.
    scale
        Upsampling after deconvolution (flux-conserving bicubic).
    iterations
        RL iterations (more = sharper and noisier).
    stop
        Optional flag (``is_set()``) checked before every iteration; when set,
        :class:`~napari_astrosr.exceptions.StoppedError` is raised.
    """
    from .psf import normalize_psf, resample_psf

    s = _check_scale(scale)
    if psf is None:
        raise AstroSRError("richardson-lucy needs the PSF the input carries: pass --psf (e.g. gaussian:1.0).")
    if iterations < 1:
        raise AstroSRError(f"iterations={iterations}: must be >= 1.")
    k = normalize_psf(np.asarray(psf, dtype=np.float64))
    if psf_grid == "output" and s > 1:
        k = resample_psf(k, 1.0 / s)
    a = np.asarray(image, dtype=np.float64)
    bad = ~np.isfinite(a)
    if bad.all():
        raise AstroSRError("image is entirely NaN/blank; nothing to restore.")
    x = np.where(bad, np.median(a[~bad]), a)
    lo = float(x.min())
    span = float(x.max() - lo) or 1.0
    z = (x - lo) / span
    d = _rl_iterations(z, k, int(iterations), stop)
    # restore the total of the shifted image exactly (RL loses a little at the edges)
    tot_in, tot_out = float(z.sum()), float(d.sum())
    if tot_out > 0:
        d *= tot_in / tot_out
    out = d * span + lo
    out[bad] = np.nan
    out = out.astype(np.float32)
    return interpolate(out, scale=s, method="bicubic") if s > 1 else out


def backprojection_iter(
    image: np.ndarray,
    psf: Optional[np.ndarray],
    *,
    scale: int = 2,
    iterations: int = 50,
    nonneg: Optional[bool] = None,
    stop=None,
):
    """:func:`backprojection` as a generator: yields ``(iteration, residual_rel, nonneg_round)``
    after every CG iteration of the projection, returns the float32 result. ``stop``
    (``is_set()``) is checked between iterations and raises
    :class:`~napari_astrosr.exceptions.StoppedError`.
    """
    from .projection import iter_project_flux_exact

    s = _check_scale(scale)
    if psf is None:
        raise AstroSRError(
            "backprojection needs the PSF the input carries: pass --psf (e.g. gaussian:1.0, in output pixels)."
        )
    up = interpolate(image, scale=s, method="bicubic")
    out, _ = yield from iter_project_flux_exact(
        up, np.asarray(image, dtype=np.float32), scale=s, psf=psf, iterations=iterations, nonneg=nonneg, stop=stop
    )
    return np.asarray(out, dtype=np.float32)


def backprojection(
    image: np.ndarray,
    psf: Optional[np.ndarray],
    *,
    scale: int = 2,
    iterations: int = 50,
    nonneg: Optional[bool] = None,
    callback=None,
    stop=None,
) -> np.ndarray:
    """Flux-conserving bicubic, then the flux-exact projection through blur + block-sum.

    Flux: ``forward_model(out, scale, psf) == image`` to the CG tolerance: each input
    pixel is reproduced after the stated blur and downsampling (DESIGN.md section 3), so
    totals are conserved and sources sharpen instead of being re-blurred. On noisy input
    the projection fits the noise too; prefer it on clean / high-S/N data.

    ``psf`` is the blur on the output grid (``None`` = none: then bicubic already
    satisfies the constraint and nothing changes). ``callback(iteration, residual_rel)``
    is called after every CG iteration; ``stop`` as in :func:`backprojection_iter`.
    """
    gen = backprojection_iter(image, psf, scale=scale, iterations=iterations, nonneg=nonneg, stop=stop)
    while True:
        try:
            it, res, _ = next(gen)
        except StopIteration as done:
            return done.value
        if callback is not None:
            callback(it, res)

"""The torch twins of upsampling, flux-map rendering and the projection (models.ops), run on the CPU
through the same code a GPU restore uses (use_torch=True), against the numpy versions in core."""

from __future__ import annotations

import numpy as np
import pytest

from napari_astrosr.core import fluxmap as FM
from napari_astrosr.core import projection as J
from napari_astrosr.core import psf as P
from napari_astrosr.core import resample as R
from napari_astrosr.models import ops


def _run(gen):
    events = []
    while True:
        try:
            events.append(next(gen))
        except StopIteration as done:
            return done.value, events


def _field(rng, shape=(96, 80), noise=0.5):
    img = rng.normal(0.0, noise, shape)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for y0, x0, f in [(30, 20, 500.0), (60, 55, 300.0), (80, 70, 200.0), (10, 60, 80.0)]:
        img += f * np.exp(-((yy - y0) ** 2 + (xx - x0) ** 2) / (2 * 2.0**2)) / (2 * np.pi * 4.0)
    return img


@pytest.mark.parametrize("method,f", [("bicubic", 2), ("lanczos", 3), ("bicubic", 4), ("nearest", 2)])
def test_torch_upsample_equals_core_and_keeps_every_pixels_flux(method, f):
    x = np.random.default_rng(0).gamma(0.3, 5.0, size=(37, 50))
    x[3, 4] = np.nan
    a = R.upsample(x, f, method=method)
    b = ops.upsample(x, f, method=method, use_torch=True)
    assert b.dtype == a.dtype and np.array_equal(np.isnan(a), np.isnan(b))
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-12 * np.nanmax(a))
    xs = np.nan_to_num(x)
    assert np.nanmax(np.abs(np.nan_to_num(R.block_sum(np.nan_to_num(b), f)) - xs)) <= 1e-8 * xs.max()


def test_torch_flux_map_equals_core():
    rng = np.random.default_rng(1)
    img = _field(rng)
    a = FM.flux_map_from_image(img)
    b = ops.flux_map_from_image(img, use_torch=True)
    assert a.sum() > 0
    np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6 * a.max())
    from napari_astrosr.core.detection import detect_sources

    src = detect_sources(img, thresh=1.5, minarea=5)
    m = ops.render_flux_map(img.shape, src, kernel="airy", coord_scale=2.0).numpy()
    ref = FM.flux_map((img.shape[0], img.shape[1]), src, kernel="airy", coord_scale=2.0, dtype=np.float64)
    np.testing.assert_allclose(m, ref, rtol=1e-9, atol=1e-12 * ref.max())


@pytest.mark.parametrize(
    "nonneg,damping,psf",
    [
        (False, 0.0, "gaussian:1.0"),
        (True, 0.0, "gaussian:1.0"),
        (False, 1e-3, "gaussian:1.0"),
        (None, 0.0, None),
        (True, 1e-3, "gaussian:2.0"),  # the noise-aware projection's stopping rule (noise_tol below)
    ],
)
def test_torch_projection_equals_core(nonneg, damping, psf):
    rng = np.random.default_rng(2)
    k = P.parse_psf(psf) if psf else None
    hr = np.clip(_field(rng), 0, None)
    lr = J.forward_model(hr, scale=2, psf=k)
    lr[5, 7] = np.nan
    sr = R.upsample(np.nan_to_num(lr), 2)
    tols = {}
    if damping and nonneg:
        sigma = 0.01 * float(np.nanmax(lr))
        tols = dict(noise_tol=J.NOISE_TOL * sigma, round_noise_tol=J.NOISE_ROUND_TOL * sigma)
    a, ia = J.project_flux_exact(sr, lr, scale=2, psf=k, nonneg=nonneg, damping=damping, return_info=True, **tols)
    (b, ib), events = _run(
        ops.iter_project_flux_exact(sr, lr, scale=2, psf=k, nonneg=nonneg, damping=damping, use_torch=True, **tols)
    )
    assert np.array_equal(np.isnan(a), np.isnan(b)) and len(events) == ib["iterations"]
    if tols:  # both stop at the same residual, not after the same iterations: equal to the tolerance's effect
        assert np.nanmax(np.abs(a - b)) < 1e-3 * np.nanmax(np.abs(a))
        return
    assert np.nanmax(np.abs(a - b)) < 1e-6 * np.nanmax(np.abs(a))
    if damping == 0:
        # the flux guarantee: blur + block-sum of the output reproduce every valid input pixel
        rep = J.forward_model(np.nan_to_num(b), scale=2, psf=k)
        ok = np.isfinite(lr)
        ok[2:9, 4:11] = False  # the NaN pixel's neighbours see its block as 0 in this check
        assert ib["residual_rel"] < 1e-6
        assert np.abs(rep - lr)[ok].max() < 1e-5 * np.nanmax(lr)
        assert abs(np.nansum(b) - np.nansum(a)) < 1e-7 * np.nansum(a)


def test_dispatchers_use_core_on_the_cpu():
    x = np.random.default_rng(3).gamma(0.3, 5.0, size=(20, 24)).astype(np.float32)
    assert not ops.use_torch_on("cpu") and ops.use_torch_on("cuda:0")
    np.testing.assert_array_equal(ops.upsample(x, 2, device="cpu"), R.upsample(x, 2))


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_the_same_results():
    rng = np.random.default_rng(4)
    x = np.clip(_field(rng), 0, None)
    np.testing.assert_allclose(ops.upsample(x, 2, device="cuda"), R.upsample(x, 2), rtol=0, atol=1e-10 * x.max())
    np.testing.assert_allclose(
        ops.flux_map_from_image(x, device="cuda"), FM.flux_map_from_image(x), rtol=1e-5, atol=1e-6 * x.max()
    )
    k = P.gaussian_psf(1.0)
    lr = J.forward_model(x, scale=2, psf=k)
    sr = R.upsample(lr, 2)
    (b, _), _ = _run(ops.iter_project_flux_exact(sr, lr, scale=2, psf=k, device="cuda"))
    a = J.project_flux_exact(sr, lr, scale=2, psf=k)
    assert np.abs(a - b).max() < 1e-6 * np.abs(a).max()

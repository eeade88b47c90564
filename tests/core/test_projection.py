"""Flux-exact projection through the PSF-aware forward model."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from napari_astrosr.core import projection as J
from napari_astrosr.core import psf as P
from napari_astrosr.core import resample as R
from napari_astrosr.exceptions import AstroSRError


def _sky(n, seed=0):
    rng = np.random.default_rng(seed)
    img = ndimage.gaussian_filter(rng.gamma(0.3, 5.0, size=(n, n)), 1.0)
    yy, xx = np.mgrid[:n, :n]
    for _ in range(8):
        x0, y0, f = rng.uniform(5, n - 5), rng.uniform(5, n - 5), rng.uniform(50, 500)
        img += f * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / 2.0) / (2 * np.pi)
    return img


@pytest.mark.parametrize("psf", [None, P.gaussian_psf(1.0), P.gaussian_airy_psf(1.0, 2.0)])
@pytest.mark.parametrize("scale", [2, 3])
def test_adjoint_exact(psf, scale):
    rng = np.random.default_rng(7)
    op = J.ForwardModel((30 * scale, 26 * scale), scale=scale, psf=psf)
    x, y = rng.normal(size=op.shape), rng.normal(size=op.lr_shape)
    lhs, rhs = np.vdot(op.apply(x), y), np.vdot(x, op.adjoint(y))
    assert abs(lhs - rhs) < 1e-10 * max(1.0, abs(lhs))
    # the operator is the public forward model
    np.testing.assert_allclose(op.apply(x), J.forward_model(x, scale=scale, psf=psf), atol=1e-12)


@pytest.mark.parametrize("psf", [None, P.gaussian_psf(1.0), P.gaussian_airy_psf(1.0, 2.0)])
@pytest.mark.parametrize("scale", [2, 4])
def test_projection_reproduces_lr(psf, scale):
    hr = _sky(48 * scale // 2 * 2)
    hr = hr[: hr.shape[0] // scale * scale, : hr.shape[1] // scale * scale]
    lr = J.forward_model(hr, scale=scale, psf=psf)
    sr = R.upsample(lr, scale, method="bicubic")
    x, info = J.project_flux_exact(sr, lr, scale=scale, psf=psf, return_info=True)
    rep = J.forward_model(x, scale=scale, psf=psf)
    e = 3
    inner = (slice(e, -e), slice(e, -e))
    rel = np.abs(rep - lr)[inner].max() / np.abs(lr).max()
    assert rel < 1e-5, info
    assert x.sum() == pytest.approx(lr.sum(), rel=1e-6)
    # projecting through the true forward model brings the estimate closer to the truth
    assert np.mean((x - hr) ** 2) <= np.mean((sr - hr) ** 2) * (1.0 + 1e-9)


def test_projection_gains_over_plain_block_sum_constraint():
    # DESIGN.md 3: a blur-aware projection gains; forcing block sums of a sharp image onto a blurred LR loses
    hr = _sky(96, seed=3)
    psf = P.gaussian_psf(1.2)
    lr = J.forward_model(hr, scale=2, psf=psf)
    sr = R.upsample(lr, 2)
    mse = lambda a: np.mean((a - hr) ** 2)  # noqa: E731
    aware = J.project_flux_exact(sr, lr, scale=2, psf=psf)
    assert mse(aware) < 0.5 * mse(sr)


def test_least_change_with_delta_psf():
    rng = np.random.default_rng(0)
    lr = rng.normal(size=(10, 12))
    sr = rng.normal(size=(20, 24))
    x = J.project_flux_exact(sr, lr, scale=2, nonneg=False)
    # closed form: add each block's residual / s^2 uniformly
    expect = sr + R.block_split(lr - R.block_sum(sr, 2), 2)
    np.testing.assert_allclose(x, expect, atol=1e-12)


def test_nonneg_and_nan():
    hr = _sky(64, seed=5)
    psf = P.gaussian_psf(1.0)
    lr = J.forward_model(hr, scale=2, psf=psf)
    sr = R.upsample(lr, 2, method="lanczos")
    x, info = J.project_flux_exact(sr, lr, scale=2, psf=psf, return_info=True)
    assert info["nonneg"] is True
    assert x.min() > -2e-3 * x.max()
    x0 = J.project_flux_exact(sr, lr, scale=2, psf=psf, nonneg=False)
    assert x0.min() < 10 * x.min()  # clipping rounds did remove negatives
    assert np.mean((x - hr) ** 2) < np.mean((x0 - hr) ** 2)
    lr2 = lr.copy()
    lr2[5, 6] = np.nan
    x2 = J.project_flux_exact(sr, lr2, scale=2, psf=psf, nonneg=False)
    assert np.isnan(x2[10:12, 12:14]).all() and np.isfinite(x2).sum() == x2.size - 4


def test_float32_input_and_dtype():
    hr = _sky(64).astype(np.float32)
    lr = J.forward_model(hr, scale=2, psf=P.gaussian_psf(1.0)).astype(np.float32)
    sr = R.upsample(lr, 2)
    x = J.project_flux_exact(sr, lr, scale=2, psf=P.gaussian_psf(1.0))
    assert x.dtype == np.float32
    rep = J.forward_model(x, scale=2, psf=P.gaussian_psf(1.0))
    assert np.abs(rep - lr)[2:-2, 2:-2].max() / lr.max() < 1e-5


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 9999), sigma=st.floats(0.6, 1.6))
def test_projection_property(seed, sigma):
    rng = np.random.default_rng(seed)
    lr = rng.gamma(0.5, 3.0, size=(16, 18))
    sr = rng.gamma(0.5, 1.0, size=(32, 36))
    psf = P.gaussian_psf(sigma)
    x = J.project_flux_exact(sr, lr, scale=2, psf=psf, nonneg=False, iterations=200, tol=1e-10)
    assert np.abs(J.forward_model(x, scale=2, psf=psf) - lr).max() < 1e-6 * lr.max()


def test_bad_input():
    with pytest.raises(AstroSRError, match="shape"):
        J.project_flux_exact(np.ones((10, 10)), np.ones((4, 4)), scale=2)
    with pytest.raises(AstroSRError):
        J.project_flux_exact(np.ones((8, 8)), np.ones((4, 4)), scale=0)
    with pytest.raises(AstroSRError, match="NaN"):
        J.project_flux_exact(np.ones((8, 8)), np.full((4, 4), np.nan), scale=2)
    with pytest.raises(AstroSRError, match="larger than the image"):
        J.project_flux_exact(np.ones((8, 8)), np.ones((4, 4)), scale=2, psf=P.gaussian_psf(3.0))

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


# An off-centre, elongated, non-separable PSF: the phase split and the edge strips must not rely on symmetry.
_ODD_PSF = np.random.default_rng(11).gamma(1.0, 1.0, size=(7, 11))


@pytest.mark.parametrize("psf", [P.gaussian_psf(1.0), _ODD_PSF])
@pytest.mark.parametrize("scale", [1, 4])
def test_forward_model_by_phases_is_blur_then_block_sum(psf, scale):
    # the operator runs on the LR grid by phases; it must still be convolve + block_sum and its exact adjoint
    rng = np.random.default_rng(3)
    op = J.ForwardModel((23 * scale, 31 * scale), scale=scale, psf=psf)
    x, y = rng.normal(size=op.shape), rng.normal(size=op.lr_shape)
    np.testing.assert_allclose(op.apply(x), J.forward_model(x, scale=scale, psf=psf), atol=1e-12)
    assert abs(np.vdot(op.apply(x), y) - np.vdot(x, op.adjoint(y))) < 1e-10 * abs(np.vdot(x, op.adjoint(y)))


@pytest.mark.parametrize(
    ("psf", "scale", "lr_shape"),
    [
        (P.gaussian_psf(1.0), 2, (40, 52)),
        (P.gaussian_psf(1.0), 3, (61, 33)),
        (P.gaussian_airy_psf(1.0, 2.0), 4, (120, 90)),
        (_ODD_PSF, 2, (40, 52)),
        (_ODD_PSF, 1, (120, 90)),
    ],
)
def test_normal_operator_on_the_lr_grid_is_exact(psf, scale, lr_shape):
    # CG applies A A^T as an LR convolution plus edge strips; it must equal the HR round trip, edges included
    op = J.ForwardModel((lr_shape[0] * scale, lr_shape[1] * scale), scale=scale, psf=psf)
    normal = J._NormalLR(op)
    assert normal.edges  # the strips are used at these sizes (small images fall back to A (A^T v))
    v = np.random.default_rng(5).normal(size=op.lr_shape)
    exact = op.apply(op.adjoint(v))
    peak = np.abs(exact).max()
    assert np.abs(normal(v) - exact).max() < 1e-12 * peak
    assert np.abs(J._NormalLR(op, np.float32)(v) - exact).max() < 2e-6 * peak


def test_scattered_blur_of_few_pixels_matches_the_operator():
    # non-negativity rounds blur only the clipped pixels, by scattering the PSF; same operator, edges included
    rng = np.random.default_rng(8)
    op = J.ForwardModel((60, 84), scale=3, psf=_ODD_PSF)
    d = np.where(rng.random(op.shape) < 0.05, rng.normal(size=op.shape), 0.0)
    d[0], d[:, -1] = 1.0, -2.0  # pixels on the edges, where the renormalisation differs
    idx = np.nonzero(d)
    np.testing.assert_allclose(J._apply_sparse(op, d[idx], idx), op.apply(d), atol=1e-12 * np.abs(op.apply(d)).max())


def test_nonneg_rounds_stop_when_the_clipping_stagnates():
    """Saturated stars (clipped data no blur of a non-negative image reproduces): the clipped flux does not fall
    from round to round, and the rounds stop after the first instead of running to their cap; where each round
    still cuts it the rule changes nothing."""
    import numpy as np

    from napari_astrosr.core import projection as J
    from napari_astrosr.core.psf import moffat_psf
    from napari_astrosr.core.resample import upsample
    from napari_astrosr.core.simulate import star_field

    hr = star_field((128, 128), psf=None, seed=3, noise="none", sky=0.0, flux_range=(100, 1e5)).image.astype(float)
    psf = moffat_psf(6.0)
    clean = J.forward_model(hr, scale=2, psf=psf) + 5.0
    saturated = np.minimum(clean, 0.2 * clean.max())
    _, capped = J.project_flux_exact(
        upsample(saturated, 2), saturated, scale=2, psf=psf, return_info=True, stagnation=None
    )
    _, early = J.project_flux_exact(upsample(saturated, 2), saturated, scale=2, psf=psf, return_info=True)
    assert capped["nonneg_rounds"] == 10 and early["nonneg_rounds"] == 1
    assert early["iterations"] < 0.7 * capped["iterations"]
    # unsaturated: each round still cuts the clipped flux (slowly), the same rounds and output either way
    a, ia = J.project_flux_exact(upsample(clean, 2), clean, scale=2, psf=psf, return_info=True, stagnation=None)
    b, ib = J.project_flux_exact(upsample(clean, 2), clean, scale=2, psf=psf, return_info=True)
    assert ia["nonneg_rounds"] == ib["nonneg_rounds"]
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6 * float(np.abs(a).max()))
    with pytest.raises(AstroSRError, match="stagnation"):
        J.project_flux_exact(upsample(clean, 2), clean, scale=2, psf=psf, stagnation=1.5)

"""Noise-aware flux projection: fit the data only where the residual rises above the noise."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from napari_astrosr.core import projection as J
from napari_astrosr.core import psf as P
from napari_astrosr.core.simulate import star_field
from napari_astrosr.exceptions import AstroSRError, AstroSRWarning


def _case(noise_sigma, seed=0, n=96, scale=2):
    psf = P.gaussian_psf(1.0)
    hr = star_field((n, n), psf=P.gaussian_psf(0.7), seed=seed, noise="none", sky=0.0).image.astype(np.float64)
    lr_clean = J.forward_model(hr, scale=scale, psf=psf)
    rng = np.random.default_rng(seed + 1)
    lr = lr_clean + rng.normal(0.0, noise_sigma, lr_clean.shape)
    bic = np.repeat(np.repeat(lr, scale, 0), scale, 1) / scale**2
    return hr, lr, lr_clean, bic, psf


def test_zero_sigma_is_the_exact_projection():
    hr, lr, _, bic, psf = _case(0.0)
    target, info = J.noise_aware_target(bic, lr, scale=2, psf=psf, sigma=0.0)
    np.testing.assert_array_equal(target, lr)
    assert info["power_kept"] == 1.0


def test_pure_noise_residual_is_dropped_and_source_errors_kept():
    """A residual that is only white noise is filtered out; a missing source (well above the noise) is kept."""
    rng = np.random.default_rng(3)
    sigma = 2.0
    lr = rng.normal(0.0, sigma, (64, 64))
    sr = np.zeros((128, 128))  # A(sr) = 0, so the residual is the noise itself
    target, info = J.noise_aware_target(sr, lr, scale=2, psf=None, sigma=sigma)
    assert np.std(target) < 0.35 * sigma and info["power_kept"] < 0.2
    # now a bright source the restoration missed
    yy, xx = np.mgrid[:64, :64]
    src = 4000.0 * np.exp(-((xx - 30) ** 2 + (yy - 33) ** 2) / (2 * 2.0**2)) / (2 * np.pi * 4.0)
    target, info = J.noise_aware_target(sr, lr + src, scale=2, psf=None, sigma=sigma)
    box = (slice(24, 40), slice(24, 38))
    assert target[box].sum() == pytest.approx(src[box].sum(), rel=0.05)


def test_noise_aware_projection_beats_exact_on_noisy_data_and_keeps_flux():
    # sigma 20 = ~10% of the LR image's 99.5th percentile (measured: exact 29.9, aware 24.2 rms vs truth)
    hr, lr, lr_clean, bic, psf = _case(noise_sigma=20.0)
    exact = J.project_flux_exact(bic, lr, scale=2, psf=psf)
    target, _ = J.noise_aware_target(bic, lr, scale=2, psf=psf, sigma=20.0)
    aware = J.project_flux_exact(bic, target, scale=2, psf=psf)
    err = lambda x: float(np.sqrt(np.mean((x - hr) ** 2)))  # noqa: E731
    assert err(aware) < 0.9 * err(exact), (err(aware), err(exact))
    # total flux: within the noise of the data's total
    n_tot = 20.0 * np.sqrt(lr.size)
    assert abs(aware.sum() - lr.sum()) < 3 * n_tot
    # the result reproduces its own target exactly (it is the exact projection onto it)
    np.testing.assert_allclose(J.forward_model(aware, scale=2, psf=psf), target, atol=1e-4 * np.abs(target).max())


def test_estimate_lr_noise_recovers_sigma_next_to_sources():
    _, lr, _, _, _ = _case(noise_sigma=1.5, seed=4, n=192)
    assert J.estimate_lr_noise(lr) == pytest.approx(1.5, rel=0.15)


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_bad_sigma(bad):
    with pytest.raises(AstroSRError, match="sigma"):
        J.noise_aware_target(np.zeros((8, 8)), np.zeros((4, 4)), scale=2, sigma=bad)


def test_restore_flux_noise_option():
    from napari_astrosr.restoration import restore

    hr, lr, _, _, _ = _case(noise_sigma=20.0, seed=5)
    lr = lr.astype(np.float32)
    bp = restore(lr, method="backprojection", scale=2, psf="gaussian:1.0", flux_noise="exact")
    # at this noise nothing in the residual rises above sigma: the restore says so (and still beats bp)
    with pytest.warns(AstroSRWarning, match="rises above the noise"):
        aware = restore(lr, method="backprojection", scale=2, psf="gaussian:1.0", flux_noise="auto")
    err = lambda x: float(np.sqrt(np.mean((x - hr) ** 2)))  # noqa: E731
    assert err(aware.data) < err(bp.data)
    assert aware.params["flux_noise"] == pytest.approx(20.0, rel=0.2)
    with pytest.warns(AstroSRWarning, match="rises above the noise"):
        fixed = restore(lr, method="bicubic", scale=2, psf="gaussian:1.0", flux_exact=True, flux_noise=20.0)
    assert fixed.params["flux_noise"] == 20.0
    with pytest.raises(AstroSRError, match="--flux-noise"):
        restore(lr, method="bicubic", scale=2, flux_noise="auto")
    with pytest.raises(AstroSRError, match="--flux-noise"):
        restore(lr, method="backprojection", scale=2, psf="gaussian:1.0", flux_noise="loud")


def test_cli_flux_noise(tmp_path):
    from napari_astrosr.cli import main
    from napari_astrosr.core.fits_io import read_fits, write_fits

    _, lr, _, _, _ = _case(noise_sigma=20.0, seed=6)
    src = tmp_path / "lr.fits"
    write_fits(src, lr.astype(np.float32))
    out = tmp_path / "sr.fits"
    rc = main(
        [
            "restore",
            str(src),
            "-o",
            str(out),
            "--method",
            "backprojection",
            "--psf",
            "gaussian:1.0",
            "--flux-noise",
            "auto",
            "--quiet",
        ]
    )
    assert rc == 0 and read_fits(out).data.shape == (96, 96)  # LR 48x48 (96x96 HR truth) x2
    rc = main(
        ["restore", str(src), "-o", str(tmp_path / "x.fits"), "--method", "bicubic", "--flux-noise", "1", "--quiet"]
    )
    assert rc == 2 and not (tmp_path / "x.fits").exists()


def test_damping_keeps_a_wide_psf_at_scale_1_from_amplifying_noise():
    """A ground-based-like PSF (sigma 4 px) at scale 1: the undamped solve deconvolves the noise the Wiener gain
    lets through (rms error vs truth well above the input's); damped (the noise-aware default) it improves on the
    input and reproduces the data's total flux."""
    n, psf = 96, P.gaussian_psf(4.0)
    hr = star_field((n, n), psf=P.gaussian_psf(0.7), seed=0, noise="none", sky=0.0).image.astype(np.float64)
    y = J.forward_model(hr, scale=1, psf=psf)
    sigma = 0.02 * float(np.percentile(y, 99.5))
    lr = y + np.random.default_rng(1).normal(0.0, sigma, y.shape)
    err = lambda x: float(np.sqrt(np.mean((x - hr) ** 2)))  # noqa: E731
    t, _ = J.noise_aware_target(lr, lr, scale=1, psf=psf, sigma=J.estimate_lr_noise(lr))
    out = {d: J.project_flux_exact(lr, t, scale=1, psf=psf, damping=d) for d in (0.0, J.NOISE_DAMPING)}
    assert err(out[J.NOISE_DAMPING]) < 0.95 * err(lr), (err(out[J.NOISE_DAMPING]), err(lr))
    assert err(out[J.NOISE_DAMPING]) < 0.7 * err(out[0.0]), (err(out[J.NOISE_DAMPING]), err(out[0.0]))
    assert J.forward_model(out[J.NOISE_DAMPING], scale=1, psf=psf).sum() == pytest.approx(lr.sum(), rel=2e-3)


def test_damped_projection_of_a_net_with_a_flux_offset_corrects_the_total():
    """An estimate 30% too bright plus a pedestal: the damped solve leaves ~damping of the total-flux residual."""
    n, psf = 64, P.gaussian_psf(3.0)
    hr = star_field((n, n), psf=P.gaussian_psf(0.7), seed=2, noise="none", sky=0.0).image.astype(np.float64)
    y = J.forward_model(hr, scale=1, psf=psf)
    est = 1.3 * hr + 0.5
    before = J.forward_model(est, scale=1, psf=psf).sum() - y.sum()
    x = J.project_flux_exact(est, y, scale=1, psf=psf, damping=1e-3)
    after = J.forward_model(x, scale=1, psf=psf).sum() - y.sum()
    assert abs(after) < 1.5e-3 * abs(before), (after, before)


@pytest.mark.parametrize("bad", [-1e-3, float("nan"), None])
def test_bad_damping(bad):
    hr, lr, _, bic, psf = _case(1.0)
    with pytest.raises(AstroSRError, match="damping"):
        J.project_flux_exact(bic, lr, scale=2, psf=psf, damping=bad)


def test_noise_gain_of_the_exact_projection():
    """1 for a pure block sum; moderate at x2 with the STAR PSFs; huge for any blur at scale 1."""
    assert J.noise_gain((64, 64), scale=2, psf=None) == 1.0
    g2 = J.noise_gain((128, 128), scale=2, psf=P.parse_psf("gaussian:1.0"))
    g1 = J.noise_gain((128, 128), scale=1, psf=P.parse_psf("gaussian:1.0"))
    assert 5 < g2 < 100 and g1 > 1e3


def test_restore_warns_when_the_exact_projection_amplifies_noise(recwarn):
    from napari_astrosr.exceptions import AstroSRWarning
    from napari_astrosr.restoration import restore

    img = np.random.default_rng(0).normal(10.0, 1.0, (32, 32)).astype(np.float32)
    with pytest.warns(AstroSRWarning, match="--flux-noise auto"):
        restore(img, method="bicubic", scale=2, psf="gaussian:2.0", flux_exact=True, flux_noise="exact")
    recwarn.clear()
    # gain ~15: no warning
    restore(img, method="bicubic", scale=2, psf="gaussian:1.0", flux_exact=True, flux_noise="exact")
    assert not [w for w in recwarn if issubclass(w.category, AstroSRWarning)]
    # the default (noise measured) is noise-aware on this pure-noise image: no amplification advice
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        restore(img, method="bicubic", scale=2, psf="gaussian:2.0", flux_exact=True)
    assert not [w for w in caught if "--flux-noise auto" in str(w.message)]


def test_noise_tolerance_stops_early_with_the_same_output():
    """CG stopped at 1% of the noise (0.1 in the non-negativity rounds) instead of tol: fewer iterations, the
    output within a few percent of the noise of the fully converged one, total flux within a tenth of its noise."""
    sigma = 20.0
    hr, lr, _, bic, _ = _case(noise_sigma=sigma, n=128)
    psf = P.gaussian_psf(3.0)  # wide against the output pixel: the slow case (tol alone hits the cap)
    lr = J.forward_model(hr, scale=2, psf=psf) + np.random.default_rng(5).normal(0.0, sigma, lr.shape)
    target, _ = J.noise_aware_target(bic, lr, scale=2, psf=psf, sigma=sigma, cap=True)
    kw = dict(scale=2, psf=psf, damping=J.NOISE_DAMPING, return_info=True)
    full, i_full = J.project_flux_exact(bic, target, **kw)
    fast, i_fast = J.project_flux_exact(
        bic, target, noise_tol=J.NOISE_TOL * sigma, round_noise_tol=J.NOISE_ROUND_TOL * sigma, **kw
    )
    assert i_fast["iterations"] < 0.6 * i_full["iterations"], (i_fast, i_full)
    # output pixels carry ~1/4 of an LR pixel's flux: compare with the noise per output pixel
    assert np.sqrt(np.mean((fast - full) ** 2)) < 0.05 * sigma / 4
    # the data's total flux is known to sigma sqrt(n): the two totals agree to a tenth of that
    assert abs(fast.sum() - full.sum()) < 0.1 * sigma * np.sqrt(lr.size)
    for bad in (-1.0, float("nan")):
        with pytest.raises(AstroSRError, match="noise_tol"):
            J.project_flux_exact(bic, target, scale=2, psf=psf, noise_tol=bad)


@pytest.mark.parametrize("cap", [False, True])
def test_the_filter_in_the_info_is_the_one_the_target_used(cap):
    """``info["filter"]`` reapplied to the residual gives the same target (what the ERR propagates through)."""
    hr, lr, _, bic, psf = _case(3.0, seed=4)
    target, info = J.noise_aware_target(bic, lr, scale=2, psf=psf, sigma=3.0, cap=cap)
    pred = J.forward_model(bic, scale=2, psf=psf)
    again = pred + info["filter"].apply(lr - pred, scale=2, psf=psf)
    np.testing.assert_allclose(again, target, rtol=0, atol=1e-9 * np.abs(target).max())
    assert all(0.0 <= g <= 1.0 for g in info["filter"].gain) and max(info["filter"].gain) > 0
    # the filter depends only on frequency, so it applies to any grid: a constant gets the zero band's gain
    flat = info["filter"].apply(np.ones((31, 31)), scale=2, psf=psf)
    np.testing.assert_allclose(flat, info["filter"].gain[0], atol=1e-12)

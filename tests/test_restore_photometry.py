"""Same-size restoration keeps per-source photometry with default options (issue 20, scale 1).

At scale 1 the exact projection is an exact deconvolution (noise gain 1e4 for a 1-px Gaussian); a real image
whose noise looks "clean" (0.2% of its range) must not be projected exactly, and the noise-aware projection
must not deconvolve the noise into structure (``noise_aware_target(..., cap=True)``).
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_astrosr.core import metrics
from napari_astrosr.core.degrade import degrade
from napari_astrosr.core.simulate import star_field
from napari_astrosr.restoration import restore
from napari_astrosr.restore_options import EXACT_MAX_GAIN, describe_choices, projection_gain, resolve_noise

PSF = "gaussian:1.0"


@pytest.fixture(scope="module")
def field():
    """A noiseless star field (truth), the same blurred by ``PSF`` plus white noise of 0.2% of its range."""
    truth = star_field(96, seed=11, noise="none", sky=0.0, psf="gaussian:0.7", density="medium").image
    truth = truth.astype(np.float64)
    blurred = degrade(truth, scale=1, psf=PSF, noise=None, seed=0).data.astype(np.float64)
    sigma = 0.002 * float(np.percentile(blurred, 99.5) - np.median(blurred))
    noisy = blurred + np.random.default_rng(5).normal(0.0, sigma, blurred.shape)
    return truth, noisy.astype(np.float32)


def _median_rel(truth, img):
    res = metrics.source_residuals(truth, img)
    snr, fref = np.asarray(res["snr"], float), np.asarray(res["f_ref"], float)
    good = np.isfinite(snr) & (snr > 10) & (fref > 0)
    assert good.sum() >= 8, "the field must have enough S/N > 10 sources to judge"
    return float(np.median(np.abs(np.asarray(res["rel_delta"], float))[good]))


def test_gain_rules_out_the_exact_choice_at_scale_1(field):
    _, noisy = field
    g1 = projection_gain(noisy.shape, scale=1, psf=PSF)
    g2 = projection_gain(noisy.shape, scale=2, psf=PSF)
    assert g1 > EXACT_MAX_GAIN > g2 > 1.0
    assert resolve_noise(noisy).mode == "exact"  # 0.2% of the range: clean by the noise level alone
    choice = resolve_noise(noisy, gain=g1)
    assert choice.mode == "noise-aware" and "amplify" in choice.source
    assert resolve_noise(noisy, gain=g2).mode == "exact"
    assert resolve_noise(noisy, "exact", gain=g1).mode == "exact"  # asked for: kept
    noiseless = np.zeros((64, 64), np.float32)
    noiseless[30:34, 30:34] = 1.0
    assert resolve_noise(noiseless, gain=float("inf")).mode == "exact"  # nothing to amplify


def test_default_scale_1_projection_keeps_photometry(field):
    truth, noisy = field
    before = _median_rel(truth, noisy)
    default = restore(noisy, method="backprojection", scale=1, psf=PSF, device="cpu")
    assert default.params["projection"] == "noise-aware"
    assert "an exact projection would amplify it" in describe_choices(default.params)  # the CLI / widget line
    after = _median_rel(truth, default.data)
    assert after <= before, (after, before)  # the default at least keeps the input's photometry
    # total flux is the data's to within the noise
    n_sigma = 0.002 * float(np.percentile(noisy, 99.5) - np.median(noisy)) * np.sqrt(noisy.size)
    assert abs(float(default.data.sum()) - float(noisy.sum())) < 5 * n_sigma


def test_cap_keeps_the_noise_at_its_own_level():
    """At scale 1 the damped noise-aware solve alone deconvolves what the Wiener gain lets through (up to
    ~16x); with ``cap`` no frequency reaches the output above its amplitude in the data, so the sky's noise
    stays below the input's while a flux error of the method (a source 20% too faint) is still corrected."""
    from napari_astrosr.core.projection import NOISE_DAMPING, forward_model, noise_aware_target, project_flux_exact
    from napari_astrosr.core.psf import parse_psf

    psf = parse_psf("gaussian:2.0")
    yy, xx = np.mgrid[:96, :96]
    truth = 400.0 * np.exp(-((yy - 48) ** 2 + (xx - 48) ** 2) / 18.0)
    lr = forward_model(truth, scale=1, psf=psf)
    sigma = 1.0
    data = lr + np.random.default_rng(4).normal(0.0, sigma, lr.shape)
    start = 0.8 * lr  # the method's output: blurred, and 20% of the source's flux lost
    ap = ((yy - 48) ** 2 + (xx - 48) ** 2) < 15**2
    sky = ~ap
    rms, flux = {}, {}
    for cap in (False, True):
        t, _ = noise_aware_target(start, data, scale=1, psf=psf, sigma=sigma, cap=cap)
        out = project_flux_exact(start, t, scale=1, psf=psf, damping=NOISE_DAMPING)
        rms[cap] = float(np.std(out[sky]))
        flux[cap] = float(out[ap].sum() / truth[ap].sum())
    assert rms[True] < 0.6 * rms[False] and rms[True] < sigma, rms
    assert abs(flux[True] - 1.0) < 0.02, flux


@pytest.fixture(scope="module")
def field_x4():
    """A noiseless star field (truth) degraded the STAR way at x4 (``PSF``, block sum), plus white noise of 1% of
    the LR robust range."""
    truth = star_field(128, seed=21, noise="none", sky=0.0, psf="gaussian:0.6", density="medium").image
    truth = truth.astype(np.float64)
    lr = degrade(truth, scale=4, psf=PSF, noise=None, seed=0).data.astype(np.float64)
    sigma = 0.01 * float(np.percentile(lr, 99.5) - np.median(lr))
    return truth, (lr + np.random.default_rng(3).normal(0.0, sigma, lr.shape)).astype(np.float32)


def test_x4_rule_is_exact_on_noisy_data_within_its_cap(field_x4):
    from napari_astrosr.restore_options import EXACT_MAX_PASSED_NOISE_X4

    _, lr = field_x4
    g4 = projection_gain(lr.shape, scale=4, psf=PSF)
    assert resolve_noise(lr, gain=g4).mode == "noise-aware"  # 1% of the range: noisy by the level alone
    choice = resolve_noise(lr, gain=g4, scale=4)
    assert choice.mode == "exact" and "exact at x4" in choice.source
    g2 = projection_gain(lr.shape, scale=2, psf=PSF)
    assert resolve_noise(lr, gain=g2, scale=2).mode == "noise-aware"  # x2 keeps the noise-level rule
    # noise whose exact projection would pass on more than the cap: noise-aware again
    span = float(np.percentile(lr, 99.5) - np.median(lr))
    loud = lr + np.random.default_rng(4).normal(0.0, 1.5 * EXACT_MAX_PASSED_NOISE_X4 / g4 * span, lr.shape)
    assert resolve_noise(loud.astype(np.float32), gain=g4, scale=4).mode == "noise-aware"


def test_x4_default_beats_the_noise_aware_projection_per_source(field_x4):
    """Why the x4 rule exists (benchmarks/projection_rule.py): on noisy x4 data the exact projection of a network's
    output keeps per-source flux better than the noise-aware one. The default must pick it and be no worse."""
    truth, lr = field_x4
    default = restore(lr, method="fisr", scale=4, psf=PSF, device="cpu")
    assert default.params["projection"] == "exact"
    assert "projection exact (x4: noise x its gain" in describe_choices(default.params)  # the CLI / widget line
    measured = resolve_noise(lr).sigma
    noise_aware = restore(lr, method="fisr", scale=4, psf=PSF, device="cpu", flux_noise=measured)
    assert noise_aware.params["projection"] == "noise-aware"
    d, n = _median_rel(truth, default.data), _median_rel(truth, noise_aware.data)
    assert d <= n, (d, n)
    # the exact projection reproduces the data: every LR pixel's flux is kept
    from napari_astrosr.core.projection import forward_model
    from napari_astrosr.core.psf import parse_psf

    back = forward_model(default.data.astype(np.float64), scale=4, psf=parse_psf(PSF))
    assert np.max(np.abs(back - lr)) < 1e-3 * float(np.max(lr))

"""restoration.restore: classical baselines, networks via checkpoints, flux, WCS, errors."""

from __future__ import annotations

import numpy as np
import pytest

from napari_astrosr.exceptions import AstroSRError, StoppedError
from napari_astrosr.progress import StopFlag
from napari_astrosr.restoration import METHODS, list_methods, restore, restore_job


def _hr_field(rng, shape=(64, 64), n=12):
    """Seeded HR star field (flux per pixel) on a sky of 5."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    img = np.full(shape, 5.0)
    for _ in range(n):
        y0, x0 = rng.uniform(4, shape[0] - 4), rng.uniform(4, shape[1] - 4)
        f, s = rng.uniform(200, 3000), rng.uniform(0.6, 1.2)
        img += f * np.exp(-((yy - y0) ** 2 + (xx - x0) ** 2) / (2 * s * s)) / (2 * np.pi * s * s)
    return img


def _lr(rng, psf_sigma=1.0, scale=2, shape=(64, 64)):
    from napari_astrosr.core.projection import forward_model
    from napari_astrosr.core.psf import gaussian_psf

    hr = _hr_field(rng, shape)
    return hr, forward_model(hr, scale=scale, psf=gaussian_psf(psf_sigma)).astype(np.float32)


@pytest.fixture
def ckpt(tmp_path):
    """Tiny untrained checkpoints written through the real save path."""
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    from napari_astrosr.models.checkpoints import save_checkpoint
    from napari_astrosr.models.registry import build_model, resolve_config

    def make(name, scale=2, normalization=None):
        torch.manual_seed(0)
        cfg = resolve_config(name, preset="tiny")
        m = build_model(name, preset=None, scale=scale, **cfg)
        return save_checkpoint(
            tmp_path / f"{name}_x{scale}.pt",
            m,
            name=name,
            preset="tiny",
            scale=scale,
            config=cfg,
            normalization=normalization or {"kind": "median_std"},
        )

    return make


@pytest.mark.parametrize("method", ["bicubic", "lanczos"])
def test_interpolation_conserves_flux_per_pixel(rng, method):
    from napari_astrosr.core.resample import block_sum

    _, lr = _lr(rng)
    r = restore(lr, method=method, scale=2)
    assert r.data.shape == (64, 64) and r.device == "cpu"
    np.testing.assert_allclose(block_sum(r.data, 2), lr, rtol=1e-5, atol=1e-5 * lr.max())


def test_richardson_lucy_total_flux_and_sharpening(rng):
    _, lr = _lr(rng)
    r = restore(lr, method="richardson-lucy", scale=2, psf="gaussian:1.0", iterations=20)
    assert np.isclose(r.data.sum(), lr.sum(), rtol=1e-5)
    bic = restore(lr, method="bicubic", scale=2)
    assert r.data.max() > 1.1 * bic.data.max()  # deconvolution sharpens the stars


def test_backprojection_reproduces_input_through_forward_model(rng):
    from napari_astrosr.core.metrics import psnr  # noqa: F401  (only if present)
    from napari_astrosr.core.projection import forward_model
    from napari_astrosr.core.psf import gaussian_psf

    hr, lr = _lr(rng)
    r = restore(lr, method="backprojection", scale=2, psf="gaussian:1.0")
    fm = forward_model(r.data.astype(np.float64), scale=2, psf=gaussian_psf(1.0))
    inner = (slice(4, -4), slice(4, -4))
    assert np.max(np.abs(fm - lr)[inner]) / np.abs(lr).max() < 1e-5
    bic = restore(lr, method="bicubic", scale=2)
    assert np.mean((r.data - hr) ** 2) < np.mean((bic.data - hr) ** 2)


def test_network_with_flux_exact_reproduces_input(rng, ckpt):
    from napari_astrosr.core.projection import forward_model
    from napari_astrosr.core.psf import gaussian_psf

    _, lr = _lr(rng)
    p = ckpt("restormer")
    r = restore(lr, method="restormer", scale=2, model=p, flux_exact=True, psf="gaussian:1.0")
    assert r.data.shape == (64, 64)
    fm = forward_model(r.data.astype(np.float64), scale=2, psf=gaussian_psf(1.0))
    inner = (slice(3, -3), slice(3, -3))
    assert np.max(np.abs(fm - lr)[inner]) / np.abs(lr).max() < 1e-5
    assert r.checkpoint_hash and r.header["ASRMETH"] == "restormer"
    assert "projection" in r.timings and r.params["flux_exact"] is True


@pytest.mark.parametrize("name", ["fisr", "pix2wgan", "pix2wgan-cascade"])
def test_each_network_runs_odd_sizes_through_restore(rng, ckpt, name):
    lr = _hr_field(rng, (23, 37)).astype(np.float32)
    r = restore(lr, method=name, scale=2, model=ckpt(name), tile=16, overlap=4, project=False)  # the network alone
    assert r.data.shape == (46, 74) and np.isfinite(r.data).all()
    assert r.params["tiles"] > 1 and r.device == "cpu"


def test_nan_regions_and_wcs(rng):
    from napari_astrosr.core.resample import pixel_wcs

    _, lr = _lr(rng)
    lr[10:14, 3:6] = np.nan
    w = pixel_wcs(lr.shape, pixel_scale_arcsec=0.06)
    r = restore(lr, method="bicubic", scale=2, wcs=w)
    assert np.isnan(r.data[20:28, 6:12]).all() and np.isfinite(r.data).sum() == r.data.size - 48
    assert np.allclose(np.abs(r.wcs.wcs.cdelt), 0.03 / 3600)
    ra0, dec0 = w.pixel_to_world_values(10.0, 20.0)
    ra1, dec1 = r.wcs.pixel_to_world_values(10.0 * 2 + 0.5, 20.0 * 2 + 0.5)
    assert abs(ra0 - ra1) < 1e-9 and abs(dec0 - dec1) < 1e-9


def test_clear_errors(rng, ckpt):
    _, lr = _lr(rng)
    with pytest.raises(AstroSRError, match="2-D"):
        restore(np.stack([lr, lr]), method="bicubic")
    with pytest.raises(AstroSRError, match="too small"):
        restore(lr[:4, :4], method="bicubic")
    with pytest.raises(AstroSRError, match="NaN"):
        restore(np.full((16, 16), np.nan), method="bicubic")
    with pytest.raises(AstroSRError, match="unknown"):
        restore(lr, method="magic")
    with pytest.raises(AstroSRError, match="needs --psf"):
        restore(lr, method="backprojection")
    with pytest.raises(AstroSRError, match="--flux-exact needs --psf"):
        restore(lr, method="bicubic", flux_exact=True)
    # restormer x3 has no bundled checkpoint (fisr x2/x4, restormer x1/x2/x4 and pix2wgan x1 do)
    with pytest.raises(AstroSRError, match="no bundled weights for restormer x3"):
        restore(lr, method="restormer", scale=3)
    p = ckpt("restormer", scale=2)
    with pytest.raises(AstroSRError, match="trained for x2, not x3"):
        restore(lr, method="restormer", scale=3, model=p)
    with pytest.raises(AstroSRError, match="restormer checkpoint, not pix2wgan"):
        restore(lr, method="pix2wgan", scale=2, model=p)


def test_stop_ends_network_run(rng, ckpt):
    lr = _hr_field(rng, (64, 64)).astype(np.float32)
    flag = StopFlag()
    job = restore_job(
        lr, method="restormer", scale=2, model=ckpt("restormer"), tile=16, overlap=4, stop=flag, project=False
    )
    ev = next(job)
    while "tile" not in ev.message:
        ev = next(job)
    flag.set()
    with pytest.raises(StoppedError):
        next(job)


def test_list_methods_describes_everything():
    ms = {m["name"]: m for m in list_methods(costs=False)}
    assert set(ms) == set(METHODS)
    assert all(m["flux"] for m in ms.values())
    assert ms["fisr"]["kind"] == "network" and ms["fisr"]["scales"] == [2, 4]


def test_stop_during_backprojection_ends_within_a_second(rng):
    # a 512^2 input (1024^2 output) takes several seconds to project; Stop must end it mid-CG
    import threading
    import time

    from napari_astrosr.core.projection import forward_model
    from napari_astrosr.core.psf import gaussian_psf

    hr = _hr_field(rng, shape=(1024, 1024), n=40)
    lr = forward_model(hr, scale=2, psf=gaussian_psf(1.0)).astype(np.float32)
    flag = StopFlag()
    events, outcome = [], {}

    def worker():
        job = restore_job(lr, method="backprojection", scale=2, psf="gaussian:1.0", stop=flag)
        try:
            for ev in job:
                events.append(ev)
        except StoppedError as e:
            outcome["stopped"] = e
        outcome["t_end"] = time.perf_counter()

    th = threading.Thread(target=worker)
    th.start()
    t0 = time.perf_counter()
    while not any("CG iteration" in e.message for e in events) and time.perf_counter() - t0 < 60:
        time.sleep(0.01)
    assert any("CG iteration" in e.message for e in events), "no projection progress events"
    t_req = time.perf_counter()
    flag.set()
    th.join(30)
    assert "stopped" in outcome, "the job finished instead of stopping"
    assert outcome["t_end"] - t_req < 1.0


def test_bundled_pix2wgan_with_flux_noise_on_a_ground_like_psf():
    """Scale 1 with a wide (ground-based-like) PSF: the noise-aware projection of the bundled Pix2WGAN output
    improves on the input; the exact projection there deconvolves the noise, and restore says so."""
    from napari_astrosr.core.projection import forward_model
    from napari_astrosr.core.psf import gaussian_psf
    from napari_astrosr.core.simulate import sersic_galaxies
    from napari_astrosr.exceptions import AstroSRWarning
    from napari_astrosr.models.checkpoints import bundled_checkpoint

    if bundled_checkpoint("pix2wgan", 1) is None:
        pytest.skip("no bundled pix2wgan weights")
    hr = sersic_galaxies((96, 96), seed=3, noise="none", sky=0.0).image.astype(np.float64)
    psf = gaussian_psf(3.0)
    clean = forward_model(hr, scale=1, psf=psf)
    lr = (clean + np.random.default_rng(4).normal(0, 0.02 * np.percentile(clean, 99.5), clean.shape)).astype(np.float32)
    err = lambda x: float(np.sqrt(np.mean((x - hr) ** 2)))  # noqa: E731
    aware = restore(lr, method="pix2wgan", scale=1, psf=psf, flux_exact=True, flux_noise="auto").data
    assert err(aware) < err(lr), (err(aware), err(lr))
    assert aware.sum() == pytest.approx(lr.sum(), rel=0.02)
    with pytest.warns(AstroSRWarning, match="amplifies noise"):
        exact = restore(lr, method="pix2wgan", scale=1, psf=psf, flux_exact=True, flux_noise="exact").data
    assert err(exact) > err(aware)


def test_flux_noise_says_when_it_kept_nothing_of_the_residual():
    """A noise sigma above every band of the data residual leaves the output as the method made it; restore
    warns instead of silently returning an uncorrected image. A sigma below the residual does not warn."""
    import warnings

    from napari_astrosr.core.degrade import degrade
    from napari_astrosr.core.simulate import sersic_galaxies
    from napari_astrosr.exceptions import AstroSRWarning

    hr = sersic_galaxies((96, 96), seed=5, noise="none", sky=0.0).image.astype(np.float64)
    lr = degrade(hr, scale=2, psf="gaussian:1.0", noise=None, seed=1).data.astype(np.float32)
    bic = restore(lr, method="bicubic", scale=2).data
    with pytest.warns(AstroSRWarning, match="no part of the data residual rises above the noise sigma") as rec:
        out = restore(lr, method="backprojection", scale=2, psf="gaussian:1.0", flux_noise=1e3 * float(lr.max()))
    assert "given with --flux-noise" in str(rec[0].message)
    assert out.params["flux_noise_power_kept"] < 0.01
    np.testing.assert_allclose(out.data, bic, atol=1e-3 * float(np.abs(bic).max()))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        fitted = restore(lr, method="backprojection", scale=2, psf="gaussian:1.0", flux_noise=1e-6 * float(lr.max()))
    assert not [x for x in w if "no part of the data residual" in str(x.message)]
    assert fitted.params["flux_noise_power_kept"] > 0.5


def test_flux_noise_auto_on_a_real_galaxy_crop_says_it_kept_nothing():
    """Measured on the held-out COSMOS crop (docs/results_flux_noise_variants.md): the image's own correlated
    noise sets sep's rms and no band of the residual rises above it; restore says so and what to do."""
    from napari_astrosr.core.degrade import degrade
    from napari_astrosr.core.fits_io import read_fits
    from napari_astrosr.exceptions import AstroSRWarning

    from conftest import shared_file

    img = np.nan_to_num(
        read_fits(shared_file("hst_cosmos_acs_f814w_galaxy/147246.0_150.416558_1.998697_masknoise.fits")).data
    ).astype(np.float64)
    cy, cx = img.shape[0] // 2, img.shape[1] // 2
    hr = img[cy - 64 : cy + 64, cx - 64 : cx + 64]
    lr = degrade(hr, scale=2, psf="gaussian:1.0", noise=None, seed=1).data.astype(np.float32)
    with pytest.warns(AstroSRWarning, match="no part of the data residual.*sep's background rms"):
        restore(lr, method="backprojection", scale=2, psf="gaussian:1.0", flux_noise="auto")


def _noisy_lr(rng, sigma=2.0):
    _, lr = _lr(rng, shape=(96, 96))
    return (lr + rng.normal(0, sigma, lr.shape)).astype(np.float32)


@pytest.mark.parametrize("name", ["fisr", "restormer"])
def test_keep_sky_keeps_the_upsampled_input_in_the_sky_and_the_network_on_sources(rng, ckpt, name):
    from napari_astrosr.core.resample import upsample

    lr = _noisy_lr(rng)
    p = ckpt(name)
    # the network alone (no projection, no gate) against the gate alone: both opt-outs of the defaults
    plain = restore(lr, method=name, scale=2, model=p, project=False, keep_sky=False)
    gated = restore(lr, method=name, scale=2, model=p, keep_sky=True, project=False)
    base = upsample(lr.astype(np.float64), 2, method="bicubic")
    at_base = np.isclose(gated.data, base, rtol=0, atol=1e-4 * float(np.abs(base).max()))
    at_net = np.isclose(gated.data, plain.data, rtol=0, atol=1e-4 * float(np.abs(base).max()))
    assert at_base.mean() > 0.3 and at_net.mean() > 0.02  # sky from the data, sources from the network
    peak = np.unravel_index(np.argmax(base), base.shape)
    assert at_net[peak]
    assert gated.params["keep_sky"] == [2.0, 5.0] and 0 < gated.params["keep_sky_network_fraction"] < 1
    assert "keep_sky" in gated.timings
    # levels given as text; a projection after the gate still reproduces the input's total flux
    proj = restore(
        lr, method=name, scale=2, model=p, keep_sky="1,3", psf="gaussian:1.0", flux_exact=True, flux_noise="exact"
    )
    assert proj.params["keep_sky"] == [1.0, 3.0]
    assert proj.data.sum() == pytest.approx(float(lr.sum()), rel=1e-4)


def test_keep_sky_errors_name_the_option(rng, ckpt):
    lr = _noisy_lr(rng)
    with pytest.raises(AstroSRError, match="--keep-sky applies to the networks"):
        restore(lr, method="backprojection", scale=2, psf="gaussian:1.0", keep_sky=True)
    with pytest.raises(AstroSRError, match="--keep-sky"):
        restore(lr, method="restormer", scale=2, model=ckpt("restormer"), keep_sky="5,1")


def test_keep_sky_removes_the_background_bias_on_a_real_galaxy(rng):
    """Measured on the held-out COSMOS galaxy (docs/results_keep_sky.md): the bundled Restormer
    keeps the sky's mean but skews its distribution, so sep's (mode) background on its output drops and the
    galaxies' aperture fluxes come out ~3.6% high; with the sky gate they are within 1%."""
    pytest.importorskip("torch")
    from napari_astrosr.core import metrics
    from napari_astrosr.core.degrade import degrade
    from napari_astrosr.core.fits_io import read_fits

    from conftest import shared_file

    img = np.nan_to_num(
        read_fits(shared_file("hst_cosmos_acs_f814w_galaxy/147246.0_150.416558_1.998697_masknoise.fits")).data
    ).astype(np.float64)
    cy, cx = img.shape[0] // 2, img.shape[1] // 2
    hr = img[cy - 128 : cy + 128, cx - 128 : cx + 128]
    lr = degrade(hr, scale=2, psf="gaussian:1.0", noise=None, seed=1).data
    sigma = 0.01 * float(np.percentile(lr, 99.5) - np.median(lr))  # the quality benchmark's noise
    lr = (lr + np.random.default_rng(2).normal(0, sigma, lr.shape)).astype(np.float32)

    def rel(out):
        res = metrics.source_residuals(hr, out)
        return np.abs(np.asarray(res["rel_delta"], float)[np.asarray(res["snr"], float) > 10])

    plain = rel(restore(lr, method="restormer", scale=2, project=False, keep_sky=False).data)
    gated = rel(restore(lr, method="restormer", scale=2, keep_sky=True, project=False).data)
    assert plain.size >= 2 and plain.min() > 0.025
    assert gated.max() < 0.01


def test_bundled_restormer_x1_deconvolves_a_real_crop_keeping_flux():
    """Park et al.'s same-size case with the bundled x1 weights: a held-out real HST crop blurred on its own grid,
    restored with default options and the true PSF, keeps its total flux and comes closer to the sharp crop."""
    from napari_astrosr.core.degrade import degrade
    from napari_astrosr.core.fits_io import read_fits
    from napari_astrosr.models.checkpoints import bundled_checkpoint

    from conftest import shared_file

    assert bundled_checkpoint("restormer", 1) is not None  # shipped in weights/
    p = shared_file("hst_wfc3ir_f105w_a2744/abell_2744_dwarf_galaxy_f105w.fits.gz")  # held out of training
    hr = np.nan_to_num(read_fits(p).data).astype(np.float64)[68:132, 68:132]
    lr = degrade(hr, scale=1, psf="gaussian:1.5").data.astype(np.float32)
    r = restore(lr, method="restormer", scale=1, psf="gaussian:1.5", device="cpu", threads=1)
    assert r.data.shape == lr.shape and r.params["projection"] != "off"
    # the projection reproduces the input through the blur (above the noise here: real HST noise is measured)
    assert float(r.data.sum()) == pytest.approx(float(lr.sum()), rel=2e-3)
    err = lambda x: float(np.sqrt(np.mean((x - hr) ** 2)))  # noqa: E731
    assert err(r.data) < err(lr), (err(r.data), err(lr))


def test_scale1_without_psf_says_why_it_does_not_project(rng):
    """At scale 1 only a given blur defines the forward model: the default skips the projection and says so."""
    from napari_astrosr.restore_options import describe_choices

    img = rng.normal(10.0, 1.0, (48, 48)).astype(np.float32)
    r = restore(img, method="restormer", scale=1, device="cpu", threads=1)
    assert r.params["projection"] == "off"
    assert "no projection (scale 1 needs --psf" in describe_choices(r.params)
    # an explicit opt-out is not explained as a missing PSF
    r = restore(img, method="restormer", scale=1, psf="gaussian:1.0", project=False, device="cpu", threads=1)
    assert describe_choices(r.params).startswith("no projection;") or describe_choices(r.params) == "no projection"

"""The device-resident training path (run on CPU): same batches, batched projection, realistic skies, records."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_astrosr.config import config_from_dict
from napari_astrosr.progress import StopFlag, run
from napari_astrosr.training import physics, skies
from napari_astrosr.training.data import DevicePool, PatchPool
from napari_astrosr.training.loop import train_job


def _pool(n=12, p=8, s=2, seed=0):
    rng = np.random.default_rng(seed)
    f = lambda *sh: rng.normal(size=sh).astype(np.float32)
    return PatchPool(
        x=f(n, 1, p, p),
        y=f(n, 1, p * s, p * s),
        fmap_in=f(n, 1, p, p),
        fmap_hr=f(n, 1, p * s, p * s),
        med=f(n, 1, 1, 1),
        std=np.abs(f(n, 1, 1, 1)) + 1,
        weight=rng.random(n) + 0.1,
        names=["a"],
        psf_id=rng.integers(0, 3, n),
        clean=rng.random(n) < 0.5,
    )


@pytest.mark.parametrize("gain", [None, (0.5, 20.0)])
def test_device_pool_draws_the_same_batches_as_the_host_pool(gain):
    pool = _pool()
    dp = DevicePool(pool, "cpu")
    for k in range(6):
        a = pool.sample(5, np.random.default_rng([1, k]), gain=gain)
        b = dp.sample(5, np.random.default_rng([1, k]), gain=gain)
        assert a["rot90"] == b["rot90"] and a["flip"] == b["flip"]
        for key in ("x", "y", "fmap_in", "fmap_hr"):
            assert np.array_equal(a[key], b[key].numpy()), key
        for key in ("psf_id", "clean", "std") + (("gain",) if gain else ()):
            assert np.array_equal(a[key], b[key]), key


def test_batched_projection_matches_the_per_sample_solve():
    from napari_astrosr.core.psf import gaussian_airy_psf, gaussian_psf

    bank = physics.psf_bank([gaussian_psf(1.0), gaussian_airy_psf(0.8, 1.5), gaussian_psf(1.7)])
    proj = physics.DirectProjector(bank, 2, (8, 8))
    g = torch.Generator().manual_seed(0)
    y = torch.rand(5, 1, 16, 16, generator=g)
    x = torch.rand(5, 1, 8, 8, generator=g)
    ids = [2, 0, 1, 0, 2]
    for rot, flip in ((0, False), (1, True), (3, False)):
        out = proj.project(y, x, ids, rot90=rot, flip=flip)
        # reference: the former per-sample loop, one mat-vec per sample with its own inverse
        psf = torch.rot90(bank[ids], rot, dims=(-2, -1))
        psf = torch.flip(psf, dims=(-1,)) if flip else psf
        r = x - physics.forward(y, psf, 2)
        r = torch.rot90(torch.flip(r, dims=(-1,)) if flip else r, -rot, dims=(-2, -1))
        v = torch.stack([proj.inverse(i) @ r[j].reshape(-1) for j, i in enumerate(ids)]).reshape(5, 1, 8, 8)
        v = torch.rot90(v, rot, dims=(-2, -1))
        ref = y + physics.adjoint(torch.flip(v, dims=(-1,)) if flip else v, psf, 2)
        assert torch.allclose(out, ref, atol=1e-5), (rot, flip, (out - ref).abs().max())
        # and it is a projection: the blurred block means of the output are the observation
        assert torch.allclose(physics.forward(out, psf, 2), x, atol=2e-3)


def test_stamp_bank_and_skies_are_seeded_and_keep_flux(monkeypatch, tmp_path):
    monkeypatch.delenv("ASTROSR_STAMP_BANK", raising=False)
    a = skies.stamp_bank(16, seed=3, renderer="numpy", cache=False)
    b = skies.stamp_bank(16, seed=3, renderer="numpy", cache=False)
    c = skies.stamp_bank(16, seed=4, renderer="numpy", cache=False)
    assert np.array_equal(a.stamps, b.stamps) and not np.array_equal(a.stamps, c.stamps)
    # every stamp carries unit flux after the float16 storage (its scale absorbs the rounding)
    assert np.allclose([a.stamp(i).sum() for i in range(len(a))], 1.0, atol=1e-5)
    one = skies.sky_image((96, 96), np.random.default_rng(7), a)
    two = skies.sky_image((96, 96), np.random.default_rng(7), a)
    other = skies.sky_image((96, 96), np.random.default_rng(8), a)
    assert np.array_equal(one, two) and not np.array_equal(one, other)
    assert one.min() >= -1e-6 * one.max() and one.sum() > 0  # FFT round-off only
    # flux: one galaxy placed well inside the image contributes exactly flux x its unit stamp
    empty = skies.sky_image((128, 128), np.random.default_rng(0), a, star_density=0.0, galaxy_density=0.0)
    assert empty.sum() == 0
    img = np.zeros((128, 128))
    skies._add_stamp(img, a.stamp(5) * 300.0, 64, 64)
    assert img.sum() == pytest.approx(300.0, rel=1e-5)
    # stars only: the rendered total equals the drawn fluxes (bilinear split + unit-sum PSF, away from edges)
    rng = np.random.default_rng(1)
    st = skies.sky_image((128, 128), rng, a, star_density=2e-3, galaxy_density=0.0)
    rng = np.random.default_rng(1)
    rng.poisson(0.0)  # the galaxy count draw (zero density)
    n = int(rng.poisson(2e-3 * 128 * 128))
    rng.uniform(0, 127, n), rng.uniform(0, 127, n)
    f = skies._power_law(rng, n, 20.0, 100000.0)
    assert st.sum() == pytest.approx(f.sum(), rel=0.02)


def test_numpy_bank_cache_roundtrip(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("ASTROSR_STAMP_BANK", raising=False)
    a = skies.stamp_bank(8, seed=1, renderer="numpy")
    files = list((tmp_path / "napari-astrosr").glob("stamps_numpy_8_*.npz"))
    assert len(files) == 1
    monkeypatch.setenv("ASTROSR_STAMP_BANK", str(files[0]))
    b = skies.stamp_bank()  # a bank file named by the environment is used whatever the arguments
    assert b.renderer == "numpy" and np.array_equal(a.stamps, b.stamps)


def test_degradation_of_a_sky_keeps_flux_with_real_psfs_and_noise_models(monkeypatch, tmp_path):
    from napari_astrosr.training import data as D

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("ASTROSR_STAMP_BANK", raising=False)
    monkeypatch.setattr(D, "_BANK", {"bank": skies.stamp_bank(16, seed=0, renderer="numpy", cache=False)})
    cfg = config_from_dict(
        {
            "name": "t",
            "model": {"name": "fisr", "preset": "lite", "scale": 2},
            "data": {
                "scale": 2,
                "patch": 16,
                "psf": {"kind": "random", "family": "mixed"},
                "noise": {
                    "prob": 1.0,
                    "poisson_prob": 0.5,
                    "correlated_prob": 0.5,
                    "sigma_rel_min": 0.01,
                    "sigma_rel_max": 0.02,
                },
                "sources": [{"kind": "simulate", "simulate": "sky", "count": 1, "size": 96}],
            },
        }
    )
    hr = D._simulate(cfg.data.sources[0], 5)
    from napari_astrosr.core.degrade import degrade

    rng = np.random.default_rng(0)
    _, params, psf = D._degrade_pair(hr, cfg, tmp_path, rng)
    clean = np.asarray(degrade(hr, scale=2, psf=psf, noise=None).data)
    # noiseless: the block sum of the degraded image is the blurred HR (flux kept)
    assert clean.sum() == pytest.approx(hr.sum(), rel=1e-4)
    assert params["noise_kind"] in ("poisson", "correlated") and params["noise_sigma"] > 0
    base = np.zeros((256, 256), np.float32)
    base[100:110, 100:110] = 50.0
    for kind in ("poisson", "correlated", "gaussian"):
        nz = D._noise(base, 1.0, kind, np.random.default_rng(3))
        # zero mean (noise adds no flux on average: 4 sigma of the mean of 65k correlated pixels); sigma as asked
        assert abs(nz.mean()) < 0.04, kind
        assert nz[base == 0].std() == pytest.approx(1.0, rel=0.05), kind
    # Poisson: sources get their own shot noise on top of the sky's
    nz = D._noise(base, 1.0, "poisson", np.random.default_rng(3))
    assert nz[base > 0].std() > 1.5


def _sky_cfg(**run):
    return config_from_dict(
        {
            "name": "sky",
            "model": {"name": "fisr", "preset": "lite", "scale": 2},
            "data": {
                "scale": 2,
                "patch": 8,
                "stride": 8,
                "max_patches": 64,
                "gain_augment": [0.5, 4.0],
                "psf": {"kind": "random", "family": "mixed"},
                "noise": {"prob": 0.5, "poisson_prob": 0.5, "sigma_rel_min": 0.01, "sigma_rel_max": 0.02},
                "sources": [{"kind": "simulate", "simulate": "sky", "count": 2, "size": 64}],
            },
            "loss": {"projection_weight": 1.0, "projection_margin": 3, "gain_invariant": True},
            "optim": {"warmup_steps": 0},
            "run": {
                "steps": 6,
                "batch_size": 4,
                "val_every": 1000,
                "checkpoint_every": 3,
                "log_every": 1,
                "threads": 1,
                "val_images": 1,
                "seed": 2,
                **run,
            },
        }
    )


def test_sky_training_resumes_exactly_and_records_hardware_and_cost(monkeypatch, tmp_path):
    from napari_astrosr.training import data as D

    monkeypatch.setattr(D, "_BANK", {"bank": skies.stamp_bank(16, seed=0, renderer="numpy", cache=False)})
    cfg = _sky_cfg()
    ref = run(train_job(cfg, out_dir=tmp_path / "ref"))
    stop = StopFlag()
    run(train_job(cfg, out_dir=tmp_path / "cut", stop=stop), on_progress=lambda e: e.step >= 3 and stop.set())
    ck = run(train_job(cfg, out_dir=tmp_path / "cut", resume=True))
    a = torch.load(ref, weights_only=True)["model"]
    b = torch.load(ck, weights_only=True)["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    meta = json.loads(ref.with_suffix(".json").read_text())
    assert set(meta["cost"]) == {"params", "flops", "flops_input"} and meta["cost"]["flops_input"] == "64x64"
    assert meta["cost"]["params"] == meta["training"]["params"] > 0 and meta["cost"]["flops"] > 0
    t = meta["training"]
    assert t["device"] == "cpu" and t["hardware"].startswith("cpu") and t["steps"] == 6 and t["wall_time_s"] > 0
    assert "sky" in t["data"]["train_images"]
    assert all(v.device.type == "cpu" for v in a.values())


def test_half_precision_export_halves_the_file_and_loads(tmp_path):
    from napari_astrosr.models.checkpoints import load_checkpoint, save_checkpoint
    from napari_astrosr.models.registry import build_model

    m = build_model("fisr", preset="lite", scale=2)
    from napari_astrosr.models.registry import resolve_config

    kw = {
        "name": "fisr",
        "preset": "lite",
        "scale": 2,
        "config": resolve_config("fisr", preset="lite"),
        "normalization": {"kind": "median_std"},
    }
    full = save_checkpoint(tmp_path / "f.pt", m, **kw)
    half = save_checkpoint(tmp_path / "h.pt", m, half=True, **kw)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    m2, _ = load_checkpoint(half)
    for (k, v), v2 in zip(m.state_dict().items(), m2.state_dict().values()):
        assert v2.dtype == v.dtype and torch.allclose(v, v2, rtol=1e-3, atol=1e-4), k


def test_fft_correlation_equals_the_grouped_convolution(monkeypatch):
    """PSFs are applied by FFT (CUDA, and CPU from 11 px); it must be the same operator as conv2d (and its adjoint)."""
    from napari_astrosr.core.psf import gaussian_airy_psf

    monkeypatch.setattr(physics, "FFT_MIN_KERNEL_CPU", 10**9)  # the reference: the direct convolution

    g = torch.Generator().manual_seed(1)
    y = torch.rand(4, 1, 20, 24, generator=g)
    psf = physics.psf_bank([gaussian_airy_psf(s, 1.5 * s) for s in (0.7, 1.0, 1.5, 2.2)], size=11)
    for p in (psf, psf[:1]):
        ref = physics.blur(y, p)  # CPU tensors: the conv2d path
        assert torch.allclose(physics.fft_correlate(y, p), ref, atol=1e-6)
        refa = physics.blur_adjoint(y, p)
        assert torch.allclose(physics.fft_correlate(y, torch.flip(p, dims=(-2, -1))), refa, atol=1e-6)

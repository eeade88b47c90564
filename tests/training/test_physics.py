"""The torch forward model and differentiable flux-exact projection used by the projected training loss."""

from __future__ import annotations

import csv

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_astrosr.core.degrade import random_star_psf  # noqa: E402
from napari_astrosr.core.projection import ForwardModel  # noqa: E402
from napari_astrosr.core.psf import gaussian_psf  # noqa: E402
from napari_astrosr.training import physics  # noqa: E402


def _bank(n, seed=0):
    rng = np.random.default_rng(seed)
    psfs = [random_star_psf(rng, kind=("gaussian" if i % 2 else "gaussian+airy"))[0] for i in range(n)]
    return physics.psf_bank(psfs), psfs


@pytest.mark.parametrize("scale", [2, 4])
def test_adjoint_is_exact(scale):
    bank, _ = _bank(3)
    g = torch.Generator().manual_seed(0)
    y = torch.randn(3, 1, 16 * scale, 16 * scale, generator=g, dtype=torch.float64)
    z = torch.randn(3, 1, 16, 16, generator=g, dtype=torch.float64)
    b = bank.double()
    lhs = (physics.forward(y, b, scale) * z).sum(dim=(1, 2, 3))
    rhs = (y * physics.adjoint(z, b, scale)).sum(dim=(1, 2, 3))
    assert torch.allclose(lhs, rhs, rtol=1e-10, atol=1e-10)


def test_forward_matches_core_model_inside_the_field():
    """Same operator as core.projection (block *mean* here: surface-brightness units), away from the edges."""
    rng = np.random.default_rng(1)
    psf = gaussian_psf(1.1)
    hr = rng.gamma(2.0, 1.0, (64, 64))
    core_lr = ForwardModel(hr.shape, scale=2, psf=psf).apply(hr) / 4.0
    t = physics.forward(torch.from_numpy(hr)[None, None], physics.psf_bank([psf]).double(), 2)[0, 0].numpy()
    np.testing.assert_allclose(t[4:-4, 4:-4], core_lr[4:-4, 4:-4], rtol=1e-6)


@pytest.mark.parametrize("scale", [2, 4])
def test_projection_reproduces_the_observation_and_is_idempotent(scale):
    bank, _ = _bank(4, seed=2)
    g = torch.Generator().manual_seed(1)
    hr = torch.rand(4, 1, 16 * scale, 16 * scale, generator=g, dtype=torch.float64) ** 4
    b = bank.double()
    x = physics.forward(hr, b, scale)
    guess = torch.nn.functional.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)
    before = (physics.forward(guess, b, scale) - x).norm() / x.norm()
    pj_cg = physics.project(guess, x, b, scale, iterations=300 if scale == 2 else 40)
    proj = physics.DirectProjector(bank, scale, (16, 16))
    pj = proj.project(guess.float(), x.float(), range(4)).double()
    for out in (pj_cg, pj):
        after = (physics.forward(out, b, scale) - x).norm() / x.norm()
        assert before > 1e-2 and after < 1e-4, (float(before), float(after))
        # closer to the truth than the bicubic guess (the projection removes the range-space error)
        assert (out - hr).norm() < (guess - hr).norm()
    # the two solvers agree; projecting an already consistent image changes (almost) nothing
    assert float((pj - pj_cg).abs().max()) < 1e-3 * float(hr.abs().max())
    again = proj.project(hr.float(), x.float(), range(4))
    assert torch.allclose(again.double(), hr, atol=1e-4)


@pytest.mark.parametrize("rot90,flip", [(1, False), (2, True), (3, True)])
def test_direct_projector_handles_augmented_samples(rot90, flip):
    """Rotated/flipped image + equally rotated/flipped PSF: the un-augmented inverse still projects exactly."""
    bank, _ = _bank(2, seed=5)
    g = torch.Generator().manual_seed(2)
    hr = torch.rand(2, 1, 32, 32, generator=g) ** 4
    psf = torch.rot90(bank, rot90, dims=(-2, -1))
    psf = torch.flip(psf, dims=(-1,)) if flip else psf
    x = physics.forward(hr, psf, 2)
    guess = torch.nn.functional.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False)
    pj = physics.DirectProjector(bank, 2, (16, 16)).project(guess, x, [0, 1], rot90=rot90, flip=flip, psf=psf)
    assert float((physics.forward(pj, psf, 2) - x).norm() / x.norm()) < 1e-4


def test_projection_passes_gradients_to_the_prediction():
    bank, _ = _bank(2, seed=3)
    x = torch.rand(2, 1, 12, 12)
    y = torch.rand(2, 1, 24, 24, requires_grad=True)
    target = torch.rand(2, 1, 24, 24)
    loss = (physics.project(y, x, bank, 2) - target).abs().mean()
    loss.backward()
    assert y.grad is not None and torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0


def test_psf_bank_pads_centres_and_normalises():
    bank = physics.psf_bank([gaussian_psf(0.8), None, 2 * gaussian_psf(2.0)])
    assert bank.shape[-1] % 2 == 1 and bank.shape[:2] == (3, 1)
    assert torch.allclose(bank.sum(dim=(1, 2, 3)), torch.ones(3))
    c = bank.shape[-1] // 2
    assert bank[1, 0, c, c] == 1.0  # None = delta
    for k in range(3):
        iy, ix = np.unravel_index(int(bank[k, 0].argmax()), bank.shape[-2:])
        assert (iy, ix) == (c, c)
    with pytest.raises(ValueError, match="odd"):
        physics.psf_bank([np.ones((4, 4))])


def test_projected_loss_trains_and_is_logged(tmp_path):
    """A FISR lite run with the projected term: logged, finite, and it falls."""
    from napari_astrosr.config import config_from_dict
    from napari_astrosr.progress import run
    from napari_astrosr.training.loop import train_job

    cfg = config_from_dict(
        {
            "name": "proj",
            "model": {"name": "fisr", "preset": "lite", "scale": 2, "zero_init_last": True},
            "data": {
                "scale": 2,
                "patch": 16,
                "stride": 8,
                "realizations": 1,
                "max_patches": 64,
                "psf": {"kind": "random", "family": "mixed"},
                "noise": {"prob": 0.0},
                "sources": [{"kind": "simulate", "simulate": "starfield", "count": 2, "size": 96}],
            },
            "loss": {"projection_weight": 1.0},
            "optim": {"lr": 0.003, "warmup_steps": 0, "schedule": "constant"},
            "run": {
                "steps": 40,
                "batch_size": 4,
                "val_every": 1000,
                "checkpoint_every": 1000,
                "log_every": 1,
                "threads": 1,
                "val_images": 1,
                "seed": 0,
            },
        }
    )
    run(train_job(cfg, out_dir=tmp_path / "r"))
    rows = list(csv.DictReader((tmp_path / "r" / "log.csv").read_text().splitlines()))
    proj = np.array([float(r["loss_proj"]) for r in rows if r.get("loss_proj")])
    assert len(proj) >= 30 and np.isfinite(proj).all()
    assert proj[-10:].mean() < proj[:5].mean()


def _proj_cfg(name, model, scale=2):
    from napari_astrosr.config import config_from_dict

    return config_from_dict(
        {
            "name": name,
            "model": model,
            "data": {
                "scale": scale,
                "patch": 16,
                "stride": 8,
                "realizations": 1,
                "max_patches": 32,
                "psf": {"kind": "spec", "spec": "gaussian:1.0"},
                "noise": {"prob": 0.0},
                "sources": [{"kind": "simulate", "simulate": "starfield", "count": 1, "size": 96}],
            },
            "loss": {"projection_weight": 1.0},
            "run": {
                "steps": 3,
                "batch_size": 2,
                "threads": 1,
                "val_images": 1,
                "log_every": 1,
                "val_every": 1000,
                "checkpoint_every": 1000,
            },
        }
    )


def test_projected_loss_on_a_same_size_network(tmp_path):
    """Restormer works on the upsampled grid: the LR observation is the block mean of its input."""
    from napari_astrosr.progress import run
    from napari_astrosr.training.loop import train_job

    cfg = _proj_cfg("proj_same", {"name": "restormer", "preset": "tiny", "scale": 1})
    run(train_job(cfg, out_dir=tmp_path / "r"))
    rows = list(csv.DictReader((tmp_path / "r" / "log.csv").read_text().splitlines()))
    assert [r for r in rows if r.get("loss_proj")] and all(
        np.isfinite(float(r["loss_proj"])) for r in rows if r.get("loss_proj")
    )


def test_projected_loss_refused_without_a_forward_model(tmp_path):
    from napari_astrosr.exceptions import AstroSRError
    from napari_astrosr.progress import run
    from napari_astrosr.training.loop import train_job

    cfg = _proj_cfg("proj1", {"name": "pix2wgan", "preset": "tiny", "scale": 1}, scale=1)
    with pytest.raises(AstroSRError, match="projection_weight"):
        run(train_job(cfg, out_dir=tmp_path / "r"))
    assert not (tmp_path / "r" / "log.csv").exists()  # refused before the log is opened


def test_same_size_block_mean_is_the_lr_observation():
    """The unit bookkeeping the same-size branch relies on: block means of the normalised flux-conserving
    upsampling equal the normalised LR image's forward model of the normalised target (interior)."""
    from napari_astrosr.training.data import build_train_data

    cfg = _proj_cfg("units", {"name": "restormer", "preset": "tiny", "scale": 1})
    d = build_train_data(cfg)
    x = torch.from_numpy(d.train.x)
    y = torch.from_numpy(d.train.y)
    bank = physics.psf_bank(d.psfs)[d.train.psf_id]
    lr = torch.nn.functional.avg_pool2d(x, 2)
    ay = physics.forward(y, bank, 2)
    m = 4
    err = (lr - ay)[..., m:-m, m:-m].abs().max() / lr.abs().max()
    assert float(err) < 1e-3


def test_gain_augment_keeps_pairs_consistent():
    """Amplitude augmentation rescales input, target and flux maps alike: the forward model still holds."""
    from napari_astrosr.config import config_from_dict
    from napari_astrosr.training.data import build_train_data

    cfg = _proj_cfg("gain", {"name": "fisr", "preset": "lite", "scale": 2})
    d = build_train_data(cfg)
    plain = d.train.sample(8, np.random.default_rng(1))
    b = d.train.sample(8, np.random.default_rng(1), gain=(0.5, 20.0))
    g = b["x"].reshape(8, -1)[:, 0] / plain["x"].reshape(8, -1)[:, 0]
    assert np.all((g > 0.5 - 1e-6) & (g < 20 + 1e-6)) and g.std() > 0
    np.testing.assert_allclose(b["y"], plain["y"] * g[:, None, None, None], rtol=1e-5)
    bank = physics.psf_bank(d.psfs)[b["psf_id"]]
    ay = physics.forward(torch.from_numpy(b["y"]), bank, 2)
    err = (ay - torch.from_numpy(b["x"]))[..., 4:-4, 4:-4].abs().max() / float(np.abs(b["x"]).max())
    assert float(err) < 1e-3
    with pytest.raises(Exception, match="gain_augment"):
        config_from_dict(
            {**cfg.model_dump(exclude={"source_path"}), "data": {**cfg.data.model_dump(), "gain_augment": [2, 1]}}
        )


def test_gain_invariant_weights_and_training(tmp_path):
    """loss.gain_invariant: per-sample weights 1/g (mean 1); a short run with it logs finite losses."""
    from napari_astrosr.config import config_from_dict
    from napari_astrosr.progress import run
    from napari_astrosr.training.data import build_train_data
    from napari_astrosr.training.loop import train_job

    cfg = _proj_cfg("gi", {"name": "fisr", "preset": "lite", "scale": 2})
    d = build_train_data(cfg)
    b = d.train.sample(6, np.random.default_rng(2), gain=(0.5, 20.0))
    assert b["gain"].shape == (6,) and np.all((b["gain"] >= 0.5 - 1e-6) & (b["gain"] <= 20 + 1e-6))
    raw = cfg.model_dump(exclude={"source_path"})
    raw["data"]["gain_augment"] = [0.5, 20.0]
    raw["loss"]["gain_invariant"] = True
    cfg2 = config_from_dict(raw)
    run(train_job(cfg2, out_dir=tmp_path / "r"))
    rows = list(csv.DictReader((tmp_path / "r" / "log.csv").read_text().splitlines()))
    assert rows and all(np.isfinite(float(r["loss"])) for r in rows if r.get("loss"))


@pytest.mark.parametrize("scale", [2, 4])
def test_projected_loss_fft_blur_equals_direct(monkeypatch, scale):
    """The projected loss (forward + backward) on the new path (PSF blur by FFT, one product per distinct PSF) equals
    the old path's (direct grouped convolution, gathered bmm) to 1e-5 relative, for PSFs wide enough for the FFT."""
    from napari_astrosr.core.psf import gaussian_airy_psf
    from napari_astrosr.training.losses import pixel_loss

    bank = physics.psf_bank([gaussian_airy_psf(s, 1.5 * s) for s in (0.7, 1.0, 1.4)], size=15)
    assert bank.shape[-1] >= physics.FFT_MIN_KERNEL_CPU
    g = torch.Generator().manual_seed(2)
    lr = 12
    pred0 = torch.rand(5, 1, lr * scale, lr * scale, generator=g)
    y = torch.rand(5, 1, lr * scale, lr * scale, generator=g)
    ids = [0, 2, 1, 1, 0]
    # the LR input is the target observed through the (augmented) PSF, as in training
    psf = torch.flip(torch.rot90(bank[ids], 3, dims=(-2, -1)), dims=(-1,))
    x = physics.forward(y, psf, scale)
    proj = physics.DirectProjector(bank, scale, (lr, lr))

    def loss_and_grad():
        pred = pred0.clone().requires_grad_(True)
        lo = pixel_loss(proj.project(pred, x, ids, rot90=3, flip=True), y, kind="l2")
        lo.backward()
        return lo.detach(), pred.grad

    fft_loss, fft_grad = loss_and_grad()
    # the old path: direct grouped convolution, inverses gathered and applied by one bmm
    monkeypatch.setattr(physics, "FFT_MIN_KERNEL_CPU", 10**9)
    monkeypatch.setattr(physics, "GROUPED_SOLVE_CPU", False)
    proj._inv, proj._stack, proj._row = {}, None, {}  # inverses rebuilt with the direct blur too
    ref_loss, ref_grad = loss_and_grad()
    assert abs(float(fft_loss - ref_loss)) <= 1e-5 * abs(float(ref_loss))
    assert float((fft_grad - ref_grad).norm() / ref_grad.norm()) < 1e-4

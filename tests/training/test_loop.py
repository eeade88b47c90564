"""The training loop: overfits a few patches, resumes at the same step, stops cleanly, GAN runs, CLI errors."""

from __future__ import annotations

import csv

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_astrosr.config import config_from_dict  # noqa: E402
from napari_astrosr.progress import StopFlag, run  # noqa: E402
from napari_astrosr.training.loop import train_job  # noqa: E402


def _cfg(**over):
    d = {
        "name": "t",
        "model": {
            "name": "pix2wgan",
            "preset": "tiny",
            "scale": 1,
            "zero_init_last": False,
            "overrides": {"dropout": 0.0, "norm": "none", "residual": False},
        },
        "data": {
            "scale": 2,
            "patch": 32,
            "realizations": 1,
            "max_patches": 4,
            "psf": {"kind": "spec", "spec": "gaussian:1.0"},
            "sources": [{"kind": "simulate", "simulate": "starfield", "count": 1, "size": 128}],
        },
        "optim": {"lr": 0.003, "warmup_steps": 0, "schedule": "constant", "weight_decay": 0.0},
        "run": {
            "steps": 120,
            "batch_size": 4,
            "val_every": 1000,
            "checkpoint_every": 1000,
            "log_every": 10,
            "threads": 1,
            "val_images": 1,
            "seed": 3,
        },
    }
    for k, v in over.items():
        d[k] = {**d[k], **v} if isinstance(v, dict) and isinstance(d.get(k), dict) else v
    return config_from_dict(d)


def _losses(path):
    return [float(r["loss"]) for r in csv.DictReader(path.read_text().splitlines()) if r["loss"]]


@pytest.mark.slow
def test_tiny_model_overfits_few_patches(tmp_path):
    cfg = _cfg(data={"max_patches": 2}, optim={"lr": 0.005}, loss={"pixel": "l2"}, run={"steps": 100, "log_every": 1})
    ckpt = run(train_job(cfg, out_dir=tmp_path / "r"))
    losses = np.array(_losses(tmp_path / "r" / "log.csv"))
    assert ckpt.exists() and ckpt.with_suffix(".json").exists()
    assert (tmp_path / "r" / "curves.png").stat().st_size > 1000
    assert losses[-10:].mean() < losses[:5].mean() / 10, losses


def test_resume_continues_from_same_step(tmp_path):
    cfg = _cfg(run={"steps": 6, "checkpoint_every": 3, "log_every": 1})
    # uninterrupted reference
    ref = run(train_job(cfg, out_dir=tmp_path / "ref"))
    # interrupted at step 3 by the stop flag, then resumed
    stop = StopFlag()

    def on(ev):
        if ev.step >= 3:
            stop.set()

    job = train_job(cfg, out_dir=tmp_path / "cut", stop=stop)
    ck = run(job, on_progress=on)
    import json

    assert json.loads(ck.with_suffix(".json").read_text())["step"] == 3
    steps_seen = []
    ck2 = run(train_job(cfg, out_dir=tmp_path / "cut", resume=True), on_progress=lambda e: steps_seen.append(e.step))
    assert min(s for s in steps_seen if s > 0) == 3 and max(steps_seen) == 6  # first event reports step 3
    a = torch.load(ref, weights_only=True)["model"]
    b = torch.load(ck2, weights_only=True)["model"]
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-6), k
    rows = list(csv.DictReader((tmp_path / "cut" / "log.csv").read_text().splitlines()))
    # the stop at step 3 left a validation-only row after step 3's training row
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 3, 4, 5, 6]
    assert rows[3]["val_psnr"] and not rows[3]["loss"] and not rows[2]["val_psnr"]


def test_resume_refuses_without_checkpoint_and_overwrite(tmp_path):
    from napari_astrosr.exceptions import AstroSRError

    cfg = _cfg(run={"steps": 2})
    with pytest.raises(AstroSRError, match="nothing to resume"):
        run(train_job(cfg, out_dir=tmp_path / "x", resume=True))
    run(train_job(cfg, out_dir=tmp_path / "y"))
    with pytest.raises(AstroSRError, match="--resume"):
        run(train_job(cfg, out_dir=tmp_path / "y"))


def test_wgan_gp_steps_and_validation_metrics(tmp_path):
    cfg = _cfg(
        gan={"enabled": True, "critic_width": 4},
        run={"steps": 4, "val_every": 2, "log_every": 2},
        optim={"optimizer": "adam", "betas": [0.5, 0.999]},
    )
    ck = run(train_job(cfg, out_dir=tmp_path / "g"))
    rows = list(csv.DictReader((tmp_path / "g" / "log.csv").read_text().splitlines()))
    assert rows and all(np.isfinite(float(r["critic_loss"])) and np.isfinite(float(r["gp"])) for r in rows)
    assert float(rows[-1]["val_psnr"]) > 0 and rows[-1]["val_flux_error"] != ""
    import json

    meta = json.loads(ck.with_suffix(".json").read_text())
    assert meta["architecture"] == "pix2wgan" and meta["training"]["steps"] == 4
    assert "val_psnr" in meta["training"]["validation"]


def test_fisr_with_fcl_trains(tmp_path):
    cfg = _cfg(
        model={"name": "fisr", "preset": "tiny", "scale": 2, "overrides": {}, "zero_init_last": True},
        data={"patch": 16},
        loss={"fcl_weight": 0.01},
        run={"steps": 3, "batch_size": 2},
    )
    ck = run(train_job(cfg, out_dir=tmp_path / "f"))
    rows = list(csv.DictReader((tmp_path / "f" / "log.csv").read_text().splitlines()))
    assert float(rows[-1]["loss_fcl"]) >= 0 and ck.exists()
    # the checkpoint works through the production entry point
    from napari_astrosr.restoration import restore

    lr = np.random.default_rng(0).normal(0, 1, (24, 24)).astype(np.float32)
    out = restore(lr, method="fisr", scale=2, model=ck, device="cpu", project=False)
    assert out.data.shape == (48, 48)


def test_cli_train_bad_config_exit_2(tmp_path, capsys):
    from napari_astrosr.cli import main

    p = tmp_path / "bad.yaml"
    p.write_text(
        "name: t\nmodel: {name: fisr, scale: 2, colour: red}\ndata: {sources: [{kind: simulate, simulate: starfield}]}\n"
    )
    assert main(["train", str(p), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'model.colour'" in err and "bad.yaml" in err


def test_one_run_per_output_folder(tmp_path):
    import os

    from napari_astrosr.exceptions import AstroSRError

    out = tmp_path / "l"
    out.mkdir()
    (out / "train.lock").write_text(str(os.getppid()))  # a live process holds the folder
    cfg = _cfg(run={"steps": 1})
    with pytest.raises(AstroSRError, match="another astrosr train"):
        run(train_job(cfg, out_dir=out))
    (out / "train.lock").write_text("999999999")  # stale lock of a dead run is taken over
    assert run(train_job(cfg, out_dir=out)).exists()
    assert not (out / "train.lock").exists()


@pytest.mark.slow
def test_cli_ctrl_c_saves_checkpoint(tmp_path):
    """`astrosr train` stops on SIGINT after the current step and leaves a resumable checkpoint."""
    import json
    import signal
    import subprocess
    import sys
    import time

    import yaml

    cfg = _cfg(run={"steps": 100000, "log_every": 1})
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    out = tmp_path / "o"
    proc = subprocess.Popen(
        [sys.executable, "-m", "napari_astrosr", "train", str(p), "--out", str(out), "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    t0 = time.time()
    while time.time() - t0 < 50:
        log = out / "log.csv"
        if log.exists() and len(log.read_text().splitlines()) > 3:
            break
        time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    t_sig = time.time()
    stdout, stderr = proc.communicate(timeout=50)
    # the clean stop (exit 0, "stopped") has STOP_DEADLINE_S; past it (a loaded machine) the run is
    # aborted with 130, keeping a complete checkpoint (signals are held while one is written) or nothing
    assert proc.returncode in (0, 130), stderr
    assert time.time() - t_sig < 10
    names = {p.name for p in out.iterdir()} if out.exists() else set()
    assert "train.lock" not in names
    if proc.returncode == 0 or "model.pt" in names:  # a complete checkpoint ...
        meta = json.loads((out / "model.json").read_text())
        assert 0 < meta["step"] < 100000 and (out / "resume.pt").exists()
        assert "stopped" in stdout or proc.returncode == 130
    else:  # ... or nothing at all
        assert not names & {"model.json", "resume.pt", "config.yaml", "log.csv"}, names


def _last(job):
    """Run a job to its end; the last event's values (stop_reason ...) and the returned checkpoint."""
    last = []
    ck = run(job, on_progress=last.append)
    return ck, last[-1].values


def test_chunks_equal_one_run(tmp_path):
    """Chunks of one step each (run.chunk_minutes), each resumed, end bitwise where one run of the same steps ends;
    the schedule's length (run.fit_steps, shorter than run.steps) travels in resume.pt."""
    import json

    cfg = _cfg(run={"steps": 50, "fit_steps": 4, "log_every": 1})
    ref, v = _last(train_job(cfg, out_dir=tmp_path / "ref"))
    assert v["stop_reason"] is None and json.loads(ref.with_suffix(".json").read_text())["step"] == 4
    chunked = _cfg(run={"steps": 50, "fit_steps": 4, "log_every": 1, "chunk_minutes": 1e-9})
    reasons = []
    for i in range(6):
        ck, v = _last(train_job(chunked, out_dir=tmp_path / "ch", resume=i > 0))
        reasons.append(v["stop_reason"])
        if v["stop_reason"] is None:
            break
    assert reasons == ["chunk", "chunk", "chunk", None]  # at least one step per chunk, then done at fit_steps
    st = torch.load(tmp_path / "ch" / "resume.pt", weights_only=True)
    assert st["fit"]["steps"] == 4 and st["scheduler"]["lr_lambdas"][0]["total"] == 4
    a = torch.load(ref, weights_only=True)
    b = torch.load(ck, weights_only=True)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    la = [float(r["lr"]) for r in csv.DictReader((tmp_path / "ref" / "log.csv").read_text().splitlines()) if r["lr"]]
    lb = [float(r["lr"]) for r in csv.DictReader((tmp_path / "ch" / "log.csv").read_text().splitlines()) if r["lr"]]
    assert la == lb and len(la) == 4


def test_time_budget_fits_the_schedule_and_stops(tmp_path):
    """With run.time_budget_minutes the schedule's length is fitted to the measured steps/s (saved for resuming)
    and the run ends at it or when the budget is spent, never at run.steps."""
    import json

    cfg = _cfg(
        optim={"schedule": "cosine", "min_lr_ratio": 0.1},
        run={"steps": 100000, "time_budget_minutes": 0.03, "fit_measure_steps": 3, "log_every": 1},
    )
    ck, v = _last(train_job(cfg, out_dir=tmp_path / "b"))
    assert v["stop_reason"] in (None, "budget")
    tr = json.loads(ck.with_suffix(".json").read_text())["training"]
    fitted, steps = tr["schedule_steps"], tr["steps"]
    assert tr["fitted_steps_per_s"] > 0 and 5 <= fitted < 100000 and 5 <= steps <= fitted
    # the fitted length is what the cosine decays over: planned ~0.95 of the budget at the measured rate
    assert fitted <= 5 + tr["fitted_steps_per_s"] * 0.03 * 60 + 1
    st = torch.load(tmp_path / "b" / "resume.pt", weights_only=True)
    assert st["fit"] == {"steps": fitted, "fitted": True, "steps_per_s": tr["fitted_steps_per_s"]}
    assert st["scheduler"]["lr_lambdas"][0]["total"] == fitted


def test_cli_says_stopped_chunk_and_how_to_resume(tmp_path, capsys):
    import yaml

    from napari_astrosr.cli import main

    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(_cfg(run={"steps": 3}).model_dump(mode="json")))
    out = tmp_path / "o"
    assert main(["train", str(p), "--out", str(out), "--quiet", "--chunk-minutes", "1e-9"]) == 0
    text = capsys.readouterr().out
    assert "stopped (chunk) t: step 1 of 3" in text and f"--out {out} --resume" in text
    assert main(["train", str(p), "--out", str(out), "--quiet", "--resume"]) == 0
    text = capsys.readouterr().out
    assert "trained t: step 3 of 3" in text and "--resume" not in text


def test_init_from_fine_tunes_a_checkpoint_and_records_it(tmp_path):
    """model.init_from: the run starts from the checkpoint's weights (a 1e-12 learning rate leaves them as they
    were), its sidecar names what it started from, and a resumed chunk keeps that record."""
    import json

    base = run(train_job(_cfg(run={"steps": 3}), out_dir=tmp_path / "base"))
    sha = json.loads(base.with_suffix(".json").read_text())["sha256"]
    cfg = _cfg(model={"init_from": str(base)}, optim={"lr": 1e-12}, run={"steps": 2, "checkpoint_every": 1})
    stop = StopFlag()
    ck = run(train_job(cfg, out_dir=tmp_path / "ft", stop=stop), on_progress=lambda e: e.step >= 1 and stop.set())
    assert json.loads(ck.with_suffix(".json").read_text())["step"] == 1
    ck = run(train_job(cfg, out_dir=tmp_path / "ft", resume=True))
    assert json.loads(ck.with_suffix(".json").read_text())["step"] == 2
    a = torch.load(base, weights_only=True)["model"]
    b = torch.load(ck, weights_only=True)["model"]
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-6), k
    init = json.loads(ck.with_suffix(".json").read_text())["training"]["init_from"]
    assert init == {"path": base.name, "sha256": sha, "step": 3}
    fresh = run(train_job(_cfg(optim={"lr": 1e-12}, run={"steps": 2}), out_dir=tmp_path / "fresh"))
    c = torch.load(fresh, weights_only=True)["model"]
    assert any(not torch.allclose(a[k].float(), c[k].float(), atol=1e-6) for k in a)  # the check can fail


def test_init_from_refuses_another_network(tmp_path):
    from napari_astrosr.exceptions import AstroSRError

    base = run(train_job(_cfg(run={"steps": 1}), out_dir=tmp_path / "base"))
    other = _cfg(model={"init_from": str(base), "overrides": {"dropout": 0.0, "norm": "none", "residual": True}})
    with pytest.raises(AstroSRError, match="model.init_from: .*set model.preset / model.overrides"):
        run(train_job(other, out_dir=tmp_path / "a"))
    with pytest.raises(AstroSRError, match="model.init_from: no bundled pix2wgan x2 weights"):
        run(train_job(_cfg(model={"init_from": "bundled"}), out_dir=tmp_path / "b"))
    with pytest.raises(AstroSRError, match="model.init_from: .*nope.pt not found"):
        run(train_job(_cfg(model={"init_from": str(tmp_path / "nope.pt")}), out_dir=tmp_path / "c"))


def test_init_from_bundled_loads_the_shipped_weights():
    """'bundled' resolves to the weights restore uses for that network and scale."""
    from napari_astrosr.models.checkpoints import bundled_checkpoint, load_checkpoint
    from napari_astrosr.models.registry import build_model, resolve_config
    from napari_astrosr.training.loop import _init_from

    path = bundled_checkpoint("fisr", 4)
    if path is None:
        pytest.skip("no bundled fisr x4 weights")
    cfg = _cfg(
        model={"name": "fisr", "preset": "lite", "scale": 4, "overrides": {}, "init_from": "bundled"}, data={"scale": 4}
    )
    model = build_model("fisr", preset="lite", scale=4)
    info = _init_from(model, cfg, resolve_config("fisr", preset="lite"))
    ref, meta = load_checkpoint(path)
    assert info["sha256"] == meta["sha256"] and info["path"] == "fisr_x4.pt"
    for k, v in ref.state_dict().items():
        assert torch.equal(v, model.state_dict()[k]), k


def test_cli_init_from_overrides_the_config_and_names_a_missing_checkpoint(tmp_path, capsys):
    import yaml

    from napari_astrosr.cli import main

    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(_cfg(run={"steps": 1}).model_dump(mode="json")))
    missing = tmp_path / "gone.pt"
    assert main(["train", str(p), "--out", str(tmp_path / "o"), "--quiet", "--init-from", str(missing)]) == 2
    err = capsys.readouterr().err
    assert "model.init_from" in err and "gone.pt not found" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o" / "model.pt").exists()  # nothing trained, nothing written

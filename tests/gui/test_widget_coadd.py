"""Coadd widget: ivar/median on a small simulated stack, DIP with a live latent and Stop, errors."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter  # noqa: E402

from napari_astrosr._napari.widgets.coadd import CoaddWidget  # noqa: E402

from widget_helpers import Notes, star_image, wait_idle  # noqa: E402

pytestmark = pytest.mark.gui


def _frames(n=4, shape=(32, 32), sigma=0.5):
    truth = star_image(shape, n=6, noise=0.0, sky=0.0, seed=1)
    rng = np.random.default_rng(0)
    blurred = gaussian_filter(truth.astype(np.float64), 1.5)
    return truth, np.stack([blurred + rng.normal(0, sigma, shape) for _ in range(n)]).astype(np.float32)


def test_ivar_and_median_from_layers(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    _, frames = _frames()
    stack = viewer.add_image(frames, name="stack", scale=(1, 2, 2))
    sig = viewer.add_image(np.full(frames.shape, 0.5, np.float32), name="sigma")
    w = CoaddWidget(viewer)
    qtbot.addWidget(w)
    w.set_frames([stack])
    w.noise.set_value(sig)
    w.method.setCurrentText("inverse variance")
    w.run()
    wait_idle(qtbot, w.jobs)
    out = viewer.layers["stack [coadd ivar]"]
    # equal weights: the inverse-variance mean is the plain mean
    np.testing.assert_allclose(out.data, frames.mean(axis=0), atol=1e-4)
    assert tuple(out.scale) == (2.0, 2.0)
    # the same report lines as `astrosr coadd`
    assert "checked:" in w.summary.text() and "sky sigma" in w.summary.text()

    # several 2-D layers instead of a stack, median
    for i in range(3):
        viewer.add_image(frames[i], name=f"f{i}")
    w.set_frames([viewer.layers[f"f{i}"] for i in range(3)])
    w.noise.setCurrentIndex(0)  # estimate the noise
    w.method.setCurrentText("median")
    w.run()
    wait_idle(qtbot, w.jobs)
    med = viewer.layers["f0+2 [coadd median]"]
    assert med.data.shape == frames.shape[1:]
    assert np.nanmedian(np.abs(med.data - np.median(frames[:3], axis=0))) < 0.05

    # errors: a single 2-D layer; frames of different shapes
    notes = Notes()
    w.set_frames([viewer.layers["f0"]])
    assert w.run() is None
    viewer.add_image(np.zeros((20, 20), np.float32), name="small")
    w.set_frames([viewer.layers["f0"], viewer.layers["small"]])
    assert w.run() is None
    errs = notes.errors()
    assert any("single image" in m for m in errs) and any("different shapes" in m for m in errs)
    assert w.run_button.isEnabled()


@pytest.mark.slow
def test_dip_live_latent_and_stop(make_napari_viewer, qtbot):
    pytest.importorskip("torch")
    viewer = make_napari_viewer()
    _, frames = _frames(n=3)
    stack = viewer.add_image(frames, name="stack")
    w = CoaddWidget(viewer)
    qtbot.addWidget(w)
    w.set_frames([stack])
    w.method.setCurrentText("DIP (AstroClearNet)")
    w.psf_mode.setCurrentText("spec")
    w.psf_spec.setText("gaussian:1.5")
    w.iterations.setValue(100_000)
    w.device.setCurrentText("cpu")
    w.preview_every = 3
    w.run()
    # the latent layer appears and updates while the fit runs
    qtbot.waitUntil(lambda: w.previews >= 2, timeout=90_000)
    layer = viewer.layers["stack [coadd dip]"]
    assert w.jobs.busy and layer.data.shape == (32, 32)
    w.jobs.stop()
    wait_idle(qtbot, w.jobs, timeout=60_000)
    # on a loaded machine the step may outlast the panel's grace period: its latent still arrives
    qtbot.waitUntil(lambda: not w.jobs.background and "astrosr" in layer.metadata, timeout=60_000)
    # Stop keeps the current latent as the result (not an error)
    assert "stopped" in w.jobs.last_status and w.jobs.last_error is None
    assert viewer.layers["stack [coadd dip]"] is layer and np.isfinite(layer.data).all()
    assert layer.metadata["astrosr"]["metrics"]["stop_reason"] in ("stopped", "stop")
    # the widget says what was checked (after Stop: nothing, so that Stop acts at once)
    assert "checked: nothing: stopped" in w.summary.text()
    assert "stop: stopped by the user at step" in w.summary.text()  # the stopping rule's line


def test_dip_stopping_controls_match_cli_defaults(make_napari_viewer, qtbot):
    """The DIP stopping controls start at the CLI's defaults and reach the job; off is reported."""
    pytest.importorskip("torch")
    from napari_astrosr.coadd_job import CoaddOptions

    viewer = make_napari_viewer()
    _, frames = _frames(n=3)
    stack = viewer.add_image(frames, name="stack")
    sig = viewer.add_image(np.full(frames.shape, 0.5, np.float32), name="sigma")
    w = CoaddWidget(viewer)
    qtbot.addWidget(w)
    w.method.setCurrentText("DIP (AstroClearNet)")
    cli = CoaddOptions()
    opts = w.options()
    for key in ("iterations", "holdout", "noise_stop", "noise_tol_max"):
        assert getattr(opts, key) == getattr(cli, key), key
    # the tolerance only matters with the noise rule on
    w.noise_stop.setChecked(False)
    assert not w.noise_tol_max.isEnabled()
    w.noise_stop.setChecked(True)
    assert w.noise_tol_max.isEnabled()
    w.method.setCurrentText("median")
    assert not (w.noise_stop.isEnabled() or w.noise_tol_max.isEnabled() or w.holdout.isEnabled())

    w.method.setCurrentText("DIP (AstroClearNet)")
    w.noise_stop.setChecked(False)
    w.noise_tol_max.setValue(0.2)
    w.holdout.setValue(0.2)
    opts = w.options()
    assert (opts.noise_stop, opts.noise_tol_max, opts.holdout) == (False, 0.2, 0.2)
    w.set_frames([stack])
    w.noise.set_value(sig)
    w.psf_mode.setCurrentText("spec")
    w.psf_spec.setText("gaussian:1.5")
    w.iterations.setValue(5)
    w.device.setCurrentText("cpu")
    w.run()
    wait_idle(qtbot, w.jobs, timeout=120_000)
    assert w.jobs.last_error is None
    detail = viewer.layers["stack [coadd dip]"].metadata["astrosr"]["metrics"]["stop_detail"]
    assert detail["holdout"] == pytest.approx(0.2) and detail["rule"].startswith("noise-model rule off")
    assert "chi2 target off" in w.summary.text()

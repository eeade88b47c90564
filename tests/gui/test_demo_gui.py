"""``astrosr demo`` steps in a napari viewer: layer names, world alignment, residual display, screenshots."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = [pytest.mark.gui, pytest.mark.slow]


def test_demo_layers_and_screenshots(make_napari_viewer, tmp_path):
    from napari_astrosr._napari import demo

    viewer = make_napari_viewer(show=True)
    viewer.window.resize(1200, 800)
    out = tmp_path / "demo"
    steps = [demo.step_load_sample, demo.step_main_job, demo.step_result_layers, demo.step_screenshot]
    # no validation here (tests/test_pipeline.py covers it): the layers are what this test is about
    assert (
        demo.run_demo(headless=True, out_dir=out, viewer=viewer, steps=steps, options={"validate": False}, quiet=True)
        == out
    )
    log = json.loads((out / "demo_log.json").read_text())
    assert not [e for e in log if e.get("error")], log
    method = json.loads((out / "metrics.json").read_text())["method"]

    src = "hst_galaxy"  # (issue 23) layers are named after the file, without its .fits suffix
    name = f"{src} [{method}]"
    names = [ly.name for ly in viewer.layers]
    assert names == [
        src,
        name,
        f"{name} residual",
        f"{src} sources",
        f"{name} sources",
        f"{name} flux residuals",
        "ROIs (KL/JS)",
    ]
    L = viewer.layers
    inp, restored, resid = L[src], L[name], L[f"{name} residual"]
    assert inp.data.shape == (256, 256) and restored.data.shape == (512, 512)
    np.testing.assert_allclose(restored.scale, (0.5, 0.5))
    np.testing.assert_allclose(restored.translate, (-0.25, -0.25))  # output pixels tile the input pixels
    np.testing.assert_allclose(resid.scale, inp.scale)

    # same world extent: input pixel 0 spans [-0.5, 0.5], so do output pixels 0 and 1
    def edges(ly):  # world coordinates of the outer pixel edges
        n = np.asarray(ly.data.shape[-2:], float)
        return ly.translate - 0.5 * ly.scale, ly.translate + (n - 0.5) * ly.scale

    np.testing.assert_allclose(edges(restored), edges(inp), atol=1e-9)
    assert restored.metadata["wcs"] is not None and restored.metadata["astrosr"]["method"] == method

    # residual: diverging colormap, limits symmetric about zero, the block_sum(output) - input values
    lo, hi = resid.contrast_limits
    assert lo == pytest.approx(-hi) and hi > 0
    assert "rd" in resid.colormap.name.lower() and "bu" in resid.colormap.name.lower()
    from napari_astrosr.core.resample import block_sum

    np.testing.assert_allclose(resid.data, block_sum(restored.data.astype(np.float64), 2) - inp.data, atol=1e-5)

    # detections: world coordinates; each input source has an output detection within 1 input pixel
    pin, pout = L[f"{src} sources"], L[f"{name} sources"]
    assert len(pin.data) >= 3 and {"x", "y", "flux", "ra", "dec"} <= set(pin.features.columns)
    assert {"x", "y", "flux"} <= set(pout.features.columns)
    d = np.linalg.norm(pin.data[:, None, :] - pout.data[None, :, :], axis=2).min(axis=1)
    assert np.median(d) < 1.0, d
    fr = L[f"{name} flux residuals"]
    assert "rel_delta" in fr.features.columns and len(fr.data) == len(pin.data)
    roi = L["ROIs (KL/JS)"]
    assert list(roi.features["name"]) == ["bright", "faint", "sky"] and len(roi.data) == 3

    from imageio.v3 import imread

    for png in ("screenshot.png", "canvas.png", "residual_zoom.png"):
        img = imread(out / png)
        assert img.ndim == 3 and img[..., :3].std() > 5, png  # something is drawn
    zoom = imread(out / "residual_zoom.png")[..., :3].astype(int)
    # a residual around a bright source: both red (output > input) and blue (output < input) pixels
    red = (zoom[..., 0] - zoom[..., 2] > 60).mean()
    blue = (zoom[..., 2] - zoom[..., 0] > 60).mean()
    assert red > 0.001 and blue > 0.001, (red, blue)

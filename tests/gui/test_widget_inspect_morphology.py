"""Inspect widget, galaxy-morphology section: GT / LQ (x2 coarser) / bicubic RS of a simulated
Sersic field -> summary table, embedded scatter plots, table and PNG exports; bad input."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table  # noqa: E402

from napari_astrosr._napari.widgets.inspect import MORPH_ROW_PX, InspectWidget, lq_scale  # noqa: E402
from napari_astrosr.core.degrade import degrade  # noqa: E402
from napari_astrosr.core.morphology import morphology_summary  # noqa: E402
from napari_astrosr.core.simulate import sersic_galaxies  # noqa: E402
from napari_astrosr.restoration import restore  # noqa: E402

from widget_helpers import Notes, wait_idle  # noqa: E402

pytestmark = pytest.mark.gui


def _field():
    sim = sersic_galaxies((96, 96), n=6, seed=3, r_eff_range=(1.5, 4.0), flux_range=(3e3, 3e4), use_galsim=False)
    lq = degrade(sim.image, scale=2, psf="gaussian:1.0", noise=None, seed=1).data
    rs = restore(lq, method="bicubic", scale=2).data
    return sim.image.astype(np.float32), lq.astype(np.float32), rs.astype(np.float32)


def _cell(w, label, col):
    rows = {w.morph_table.item(r, 0).text(): r for r in range(w.morph_table.rowCount())}
    return w.morph_table.item(rows[label], col).text()


def test_lq_scale():
    assert lq_scale((96, 96), (96, 96)) is None
    assert lq_scale((96, 96), (48, 48)) == 2
    assert lq_scale((97, 97), (48, 48)) == 2  # degrade crops the remainder
    with pytest.raises(Exception, match="larger than the reference"):
        lq_scale((48, 48), (96, 96))
    with pytest.raises(Exception, match="not an integer factor"):
        lq_scale((96, 96), (48, 32))


def test_inspect_morphology(make_napari_viewer, qtbot, tmp_path):
    gt, lq, rs = _field()
    viewer = make_napari_viewer()
    viewer.add_image(gt, name="truth")
    viewer.add_image(lq, name="input", scale=(2, 2), translate=(0.5, 0.5))
    viewer.add_image(rs, name="bicubic")
    w = InspectWidget(viewer)
    qtbot.addWidget(w)
    assert not w.sersic.isChecked()  # Sersic fits are opt-in (slow)
    w.reference.set_value(viewer.layers["truth"])
    w.prediction.set_value(viewer.layers["bicubic"])
    w.lq.set_value(viewer.layers["input"])
    assert w.run_morphology() is not None
    wait_idle(qtbot, w.jobs)
    assert w.jobs.last_error is None, w.jobs.last_status
    res = w.morph_result
    assert res.scale == 2 and not res.fit_sersic
    assert 4 <= len(res.table) <= 10  # ~6 galaxies found on the LQ image

    summary = morphology_summary(res.table)  # recomputed here from the widget's per-galaxy table
    for label, key in (("isophotal flux", "iso_flux"), ("R50", "r50")):
        lq_rmse, rs_rmse, red = (float(_cell(w, label, c)) for c in (2, 3, 4))
        assert np.isfinite([lq_rmse, rs_rmse, red]).all() and lq_rmse > 0 and rs_rmse > 0
        assert red == pytest.approx(lq_rmse / rs_rmse, rel=0.01)  # 3 significant digits shown
        s = summary[key]
        assert (lq_rmse, rs_rmse, red) == pytest.approx(
            (s["lq"]["rmse"], s["rs"]["rmse"], s["scatter_reduction"]), rel=5e-3
        )
        assert int(_cell(w, label, 1)) == len(res.table)
    labels = {w.morph_table.item(r, 0).text() for r in range(w.morph_table.rowCount())}
    assert "Sersic n" not in labels  # no fits -> no Sersic rows

    assert w.morph_canvas is not None and w.morph_scroll.widget() is w.morph_canvas
    assert w.morph_canvas.figure is res.figure and len(res.figure.axes) == 2 * len(res.quantities)
    # one row of panels per quantity, taller than the scroll area: it scrolls instead of squeezing
    assert w.morph_canvas.minimumHeight() == MORPH_ROW_PX * len(res.quantities) > w.morph_scroll.minimumHeight()

    out = w.export_morphology(tmp_path / "morph.ecsv")
    t = Table.read(out)
    assert len(t) == len(res.table) and {"iso_flux_gt", "iso_flux_lq", "iso_flux_rs", "r50_rs"} <= set(t.colnames)
    assert t.meta["input_lq"] == "input"
    png = w.save_morphology_plot(tmp_path / "morph.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # showing a new result replaces the canvas instead of stacking figures
    first = w.morph_canvas
    w.show_morphology(res)
    assert w.morph_canvas is not first and w.morph_scroll.widget() is w.morph_canvas


def test_inspect_morphology_bad_input(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    a = rng.normal(10, 1, (40, 40)).astype(np.float32)
    viewer.add_image(a, name="gt")
    viewer.add_image(a[:30, :30].copy(), name="rs")
    viewer.add_image(a[:20, :20].copy(), name="lq")
    w = InspectWidget(viewer)
    qtbot.addWidget(w)
    w.reference.set_value(viewer.layers["gt"])
    w.prediction.set_value(viewer.layers["rs"])
    w.lq.set_value(viewer.layers["lq"])
    notes = Notes()
    assert w.run_morphology() is None
    assert any("same grid" in m for m in notes.errors())
    with pytest.raises(Exception, match="run Compare morphology first"):
        w.export_morphology(tmp_path / "m.ecsv")
    assert not (tmp_path / "m.ecsv").exists()

    # the same layer twice is refused; the widget stays usable
    w.prediction.set_value(viewer.layers["gt"])
    assert w.run_morphology() is None
    assert any("three different layers" in m for m in notes.errors())
    assert w.morph_button.isEnabled() and not w.jobs.busy

    # an error raised inside the worker (LQ 20 x 2 = 40 px does not cover GT's 45) is a notification too
    viewer.add_image(rng.normal(10, 1, (45, 45)).astype(np.float32), name="gt45")
    viewer.add_image(rng.normal(10, 1, (45, 45)).astype(np.float32), name="rs45")
    w.reference.set_value(viewer.layers["gt45"])
    w.prediction.set_value(viewer.layers["rs45"])
    w.lq.set_value(viewer.layers["lq"])
    assert w.run_morphology() is not None
    wait_idle(qtbot, w.jobs)
    assert "does not match the GT shape" in str(w.jobs.last_error)
    assert any("does not match the GT shape" in m for m in notes.errors())
    assert w.morph_result is None and w.morph_button.isEnabled()

"""The main job (pipeline.main_job) on the bundled sample, synchronously, without napari."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from napari_astrosr.core.resample import block_sum
from napari_astrosr.data import sample_path
from napari_astrosr.exceptions import AstroSRError, StoppedError
from napari_astrosr.pipeline import default_method, default_rois, main_job, output_names, run_main_job
from napari_astrosr.progress import StopFlag, run

pytestmark = pytest.mark.slow  # one full main job (~10 s CPU) shared by the module


def _sha(p) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    src = sample_path("hst_galaxy")
    before = _sha(src)
    out = tmp_path_factory.mktemp("main")
    events = []
    res = run(main_job(src, out_dir=out), on_progress=events.append)
    return dict(res=res, out=out, src=src, before=before, events=events)


def test_every_file_written_nothing_else(job):
    res, out = job["res"], job["out"]
    names = output_names("hst_galaxy", res.method, 2)
    assert sorted(p.name for p in out.iterdir()) == sorted(names.values())  # no staging/temp files left
    for key, name in names.items():
        assert res.files[key] == out / name and (out / name).stat().st_size > 0, name
    assert _sha(job["src"]) == job["before"]  # the input sample is untouched
    steps = [e.step for e in job["events"]]
    assert steps == sorted(steps) and job["events"][-1].message == "done"


def test_restored_fits_has_wcs_and_provenance(job):
    res, src = job["res"], job["src"]
    with fits.open(res.files["restored"]) as h:
        hdr, data = h[0].header, h[0].data
    assert data.shape == (512, 512)
    assert hdr["ASRMETH"] == res.method == default_method(2)["method"]
    assert json.loads(hdr["ASRPARAM"])["scale"] == 2 and hdr["ASRIN1"] == "hst_galaxy.fits"
    w_in, w_out = WCS(fits.getheader(src)), WCS(hdr)
    # same sky: input pixel centre (x, y) lands on output (2x + 0.5, 2y + 0.5)
    ra, dec = w_in.pixel_to_world_values(100.0, 40.0)
    x, y = w_out.world_to_pixel_values(ra, dec)
    assert abs(x - 200.5) < 1e-6 and abs(y - 80.5) < 1e-6
    # the residual file is block_sum(output) - input on the input grid with the input's WCS
    with fits.open(res.files["residual"]) as h:
        resid, rhdr = h[0].data, h[0].header
    inp = fits.getdata(src).astype(np.float64)
    np.testing.assert_allclose(resid, block_sum(data.astype(np.float64), 2) - inp, atol=1e-5)
    assert WCS(rhdr).wcs.compare(w_in.wcs, tolerance=1e-10) and "ASRMETH" in rhdr


def test_catalogs_and_regions(job):
    res = job["res"]
    for key in ("sources_input", "sources_output", "source_residuals"):
        t = Table.read(res.files[key])
        assert {"ra", "dec", "x", "y"} <= set(t.colnames) and len(t) > 0, key
        assert np.isfinite(np.asarray(t["ra"], float)).all()
    cat = Table.read(res.files["sources_input"])
    assert abs(float(np.median(cat["ra"])) - 3.59) < 0.05 and abs(float(np.median(cat["dec"])) + 30.39) < 0.05
    assert "rel_delta" in Table.read(res.files["source_residuals"]).colnames
    sky = res.files["regions_input"].read_text().splitlines()[2]
    assert sky in ("j2000", "fk5", "icrs"), sky  # RA/Dec regions (the sample has a WCS)
    rois = res.files["rois"].read_text()
    assert rois.count("box(") == len(res.rois) == 3
    bright = res.rois[0]
    # DS9 image coordinates are 1-based: the box centre of 0-based pixels x0..x1-1 is (x0 + x1 - 1) / 2 + 1
    assert f"box({(bright.x0 + bright.x1 + 1) / 2:.8f},{(bright.y0 + bright.y1 + 1) / 2:.8f}" in rois


def test_metrics_json(job):
    res = job["res"]
    m = json.loads(res.files["metrics"].read_text())
    assert m["method"] == res.method and m["method_reason"] and m["device"] == "cpu"
    a = m["consistency"]
    for k in (
        "total_flux_rel_diff",
        "residual",
        "per_source",
        "rois",
        "n_sources_input",
        "n_sources_output",
        "flux_error",
        "psnr_blocksum_vs_input",
    ):
        assert k in a, k
    assert [r["name"] for r in a["rois"]] == ["bright", "faint", "sky"]
    assert all(r["js"] is not None and 0 <= r["js"] <= np.log(2) for r in a["rois"])
    b = m["validation"]
    assert set(b["methods"]) == {res.method, "backprojection", "bicubic"}
    for ev in b["methods"].values():
        for k in ("psnr", "ssim", "flux_error", "flux_error_rel_median", "rois"):
            assert k in ev, k
    assert "psnr_db" in b["gain_over_bicubic"]
    assert m["input"]["sha256"] == job["before"]
    assert set(m["timings"]) >= {"read", "restore", "detect", "compare", "validate", "export", "total"}


def test_numbers_mean_something(job):
    """Backprojection (the default without bundled weights) keeps the total flux and its forward model."""
    res = job["res"]
    m = res.metrics
    a = m["consistency"]
    if res.method == "backprojection":
        assert abs(a["total_flux_rel_diff"]) < 1e-6  # bicubic base + projection: total flux exact
        assert a["forward_model_residual"]["max_abs"] < 1e-3 * float(np.nanmax(res.input.data))
        # ... and beats bicubic on the degraded copy of this very image
        assert m["validation"]["gain_over_bicubic"]["psnr_db"] > 1.0
    else:  # the bundled network (FISR): residual on a flux-conserving base, total kept approximately
        assert abs(a["total_flux_rel_diff"]) < 0.02
    # the residual array matches the definition
    np.testing.assert_allclose(
        res.residual, block_sum(res.restored.data.astype(np.float64), 2) - res.input.data, atol=1e-5
    )


def test_default_rois_synthetic(rng):
    img = rng.normal(0, 1, (128, 128))
    yy, xx = np.mgrid[:128, :128]
    img += 500 * np.exp(-((xx - 30) ** 2 + (yy - 90) ** 2) / 8) + 20 * np.exp(-((xx - 100) ** 2 + (yy - 20) ** 2) / 8)
    from napari_astrosr.core.detection import detect

    d = detect(img)
    rois = default_rois(img, d.sources, d.segmap, size=16)
    by = {r.name: r for r in rois}
    assert by["bright"].x0 <= 30 < by["bright"].x1 and by["bright"].y0 <= 90 < by["bright"].y1
    assert by["faint"].x0 <= 100 < by["faint"].x1 and by["faint"].y0 <= 20 < by["faint"].y1
    assert not (d.segmap[by["sky"].y0 : by["sky"].y1, by["sky"].x0 : by["sky"].x1] > 0).any()
    assert all(r.y1 - r.y0 == 16 and r.x1 - r.x0 == 16 for r in rois)


def test_existing_outputs_refused_and_stop_leaves_nothing(job, tmp_path):
    with pytest.raises(AstroSRError, match="already exists"):
        run_main_job(job["src"], out_dir=job["out"], validate=False)
    stop = StopFlag()
    gen = main_job(job["src"], out_dir=tmp_path / "stopped", method="bicubic", validate=False, stop=stop)
    next(gen)
    stop.set()
    with pytest.raises(StoppedError):
        run(gen)
    assert list((tmp_path / "stopped").iterdir()) == []


def test_bad_input_clear_error(tmp_path):
    cube = tmp_path / "cube.fits"
    fits.PrimaryHDU(np.ones((2, 3, 16, 16), "f4")).writeto(cube)
    with pytest.raises(AstroSRError, match="cube.fits"):
        run_main_job(cube, out_dir=tmp_path / "o", method="bicubic")
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_flux_exact_switch_for_a_chosen_method(tmp_path):
    """--flux-exact with a method the caller chose (off by default for it): the projection runs, the forward
    model is reproduced, and the validation uses it too; --no-flux-exact turns the default's off."""
    src = sample_path("hst_galaxy")
    # exact: the default measures the sample's noise first (real HST noise: noise-aware), see test below
    on = run(main_job(src, out_dir=tmp_path / "on", method="lanczos", flux_exact=True, flux_noise="exact"))
    assert on.metrics["flux_exact"] is True and "flux-exact" in on.metrics["method_reason"]
    assert on.metrics["consistency"]["forward_model_residual"]["max_abs"] < 1e-3 * float(np.nanmax(on.input.data))
    off = run(main_job(src, out_dir=tmp_path / "off", method="bicubic", validate=False))
    assert off.metrics["flux_exact"] is False
    # lanczos + flux-exact: the projection lifts it well above plain bicubic on the degraded copy
    assert on.metrics["validation"]["gain_over_bicubic"]["psnr_db"] > 1.0
    if default_method(2)["method"] != "backprojection":
        nodef = run(main_job(src, out_dir=tmp_path / "nodef", flux_exact=False, validate=False))
        assert nodef.metrics["flux_exact"] is False


def test_bad_psf_refused_before_any_output(tmp_path):
    out = tmp_path / "never"
    with pytest.raises(AstroSRError, match="--psf 'nonsense'"):
        run_main_job(sample_path("hst_galaxy"), out_dir=out, method="bicubic", flux_exact=True, psf="nonsense")
    assert not out.exists()

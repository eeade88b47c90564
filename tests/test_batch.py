"""Batch (Dask distributed) and tiled large-image restoration (napari_astrosr.batch, astrosr batch).

Classical methods only (no weights needed). Clusters run in-process (processes=False) to stay fast.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

pytest.importorskip("distributed")
from napari_astrosr import batch as B  # noqa: E402
from napari_astrosr import restoration  # noqa: E402
from napari_astrosr.cli import main  # noqa: E402
from napari_astrosr.core.fits_io import read_fits, write_fits  # noqa: E402
from napari_astrosr.core.resample import pixel_wcs  # noqa: E402
from napari_astrosr.exceptions import AstroSRError  # noqa: E402
from napari_astrosr.progress import StopFlag, run  # noqa: E402


def _field(rng, shape, n_stars=40):
    """Sky + noise + a few Gaussian stars (float32): realistic dynamic range, seeded."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    img = 5.0 + rng.normal(0, 0.5, shape)
    for _ in range(n_stars):
        y, x = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        img += rng.uniform(50, 2000) * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 1.3**2))
    return img.astype(np.float32)


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        with Client(cluster) as c:
            yield c


@pytest.fixture
def files(tmp_path, rng):
    d = tmp_path / "in"
    d.mkdir()
    paths = []
    for i in range(4):
        img = _field(rng, (48 + 8 * i, 64))
        paths.append(write_fits(d / f"img{i}.fits", img, wcs=pixel_wcs(img.shape)))
    return paths


def _ref(path, **kw):
    img = read_fits(path)
    return restoration.restore(img.data, wcs=img.wcs, header=img.header, **kw)


# ------------------------------------------------------------------ tiled == in memory


@pytest.mark.parametrize("method,scale", [("bicubic", 2), ("lanczos", 3)])
def test_restore_dask_equals_in_memory(rng, method, scale):
    img = _field(rng, (150, 130))
    img[20:30, 40:55] = np.nan  # a blank patch crossing a block seam
    ref = restoration.restore(img, method=method, scale=scale).data
    out = B.restore_dask(img, method=method, scale=scale, chunks=(40, 48)).compute(scheduler="synchronous")
    assert out.shape == ref.shape and out.dtype == np.float32
    assert np.array_equal(np.isnan(out), np.isnan(ref))
    ok = np.isfinite(ref)
    tol = 4 * np.finfo(np.float32).eps * np.nanmax(np.abs(ref))
    assert np.max(np.abs(out[ok] - ref[ok])) <= tol
    # flux: total of the tiled output equals the in-memory output (and the input: flux-conserving)
    assert np.isclose(np.nansum(out, dtype=np.float64), np.nansum(ref, dtype=np.float64), rtol=1e-6)
    assert np.isclose(np.nansum(out, dtype=np.float64), np.nansum(img, dtype=np.float64), rtol=1e-5)


def test_restore_dask_too_small_halo_differs(rng):
    """The halo matters: without overlap the seams differ (so the equality test above can fail)."""
    img = _field(rng, (96, 96))
    ref = restoration.restore(img, method="bicubic", scale=2).data
    out = B.restore_dask(img, method="bicubic", scale=2, chunks=32, depth=0).compute(scheduler="synchronous")
    assert np.max(np.abs(out - ref)) > 1e-3 * np.max(np.abs(ref))


@pytest.mark.slow
def test_restore_dask_network_matches_in_memory(tmp_path, rng):
    """A (tiny, untrained) restormer tiled with whole-image normalisation matches the in-memory run.

    Restormer's channel attention sees the whole image, so equality is only to the blending tolerance.
    """
    torch = pytest.importorskip("torch")
    from napari_astrosr.models.checkpoints import save_checkpoint
    from napari_astrosr.models.registry import build_model
    from napari_astrosr.models.restormer import PRESETS

    torch.manual_seed(0)
    ckpt = save_checkpoint(
        tmp_path / "tiny.pt",
        build_model("restormer", preset="tiny", scale=2),
        name="restormer",
        preset="tiny",
        scale=2,
        config=dict(PRESETS["tiny"]),
        normalization={"kind": "median_std"},
    )
    img = _field(rng, (64, 56), n_stars=6)
    # the network alone (the default projection is compared tile by tile for backprojection)
    ref = restoration.restore(img, method="restormer", scale=2, model=ckpt, device="cpu", project=False).data
    B.clear_cache()
    out = B.restore_dask(img, method="restormer", scale=2, model=ckpt, chunks=32, depth=16, project=False).compute(
        scheduler="synchronous"
    )
    assert np.max(np.abs(out - ref)) <= 2e-3 * np.max(np.abs(ref))
    assert np.isclose(out.sum(dtype=np.float64), ref.sum(dtype=np.float64), rtol=1e-3)


def test_tiled_fits_equals_in_memory(tmp_path, rng):
    img = _field(rng, (600, 500), n_stars=150)
    img[300:340, 0:60] = np.nan
    src = write_fits(tmp_path / "mosaic.fits", img, wcs=pixel_wcs(img.shape), header=fits.Header({"BUNIT": "e-/s"}))
    out = tmp_path / "out" / "mosaic_x2.fits"
    out.parent.mkdir()
    events = []
    res = run(B.restore_fits_tiled_job(src, out, method="bicubic", scale=2, chunk=200), on_progress=events.append)
    assert res.shape_out == (1200, 1000) and res.n_blocks == 9
    assert events[-1].step == events[-1].total == 3
    got, ref = read_fits(out), _ref(src, method="bicubic", scale=2)
    tol = 4 * np.finfo(np.float32).eps * np.nanmax(np.abs(ref.data))
    assert np.array_equal(np.isnan(got.data), np.isnan(ref.data))
    assert np.nanmax(np.abs(got.data - ref.data)) <= tol
    assert np.isclose(np.nansum(got.data, dtype=np.float64), np.nansum(img, dtype=np.float64), rtol=1e-5)
    # same sky grid as the in-memory restore, units and provenance carried
    assert np.allclose(got.wcs.wcs.crpix, ref.wcs.wcs.crpix) and np.allclose(got.wcs.wcs.cdelt, ref.wcs.wcs.cdelt)
    assert got.header["BUNIT"] == "e-/s" and got.header["ASRMETH"] == "bicubic"
    assert '"tiled": true' in got.header["ASRPARAM"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["mosaic_x2.fits"]  # no temp file left


def test_tiled_fits_refuses_and_cleans_up(tmp_path, rng):
    src = write_fits(tmp_path / "a.fits", _field(rng, (64, 64)))
    with pytest.raises(AstroSRError, match="already exists"):
        B.restore_fits_tiled(src, src, method="bicubic", chunk=32)
    with pytest.raises(AstroSRError, match="input file"):
        B.restore_fits_tiled(src, src, method="bicubic", chunk=32, overwrite=True)
    stop = StopFlag()
    stop.set()
    with pytest.raises(AstroSRError, match="stopped"):
        run(B.restore_fits_tiled_job(src, tmp_path / "b.fits", method="bicubic", chunk=32, stop=stop))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.fits"]
    # a truncated file is refused before anything is written
    raw = (tmp_path / "a.fits").read_bytes()
    (tmp_path / "t.fits").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(AstroSRError, match="t.fits"):
        B.restore_fits_tiled(tmp_path / "t.fits", tmp_path / "t_out.fits", method="bicubic", chunk=32)
    assert not (tmp_path / "t_out.fits").exists()


# ------------------------------------------------------------------ batch on a cluster


def test_batch_equals_single_file_bit_for_bit(tmp_path, files, client):
    out = tmp_path / "out"
    res = B.batch(str(files[0].parent / "*.fits"), out, method="bicubic", scale=2, scheduler=client)
    assert [r.status for r in res.rows] == ["done"] * 4, res.table()
    for p in files:
        got = read_fits(B.output_path(p, out, method="bicubic", scale=2))
        ref = _ref(p, method="bicubic", scale=2)
        assert np.array_equal(got.data, ref.data)
        assert got.header[B.HASH_KEY] == B.content_hash(p, B.RestoreParams("bicubic", 2))
    assert "4 done" in res.table() and "img3.fits" in res.table()


def test_batch_reports_corrupt_file_and_finishes_the_rest(tmp_path, files, client):
    bad = files[0].parent / "img_bad.fits"
    bad.write_bytes(files[1].read_bytes()[:3000])  # header fine, data truncated
    events = []
    res = run(
        B.batch_job(str(files[0].parent / "*.fits"), tmp_path / "out", method="lanczos", scale=2, scheduler=client),
        on_progress=events.append,
    )
    status = {Path(r.file).name: r for r in res.rows}
    assert status["img_bad.fits"].status == "failed"
    assert "img_bad.fits" in status["img_bad.fits"].message and "truncated" in status["img_bad.fits"].message
    assert all(status[f"img{i}.fits"].status == "done" for i in range(4))
    assert not res.ok and res.count("failed") == 1
    assert not (tmp_path / "out" / "img_bad_lanczos_x2.fits").exists()
    assert len([e for e in events if e.values.get("file")]) == 5  # one progress event per file


def test_batch_resumes_skipping_done_files(tmp_path, files, client):
    out = tmp_path / "out"
    pattern = str(files[0].parent / "*.fits")
    first = B.batch([files[0], files[2]], out, method="bicubic", scheduler=client)  # an "interrupted" run
    assert first.count("done") == 2
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    again = B.batch(pattern, out, method="bicubic", scheduler=client)
    assert again.count("skipped") == 2 and again.count("done") == 2
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name in mtimes} == mtimes  # untouched
    assert B.batch(pattern, out, method="bicubic", scheduler=client).count("skipped") == 4
    # other parameters into the same names: refused unless --overwrite, never silently mixed
    files[1].write_bytes(files[3].read_bytes())  # input content changed -> hash differs
    changed = B.batch(pattern, out, method="bicubic", scheduler=client)
    row = [r for r in changed.rows if r.file.endswith("img1.fits")][0]
    assert row.status == "failed" and B.HASH_KEY in row.message
    assert B.batch(pattern, out, method="bicubic", scheduler=client, overwrite=True).count("done") == 1


def test_batch_stop_then_resume(tmp_path, files, client):
    out = tmp_path / "out"
    pattern = str(files[0].parent / "*.fits")
    stop = StopFlag()

    def after_first(ev):
        if ev.values.get("status") == "done":
            stop.set()

    res = run(B.batch_job(pattern, out, method="bicubic", scheduler=client, stop=stop), on_progress=after_first)
    k = res.count("done")
    assert 1 <= k < 4 and res.count("cancelled") == 4 - k
    client.run(lambda: None)  # let any task still running on a worker finish before we look
    again = B.batch(pattern, out, method="bicubic", scheduler=client)
    assert again.count("skipped") >= k and again.count("skipped") + again.count("done") == 4
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == sorted(
        B.output_path(p, out, method="bicubic", scale=2).name for p in files
    )


def test_batch_large_file_goes_tiled(tmp_path, files, client):
    out = tmp_path / "out"
    res = B.batch(files[3], out, method="bicubic", scheduler=client, max_memory=1000)  # any file is "large"
    assert res.rows[0].status == "done" and "tiled" in res.rows[0].message
    got, ref = read_fits(res.rows[0].output), _ref(files[3], method="bicubic", scale=2)
    assert np.nanmax(np.abs(got.data - ref.data)) <= 4 * np.finfo(np.float32).eps * np.nanmax(np.abs(ref.data))
    assert got.header[B.HASH_KEY] == B.content_hash(files[3], B.RestoreParams("bicubic", 2))


def test_content_hash_depends_on_bytes_and_parameters(files):
    p = B.RestoreParams("bicubic", 2)
    h = B.content_hash(files[0], p)
    assert len(h) == 64 and h == B.content_hash(files[0], B.RestoreParams("bicubic", 2, device="cuda"))
    assert h != B.content_hash(files[1], p)
    assert h != B.content_hash(files[0], B.RestoreParams("bicubic", 3))
    assert h != B.content_hash(files[0], B.RestoreParams("lanczos", 2))
    assert h != B.content_hash(files[0], B.RestoreParams("bicubic", 2, flux_exact=True))


def test_batch_input_errors(tmp_path, files):
    with pytest.raises(AstroSRError, match="matches no files"):
        B.batch(str(tmp_path / "nothing*.fits"), tmp_path / "o", method="bicubic")
    twin = tmp_path / "other"
    twin.mkdir()
    (twin / "img0.fits").write_bytes(files[0].read_bytes())
    with pytest.raises(AstroSRError, match="both would be written"):
        B.batch([files[0], twin / "img0.fits"], tmp_path / "o", method="bicubic")
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------ command line


def test_cli_batch_on_a_scheduler_address(tmp_path, files, client, capsys):
    out = tmp_path / "cli"
    argv = [
        "batch",
        str(files[0].parent / "img*.fits"),
        "-o",
        str(out),
        "--method",
        "bicubic",
        "--scheduler",
        client.scheduler.address,
        "--summary",
        str(tmp_path / "sum.csv"),
    ]
    assert main(argv) == 0
    text = capsys.readouterr()
    assert "4 done" in text.out and "[4/4]" in text.err
    assert main(argv) == 0 and "4 skipped" in capsys.readouterr().out
    from astropy.table import Table

    t = Table.read(tmp_path / "sum.csv", format="ascii.csv")
    assert list(t["status"]) == ["skipped"] * 4
    assert main(["batch", str(tmp_path / "none*.fits"), "-o", str(out), "--method", "bicubic"]) == 2


def test_public_restore_accepts_a_dask_array():
    """The Python API's restore() takes a dask array and returns a lazy result equal to numpy's."""
    import dask.array as da

    from napari_astrosr.restoration import restore

    img = np.random.default_rng(3).gamma(2.0, 5.0, size=(96, 80)).astype(np.float32)
    lazy = restore(da.from_array(img, chunks=(48, 40)), method="lanczos", scale=2)
    assert isinstance(lazy.data, da.Array) and lazy.data.shape == (192, 160)
    eager = restore(img, method="lanczos", scale=2)
    np.testing.assert_allclose(lazy.data.compute(), eager.data, rtol=1e-5, atol=1e-5 * float(img.max()))
    assert float(lazy.data.sum().compute()) == pytest.approx(float(img.sum()), rel=1e-5)


# ------------------------------------------------------------------ noise-aware projection, tiled


def test_restore_dask_flux_noise_matches_in_memory_quality(rng):
    """The Wiener gain is estimated per block, so tiles differ from the whole-image result at the noise level,
    not in quality: the error against the truth and the total flux agree (measured: rms error 12.12 both, exact
    projection 12.94; total within 6e-4)."""
    from napari_astrosr.core.projection import forward_model
    from napari_astrosr.core.psf import parse_psf

    hr = np.zeros((480, 400))
    yy, xx = np.mgrid[:480, :400]
    for _ in range(80):
        y, x = rng.uniform(0, 480), rng.uniform(0, 400)
        hr += rng.uniform(50, 2000) * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 2.0)
    clean = forward_model(hr, scale=2, psf=parse_psf("gaussian:1.0"))
    sigma = 0.01 * float(np.percentile(clean, 99.5))
    lr = (clean + rng.normal(0, sigma, clean.shape)).astype(np.float32)
    kw = dict(method="backprojection", scale=2, psf="gaussian:1.0", flux_noise="auto")
    ref = restoration.restore(lr, **kw).data
    out = B.restore_dask(lr, chunks=(120, 100), **kw).compute(scheduler="synchronous")
    exact = restoration.restore(lr, method="backprojection", scale=2, psf="gaussian:1.0").data
    err = lambda x: float(np.sqrt(np.mean((x - hr) ** 2)))  # noqa: E731
    assert err(out) < 1.02 * err(ref) and err(out) < err(exact), (err(out), err(ref), err(exact))
    assert abs(float(out.sum()) - float(lr.sum())) < 3 * sigma * np.sqrt(lr.size)
    # 'auto' is measured once for the whole image: every block got the same number
    assert isinstance(B.resolve_flux_noise("auto", lr), float)
    assert B.resolve_flux_noise("auto", lr) == pytest.approx(sigma, rel=0.2)


def test_batch_flux_noise_option(tmp_path, files, client, capsys):
    out = tmp_path / "out"
    code = main(
        [
            "batch",
            str(files[0].parent / "*.fits"),
            "-o",
            str(out),
            "--method",
            "backprojection",
            "--psf",
            "gaussian:1.0",
            "--flux-noise",
            "auto",
            "--scheduler",
            client.scheduler.address,
            "--quiet",
        ]
    )
    assert code == 0, capsys.readouterr().err
    got = read_fits(B.output_path(files[1], out, method="backprojection", scale=2))
    ref = _ref(files[1], method="backprojection", scale=2, psf="gaussian:1.0", flux_noise="auto")
    assert np.allclose(got.data, ref.data, rtol=0, atol=1e-4 * np.nanmax(np.abs(ref.data)))
    # 'auto' measures each file's noise and says what it chose (these clean files: exact)
    assert got.header["ASRPROJ"] == ref.header["ASRPROJ"] and '"noise_source"' in got.header["ASRPARAM"]
    # the option is part of the content hash: a re-run with exact projection is not mistaken for this one
    assert B.content_hash(
        files[1], B.RestoreParams("backprojection", 2, psf="gaussian:1.0", flux_noise="auto")
    ) != B.content_hash(files[1], B.RestoreParams("backprojection", 2, psf="gaussian:1.0"))
    code = main(
        [
            "batch",
            str(files[0]),
            "-o",
            str(tmp_path / "o2"),
            "--method",
            "bicubic",
            "--flux-noise",
            "auto",
            "--scheduler",
            client.scheduler.address,
        ]
    )
    assert code == 2 and "--flux-noise" in capsys.readouterr().err


def test_restore_dask_keep_sky_close_to_in_memory(rng):
    """The gate's rms is measured once per image; its background is sep's mesh of each padded block, so the
    gate adds to the network's own tiling difference (Restormer's attention sees the whole image; up to 6e-3
    of a star's peak here) no more than a small fraction of the noise."""
    pytest.importorskip("torch")
    img = _field(rng, (192, 160))
    diffs = {}
    for ks in (None, True):
        ref = restoration.restore(img, method="restormer", scale=2, keep_sky=ks, project=False)
        out = B.restore_dask(img, chunks=(96, 80), method="restormer", scale=2, keep_sky=ks, project=False).compute(
            scheduler="synchronous"
        )
        diffs[ks] = np.abs(out - ref.data)
        assert abs(float(out.sum()) - float(ref.data.sum())) < 1e-3 * abs(float(ref.data.sum()))
    noise = B.resolve_sky_rms(img, 2)
    assert noise == pytest.approx(ref.params["keep_sky_rms"], rel=0.05)
    assert np.max(diffs[True]) <= np.max(diffs[None]) + 0.25 * noise
    assert np.percentile(diffs[True], 99) <= np.percentile(diffs[None], 99) + 0.05 * noise


def test_batch_keep_sky_option(tmp_path, files, client, capsys):
    pytest.importorskip("torch")
    out = tmp_path / "out"
    code = main(
        [
            "batch",
            str(files[0].parent / "*.fits"),
            "-o",
            str(out),
            "--method",
            "restormer",
            "--keep-sky",
            "--no-projection",
            "--scheduler",
            client.scheduler.address,
            "--quiet",
        ]
    )
    assert code == 0, capsys.readouterr().err
    got = read_fits(B.output_path(files[1], out, method="restormer", scale=2))
    ref = _ref(files[1], method="restormer", scale=2, keep_sky=True, project=False)
    assert np.allclose(got.data, ref.data, rtol=0, atol=1e-5 * np.nanmax(np.abs(ref.data)))
    assert '"keep_sky"' in got.header["ASRPARAM"]
    assert B.content_hash(files[1], B.RestoreParams("restormer", 2, keep_sky=(2.0, 5.0))) != B.content_hash(
        files[1], B.RestoreParams("restormer", 2)
    )
    code = main(
        [
            "batch",
            str(files[0]),
            "-o",
            str(tmp_path / "o2"),
            "--method",
            "bicubic",
            "--keep-sky",
            "--scheduler",
            client.scheduler.address,
        ]
    )
    assert code == 2 and "--keep-sky" in capsys.readouterr().err

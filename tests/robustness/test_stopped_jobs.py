"""Jobs stopped midway (``progress.StopFlag`` set from inside ``on_progress``): a
StoppedError (an AstroSRError) or the documented best-so-far result, no partial output
file, the input unchanged, and the job really stops (it does not run to the end)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from napari_astrosr.exceptions import AstroSRError, StoppedError
from napari_astrosr.progress import StopFlag, run
from napari_astrosr.restoration import restore_job


def _stop_after(n: int):
    """A StopFlag and an on_progress that sets it after ``n`` events (and counts them)."""
    flag = StopFlag()
    seen: list = []

    def on_progress(ev):
        seen.append(ev)
        if len(seen) >= n:
            flag.set()

    return flag, on_progress, seen


@pytest.fixture
def image():
    rng = np.random.default_rng(0)
    data = rng.normal(10, 1, (48, 48)).astype(np.float32)
    data[20:23, 30:33] += 300
    return data


@pytest.mark.parametrize("method,kw", [("bicubic", {}), ("richardson-lucy", {"psf": "gaussian:1.0"})])
def test_classical_restore_stopped(image, method, kw):
    before = image.copy()
    flag, on_progress, seen = _stop_after(1)
    with pytest.raises(StoppedError, match="stopped"):
        run(restore_job(image, method=method, scale=2, stop=flag, **kw), on_progress=on_progress)
    assert issubclass(StoppedError, AstroSRError)
    np.testing.assert_array_equal(image, before)


def test_flux_exact_projection_stopped(image):
    flag, on_progress, seen = _stop_after(2)  # after the interpolation, before the projection
    with pytest.raises(StoppedError, match="flux-exact"):
        run(
            restore_job(image, method="bicubic", scale=2, flux_exact=True, psf="none", stop=flag),
            on_progress=on_progress,
        )


def _tiny_checkpoint(tmp_path: Path) -> Path:
    torch = pytest.importorskip("torch")
    from napari_astrosr.models.checkpoints import save_checkpoint
    from napari_astrosr.models.registry import build_model, resolve_config

    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = resolve_config("fisr", preset="tiny")
    m = build_model("fisr", preset=None, scale=2, **cfg)
    return save_checkpoint(
        tmp_path / "fisr.pt", m, name="fisr", preset="tiny", scale=2, config=cfg, normalization={"kind": "median_std"}
    )


def test_network_restore_stopped_between_tiles(tmp_path, image):
    pt = _tiny_checkpoint(tmp_path)
    flag, on_progress, seen = _stop_after(2)
    with pytest.raises(StoppedError, match="tiles"):
        run(
            restore_job(image, method="fisr", scale=2, model=pt, tile=16, device="cpu", stop=flag, project=False),
            on_progress=on_progress,
        )
    totals = [ev.total for ev in seen if ev.total]
    assert len(seen) < max(totals) + 2, "the job ran on after the stop"


def test_tiled_fits_restore_stopped_leaves_no_partial_file(tmp_path):
    from napari_astrosr.batch import restore_fits_tiled_job

    src = tmp_path / "in.fits"
    fits.PrimaryHDU(np.random.default_rng(1).normal(10, 1, (96, 96)).astype(np.float32)).writeto(src)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    flag, on_progress, seen = _stop_after(2)
    with pytest.raises(StoppedError, match="no output written"):
        run(
            restore_fits_tiled_job(
                src, out_dir / "sr.fits", method="bicubic", scale=2, chunk=32, scheduler="synchronous", stop=flag
            ),
            on_progress=on_progress,
        )
    assert list(out_dir.iterdir()) == [], "partial output left"
    assert hashlib.sha256(src.read_bytes()).hexdigest() == digest


def test_dip_coadd_stopped_returns_best_so_far():
    pytest.importorskip("torch")
    from napari_astrosr.core.psf import gaussian_psf
    from napari_astrosr.models.dip_coadd import dip_coadd_job

    rng = np.random.default_rng(2)
    frames = rng.normal(5, 1, (2, 24, 24)).astype(np.float32)
    psf = gaussian_psf(1.0)
    flag, on_progress, seen = _stop_after(2)
    res = run(
        dip_coadd_job(
            frames,
            psfs=[psf, psf],
            iterations=5000,
            min_iterations=1,
            preview_every=5,
            device="cpu",
            hidden=8,
            metrics=False,
            stop=flag,
        ),
        on_progress=on_progress,
    )
    assert res.data.shape == (24, 24) and np.isfinite(res.data).all()
    # it stopped long before its 5000-step budget
    assert max(ev.step for ev in seen) < 1000

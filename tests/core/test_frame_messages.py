"""Coadd input errors name the file and say what to do (issue 22)."""

import numpy as np
import pytest
from astropy.io import fits

from napari_astrosr.core.frames import as_stack, load_frames
from napari_astrosr.exceptions import AstroSRError


def _write(path, data):
    fits.PrimaryHDU(np.asarray(data, dtype=np.float32)).writeto(path)
    return path


def test_a_fully_masked_file_is_named(tmp_path):
    rng = np.random.default_rng(0)
    a = _write(tmp_path / "good.fits", rng.normal(10, 1, (32, 32)))
    b = _write(tmp_path / "blank.fits", np.full((32, 32), np.nan))
    with pytest.raises(AstroSRError, match=r"^blank\.fits: every pixel is masked .*drop this frame"):
        load_frames([a, b])


def test_a_noise_map_without_valid_values_is_blamed_not_the_image():
    rng = np.random.default_rng(1)
    frames = rng.normal(10, 1, (2, 16, 16))
    sig = np.ones_like(frames)
    sig[1] = np.nan
    with pytest.raises(
        AstroSRError, match=r"^b\.fits: its noise map has no finite value > 0; fix its noise/weight map"
    ):
        as_stack(frames, sigmas=sig, names=["a.fits", "b.fits"])


def test_nan_weights_are_reported_as_the_weight_maps_problem(tmp_path):
    rng = np.random.default_rng(2)
    a = _write(tmp_path / "a.fits", rng.normal(10, 1, (32, 32)))
    b = _write(tmp_path / "b.fits", rng.normal(10, 1, (32, 32)))
    wa = _write(tmp_path / "wa.fits", np.ones((32, 32)))
    wb = _write(tmp_path / "wb.fits", np.full((32, 32), np.nan))
    with pytest.raises(AstroSRError, match=r"wb\.fits: no finite weight > 0 for b\.fits; fix the weight map"):
        load_frames([a, b], weights=[wa, wb])

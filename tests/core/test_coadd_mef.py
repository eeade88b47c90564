"""A single multi-extension file of same-name image HDUs is a stack of frames for the coadd."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from napari_astrosr.cli import main
from napari_astrosr.core.coadd import load_frames
from napari_astrosr.exceptions import AstroSRError

SAMPLE = Path(__file__).resolve().parents[2] / "src/napari_astrosr/data/sample/decam_stack.fits"


def test_bundled_mef_sample_is_a_stack_with_per_frame_headers():
    fs = load_frames([SAMPLE], psf_from_fwhm_key="FWHM", subtract_background=False)
    assert fs.n == 5 and fs.shape == (128, 128)
    # each frame keeps its own header: the FWHM keyword differs per frame, so do the PSFs
    fwhm = [fits.getval(SAMPLE, "FWHM", ext=i) for i in range(1, 6)]
    assert len(set(fwhm)) > 1
    widths = [float((p * (np.arange(p.shape[1]) - p.shape[1] // 2) ** 2).sum()) for p in fs.psfs]
    assert np.argsort(widths).tolist() == np.argsort(fwhm).tolist()
    np.testing.assert_array_equal(fs.data[2], np.nan_to_num(fits.getdata(SAMPLE, 3)))


def test_cli_coadd_accepts_the_mef_sample(tmp_path):
    out = tmp_path / "co.fits"
    assert main(["coadd", str(SAMPLE), "-o", str(out), "--method", "ivar"]) == 0
    assert fits.getdata(out).shape == (128, 128)


def test_mef_with_different_extnames_is_not_a_stack(tmp_path):
    # SCI + WHT of one exposure are not two frames
    rng = np.random.default_rng(0)
    p = tmp_path / "sci_wht.fits"
    fits.HDUList(
        [
            fits.PrimaryHDU(),
            fits.ImageHDU(rng.random((32, 32)).astype(np.float32), name="SCI"),
            fits.ImageHDU(np.ones((32, 32), np.float32), name="WHT"),
        ]
    ).writeto(p)
    with pytest.raises(AstroSRError, match="at least 2 frames"):
        load_frames([p])

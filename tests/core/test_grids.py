"""core.grids: the grid logic shared by the CLI, the pipeline and the widgets."""

import numpy as np
import pytest
from astropy.wcs import WCS

from napari_astrosr.core.grids import (
    consistency_residual,
    grid_relation,
    lq_scale,
    match_grids,
)
from napari_astrosr.core.resample import upsample
from napari_astrosr.exceptions import AstroSRError


def _wcs(pix_deg: float) -> WCS:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.cdelt = [-pix_deg, pix_deg]
    w.wcs.crpix = [0.5, 0.5]  # pixel corner (-0.5, -0.5) at crval for both grids
    return w


def test_consistency_residual_is_zero_for_a_flux_conserving_upsample_and_sees_moved_flux():
    lr = np.random.default_rng(0).gamma(2.0, 1.0, (17, 20)).astype(np.float32)
    up = upsample(lr.astype(np.float64), 2, method="bicubic")
    res = consistency_residual(up, lr, scale=2)
    assert res.shape == lr.shape and res.dtype == np.float32
    assert np.abs(res).max() < 1e-4 * lr.max()
    moved = up.copy()
    moved[0, 0] += 5.0  # flux added inside input pixel (0, 0)
    res2 = consistency_residual(moved, lr, scale=2)
    assert res2[0, 0] == pytest.approx(5.0, rel=1e-4) and np.abs(res2.ravel()[1:]).max() < 1e-4 * lr.max()


def test_grid_relation_and_match_grids_block_sum_the_finer_image():
    ref = np.ones((10, 12), np.float32)
    pred = np.ones((30, 36), np.float32)
    assert grid_relation(ref.shape, pred.shape) == ("prediction", 3)
    r, p, grid, note = match_grids(ref, pred)
    assert grid == "reference" and p.shape == ref.shape and np.allclose(p, 9.0) and "x3" in note
    with pytest.raises(AstroSRError, match="not on compatible grids"):
        grid_relation((10, 12), (21, 24), what="astrosr evaluate")


def test_lq_scale_from_shapes_scale_and_wcs():
    assert lq_scale((96, 96), (96, 96)) == 1
    assert lq_scale((97, 97), (48, 48)) == 2
    assert lq_scale((96, 96), (32, 32), scale=3) == 3
    # the WCS decides even when the shapes alone would say something else
    assert lq_scale((96, 96), (24, 24), gt_wcs=_wcs(1e-5), lq_wcs=_wcs(4e-5)) == 4
    with pytest.raises(AstroSRError, match="only integer factors"):
        lq_scale((96, 96), (38, 38), gt_wcs=_wcs(1e-5), lq_wcs=_wcs(2.5e-5), lq_name="--input lq.fits")
    with pytest.raises(AstroSRError, match="larger than the reference"):
        lq_scale((48, 48), (96, 96))
    with pytest.raises(AstroSRError, match="not an integer factor"):
        lq_scale((96, 96), (48, 32))

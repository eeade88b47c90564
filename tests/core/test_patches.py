"""HR/LR patch pairs and the .npz dataset format."""

from __future__ import annotations

import numpy as np
import pytest

from napari_astrosr.core import patches as T
from napari_astrosr.core.resample import block_sum
from napari_astrosr.exceptions import AstroSRError


def _pair(n=64, s=2, seed=0):
    hr = np.random.default_rng(seed).normal(size=(n * s, n * s))
    return hr, block_sum(hr, s)


def test_pairs_aligned_and_positions():
    hr, lr = _pair()
    ps = T.extract_patch_pairs(hr, lr, scale=2, patch=16, stride=8)
    assert len(ps) == 7 * 7 and ps.hr.shape == (49, 32, 32) and ps.lr.shape == (49, 16, 16)
    for i in (0, 10, 48):
        y, x = ps.positions[i]
        np.testing.assert_allclose(block_sum(ps.hr[i].astype(np.float64), 2), ps.lr[i], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(ps.lr[i], lr[y : y + 16, x : x + 16], rtol=1e-6)


def test_validity_filter():
    hr, lr = _pair()
    lr = lr.copy()
    hr = hr.copy()
    lr[:16, :16] = np.nan  # whole first LR patch invalid
    hr[64:, 64:][:6, :32] = np.nan  # 6 rows of 32 in HR patch (2,2): 18.75% invalid -> kept
    hr[96:, :32] = np.nan  # HR patch at LR (48, 0): 100% invalid -> dropped
    ps = T.extract_patch_pairs(hr, lr, scale=2, patch=16)
    pos = {tuple(p) for p in ps.positions}
    assert (0, 0) not in pos and (48, 0) not in pos and (32, 32) in pos
    assert len(ps) == 16 - 2


def test_save_load_round_trip(tmp_path):
    hr, lr = _pair(32)
    ps = T.extract_patch_pairs(hr, lr, scale=2, patch=8, stride=8)
    path = T.save_patches(tmp_path / "set.npz", ps)
    back = T.load_patches(path)
    np.testing.assert_array_equal(back.hr, ps.hr)
    np.testing.assert_array_equal(back.positions, ps.positions)
    assert back.scale == 2 and back.meta["patch"] == 8
    with pytest.raises(AstroSRError):
        T.save_patches(path, ps)
    with pytest.raises(AstroSRError):
        T.save_patches(tmp_path / "set.pkl", ps)
    np.savez(tmp_path / "bad.npz", hr=np.zeros((1, 4, 4)))
    with pytest.raises(AstroSRError):
        T.load_patches(tmp_path / "bad.npz")


def test_bad_input():
    hr, lr = _pair(16)
    with pytest.raises(AstroSRError):
        T.extract_patch_pairs(hr[:20], lr, scale=2, patch=8)
    with pytest.raises(AstroSRError):
        T.extract_patch_pairs(hr, lr, scale=0, patch=8)
    with pytest.raises(AstroSRError):
        T.extract_patch_pairs(hr, lr, scale=2, patch=32)
    assert len(T.extract_patch_pairs(hr, np.full_like(lr, np.nan), scale=2, patch=8)) == 0

"""Bundled networks do not invent sources on blank fields and do not broaden point sources."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from hallucination import blank_counts, fwhm_stats, point_grid, _restore  # noqa: E402

from napari_astrosr.training.checkpoints import bundled_checkpoint  # noqa: E402

NETS = [(n, s) for n in ("fisr", "restormer") for s in (2, 4) if bundled_checkpoint(n, s)]


def test_some_bundled_network_exists():
    assert NETS, "no bundled weights in src/napari_astrosr/weights"


@pytest.mark.parametrize("name,scale", NETS)
def test_blank_field_gets_no_new_sources(name, scale):
    n_in, n_out = blank_counts(name, scale=scale, size=64, seeds=(0, 1))
    assert n_out <= n_in, (n_in, n_out)


@pytest.mark.parametrize("name,scale", NETS)
def test_point_sources_not_broadened(name, scale):
    hr, lr, pos = point_grid(scale=scale, n=4)
    f_bic, _ = fwhm_stats(_restore(lr, "bicubic", scale), pos)
    f_net, flux = fwhm_stats(_restore(lr, name, scale), pos)
    _, flux_true = fwhm_stats(hr, pos)
    assert f_net <= f_bic * 1.02, (f_net, f_bic)
    # and the point sources keep their flux (within 10% in a 15x15 box)
    assert np.median(np.abs(flux / flux_true - 1)) < 0.1

"""Bundled networks do not invent sources on blank fields and do not broaden point sources."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from hallucination import _restore, blank_counts, fwhm_stats, point_grid  # noqa: E402

from napari_astrosr.models.checkpoints import bundled_checkpoint  # noqa: E402

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


TRANSLATORS = [n for n in ("pix2wgan", "pix2wgan-cascade") if bundled_checkpoint(n, 1)]


@pytest.mark.parametrize("name", TRANSLATORS)
def test_translation_blank_ground_like_field_gets_no_new_sources(name):
    """Noise as a reprojected ground image has it (white on a 4x coarser grid, upsampled): no new sources.
    (White noise on the fine grid itself is out of distribution: there the networks make 1-3 blobs from 6
    fields, see docs/results_hallucination.md.)"""
    from hallucination import blank_counts_translation

    n_in, n_out = blank_counts_translation(name, kind="ground", seeds=(0, 1, 2))
    assert n_out <= n_in, (n_in, n_out)


def _translation_grid():
    from hallucination import GROUND_SIGMA

    hr, lr, pos = point_grid(scale=1, n=4, spacing=32, noise=0.2, lr_psf_sigma=GROUND_SIGMA)
    levels = np.array([p[2] for p in pos])
    return hr, lr, pos, levels, f"gaussian:{GROUND_SIGMA}"


def _per_level(fl, fl_true, levels):
    return np.array([np.median(fl[levels == v] / fl_true[levels == v]) for v in sorted(set(levels))])


@pytest.mark.parametrize("name", TRANSLATORS)
def test_translation_sharpens_points_and_flux_noise_keeps_their_flux(name):
    from napari_astrosr.restoration import restore

    hr, lr, pos, levels, psf = _translation_grid()
    f_in, _ = fwhm_stats(lr, pos, half=10)
    f_net, _ = fwhm_stats(_restore(lr, name, 1), pos, half=10)
    _, flux_true = fwhm_stats(hr, pos, half=10)
    assert f_net < f_in, (f_net, f_in)  # sharpened, not broadened
    out = restore(lr, method=name, scale=1, psf=psf, flux_exact=True, flux_noise="auto").data
    ratio = _per_level(fwhm_stats(out, pos, half=10)[1], flux_true, levels)
    assert np.all(np.abs(ratio - 1) < 0.15), ratio  # measured 1.05-1.07 at 300 / 1000 / 5000 (2026-12-06)


@pytest.mark.xfail(
    strict=True,
    reason="known: Pix2WGAN alone is not photometric on point sources (trained on "
    "galaxies): faint stars 0.27x (cascade 0.06x), bright 1.8x; use --flux-exact --flux-noise",
)
@pytest.mark.parametrize("name", TRANSLATORS)
def test_translation_alone_keeps_point_source_flux(name):
    hr, lr, pos, levels, _ = _translation_grid()
    _, flux_true = fwhm_stats(hr, pos, half=10)
    ratio = _per_level(fwhm_stats(_restore(lr, name, 1), pos, half=10)[1], flux_true, levels)
    assert np.all(np.abs(ratio - 1) < 0.15), ratio


@pytest.mark.skipif(bundled_checkpoint("restormer", 1) is None, reason="no bundled restormer x1 weights")
def test_restormer_x1_blank_field_and_point_sources():
    """Same-size deconvolution, the network alone: white noise gets no sources; blurred point sources get
    sharper, not broader, and keep their flux (10% in a 15x15 box)."""
    n_in, n_out = blank_counts("restormer", scale=1, size=64, seeds=(0, 1))
    assert n_out <= n_in, (n_in, n_out)
    hr, lr, pos = point_grid(scale=1, n=4, lr_psf_sigma=1.5)
    f_in, _ = fwhm_stats(lr, pos)
    f_net, flux = fwhm_stats(_restore(lr, "restormer", 1), pos)
    _, flux_true = fwhm_stats(hr, pos)
    assert f_net < f_in, (f_net, f_in)
    assert np.median(np.abs(flux / flux_true - 1)) < 0.1

"""Training data: deterministic, split by sky region, flux-consistent normalisation, real files."""

from __future__ import annotations

import numpy as np
import pytest

from napari_astrosr.config import config_from_dict
from napari_astrosr.training.data import build_image_pairs, build_train_data, denormalize, normalize

from conftest import shared_file


def _cfg(sources, **data):
    return config_from_dict(
        {
            "name": "d",
            "model": {"name": "fisr", "preset": "tiny", "scale": 2},
            "data": {
                "scale": 2,
                "patch": 16,
                "realizations": 1,
                "psf": {"kind": "random", "family": "mixed"},
                "noise": {"prob": 1.0, "sigma_rel_min": 0.01, "sigma_rel_max": 0.01},
                "sources": sources,
                **data,
            },
            "run": {"seed": 5},
        }
    )


SIM = [{"kind": "simulate", "simulate": "starfield", "count": 1, "size": 96}]


def test_deterministic_with_seed():
    a = build_image_pairs(_cfg(SIM))
    b = build_image_pairs(_cfg(SIM))
    assert len(a) == len(b) == 2  # one train field + one independent validation field
    for p, q in zip(a, b):
        np.testing.assert_array_equal(p.lr, q.lr)
        np.testing.assert_array_equal(p.hr, q.hr)
    assert {p.split for p in a} == {"train", "val"}
    assert not np.array_equal(a[0].hr, a[1].hr)  # different sky, not a copy


def test_star_field_density_sets_the_number_of_stars():
    """data.sources[].density: a crowded simulated field has ~5x the stars of the default (medium) one."""
    from napari_astrosr.core.detection import detect_sources

    def n_found(**kw):
        hr = build_image_pairs(_cfg([{**SIM[0], "size": 128, **kw}]))[0].hr
        return len(detect_sources(hr, thresh=5.0))

    medium, crowded = n_found(), n_found(density="crowded")
    assert medium > 3 and crowded > 2.5 * medium
    assert n_found(density="medium") == medium  # the default is medium: existing configs are unchanged


def test_normalisation_round_trip_and_units():
    rng = np.random.default_rng(0)
    x = rng.normal(5, 2, (3, 1, 8, 8)).astype(np.float32)
    med, std = np.float32(5.0), np.float32(2.0)
    y = normalize(x, med, std, unit_factor=4.0)
    np.testing.assert_allclose(denormalize(y, med, std, unit_factor=4.0), x, rtol=1e-5)
    # a flat LR pixel of value v splits into 4 HR pixels of v/4: both normalise to the same number
    assert normalize(np.float32(8.0), med, std) == normalize(np.float32(2.0), med, std, unit_factor=4.0)


def test_halves_split_by_sky_region(shared_data):
    f = "hst_wfc3ir_f105w_a2744/abell_2744_group_of_galaxies_f105w.fits.gz"
    shared_file(f)
    cfg = _cfg([{"kind": "degrade", "files": [f], "split": "halves"}], psf={"kind": "spec", "spec": "gaussian:1.0"})
    pairs = build_image_pairs(cfg)
    tr = [p for p in pairs if p.split == "train"]
    va = [p for p in pairs if p.split == "val"]
    assert len(tr) == len(va) == 1
    assert tr[0].hr.shape[1] + va[0].hr.shape[1] == 100 and tr[0].lr.shape[1] * 2 == tr[0].hr.shape[1]
    # the degradation is flux-conserving (clean part): LR total ~ HR total within the noise
    noise = pairs[0].params["noise_sigma"] * np.sqrt(tr[0].lr.size)
    assert abs(tr[0].lr.sum() - tr[0].hr.sum()) < 5 * noise + 0.02 * abs(tr[0].hr.sum())


def test_patches_pass_valid_rule_and_are_normalised(shared_data):
    f = "hst_wfc3ir_f105w_a2744/abell_2744_group_of_galaxies_f105w.fits.gz"
    shared_file(f)
    cfg = _cfg(SIM + [{"kind": "degrade", "files": [f], "split": "halves"}])
    data = build_train_data(cfg)
    assert data.train.x.shape[1:] == (1, 16, 16) and data.train.y.shape[1:] == (1, 32, 32)
    assert data.train.fmap_in.shape == data.train.x.shape
    assert np.isfinite(data.train.x).all() and np.isfinite(data.train.y).all()
    assert "abell_2744_group_of_galaxies_f105w.fits.gz[left]" in data.summary["train_images"]
    assert "abell_2744_group_of_galaxies_f105w.fits.gz[right]" in data.summary["val_images"]
    # the target, brought back to LR units and block-summed, matches the input's scale (flux-conserving)
    y = data.train.y[:, 0]
    ym = y.reshape(len(y), 16, 2, 16, 2).mean(axis=(2, 4))
    assert np.corrcoef(ym.ravel(), data.train.x[:, 0].ravel())[0, 1] > 0.8


def test_real_psf_file_resampled_to_image_scale(shared_data):
    shared_file("hst_hsc_pair_cosmos_A/PSF_HSC.fits")
    f = "hst_wfc3ir_f105w_a2744/abell_2744_group_of_galaxies_f105w.fits.gz"
    shared_file(f)
    cfg = _cfg(
        [{"kind": "degrade", "files": [f], "split": "halves"}],
        psf={"kind": "spec", "spec": "hst_hsc_pair_cosmos_A/PSF_HSC.fits", "plane": 2, "pixel_scale": 0.168},
    )
    pairs = build_image_pairs(cfg)
    assert pairs[0].params["psf_resample"] == pytest.approx(0.168 / 0.06, rel=0.01)


def test_one_sided_split_is_an_error():
    from napari_astrosr.exceptions import AstroSRError

    with pytest.raises(AstroSRError, match="no training images"):
        build_image_pairs(_cfg([{"kind": "simulate", "simulate": "starfield", "count": 1, "size": 64, "split": "val"}]))


def test_paired_source_from_real_style_files(tmp_path):
    """A real LR/HR pair on matching grids (here: written FITS files) becomes train/val halves."""
    from napari_astrosr.core.fits_io import write_fits
    from napari_astrosr.core.resample import block_sum

    rng = np.random.default_rng(1)
    hr = rng.gamma(2.0, 1.0, (64, 64)).astype(np.float32)
    lr = block_sum(hr, 2).astype(np.float32)
    write_fits(tmp_path / "hr.fits", hr)
    write_fits(tmp_path / "lr.fits", lr)
    cfg = config_from_dict(
        {
            "name": "p",
            "model": {"name": "fisr", "preset": "tiny", "scale": 2},
            "data": {
                "root": str(tmp_path),
                "scale": 2,
                "patch": 8,
                "sources": [{"kind": "paired", "lr": "lr.fits", "hr": "hr.fits", "split": "halves"}],
            },
        }
    )
    pairs = build_image_pairs(cfg)
    assert [p.split for p in pairs] == ["train", "val"]
    np.testing.assert_allclose(pairs[0].lr, lr[:, :16])
    np.testing.assert_allclose(pairs[1].hr, hr[:, 32:])
    bad = cfg.model_dump(mode="json")
    bad["data"]["sources"][0]["hr"] = "lr.fits"  # HR not covering LR x scale
    from napari_astrosr.exceptions import AstroSRError

    with pytest.raises(AstroSRError, match="does not match"):
        build_image_pairs(config_from_dict(bad))


def test_simulated_source_pixel_scale_resamples_a_psf_file(tmp_path):
    """Simulations carry no WCS: a PSF file with psf.pixel_scale needs the source's pixel_scale."""
    from napari_astrosr.core.fits_io import write_fits
    from napari_astrosr.core.psf import gaussian_psf
    from napari_astrosr.exceptions import AstroSRError

    write_fits(tmp_path / "psf.fits", gaussian_psf(1.0).astype(np.float32))
    psf = {"kind": "spec", "spec": "psf.fits", "pixel_scale": 0.2}
    src = {"kind": "simulate", "simulate": "starfield", "count": 1, "size": 64}
    pairs = build_image_pairs(_cfg([{**src, "pixel_scale": 0.1}], root=str(tmp_path), psf=psf))
    assert pairs[0].params["psf_resample"] == pytest.approx(2.0)
    assert pairs[0].psf.shape[0] > gaussian_psf(1.0).shape[0]  # twice as wide on the finer grid
    with pytest.raises(AstroSRError, match="give its pixel_scale"):
        build_image_pairs(_cfg([src], root=str(tmp_path), psf=psf))
    with pytest.raises(AstroSRError, match="pixel_scale is for 'simulate'"):
        _cfg([{"kind": "degrade", "files": ["x.fits"], "pixel_scale": 0.1}])


def test_psf_sigma_range_sets_the_training_blur():
    """``psf.sigma_range`` (the x1 galaxy recipe: broader than STAR's 0.8-1.2 px) reaches every degraded pair."""
    pairs = build_image_pairs(_cfg(SIM, psf={"kind": "random", "family": "gaussian", "sigma_range": [1.6, 1.9]}))
    sig = [float(p.params["psf"].split(":")[1]) for p in pairs]
    assert len(sig) == 2 and all(1.6 <= s <= 1.9 for s in sig)
    from napari_astrosr.exceptions import AstroSRError

    with pytest.raises(AstroSRError, match="sigma_range"):
        _cfg(SIM, psf={"kind": "random", "sigma_range": [2.0, 1.0]})

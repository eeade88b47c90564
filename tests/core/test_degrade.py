"""The STAR degradation pipeline."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_astrosr.core import degrade as D
from napari_astrosr.core import psf as P
from napari_astrosr.core.fits_io import read_fits
from napari_astrosr.exceptions import AstroSRError

from conftest import shared_file


@settings(max_examples=12, deadline=None)
@given(
    seed=st.integers(0, 999),
    scale=st.sampled_from([2, 3, 4, 2.5]),
    psf=st.sampled_from([None, "gaussian:1.0", "airy:2.0", "gaussian+airy:1,2", "moffat:3"]),
)
def test_noiseless_degrade_conserves_flux(seed, scale, psf):
    rng = np.random.default_rng(seed)
    hr = rng.gamma(0.4, 3.0, size=(60, 60))
    out = D.degrade(hr, scale=scale, psf=psf)
    assert np.nansum(out.data) == pytest.approx(hr.sum(), rel=1e-6)
    n = int(np.ceil(60 / scale - 1e-9))
    assert out.data.shape == (n, n)


@pytest.mark.parametrize(
    "rel",
    [
        "hst_hsc_pair_cosmos_A/Cut_HST.fits",
        "hst_wfc3ir_f105w_a2744/abell_2744_dwarf_galaxy_f105w.fits.gz",
        "hst_cosmos_acs_f814w_galaxy/147246.0_150.416558_1.998697_masknoise.fits",
    ],
)
def test_real_hst_degrade_conserves_flux_and_sky(rel):
    img = read_fits(shared_file(rel), dtype="float64")
    hr = img.data[:200, :200]  # divisible by 2 and 4
    for scale in (2, 4):
        out = D.degrade(hr, scale=scale, psf="gaussian+airy:1.0,2.0", wcs=img.wcs, header=img.header)
        assert np.nansum(out.data) == pytest.approx(np.nansum(hr), rel=1e-6)
        # same sky: the HR image centre maps onto the LR centre
        ra, dec = img.wcs.pixel_to_world_values(99.5, 99.5)
        x, y = out.wcs.world_to_pixel_values(ra, dec)
        assert abs(x - (100 / scale - 0.5)) < 0.05 and abs(y - (100 / scale - 0.5)) < 0.05
        assert out.header["ASRDSCAL"] == scale and out.header["ASRDPSF"].startswith("gaussian+airy")


def test_interpolation_methods_do_not_conserve_source_flux():
    # STAR Fig. 5: interpolating instead of integrating loses/gains point-source flux
    hr = np.zeros((64, 64))
    hr += 1.0
    hr[30, 30] += 1000.0
    area = D.degrade(hr, scale=4, psf="gaussian:0.6", method="area").data
    bil = D.degrade(hr, scale=4, psf="gaussian:0.6", method="bilinear").data
    assert area.sum() == pytest.approx(hr.sum(), rel=1e-9)
    assert abs(bil.sum() - hr.sum()) > 0.1 * 1000


def test_noise_reproducible_and_recorded():
    hr = np.full((40, 40), 100.0)
    a = D.degrade(hr, scale=2, noise="poisson", seed=5)
    b = D.degrade(hr, scale=2, noise="poisson", seed=5)
    c = D.degrade(hr, scale=2, noise="poisson", seed=6)
    np.testing.assert_array_equal(a.data, b.data)
    assert not np.array_equal(a.data, c.data)
    # Poisson on 400 counts per LR pixel: std ~ 20
    assert 15 < a.data.std() < 25 and abs(a.data.mean() - 400) < 3
    g = D.degrade(hr, scale=2, noise="gaussian:3", seed=1)
    assert 2.5 < (g.data - 400).std() < 3.5
    assert g.header["ASRDSEED"] == 1 and "gaussian" in g.header["ASRDNOIS"]
    # dict form: gain and sky
    d = D.degrade(hr, scale=2, noise={"kind": "poisson", "gain": 4.0, "sky": 50, "read_noise": 2.0}, seed=1)
    assert 7 < d.data.std() < 13


def test_star_presets_random_psf():
    rng = np.random.default_rng(0)
    for _ in range(5):
        k, p = D.random_star_psf(rng, "gaussian+airy")
        assert 0.8 <= p["sigma"] <= 1.2 and 1.9 <= p["radius"] <= 2.2
        assert abs(k.sum() - 1) < 1e-12
    a = D.degrade(np.ones((32, 32)), scale=2, psf="star", seed=3)
    b = D.degrade(np.ones((32, 32)), scale=2, psf="star", seed=3)
    assert a.params["psf"] == b.params["psf"] and 0.8 <= a.params["psf_params"]["sigma"] <= 1.2


def test_bad_input():
    hr = np.ones((32, 32))
    for bad in (0, -2, 0.5):
        with pytest.raises(AstroSRError):
            D.degrade(hr, scale=bad)
    with pytest.raises(AstroSRError, match="larger than the image"):
        D.degrade(np.ones((8, 8)), scale=2, psf=P.gaussian_psf(3.0))
    with pytest.raises(AstroSRError, match="NaN"):
        D.degrade(np.full((8, 8), np.nan), scale=2)
    for noise in ("gaussian", "poisson:-1", "laplace:1", {"kind": "gaussian"}):
        with pytest.raises(AstroSRError):
            D.degrade(hr, scale=2, noise=noise)
    with pytest.raises(AstroSRError):
        D.degrade(hr, scale=2, method="nearest")


def test_random_psf_sigma_range_widens_only_sigma():
    # no sigma_range: the same draws as STAR's presets (configs without it reproduce their data)
    a = D.random_star_psf(np.random.default_rng(4), "gaussian+airy")[1]
    b = D.random_star_psf(np.random.default_rng(4), "gaussian+airy", sigma_range=None)[1]
    assert a == b
    sig = [
        D.random_star_psf(np.random.default_rng(i), "gaussian", sigma_range=(1.5, 2.0))[1]["sigma"] for i in range(20)
    ]
    assert min(sig) >= 1.5 and max(sig) <= 2.0 and max(sig) - min(sig) > 0.1
    k, p = D.random_star_psf(np.random.default_rng(1), "gaussian+airy", sigma_range=(1.75, 1.75))
    assert p["sigma"] == 1.75 and 1.9 <= p["radius"] <= 2.2 and abs(k.sum() - 1) < 1e-12
    with pytest.raises(AstroSRError, match="sigma_range"):
        D.random_star_psf(0, "gaussian", sigma_range=(2.0, 1.0))

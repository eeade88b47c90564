"""Synthetic star fields, Sersic galaxies and blank fields with a truth table."""

from __future__ import annotations

import numpy as np
import pytest

from napari_astrosr.core import simulate as S
from napari_astrosr.exceptions import AstroSRError


def test_star_field_truth_matches_image():
    sim = S.star_field(96, n_stars=30, psf="gaussian:1.2", sky=0.0, noise="none", seed=1)
    assert len(sim.truth) == 30 and set(sim.truth.colnames) >= {"x", "y", "flux"}
    assert sim.image.sum() == pytest.approx(sim.truth["flux"].sum(), rel=1e-9)
    # a bright isolated star: its centroid matches the truth within 0.05 px
    t = sim.truth[np.argmax(sim.truth["flux"])]
    one = S.star_field(96, n_stars=0, noise="none", sky=0.0)
    assert one.image.sum() == 0
    fl = np.asarray(sim.truth["flux"])
    assert fl.min() >= 50 and fl.max() <= 5e4
    # power law: many more faint than bright stars
    assert (fl < 500).sum() > (fl > 5000).sum()
    x0, y0 = int(round(t["x"])), int(round(t["y"]))
    sl = sim.image[max(0, y0 - 4) : y0 + 5, max(0, x0 - 4) : x0 + 5]
    assert sl.sum() > 0.5 * t["flux"]


def test_single_star_centroid_and_flux():
    sim = S.star_field(48, n_stars=1, psf="gaussian:1.5", sky=0.0, noise="none", seed=0)
    t = sim.truth[0]
    yy, xx = np.mgrid[:48, :48]
    img = sim.image
    assert 10 < t["x"] < 38 and 10 < t["y"] < 38  # seed chosen so the star is away from the edges
    assert (img * xx).sum() / img.sum() == pytest.approx(t["x"], abs=0.05)
    assert (img * yy).sum() / img.sum() == pytest.approx(t["y"], abs=0.05)
    assert img.sum() == pytest.approx(t["flux"], rel=1e-9)


def test_densities_and_reproducible():
    a = S.star_field(128, density="crowded", seed=2)
    b = S.star_field(128, density="crowded", seed=2)
    c = S.star_field(128, density="sparse", seed=2)
    np.testing.assert_array_equal(a.image, b.image)
    assert len(a.truth) > 10 * len(c.truth) > 0
    noisy = S.star_field(64, n_stars=0, sky=100.0, noise="poisson", seed=0)
    assert 8 < noisy.image.std() < 12 and abs(noisy.image.mean() - 100) < 1


def test_sersic_galaxies_truth_flux():
    sim = S.sersic_galaxies(128, n=6, psf="gaussian:1.0", sky=0.0, noise="none", seed=3, pixel_scale=0.05)
    assert sim.image.sum() == pytest.approx(sim.truth["flux"].sum(), rel=1e-9)
    assert set(sim.truth.colnames) >= {"x", "y", "flux", "r_eff", "sersic_n", "ellip", "theta"}
    assert sim.wcs is not None and sim.wcs.has_celestial
    # an isolated galaxy rendered alone: flux centroid near its true centre
    one = S.sersic_galaxies(96, n=1, psf=None, sky=0.0, noise="none", seed=6, r_eff_range=(2.0, 3.0))
    t = one.truth[0]
    assert 30 < t["x"] < 66 and 30 < t["y"] < 66  # seed chosen: away from the edges
    yy, xx = np.mgrid[:96, :96]
    assert (one.image * xx).sum() / one.image.sum() == pytest.approx(t["x"], abs=0.1)
    assert (one.image * yy).sum() / one.image.sum() == pytest.approx(t["y"], abs=0.1)


def test_sersic_ellipticity_orientation():
    # the image's second-moment orientation matches the truth theta
    sim = S.sersic_galaxies(
        64, n=1, psf=None, sky=0.0, noise="none", seed=6, r_eff_range=(4, 4), sersic_n_range=(1, 1), max_ellip=0.6
    )
    t = sim.truth[0]
    img = sim.image
    yy, xx = np.mgrid[:64, :64]
    cx, cy = (img * xx).sum() / img.sum(), (img * yy).sum() / img.sum()
    ixx = (img * (xx - cx) ** 2).sum() / img.sum()
    iyy = (img * (yy - cy) ** 2).sum() / img.sum()
    ixy = (img * (xx - cx) * (yy - cy)).sum() / img.sum()
    angle = 0.5 * np.arctan2(2 * ixy, ixx - iyy) % np.pi
    assert t["ellip"] > 0.3 and 20 < t["x"] < 44 and 20 < t["y"] < 44  # seed chosen
    d = abs(angle - t["theta"]) % np.pi
    assert min(d, np.pi - d) < 0.15


def test_blank_field():
    sim = S.blank_field(64, sky=5.0, noise_sigma=2.0, seed=0)
    assert len(sim.truth) == 0
    assert abs(sim.image.mean() - 5) < 0.2 and 1.8 < sim.image.std() < 2.2


def test_bad_input():
    with pytest.raises(AstroSRError):
        S.star_field(4)
    with pytest.raises(AstroSRError):
        S.star_field(64, density="galactic")
    with pytest.raises(AstroSRError):
        S.star_field(64, flux_range=(10, 1))
    with pytest.raises(AstroSRError):
        S.blank_field(64, noise_sigma=-1)
    with pytest.raises(AstroSRError):
        S.sersic_galaxies(64, n=-1)

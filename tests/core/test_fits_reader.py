"""Reader features: compression, multi-extension files, cubes, stacks, real files, samples."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from napari_astrosr.core.fits_io import read_fits, read_layers, read_stack, write_fits
from napari_astrosr.data import sample_path
from napari_astrosr.exceptions import AstroSRError

from conftest import shared_file


def _wcs(shape=(20, 30)):
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = [shape[1] / 2, shape[0] / 2]
    w.wcs.cdelt = [-1e-5, 1e-5]
    return w


@pytest.mark.parametrize("suffix", [".fits", ".fit", ".fts", ".fits.gz", ".fts.gz"])
def test_suffixes_and_gzip(tmp_path, rng, suffix):
    data = rng.normal(size=(20, 30)).astype("f4")
    hdu = fits.PrimaryHDU(data, header=_wcs().to_header())
    hdu.header["BUNIT"] = "electron / s"
    raw = tmp_path / "x.fits"
    hdu.writeto(raw)
    p = tmp_path / f"img{suffix}"
    p.write_bytes(gzip.compress(raw.read_bytes()) if suffix.endswith(".gz") else raw.read_bytes())
    img = read_fits(p)
    np.testing.assert_array_equal(img.data, data)
    assert img.wcs is not None and img.unit == "electron / s" and img.path == str(p)
    assert set(img.metadata) >= {"header", "wcs", "bunit", "path"}


def test_tile_compressed(tmp_path, rng):
    data = rng.normal(100, 5, size=(64, 48)).astype("f4")
    p = tmp_path / "comp.fits.fz"
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(data, compression_type="GZIP_2", quantize_level=0.0)]).writeto(p)
    img = read_fits(p)
    assert img.data.shape == (64, 48)
    np.testing.assert_allclose(img.data, data, atol=1e-5)


def test_mef_one_image_per_extname(tmp_path, rng):
    p = tmp_path / "mef.fits"
    sci = rng.normal(size=(10, 12)).astype("f4")
    fits.HDUList(
        [
            fits.PrimaryHDU(),
            fits.ImageHDU(sci, name="SCI"),
            fits.ImageHDU(np.abs(sci), name="ERR"),
            fits.ImageHDU(np.zeros((10, 12), "i2"), name="DQ"),
            fits.BinTableHDU.from_columns([fits.Column("a", "E", array=np.ones(2, "f4"))], name="CAT"),
        ]
    ).writeto(p)
    layers = read_layers(p)
    assert [im.name for im in layers] == ["SCI", "ERR", "DQ"]
    assert [im.hdu_index for im in layers] == [1, 2, 3]
    np.testing.assert_array_equal(layers[0].data, sci)


def test_same_extname_frames_become_stack(tmp_path, rng):
    p = tmp_path / "frames.fits"
    frames = rng.normal(size=(3, 8, 9)).astype("f4")
    hdus = [fits.PrimaryHDU()] + [fits.ImageHDU(f, name="SCI", ver=i + 1) for i, f in enumerate(frames)]
    for i, h in enumerate(hdus[1:]):
        h.header["FWHM"] = 3.0 + i
    fits.HDUList(hdus).writeto(p)
    (img,) = read_layers(p)
    assert img.data.shape == (3, 8, 9)
    np.testing.assert_array_equal(img.data, frames)
    assert [h["FWHM"] for h in img.metadata["headers"]] == [3.0, 4.0, 5.0]


def test_cube_stays_cube_with_celestial_wcs(tmp_path, rng):
    p = tmp_path / "cube.fits"
    w = WCS(naxis=3)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN", "FREQ"]
    w.wcs.crval = [10, 20, 1e9]
    w.wcs.cdelt = [-1e-4, 1e-4, 1e6]
    fits.PrimaryHDU(rng.normal(size=(4, 6, 7)).astype("f4"), header=w.to_header()).writeto(p)
    (img,) = read_layers(p)
    assert img.data.shape == (4, 6, 7) and img.wcs is not None and img.wcs.naxis == 2


def test_read_stack_of_files(tmp_path, rng):
    paths = []
    for i in range(3):
        p = tmp_path / f"f{i}.fits"
        fits.PrimaryHDU(np.full((5, 6), i, "f4")).writeto(p)
        paths.append(p)
    img = read_stack(paths)
    assert img.data.shape == (3, 5, 6)
    assert img.data[:, 0, 0].tolist() == [0, 1, 2]
    assert img.metadata["paths"] == [str(p) for p in paths]
    odd = tmp_path / "odd.fits"
    fits.PrimaryHDU(np.zeros((4, 6), "f4")).writeto(odd)
    with pytest.raises(AstroSRError, match=r"odd\.fits: shape \(4, 6\) differs"):
        read_stack(paths + [odd])


def test_samples_load_with_wcs_and_fwhm():
    (hst,) = read_layers(sample_path("hst_galaxy"))
    assert hst.data.shape == (256, 256) and hst.wcs is not None
    assert hst.unit == "electron / s" and np.isfinite(hst.data).all()
    (stack,) = read_layers(sample_path("decam_stack"))
    assert stack.data.shape == (5, 128, 128) and stack.wcs is not None
    fwhm = [h["FWHM"] for h in stack.metadata["headers"]]
    assert len(fwhm) == 5 and min(fwhm) > 3 and max(fwhm) < 6.5
    with pytest.raises(AstroSRError, match="unknown sample"):
        sample_path("nope")


def test_sample_cutout_matches_parent_pixels_and_sky():
    parent_path = shared_file("hst_wfc3ir_f105w_a2744/abell_2744_cd_galaxy_f105w.fits.gz")
    parent = read_fits(parent_path)
    cut = read_fits(sample_path("hst_galaxy"))
    np.testing.assert_array_equal(cut.data, parent.data[72:328, 72:328])
    ra0, dec0 = parent.wcs.pixel_to_world_values(72 + 10, 72 + 20)
    ra1, dec1 = cut.wcs.pixel_to_world_values(10, 20)
    assert abs(ra0 - ra1) < 1e-9 and abs(dec0 - dec1) < 1e-9


@pytest.mark.parametrize(
    "rel",
    [
        "stack_decam_i_sfft/DEC-OBS04a.mini.fits",
        "stack_decam_legacypipe_tc3/exposures/c4d_150329_083320_ooi_r_ls9.N11.fits",
        "hst_hsc_pair_cosmos_A/Cut_HSC.fits",
        "ground_ctio_mosaic2_cdfs/tpv.fits",
    ],
)
def test_real_files(rel):
    p = shared_file(rel)
    layers = read_layers(p)
    assert layers
    for im in layers:
        assert im.data.dtype == np.float32 and im.data.dtype.isnative and im.data.ndim in (2, 3)
        assert im.header is not None and im.path == str(p)


def test_write_read_roundtrip_keeps_wcs_and_provenance(tmp_path):
    src = read_fits(sample_path("hst_galaxy"))
    out = write_fits(
        tmp_path / "o.fits",
        src.data,
        header=src.header,
        wcs=src.wcs,
        provenance=dict(method="bicubic", parameters={"scale": 2}, inputs=[src.path]),
    )
    back = read_fits(out)
    np.testing.assert_array_equal(back.data, src.data)
    assert back.header["ASRMETH"] == "bicubic" and back.header["ASRIN1"] == "hst_galaxy.fits"
    assert back.unit == "electron / s"
    np.testing.assert_allclose(back.wcs.pixel_to_world_values(3, 4), src.wcs.pixel_to_world_values(3, 4))
    with pytest.raises(AstroSRError, match="input file"):
        write_fits(sample_path("hst_galaxy"), src.data, overwrite=True, protect=[src.path])

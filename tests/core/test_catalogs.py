import numpy as np
import pytest
from astropy.table import Table
from astropy.wcs import WCS

from napari_astrosr.core.catalogs import read_regions, region_to_mask, write_regions, write_table
from napari_astrosr.core.detection import detect_sources
from napari_astrosr.exceptions import AstroSRError

from _measure_sim import gaussian_field


@pytest.fixture(scope="module")
def cat():
    img, _, _ = gaussian_field(seed=31, n=8)
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = [80, 80]
    w.wcs.cdelt = [-1e-4, 1e-4]
    return img, detect_sources(img, wcs=w), w


@pytest.mark.parametrize("suffix", [".ecsv", ".fits", ".csv"])
def test_table_roundtrip_with_units_and_provenance(tmp_path, cat, suffix):
    img, t, w = cat
    p = write_table(t, tmp_path / f"cat{suffix}", meta={"input": "field.fits"}, flux_unit="adu")
    back = Table.read(p)  # issue 23: the CSV too opens with a plain Table.read(path)
    np.testing.assert_allclose(back["x"], t["x"])
    np.testing.assert_allclose(back["x_image"], np.asarray(t["x"]) + 1)  # 1-based FITS/DS9 convention
    if suffix != ".csv":
        assert str(back["ra"].unit) == "deg" and str(back["flux"].unit) == "adu"
        meta = {k.lower(): v for k, v in back.meta.items()}
        assert meta["input"] == "field.fits"
    else:
        # plain CSV: one header row then data (no '#' provenance lines, which Table.read rejects)
        assert p.read_text().splitlines()[0] == ",".join(back.colnames)
    with pytest.raises(AstroSRError, match="overwrite"):
        write_table(t, p)
    assert [f.name for f in tmp_path.iterdir() if f.name.startswith(".")] == []  # no temp left over


def test_bad_destination(tmp_path, cat):
    with pytest.raises(AstroSRError, match="format"):
        write_table(cat[1], tmp_path / "cat.txt")
    with pytest.raises(AstroSRError, match="does not exist"):
        write_table(cat[1], tmp_path / "nope" / "cat.ecsv")


def test_ds9_regions_are_one_based_and_read_back_as_masks(tmp_path, cat):
    img, t, w = cat
    p = write_regions(t, tmp_path / "cat.reg")
    text = p.read_text()
    first = [ln for ln in text.splitlines() if ln.startswith("ellipse")][0]
    x1, y1 = map(float, first[len("ellipse(") :].split(",")[:2])
    assert x1 == pytest.approx(t["x"][0] + 1) and y1 == pytest.approx(t["y"][0] + 1)
    rois = read_regions(p, shape=img.shape)
    assert len(rois) == len(t) and rois[0][0] == "1"
    m = rois[0][1]
    yy, xx = np.nonzero(m)
    assert xx.mean() == pytest.approx(t["x"][0], abs=0.5) and yy.mean() == pytest.approx(t["y"][0], abs=0.5)
    # area of the 2.5 x (a, b) ellipse
    assert m.sum() == pytest.approx(np.pi * 6.25 * t["a"][0] * t["b"][0], rel=0.15)
    # sky regions through the WCS land on the same pixels
    ps = write_regions(t, tmp_path / "sky.reg", wcs=w, sky=True)
    assert "fk5" in ps.read_text() or "icrs" in ps.read_text()
    ms = read_regions(ps, shape=img.shape, wcs=w)[0][1]
    assert (ms == m).mean() > 0.99
    with pytest.raises(AstroSRError, match="WCS"):
        read_regions(ps, shape=img.shape)


def test_region_outside_image_and_bad_files(tmp_path):
    from regions import CirclePixelRegion, PixCoord

    with pytest.raises(AstroSRError, match="outside"):
        region_to_mask(CirclePixelRegion(PixCoord(500, 500), 3), (50, 50))
    m = region_to_mask(CirclePixelRegion(PixCoord(0, 0), 3), (50, 50))  # partly outside: clipped
    assert 0 < m.sum() < np.pi * 9
    with pytest.raises(AstroSRError, match="not found"):
        read_regions(tmp_path / "missing.reg", shape=(5, 5))
    bad = tmp_path / "bad.reg"
    bad.write_text("this is not ds9\n")
    with pytest.raises(AstroSRError):
        read_regions(bad, shape=(5, 5))

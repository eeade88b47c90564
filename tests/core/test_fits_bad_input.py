"""The malformed-FITS suite: every bad input gives a clear AstroSRError (or a warning), never a crash."""

from __future__ import annotations

import gzip
import os
import tracemalloc

import numpy as np
import pytest
from astropy.io import fits

from napari_astrosr.core.fits_io import probe, read_fits, read_layers
from napari_astrosr.exceptions import AstroSRError, WCSWarning


def _ok(tmp_path, name="ok.fits", shape=(32, 32)):
    p = tmp_path / name
    fits.PrimaryHDU(np.arange(np.prod(shape), dtype="f4").reshape(shape)).writeto(p)
    return p


def test_truncated_file(tmp_path):
    raw = _ok(tmp_path).read_bytes()
    p = tmp_path / "trunc.fits"
    p.write_bytes(raw[: 2880 + 100])
    with pytest.raises(AstroSRError, match=r"trunc\.fits.*truncated"):
        read_fits(p)


def test_truncated_gzip(tmp_path):
    raw = gzip.compress(_ok(tmp_path, shape=(64, 64)).read_bytes())
    p = tmp_path / "trunc.fits.gz"
    p.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(AstroSRError, match=r"trunc\.fits\.gz"):
        read_fits(p)


def test_garbage_bytes(tmp_path):
    p = tmp_path / "garbage.fits"
    p.write_bytes(np.random.default_rng(1).integers(0, 256, 6000, dtype=np.uint8).tobytes())
    with pytest.raises(AstroSRError, match=r"garbage\.fits: not a readable FITS file"):
        read_fits(p)


def test_empty_file(tmp_path):
    p = tmp_path / "empty0.fits"
    p.write_bytes(b"")
    with pytest.raises(AstroSRError, match="empty0.fits"):
        read_fits(p)


def test_empty_primary_only(tmp_path):
    p = tmp_path / "empty.fits"
    fits.PrimaryHDU().writeto(p)
    with pytest.raises(AstroSRError, match=r"empty\.fits: no 2-D image.*no data"):
        read_fits(p)
    assert "no image data" in probe(p)


def test_table_only(tmp_path):
    p = tmp_path / "table.fits"
    cols = [fits.Column("flux", "E", array=np.ones(3, "f4"))]
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(cols)]).writeto(p)
    with pytest.raises(AstroSRError, match="BinTableHDU"):
        read_fits(p)
    assert "BinTableHDU" in probe(p)


def test_1d_data(tmp_path):
    p = tmp_path / "spec.fits"
    fits.PrimaryHDU(np.ones(50, "f4")).writeto(p)
    with pytest.raises(AstroSRError, match="1-D"):
        read_fits(p)
    assert "1-D" in probe(p)


def test_all_nan_image_opens_with_note(tmp_path):
    p = tmp_path / "nan.fits"
    fits.PrimaryHDU(np.full((8, 9), np.nan, "f4")).writeto(p)
    img = read_fits(p)
    assert img.data.shape == (8, 9) and img.mask.all()
    assert any("NaN" in n for n in img.warnings)


def test_integer_bscale_bzero_blank(tmp_path):
    p = tmp_path / "int.fits"
    raw = np.array([[0, 1, 2], [3, -999, 5]], dtype=np.int16)
    hdu = fits.PrimaryHDU(raw)
    hdu.header["BSCALE"] = 0.5
    hdu.header["BZERO"] = 100.0
    hdu.header["BLANK"] = -999
    hdu.writeto(p)
    img = read_fits(p)
    assert img.data.dtype == np.float32 and img.data.dtype.isnative
    expected = raw * 0.5 + 100.0
    assert np.isnan(img.data[1, 1])
    good = raw != -999
    np.testing.assert_allclose(img.data[good], expected[good])


def test_unsigned_int16_via_bzero(tmp_path):
    p = tmp_path / "u16.fits"
    raw = np.array([[0, 40000], [65535, 7]], dtype=np.uint16)
    fits.PrimaryHDU(raw).writeto(p)  # astropy stores uint16 as int16 + BZERO=32768
    np.testing.assert_array_equal(read_fits(p).data, raw.astype(np.float32))


def test_big_endian_float64(tmp_path):
    p = tmp_path / "be.fits"
    data = np.linspace(-1, 1, 30).reshape(5, 6).astype(">f8")
    fits.PrimaryHDU(data).writeto(p)
    img = read_fits(p)
    assert img.data.dtype == np.dtype("float32") and img.data.dtype.isnative and img.data.flags.c_contiguous
    np.testing.assert_allclose(img.data, data.astype(np.float32))
    img64 = read_fits(p, dtype="float64")
    assert img64.data.dtype == np.dtype("float64") and img64.data.dtype.isnative


def test_4d_hdu_refused(tmp_path):
    p = tmp_path / "four.fits"
    fits.PrimaryHDU(np.zeros((2, 3, 8, 8), "f4")).writeto(p)
    with pytest.raises(AstroSRError, match=r"four\.fits.*4-D"):
        read_fits(p)


def test_4d_with_degenerate_axes_squeezed(tmp_path):
    p = tmp_path / "deg.fits"
    fits.PrimaryHDU(np.ones((1, 1, 8, 9), "f4")).writeto(p)
    assert read_fits(p).data.shape == (8, 9)


def test_unreadable_path(tmp_path):
    with pytest.raises(AstroSRError, match="is a folder"):
        read_fits(tmp_path)
    with pytest.raises(AstroSRError, match="no such file"):
        read_fits(tmp_path / "missing.fits")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can read chmod 000 files")
def test_permission_denied(tmp_path):
    p = _ok(tmp_path)
    p.chmod(0)
    try:
        with pytest.raises(AstroSRError, match="permission"):
            read_fits(p)
    finally:
        p.chmod(0o644)


def test_broken_wcs_opens_without_wcs(tmp_path):
    p = tmp_path / "badwcs.fits"
    hdu = fits.PrimaryHDU(np.ones((8, 8), "f4"))
    # a singular CD matrix: wcslib refuses it
    hdu.header.update(
        CTYPE1="RA---TAN", CTYPE2="DEC--TAN", CRVAL1=10.0, CRVAL2=20.0, CD1_1=0.0, CD1_2=0.0, CD2_1=0.0, CD2_2=0.0
    )
    hdu.writeto(p)
    with pytest.warns(WCSWarning, match=r"badwcs\.fits.*invalid"):
        img = read_fits(p)
    assert img.wcs is None and img.data.shape == (8, 8)


def _huge_header(naxis1=10**6, naxis2=10**6):
    hdr = fits.Header()
    hdr["SIMPLE"] = True
    hdr["BITPIX"] = -32
    hdr["NAXIS"] = 2
    hdr["NAXIS1"] = naxis1
    hdr["NAXIS2"] = naxis2
    return hdr.tostring().encode("ascii") + b"\0" * 2880


@pytest.mark.parametrize("gz", [False, True])
def test_absurd_naxis_does_not_allocate(tmp_path, gz):
    raw = _huge_header()
    p = tmp_path / ("huge.fits.gz" if gz else "huge.fits")
    p.write_bytes(gzip.compress(raw) if gz else raw)
    tracemalloc.start()
    try:
        with pytest.raises(AstroSRError, match=r"huge\.fits.*claims 4,000,000,000,000 bytes"):
            read_fits(p)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50 * 1024**2


def test_inputs_not_modified(tmp_path):
    p = _ok(tmp_path)
    before = p.read_bytes()
    img = read_fits(p)
    img.data[:] = 0
    assert p.read_bytes() == before


def test_read_layers_bad_input_same_errors(tmp_path):
    p = tmp_path / "table.fits"
    cols = [fits.Column("a", "E", array=np.ones(2, "f4"))]
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(cols)]).writeto(p)
    with pytest.raises(AstroSRError, match="table.fits"):
        read_layers(p)

import numpy as np
import pytest
from astropy.io import fits

from napari_astrosr.core.fits_io import read_fits, write_fits
from napari_astrosr.exceptions import AstroSRError


def test_roundtrip_big_endian(tmp_path):
    data = np.arange(20, dtype=">f4").reshape(4, 5)
    fits.PrimaryHDU(data).writeto(tmp_path / "a.fits")
    img = read_fits(tmp_path / "a.fits")
    assert img.data.dtype == np.float32 and img.data.dtype.isnative
    assert img.data.flags.c_contiguous
    np.testing.assert_array_equal(img.data, data.astype(np.float32))
    out = write_fits(tmp_path / "b.fits", img.data, header=img.header)
    assert read_fits(out).data.sum() == data.sum()
    with pytest.raises(AstroSRError, match="already exists"):
        write_fits(out, img.data)


def test_missing_file_names_path(tmp_path):
    with pytest.raises(AstroSRError, match="nope.fits"):
        read_fits(tmp_path / "nope.fits")

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


def test_written_files_get_normal_permissions(tmp_path):
    """Atomic writes go through a private (0600) temp file; the result must not stay private."""
    import os
    import stat

    from astropy.table import Table

    from napari_astrosr.core.atomic import _umask
    from napari_astrosr.core.catalogs import write_table

    fits_out = write_fits(tmp_path / "img.fits", np.zeros((4, 4), np.float32))
    tab_out = write_table(Table({"x": [1.0], "y": [2.0]}), tmp_path / "cat.ecsv")
    want = 0o666 & ~_umask()
    for p in (fits_out, tab_out):
        assert stat.S_IMODE(os.stat(p).st_mode) == want
    assert sorted(f.name for f in tmp_path.iterdir()) == ["cat.ecsv", "img.fits"]

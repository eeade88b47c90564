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


def test_gzip_read_closes_its_file(tmp_path):
    """Reading (and describing) a .fits.gz leaves no file handle open: astropy closes only its GzipFile wrapper."""
    import gc
    import warnings

    from astropy.io import fits

    from napari_astrosr.core.fits_io import describe, list_image_hdus

    p = tmp_path / "img.fits.gz"
    fits.PrimaryHDU(np.arange(64, dtype=np.float32).reshape(8, 8)).writeto(p)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        img = read_fits(p)
        list_image_hdus(p)
        describe(p)
        gc.collect()
    leaks = [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert not leaks, [str(w.message) for w in leaks]
    assert img.data.sum() == np.arange(64).sum()

"""Malformed FITS files: a clear AstroSRError (or a correct read), never a crash, a hang,
a huge allocation or a modified input. Complements tests/core/test_fits_bad_input.py
(hand-written cases) with generated ones (tests/robustness/_generate.py)."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import textwrap
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest

from napari_astrosr.core.fits_io import describe, read_fits
from napari_astrosr.exceptions import AstroSRError

sys.path.insert(0, str(Path(__file__).parent))
from _generate import BLOCK, KINDS, absurd_naxis, card, generate, header_bytes, image_file  # noqa: E402

SEEDS = range(3)


def _write(tmp_path: Path, case) -> tuple[Path, str]:
    p = tmp_path / case.name
    p.write_bytes(case.data)
    return p, hashlib.sha256(case.data).hexdigest()


def _read_or_clear_error(p: Path, expect: str):
    """read_fits either succeeds with a proper array or raises a one-line AstroSRError naming the file."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = read_fits(p)
    except AstroSRError as exc:
        msg = str(exc)
        assert p.name in msg and "\n" not in msg, msg
        assert expect != "ok", f"valid file refused: {msg}"
        return None
    assert expect != "error", f"read {img.data.shape} from a file that must be refused"
    assert img.data.dtype == np.float32 and img.data.dtype.isnative and img.data.flags.c_contiguous
    assert img.data.ndim == 2
    return img


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "huge_header"])
@pytest.mark.parametrize("seed", SEEDS)
def test_generated_cases(tmp_path, kind, seed):
    case = generate(kind, 1000 + seed)
    p, digest = _write(tmp_path, case)
    _read_or_clear_error(p, case.expect)
    # describe (astrosr info) must also stay within AstroSRError
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            describe(p)
    except AstroSRError as exc:
        assert p.name in str(exc)
    assert hashlib.sha256(p.read_bytes()).hexdigest() == digest, "input modified"
    assert sorted(x.name for x in tmp_path.iterdir()) == [case.name], "reader left files behind"


@pytest.mark.parametrize("cut", [0, 79, 2880, 2881 + 80, 2880 * 2 + 17])
def test_truncated_at_offsets_refused_by_reader_and_info(tmp_path, cut):
    raw = image_file(np.arange(64 * 64, dtype=np.float32).reshape(64, 64))  # 2880 + 16384 (+pad) bytes
    p = tmp_path / "cut.fits"
    p.write_bytes(raw[:cut])
    with pytest.raises(AstroSRError, match=r"cut\.fits"):
        read_fits(p)
    # describe() used to compare the claimed data size with the whole file, header included:
    # a cut inside the data passed `astrosr info` (fixed in fits_io._check_size)
    with pytest.raises(AstroSRError, match=r"cut\.fits"):
        describe(p)


@pytest.mark.parametrize("bitpix", [0, 7, 12, 24, -8, -16, 128, 99999])
def test_wrong_bitpix_refused(tmp_path, bitpix):
    p = tmp_path / "bitpix.fits"
    p.write_bytes(image_file(np.ones((8, 8), np.float32), bitpix=bitpix))
    with pytest.raises(AstroSRError, match=r"bitpix\.fits"):
        read_fits(p)
    with pytest.raises(AstroSRError, match=r"bitpix\.fits"):  # astrosr info too
        describe(p)


@pytest.mark.parametrize("value", ["RAW:'abc'", "RAW:1.5", "RAW:", "RAW:T", "RAW:1e400"])
@pytest.mark.parametrize("key", ["NAXIS", "NAXIS1", "BITPIX"])
def test_non_integer_structural_keywords(tmp_path, key, value):
    cards = {"SIMPLE": True, "BITPIX": -32, "NAXIS": 2, "NAXIS1": 8, "NAXIS2": 8}
    cards[key] = value
    p = tmp_path / "badkey.fits"
    p.write_bytes(header_bytes([card(k, v) for k, v in cards.items()]) + b"\0" * BLOCK)
    with pytest.raises(AstroSRError, match=r"badkey\.fits"):
        read_fits(p)


def test_missing_end_card(tmp_path):
    raw = bytearray(image_file(np.ones((8, 8), np.float32)))
    raw[:BLOCK] = bytes(raw[:BLOCK]).replace(card("END", None), b" " * 80)
    p = tmp_path / "noend.fits"
    p.write_bytes(bytes(raw))
    with pytest.raises(AstroSRError, match=r"noend\.fits"):
        read_fits(p)


def _negative_naxis_file(tmp_path: Path, *, gz: bool) -> Path:
    import gzip

    raw = (
        header_bytes(
            [card("SIMPLE", True), card("BITPIX", -32), card("NAXIS", 2), card("NAXIS1", -440452), card("NAXIS2", 12)]
        )
        + b"\0" * BLOCK
    )  # gzip + one data block: the hang
    p = tmp_path / ("neg.fits.gz" if gz else "neg.fits")
    p.write_bytes(gzip.compress(raw) if gz else raw)
    return p


@pytest.mark.parametrize("gz", [False, True])
def test_negative_naxis_does_not_hang(tmp_path, gz):
    """astropy 8 seeks backwards on a negative data size and re-reads one header forever;
    the reader walks the headers itself first. An alarm turns a regression into a failure."""
    p = _negative_naxis_file(tmp_path, gz=gz)

    def _timeout(*_):
        raise TimeoutError("read_fits hangs on a negative NAXIS1")

    old = signal.signal(signal.SIGALRM, _timeout)
    signal.alarm(30)
    try:
        with pytest.raises(AstroSRError, match=rf"{p.name}.*NAXIS1 = -440452 \(negative\)"):
            read_fits(p)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_gzip_content_without_gz_name(tmp_path):
    """astropy recognises gzip by its magic bytes; so must the size guard (no false 'truncated')."""
    import gzip

    data = np.random.default_rng(3).normal(size=(200, 200)).astype(np.float32)
    p = tmp_path / "actually_gz.fits"
    p.write_bytes(gzip.compress(image_file(data)))
    np.testing.assert_array_equal(read_fits(p).data, data)


@pytest.mark.parametrize("seed", range(4))
def test_absurd_naxis_memory_bounded_tracemalloc(tmp_path, seed):
    case = absurd_naxis(np.random.default_rng(seed))
    p, _ = _write(tmp_path, case)
    tracemalloc.start()
    try:
        with pytest.raises(AstroSRError, match=p.name.replace(".", r"\.")):
            read_fits(p)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50 * 1024**2, f"{case.note}: peak {peak / 1e6:.0f} MB"


def test_terabyte_header_peak_rss(tmp_path):
    """Peak RSS (not only Python allocations) stays < 50 MB above the baseline for a header
    claiming 1 TB (plain and gzipped), in a fresh process."""
    import gzip

    raw = (
        header_bytes(
            [
                card("SIMPLE", True),
                card("BITPIX", -32),
                card("NAXIS", 2),
                card("NAXIS1", 500_000),
                card("NAXIS2", 500_000),
            ]
        )
        + b"\0" * BLOCK
    )
    plain, gzp = tmp_path / "tb.fits", tmp_path / "tb.fits.gz"
    plain.write_bytes(raw)
    gzp.write_bytes(gzip.compress(raw))
    code = textwrap.dedent(f"""
        import resource
        from napari_astrosr.core.fits_io import read_fits, describe
        from napari_astrosr.exceptions import AstroSRError
        import astropy.wcs, numpy  # baseline includes the libraries
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for p in ({str(plain)!r}, {str(gzp)!r}):
            for f in (read_fits, describe):
                try:
                    f(p)
                    print("READ", p)
                except AstroSRError:
                    pass
        print("DELTA_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "READ" not in r.stdout, r.stdout
    delta_kb = int(r.stdout.split("DELTA_KB")[1])
    assert delta_kb < 50 * 1024, f"peak RSS grew by {delta_kb / 1024:.0f} MB"


@pytest.mark.parametrize("shape", [(1, 1), (1, 57), (57, 1)])
def test_tiny_images_read_exactly(tmp_path, shape):
    arr = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    p = tmp_path / "tiny.fits"
    p.write_bytes(image_file(arr))
    np.testing.assert_array_equal(read_fits(p).data, arr)


def test_nan_inf_kept_and_masked(tmp_path):
    arr = np.random.default_rng(1).normal(size=(20, 30)).astype(np.float32)
    arr[0, :5] = np.nan
    arr[1, :5] = np.inf
    arr[2, :5] = -np.inf
    p = tmp_path / "naninf.fits"
    p.write_bytes(image_file(arr))
    img = read_fits(p)
    np.testing.assert_array_equal(img.mask, ~np.isfinite(arr))
    np.testing.assert_array_equal(img.data[np.isfinite(arr)], arr[np.isfinite(arr)])


def test_huge_header_reads_in_reasonable_time(tmp_path):
    n = 5000
    extra = [card(f"K{i:07d}", float(i), "filler") for i in range(n)]
    arr = np.ones((16, 16), np.float32)
    p = tmp_path / "cards.fits"
    p.write_bytes(image_file(arr, extra=extra))
    t0 = time.perf_counter()
    img = read_fits(p)
    dt = time.perf_counter() - t0
    assert img.data.shape == (16, 16) and img.header[f"K{n - 1:07d}"] == float(n - 1)
    assert dt < 15, f"{n} cards took {dt:.1f} s"

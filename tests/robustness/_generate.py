"""Generators of malformed (and awkward-but-valid) FITS files, shared by the robustness
tests and ``benchmarks/fuzz_fits.py``.

Each generator takes a ``numpy.random.Generator`` and returns a :class:`Case`: the raw
bytes of one file, a file name, and what a correct reader must do with it:

- ``"error"``: refuse with :class:`~napari_astrosr.exceptions.AstroSRError`;
- ``"ok"``: read it;
- ``"either"``: either of the two (e.g. a header corruption that astropy may repair).

Headers are assembled card by card (80-byte records) rather than with astropy so we
can write what astropy itself would refuse to write: wrong BITPIX, absurd NAXIS, a
missing END card, non-ASCII bytes, ...
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

BLOCK = 2880


@dataclass
class Case:
    kind: str
    name: str
    data: bytes
    expect: str  # "error" | "ok" | "either"
    note: str = ""


def card(key: str, value, comment: str = "") -> bytes:
    """One 80-byte header card; ``value`` is written verbatim when it is a str of raw FITS."""
    if value is None:
        text = f"{key:<8}"
    else:
        if isinstance(value, bool):
            v = "T" if value else "F"
        elif isinstance(value, str) and not value.startswith("RAW:"):
            v = "'" + value.replace("'", "''") + "'"
        elif isinstance(value, str):
            v = value[4:]
        else:
            v = str(value)
        text = f"{key:<8}= {v:>20}" + (f" / {comment}" if comment else "")
    return text[:80].ljust(80).encode("latin-1")


def header_bytes(cards: list[bytes], *, end: bool = True) -> bytes:
    raw = b"".join(cards) + (card("END", None) if end else b"")
    return raw + b" " * (-len(raw) % BLOCK)


def data_bytes(arr: np.ndarray) -> bytes:
    raw = arr.astype(arr.dtype.newbyteorder(">"), copy=False).tobytes()
    return raw + b"\0" * (-len(raw) % BLOCK)


_DTYPES = {8: np.uint8, 16: np.int16, 32: np.int32, 64: np.int64, -32: np.float32, -64: np.float64}


def image_file(arr: np.ndarray, *, bitpix: int | None = None, extra: list[bytes] = ()) -> bytes:
    """A valid single-HDU FITS image (arr in FITS big-endian layout)."""
    if bitpix is None:
        bitpix = {np.dtype(v): k for k, v in _DTYPES.items()}[arr.dtype]
    cards = [card("SIMPLE", True), card("BITPIX", bitpix), card("NAXIS", arr.ndim)]
    cards += [card(f"NAXIS{i + 1}", n) for i, n in enumerate(arr.shape[::-1])]
    cards += list(extra)
    return header_bytes(cards) + data_bytes(arr)


def _random_image(rng: np.random.Generator, *, max_side: int = 64) -> np.ndarray:
    shape = tuple(int(s) for s in rng.integers(2, max_side, size=2))
    bitpix = int(rng.choice([8, 16, 32, -32, -64]))
    dt = _DTYPES[bitpix]
    if np.dtype(dt).kind == "f":
        return rng.normal(100, 10, shape).astype(dt)
    info = np.iinfo(dt)
    return rng.integers(max(info.min, -1000), min(info.max, 1000), shape).astype(dt)


# ---------------------------------------------------------------------------- generators


def truncated(rng) -> Case:
    """A valid image cut at a random offset (inside the header or the data)."""
    arr = _random_image(rng)
    raw = image_file(arr)
    # the last block is padded: a cut inside the padding only loses no pixel (readable, like astropy)
    data_end = len(raw) - len(data_bytes(arr)) + arr.nbytes
    cut = int(rng.integers(0, len(raw) - 1))
    return Case(
        "truncated",
        "truncated.fits",
        raw[:cut],
        "error" if cut < data_end else "ok",
        f"cut at {cut}/{len(raw)} (data end {data_end})",
    )


def truncated_gz(rng) -> Case:
    raw = gzip.compress(image_file(_random_image(rng)))
    cut = int(rng.integers(0, len(raw) - 8))
    return Case("truncated_gz", "truncated.fits.gz", raw[:cut], "error", f"gzip cut at {cut}/{len(raw)}")


def corrupted_header(rng) -> Case:
    """Random bytes (incl. non-ASCII) written over random header positions, or a missing END."""
    arr = _random_image(rng, max_side=32)
    raw = bytearray(image_file(arr))
    how = rng.choice(["bytes", "no_end", "bad_value", "swap_keys"])
    if how == "bytes":
        n = int(rng.integers(1, 40))
        pos = rng.integers(0, 6 * 80, size=n)  # the mandatory cards live in the first 6 records
        for p in pos:
            raw[int(p)] = int(rng.integers(0, 256))
    elif how == "no_end":
        hdr = bytes(raw[:BLOCK]).replace(card("END", None), b" " * 80)
        raw[:BLOCK] = hdr
    elif how == "bad_value":
        key = str(rng.choice(["NAXIS", "NAXIS1", "NAXIS2", "BITPIX"]))
        bad = str(rng.choice(["RAW:'abc'", "RAW:1.5", "RAW:", "RAW:T", "RAW:1e400", "RAW:(1,2)"]))
        for i in range(0, BLOCK, 80):
            if raw[i : i + 8].decode("latin-1").strip() == key:
                raw[i : i + 80] = card(key, bad)
    else:  # SIMPLE not first, or NAXIS before BITPIX
        raw[0:80], raw[80:160] = bytes(raw[80:160]), bytes(raw[0:80])
    return Case("corrupted_header", "corrupt_header.fits", bytes(raw), "either", str(how))


def wrong_bitpix(rng) -> Case:
    arr = _random_image(rng, max_side=32).astype(np.float32)
    bitpix = int(rng.choice([0, 7, 12, 24, -8, -16, 128, -128, 99999]))
    return Case("wrong_bitpix", "wrong_bitpix.fits", image_file(arr, bitpix=bitpix), "error", f"BITPIX={bitpix}")


def absurd_naxis(rng, *, gz: bool | None = None) -> Case:
    """A header claiming a gigantic image (up to exabytes), with one block of data or none."""
    how = rng.choice(["huge", "huge", "many_axes", "negative", "overflow"])
    bitpix = int(rng.choice([8, 16, -32, -64]))
    if how == "huge":
        axes = [int(10 ** rng.uniform(5, 7)), int(10 ** rng.uniform(5, 7))]
    elif how == "many_axes":
        n = int(rng.integers(4, 999))
        axes = [int(rng.integers(2, 50)) for _ in range(min(n, 12))] + [1] * max(0, n - 12)
    elif how == "negative":
        axes = [int(rng.integers(-(10**6), 0)), int(rng.integers(1, 100))]
    else:  # product overflows int64
        axes = [2**40, 2**40, 2**20]
    cards = [card("SIMPLE", True), card("BITPIX", bitpix), card("NAXIS", len(axes))]
    cards += [card(f"NAXIS{i + 1}", n) for i, n in enumerate(axes)]
    raw = header_bytes(cards) + b"\0" * (BLOCK * int(rng.integers(0, 2)))
    gz = bool(rng.integers(0, 2)) if gz is None else gz
    nbytes = float(np.prod(np.abs(np.array(axes, dtype=float)))) * abs(bitpix) // 8
    return Case(
        "absurd_naxis",
        "absurd.fits.gz" if gz else "absurd.fits",
        gzip.compress(raw) if gz else raw,
        "error",
        f"{how} claims {nbytes:.3g} bytes",
    )


def nan_inf(rng) -> Case:
    """A valid float image partly or wholly NaN/+inf/-inf (readable; NaN/inf kept as invalid)."""
    shape = tuple(int(s) for s in rng.integers(2, 48, size=2))
    arr = rng.normal(0, 1, shape).astype(np.float32)
    frac = float(rng.choice([1.0, 0.5, 0.01]))
    bad = rng.random(shape) < frac
    arr[bad] = rng.choice(np.array([np.nan, np.inf, -np.inf], dtype=np.float32), size=int(bad.sum()))
    return Case("nan_inf", "nan_inf.fits", image_file(arr), "ok", f"{frac:.0%} non-finite")


def tiny(rng) -> Case:
    """1x1, 1xN and Nx1 images (readable; downstream commands must refuse or cope)."""
    n = int(rng.integers(1, 200))
    shape = [(1, 1), (1, n), (n, 1)][int(rng.integers(0, 3))]
    arr = rng.normal(0, 1, shape).astype(np.float32)
    return Case("tiny", "tiny.fits", image_file(arr), "ok", f"shape {shape}")


def huge_header(rng) -> Case:
    """Thousands of (valid) cards before a small image: must read, and quickly."""
    n = int(rng.integers(1000, 10000))
    extra = [card(f"K{i:07d}", float(rng.normal()), "filler") for i in range(n)]
    return Case(
        "huge_header", "huge_header.fits", image_file(_random_image(rng, max_side=16), extra=extra), "ok", f"{n} cards"
    )


def garbage(rng) -> Case:
    """Random bytes, optionally behind a plausible ``SIMPLE  =`` start."""
    n = int(rng.integers(0, 3 * BLOCK))
    body = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
    if rng.integers(0, 2):
        body = card("SIMPLE", True) + body
    return Case("garbage", "garbage.fits", body, "error", f"{n} random bytes")


KINDS: dict[str, Callable[[np.random.Generator], Case]] = {
    "truncated": truncated,
    "truncated_gz": truncated_gz,
    "corrupted_header": corrupted_header,
    "wrong_bitpix": wrong_bitpix,
    "absurd_naxis": absurd_naxis,
    "nan_inf": nan_inf,
    "tiny": tiny,
    "huge_header": huge_header,
    "garbage": garbage,
}


def generate(kind: str, seed: int) -> Case:
    """One case of ``kind`` from ``seed`` (reproducible)."""
    return KINDS[kind](np.random.default_rng(seed))

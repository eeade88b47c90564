"""A seeded subset of ``benchmarks/fuzz.py`` (in-process families only, ~30 s): every case must
end with exit 0 or a one-line error, write nothing partial and leave its inputs untouched."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _fuzz import FAMILIES, prepare, run_case  # noqa: E402

FAST = ["fits_structure", "header", "values", "wcs", "paths", "checkpoints", "regions"]
CASES = [(f, s) for f in FAST for s in range(6)]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    prepare(d)
    return d


@pytest.mark.parametrize("family,seed", CASES, ids=[f"{f}-{s}" for f, s in CASES])
def test_fuzz_case(work, family, seed):
    assert family in FAMILIES
    row = run_case(family, seed, work)
    bad = [c for c in ("crash", "hang", "partial", "modified", "unclear") if row[c]]
    assert not bad, f"{family}#{seed} ({row['note']}): {bad} exit {row['codes']}: {row['err']}"

"""Fuzz the FITS reader and the ``astrosr info`` / ``astrosr detect`` commands with malformed files.

Generates N seeded malformed (or awkward-but-valid) FITS files of the kinds in
``tests/robustness/_generate.py`` (truncated, truncated gzip, corrupted headers, wrong
BITPIX, absurd NAXIS claiming up to exabytes, NaN/inf data, 1x1/1xN images, thousands
of header cards, random garbage) and runs on each:

- ``read_fits(path)``;
- ``astrosr info FILE`` (in-process, ``napari_astrosr.cli.main``);
- ``astrosr detect FILE -o cat.ecsv`` (in-process).

Outcome per run:
- ``ok``: read / exit 0;
- ``clear``: AstroSRError / exit 2 with a one-line message naming the file, no traceback;
- ``crash``: any other exception, another exit code, a traceback or a multi-line message,
  a message not naming the file, the input modified, or a partial output left behind;
- ``wrong``: a file that must be refused was read (or a valid file refused).

Usage::

    .venv/bin/python benchmarks/fuzz_fits.py [-n 300] [--seed 0] [--kinds truncated,garbage] [-v]

Exit code 1 when any crash or wrong outcome was found.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import sys
import tempfile
import time
import traceback
import tracemalloc
import warnings
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "robustness"))

from napari_astrosr.cli import main as cli_main  # noqa: E402
from napari_astrosr.core.fits_io import read_fits  # noqa: E402
from napari_astrosr.exceptions import AstroSRError  # noqa: E402

from _generate import KINDS, generate  # noqa: E402

MEM_LIMIT = 50 * 1024**2


def _cli(argv: list[str]) -> tuple[int | None, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code: int | None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            code = cli_main(argv)
        except SystemExit as exc:  # argparse
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:  # noqa: BLE001 - that is the crash we are looking for
            err.write(traceback.format_exc())
            code = None
    return code, out.getvalue(), err.getvalue()


def _judge_cli(code, err: str, path: Path, expect: str) -> tuple[str, str]:
    if code == 0:
        return ("wrong", "accepted a file that must be refused") if expect == "error" else ("ok", "")
    # progress bars / warnings may surround it: exactly one "astrosr CMD: error:" line naming the file
    errors = [ln for ln in err.splitlines() if ": error: " in ln and ln.startswith("astrosr ")]
    if code == 2 and len(errors) == 1 and "Traceback" not in err and path.name in errors[0]:
        if expect == "ok":
            return "wrong", "refused a valid file: " + errors[0][:150]
        return "clear", ""
    return "crash", f"exit {code}: " + (err.strip()[-400:] or "(no message)")


def run_case(kind: str, seed: int, work: Path) -> dict[str, tuple[str, str]]:
    case = generate(kind, seed)
    d = work / f"{kind}_{seed}"
    d.mkdir()
    path = d / case.name
    path.write_bytes(case.data)
    digest = hashlib.sha256(case.data).hexdigest()
    res: dict[str, tuple[str, str]] = {}

    # read_fits (memory-bounded check for headers claiming huge images)
    trace = kind == "absurd_naxis"
    if trace:
        tracemalloc.start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = read_fits(path)
        ok = img.data.dtype == np.float32 and img.data.dtype.isnative and img.data.flags.c_contiguous
        res["read_fits"] = ("ok", "") if ok else ("crash", f"bad array {img.data.dtype} {img.data.flags}")
        if case.expect == "error":
            res["read_fits"] = ("wrong", f"read {img.data.shape} from a file that must be refused")
    except AstroSRError as exc:
        msg = str(exc)
        if path.name not in msg or "\n" in msg:
            res["read_fits"] = ("crash", "unclear message: " + msg[:200])
        elif case.expect == "ok":
            res["read_fits"] = ("wrong", "refused a valid file: " + msg[:150])
        else:
            res["read_fits"] = ("clear", "")
    except Exception as exc:  # noqa: BLE001
        res["read_fits"] = ("crash", f"{type(exc).__name__}: {exc}"[:300])
    if trace:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        if peak > MEM_LIMIT:
            res["read_fits"] = ("crash", f"peak memory {peak / 1e6:.0f} MB reading a header ({case.note})")

    code, _, err = _cli(["info", str(path)])
    res["info"] = _judge_cli(code, err, path, case.expect)

    out = d / "out" / "cat.ecsv"
    out.parent.mkdir()
    code, _, err = _cli(["detect", str(path), "-o", str(out), "--regions", str(d / "out" / "cat.reg")])
    verdict = _judge_cli(code, err, path, "either" if case.expect == "ok" else case.expect)
    left = sorted(p.name for p in out.parent.iterdir())
    if code != 0 and left:
        verdict = ("crash", f"exit {code} but left {left}")
    if any(n.startswith(".") or n.endswith(".tmp") for n in left):
        verdict = ("crash", f"temporary files left: {left}")
    res["detect"] = verdict

    if hashlib.sha256(path.read_bytes()).hexdigest() != digest:
        res["input"] = ("crash", "input file modified")
    for k, (v, why) in res.items():
        if v != "ok" and v != "clear":
            res[k] = (v, f"[{case.note}] {why}")
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=300, help="number of files (default 300)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kinds", default=",".join(KINDS), help="comma-separated kinds")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every crash / wrong outcome")
    args = ap.parse_args(argv)
    kinds = args.kinds.split(",")
    rng = np.random.default_rng(args.seed)
    counts: dict[str, Counter] = defaultdict(Counter)
    problems: list[str] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.n):
            kind = kinds[i % len(kinds)]
            seed = int(rng.integers(0, 2**31))
            res = run_case(kind, seed, Path(tmp))
            for target, (verdict, why) in res.items():
                counts[(kind, target)][verdict] += 1
                counts[("TOTAL", target)][verdict] += 1
                if verdict in ("crash", "wrong"):
                    problems.append(f"{verdict:5} {kind:16} seed={seed:<10} {target:9} {why}")
            for p in Path(tmp).iterdir():  # keep the temp folder small
                for q in sorted(p.rglob("*"), reverse=True):
                    q.unlink() if q.is_file() else q.rmdir()
                p.rmdir()
    dt = time.perf_counter() - t0
    print(f"fuzz_fits: {args.n} files, seed {args.seed}, {dt:.1f} s\n")
    print(
        f"| {'kind':16} | {'target':9} | {'tried':>5} | {'clear error':>11} | {'success':>7} | {'crash':>5} | {'wrong':>5} |"
    )
    print(f"|{'-' * 18}|{'-' * 11}|{'-' * 7}|{'-' * 13}|{'-' * 9}|{'-' * 7}|{'-' * 7}|")
    for (kind, target), c in sorted(counts.items(), key=lambda kv: (kv[0][0] == "TOTAL", kv[0])):
        if target == "input":
            continue
        n = sum(c.values())
        print(f"| {kind:16} | {target:9} | {n:5} | {c['clear']:11} | {c['ok']:7} | {c['crash']:5} | {c['wrong']:5} |")
    modified = sum(c["crash"] for (k, t), c in counts.items() if t == "input" and k == "TOTAL")
    print(f"\ninputs modified: {modified}")
    if problems:
        print(f"\n{len(problems)} problems" + (":" if args.verbose else " (-v to list)"))
        if args.verbose:
            seen = set()
            for p in problems:
                key = p[:40] + p.split("]")[-1][:80]
                if key not in seen:
                    seen.add(key)
                    print("  " + p[:400])
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

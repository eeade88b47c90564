"""Fuzz every command with generated hostile cases; print a table per family.

Families (generators in ``tests/robustness/_fuzz.py``): FITS structure (truncated, garbage,
absurd sizes, wrong BITPIX, hundreds of empty extensions), header (control / non-ASCII bytes,
orphan CONTINUE, 1E999, NaN, binary cards), values (NaN, inf, +-3e38, denormals, constant,
1xN), WCS (singular / huge CD, infinite CRVAL, CRPIX 1e15, bad SIP / TPV, WCSAXES 100000,
unknown RADESYS), paths (output == input by name, ./, symlink, hard link, --regions; names over
255 bytes; control and non-ASCII names; missing folders), checkpoints (sidecars asking for
200,000-wide or 10^7-block networks, 100,000-deep JSON, 5,000-digit integers, truncated .pt),
configs (the same for training YAML, python tags, garbage), regions (malformed DS9 files),
signals (SIGINT / SIGTERM to a Richardson-Lucy restore and to train), concurrency (two writers
to one output without --overwrite) and batch (good and bad files, a stale temporary from a
killed worker, a rerun).

In-process cases call ``napari_astrosr.cli.main([...])`` (the CLI's own error boundary) or the
Python API in worker processes (2 by default), each case with a time limit (a worker past it
is killed: a hang); signals, concurrency and batch run ``python -m napari_astrosr`` subprocesses.

Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/fuzz.py [-n 2000] [--seed 0] [--families wcs,paths] [-j 2] [-v]

Columns: cases, crashes (traceback, or exit not in {0, 2, 130, 143}), hangs (past the time
limit; signals: not ended within 2.5 s of the signal), partial outputs, modified inputs (SHA-256
before/after), unclear messages (exit 2 without exactly one ``error:`` line naming a file or
argument), and the slowest case's seconds (a case's own time; signals/concurrency/batch cases
include their deliberate waits). Exit code 1 when any column but the first is non-zero.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "robustness"))

#: share of the -n cases per family (the subprocess families are slow: few cases)
WEIGHTS = {
    "fits_structure": 300,
    "header": 250,
    "values": 250,
    "wcs": 300,
    "paths": 300,
    "checkpoints": 200,
    "configs": 140,
    "regions": 200,
    "signals": 24,
    "concurrency": 24,
    "batch": 12,
}
COLUMNS = ("crash", "hang", "partial", "modified", "unclear")


def _worker(conn, work: str) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import warnings

    warnings.simplefilter("ignore")
    import _fuzz

    _fuzz.prepare(Path(work))
    import torch

    torch.set_num_threads(1)
    conn.send("ready")
    while True:
        task = conn.recv()
        if task is None:
            return
        try:
            row = _fuzz.run_case(task[0], task[1], Path(work))
        except BaseException as exc:  # noqa: BLE001 - the harness itself must not die
            row = dict(
                family=task[0],
                seed=task[1],
                note="harness",
                codes=[None],
                seconds=0,
                crash=True,
                hang=False,
                partial=False,
                modified=False,
                unclear=False,
                err=f"harness: {exc!r}"[:300],
            )
        conn.send(row)


class Pool:
    """Workers with a per-case time limit: a worker past it is killed (a hang) and replaced."""

    def __init__(self, n: int, work: Path) -> None:
        self.ctx = mp.get_context("spawn")
        self.work = work
        self.slots = [self._start() for _ in range(n)]

    def _start(self):
        a, b = self.ctx.Pipe()
        p = self.ctx.Process(target=_worker, args=(b, str(self.work)), daemon=True)
        p.start()
        a.recv()  # ready
        return {"proc": p, "conn": a, "task": None, "t0": 0.0, "limit": 0.0}

    def run(self, tasks, limits, on_row) -> None:
        tasks = list(tasks)
        while tasks or any(s["task"] for s in self.slots):
            for s in self.slots:
                if s["task"] is None and tasks:
                    s["task"] = tasks.pop(0)
                    s["t0"], s["limit"] = time.time(), limits(s["task"])
                    s["conn"].send(s["task"])
            for i, s in enumerate(self.slots):
                if s["task"] is None:
                    continue
                if s["conn"].poll(0.05):
                    on_row(s["conn"].recv())
                    s["task"] = None
                elif time.time() - s["t0"] > s["limit"]:
                    fam, seed = s["task"]
                    s["proc"].kill()
                    s["proc"].join()
                    on_row(
                        dict(
                            family=fam,
                            seed=seed,
                            note="killed",
                            codes=[None],
                            seconds=round(s["limit"], 1),
                            crash=False,
                            hang=True,
                            partial=False,
                            modified=False,
                            unclear=False,
                            err=f"no answer within {s['limit']:.0f} s",
                        )
                    )
                    self.slots[i] = self._start()

    def close(self) -> None:
        for s in self.slots:
            try:
                s["conn"].send(None)
            except (BrokenPipeError, OSError):
                pass
            s["proc"].join(5)


def plan(n: int, seed: int, families) -> list:
    total = sum(WEIGHTS[f] for f in families)
    tasks = []
    for f in families:
        k = max(1, round(n * WEIGHTS[f] / total))
        tasks += [(f, seed * 100_000 + i) for i in range(k)]
    return tasks


def table(rows) -> str:
    agg = defaultdict(lambda: dict(cases=0, slowest=0.0, **{c: 0 for c in COLUMNS}))
    for r in rows:
        for key in (r["family"], "TOTAL"):
            a = agg[key]
            a["cases"] += 1
            a["slowest"] = max(a["slowest"], float(r.get("seconds") or 0.0))
            for c in COLUMNS:
                a[c] += int(bool(r[c]))
    fams = [f for f in WEIGHTS if f in agg] + ["TOTAL"]
    head = (
        "| family         | cases | crashes | hangs | partial outputs | modified inputs | unclear messages "
        "| slowest case s |"
    )
    out = [head, "|" + "|".join("-" * (len(x)) for x in head.split("|")[1:-1]) + "|"]
    for f in fams:
        a = agg[f]
        out.append(
            f"| {f:<14} | {a['cases']:>5} | {a['crash']:>7} | {a['hang']:>5} | {a['partial']:>15} | "
            f"{a['modified']:>15} | {a['unclear']:>16} | {a['slowest']:>14.1f} |"
        )
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=2000, help="number of cases (split over the families)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--families", default=",".join(WEIGHTS))
    ap.add_argument("-j", "--jobs", type=int, default=2, help="worker processes for in-process cases")
    ap.add_argument("-v", "--verbose", action="store_true", help="list every problem")
    args = ap.parse_args(argv)
    families = [f for f in args.families.split(",") if f]
    tasks = plan(args.n, args.seed, families)
    rows = []
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="astrosr-fuzz-") as tmp:
        import _fuzz

        pool = Pool(args.jobs, Path(tmp))

        def on_row(r):
            rows.append(r)
            bad = [c for c in COLUMNS if r[c]]
            if bad and args.verbose:
                print(
                    f"  {r['family']}#{r['seed']} ({r['note']}): {','.join(bad)} codes={r['codes']} {r['err']}",
                    file=sys.stderr,
                    flush=True,
                )

        try:
            pool.run(
                tasks,
                lambda t: (
                    _fuzz.FAMILIES
                    and (
                        300.0
                        if t[0] == "batch"
                        else 120.0
                        if t[0] in ("signals", "concurrency")
                        else 60.0
                        if t[0] == "configs"
                        else 20.0
                    )
                ),
                on_row,
            )
        finally:
            pool.close()
    print(f"{len(rows)} cases, seed {args.seed}, {args.jobs} workers, {time.time() - t0:.0f} s")
    print(table(rows))
    return 1 if any(r[c] for r in rows for c in COLUMNS) else 0


if __name__ == "__main__":
    sys.exit(main())

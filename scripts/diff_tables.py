"""Diff two benchmark outputs (Markdown tables) after dropping what depends on timing or the machine.

A refactor must regenerate the benchmarks' tables identically; their speed columns and the machine line do
not repeat from run to run, so they are removed first: table columns whose header names a time or a rate
(``Mpix/s``, ``seconds``, ``s``, ``wall``, ``time``, ``ms``, ``steps/s``) and lines starting with ``Machine:`` or
``Total time`` or naming a wall time. Exit status 0 when the rest is identical, 1 (with a unified diff) when not.

    python scripts/diff_tables.py old.md new.md
"""

from __future__ import annotations

import difflib
import re
import sys
from pathlib import Path

_TIMING = re.compile(r"(mpix/s|steps/s|/s$|^s$|^ms$|seconds|wall|time|^s/|\bs\)$)", re.IGNORECASE)
_DROP_LINE = re.compile(r"^(Machine:|Total time|.*wall time)", re.IGNORECASE)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def strip(text: str) -> list[str]:
    """The lines of ``text`` without timing columns and machine lines."""
    out: list[str] = []
    drop: set[int] = set()
    in_table = False
    for line in text.splitlines():
        if _DROP_LINE.match(line):
            continue
        if line.lstrip().startswith("|"):
            cells = _cells(line)
            if not in_table:  # the header row decides which columns go
                drop = {i for i, c in enumerate(cells) if _TIMING.search(c)}
                in_table = True
            line = "| " + " | ".join(c for i, c in enumerate(cells) if i not in drop) + " |"
        else:
            in_table = False
        out.append(line)
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: diff_tables.py OLD NEW", file=sys.stderr)
        return 2
    old, new = (strip(Path(p).read_text()) for p in argv)
    diff = list(difflib.unified_diff(old, new, argv[0], argv[1], lineterm=""))
    if diff:
        print("\n".join(diff))
        return 1
    print(f"identical ({len(new)} lines compared; timing columns and machine lines dropped)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

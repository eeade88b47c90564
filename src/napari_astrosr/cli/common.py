"""Helpers shared by the CLI commands (argument types, progress bars)."""

from __future__ import annotations

import sys
from collections.abc import Generator
from typing import TypeVar

from ..progress import Progress, run

T = TypeVar("T")


def run_with_bar(job: Generator[Progress, None, T], *, desc: str = "", quiet: bool = False) -> T:
    """Drive a job generator with a tqdm progress bar on stderr."""
    if quiet:
        return run(job)
    from tqdm import tqdm

    bar = tqdm(desc=desc, file=sys.stderr, leave=False, dynamic_ncols=True)
    try:

        def update(ev: Progress) -> None:
            if ev.total and bar.total != ev.total:
                bar.total = ev.total
            bar.n = ev.step
            if ev.message:
                bar.set_postfix_str(ev.message, refresh=False)
            bar.refresh()

        return run(job, on_progress=update)
    finally:
        bar.close()

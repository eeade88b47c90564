"""The long-job protocol shared by the CLI, the widgets and the tests.

A long job is a generator that yields :class:`Progress` events and *returns* its
result (``StopIteration.value``). It takes a ``stop`` argument (anything with
``is_set()``, e.g. :class:`StopFlag` or :class:`threading.Event`) and checks it between
steps; when set, it returns the best result so far or raises :class:`StoppedError`.

- tests and the Python API call :func:`run` (synchronous);
- the CLI calls :func:`run` with ``on_progress`` driving a tqdm bar;
- widgets wrap the generator in a napari ``thread_worker`` (``yield`` -> ``yielded``
  signal, ``return`` -> ``returned``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, Optional, TypeVar

import numpy as np

T = TypeVar("T")


@dataclass
class Progress:
    """One progress event of a long job."""

    step: int
    total: Optional[int] = None
    message: str = ""
    preview: Optional[np.ndarray] = None
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def fraction(self) -> Optional[float]:
        """``step / total``, or None without a total."""
        if not self.total:
            return None
        return min(1.0, self.step / self.total)


class StopFlag:
    """A thread-safe stop request (a thin wrapper over :class:`threading.Event`)."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        """Ask the job to stop."""
        self._event.set()

    def is_set(self) -> bool:
        """Whether a stop was asked for."""
        return self._event.is_set()

    def clear(self) -> None:
        """Forget an earlier stop request."""
        self._event.clear()


class _NeverStop:
    def is_set(self) -> bool:  # noqa: D102
        return False


NEVER = _NeverStop()

JobGenerator = Generator[Progress, None, T]


def run(
    job: Generator[Progress, None, T],
    *,
    on_progress: Optional[Callable[[Progress], None]] = None,
) -> T:
    """Drive a job generator to completion and return its result."""
    while True:
        try:
            event = next(job)
        except StopIteration as done:
            return done.value
        if on_progress is not None:
            on_progress(event)


def batches(job: Generator[Progress, None, T], interval: float) -> Generator[list[Progress], None, T]:
    """Pass a job's events on in lists, at most one list every ``interval`` seconds; return its result.

    Used where each hand-over costs (a GUI thread, a pipe to another process): a job that
    yields thousands of events cannot flood the receiver.
    """
    batch: list[Progress] = []
    last = 0.0
    while True:
        try:
            event = next(job)
        except StopIteration as done:
            if batch:
                yield batch
            return done.value
        batch.append(event)
        now = time.monotonic()
        if now - last >= interval:
            yield batch
            batch = []
            last = now

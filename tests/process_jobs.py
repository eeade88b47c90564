"""Small job generators for the worker-process tests (importable in a child: no Qt, no pytest)."""

from __future__ import annotations

import os
import time
import warnings

from napari_astrosr.exceptions import AstroSRError, AstroSRWarning
from napari_astrosr.progress import Progress


def where(n: int = 3, *, stop):
    """Yields n events; returns the pid it ran in."""
    for i in range(n):
        yield Progress(i + 1, n, f"step {i + 1}")
    return os.getpid()


def warns_then_fails(*, stop):
    """A warning, an event, then a one-line AstroSRError."""
    warnings.warn("this projection amplifies noise", AstroSRWarning, stacklevel=1)
    yield Progress(1, 2, "half")
    raise AstroSRError("bad thing at step 2; fix the input")


def cooperative(*, stop):
    """Counts until stopped; returns how far it got."""
    i = 0
    while not stop.is_set():
        i += 1
        time.sleep(0.01)
        yield Progress(i, None, "counting")
    return ("partial", i)


def deaf(seconds: float = 60.0, *, stop):
    """One long step that never looks at ``stop`` (like a projection that cannot be interrupted)."""
    yield Progress(0, 1, "one long step")
    time.sleep(seconds)
    return "finished"


def holds_the_gil(seconds: float = 1.5, *, stop):
    """Holds the GIL for about ``seconds`` in single C calls (list.sort), as sep's extraction does."""
    import random

    rng = random.Random(0)
    data = [rng.random() for _ in range(1_000_000)]  # a Python loop: the GIL switches here
    yield Progress(0, 1, "sorting")
    end = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < end:
        sorted(data)  # one C call holding the GIL throughout (~0.25 s on a 2-core CI machine)
        n += 1
    yield Progress(1, 1, "sorted")
    return n


def dies(code: int = 3, *, stop):
    """The worker process ends mid-job (as when the OS kills it for memory)."""
    yield Progress(0, 1, "about to die")
    os._exit(code)


def echo(*arrays, stop):
    """Returns its arrays (a round trip through the worker process) and their sums as seen there."""
    yield Progress(1, 1, "echo")
    return arrays, [float(a.sum()) for a in arrays]

"""Widget jobs in a worker process (``_napari/_process.py``): events, result, warnings, errors, Stop."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import process_jobs as pj
import pytest

from napari_astrosr._napari import _process
from napari_astrosr.exceptions import AstroSRError, AstroSRWarning, StoppedError
from napari_astrosr.progress import StopFlag


def drain(gen):
    events = []
    while True:
        try:
            events.append(next(gen))
        except StopIteration as done:
            return events, done.value


def test_runs_in_another_process_and_returns():
    events, pid = drain(_process.in_process(pj.where, 4, stop=StopFlag()))
    assert pid != os.getpid()
    assert [e.step for e in events] == [1, 2, 3, 4]
    assert events[-1].message == "step 4"
    # the server goes back to the pool and serves the next job
    _, pid2 = drain(_process.in_process(pj.where, 1, stop=StopFlag()))
    assert pid2 == pid


def test_warnings_and_errors_come_back():
    gen = _process.in_process(pj.warns_then_fails, stop=StopFlag())
    with pytest.warns(AstroSRWarning, match="amplifies noise"):
        with pytest.raises(AstroSRError, match="bad thing at step 2"):
            drain(gen)


def test_cooperative_stop_returns_partial_result():
    stop = StopFlag()
    gen = _process.in_process(pj.cooperative, stop=stop)
    n = 0
    t_stop = None
    while True:
        try:
            next(gen)
        except StopIteration as done:
            result = done.value
            break
        n += 1
        if n == 5:
            stop.set()
            t_stop = time.monotonic()
    assert result[0] == "partial" and result[1] >= 5
    assert time.monotonic() - t_stop < 1.0


def test_stop_kills_a_job_that_does_not_listen():
    stop = StopFlag()
    gen = _process.in_process(pj.deaf, 60.0, stop=stop, kill_after=0.3)
    first = next(gen)
    assert first.message == "one long step"
    stop.set()
    t0 = time.monotonic()
    with pytest.raises(StoppedError):
        drain(gen)
    assert time.monotonic() - t0 < 1.5
    # the killed server is not reused: the next job gets a working one
    _, pid = drain(_process.in_process(pj.where, 1, stop=StopFlag()))
    assert pid != os.getpid()


def test_opt_out_runs_in_this_process(monkeypatch):
    monkeypatch.setenv("ASTROSR_JOBS_IN_PROCESS", "0")
    _, pid = drain(_process.in_process(pj.where, 2, stop=StopFlag()))
    assert pid == os.getpid()


@pytest.mark.skipif(os.name != "posix", reason="the POSIX worker is a plain child, not a multiprocessing spawn")
def test_a_script_without_main_guard_is_not_rerun(tmp_path):
    """napari scripts rarely guard ``__main__``: the worker must not execute the script again."""
    marker = tmp_path / "runs.txt"
    script = tmp_path / "user_script.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys
            sys.path.insert(0, {str(Path(__file__).parent)!r})
            with open({str(marker)!r}, "a") as f:
                f.write("ran\\n")
            import process_jobs as pj
            from napari_astrosr._napari import _process
            from napari_astrosr.progress import StopFlag
            gen = _process.in_process(pj.where, 2, stop=StopFlag())
            try:
                while True:
                    next(gen)
            except StopIteration as done:
                print("pid", done.value)
            """
        )
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "pid" in out.stdout
    assert marker.read_text().count("ran") == 1


def test_a_dead_worker_is_a_clear_error_and_the_next_job_runs():
    with pytest.raises(AstroSRError, match=r"worker process ended unexpectedly \(exit code 3"):
        drain(_process.in_process(pj.dies, 3, stop=StopFlag()))
    _, pid = drain(_process.in_process(pj.where, 1, stop=StopFlag()))
    assert pid != os.getpid()


def test_an_unpicklable_job_is_named():
    def local_job(*, stop):  # a closure: not importable in the child
        yield from ()

    with pytest.raises(AstroSRError, match="cannot send local_job to the worker process"):
        drain(_process.in_process(local_job, stop=StopFlag()))


def test_arrays_travel_exactly_and_come_back_writable():
    import numpy as np

    rng = np.random.default_rng(0)
    big = rng.normal(size=(1500, 1300)).astype(np.float32)  # out of band on POSIX
    fortran = np.asfortranarray(rng.normal(size=(40, 30)))
    strided = rng.normal(size=(64, 64))[::3, 1::2]  # not contiguous: pickled in band
    _, (back, sums) = drain(_process.in_process(pj.echo, big, fortran, strided, stop=StopFlag()))
    for a, b, s in zip((big, fortran, strided), back, sums):
        assert b.dtype == a.dtype and b.shape == a.shape
        np.testing.assert_array_equal(a, b)
        assert s == pytest.approx(float(a.sum()))
        assert b.flags.writeable
        b[0, 0] = 1.0  # the result is the caller's to change

"""Run a widget's job in a worker *process*, so napari's GUI thread never waits for it.

Why a process and not only a thread: much of a job's compute holds the GIL for long
stretches: sep's C extraction, imports of torch on first use, full garbage collections
over the whole heap, some scipy.ndimage filters. In a thread worker each of those froze
the viewer for up to seconds (issue 23, measured with ``benchmarks/gui_responsiveness.py``
and ``py-spy --gil``). In a child process they cannot touch the GUI thread's GIL; what
is left on the parent side is a thread waiting on a pipe (GIL released) and unpickling
the events and the result.

This module is Qt-free (stdlib ``multiprocessing``; numpy for receive buffers): the child imports only
what the job function needs. Parts:

- :class:`JobServer`: one child process running :func:`_serve`, which waits for
  jobs, imports the heavy modules once when it starts, and runs one job at a time.
  Servers are kept in a small idle pool and reused across jobs (a new child costs a
  Python start plus the torch import, ~2-4 s on a 2-core machine).
- :func:`in_process`: a generator to ``yield from`` inside a thread job: it sends
  ``fn(*args, stop=..., **kwargs)`` to a server, yields the job's progress events as
  they arrive, re-issues its warnings, returns its return value and re-raises its
  exceptions. When the caller's stop flag is set it passes the request on; a job that
  has not ended ``kill_after`` seconds later is ended by killing its child (its result
  would be dropped anyway), so Stop truly ends it.

``ASTROSR_JOBS_IN_PROCESS=0`` runs the same functions in the calling thread instead
(debugging, or embedding where child processes are unwanted).
"""

from __future__ import annotations

import atexit
import itertools
import os
import pickle
import struct
import sys
import threading
import time
import warnings
from collections.abc import Callable, Generator, Iterable
from typing import Any, Optional

from ..exceptions import AstroSRError, StoppedError
from ..progress import Progress, StopFlag, batches

#: Modules a fresh server imports before its first job (the first Run then starts at once).
PREWARM = ("numpy", "torch", "napari_astrosr.restoration", "napari_astrosr.core.detection")
#: Idle servers kept for reuse.
MAX_IDLE = 2
#: Seconds between progress batches sent by the child (the GUI shows at most ~20 updates/s).
SEND_INTERVAL = 0.05

_DEAD = (
    "the job's worker process ended unexpectedly (exit code {code}; out of memory?); run it again, or set "
    "ASTROSR_JOBS_IN_PROCESS=0 to run jobs in the viewer's process"
)

_idle: list[JobServer] = []
_all: list[JobServer] = []
_lock = threading.Lock()
_ids = itertools.count(1)


# Large arrays travel out of band (pickle protocol 5): the pickle holds only a small head, and each
# array's bytes are written from, and read into, their own buffers by os.write / os.readv, which
# release the GIL. An in-band pickle of a 256 MB array took seconds of memcpy with the GIL held
# (pickle.dumps) and ~0.2 s to load: a frozen viewer at every large Restore. Where os.readv is
# missing (Windows), plain Connection.send / recv are used.
_OOB = hasattr(os, "readv")
_SIZES = struct.Struct("!Q")


def _send_obj(conn: Any, obj: Any) -> None:
    if not _OOB:
        conn.send(obj)
        return
    buffers: list[pickle.PickleBuffer] = []
    head = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    views = [b.raw() for b in buffers]
    conn.send_bytes(_SIZES.pack(len(views)) + b"".join(_SIZES.pack(v.nbytes) for v in views) + head)
    fd = conn.fileno()
    for v in views:
        while v.nbytes:
            v = v[os.write(fd, v) :]


def _recv_obj(conn: Any) -> Any:
    if not _OOB:
        return conn.recv()
    import numpy as np

    msg = memoryview(conn.recv_bytes())
    (n,) = _SIZES.unpack_from(msg, 0)
    sizes = [_SIZES.unpack_from(msg, 8 * (i + 1))[0] for i in range(n)]
    # np.empty, not bytearray: bytearray zero-fills (hundreds of ms per 256 MB with the GIL held);
    # these pages are first touched by readv, which runs without the GIL. Writable, so arrays come back
    # as ordinary writable arrays.
    buffers = [np.empty(size, dtype=np.uint8) for size in sizes]
    fd = conn.fileno()
    for b in buffers:
        v = memoryview(b)
        while v.nbytes:
            got = os.readv(fd, [v])
            if got == 0:
                raise EOFError("the worker process closed its pipe")
            v = v[got:]
    return pickle.loads(msg[8 * (n + 1) :], buffers=buffers)


def enabled() -> bool:
    """Whether widget jobs run in a worker process (``ASTROSR_JOBS_IN_PROCESS``, default on)."""
    if getattr(sys, "frozen", False):  # a frozen app's executable is not a Python to start
        return False
    return os.environ.get("ASTROSR_JOBS_IN_PROCESS", "1").strip().lower() not in ("0", "false", "no", "off")


# ----------------------------------------------------------------------------- child side


class _IdStop(StopFlag):
    """The child's stop flag for one job: set when the parent asked to stop that job id."""

    def __init__(self, job_id: int, stopped: set) -> None:
        super().__init__()
        self._id, self._stopped = job_id, stopped

    def is_set(self) -> bool:
        return self._id in self._stopped or super().is_set()


def _picklable(exc: BaseException) -> BaseException:
    """``exc`` if it survives a pickle round trip, else a RuntimeError carrying its text."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - any failure means: send a plain copy
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def _serve(conn: Any, ctl: Any, prewarm: Iterable[str]) -> None:
    """The child's loop: run ``(job_id, fn, args, kwargs)`` jobs until ``None`` or EOF."""
    import importlib
    import signal

    # Ctrl-C in the terminal reaches the whole process group: the parent decides
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stopped: set[int] = set()

    def watch() -> None:
        while True:
            try:
                stopped.add(int(ctl.recv()))
            except (EOFError, OSError):
                return

    threading.Thread(target=watch, name="astrosr-stop-watch", daemon=True).start()
    for name in prewarm:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a missing optional module only costs the first job time
            pass
    while True:
        try:
            msg = _recv_obj(conn)
        except (EOFError, OSError):
            return
        if msg is None:
            return
        job_id, fn, args, kwargs = msg
        try:
            _run_one(conn, fn, args, kwargs, _IdStop(job_id, stopped))
        except (BrokenPipeError, EOFError, OSError):
            return  # the parent is gone
        stopped.discard(job_id)


def _child_main(argv: list[str]) -> None:
    """Entry point of a POSIX worker: ``FD FD MODULES`` (see :class:`JobServer`)."""
    from multiprocessing.connection import Connection

    prewarm = [m for m in argv[2].split(",") if m] if len(argv) > 2 else []
    _serve(Connection(int(argv[0])), Connection(int(argv[1])), prewarm)


def _run_one(conn: Any, fn: Callable, args: tuple, kwargs: dict, stop: StopFlag) -> None:
    def flush_warnings(caught: list) -> None:
        if caught:
            _send_obj(conn, ("warn", [(str(w.message), w.category) for w in caught]))
            caught.clear()

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            events = batches(fn(*args, stop=stop, **kwargs), SEND_INTERVAL)
            while True:
                try:
                    batch = next(events)
                except StopIteration as done:
                    result = done.value
                    break
                flush_warnings(caught)
                _send_obj(conn, ("progress", batch))
            flush_warnings(caught)
        _send_obj(conn, ("result", result))
    except (BrokenPipeError, EOFError):
        raise
    except BaseException as exc:  # noqa: BLE001 - every failure goes back to the parent
        _send_obj(conn, ("error", _picklable(exc)))


# ----------------------------------------------------------------------------- parent side


class JobServer:
    """One worker process.

    On POSIX the child is a plain ``python -c`` started with :class:`subprocess.Popen`,
    handed its two socket ends by file descriptor: unlike ``multiprocessing``'s ``spawn``,
    it does not re-run the parent's ``__main__`` script, so a napari script without an
    ``if __name__ == "__main__"`` guard does not open a second viewer. On Windows
    (no fd passing) it is a ``spawn`` process.
    """

    def __init__(self, prewarm: Iterable[str] = PREWARM) -> None:
        import multiprocessing as mp

        self.conn, child_conn = mp.Pipe()
        self.ctl, child_ctl = mp.Pipe()
        self._popen: Any = None
        self._proc: Any = None
        if os.name == "posix":
            import subprocess

            fds = (child_conn.fileno(), child_ctl.fileno())
            env = dict(os.environ)
            # the child finds the package (and everything else) where the parent does
            env["PYTHONPATH"] = os.pathsep.join([p for p in sys.path if p] + [env.get("PYTHONPATH", "")]).rstrip(
                os.pathsep
            )
            code = "import sys; from napari_astrosr._napari._process import _child_main; _child_main(sys.argv[1:])"
            self._popen = subprocess.Popen(
                [sys.executable, "-c", code, str(fds[0]), str(fds[1]), ",".join(prewarm)],
                pass_fds=fds,
                env=env,
                stdin=subprocess.DEVNULL,
            )
        else:  # pragma: no cover - Windows
            ctx = mp.get_context("spawn")
            # not daemonic: a job may start processes of its own (Dask, data loaders); atexit ends it
            self._proc = ctx.Process(target=_serve, args=(child_conn, child_ctl, tuple(prewarm)), daemon=False)
            self._proc.start()
        child_conn.close()
        child_ctl.close()

    @property
    def alive(self) -> bool:
        if self._popen is not None:
            return self._popen.poll() is None
        return self._proc.is_alive()

    @property
    def exitcode(self) -> Optional[int]:
        return self._popen.poll() if self._popen is not None else self._proc.exitcode

    def _join(self, timeout: float) -> None:
        if self._popen is not None:
            try:
                self._popen.wait(timeout)
            except Exception:  # noqa: BLE001 - subprocess.TimeoutExpired: still running
                pass
        else:
            self._proc.join(timeout)

    def kill(self) -> None:
        """End the child now (a job inside it is lost)."""
        try:
            (self._popen or self._proc).kill()
            self._join(2.0)
        except Exception:  # noqa: BLE001 - already gone
            pass
        for c in (self.conn, self.ctl):
            try:
                c.close()
            except Exception:  # noqa: BLE001
                pass
        with _lock:
            if self in _idle:
                _idle.remove(self)
            if self in _all:
                _all.remove(self)

    def close(self, timeout: float = 1.0) -> None:
        """Ask the child to exit; kill it if it has not within ``timeout`` s."""
        try:
            _send_obj(self.conn, None)
            self._join(timeout)
        except Exception:  # noqa: BLE001 - broken pipe: it is gone already
            pass
        self.kill()


def _acquire() -> JobServer:
    with _lock:
        while _idle:
            server = _idle.pop()
            if server.alive:
                return server
            _all.remove(server)
    server = JobServer()
    with _lock:
        _all.append(server)
    return server


def _give_back(server: JobServer) -> None:
    with _lock:
        if server.alive and len(_idle) < MAX_IDLE and server in _all:
            _idle.append(server)
            return
    server.close()


def prewarm() -> None:
    """Start one idle server in the background if none is idle (call when a widget opens)."""
    if not enabled():
        return
    with _lock:
        if any(s.alive for s in _idle):
            return
    server = JobServer()
    with _lock:
        _all.append(server)
        _idle.append(server)


def shutdown() -> None:
    """End every server (at interpreter exit; tests may call it)."""
    with _lock:
        servers = list(_all)
    for s in servers:
        s.close(0.5)


atexit.register(shutdown)


def in_process(
    fn: Callable[..., Generator[Progress, None, Any]],
    *args: Any,
    stop: StopFlag,
    kill_after: Optional[float] = 0.5,
    **kwargs: Any,
) -> Generator[Progress, None, Any]:
    """Run the job generator ``fn(*args, stop=..., **kwargs)`` in a worker process.

    Use as ``result = yield from in_process(fn, ..., stop=stop)`` inside a thread job.
    ``fn`` and its arguments must be picklable (a module-level function of a Qt-free
    module; arrays, tables, WCS, headers, options). Yields the job's events; returns its
    value; raises what it raised. ``kill_after``: seconds after ``stop`` is set that the
    job may take to end by itself before its process is killed and :class:`StoppedError`
    raised (None: never kill, e.g. a training run saving its checkpoint on Stop).
    """
    if not enabled():
        return (yield from fn(*args, stop=stop, **kwargs))
    server = _acquire()
    job_id = next(_ids)
    finished = False
    try:
        try:
            _send_obj(server.conn, (job_id, fn, args, kwargs))
        except (pickle.PicklingError, TypeError, AttributeError) as exc:  # a programming error: say which
            finished = True  # nothing was sent: the server stays usable
            raise AstroSRError(f"cannot send {getattr(fn, '__name__', fn)} to the worker process: {exc}") from exc
        except OSError as exc:
            raise AstroSRError(_DEAD.format(code=server.exitcode)) from exc
        stop_sent: Optional[float] = None
        while True:
            if stop_sent is None and stop.is_set():
                server.ctl.send(job_id)
                stop_sent = time.monotonic()
            if stop_sent is not None and kill_after is not None and time.monotonic() - stop_sent > kill_after:
                server.kill()
                raise StoppedError("stopped")
            if not server.conn.poll(0.02):
                if not server.alive:
                    raise AstroSRError(_DEAD.format(code=server.exitcode))
                continue
            try:
                kind, payload = _recv_obj(server.conn)
            except (EOFError, OSError) as exc:
                if stop_sent is not None:
                    raise StoppedError("stopped") from exc
                server._join(2.0)  # its exit code, once the OS has it
                raise AstroSRError(_DEAD.format(code=server.exitcode)) from exc
            if kind == "progress":
                yield from payload
            elif kind == "warn":
                for text, category in payload:
                    warnings.warn(text, category, stacklevel=2)
            elif kind == "result":
                finished = True
                return payload
            elif kind == "error":
                finished = True
                raise payload
    finally:
        if finished:
            _give_back(server)
        elif server.alive:
            # abandoned mid-job (closed generator, Stop, an error here): the child may still be
            # computing; it is not reusable
            server.kill()

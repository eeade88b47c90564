"""Atomic, exclusive output files, and the one check that an output is not an input.

Every writer in the package goes through :func:`atomic_output`, so an interrupted or
failed write (disk full, Ctrl-C, an exception) never leaves a partial file and never
damages an existing one, and finished files get the usual permissions (the temporary
file from :func:`tempfile.mkstemp` is private, 0600). Without ``overwrite`` the finished
file is published with ``link(2)``, which fails if the name exists: of two writers racing
for the same name exactly one wins, the other gets a clear error.

:func:`claim_output` is what commands call before doing any work: it refuses a path that
resolves to (or is the same inode as) any of the command's inputs, with or without
``overwrite``, and names that the file system cannot hold.
"""

from __future__ import annotations

import errno
import os
import signal
import tempfile
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Optional, Union

from ..exceptions import AstroSRError

PathLike = Union[str, os.PathLike]

#: Temporary files are ``.astrosr-<pid>-<random><suffix>``: the pid tells a stale one (its writer
#: was killed, e.g. SIGKILL of a batch worker) from one being written (:func:`remove_stale_temporaries`).
TEMP_PREFIX = ".astrosr-"

#: Longest file name (one path component, in bytes) that common file systems hold.
NAME_MAX = 255


def _umask() -> int:
    # os.umask can only be read by setting it, which races with other threads: read /proc instead
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def shown(path: PathLike) -> str:
    """A path as it can be printed on one line (control characters escaped, bad bytes replaced)."""
    text = os.fsdecode(os.fspath(path))
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= 160 else text[:70] + "..." + text[-70:]


def same_file(a: PathLike, b: PathLike) -> bool:
    """Whether ``a`` and ``b`` name the same file (same inode, or the same resolved path)."""
    try:
        if os.path.samefile(a, b):
            return True
    except (OSError, ValueError):
        pass
    try:
        return os.path.realpath(a) == os.path.realpath(b)
    except (OSError, ValueError):
        return False


def check_name(path: PathLike, *, what: Optional[str] = None) -> None:
    """Refuse an output name the file system cannot hold (a component over 255 bytes, NUL)."""
    label = what or shown(path)
    raw = os.fsencode(os.fspath(path))
    if b"\0" in raw:
        raise AstroSRError(f"{label}: the file name contains a NUL byte; choose another name.")
    for part in raw.split(b"/"):
        if len(part) > NAME_MAX:
            raise AstroSRError(
                f"{label}: a file name component is {len(part)} bytes long; the limit is "
                f"{NAME_MAX}. Choose a shorter name."
            )


def refuse_inputs(path: PathLike, inputs: Iterable[PathLike], *, what: Optional[str] = None) -> None:
    """Refuse an output ``path`` the file system cannot name or that is one of ``inputs``.

    "Is one of" means the same inode (hard links, symbolic links, ``./x`` vs ``x``) or the
    same resolved path; checked whether or not the output exists yet.
    """
    label = what or shown(path)
    check_name(path, what=label)
    for src in inputs:
        if src is None:
            continue
        if os.path.lexists(src) and same_file(path, src):
            raise AstroSRError(
                f"{label}: is an input file of this command ({shown(src)}); refusing to write over it "
                "(even with --overwrite). Choose another output name."
            )


def claim_output(
    path: PathLike,
    *,
    inputs: Iterable[PathLike] = (),
    overwrite: bool = False,
    what: Optional[str] = None,
    folder: bool = False,
) -> Path:
    """Check, before any work, that ``path`` may be written.

    Parameters
    ----------
    path
        The output file (or folder, with ``folder=True``).
    inputs
        The command's input files; ``path`` must not be any of them, whatever ``overwrite`` says.
    overwrite
        Whether an existing ``path`` may be replaced.
    what
        How to name the output in messages (e.g. ``"-o out.fits"``); default: the path.
    folder
        ``path`` is an output folder: it may exist, but must not be an input or contain one
        as a file it would write (checked by the command), and must not be a file.

    Returns
    -------
    Path
        ``path`` as a :class:`~pathlib.Path`.
    """
    out = Path(path)
    label = what or shown(out)
    refuse_inputs(out, inputs, what=label)
    if folder:
        if out.exists() and not out.is_dir():
            raise AstroSRError(f"{label}: exists and is not a folder; choose another output folder.")
        return out
    if out.is_dir():
        raise AstroSRError(f"{label}: is a folder; give a file name.")
    if os.path.lexists(out) and not overwrite:
        raise AstroSRError(f"{label}: already exists; choose another name or pass --overwrite.")
    parent = out.parent
    if not parent.exists():
        raise AstroSRError(f"{label}: folder {shown(parent)} does not exist; create it first.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise AstroSRError(f"{label}: folder {shown(parent)} is not writable; choose another place.")
    return out


@contextmanager
def atomic_output(
    path: PathLike,
    *,
    suffix: str = ".tmp",
    overwrite: bool = True,
    inputs: Iterable[PathLike] = (),
) -> Iterator[str]:
    """Yield a temporary path next to ``path``; on success publish it as ``path``.

    With ``overwrite=False`` the publication is exclusive (``link(2)`` fails if ``path``
    exists, even if it appeared while we were writing). ``inputs`` are re-checked just
    before publishing. On any exception the temporary file is removed; an
    :class:`OSError` (disk full, quota, I/O error) becomes a one-line
    :class:`AstroSRError` naming ``path``.
    """
    out = Path(path)
    inputs = [s for s in inputs if s is not None]
    check_name(out)
    # a short, fixed-size prefix: the temporary name must fit even when the final name is long
    try:
        fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-", suffix=suffix[-16:], dir=out.parent or ".")
    except OSError as exc:
        raise AstroSRError(
            f"{shown(out)}: could not be created ({exc.strerror or exc}); check the folder exists and is writable."
        ) from exc
    os.close(fd)
    published = False
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        for src in inputs:
            if os.path.lexists(out) and os.path.exists(src) and same_file(out, src):
                raise AstroSRError(
                    f"{shown(out)}: is an input file ({shown(src)}); refusing to write over it. "
                    "Choose another output name."
                )
        if overwrite:
            os.replace(tmp, out)
        else:
            try:
                os.link(tmp, out)
            except FileExistsError:
                raise AstroSRError(
                    f"{shown(out)}: already exists (another process may have just written it); "
                    "choose another name or pass --overwrite."
                ) from None
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                    raise
                # file systems without hard links: O_EXCL reservation, then rename over it
                fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                os.close(fd)
                os.replace(tmp, out)
            else:
                os.unlink(tmp)
        published = True
    except BaseException as exc:
        if not published:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        if isinstance(exc, OSError) and not isinstance(exc, AstroSRError):
            raise AstroSRError(
                f"{shown(out)}: could not be written ({exc.strerror or exc}); nothing was left behind."
            ) from exc
        raise


@contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold SIGINT, SIGTERM and SIGALRM until the block ends (then they are delivered as usual).

    For writes of several files that belong together (a checkpoint, its sidecar and the
    resume state): an interrupt lands before or after them, never in between. Only the
    main thread can receive Python signal handlers, so elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    sigs = {signal.SIGINT, signal.SIGTERM, signal.SIGALRM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def remove_stale_temporaries(folder: PathLike) -> list[Path]:
    """Remove temporary files of :func:`atomic_output` in ``folder`` whose writer process is gone.

    A writer killed with SIGKILL (a batch worker, the OOM killer) cannot remove its temporary
    file; a rerun calls this first. Files of live processes (another run writing now) stay.
    Only meaningful for writers on this machine: on a shared folder written from several hosts,
    a pid may be another host's (then the file is kept unless the pid is free here too).
    """
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for e in entries:
        if not e.name.startswith(TEMP_PREFIX) or not e.is_file(follow_symlinks=False):
            continue
        try:
            pid = int(e.name[len(TEMP_PREFIX) :].split("-", 1)[0])
        except ValueError:
            continue
        try:
            os.kill(pid, 0)
            continue  # alive (or not ours to signal): keep
        except ProcessLookupError:
            pass
        except OSError:
            continue
        try:
            os.unlink(e.path)
            removed.append(Path(e.path))
        except OSError:
            pass
    return removed

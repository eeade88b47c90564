"""Atomic output files: write to a temporary file in the target folder, then rename.

Every writer in the package goes through :func:`atomic_output`, so an interrupted or
failed write (disk full, Ctrl-C, an exception) never leaves a partial file and never
damages an existing one, and finished files get the usual permissions (the temporary
file from :func:`tempfile.mkstemp` is private, 0600).
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Union

from ..exceptions import AstroSRError


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


@contextmanager
def atomic_output(path: Union[str, os.PathLike], *, suffix: str = ".tmp") -> Iterator[str]:
    """Yield a temporary path next to ``path``; on success rename it to ``path``.

    On any exception the temporary file is removed; an :class:`OSError` (disk full, quota,
    I/O error) becomes a one-line :class:`AstroSRError` naming ``path``.
    """
    out = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=suffix, dir=out.parent)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, out)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise AstroSRError(f"{out}: could not be written ({exc.strerror or exc}); nothing was left behind.") from exc
        raise

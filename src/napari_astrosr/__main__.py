import os
import signal
import sys


def _end(code: int) -> None:
    # after an interrupt, end at once: the interpreter's teardown can take seconds, and a daemon
    # thread still writing to stderr then aborts it (SIGABRT) instead of the exit code we chose
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


# a signal that arrives while the package is still being imported ends the program quietly with the
# shell's codes (130 / 143); once main() runs, its own handlers take over
signal.signal(signal.SIGTERM, lambda *_: _end(143))
try:
    from .cli import Terminated, main
except KeyboardInterrupt:
    _end(130)

try:
    code = main()
except Terminated:  # a late signal, after main's own handlers were restored
    _end(143)
except KeyboardInterrupt:
    _end(130)
sys.exit(code)

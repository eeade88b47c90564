import signal
import sys

# a signal that arrives while the package is still being imported ends the program quietly with the
# shell's codes (130 / 143); once main() runs, its own handlers take over
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
try:
    from .cli import main
except KeyboardInterrupt:
    sys.exit(130)

sys.exit(main())

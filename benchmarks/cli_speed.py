"""How long the command line and the package import take, against ``python -c "import numpy"``.

Each command runs in a fresh interpreter; the commands are interleaved (one round runs each
once, in turn) so machine load hits them alike; the table gives the median wall time over the
rounds and each median's ratio to ``import numpy``'s and to ``astrosr --help``'s. The targets
(issue 25 item 4, issue 19 item 3): ``astrosr --help`` within 3x of ``import numpy``,
``astrosr methods`` within 1.5x of ``--help``, ``import napari_astrosr`` under 1 s, and the
Restore widget's method list (``list_methods()``, in-process after the package is imported)
under 1 s.

With ``--compare SRC`` the same commands also run with another source tree first on the path
(e.g. ``/work/main/src``, the code before this change), in the same rounds.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/cli_speed.py --repeats 7
    OMP_NUM_THREADS=1 python benchmarks/cli_speed.py --repeats 7 --compare /work/main/src
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

COMMANDS = {
    "python -c pass": ["-c", "pass"],
    'python -c "import numpy"': ["-c", "import numpy"],
    "import napari_astrosr": ["-c", "import napari_astrosr"],
    "astrosr --help": ["-m", "napari_astrosr", "--help"],
    "astrosr methods": ["-m", "napari_astrosr", "methods"],
}
# the Restore widget's listing: list_methods() in a process that has already imported the package
LISTING = (
    "import time, napari_astrosr; t = time.perf_counter(); "
    "from napari_astrosr import list_methods; list_methods(); "
    "print(time.perf_counter() - t)"
)


def _env(src: Path) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(src), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _wall(args: list[str], env: dict) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, *args], env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def _listing(env: dict) -> float:
    out = subprocess.run([sys.executable, "-c", LISTING], env=env, check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    """Run the rounds and print the table (markdown)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7, help="interleaved rounds (default 7)")
    ap.add_argument("--compare", type=Path, help="another source tree to time in the same rounds")
    args = ap.parse_args()
    trees = {"this tree": SRC}
    if args.compare:
        trees["compare"] = args.compare.resolve()
    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.repeats):
        for tree, src in trees.items():
            env = _env(src)
            for name, cmd in COMMANDS.items():
                if tree != "this tree" and name in ("python -c pass", 'python -c "import numpy"'):
                    continue  # the same for every tree
                times.setdefault((tree, name), []).append(_wall(cmd, env))
            times.setdefault((tree, "list_methods() in-process"), []).append(_listing(env))
    med = {k: statistics.median(v) for k, v in times.items()}
    numpy_s = med[("this tree", 'python -c "import numpy"')]
    print(
        f"{args.repeats} interleaved rounds, median wall seconds; python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs; trees: " + ", ".join(f"{t} = {s}" for t, s in trees.items())
    )
    print()
    print("| tree | command | median s | / import numpy | / astrosr --help |")
    print("|---|---|---:|---:|---:|")
    for (tree, name), m in med.items():
        help_s = med.get((tree, "astrosr --help"))
        r_np = f"{m / numpy_s:.2f}" if name != "list_methods() in-process" else "-"
        r_help = f"{m / help_s:.2f}" if help_s and name in ("astrosr --help", "astrosr methods") else "-"
        print(f"| {tree} | {name} | {m:.3f} | {r_np} | {r_help} |")


if __name__ == "__main__":
    main()

"""``astrosr methods``: every restoration method/model with its scales, size and devices."""

from __future__ import annotations

import argparse

NAME = "methods"
HELP = "list restoration methods and networks: scales, parameters, FLOPs, devices, bundled weights"
ORDER = 39


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.add_argument(
        "--presets",
        action="store_true",
        help="also build every preset (incl. the paper-size ones) to report its parameters and FLOPs (slower)",
    )


def _fmt(n) -> str:
    if n is None:
        return "-"
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)


def run(args: argparse.Namespace) -> int:
    import json

    from ..method_table import list_methods

    methods = list_methods(presets=args.presets)
    if args.json:
        print(json.dumps(methods, indent=2, default=str))
        return 0
    print(
        f"{'method':<18}{'kind':<10}{'scales':<11}{'params':>9}{'FLOPs*':>9}  {'weights':<9}{'devices':<14}description"
    )
    for m in methods:
        scales = ",".join(map(str, m["scales"]))
        bundled = ",".join(f"x{s}" for s in m["bundled"]) or ("-" if m["kind"] == "network" else "n/a")
        devices = ",".join(m["devices"]) or "needs [ml]"  # no torch: pip install 'napari-astrosr[ml]'
        print(
            f"{m['name']:<18}{m['kind']:<10}{scales:<11}{_fmt(m['params']):>9}{_fmt(m['flops']):>9}  "
            f"{bundled:<9}{devices:<14}{m['description']}"
        )
        print(f"{'':<18}flux: {m['flux']}")
        for p, c in (m.get("presets") or {}).items():
            print(f"{'':<18}preset {p:<6} {_fmt(c['params']):>9} params {_fmt(c['flops']):>9} FLOPs")
    print(
        "* FLOPs of one forward pass on a 64x64 network input (LR grid for fisr, target grid for the others), "
        "counted by torch FlopCounterMode (multiply-add = 2); params/FLOPs of the bundled x2 weights, else "
        "of the 'small' preset. Networks without bundled weights need --model CKPT."
    )
    return 0

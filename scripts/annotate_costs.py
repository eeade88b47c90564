"""Store each checkpoint's cost in its sidecar, so ``astrosr methods`` needs no torch and no network build.

Adds (or refreshes) ``"cost": {"params": int, "flops": int, "flops_input": "64x64"}`` in every
``.json`` sidecar given (default: the bundled ``src/napari_astrosr/weights/*.json``). The cost is
counted exactly as ``list_methods`` would count it without the key: the network rebuilt from the
sidecar's ``architecture`` + ``config`` on torch's meta device, ``FlopCounterMode`` on one 64x64
network input (multiply-add = 2). The ``.pt`` files and every other key are left as they are
(``sha256`` is of the ``.pt``, so it stays valid). Needs ``napari-astrosr[ml]``.

Usage::

    python scripts/annotate_costs.py            # the bundled weights
    python scripts/annotate_costs.py --check    # exit 1 if a stored cost is missing or stale
    python scripts/annotate_costs.py runs/x/model.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from napari_astrosr.models.checkpoints import WEIGHTS_DIR, read_sidecar
from napari_astrosr.models.registry import model_cost


def cost_of(meta: dict) -> dict:
    """The ``"cost"`` entry for a sidecar: params and FLOPs of its network on a 64x64 input."""
    c = model_cost(meta["architecture"], preset=None, scale=int(meta["scale"]), size=64, **meta["config"])
    return {"params": int(c["params"]), "flops": int(c["flops"]), "flops_input": c["flops_input"]}


def main(argv: list[str] | None = None) -> int:
    """Annotate (or with ``--check`` verify) the sidecars; returns the exit code."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sidecars", nargs="*", type=Path, help="sidecar .json files (default: the bundled weights)")
    ap.add_argument("--check", action="store_true", help="only verify; exit 1 if a cost is missing or differs")
    args = ap.parse_args(argv)
    paths = args.sidecars or sorted(WEIGHTS_DIR.glob("*.json"))
    stale = 0
    for side in paths:
        meta = read_sidecar(side.with_suffix(".pt"))
        cost = cost_of(meta)
        ok = meta.get("cost") == cost
        stale += not ok
        print(
            f"{side.name:<28} params {cost['params']:>10,}  FLOPs {cost['flops']:>14,}  "
            f"{'ok' if ok else ('stale' if args.check else 'written')}"
        )
        if not ok and not args.check:
            meta["cost"] = cost
            # the format save_checkpoint writes (indent 2, sorted keys, no final newline)
            side.write_text(json.dumps(meta, indent=2, sort_keys=True))
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())

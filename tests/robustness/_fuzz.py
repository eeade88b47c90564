"""Generated hostile cases over every command, and the judge that scores them.

Shared by ``benchmarks/fuzz.py`` (thousands of cases, tables per family) and
``tests/robustness/test_fuzz_fast.py`` (a seeded subset). A case is built from
``(family, seed)`` alone, in its own folder: input files, an ``astrosr`` command line (run
in-process through :func:`napari_astrosr.cli.main`, the CLI's own error boundary) or a
subprocess script (signals, concurrency), and the list of files the command may write.

The judge records, per case:

- ``crash``: a traceback, or an exit code outside {0, 2, 130, 143} (the CLI answers a bug of
  its own with exit 1 and a one-line "internal error": counted here);
- ``hang``: no answer within the case's time limit (the worker is killed);
- ``partial``: a failed command left a file it would have written (or a temporary file), or a
  successful one left a temporary file;
- ``modified``: an input's bytes changed (SHA-256 before/after);
- ``unclear``: exit 2 without exactly one ``error:`` line naming a file or argument of the case.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _generate import KINDS as FITS_KINDS  # noqa: E402
from _generate import card, data_bytes, header_bytes  # noqa: E402

OK_CODES = {0, 2, 130, 143}
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Case:
    family: str
    seed: int
    note: str = ""
    argv: list = field(default_factory=list)  # in-process `astrosr` command line
    api: Optional[Callable] = None  # or a Python API call (must return or raise AstroSRError)
    script: Optional[Callable] = None  # or a subprocess scenario returning (codes, seconds, stderr)
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    timeout: float = 20.0


# ---------------------------------------------------------------------------------------------- inputs


def star_image(rng, n: int = 48) -> np.ndarray:
    yy, xx = np.mgrid[:n, :n]
    img = rng.normal(0.0, 1.0, (n, n))
    for _ in range(int(rng.integers(1, 5))):
        cx, cy = rng.uniform(6, n - 6, 2)
        img += rng.uniform(50, 500) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * rng.uniform(1.0, 2.0) ** 2))
    return img.astype(">f4")


def wcs_cards(
    ct=("RA---TAN", "DEC--TAN"), crval=("10.0", "20.0"), crpix=("24", "24"), cd=("-1E-4", "0", "0", "1E-4"), extra=()
) -> list:
    c = [
        card("CTYPE1", ct[0]),
        card("CTYPE2", ct[1]),
        card("CRVAL1", f"RAW:{crval[0]}"),
        card("CRVAL2", f"RAW:{crval[1]}"),
        card("CRPIX1", f"RAW:{crpix[0]}"),
        card("CRPIX2", f"RAW:{crpix[1]}"),
    ]
    c += [card(k, f"RAW:{v}") for k, v in zip(("CD1_1", "CD1_2", "CD2_1", "CD2_2"), cd)]
    return c + list(extra)


def fits_bytes(arr: np.ndarray, extra=(), bitpix: int = -32) -> bytes:
    cards = [
        card("SIMPLE", True),
        card("BITPIX", bitpix),
        card("NAXIS", 2),
        card("NAXIS1", arr.shape[1]),
        card("NAXIS2", arr.shape[0]),
    ] + list(extra)
    return header_bytes(cards) + data_bytes(arr)


def _write(d: Path, name: str, raw: bytes) -> Path:
    p = d / name
    p.write_bytes(raw)
    return p


def _raw_card(key: bytes, value: bytes) -> bytes:
    return (key.ljust(8)[:8] + b"= " + value)[:80].ljust(80)


# ---------------------------------------------------------------------------------------------- families


def fam_fits_structure(rng, d: Path, seed: int) -> Case:
    kind = sorted(FITS_KINDS)[seed % len(FITS_KINDS)] if rng.random() < 0.85 else "many_extensions"
    if kind == "many_extensions":
        arr = star_image(rng)
        n = int(rng.integers(10, 300))
        parts = [header_bytes([card("SIMPLE", True), card("BITPIX", 8), card("NAXIS", 0), card("EXTEND", True)])]
        parts += [
            header_bytes(
                [card("XTENSION", "IMAGE"), card("BITPIX", 8), card("NAXIS", 0), card("PCOUNT", 0), card("GCOUNT", 1)]
            )
        ] * n
        parts.append(
            header_bytes(
                [
                    card("XTENSION", "IMAGE"),
                    card("BITPIX", -32),
                    card("NAXIS", 2),
                    card("NAXIS1", 48),
                    card("NAXIS2", 48),
                    card("PCOUNT", 0),
                    card("GCOUNT", 1),
                ]
            )
            + data_bytes(arr)
        )
        p = _write(d, "in.fits", b"".join(parts))
        note = f"{n} empty extensions"
    else:
        c = FITS_KINDS[kind](rng)
        p = _write(d, c.name, c.data)
        note = f"{kind}: {c.note}"
    cmd = ["info", "detect", "restore", "api"][seed % 4]
    if cmd == "info":
        return Case("fits_structure", seed, note, ["info", str(p)], inputs=[p])
    if cmd == "detect":
        return Case(
            "fits_structure",
            seed,
            note,
            ["detect", str(p), "-o", str(d / "c.ecsv"), "--regions", str(d / "c.reg")],
            inputs=[p],
            outputs=[d / "c.ecsv", d / "c.reg"],
        )
    if cmd == "restore":
        return Case(
            "fits_structure",
            seed,
            note,
            ["restore", str(p), "-o", str(d / "o.fits"), "--method", "bicubic", "--quiet"],
            inputs=[p],
            outputs=[d / "o.fits"],
        )

    def api():
        from napari_astrosr.core.fits_io import read_fits, write_fits

        img = read_fits(p)
        write_fits(d / "o.fits", img.data, header=img.header, wcs=img.wcs, protect=[p])

    return Case("fits_structure", seed, note, api=api, inputs=[p], outputs=[d / "o.fits"])


_BAD_CARDS = [
    lambda r: _raw_card(b"CTRL", b"'a\x01b\x07c'"),
    lambda r: _raw_card(b"NONASC", "'caf\u00e9 \u00fc'".encode("latin-1")),
    lambda r: _raw_card("K\u00c9Y".encode("latin-1"), b"1"),
    lambda r: b"CONTINUE  'orphan continuation&'".ljust(80),
    lambda r: _raw_card(b"BIGVAL", b"1E999"),
    lambda r: _raw_card(b"NEGBIG", b"-1E999"),
    lambda r: _raw_card(b"NANV", b"NAN"),
    lambda r: _raw_card(b"INFV", b"INF"),
    lambda r: _raw_card(b"A_2_0", b"NAN"),
    lambda r: _raw_card(b"HUGEINT", b"9" * 70),
    lambda r: _raw_card(b"NOQUOTE", b"'unterminated"),
    lambda r: b"HISTORY \x00\x01\x02 binary \xff history".ljust(80),
    lambda r: b"COMMENT caf\xe9".ljust(80),
    lambda r: _raw_card(b"BUNIT", b"'\x1b[31mred'"),
    lambda r: _raw_card(b"EXTNAME", b"'" + bytes(r.integers(32, 127, 60).astype(np.uint8)) + b"'"),
    lambda r: bytes(r.integers(0, 256, 80).astype(np.uint8)),
    lambda r: _raw_card(b"DUP", b"1") + _raw_card(b"DUP", b"'two'"),
    lambda r: _raw_card(b"BSCALE", b"0"),
    lambda r: _raw_card(b"BZERO", b"1E300"),
]


def fam_header(rng, d: Path, seed: int) -> Case:
    arr = star_image(rng)
    picks = rng.choice(len(_BAD_CARDS), size=int(rng.integers(1, 4)), replace=False)
    extra = [_BAD_CARDS[i](rng) for i in picks]
    if rng.random() < 0.5:
        extra = wcs_cards() + extra
    p = _write(d, "in.fits", fits_bytes(arr, extra))
    note = "cards " + ",".join(str(i) for i in picks)
    cmd = seed % 4
    if cmd == 0:
        return Case(
            "header",
            seed,
            note,
            ["restore", str(p), "-o", str(d / "o.fits"), "--method", "bicubic", "--quiet"],
            inputs=[p],
            outputs=[d / "o.fits"],
        )
    if cmd == 1:
        return Case(
            "header",
            seed,
            note,
            ["degrade", str(p), "-o", str(d / "o.fits"), "--scale", "2"],
            inputs=[p],
            outputs=[d / "o.fits"],
        )
    if cmd == 2:
        return Case(
            "header", seed, note, ["detect", str(p), "-o", str(d / "c.fits")], inputs=[p], outputs=[d / "c.fits"]
        )
    return Case("header", seed, note, ["info", str(p)], inputs=[p])


def fam_values(rng, d: Path, seed: int) -> Case:
    arr = star_image(rng).astype(np.float64)
    kind = ["nan", "inf", "huge", "neg_huge", "zeros", "const", "denormal", "mixed", "allnan", "tiny_shape"][seed % 10]
    if kind == "nan":
        arr[rng.random(arr.shape) < rng.uniform(0.1, 0.99)] = np.nan
    elif kind == "inf":
        arr[rng.random(arr.shape) < 0.2] = rng.choice([np.inf, -np.inf])
    elif kind == "huge":
        arr = arr * 1e36 + rng.uniform(1e38, 3.4e38)
    elif kind == "neg_huge":
        arr[rng.random(arr.shape) < 0.5] = -3.3e38
    elif kind == "zeros":
        arr[:] = 0
    elif kind == "const":
        arr[:] = rng.uniform(-1e5, 1e5)
    elif kind == "denormal":
        arr *= 1e-44
    elif kind == "mixed":
        arr[rng.random(arr.shape) < 0.1] = np.nan
        arr[rng.random(arr.shape) < 0.1] = 3e38
    elif kind == "allnan":
        arr[:] = np.nan
    else:
        arr = arr[: int(rng.integers(1, 4)), : int(rng.integers(1, 40))]
    a32 = np.clip(np.nan_to_num(arr, nan=np.nan, posinf=np.inf, neginf=-np.inf), -3.4e38, 3.4e38).astype(">f4")
    p = _write(d, "a.fits", fits_bytes(a32))
    q = _write(
        d,
        "b.fits",
        fits_bytes(
            star_image(np.random.default_rng(seed + 1), a32.shape[0])[:, : a32.shape[1]] if a32.shape[0] >= 48 else a32
        ),
    )
    cmd = seed % 3
    if cmd == 0:
        return Case(
            "values",
            seed,
            kind,
            ["evaluate", "--reference", str(q), "--prediction", str(p), "-o", str(d / "r.ecsv")],
            inputs=[p, q],
            outputs=[d / "r.ecsv"],
        )
    if cmd == 1:
        return Case(
            "values",
            seed,
            kind,
            [
                "restore",
                str(p),
                "-o",
                str(d / "o.fits"),
                "--method",
                str(rng.choice(["bicubic", "lanczos", "backprojection"])),
                "--psf",
                "gaussian:1.0",
                "--quiet",
            ],
            inputs=[p],
            outputs=[d / "o.fits"],
        )
    return Case("values", seed, kind, ["detect", str(p), "-o", str(d / "c.csv")], inputs=[p], outputs=[d / "c.csv"])


_WCS_VARIANTS = [
    lambda r: wcs_cards(cd=("0", "0", "0", "0")),
    lambda r: wcs_cards(cd=("1E-4", "1E-4", "1E-4", "1E-4")),
    lambda r: wcs_cards(cd=("1E300", "0", "0", "1E300")),
    lambda r: wcs_cards(cd=(f"{r.uniform(-1, 1):.3E}", "0", "0", "1E-30")),
    lambda r: wcs_cards(crval=("1E999", "20")),
    lambda r: wcs_cards(crval=("NAN", "NAN")),
    lambda r: wcs_cards(crval=("10", str(r.choice([91, 100, -95, 1e10])))),
    lambda r: wcs_cards(crpix=("1E15", "1E15")),
    lambda r: wcs_cards(crpix=("-1E12", "3")),
    lambda r: wcs_cards(
        ct=("RA---TAN-SIP", "DEC--TAN-SIP"),
        extra=[card("A_ORDER", 3), card("B_ORDER", 3), card("A_2_0", "RAW:1E30"), card("B_0_2", "RAW:-1E30")],
    ),
    lambda r: wcs_cards(ct=("RA---TAN-SIP", "DEC--TAN-SIP"), extra=[card("A_ORDER", int(r.integers(21, 10**6)))]),
    lambda r: wcs_cards(ct=("RA---TAN-SIP", "DEC--TAN-SIP"), extra=[card("A_ORDER", 2), card("A_1_1", "RAW:NAN")]),
    lambda r: wcs_cards(ct=("RA---TPV", "DEC--TPV"), extra=[card("PV1_1", "RAW:1E300"), card("PV2_39", "RAW:1E300")]),
    lambda r: wcs_cards(ct=("RA---TPV", "DEC--TPV"), extra=[card("PV1_999", "RAW:1")]),
    lambda r: wcs_cards(extra=[card("RADESYS", str(r.choice(["BOGUS", "", "ICRS ", "\x01"])))]),
    lambda r: [card("WCSAXES", int(r.choice([100000, 10, -3, 3])))] + wcs_cards(),
    lambda r: wcs_cards(ct=("RA---XYZ", "DEC--XYZ")),
    lambda r: wcs_cards(ct=("RA---TAN", "RA---TAN")),
    lambda r: wcs_cards(extra=[card("LONPOLE", "RAW:1E308"), card("LATPOLE", "RAW:NAN")]),
    lambda r: wcs_cards(extra=[card("EQUINOX", "RAW:-1E30"), card("MJD-OBS", "RAW:1E300")]),
    lambda r: wcs_cards(),  # a good one: must keep working
]


def fam_wcs(rng, d: Path, seed: int) -> Case:
    i = seed % len(_WCS_VARIANTS)
    p = _write(d, "in.fits", fits_bytes(star_image(rng), _WCS_VARIANTS[i](rng)))
    cmd = (seed // len(_WCS_VARIANTS)) % 3
    if cmd == 0:
        return Case(
            "wcs",
            seed,
            f"variant {i}",
            ["detect", str(p), "-o", str(d / "c.ecsv"), "--regions", str(d / "c.reg"), "--sky-regions"],
            inputs=[p],
            outputs=[d / "c.ecsv", d / "c.reg"],
        )
    if cmd == 1:
        return Case(
            "wcs",
            seed,
            f"variant {i}",
            ["restore", str(p), "-o", str(d / "o.fits"), "--method", "bicubic", "--quiet"],
            inputs=[p],
            outputs=[d / "o.fits"],
        )
    return Case("wcs", seed, f"variant {i}", ["info", str(p)], inputs=[p])


def fam_paths(rng, d: Path, seed: int) -> Case:
    p = _write(d, "in.fits", fits_bytes(star_image(rng), wcs_cards()))
    q = _write(d, "ref.fits", fits_bytes(star_image(rng), wcs_cards()))
    kind = seed % 12
    same = [str(p), f"{d}/./in.fits", f"{d}/../{d.name}/in.fits"]
    if kind == 0:
        return Case(
            "paths",
            seed,
            "detect -o input --overwrite",
            ["detect", str(p), "-o", str(rng.choice(same)), "--overwrite"],
            inputs=[p],
        )
    if kind == 1:
        return Case(
            "paths",
            seed,
            "detect --regions input",
            ["detect", str(p), "-o", str(d / "c.ecsv"), "--regions", str(rng.choice(same)), "--overwrite"],
            inputs=[p],
            outputs=[d / "c.ecsv"],
        )
    if kind == 2:
        link = d / "link.fits"
        if rng.random() < 0.5:
            os.symlink(p, link)
        else:
            os.link(p, link)
        cmd = str(rng.choice(["restore", "degrade"]))
        argv = [cmd, str(p), "-o", str(link), "--overwrite"] + (
            ["--method", "bicubic", "--quiet"] if cmd == "restore" else []
        )
        return Case("paths", seed, f"{cmd} -o link to input", argv, inputs=[p])
    if kind == 3:
        return Case(
            "paths",
            seed,
            "evaluate -o reference",
            ["evaluate", "--reference", str(q), "--prediction", str(p), "-o", str(q), "--overwrite"],
            inputs=[p, q],
        )
    if kind == 4:
        n = int(rng.integers(250, 400))
        out = d / ("x" * n + ".fits")
        return Case(
            "paths",
            seed,
            f"{n}-byte output name",
            ["restore", str(p), "-o", str(out), "--method", "bicubic", "--quiet"],
            inputs=[p],
        )
    if kind == 5:
        name = (
            "".join(
                chr(int(c))
                for c in rng.choice([0x01, 0x1B, 0x7F, 0xE9, 0x4E2D, 0x1F600, 0x0A, 0x20], size=int(rng.integers(1, 6)))
            )
            + ".fits"
        )
        try:
            src = d / name
            shutil.copy(p, src)
        except OSError:
            src = p
        return Case(
            "paths",
            seed,
            "odd input name",
            ["restore", str(src), "-o", str(d / "o.fits"), "--method", "bicubic", "--quiet"],
            inputs=[src],
            outputs=[d / "o.fits"],
        )
    if kind == 6:
        return Case(
            "paths",
            seed,
            "output folder missing",
            ["restore", str(p), "-o", str(d / "no" / "o.fits"), "--method", "bicubic", "--quiet"],
            inputs=[p],
        )
    if kind == 7:
        (d / "adir").mkdir()
        return Case(
            "paths", seed, "output is a folder", ["degrade", str(p), "-o", str(d / "adir"), "--scale", "2"], inputs=[p]
        )
    if kind == 8:
        return Case(
            "paths",
            seed,
            "two outputs one name",
            ["detect", str(p), "-o", str(d / "c.ecsv"), "--regions", str(d / "c.ecsv")],
            inputs=[p],
        )
    if kind == 9:
        return Case(
            "paths",
            seed,
            "input missing / a folder",
            ["info", str(rng.choice([str(d / "nope.fits"), str(d)]))],
            inputs=[p],
        )
    if kind == 10:
        out = d / "o.fits"
        out.write_bytes(b"precious")
        return Case(
            "paths",
            seed,
            "existing output without --overwrite",
            ["restore", str(p), "-o", str(out), "--method", "bicubic", "--quiet"],
            inputs=[p, out],
        )
    return Case(
        "paths",
        seed,
        "simulate/coadd onto input",
        ["coadd", str(p), str(q), "-o", str(rng.choice([p, q])), "--method", "median", "--overwrite"],
        inputs=[p, q],
    )


def _tiny_ckpt(d: Path) -> Path:
    import torch

    from napari_astrosr.models.checkpoints import save_checkpoint
    from napari_astrosr.models.registry import build_model, resolve_config

    torch.manual_seed(0)
    cfg = resolve_config("fisr", preset="tiny")
    m = build_model("fisr", preset="tiny", scale=2)
    return save_checkpoint(
        d / "m.pt", m, name="fisr", preset="tiny", scale=2, config=cfg, normalization={"kind": "median_std"}, step=1
    )


_SIDE_EDITS = [
    ("dim 200000", lambda m, r: m["config"].update(dim=200000)),
    ("dim negative", lambda m, r: m["config"].update(dim=-int(r.integers(1, 100)))),
    ("num_blocks 1e7", lambda m, r: m["config"].update(num_blocks=[10_000_000] * 4)),
    ("dim 2048", lambda m, r: m["config"].update(dim=2048)),
    ("heads 0", lambda m, r: m["config"].update(heads=[0, 0, 0, 0])),
    ("unknown key", lambda m, r: m["config"].update(bogus=1)),
    ("config not dict", lambda m, r: m.update(config=[1, 2])),
    ("deep nesting", lambda m, r: m["config"].update(extra=json.loads("[" * 50 + "]" * 50))),
    ("float dim", lambda m, r: m["config"].update(dim=16.5)),
    ("string dim", lambda m, r: m["config"].update(dim="16")),
    ("format_version", lambda m, r: m.update(format_version=r.choice([2, "1", None, 1.5, -1]))),
    ("scale", lambda m, r: m.update(scale=int(r.choice([0, 3, 99, -2])))),
    ("architecture", lambda m, r: m.update(architecture=str(r.choice(["nope", "", "fisr\x00"])))),
    ("normalization", lambda m, r: m.update(normalization={"kind": "zzz"})),
    ("list too long", lambda m, r: m["config"].update(heads=list(range(1000)))),
]


def fam_checkpoints(rng, d: Path, seed: int) -> Case:
    base = Path(os.environ["ASTROSR_FUZZ_CKPT"])
    pt, side = d / "m.pt", d / "m.json"
    shutil.copy(base, pt)
    shutil.copy(base.with_suffix(".json"), side)
    img = _write(d, "in.fits", fits_bytes(star_image(rng)))
    kind = seed % 20
    meta = json.loads(side.read_text())
    if kind < len(_SIDE_EDITS):
        note, edit = _SIDE_EDITS[kind]
        edit(meta, rng)
        side.write_text(json.dumps(meta))
    elif kind == 15:
        note = "5000-digit integer"
        side.write_text(side.read_text().replace('"dim": 8', '"dim": ' + "9" * 5000))
    elif kind == 16:
        note = "100000-deep sidecar"
        side.write_text("[" * 100000 + "]" * 100000)
    elif kind == 17:
        note = "truncated .pt"
        raw = pt.read_bytes()
        pt.write_bytes(raw[: int(rng.integers(0, len(raw)))])
    elif kind == 18:
        note = "garbage .pt"
        pt.write_bytes(bytes(rng.integers(0, 256, int(rng.integers(0, 5000))).astype(np.uint8)))
    else:
        note = "good checkpoint"
    if seed % 2:

        def api():
            from napari_astrosr.models.checkpoints import load_checkpoint

            load_checkpoint(pt)

        return Case("checkpoints", seed, note, api=api, inputs=[pt, side, img])
    return Case(
        "checkpoints",
        seed,
        note,
        [
            "restore",
            str(img),
            "-o",
            str(d / "o.fits"),
            "--method",
            "fisr",
            "--model",
            str(pt),
            "--device",
            "cpu",
            "--quiet",
        ],
        inputs=[pt, side, img],
        outputs=[d / "o.fits"],
    )


def _base_config() -> dict:
    return {
        "name": "fz",
        "model": {
            "name": "pix2wgan",
            "preset": "tiny",
            "scale": 1,
            "zero_init_last": False,
            "overrides": {"dropout": 0.0, "norm": "none", "residual": False},
        },
        "data": {
            "scale": 2,
            "patch": 16,
            "realizations": 1,
            "max_patches": 2,
            "psf": {"kind": "spec", "spec": "gaussian:1.0"},
            "sources": [{"kind": "simulate", "simulate": "starfield", "count": 1, "size": 64}],
        },
        "optim": {"lr": 0.003, "warmup_steps": 0, "schedule": "constant"},
        "run": {
            "steps": 1,
            "batch_size": 2,
            "val_every": 1000,
            "checkpoint_every": 1000,
            "log_every": 1,
            "threads": 1,
            "val_images": 1,
            "seed": 3,
        },
    }


_CFG_EDITS = [
    ("ngf 200000", lambda c, r: c["model"]["overrides"].update(ngf=200000)),
    ("ngf 3000", lambda c, r: c["model"]["overrides"].update(ngf=3000)),
    ("ngf negative", lambda c, r: c["model"]["overrides"].update(ngf=-4)),
    ("huge steps", lambda c, r: c["run"].update(steps=10**30)),
    ("bad data file", lambda c, r: c["data"].update(sources=[{"kind": "degrade", "files": ["nope.fits"]}])),
    ("unknown key", lambda c, r: c.update(colour="red")),
    ("wrong type", lambda c, r: c["run"].update(batch_size="many")),
    ("list override", lambda c, r: c["model"]["overrides"].update(ngf=list(range(100)))),
    ("unknown model", lambda c, r: c["model"].update(name="nope")),
    ("good", lambda c, r: None),
]


def fam_configs(rng, d: Path, seed: int) -> Case:
    import yaml

    cfg = _base_config()
    kind = seed % (len(_CFG_EDITS) + 4)
    p = d / "c.yaml"
    if kind < len(_CFG_EDITS):
        note, edit = _CFG_EDITS[kind]
        edit(cfg, rng)
        p.write_text(yaml.safe_dump(cfg))
    elif kind == len(_CFG_EDITS):
        note = "deep nesting"
        p.write_text("name: " + "[" * int(rng.integers(100, 100000)) + "]" * 10)
    elif kind == len(_CFG_EDITS) + 1:
        note = "5000-digit integer"
        p.write_text(yaml.safe_dump(cfg).replace("steps: 1", "steps: " + "9" * 5000))
    elif kind == len(_CFG_EDITS) + 2:
        note = "python tag"
        p.write_text("!!python/object/apply:os.system ['echo pwned']\n")
    else:
        note = "binary garbage"
        p.write_bytes(bytes(rng.integers(0, 256, 2000).astype(np.uint8)))
    out = d / "run"
    return Case(
        "configs", seed, note, ["train", str(p), "--out", str(out), "--quiet"], inputs=[p], outputs=[out], timeout=60.0
    )


def fam_regions(rng, d: Path, seed: int) -> Case:
    p = _write(d, "a.fits", fits_bytes(star_image(rng), wcs_cards() if rng.random() < 0.5 else []))
    q = _write(d, "b.fits", fits_bytes(star_image(rng)))
    variants = [
        "# Region file format: DS9\nimage\ncircle(24,24,5)\n",
        "# Region file format: DS9\nimage\ncircle(24,24,-5)\n",
        "# Region file format: DS9\nimage\ncircle(1e30,1e30,1e30)\n",
        "# Region file format: DS9\nimage\ncircle(nan,nan,3)\n",
        '# Region file format: DS9\nfk5\ncircle(10.0,20.0,3")\n',
        "# Region file format: DS9\nimage\npolygon(1,1,2,2)\n",
        "# Region file format: DS9\nimage\n" + "circle(24,24,3)\n" * 2000,
        "# Region file format: DS9\nimage\nellipse(24,24,3,0,45)\n",
        "not a region file at all\n",
        "",
        "# Region file format: DS9\nimage\nbox(500,500,4,4,0)\n",
        "# Region file format: DS9\nimage\ncircle(24,24,5) # text={\x01\x02}\n",
    ]
    txt = variants[seed % len(variants)]
    if seed % len(variants) == 8:
        r = d / "r.reg"
        r.write_bytes(bytes(rng.integers(0, 256, 500).astype(np.uint8)))
    else:
        r = d / "r.reg"
        r.write_text(txt)
    return Case(
        "regions",
        seed,
        f"variant {seed % len(variants)}",
        ["evaluate", "--reference", str(q), "--prediction", str(p), "--rois", str(r)],
        inputs=[p, q, r],
    )


# ---------------------------------------------------------------------------------------------- subprocess


def _env() -> dict:
    src = str(REPO / "src")
    return dict(os.environ, PYTHONPATH=src + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")


def _astrosr(args, **kw):
    return subprocess.Popen(
        [sys.executable, "-m", "napari_astrosr", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        **kw,
    )


def fam_signals(rng, d: Path, seed: int) -> Case:
    sig = signal.SIGINT if seed % 2 == 0 else signal.SIGTERM
    delay = float(rng.uniform(0.2, 3.0))  # after the job has started
    kind = (seed // 2) % 2
    if kind == 0:
        n = int(rng.integers(700, 1100))
        img = _write(d, "in.fits", fits_bytes(star_image(rng, n)))
        args = [
            "restore",
            img,
            "-o",
            d / "o.fits",
            "--method",
            "richardson-lucy",
            "--psf",
            "gaussian:1.5",
            "--iterations",
            "5000",
        ]
        inputs, outputs, note = [img], [d / "o.fits"], f"RL {n}x{n}"
    else:
        import yaml

        cfg = _base_config()
        cfg["run"].update(steps=100000, checkpoint_every=int(rng.choice([5, 1000])))
        p = d / "c.yaml"
        p.write_text(yaml.safe_dump(cfg))
        args = ["train", p, "--out", d / "run"]
        inputs, outputs, note = [p], [], "train"

    def script():
        import threading

        proc = _astrosr(args)
        chunks: list = []
        reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: proc.stderr.read(1), "")), daemon=True)
        reader.start()
        t_start = time.time()
        # the job has started once its progress bar shows (the interpreter and torch take seconds to load)
        while time.time() - t_start < 60 and proc.poll() is None and args[0] not in "".join(chunks):
            time.sleep(0.05)
        time.sleep(delay)
        t = time.time()
        proc.send_signal(sig)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            reader.join(5)
            return [None], 30.0, "".join(chunks)
        took = time.time() - t
        reader.join(5)
        err = "".join(chunks).replace("\r", "\n")
        extra = ""
        if kind == 1:  # a complete checkpoint (model.pt + sidecar + resume.pt) or nothing at all
            run = d / "run"
            names = sorted(x.name for x in run.iterdir()) if run.exists() else []
            has = {"model.pt", "model.json", "resume.pt"} & set(names)
            if has and has != {"model.pt", "model.json", "resume.pt"} or "train.lock" in names:
                extra = f"PARTIAL: {names}"
            elif not has and names:
                extra = f"PARTIAL: {names}"
        return [proc.returncode], took, err + extra

    return Case(
        "signals",
        seed,
        f"{note} {sig.name} after {delay:.1f} s",
        script=script,
        inputs=inputs,
        outputs=outputs,
        timeout=60.0,
    )


def fam_concurrency(rng, d: Path, seed: int) -> Case:
    img = _write(d, "in.fits", fits_bytes(star_image(rng, int(rng.integers(48, 400)))))
    out = d / "o.fits"
    cmd = str(rng.choice(["restore", "degrade"]))
    extra = ["--method", "bicubic", "--quiet"] if cmd == "restore" else ["--scale", "2"]

    def script():
        procs = [_astrosr([cmd, img, "-o", out, *extra]) for _ in range(2)]
        codes, errs = [], ""
        for p in procs:
            _, err = p.communicate(timeout=60)
            codes.append(p.returncode)
            errs += err
        if sorted(codes) != [0, 2]:
            errs += f"\nRACE: exit codes {codes} (exactly one writer must win)"
        return codes, 0.0, errs

    return Case("concurrency", seed, f"2 x {cmd} -o same", script=script, inputs=[img], outputs=[out], timeout=120.0)


def fam_batch(rng, d: Path, seed: int) -> Case:
    src = d / "in"
    src.mkdir()
    good, bad = [], []
    for i in range(int(rng.integers(2, 5))):
        good.append(_write(src, f"g{i}.fits", fits_bytes(star_image(rng))))
    for i in range(int(rng.integers(1, 4))):
        c = FITS_KINDS[str(rng.choice(["garbage", "wrong_bitpix", "absurd_naxis"]))](rng)
        bad.append(_write(src, f"b{i}.fits", c.data))
    outdir = d / "out"
    outdir.mkdir()
    # a previous run killed mid-write: one finished output is not redone, a stale temporary goes
    (outdir / ".astrosr-999999999-dead.tmp").write_bytes(b"half")

    def script():
        from napari_astrosr.batch import output_path

        p = _astrosr(["batch", f"{src}/*.fits", "-o", outdir, "--method", "bicubic", "--workers", "1"])
        out, err = p.communicate(timeout=120)
        msgs = []
        for g in good:
            if not output_path(g, outdir, method="bicubic", scale=2).exists():
                msgs.append(f"MISSING output of {g.name}")
        for b in bad:
            if b.name not in out + err:
                msgs.append(f"UNREPORTED {b.name}")
        if (outdir / ".astrosr-999999999-dead.tmp").exists():
            msgs.append("PARTIAL: stale temporary kept")
        # rerun: finished files are skipped, not redone
        p2 = _astrosr(["batch", f"{src}/*.fits", "-o", outdir, "--method", "bicubic", "--workers", "1"])
        out2, err2 = p2.communicate(timeout=120)
        if f"{len(good)} skipped" not in out2 + err2:
            msgs.append(f"RERUN did not skip the {len(good)} finished files")
        if p.returncode != 2 or p2.returncode != 2:  # bad files: exit 2 with one error line, both runs
            msgs.append(f"exit codes {p.returncode}, {p2.returncode}: want 2 (bad files)")
        return [p.returncode, p2.returncode], 0.0, "\n".join(err.strip().splitlines()[-1:] + msgs)

    return Case(
        "batch", seed, f"{len(good)} good + {len(bad)} bad", script=script, inputs=good + bad, outputs=[], timeout=300.0
    )


FAMILIES: dict[str, Callable] = {
    "fits_structure": fam_fits_structure,
    "header": fam_header,
    "values": fam_values,
    "wcs": fam_wcs,
    "paths": fam_paths,
    "checkpoints": fam_checkpoints,
    "configs": fam_configs,
    "regions": fam_regions,
    "signals": fam_signals,
    "concurrency": fam_concurrency,
    "batch": fam_batch,
}


# ---------------------------------------------------------------------------------------------- judge


def _sha(p: Path) -> Optional[str]:
    try:
        return hashlib.sha256(Path(p).read_bytes()).hexdigest() if Path(p).is_file() else None
    except OSError:
        return None


def _listing(d: Path) -> set:
    return {str(p.relative_to(d)) for p in d.rglob("*")}


def run_case(family: str, seed: int, work: Path) -> dict:
    """Build and run one case in ``work`` (a fresh folder); returns its verdict row."""
    d = work / f"{family}-{seed}"
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    rng = np.random.default_rng([seed, sum(map(ord, family))])
    case = FAMILIES[family](rng, d, seed)
    hashes = {str(p): _sha(p) for p in case.inputs}
    before = _listing(d)
    err, codes, took = "", [], 0.0
    t0 = time.perf_counter()
    if case.script is not None:
        codes, took, err = case.script()
    elif case.api is not None:
        from napari_astrosr.exceptions import AstroSRError

        buf = io.StringIO()
        try:
            with contextlib.redirect_stderr(buf), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                case.api()
            codes = [0]
        except AstroSRError as exc:
            codes, err = [2], f"api: error: {exc}"
        except Exception as exc:  # noqa: BLE001 - that is what we count
            import traceback

            codes, err = [1], "Traceback\n" + "".join(traceback.format_exception_only(type(exc), exc))
    else:
        from napari_astrosr.cli import main

        buf_out, buf_err = io.StringIO(), io.StringIO()
        try:
            with contextlib.redirect_stdout(buf_out), contextlib.redirect_stderr(buf_err), warnings.catch_warnings():
                warnings.resetwarnings()
                code = main([str(a) for a in case.argv])
        except SystemExit as exc:  # argparse
            code = exc.code if isinstance(exc.code, int) else 2
        except BaseException as exc:  # noqa: BLE001
            import traceback

            code = 1
            buf_err.write("Traceback (escaped main)\n" + "".join(traceback.format_exception_only(type(exc), exc)))
        codes, err = [code], buf_err.getvalue()
    seconds = time.perf_counter() - t0
    after = _listing(d)
    new = sorted(after - before)
    temps = [n for n in new if Path(n).name.startswith(".astrosr-")]
    failed = any(c not in (0,) for c in codes)
    wanted = {str(Path(o).relative_to(d)) for o in case.outputs}
    partial = (
        bool(temps)
        or (
            failed
            and case.script is None
            and any(n in wanted or any(n.startswith(w + "/") for w in wanted) for n in new)
        )
        or "PARTIAL" in err
    )
    modified = sorted(k for k, h in hashes.items() if _sha(Path(k)) != h)
    crash = (
        any(c is None or c not in OK_CODES | {-2, -15} for c in codes)
        or "Traceback" in err
        or any(w in err for w in ("RACE", "MISSING", "UNREPORTED", "RERUN", "want 2"))
    )
    hang = any(c is None for c in codes) or (family == "signals" and took > 2.5)
    unclear = False
    if 2 in codes and case.script is None:
        lines = [ln for ln in err.strip().splitlines() if "error:" in ln]
        names = {Path(str(a)).name for a in case.argv if isinstance(a, (str, Path)) and len(str(a)) > 0} | {
            Path(str(p)).name for p in case.inputs
        }
        names = {n for n in names if n and not n.startswith("-") or n.startswith("--")}
        unclear = (
            len(lines) != 1
            or not any(n in lines[0] for n in names if len(n) > 1)
            and not any(f in lines[0] for f in ("--", "-o ", "argument"))
        )
    return dict(
        family=family,
        seed=seed,
        note=case.note,
        codes=codes,
        seconds=round(seconds, 2),
        crash=crash,
        hang=hang,
        partial=partial,
        modified=bool(modified),
        unclear=unclear,
        err=" | ".join(err.strip().splitlines()[-3:])[:400],
        timeout=case.timeout,
    )


def prepare(work: Path) -> None:
    """Shared fixtures (a tiny FISR checkpoint) written once into ``work``."""
    work.mkdir(parents=True, exist_ok=True)
    ck = work / "_ckpt"
    if not (ck / "m.pt").exists():
        ck.mkdir(exist_ok=True)
        _tiny_ckpt(ck)
    os.environ["ASTROSR_FUZZ_CKPT"] = str(ck / "m.pt")

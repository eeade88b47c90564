"""Tune the default projection's exact / noise-aware rule on the training configs' validation fields.

Question (issue 20): ``resolve_noise`` picks the exact projection when the measured LR noise is below
``CLEAN_NOISE_REL`` (0.5%) of the robust range. At x4 the exact projection amplifies noise only 2-4x (x2: 15-60x),
so a rule on the measured noise alone may give away accuracy the data support. Which rule minimises the per-source
flux error of the default restore?

Fields: the *validation* data of the training configs (configs/fisr_x4_stars.yaml and the others: ``split: halves``
sources), i.e. the right halves of A2744 cd_galaxy and group (HST WFC3/IR F105W) and of DECam OBS04a and OBS18a,
cut into 128-px crops. None of them is a held-out field of ``benchmarks/quality.py``, and none trained a network.
Plus simulated star and Sersic-galaxy fields with a noiseless truth (seeds no config uses), where only the added
noise is noise. Degradation as in quality.py (STAR: Gaussian sigma 1 px and Gaussian+Airy PSFs, block sum) with
added white noise of 0 to 10% of the LR robust range (the real fields carry their own noise on top).

Every network and backprojection is run with the restore defaults except the projection's mode, forced both ways:
``flux_noise="exact"`` and ``flux_noise=<the measured sigma>`` (what the default's noise-aware branch uses). Each
case records the measured noise over the robust range (``rel``) and the exact projection's largest noise gain
(``gain``, ``restore_options.projection_gain``), then candidate rules are scored on the pooled per-source errors.
The shipped rule (``restore_options.EXACT_MAX_PASSED_NOISE_X4``) was chosen from this script's output; the held-out
fields of quality.py only confirmed it afterwards (docs/results_defaults.md, "x4: exact on noisy data too").

Run:  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/projection_rule.py [--scales 2,4] [--cache /tmp/rule.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality as q  # noqa: E402  (same degradation, metrics and data folder)

# the training configs' ``split: halves`` sources: their right halves validate (training/data.py::_halves)
VAL_FIELDS = [
    ("A2744 cd_galaxy F105W", "hst_wfc3ir_f105w_a2744/abell_2744_cd_galaxy_f105w.fits.gz"),
    ("A2744 group F105W", "hst_wfc3ir_f105w_a2744/abell_2744_group_of_galaxies_f105w.fits.gz"),
    ("DECam OBS04a", "stack_decam_i_sfft/DEC-OBS04a.mini.fits"),
    ("DECam OBS18a", "stack_decam_i_sfft/DEC-OBS18a.mini.fits"),
]
# simulated fields with a noiseless truth, as the configs' ``simulate`` sources draw them (star fields, Sersic
# galaxies; HR PSF sigma 0.6 px, zero sky) from seeds no config uses: here only the added noise is noise
SIM_FIELDS = [
    ("simulated stars", "starfield", 900_001),
    ("simulated stars", "starfield", 900_002),
    ("simulated galaxies", "galaxies", 900_003),
    ("simulated galaxies", "galaxies", 900_004),
]
NOISE_LEVELS = (0.0, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1)
SIDE = 128


def right_half_crops(img: np.ndarray, side: int = SIDE) -> list[np.ndarray]:
    """The right half of ``img`` (columns from half the width, rounded down to 8 px) cut into ``side``-px crops
    (edges divisible by 8; a half smaller than ``side`` gives one crop).
    """
    x0 = img.shape[1] // 2 // 8 * 8
    half = np.nan_to_num(np.asarray(img, np.float32))[:, x0:]
    out = []
    for y in range(0, max(1, half.shape[0] - side + 1), side):
        for x in range(0, max(1, half.shape[1] - side + 1), side):
            c = half[y : y + side, x : x + side]
            out.append(np.ascontiguousarray(c[: c.shape[0] // 8 * 8, : c.shape[1] // 8 * 8]))
    return out


def simulated(kind: str, seed: int, side: int = SIDE) -> np.ndarray:
    from napari_astrosr.core import simulate as S
    from napari_astrosr.core.psf import gaussian_psf

    fn = S.star_field if kind == "starfield" else S.sersic_galaxies
    return np.asarray(fn((side, side), psf=gaussian_psf(0.6), seed=seed, noise="none", sky=0.0).image, np.float32)


def fields(real: bool = True, side: int = SIDE):
    """``(label, [HR crops])`` of the validation halves (``real``) and the simulated fields."""
    from napari_astrosr.core.fits_io import read_fits

    for label, rel_path in VAL_FIELDS if real else []:
        p = q.DATA / rel_path
        if not p.exists():
            print(f"skip {label}: {p} missing", file=sys.stderr)
            continue
        yield label, right_half_crops(read_fits(p).data, side)
    for label, kind, seed in SIM_FIELDS:
        yield label, [simulated(kind, seed, side)]


def run_cases(
    scales, *, levels=NOISE_LEVELS, real: bool = True, psfs=None, side: int = SIDE, models=None
) -> list[dict]:
    from napari_astrosr.core import metrics
    from napari_astrosr.restoration import restore
    from napari_astrosr.restore_options import projection_gain, resolve_noise

    cases = []
    for scale in scales:
        methods = ["backprojection", "fisr", "restormer"] if scale == 2 else ["backprojection", "fisr"]
        for fi, (label, crops) in enumerate(fields(real, side)):
            for ci, hr in enumerate(crops):
                for psf in psfs or [p for _, p in q.PSFS]:
                    for ni, level in enumerate(levels):
                        seed = 5000 + 1000 * fi + 100 * ci + 10 * scale + ni
                        lr, added = q._degrade(hr, scale, psf, level > 0, seed, noise_rel=level or q.NOISE_REL)
                        gain = projection_gain(lr.shape, scale=scale, psf=psf)
                        choice = resolve_noise(lr, None, gain=None)  # the measured noise, whatever the rule
                        sub = lr[np.isfinite(lr)]
                        rel = float(choice.measured) / float(np.percentile(sub, 99.5) - np.median(sub))
                        case = {
                            "scale": scale,
                            "field": label,
                            "sim": label.startswith("simulated"),
                            "crop": ci,
                            "psf": psf,
                            "added": level,
                            "rel": rel,
                            "gain": gain,
                            "default": resolve_noise(lr, None, gain=gain).mode,
                            "errs": {},
                        }
                        dr = float(hr.max() - hr.min())
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore")
                            outs = {"bicubic": restore(lr, method="bicubic", scale=scale).data}
                            for m in methods:
                                for mode, fn in (("exact", "exact"), ("noise-aware", float(choice.measured))):
                                    kw = {"model": models[(m, scale)]} if (m, scale) in (models or {}) else {}
                                    outs[f"{m}|{mode}"] = restore(
                                        lr, method=m, scale=scale, psf=psf, flux_noise=fn, **kw
                                    ).data
                        for k, img in outs.items():
                            case["errs"][k] = {
                                "rels": q.source_rel_errors(hr, img).tolist(),
                                "psnr": float(metrics.psnr(hr, img, data_range=dr)),
                            }
                        cases.append(case)
                print(f"  x{scale} {label}: {ci + 1} crops done", file=sys.stderr, flush=True)
    return cases


def choose(case: dict, method: str, rule) -> str:
    if method not in ("backprojection", "fisr", "restormer"):
        return method  # no projection: no choice
    return f"{method}|{'exact' if rule(case) else 'noise-aware'}"


def score(cases: list[dict], method: str, rule) -> dict:
    """Pooled per-source median, median of case medians and mean PSNR of ``method`` under ``rule``."""
    rels, meds, psnr = [], [], []
    for c in cases:
        e = c["errs"][choose(c, method, rule)]
        rels += e["rels"]
        if e["rels"]:
            meds.append(float(np.median(e["rels"])))
        psnr.append(e["psnr"])
    return {
        "pooled": float(np.median(rels)) if rels else np.nan,
        "n": len(rels),
        "med": float(np.median(meds)) if meds else np.nan,
        "psnr": float(np.mean(psnr)),
    }


def rules() -> dict:
    from napari_astrosr.restore_options import EXACT_MAX_PASSED_NOISE_X4 as cap

    out = {
        "noise level alone (rel < 0.5%, gain <= 100; before)": lambda c: c["default"] == "exact",
        f"shipped: before, or x4 and rel x gain < {cap:g}": lambda c: (
            c["default"] == "exact" or (c["scale"] >= 4 and c["rel"] * c["gain"] < cap)
        ),
        "always exact": lambda c: True,
        "always noise-aware": lambda c: False,
    }
    for t in (0.05, 0.1, 0.25, 0.5):  # one threshold on the passed-on noise at every scale
        out[f"rel x gain < {t:g}, any scale"] = (lambda t: lambda c: c["rel"] * c["gain"] < t)(t)
    return out


def _pool(cs, key):
    rels = [r for c in cs for r in c["errs"][key]["rels"]]
    return (float(np.median(rels)) if rels else np.nan), float(np.mean([c["errs"][key]["psnr"] for c in cs]))


def report(cases: list[dict]) -> str:
    """Rules scored per scale and data kind; then exact vs noise-aware per scale, gain and noise level."""
    lines = [
        "| scale | data | method | rule | pooled median rel. err (n) | median of case medians | mean PSNR dB |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    for scale in sorted({c["scale"] for c in cases}):
        for data, sel in (
            ("real, no added noise", lambda c: c["added"] == 0 and not c["sim"]),
            ("real, added noise", lambda c: c["added"] > 0 and not c["sim"]),
            ("simulated, added noise", lambda c: c["added"] > 0 and c["sim"]),
        ):
            cs = [c for c in cases if c["scale"] == scale and sel(c)]
            if not cs:
                continue
            s = score(cs, "bicubic", lambda c: True)
            lines.append(
                f"| x{scale} | {data} | bicubic | - | {s['pooled']:.4f} ({s['n']}) | {s['med']:.4f} | {s['psnr']:.2f} |"
            )
            for m in sorted({k.split("|")[0] for k in cs[0]["errs"] if "|" in k}):
                for name, rule in rules().items():
                    s = score(cs, m, rule)
                    lines.append(
                        f"| x{scale} | {data} | {m} | {name} | {s['pooled']:.4f} ({s['n']}) | "
                        f"{s['med']:.4f} | {s['psnr']:.2f} |"
                    )
    lines += [
        "",
        "Exact / noise-aware per scale, PSF noise gain and added noise (simulated fields: the truth has "
        "no noise), pooled median rel. err and mean PSNR:",
        "",
        "| scale | gain | added | rel x gain | method | exact | noise-aware | better | PSNR exact / noise-aware "
        "(bicubic) |",
        "|---|---:|---:|---:|---|---:|---:|---|---|",
    ]
    groups: dict = {}
    for c in cases:
        if c["sim"] and c["added"] > 0:
            groups.setdefault((c["scale"], round(c["gain"], 1), c["added"]), []).append(c)
    for (scale, gain, added), cs in sorted(groups.items()):
        pg = float(np.median([c["rel"] * c["gain"] for c in cs]))
        b = _pool(cs, "bicubic")
        for m in sorted({k.split("|")[0] for k in cs[0]["errs"] if "|" in k}):
            (e, pe), (n, pn) = _pool(cs, f"{m}|exact"), _pool(cs, f"{m}|noise-aware")
            lines.append(
                f"| x{scale} | {gain:.1f} | {added:.2%} | {pg:.3f} | {m} | {e:.4f} | {n:.4f} | "
                f"{'exact' if e < n else 'noise-aware'} | {pe:.2f} / {pn:.2f} ({b[1]:.2f}) |"
            )
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scales", default="2,4")
    ap.add_argument("--cache", default=None, help="JSON of the cases: written after a run, read instead of one")
    ap.add_argument("--levels", default=None, help="added noise levels, fractions of the LR robust range")
    ap.add_argument("--psfs", default=None, help="';'-separated PSF specs (default: quality.py's two)")
    ap.add_argument("--side", type=int, default=SIDE, help=f"crop side, HR px (default {SIDE})")
    ap.add_argument("--sims-only", action="store_true", help="only the simulated fields")
    ap.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NET:SCALE=CKPT",
        help="use this checkpoint instead of the bundled one (as in quality.py)",
    )
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.cache and Path(args.cache).exists():
        cases = json.loads(Path(args.cache).read_text())
    else:
        if not q.data_ready():
            return 2
        models = {}
        for spec in args.model:
            key, path = spec.split("=", 1)
            net, sc = key.split(":")
            models[(net, int(sc))] = path
        t0 = time.perf_counter()
        levels = tuple(float(v) for v in args.levels.split(",")) if args.levels else NOISE_LEVELS
        cases = run_cases(
            [int(s) for s in args.scales.split(",")],
            levels=levels,
            real=not args.sims_only,
            psfs=args.psfs.split(";") if args.psfs else None,
            side=args.side,
            models=models,
        )
        print(f"{len(cases)} cases in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        if args.cache:
            Path(args.cache).write_text(json.dumps(cases))
    q.write_report(report(cases), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

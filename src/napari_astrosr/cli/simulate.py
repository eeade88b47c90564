"""``astrosr simulate {starfield,galaxies,blank} -o OUT.fits``: synthetic images with a truth catalog."""

from __future__ import annotations

import argparse

NAME = "simulate"
HELP = "make a synthetic star field, Sersic-galaxy field or blank noise field (+ truth catalog)"
ORDER = 15


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", choices=["starfield", "galaxies", "blank"], help="what to simulate")
    p.add_argument("-o", "--output", required=True, help="output FITS image")
    p.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    p.add_argument("--seed", type=int, default=None, help="random seed")
    p.add_argument("--truth", default=None, help="write the true sources to this table (.ecsv, .fits or .csv)")
    p.add_argument("--psf", default="gaussian:1.5", help="PSF SPEC as in degrade (default gaussian:1.5)")
    p.add_argument(
        "--n", type=int, default=None, help="number of stars/galaxies (default: from --density for stars, 20 galaxies)"
    )
    p.add_argument("--density", default="medium", help="star density: sparse | medium | crowded | stars per pixel")
    p.add_argument("--sky", type=float, default=10.0, help="sky level (counts, default 10)")
    p.add_argument("--noise", default="poisson", help="none | poisson | gaussian:SIGMA (default poisson)")
    p.add_argument("--pixel-scale", type=float, default=None, help="arcsec/pixel: attach a TAN WCS")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import numpy as np

    from ..core import simulate as S
    from ..core.fits_write import write_fits
    from ..exceptions import AstroSRError

    outs = [Path(args.output)] + ([Path(args.truth)] if args.truth else [])
    for dest in outs:
        if dest.exists() and not args.overwrite:
            raise AstroSRError(f"{dest}: already exists; choose another name or pass --overwrite.")
        if not dest.parent.exists():
            raise AstroSRError(f"{dest}: folder {dest.parent} does not exist.")
    if args.size < 8 or args.size > 8192:
        raise AstroSRError(f"--size {args.size}: use 8..8192 pixels.")
    psf = None if args.psf.lower() == "none" else args.psf
    noise = args.noise
    if args.kind == "starfield":
        try:
            density = float(args.density)
        except ValueError:
            density = args.density
        sim = S.star_field(
            args.size,
            n_stars=args.n,
            density=density,
            psf=psf,
            sky=args.sky,
            noise=noise,
            seed=args.seed,
            pixel_scale=args.pixel_scale,
        )
    elif args.kind == "galaxies":
        sim = S.sersic_galaxies(
            args.size,
            n=20 if args.n is None else args.n,
            psf=psf,
            sky=args.sky,
            noise=noise,
            seed=args.seed,
            pixel_scale=args.pixel_scale,
        )
    else:
        sigma = 1.0
        if noise.startswith("gaussian:"):
            sigma = float(noise.split(":", 1)[1])
        elif noise == "none":
            sigma = 0.0
        sim = S.blank_field(args.size, sky=args.sky, noise_sigma=sigma, seed=args.seed, pixel_scale=args.pixel_scale)
    params = dict(
        kind=args.kind, size=args.size, seed=args.seed, psf=args.psf, sky=args.sky, noise=noise, n=len(sim.truth)
    )
    write_fits(
        outs[0],
        sim.image.astype(np.float32),
        wcs=sim.wcs,
        overwrite=args.overwrite,
        provenance=dict(method=f"simulate-{args.kind}", parameters=params),
    )
    msg = f"{args.kind} {args.size}x{args.size}, {len(sim.truth)} sources -> {outs[0]}"
    if args.truth:
        from ..core.catalogs import write_table

        table = sim.truth
        if sim.wcs is not None and len(table):
            ra, dec = sim.wcs.pixel_to_world_values(np.asarray(table["x"]), np.asarray(table["y"]))
            table["ra"], table["dec"] = ra, dec
        write_table(table, outs[1], overwrite=args.overwrite, meta={k: str(v) for k, v in params.items()})
        msg += f", truth -> {outs[1]}"
    print(msg)
    return 0

"""``astrosr detect IMAGE.fits -o CAT.{ecsv,fits,csv}``: sep source catalog (+ DS9 regions)."""

from __future__ import annotations

import argparse

NAME = "detect"
HELP = "detect sources (sep) and write a catalog (ECSV/FITS/CSV) and optional DS9 regions"
ORDER = 30


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", help="input FITS image (2-D)")
    p.add_argument("-o", "--output", required=True, help="catalog file: .ecsv, .fits or .csv")
    p.add_argument("--regions", default=None, help="also write the 2.5 x (a, b) ellipses as a DS9 region file")
    p.add_argument(
        "--sky-regions", action="store_true", help="DS9 regions in RA/Dec (needs a WCS) instead of image pixels"
    )
    p.add_argument("--thresh", type=float, default=1.5, help="detection threshold in background sigma (default 1.5)")
    p.add_argument(
        "--minarea",
        type=int,
        default=None,
        help="minimum connected pixels (default 5; on an image written by 'astrosr restore --scale S', 5 x S^2: "
        "the sky area of 5 input pixels)",
    )
    p.add_argument(
        "--aperture-noise",
        choices=["auto", "pixel", "empty"],
        default="auto",
        help="flux_err from independent pixels, or from apertures on empty sky (correlated noise); auto: empty on "
        "an image written by 'astrosr restore --scale S' (with Kron's minimum circle 3.5 x S pixels), else pixel",
    )
    p.add_argument("--deblend-cont", type=float, default=0.005, help="deblending contrast (default 0.005)")
    p.add_argument("--box", type=int, default=64, help="background mesh size in pixels (default 64)")
    p.add_argument("--filter-size", type=int, default=3, help="background median filter in meshes (default 3)")
    p.add_argument("--hdu", default=None, help="HDU index or name")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")


def _hdu(v):
    return None if v is None else (int(v) if str(v).isdigit() else v)


def run(args: argparse.Namespace) -> int:
    import sys
    import warnings
    from pathlib import Path

    from ..core.catalogs import FORMATS, write_regions, write_table
    from ..core.detection import MINAREA, detect_sources, options_for_scale, restored_scale
    from ..core.fits_read import read_fits
    from ..exceptions import AstroSRError, NoSourcesWarning

    out = Path(args.output)
    if out.suffix.lower() not in FORMATS:
        raise AstroSRError(f"-o {out}: unknown catalog format; use a .ecsv, .fits or .csv suffix.")
    # check every destination before doing any work: no partial outputs
    for dest in [out] + ([Path(args.regions)] if args.regions else []):
        if dest.exists() and not args.overwrite:
            raise AstroSRError(f"{dest}: already exists; choose another name or pass --overwrite.")
        if not dest.parent.exists():
            raise AstroSRError(f"{dest}: folder {dest.parent} does not exist.")
    img = read_fits(args.image, hdu=_hdu(args.hdu)) if args.hdu is not None else read_fits(args.image)
    if img.data.ndim != 2:
        raise AstroSRError(
            f"{args.image}: is a {img.data.ndim}-D array {img.data.shape}; detect takes a 2-D "
            "image (pick one with --hdu)."
        )
    scale = restored_scale(img.header)
    opts = options_for_scale(scale)
    if args.minarea is not None:
        opts["minarea"] = args.minarea
    if args.aperture_noise != "auto":
        opts["aperture_noise"] = args.aperture_noise
    minarea = opts["minarea"]
    if scale != 1:
        print(
            f"astrosr detect: {args.image} is a x{scale:g} restoration: minarea {minarea} pixels"
            + (f" (the area of {MINAREA} input pixels)" if args.minarea is None else "")
            + f", Kron's minimum circle {opts['kron_min_radius']:g} pixels, flux_err from "
            + ("empty-sky apertures (its noise is correlated)" if opts["aperture_noise"] == "empty" else "pixels"),
            flush=True,
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", NoSourcesWarning)
        try:
            table = detect_sources(
                img.data,
                thresh=args.thresh,
                deblend_cont=args.deblend_cont,
                box=args.box,
                filter_size=args.filter_size,
                wcs=img.wcs,
                **opts,
            )
        except AstroSRError as exc:  # core errors say "image: ..."; name the file
            raise AstroSRError(f"{args.image}: {exc}") from exc
    for w in caught:
        if issubclass(w.category, NoSourcesWarning):
            print(f"astrosr detect: warning: {w.message}; writing an empty catalog", flush=True)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    meta = dict(
        input=str(Path(args.image).name),
        thresh_sigma=args.thresh,
        minarea=minarea,
        kron_min_radius=opts["kron_min_radius"],
        aperture_noise=opts["aperture_noise"],
        deblend_cont=args.deblend_cont,
        background_box=args.box,
    )
    if args.regions:
        # build the regions before writing anything: a WCS that cannot place them fails here
        from ..core.catalogs import table_to_regions

        sky = args.sky_regions
        if sky and (img.wcs is None or not img.wcs.has_celestial):
            # the reader already warned why the WCS is unusable: fall back to pixel coordinates
            print(
                f"astrosr detect: warning: {args.image}: no usable celestial WCS; --regions written in image "
                "pixel coordinates instead of RA/Dec",
                file=sys.stderr,
                flush=True,
            )
            sky = False
        try:
            table_to_regions(table, wcs=img.wcs, sky=sky)
        except AstroSRError:
            raise
        except Exception as exc:
            raise AstroSRError(
                f"{args.image}: its WCS cannot place the sources on the sky "
                f"({type(exc).__name__}); drop --sky-regions for pixel regions."
            ) from exc
    created = not out.exists()
    write_table(table, out, overwrite=args.overwrite, meta=meta, flux_unit=img.unit)
    msg = f"{len(table)} sources -> {out}"
    if args.regions:
        try:
            write_regions(table, args.regions, wcs=img.wcs, sky=sky, overwrite=args.overwrite)
        except BaseException:
            if created:  # both or neither: the catalog alone is a partial result
                out.unlink(missing_ok=True)
            raise
        msg += f", regions -> {args.regions}"
    print(msg)
    return 0

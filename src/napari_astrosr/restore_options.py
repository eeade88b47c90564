"""The restore option set, once: :class:`RestoreOptions` (validated, bounded) and the method registry.

Every way into a restoration (``restore``/``restore_job``, ``restore_dask``, the tiled and batch jobs,
``astrosr restore``/``astrosr batch`` and the Restore widget) builds one :class:`RestoreOptions`, so the
defaults and the checks are the same everywhere. No torch here: the CLI imports this module to build its
arguments without loading a network.

Safe defaults (issue 20): every network and ``backprojection`` projects its output onto the forward model
(blur + block sum reproduce the input), exactly on clean data and noise-aware on noisy data
(:func:`resolve_noise` decides from the measured noise); networks keep the input's sky. Opt out with
``project=False`` (``--no-projection``) and ``keep_sky=False`` (``--no-keep-sky``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional, Union

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .exceptions import AstroSRError
from .method_table import CLASSICAL, METHODS, NETWORKS, MethodInfo  # noqa: F401  (the registry's old home)

__all__ = [
    "CLASSICAL",
    "CLEAN_NOISE_REL",
    "EXACT_MAX_GAIN",
    "EXACT_MAX_PASSED_NOISE_X4",
    "METHODS",
    "NETWORKS",
    "MethodInfo",
    "NoiseChoice",
    "PsfChoice",
    "measure_noise",
    "RestoreOptions",
    "options_from_kwargs",
    "resolve_noise",
    "resolve_psf",
]


# measured LR noise below this fraction of the LR robust range (99.5th percentile - median) counts as clean:
# the projection is then exact. On the quality benchmark's fields the second-difference estimate gave 0.03-0.5%
# without added noise on the fields with little intrinsic noise and >= 1.03% with the benchmark's 1% noise; above
# it an exact projection fits the noise (docs/results_quality.md: x2 noisy, fisr + flux-exact 33.4 dB vs 39.5 dB
# noise-aware). Re-checked with core.noise.estimate_sigma (the estimator used now, tests/test_restore_wire.py):
# clean simulated fields 0.00% (256^2 galaxies, stars) to 0.28% (64^2 galaxies); with 1% noise 1.00-1.14%.
CLEAN_NOISE_REL = 0.005

# the auto choice never picks the exact projection when it would amplify some residual frequency by more than
# this (``core.projection.noise_gain``): x2 and x4 with the STAR PSFs stay at 15-60, the choice there is the
# one validated above; at scale 1 any blur gives 1e4 or more, and an exact deconvolution turns even the 0.2%
# noise of a "clean" real image into structure that moves flux between sources
# (benchmarks/scale1_photometry.py, docs/results_defaults.md "Scale 1").
EXACT_MAX_GAIN = 100.0
# at scale 4 and above the exact projection is the better choice on noisy data too, as long as the noise it passes
# on (measured noise x the exact projection's largest gain) stays below this fraction of the robust range. Chosen on
# the training configs' validation data, never on a held-out field (benchmarks/projection_rule.py: right halves of
# A2744 cd_galaxy/group and DECam OBS04a/18a, and simulated fields with a noiseless truth): at x4 the exact
# projection had the lower per-source flux error in every noise band from 0.25% to 10% of the range, PSF noise
# gains 2.3-14.5 and crops of 128-512 px (e.g. FISR, simulated fields, 1% noise: pooled 0.049 vs 0.072
# noise-aware), with PSNR within 0.3 dB up to 2% noise; at x2 the noise-aware projection won above 0.5%. Why x4
# differs: an x4 LR pixel holds most of a compact source, so a network's flux error there is a near-white spike
# in the residual, which the noise-aware projection's band-averaged Wiener gain cannot tell from noise. The cap:
# at 10% noise (0.36 of the range passed on) the exact output fell below bicubic's PSNR, at 0.23 it stayed above.
EXACT_MAX_PASSED_NOISE_X4 = 0.25
# noise below this fraction of the robust range is float32 rounding, not noise (real images sit at 1e-4 or more):
# the exact projection stays the choice whatever its gain
NOISELESS_REL = 1e-6


class RestoreOptions(BaseModel):
    """Every option of one restoration, validated (unknown keys and out-of-range values rejected).

    ``project``, ``flux_noise`` and ``keep_sky`` default to ``None``: the method's default (see the module
    docstring); the effective choices are :attr:`projects` and :attr:`sky_levels`.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, arbitrary_types_allowed=True)

    method: str = Field(description="restoration method (see `astrosr methods`)")
    scale: int = Field(default=2, ge=1, le=16, description="integer enlargement factor")
    model: Optional[str] = Field(
        default=None, max_length=4096, description="checkpoint .pt written by `astrosr train` (default: bundled)"
    )
    device: str = Field(
        default="auto", pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$", description="where networks run (auto: cuda, mps, cpu)"
    )
    tile: Optional[int] = Field(default=None, ge=1, le=1 << 16, description="network tile side in input pixels")
    overlap: Optional[int] = Field(default=None, ge=0, le=1 << 12, description="tile overlap in input pixels")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(default="auto", description="GPU autocast precision")
    threads: Optional[int] = Field(default=None, ge=1, le=1024, description="CPU threads for networks")
    iterations: Optional[int] = Field(
        default=None, ge=1, le=100_000, description="Richardson-Lucy / projection iterations"
    )
    flux_thresh: float = Field(default=1.5, gt=0.0, le=1000.0, description="FISR flux-map detection sigma")
    project: Optional[bool] = Field(
        default=None, description="project onto the forward model (default: networks and backprojection)"
    )
    psf: Any = Field(default=None, description="blur the input carries, on the output grid (spec, file, array)")
    flux_noise: Union[None, float, str] = Field(
        default=None, description="input noise sigma per pixel, 'auto' (measured) or 'exact' (default: auto)"
    )
    keep_sky: Union[None, bool, str, tuple] = Field(
        default=None, description="networks: act only where the input shows signal (default on: 2,5 sigma)"
    )
    sky_rms: Optional[float] = Field(default=None, gt=0.0, description="noise rms the sky gate measures S/N against")

    @field_validator("method")
    @classmethod
    def _known_method(cls, v: str) -> str:
        if v not in METHODS:
            raise ValueError(f"--method {v!r}: unknown; choose one of {', '.join(METHODS)}.")
        return v

    @field_validator("model", mode="before")
    @classmethod
    def _model_path(cls, v: Any) -> Any:
        return str(v) if isinstance(v, Path) else v

    @field_validator("psf")
    @classmethod
    def _psf_kind(cls, v: Any) -> Any:
        if v is None or isinstance(v, np.ndarray):
            return v
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, str):
            return v.strip() or None
        raise ValueError(
            f"--psf {v!r}: give a spec (gaussian:1.0, airy:2, moffat:3,2.5, none), a PSF FITS or an array."
        )

    @field_validator("flux_noise", mode="before")
    @classmethod
    def _noise(cls, v: Any) -> Any:
        if v is None:
            return None
        if isinstance(v, str):
            t = v.strip().lower()
            if t in ("auto", "exact"):
                return t
            try:
                v = float(t)
            except ValueError:
                raise ValueError(
                    f"--flux-noise {v!r}: give the input's noise sigma per pixel, 'auto' or 'exact'."
                ) from None
        v = float(v)
        if not np.isfinite(v) or v < 0:
            raise ValueError(f"--flux-noise {v!r}: must be a finite number >= 0, 'auto' or 'exact'.")
        return v

    @field_validator("keep_sky", mode="before")
    @classmethod
    def _sky(cls, v: Any) -> Any:
        if v is None or v is False:
            return v
        from .core.skygate import parse_keep_sky

        try:
            levels = parse_keep_sky(v)
        except AstroSRError as exc:
            raise ValueError(str(exc)) from None
        return None if levels is None else tuple(float(x) for x in levels)

    @model_validator(mode="after")
    def _consistent(self) -> RestoreOptions:
        info = METHODS[self.method]
        if info.kind == "classical" and self.keep_sky not in (None, False):
            raise ValueError(
                f"--keep-sky applies to the networks (their changes in the sky); {self.method} is a "
                "classical method: drop --keep-sky."
            )
        if self.method == "backprojection" and self.project is False:
            raise ValueError(
                "backprojection is the forward-model projection (of bicubic): --no-projection would "
                "make it bicubic; use --method bicubic."
            )
        if self.flux_noise is not None and not self.projects:
            raise ValueError(
                "--flux-noise makes the forward-model projection noise-aware: it needs a projection "
                f"({'drop --no-projection' if self.project is False else 'add --project'} or use "
                "--method backprojection)."
            )
        return self

    # effective choices ------------------------------------------------------------------------------------------
    @property
    def info(self) -> MethodInfo:
        """The method's registry entry."""
        return METHODS[self.method]

    @property
    def is_network(self) -> bool:
        """True for the networks."""
        return self.info.kind == "network"

    @property
    def projects(self) -> bool:
        """Whether the output is projected onto the forward model (explicit ``project``, else the default)."""
        if self.project is not None:
            return bool(self.project)
        if not self.info.projects:
            return False
        # scale 1 with no blur to undo: the projection would return the input
        return not (self.scale == 1 and self.psf is None)

    @property
    def sky_levels(self) -> Optional[tuple[float, float]]:
        """The sky gate's (low, high) sigma levels, or None when the sky is not kept."""
        if self.keep_sky is False or not self.is_network:
            return None
        if self.keep_sky is None:
            from .core.skygate import parse_keep_sky

            return tuple(parse_keep_sky(True)) if self.info.keeps_sky else None
        return tuple(self.keep_sky)


_ALIASES = ("flux_exact",)


def options_from_kwargs(**kwargs: Any) -> RestoreOptions:
    """A :class:`RestoreOptions` from ``restore(...)``-style keywords, as one clear :class:`AstroSRError`.

    ``flux_exact=True`` is the older spelling of ``project=True`` (``False`` means "the default").
    """
    kw = {k: v for k, v in kwargs.items() if k not in _ALIASES}
    if kwargs.get("flux_exact") and kw.get("project") is None:
        kw["project"] = True
    try:
        return RestoreOptions(**kw)
    except ValidationError as exc:
        raise AstroSRError(_one_line(exc)) from None


def _one_line(exc: ValidationError) -> str:
    """The first validation error as one line naming the option."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ()))
    msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    if err.get("type") == "extra_forbidden":
        return f"{loc}: unknown restore option; known: {', '.join(RestoreOptions.model_fields)}."
    if msg.startswith("--"):
        return msg
    return f"--{loc.replace('_', '-')}: {msg}" if loc else msg


# resolvers: the one place each where the PSF and the noise of the input are decided ----------------------------------


@dataclass(frozen=True)
class NoiseChoice:
    """How the projection treats noise: ``mode`` ``exact`` or ``noise-aware``, the sigma used, and why.

    ``info`` (:class:`~napari_astrosr.core.noise.NoiseInfo`, or None when nothing was measured) says where the
    noise came from (header cards); ``sigma_map`` is the input's sigma for the ERR propagation: a per-pixel map
    from an ERR / VAR / IVAR / WHT extension, else the scalar measured (or given), None when unknown.
    """

    mode: Literal["exact", "noise-aware"]
    sigma: Optional[float]
    measured: Optional[float]
    source: str
    info: Any = None
    sigma_map: Any = None


# the noise estimate looks at the central section of at most this side (input pixels): seconds on any image
NOISE_SECTION = 1024


def _central(a: np.ndarray, side: int = NOISE_SECTION) -> tuple[np.ndarray, tuple[slice, slice]]:
    ny, nx = a.shape
    y0, x0 = max(0, ny // 2 - side // 2), max(0, nx // 2 - side // 2)
    sl = (slice(y0, y0 + side), slice(x0, x0 + side))
    return a[sl], sl


def measure_noise(image: np.ndarray, *, path: Any = None) -> tuple[Any, Any]:
    """The input's noise: ``(sigma, NoiseInfo)``, ``sigma`` a per-pixel map of ``image``'s shape when ``path``
    (the input FITS) has an ERR / ERROR / VAR / IVAR / WHT extension of that shape (``core.noise.find_noise``),
    else a scalar from :func:`core.noise.estimate_sigma` on the central (<= 1024^2) section (masked high-pass
    scatter: holds on galaxy and crowded fields, benchmarks/noise_estimate.py). On fewer than 100 valid pixels
    the second-difference estimate (:func:`core.noise.second_difference_sigma`) is used.
    """
    from .core.noise import NoiseInfo, estimate_sigma, find_noise, second_difference_sigma

    arr = np.asarray(image, dtype=np.float64)
    if path is not None and Path(str(path)).is_file():
        try:
            sig, info = find_noise(arr, hdul_or_path=path)
        except AstroSRError:
            sig, info = None, None  # a map of another shape (e.g. --hdu picked another image): estimate
        if info is not None and info.source == "extension":
            return sig, info
    sub, _ = _central(arr)
    try:
        s, est = estimate_sigma(sub, return_info=True)
        desc = f"robust estimate ({est['method']})" + ("" if sub.shape == arr.shape else ", central section")
        return float(s), NoiseInfo(
            source="estimated", sigma=float(s), per_pixel=False, description=desc, notes=list(est.get("notes", []))
        )
    except AstroSRError:
        s = second_difference_sigma(arr)
        return s, NoiseInfo(
            source="estimated", sigma=float(s), per_pixel=False, description="second differences (small image)"
        )


def resolve_noise(
    image: np.ndarray,
    flux_noise: Union[None, float, str] = None,
    *,
    path: Any = None,
    measure: bool = True,
    gain: Optional[float] = None,
    scale: Optional[int] = None,
) -> NoiseChoice:
    """Choose exact or noise-aware projection for ``image`` (the LR input) from ``flux_noise``.

    ``None``/``"auto"``: measure the per-pixel noise (:func:`measure_noise`: the input file's ERR / VAR /
    IVAR / WHT extension when ``path`` has one, else a robust estimate); below :data:`CLEAN_NOISE_REL` of the
    image's robust range (99.5th percentile - median) the data count as clean and the projection is exact,
    else noise-aware with that sigma (the map's median). ``gain``: the exact projection's largest noise
    amplification (:func:`~napari_astrosr.core.projection.noise_gain`, e.g. from :func:`projection_gain`);
    above :data:`EXACT_MAX_GAIN` (scale 1 with any blur) the auto choice is noise-aware however clean the data
    look. ``scale`` (the restoration's factor) >= 4 with a known ``gain``: exact also on noisy data while the
    noise the exact projection would pass on (sigma x gain) stays below :data:`EXACT_MAX_PASSED_NOISE_X4` of the
    range (measured, benchmarks/projection_rule.py). ``"exact"`` or ``0``: exact. A number: that sigma,
    noise-aware. ``measure``: also measure the noise for the ERR when the projection choice does not need it.
    """
    from .core.noise import NoiseInfo

    given = isinstance(flux_noise, (int, float)) and not isinstance(flux_noise, bool)
    if given and float(flux_noise) > 0:
        s = float(flux_noise)
        info = NoiseInfo(source="given", sigma=s, per_pixel=False, description=f"--flux-noise {s:g}")
        return NoiseChoice("noise-aware", s, None, "given", info, s)
    arr = np.asarray(image, dtype=np.float64)
    if flux_noise == "exact" or given:
        if not measure:
            return NoiseChoice("exact", None, None, "given")
        sig, info = measure_noise(arr, path=path)
        return NoiseChoice("exact", None, info.sigma, "given", info, sig)
    sig, info = measure_noise(arr, path=path)
    sigma = float(info.sigma)
    sub, _ = _central(arr)
    finite = sub[np.isfinite(sub)]
    span = float(np.percentile(finite, 99.5) - np.median(finite)) if finite.size else 0.0
    rel = sigma / span if span > 0 else 0.0
    what = "from " + info.description if info.source == "extension" else "measured"
    src = f"{what} ({sigma:.4g} = {rel:.2%} of the robust range)"
    amplifies = gain is not None and not gain <= EXACT_MAX_GAIN  # also true for an infinite / NaN gain
    if not np.isfinite(sigma) or (rel < CLEAN_NOISE_REL and not amplifies):
        return NoiseChoice("exact", None, sigma, src + "; clean", info, sig)
    if rel < NOISELESS_REL:  # no noise above float32 rounding (a noiseless simulation): exact is safe
        return NoiseChoice("exact", None, sigma, src + "; noiseless", info, sig)
    passed = rel * gain if gain is not None and not amplifies else np.inf  # what the exact projection passes on
    if scale is not None and int(scale) >= 4 and passed < EXACT_MAX_PASSED_NOISE_X4:
        src += (
            f"; exact at x{int(scale)}: noise x its gain {gain:.1f} = {passed:.1%} of the range, "
            f"below {EXACT_MAX_PASSED_NOISE_X4:.0%}"
        )
        return NoiseChoice("exact", None, sigma, src, info, sig)
    if rel < CLEAN_NOISE_REL:
        g = "without bound" if not np.isfinite(gain) else f"up to {gain:.0e}x"
        src += f"; clean, but an exact projection would amplify it {g}"
        return NoiseChoice("noise-aware", sigma, sigma, src, info, sig)
    return NoiseChoice("noise-aware", sigma, sigma, src, info, sig)


def projection_gain(shape: tuple[int, int], *, scale: int, psf: Any) -> Optional[float]:
    """The exact projection's largest noise gain for an LR input of ``shape`` (``core.projection.noise_gain``),
    measured on a grid of at most 256^2 LR pixels (the transfer function's minimum barely depends on the size,
    and a full-size operator would cost seconds); None when ``psf`` is None or not a kernel/spec.
    """
    if psf is None:
        return None
    from .core.projection import noise_gain
    from .core.psf import parse_psf

    try:
        kernel = parse_psf(psf) if not isinstance(psf, np.ndarray) else psf
    except (AstroSRError, OSError, ValueError, TypeError):
        return None
    s = int(scale)
    lr = (min(int(shape[0]), 256), min(int(shape[1]), 256))
    return noise_gain((lr[0] * s, lr[1] * s), scale=s, psf=kernel)


@dataclass(frozen=True)
class PsfChoice:
    """The PSF a restoration uses: ``psf`` (the spec given, or the kernel found, on the output grid), a short
    ``source`` text, and ``info`` (:class:`~napari_astrosr.core.psf_estimate.PsfInfo`, None when none was found
    or ``none`` was given); ``error``: why none was found (the caller decides whether that is fatal).
    """

    psf: Any
    source: str
    info: Any = None
    error: Optional[str] = None


def resolve_psf(
    psf: Any,
    *,
    header: Any = None,
    data: Optional[np.ndarray] = None,
    scale: int = 1,
    path: Any = None,
    wcs: Any = None,
    find: bool = True,
) -> PsfChoice:
    """The PSF the projection uses and where it came from (:class:`PsfChoice`).

    Order (``core.psf_estimate.find_psf``): the PSF given (``--psf``, taken as is, on the output grid); a PSF
    extension of the input file (``path``) or a PSF file named in its header; FWHM keywords of ``header``
    (arcsec converted with the WCS); an ePSF from the image's own stars (``data``; relaxed on small crops, with
    notes); else ``psf=None`` with ``error`` saying why (a projection through the block sum alone measured worse
    than bicubic on per-source flux, so "no blur" is never guessed). ``find=False`` or no ``data``: only the
    PSF given.
    """
    from .core.psf_estimate import find_psf

    where = Path(str(path)).name if path is not None else None
    if psf is not None:
        label = f"array{psf.shape}" if isinstance(psf, np.ndarray) else str(psf)
        info = None
        if not (isinstance(psf, str) and psf.strip().lower() == "none"):
            try:
                _, info = find_psf(np.zeros((8, 8)), psf=psf, scale=scale, where=where)
            except AstroSRError:
                info = None  # a bad spec: parse_psf says so, with its own message
        return PsfChoice(psf, f"given ({label})", info)
    if not find or data is None:
        return PsfChoice(None, "no PSF given", None, "no PSF given")
    hdr = header
    if hdr is not None:
        from astropy.io import fits

        hdr = fits.Header(hdr) if not isinstance(hdr, fits.Header) else hdr
    try:
        kernel, info = find_psf(np.asarray(data), header=hdr, hdul_or_path=path, wcs=wcs, scale=int(scale), where=where)
    except AstroSRError as exc:
        return PsfChoice(None, "not found", None, str(exc))
    src = f"{info.source} ({info.description}; FWHM {info.fwhm:.2f} px)"
    return PsfChoice(kernel, src, info)


# command line: the arguments of `astrosr restore` and `astrosr batch`, from the model ------------------------

_CLI_FIELDS = ("method", "scale", "model", "device", "tile", "overlap", "threads", "precision", "iterations", "psf")


def add_cli_arguments(p: Any, *, fields: tuple[str, ...] = _CLI_FIELDS, device_default: Optional[str] = None) -> None:
    """Add the restore options to an ``argparse`` parser: ``fields`` (help and defaults from
    :class:`RestoreOptions`) plus the projection, noise and sky switches. ``device_default`` overrides the
    model's (``astrosr batch`` runs on CPU workers unless told otherwise).
    """
    f = RestoreOptions.model_fields
    for name in fields:
        flag = "--" + name.replace("_", "-")
        desc = f[name].description or ""
        if name == "method":
            p.add_argument(flag, required=True, choices=tuple(METHODS), help=desc)
        elif name == "precision":
            p.add_argument(flag, default="auto", choices=("auto", "fp32", "bf16", "fp16"), help=desc + " (CPU: fp32)")
        elif name == "device":
            d = device_default or f[name].default
            p.add_argument(flag, default=d, help=f"{desc} (default {d})")
        elif name == "psf":
            p.add_argument(
                flag,
                default=None,
                help="blur the input carries, in output pixels: gaussian:SIGMA|airy:R|gaussian+airy:S,R|"
                "moffat:FWHM[,BETA]|PSF.fits|none; default: found in the input (PSF extension or "
                "file named in the header, FWHM keywords, else an ePSF from its stars)",
            )
        elif f[name].annotation in (int, Optional[int]):
            d = f[name].default
            p.add_argument(flag, type=int, default=d, help=desc + (f" (default {d})" if d is not None else ""))
        else:
            p.add_argument(flag, default=f[name].default, help=desc)
    proj = p.add_mutually_exclusive_group()
    proj.add_argument(
        "--no-projection",
        dest="project",
        action="store_false",
        default=None,
        help="networks/backprojection: skip the default projection onto the forward model (the "
        "network's flux is then only approximate)",
    )
    proj.add_argument(
        "--flux-exact",
        "--project",
        dest="project",
        action="store_true",
        default=None,
        help="project onto the forward model (the default for networks and backprojection; for "
        "bicubic/lanczos/richardson-lucy it needs --psf)",
    )
    p.add_argument(
        "--flux-noise",
        default=None,
        metavar="SIGMA|auto|exact",
        help="the projection's noise: 'auto' (default) measures it and projects exactly on clean data, "
        "only above the noise on noisy data; a sigma per input pixel; or 'exact'",
    )
    sky = p.add_mutually_exclusive_group()
    sky.add_argument(
        "--keep-sky",
        nargs="?",
        const=True,
        default=None,
        metavar="LOW,HIGH",
        help="networks (default on, 2,5): the network acts only where the input's S/N exceeds LOW "
        "sigma, fully above HIGH; the sky stays the input's flux-conserving upsampling",
    )
    sky.add_argument(
        "--no-keep-sky",
        dest="keep_sky",
        action="store_const",
        const=False,
        help="networks: let the network change the sky too",
    )


def options_from_args(args: Any, **overrides: Any) -> RestoreOptions:
    """The :class:`RestoreOptions` of parsed CLI arguments (the fields present on ``args``), as one clear
    :class:`AstroSRError` naming the option.
    """
    kw = {k: getattr(args, k) for k in RestoreOptions.model_fields if hasattr(args, k)}
    kw = {k: v for k, v in kw.items() if v is not None or k in ("project", "keep_sky")}
    kw.update(overrides)
    return options_from_kwargs(**kw)


def describe_choices(params: dict) -> str:
    """One line saying what the projection, noise and sky choices were (CLI, widget), from result params."""
    mode = params.get("projection", "off")
    if mode == "off":
        proj = "no projection"
        if params.get("projection_why"):
            proj += f" ({params['projection_why']})"
    else:
        psf = params.get("psf_source") or params.get("psf")
        proj = f"projection {mode}"
        if mode == "noise-aware" and params.get("flux_noise") is not None:
            why = str(params.get("noise_source", ""))
            # the gain rule's reason, when it (not the noise level) made the choice
            why = why[why.index("an exact projection") :] if "an exact projection would amplify" in why else ""
            proj += f" (sigma {params['flux_noise']:.4g}{'; ' + why if why else ''})"
        elif mode == "exact" and "; exact at x" in str(params.get("noise_source", "")):
            why = str(params["noise_source"])  # the x4 rule made an exact choice on noisy data: say so
            proj += f" ({why[why.index('exact at x') + len('exact at ') :]})"
        proj += f", PSF {psf}"
    sky = f"sky kept ({params['keep_sky'][0]:g},{params['keep_sky'][1]:g} sigma)" if params.get("keep_sky") else None
    return "; ".join(x for x in (proj, sky) if x)

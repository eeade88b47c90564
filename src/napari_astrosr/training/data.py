"""Training data: HR/LR pairs from simulations, real FITS degraded on the fly, and real pairs.

Pipeline (all seeded, so a config + seed gives the same patches every time):

1. **Images.** Each :class:`config.DataSource` yields whole HR/LR image pairs:
   ``simulate`` (``core.simulate`` star fields / Sersic galaxies), ``degrade`` (real FITS
   files through the STAR pipeline ``core.degrade.degrade`` with a random STAR PSF, a
   fixed PSF or a real PSF file, plus optional noise; ``data.realizations`` draws per
   file) and ``paired`` (a real LR and HR image on matching grids).
2. **Split by sky region.** A source is either train or validation as a whole, or with
   ``split: halves`` the left half of every image trains and the right half validates.
   Never random patches of one image on both sides (neighbouring patches share sources).
3. **Patches.** ``core.patches.extract_patch_pairs`` with the 80%-valid rule; flux maps
   (FISR's guidance on the LR grid, and the HR map for the Flux Consistency Loss) are
   drawn once per whole image and cut at the same positions.
4. **Normalisation** (``data.normalization``; ``patch_median_std`` takes the median/std of
   a ``norm_window`` tile around each patch, std floored at the image's robust noise,
   exactly as ``models.inference`` does per tile). Default: ``(x - median) / std`` with the median and std of the *whole*
   network-input image (DESIGN.md section 8: median/std is best for flux), exactly as
   ``models.inference.normalization_params`` does at inference, so training and
   inference see identically scaled inputs. The target uses the same affine map after
   conversion to the input's surface-brightness units (an HR pixel of a flux-conserving
   xS grid holds 1/S^2 of the flux), so ``target_n = (hr * S^2 - median) / std`` and the
   inverse is ``hr = (out * std + median) / S^2``. :func:`normalize` / :func:`denormalize`
   are the single definition used by the loop and the validation.

For same-size networks (restormer, pix2wgan; ``model.scale == 1``) the network input is
the flux-conserving bicubic upsampling of the LR image (``core.resample.upsample``), the
same thing ``restoration.py`` feeds them at inference.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..config import DataSource, TrainConfig, resolve_data_root
from ..exceptions import AstroSRError

__all__ = [
    "ImagePair",
    "PatchPool",
    "DevicePool",
    "TrainData",
    "normalize",
    "denormalize",
    "patch_stats",
    "build_image_pairs",
    "build_train_data",
    "NORMALIZATION",
    "normalization_of",
]

NORMALIZATION = {"kind": "median_std"}
"""The default checkpoint normalisation (``models.inference`` applies it: whole-image median/std)."""


def normalization_of(config: TrainConfig) -> dict:
    """The sidecar ``normalization`` a config trains with (``data.normalization``)."""
    kind = config.data.normalization
    if kind == "median_std":
        return dict(NORMALIZATION)
    f_in = config.data.scale // config.model.scale if config.model.scale < config.data.scale else 1
    window = config.data.norm_window or 2 * config.data.patch * f_in
    return {"kind": kind, "window": int(window)}


# ---------------------------------------------------------------------------------------------
# normalisation (one definition)


def patch_stats(x: np.ndarray, axis=(-2, -1)) -> tuple[np.ndarray, np.ndarray]:
    """Median and standard deviation over the last two axes (NaN-ignoring), std floored > 0."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(x, axis=axis, keepdims=True)
        std = np.nanstd(x, axis=axis, keepdims=True)
    med = np.nan_to_num(med)
    std = np.nan_to_num(std)
    floor = 1e-6 * np.maximum(np.abs(med), 1.0) + 1e-20
    return med.astype(np.float32), np.maximum(std, floor).astype(np.float32)


def normalize(x: np.ndarray, med: np.ndarray, std: np.ndarray, *, unit_factor: float = 1.0) -> np.ndarray:
    """``(x * unit_factor - med) / std`` (``unit_factor`` = s_model**2 for an HR target)."""
    return ((x * unit_factor - med) / std).astype(np.float32)


def denormalize(y, med, std, *, unit_factor: float = 1.0):
    """Inverse of :func:`normalize` (works on numpy arrays and torch tensors)."""
    return (y * std + med) / unit_factor


# ---------------------------------------------------------------------------------------------
# whole images


@dataclass
class ImagePair:
    """One whole HR image and its LR counterpart (LR pixels ``scale`` x larger)."""

    hr: np.ndarray
    lr: np.ndarray
    name: str
    split: str  # "train" | "val"
    params: dict = field(default_factory=dict)
    psf: Optional[np.ndarray] = None  # the PSF that made lr from hr (None: unknown/paired, or no blur)


def _read_2d(path: Path, *, hdu: Optional[int] = None, plane: Optional[int] = None):
    from ..core.fits_io import read_fits

    img = read_fits(path, hdu=hdu)
    data = img.data
    if data.ndim == 3:
        data = data[plane if plane is not None else 0]
    return np.ascontiguousarray(data, dtype=np.float32), img


def _pixel_scale_arcsec(wcs) -> Optional[float]:
    if wcs is None:
        return None
    try:
        from astropy.wcs.utils import proj_plane_pixel_scales

        return float(np.mean(proj_plane_pixel_scales(wcs.celestial)) * 3600.0)
    except Exception:  # noqa: BLE001 - any WCS trouble: no pixel scale
        return None


def _resolve(root: Path, rel: str) -> Path:
    p = Path(rel).expanduser()
    if not p.is_absolute():
        p = root / p
    if not p.exists():
        raise AstroSRError(
            f"{p}: training data file not found (data.root is {root}; set data.root or ASTROSR_SHARED_DATA)."
        )
    return p


def _make_psf(
    cfg: TrainConfig, root: Path, rng: np.random.Generator, image_wcs, image_pixel_scale: Optional[float] = None
) -> tuple[Optional[np.ndarray], dict]:
    from ..core import psf as P

    spec = cfg.data.psf
    if spec.kind == "none":
        return None, {"psf": "none"}
    if spec.kind == "random":
        from ..core.degrade import random_star_psf

        if spec.files and rng.random() < spec.file_prob:
            # a real PSF (HST / JWST / Spitzer files), taken as HR-pixel sampled, stretched by a random factor
            f = spec.files[int(rng.integers(len(spec.files)))]
            psf = P.psf_from_fits(_resolve(root, f))
            factor = float(rng.uniform(*spec.file_scale))
            if abs(factor - 1) > 1e-3:
                psf = P.resample_psf(psf, factor)
            # cropped to 25 px (the far wings hold ~1% of the flux): the projected loss convolves with it every step
            if psf.shape[0] > 25:
                c0, c1 = (psf.shape[0] - 25) // 2, (psf.shape[1] - 25) // 2
                psf = P.normalize_psf(psf[c0 : c0 + 25, c1 : c1 + 25])
            return psf, {"psf": f, "psf_resample": round(factor, 4)}
        fam = spec.family
        if fam == "mixed":
            fam = "gaussian" if rng.random() < 0.5 else "gaussian+airy"
        psf, params = random_star_psf(rng, kind=fam, sigma_range=spec.sigma_range)
        return psf, {"psf": params.get("spec", fam)}
    # fixed spec: a parse_psf string or a FITS file (relative to the data root)
    s = spec.spec or ""
    low = s.lower()
    if low.endswith((".fits", ".fits.gz", ".fit")):
        psf = P.psf_from_fits(_resolve(root, s), plane=spec.plane)
        params = {"psf": s}
        if spec.pixel_scale:
            pix = image_pixel_scale or _pixel_scale_arcsec(image_wcs)
            if pix is None:
                raise AstroSRError(
                    f"psf.pixel_scale is set but a training image has no celestial WCS to resample the PSF {s} "
                    "(for a simulate source give its pixel_scale)."
                )
            factor = spec.pixel_scale / pix
            if abs(factor - 1) > 1e-3:
                psf = P.resample_psf(psf, factor)
            params["psf_resample"] = round(float(factor), 4)
        return psf, params
    return P.parse_psf(s), {"psf": s}


def _noise_sigma(cfg: TrainConfig, lr: np.ndarray, rng: np.random.Generator) -> float:
    n = cfg.data.noise
    if n.prob <= 0 or n.sigma_rel_max <= 0 or rng.random() >= n.prob:
        return 0.0
    peak = float(np.nanpercentile(lr, 99.5) - np.nanmedian(lr))
    return float(rng.uniform(n.sigma_rel_min, n.sigma_rel_max) * max(peak, 1e-20))


def _noise_kind(cfg: TrainConfig, rng: np.random.Generator) -> str:
    n = cfg.data.noise
    if not (n.poisson_prob or n.correlated_prob):
        return "gaussian"  # no draw: configs without these keys reproduce their old data exactly
    u = rng.random()
    if u < n.poisson_prob:
        return "poisson"
    return "correlated" if u < n.poisson_prob + n.correlated_prob else "gaussian"


def _noise(lr: np.ndarray, sigma: float, kind: str, rng: np.random.Generator) -> np.ndarray:
    """A noise image of background standard deviation ``sigma`` (zero mean).

    ``poisson``: a sky of 10-1000 counts per pixel (level ``b``, gain ``g``) whose shot noise
    and a Gaussian read noise (20-80% of sigma) add up to ``sigma`` in empty sky; sources then get their own shot noise ``sqrt((lr + b) / g)``, and the sky
    is subtracted again (zero mean). ``correlated``: white noise convolved with the kernel
    of a bilinear resampling at a random sub-pixel shift, rescaled to ``sigma``.
    """
    if kind == "poisson":
        f = rng.uniform(0.2, 0.8)
        read, shot = sigma * f, sigma * np.sqrt(1.0 - f * f)
        # the sky holds n_sky counts per pixel (10 to 1000, log-uniform): its shot noise sqrt(b / g) is `shot`
        n_sky = float(np.exp(rng.uniform(np.log(10.0), np.log(1000.0))))
        b = shot * np.sqrt(n_sky)
        g = n_sky / b
        lam = np.clip(np.nan_to_num(lr) + b, 0.0, None) * g
        return (rng.poisson(lam) / g - lam / g + rng.normal(0.0, read, lr.shape)).astype(np.float32)
    white = rng.normal(0.0, 1.0, lr.shape)
    if kind == "correlated":
        from scipy.ndimage import convolve as nd_convolve

        fy, fx = rng.uniform(0.2, 0.8, 2)
        k = np.outer([1 - fy, fy], [1 - fx, fx])
        white = nd_convolve(white, k / np.sqrt((k * k).sum()), mode="wrap")
    return (sigma * white).astype(np.float32)


def _degrade_pair(
    hr: np.ndarray,
    cfg: TrainConfig,
    root: Path,
    rng: np.random.Generator,
    wcs=None,
    pixel_scale: Optional[float] = None,
) -> tuple[np.ndarray, dict, np.ndarray]:
    from ..core.degrade import degrade

    psf, params = _make_psf(cfg, root, rng, wcs, pixel_scale)
    # noise relative to the noiseless LR: degrade once clean to measure its peak, then add noise here
    d = degrade(hr, scale=cfg.data.scale, psf=psf, noise=None, seed=int(rng.integers(2**31)))
    lr = np.asarray(d.data, dtype=np.float32)
    sigma = _noise_sigma(cfg, lr, rng)
    if sigma > 0:
        kind = _noise_kind(cfg, rng)
        lr = (lr + _noise(lr, sigma, kind, rng)).astype(np.float32)
        params["noise_kind"] = kind
    params["noise_sigma"] = sigma
    from ..core.psf import normalize_psf

    return lr, params, (np.ones((1, 1), np.float32) if psf is None else normalize_psf(psf).astype(np.float32))


def _halves(pair: ImagePair, scale: int) -> list[ImagePair]:
    """Left half trains, right half validates (split by sky region)."""
    w_lr = pair.lr.shape[1] // 2
    return [
        ImagePair(pair.hr[:, : w_lr * scale], pair.lr[:, :w_lr], pair.name + "[left]", "train", pair.params, pair.psf),
        ImagePair(pair.hr[:, w_lr * scale :], pair.lr[:, w_lr:], pair.name + "[right]", "val", pair.params, pair.psf),
    ]


def _simulate(src: DataSource, seed: int, hr_sigma: float = 0.6):
    from ..core import simulate as S
    from ..core.psf import gaussian_psf

    shape = (src.size, src.size)
    if src.simulate == "sky":
        from . import skies

        dens = S.DENSITIES.get(src.density, src.density) if src.density is not None else None
        return skies.sky_image(shape, np.random.default_rng(seed), _sky_bank(), star_density=dens)
    # HR "truth" keeps a small instrumental PSF (sigma 0.6 px): real HR images are never delta-sharp
    psf = gaussian_psf(hr_sigma)
    fn = S.star_field if src.simulate == "starfield" else S.sersic_galaxies
    # clean truth on a zero sky (noise is added to the LR side by the degradation)
    kw = {"density": src.density} if src.density is not None else {}
    sim = fn(shape, psf=psf, seed=seed, noise="none", sky=0.0, **kw)
    return np.asarray(sim.image, dtype=np.float32)


_BANK: dict = {}


def _sky_bank():
    """The galaxy stamp bank of ``simulate: sky`` sources (rendered once per process, cached on disk)."""
    if "bank" not in _BANK:
        from .skies import stamp_bank

        _BANK["bank"] = stamp_bank()
    return _BANK["bank"]


def build_image_pairs(config: TrainConfig, *, root: Optional[Path] = None) -> list[ImagePair]:
    """All whole-image HR/LR pairs of a config, each tagged train or val (deterministic)."""
    root = Path(root) if root is not None else resolve_data_root(config)
    s = config.data.scale
    seed = config.run.seed
    pairs: list[ImagePair] = []
    for si, src in enumerate(config.data.sources):
        rng = np.random.default_rng([seed, si, 7])
        made: list[ImagePair] = []
        if src.kind == "simulate":
            n_val = 0 if src.split != "train" else max(1, src.count // 4)
            for i in range(src.count + n_val):
                # validation fields use disjoint seeds: different "sky"
                sim_seed = int(seed * 100_003 + si * 10_007 + i)
                hr = _simulate(src, sim_seed)
                lr, params, psf = _degrade_pair(hr, config, root, rng, pixel_scale=src.pixel_scale)
                split = src.split if i < src.count else "val"
                made.append(ImagePair(hr, lr, f"{src.simulate}#{i}", split, params, psf))
        elif src.kind == "degrade":
            for f in src.files:
                hr, img = _read_2d(_resolve(root, f), hdu=src.lr_hdu)
                hr = _crop_to_multiple(hr, s)
                for r in range(config.data.realizations):
                    lr, params, psf = _degrade_pair(hr, config, root, rng, wcs=img.wcs)
                    made.append(ImagePair(hr, lr, f"{Path(f).name}#r{r}", src.split, params, psf))
        else:  # paired
            hr, _ = _read_2d(_resolve(root, src.hr))
            lr, _ = _read_2d(_resolve(root, src.lr), plane=src.lr_hdu)
            hr = _crop_to_multiple(hr, s)
            ny, nx = hr.shape[0] // s, hr.shape[1] // s
            if lr.shape != (ny, nx):
                raise AstroSRError(
                    f"{src.lr}: LR shape {lr.shape} does not match HR {hr.shape} / scale {s}; "
                    "resample the pair onto matching grids first."
                )
            made.append(ImagePair(hr, lr, f"{Path(src.lr).name}+{Path(src.hr).name}", src.split, {"paired": True}))
        for p in made:
            pairs.extend(_halves(p, s) if p.split == "halves" else [p])
    if not any(p.split == "train" for p in pairs):
        raise AstroSRError(f"{config.source_path}: no training images (every source is split: val).")
    if not any(p.split == "val" for p in pairs):
        raise AstroSRError(
            f"{config.source_path}: no validation images; give one source split: val or halves "
            "(validation is split by sky region, never by random patches)."
        )
    return pairs


def _crop_to_multiple(a: np.ndarray, s: int) -> np.ndarray:
    return a[: a.shape[0] // s * s, : a.shape[1] // s * s]


# ---------------------------------------------------------------------------------------------
# patches


@dataclass
class PatchPool:
    """Normalised patches ready for torch: x (network input), y (target), flux maps."""

    x: np.ndarray  # (N, 1, p_in, p_in)
    y: np.ndarray  # (N, 1, p_out, p_out)
    fmap_in: np.ndarray  # (N, 1, p_lr, p_lr) FISR guidance (LR detections, LR grid), normalised units
    fmap_hr: np.ndarray  # (N, 1, p_out, p_out) HR flux map for the FCL
    med: np.ndarray  # (N, 1, 1, 1)
    std: np.ndarray
    weight: np.ndarray  # (N,) sampling weights
    names: list[str]
    psf_id: Optional[np.ndarray] = None  # (N,) index into TrainData.psfs; -1 = forward model unknown
    clean: Optional[np.ndarray] = None  # (N,) True where the LR patch is noiseless (projection applies)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def sample(
        self, n: int, rng: np.random.Generator, *, gain: Optional[tuple[float, float]] = None
    ) -> dict[str, np.ndarray]:
        """A random batch with random flips / 90-degree rotations (flux-preserving augmentations).

        ``gain``: per-sample amplitude factors drawn log-uniformly from ``[lo, hi]`` multiply the
        normalised input, target and flux maps (see ``DataConfig.gain_augment``).
        """
        p = self.weight / self.weight.sum()
        idx = rng.choice(len(self), size=n, replace=True, p=p)
        k = int(rng.integers(4))
        flip = bool(rng.integers(2))

        def aug(a):
            a = a[idx]
            a = np.rot90(a, k, axes=(-2, -1))
            if flip:
                a = a[..., ::-1]
            return np.ascontiguousarray(a)

        n_all = len(self)
        psf_id = self.psf_id if self.psf_id is not None else np.full(n_all, -1, np.int64)
        clean = self.clean if self.clean is not None else np.zeros(n_all, bool)
        # the augmentation (k quarter turns, then an optional left-right flip) applies to the PSF too
        out = {
            "x": aug(self.x),
            "y": aug(self.y),
            "fmap_in": aug(self.fmap_in),
            "fmap_hr": aug(self.fmap_hr),
            "med": self.med[idx],
            "std": self.std[idx],
            "psf_id": psf_id[idx],
            "clean": clean[idx],
            "rot90": k,
            "flip": flip,
        }
        if gain is not None:
            g = np.exp(rng.uniform(np.log(gain[0]), np.log(gain[1]), size=(n, 1, 1, 1))).astype(np.float32)
            for key in ("x", "y", "fmap_in", "fmap_hr"):
                out[key] = out[key] * g
            out["std"] = out["std"] / g
            out["gain"] = g.reshape(n)
        return out


class DevicePool:
    """A :class:`PatchPool` resident on the training device; batches drawn there.

    Why: the per-step host work of :meth:`PatchPool.sample` (fancy indexing, rotations and a
    host-to-device copy of every batch) starved a GPU. The pool is copied to the device once;
    :meth:`sample` consumes the numpy generator exactly like :meth:`PatchPool.sample` (same
    indices, quarter turns, flip and gains), so a seed gives the same batches on any device
    and a resumed run continues exactly.
    """

    KEYS = ("x", "y", "fmap_in", "fmap_hr")

    def __init__(self, pool: PatchPool, device="cpu"):
        import torch

        self.pool = pool
        self.device = torch.device(device)
        self.t = {k: torch.from_numpy(np.ascontiguousarray(getattr(pool, k))).to(self.device) for k in self.KEYS}
        self.p = pool.weight / pool.weight.sum()
        n_all = len(pool)
        self.psf_id = pool.psf_id if pool.psf_id is not None else np.full(n_all, -1, np.int64)
        self.clean = pool.clean if pool.clean is not None else np.zeros(n_all, bool)

    def __len__(self) -> int:
        return len(self.pool)

    def sample(self, n: int, rng: np.random.Generator, *, gain: Optional[tuple[float, float]] = None) -> dict[str, Any]:
        """Same draws as :meth:`PatchPool.sample`; image arrays come back as device tensors."""
        import torch

        idx = rng.choice(len(self.pool), size=n, replace=True, p=self.p)
        k = int(rng.integers(4))
        flip = bool(rng.integers(2))
        it = torch.from_numpy(idx).to(self.device)
        out: dict[str, Any] = {}
        for key, v in self.t.items():
            a = torch.rot90(v.index_select(0, it), k, dims=(-2, -1))
            out[key] = torch.flip(a, dims=(-1,)) if flip else a
        out.update(
            med=self.pool.med[idx],
            std=self.pool.std[idx],
            psf_id=self.psf_id[idx],
            clean=self.clean[idx],
            rot90=k,
            flip=flip,
        )
        if gain is not None:
            g = np.exp(rng.uniform(np.log(gain[0]), np.log(gain[1]), size=(n, 1, 1, 1))).astype(np.float32)
            gt = torch.from_numpy(g).to(self.device)
            for key in self.KEYS:
                out[key] = out[key] * gt
            out["std"] = out["std"] / g
            out["gain"] = g.reshape(n)
        return out


@dataclass
class TrainData:
    """Everything the loop needs: train/val patch pools and whole validation images."""

    train: PatchPool
    val: PatchPool
    val_images: list[ImagePair]
    train_names: list[str]
    val_names: list[str]
    summary: dict[str, Any]
    psfs: list = field(default_factory=list)  # PSF bank indexed by PatchPool.psf_id


def _input_image(lr: np.ndarray, s: int, model_scale: int) -> np.ndarray:
    """The network's input for a whole LR image (upsampled for same-size networks)."""
    if model_scale == s or s == 1:
        return lr
    from ..core.resample import upsample

    # flux-conserving: block sums reproduce lr; pixel values are ~lr / s^2 (HR flux units)
    return np.asarray(upsample(np.nan_to_num(lr), s, method="bicubic"), dtype=np.float32)


def _patches_of(pair: ImagePair, cfg: TrainConfig, rng: np.random.Generator) -> Optional[dict[str, np.ndarray]]:
    from ..core.fluxmap import flux_map_from_image
    from ..core.patches import extract_patch_pairs

    s, ms = cfg.data.scale, cfg.model.scale
    p = cfg.data.patch
    if min(pair.lr.shape) < p:
        return None
    ps = extract_patch_pairs(pair.hr, pair.lr, scale=s, patch=p, stride=cfg.data.stride, min_valid=cfg.data.min_valid)
    if len(ps.lr) == 0:
        return None
    pos = np.asarray(ps.positions, dtype=int).reshape(-1, 2)
    lr_clean = np.nan_to_num(pair.lr)
    fm_lr = flux_map_from_image(lr_clean, thresh=cfg.loss.fcl_thresh)
    need_hr_map = cfg.loss.fcl_weight > 0
    fm_hr = flux_map_from_image(np.nan_to_num(pair.hr), thresh=cfg.loss.fcl_thresh) if need_hr_map else None
    inp = _input_image(pair.lr, s, ms)
    f_in = s // ms  # network-input pixels per LR pixel (1 for SR nets, s for same-size nets)
    xs, ys, fl, fh = [], [], [], []
    for (py, px), hr_p in zip(pos, ps.hr):
        xs.append(inp[py * f_in : (py + p) * f_in, px * f_in : (px + p) * f_in])
        fl.append(fm_lr[py : py + p, px : px + p])
        fh.append(fm_hr[py * s : (py + p) * s, px * s : (px + p) * s] if need_hr_map else np.zeros_like(hr_p))
        ys.append(hr_p)
    x = np.stack(xs)[:, None]
    y = np.stack(ys)[:, None].astype(np.float32)
    x = np.nan_to_num(x)
    from ..models.inference import PER_TILE_KINDS, fill_invalid, normalization_params, tile_stats

    filled = fill_invalid(inp)[0]
    prm = normalization_params(filled, normalization_of(cfg))
    if prm["kind"] in PER_TILE_KINDS:
        # per patch: statistics of the window-sized tile around it, placed like inference's tiles
        # (inside the image), std floored at the whole image's robust noise - as infer_job does per tile
        win = prm["window"]
        ih, iw = filled.shape
        wh, ww = min(win, ih), min(win, iw)
        med = np.empty((len(x), 1, 1, 1), np.float32)
        std = np.empty((len(x), 1, 1, 1), np.float32)
        pin = p * f_in
        for i, (py, px) in enumerate(pos):
            cy, cx = py * f_in + pin // 2, px * f_in + pin // 2
            y0 = int(np.clip(cy - wh // 2, 0, ih - wh))
            x0 = int(np.clip(cx - ww // 2, 0, iw - ww))
            med[i], std[i] = tile_stats(filled[y0 : y0 + wh, x0 : x0 + ww], prm["floor"])
    else:
        # whole-image statistics, the same numbers models.inference uses at inference
        med = np.full((len(x), 1, 1, 1), prm["offset"], np.float32)
        std = np.full((len(x), 1, 1, 1), prm["scale"], np.float32)
    # the input's units relative to the target's: HR pixels hold 1/s_model^2 of an input pixel's flux
    uf = float(ms * ms)
    valid_y = np.isfinite(y)
    yn = normalize(np.nan_to_num(y), med, std, unit_factor=uf)
    yn[~valid_y] = 0.0
    # flux maps are flux densities: normalise like the image but without the median offset
    lr_to_in = float((s // ms) ** 2) if ms == 1 else 1.0
    on_src = (np.stack(fl) > 0).reshape(len(fl), -1).mean(axis=1)
    return {
        "w": (1.0 + cfg.data.source_boost * on_src).astype(np.float64),
        "x": normalize(x, med, std),
        "y": yn,
        "fmap_in": (np.stack(fl)[:, None] / lr_to_in / std).astype(np.float32),
        "fmap_hr": np.stack(fh)[:, None].astype(np.float32) * uf / std,
        "med": med,
        "std": std,
    }


def _pool(parts: list[dict], weights: list[float], names: list[str], cap: int, rng: np.random.Generator) -> PatchPool:
    keys = ("x", "y", "fmap_in", "fmap_hr", "med", "std", "psf_id", "clean")
    cat = {k: np.concatenate([d[k] for d in parts]) for k in keys}
    w = np.concatenate([d["w"] * wt / max(d["w"].sum(), 1e-12) for d, wt in zip(parts, weights)])
    if len(w) > cap:
        keep = np.sort(rng.choice(len(w), size=cap, replace=False, p=w / w.sum()))
        cat = {k: v[keep] for k, v in cat.items()}
        w = np.ones(cap)
    return PatchPool(**cat, weight=w.astype(np.float64), names=names)


def build_train_data(config: TrainConfig, *, root: Optional[Path] = None) -> TrainData:
    """Images -> split -> patches -> normalised pools (deterministic for a given seed)."""
    pairs = build_image_pairs(config, root=root)
    rng = np.random.default_rng([config.run.seed, 99])
    src_weight = {}
    for si, src in enumerate(config.data.sources):
        src_weight[si] = src.weight
    parts = {"train": [], "val": []}
    weights = {"train": [], "val": []}
    names = {"train": [], "val": []}
    psfs: list[np.ndarray] = []
    for pair in pairs:
        d = _patches_of(pair, config, rng)
        if d is None:
            continue
        # the forward model of these patches, for the projected loss (SR networks on degraded data)
        pid = -1
        if pair.psf is not None and config.model.scale in (config.data.scale, 1) and config.data.scale > 1:
            pid = len(psfs)
            psfs.append(pair.psf)
        d["psf_id"] = np.full(len(d["x"]), pid, np.int64)
        d["clean"] = np.full(len(d["x"]), float(pair.params.get("noise_sigma", 1.0)) == 0.0, bool)
        parts[pair.split].append(d)
        weights[pair.split].append(float(len(d["x"])))
        names[pair.split].append(pair.name)
    for split in ("train", "val"):
        if not parts[split]:
            raise AstroSRError(
                f"{config.source_path}: no {split} patches of {config.data.patch} px pass the "
                f"{config.data.min_valid:.0%}-valid rule; use a smaller data.patch or larger images."
            )
    train = _pool(parts["train"], weights["train"], names["train"], config.data.max_patches, rng)
    val = _pool(parts["val"], weights["val"], names["val"], min(256, config.data.max_patches), rng)
    val_images = [p for p in pairs if p.split == "val"][: config.run.val_images]
    summary = {
        "train_images": sorted(set(re.sub(r"#r?\d+", "", n) for n in names["train"])),
        "val_images": sorted(set(re.sub(r"#r?\d+", "", n) for n in names["val"])),
        "n_train_patches": len(train),
        "n_val_patches": len(val),
        "scale": config.data.scale,
        "patch": config.data.patch,
    }
    return TrainData(train, val, val_images, names["train"], names["val"], summary, psfs)

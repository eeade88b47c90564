"""Classical coadds and input preparation (no torch): seeded synthetic stacks + real DECam files."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from astropy.io import fits

from napari_astrosr.core.coadd import (
    as_stack,
    compare_fluxes,
    estimate_psf,
    homogenize_psfs,
    ivar_coadd,
    load_frames,
    median_coadd,
    noise_from_weights,
    noise_map_check,
    outlier_mask,
    psf_from_fwhm,
    read_psfex,
    saturation_mask,
)
from napari_astrosr.core.psf import convolve, gaussian_psf, measure_fwhm
from napari_astrosr.exceptions import AstroSRError

from conftest import shared_file

TC3 = "stack_decam_legacypipe_tc3"
SFFT = "stack_decam_i_sfft"


def sim_stack(n=5, shape=(48, 48), fwhms=(2.5, 3.0, 3.5, 4.0, 4.5), nstars=10, noise=1.0, seed=1):
    """Seeded Gaussian stars at sub-pixel positions, one PSF per frame, Gaussian noise."""
    rng = np.random.default_rng(seed)
    h, w = shape
    truth = np.zeros(shape)
    xs, ys = rng.uniform(8, w - 9, nstars), rng.uniform(8, h - 9, nstars)
    fl = np.exp(rng.uniform(np.log(300), np.log(5000), nstars))
    for x, y, f in zip(xs, ys, fl):  # bilinear split keeps sub-pixel positions and exact flux
        x0, y0 = int(x), int(y)
        fx, fy = x - x0, y - y0
        truth[y0, x0] += f * (1 - fx) * (1 - fy)
        truth[y0, x0 + 1] += f * fx * (1 - fy)
        truth[y0 + 1, x0] += f * (1 - fx) * fy
        truth[y0 + 1, x0 + 1] += f * fx * fy
    psfs = [gaussian_psf(f / 2.3548, size=int(np.ceil(4 * f)) | 1) for f in fwhms[:n]]
    frames = np.stack([convolve(truth, p) + rng.normal(0, noise, shape) for p in psfs]).astype(np.float32)
    return frames, psfs, truth, np.full(n, noise, np.float32), np.column_stack([xs, ys]), fl


# ----------------------------------------------------------------- classical coadds


def test_ivar_coadd_flux_noise_and_masks():
    frames, psfs, truth, sig, xy, fl = sim_stack()
    sig = np.array([1.0, 1.0, 2.0, 2.0, 4.0], np.float32)
    rng = np.random.default_rng(3)
    frames = (
        frames + rng.normal(0, 1, frames.shape).astype(np.float32) * np.sqrt(np.maximum(sig**2 - 1, 0))[:, None, None]
    )
    masks = np.zeros(frames.shape, bool)
    frames[1, 20, 20] = 1e5  # a cosmic ray ...
    masks[1, 20, 20] = True  # ... that the mask removes
    res = ivar_coadd(frames, weights=1 / sig**2, masks=masks)
    assert res.method == "ivar" and res.data.shape == (48, 48)
    # total flux of the mean equals the (identical) per-frame total flux
    assert abs(np.nansum(res.data) - truth.sum()) < 0.01 * truth.sum()
    # uncertainty = 1/sqrt(sum w) away from the masked pixel
    expect = 1 / np.sqrt(np.sum(1 / sig**2))
    assert res.uncertainty[5, 5] == pytest.approx(expect, rel=1e-5)
    assert res.uncertainty[20, 20] > expect  # one frame fewer there
    clean = frames.copy()
    clean[1, 20, 20] = 0.0
    ref = ivar_coadd(clean, weights=1 / sig**2, masks=masks)
    assert res.data[20, 20] == pytest.approx(ref.data[20, 20], rel=1e-6)  # the masked cosmic ray left no trace
    # a pixel masked in every frame is NaN, not 0
    masks[:, 0, 0] = True
    assert np.isnan(ivar_coadd(frames, weights=1 / sig**2, masks=masks).data[0, 0])


def test_median_coadd_clips_unmasked_outlier():
    frames, psfs, truth, sig, xy, fl = sim_stack()
    frames[2, 30, 10] += 5000.0  # unmasked cosmic ray
    med = median_coadd(frames, sigma_clip=3.0)
    assert abs(med.data[30, 10]) < 5
    assert med.uncertainty.shape == (48, 48) and np.isfinite(med.uncertainty).all()


def test_outlier_mask_flags_cosmic_not_stars():
    frames, psfs, truth, sig, xy, fl = sim_stack()
    frames[0, 12, 40] += 2000.0
    sigma = np.ones_like(frames)
    m = outlier_mask(frames, sigma, np.zeros(frames.shape, bool), nsigma=5)
    assert m[0, 12, 40]
    # star cores of the sharpest frame are not flagged
    cores = [(int(round(y)), int(round(x))) for x, y in xy]
    assert not any(m[0, y, x] for y, x in cores)


def test_noise_map_check_finds_wrong_maps_despite_stars():
    # stars seen through different PSFs leave residuals between frames: the check must mask them
    frames, psfs, truth, sig, xy, fl = sim_stack(n=4, shape=(96, 96), fwhms=(2.5, 3.0, 3.5, 4.0), nstars=12, seed=4)
    mask = np.zeros(frames.shape, bool)
    sigma = np.ones_like(frames)
    r, n = noise_map_check(frames, sigma, mask, return_n=True)
    assert np.all(np.abs(r - 1) < 0.05) and np.all(n > 3000), (r, n)
    # frame 2's map says 1 where its noise is 1.6: that frame stands out
    noisy = frames.copy()
    noisy[2] += np.random.default_rng(0).normal(0, np.sqrt(1.6**2 - 1), frames.shape[1:]).astype(np.float32)
    r2 = noise_map_check(noisy, sigma, mask)
    assert r2[2] > 1.4 and np.all(np.abs(np.delete(r2, 2) - 1) < 0.15), r2
    # every map twice too large: every frame reads ~0.5; one frame: nothing to compare with
    assert np.all(np.abs(noise_map_check(frames, 2 * sigma, mask) - 0.5) < 0.03)
    assert np.isnan(noise_map_check(frames[:1], sigma[:1], mask[:1])).all()


def test_homogenized_ivar_has_worst_psf_and_keeps_flux():
    frames, psfs, truth, sig, xy, fl = sim_stack(noise=0.01)
    res = ivar_coadd(frames, weights=1 / sig**2, psfs=psfs, homogenize=True)
    f_ref = compare_fluxes(res.data, frames[-1], fwhm=4.5, snr_min=20)
    assert f_ref["n_sources"] >= 5
    assert f_ref["flux_ratio_median"] == pytest.approx(1.0, abs=0.01)
    matched, target = homogenize_psfs(frames, psfs)
    assert measure_fwhm(target) == pytest.approx(measure_fwhm(psfs[-1]), rel=1e-6)
    # the sharpest frame, matched to the worst PSF, now looks like the worst frame
    assert np.abs(matched[0] - frames[-1]).max() < 0.03 * frames[-1].max()


def test_compare_fluxes_identity_and_bias():
    frames, psfs, truth, sig, xy, fl = sim_stack()
    img = frames.mean(axis=0)
    same = compare_fluxes(img, img, fwhm=4.5)
    assert same["flux_ratio_median"] == pytest.approx(1.0, abs=1e-9)
    low = compare_fluxes(0.9 * img, img, fwhm=4.5)
    assert low["flux_ratio_median"] == pytest.approx(0.9, abs=1e-6)


# ----------------------------------------------------------------- validation


def test_bad_inputs_raise_clear_errors():
    frames, psfs, truth, sig, xy, fl = sim_stack()
    with pytest.raises(AstroSRError, match="frame 2: shape"):
        as_stack([frames[0], frames[1], frames[2][:40]], sigmas=sig[:3])
    with pytest.raises(AstroSRError, match="at least 2 frames"):
        as_stack(frames[:1], sigmas=sig[:1])
    big = gaussian_psf(10.0, size=61)
    with pytest.raises(AstroSRError, match="larger than the 48x48 frame"):
        as_stack(frames, sigmas=sig, psfs=[big] * 5)
    masks = np.zeros(frames.shape, bool)
    masks[3] = True
    with pytest.raises(AstroSRError, match="frame 3: every pixel is masked"):
        as_stack(frames, sigmas=sig, masks=masks)
    with pytest.raises(AstroSRError, match="even"):
        as_stack(frames, sigmas=sig, psfs=[np.ones((4, 4))] * 5)
    with pytest.raises(AstroSRError, match="2 PSFs given for 5 frames"):
        as_stack(frames, sigmas=sig, psfs=psfs[:2])


def test_noise_from_weights_masks_zero_weight():
    w = np.array([[4.0, 0.0], [1.0, -1.0]])
    s, bad = noise_from_weights(w)
    assert s[0, 0] == pytest.approx(0.5) and s[1, 0] == pytest.approx(1.0)
    assert bad.tolist() == [[False, True], [False, True]]
    assert np.isfinite(s).all()


def test_saturation_mask_from_header():
    img = np.zeros((10, 10))
    img[5, 5] = 50000
    hdr = fits.Header({"SATURATE": 40000.0})
    m = saturation_mask(img, hdr, grow=1)
    assert m[5, 5] and m[4, 5] and m.sum() == 5
    assert not saturation_mask(img, fits.Header()).any()


def test_estimate_psf_recovers_fwhm():
    rng = np.random.default_rng(7)
    truth = np.zeros((160, 160))
    for x, y in rng.uniform(15, 145, (30, 2)):
        truth[int(y), int(x)] += rng.uniform(2000, 8000)
    psf = gaussian_psf(3.2 / 2.3548, size=21)
    img = convolve(truth, psf) + rng.normal(0, 1.0, truth.shape) + 100.0
    est = estimate_psf(img.astype(np.float32), size=15)
    assert est.shape == (15, 15) and est.sum() == pytest.approx(1.0)
    assert measure_fwhm(est) == pytest.approx(measure_fwhm(psf), rel=0.1)


# ----------------------------------------------------------------- real files


def test_read_psfex_real_model_centred_unit_sum_fwhm():
    path = shared_file(f"{TC3}/psfex/c4d_150329_083505_ooi_g_ls9-N11-psfex.fits")
    psf = read_psfex(path, shape=(51, 41))
    assert psf.shape == (63, 63) and psf.sum() == pytest.approx(1.0) and psf.min() >= 0
    yy, xx = np.indices(psf.shape)
    assert abs((psf * xx).sum() - 31) < 0.3 and abs((psf * yy).sum() - 31) < 0.3
    # the community pipeline's seeing estimate for this exposure (image header FWHM = 4.41 px);
    # the table's psf_fwhm (5.19) is legacypipe's own, differently defined, figure
    img = str(path).replace("psfex/", "exposures/").replace("-psfex", "").replace("-N11", ".N11")
    assert measure_fwhm(psf) == pytest.approx(fits.getheader(img, 1)["FWHM"], rel=0.1)
    small = read_psfex(path, shape=(51, 41), size=25)
    assert small.shape == (25, 25) and small.sum() == pytest.approx(1.0)
    # the polynomial terms matter: evaluating far from the centre changes the model
    corner = read_psfex(path, x=4000.0, y=8000.0)
    assert np.abs(corner - psf).max() > 1e-5


def test_psf_from_fwhm_keyword_real_header():
    path = shared_file(f"{SFFT}/DEC-OBS04c.mini.fits")
    hdr = fits.getheader(path)
    psf = psf_from_fwhm(hdr, keyword="FWHM")
    assert measure_fwhm(psf) == pytest.approx(hdr["FWHM"], rel=0.05)
    with pytest.raises(AstroSRError, match="no SEEING keyword"):
        psf_from_fwhm(hdr, keyword="SEEING")


def _tc3(band: str):
    import glob

    d = shared_file(f"{TC3}/exposures")
    imgs = sorted(glob.glob(str(d / f"*_ooi_{band}_*.fits")))
    psfx = [
        str(shared_file(f"{TC3}/psfex")) + "/" + p.split("/")[-1].replace(".N", "-N").replace(".fits", "-psfex.fits")
        for p in imgs
    ]
    return imgs, [p.replace("_ooi_", "_oow_") for p in imgs], [p.replace("_ooi_", "_ood_") for p in imgs], psfx


def test_load_frames_tc3_g_band_weights_dq_psfex_reprojection():
    imgs, wts, dqs, psfx = _tc3("g")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        st = load_frames(imgs, weights=wts, dq=dqs, psfs=psfx, psf_size=25)
    assert st.data.shape == (3, 51, 41) and st.sigma.shape == st.data.shape
    # 1 of 3 frames (50x41, other CCD) was reprojected onto the first frame's grid
    assert len(st.notes) == 2 and all("reprojected" in n for n in st.notes)
    assert all(p.shape == (25, 25) for p in st.psfs)
    # sigma from the weight map where not reprojected: 1/sqrt(w)
    w0 = fits.getdata(wts[0], 1)
    assert st.sigma[0][~st.mask[0]] == pytest.approx((1 / np.sqrt(w0))[~st.mask[0]], rel=1e-5)
    # background subtracted: sky near 0
    assert abs(np.median(st.data[0][~st.mask[0]])) < 3 * np.median(st.sigma[0])
    res = ivar_coadd(st)
    assert np.isfinite(res.data).mean() > 0.9


def test_load_frames_refuses_mixed_bands_and_count_mismatch():
    g, wg, _, _ = _tc3("g")
    r, _, _, _ = _tc3("r")
    with pytest.raises(AstroSRError, match="different FILTER bands"):
        load_frames([g[0], r[0]])
    with pytest.raises(AstroSRError, match="2 files given for 3 frames"):
        load_frames(g, weights=wg[:2])

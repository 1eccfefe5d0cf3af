"""Gaussian blur with one kernel per clip (the first step of the AnimeSR degradation model)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = ["apply_kernel", "apply_kernels", "gaussian_kernel", "random_gaussian_kernel"]


def gaussian_kernel(
    *, size: int, sigma_x: float, sigma_y: float, theta: float = 0.0, dtype: torch.dtype = torch.float32
) -> Tensor:
    """A (size, size) bivariate Gaussian kernel that sums to 1.

    ``sigma_x``/``sigma_y`` are the standard deviations along the kernel's own axes, which are rotated by
    ``theta`` radians (counter-clockwise, x to the right and y downwards in image coordinates).
    """
    if size < 1 or size % 2 == 0:
        raise ValueError(f"gaussian_kernel: size must be a positive odd integer, got {size!r}")
    if not (sigma_x > 0 and sigma_y > 0):
        raise ValueError(f"gaussian_kernel: sigmas must be > 0, got sigma_x={sigma_x!r}, sigma_y={sigma_y!r}")
    c, s = math.cos(theta), math.sin(theta)
    rot = np.array([[c, -s], [s, c]])
    cov = rot @ np.diag([sigma_x**2, sigma_y**2]) @ rot.T
    inv = np.linalg.inv(cov)
    r = np.arange(size, dtype=np.float64) - size // 2
    yy, xx = np.meshgrid(r, r, indexing="ij")
    q = inv[0, 0] * xx * xx + 2 * inv[0, 1] * xx * yy + inv[1, 1] * yy * yy
    k = np.exp(-0.5 * q)
    return torch.from_numpy(k / k.sum()).to(dtype)


def random_gaussian_kernel(
    *,
    rng: np.random.Generator,
    size: int,
    iso_prob: float,
    iso_sigma: tuple[float, float],
    aniso_sigma_x: tuple[float, float],
    aniso_sigma_y: tuple[float, float],
    rotation: tuple[float, float],
) -> tuple[Tensor, dict[str, Any]]:
    """Draw an isotropic (with ``iso_prob``) or anisotropic Gaussian kernel; return it and what was drawn."""
    if rng.random() < iso_prob:
        sigma = float(rng.uniform(*iso_sigma))
        params: dict[str, Any] = {"kind": "iso", "sigma": sigma}
        return gaussian_kernel(size=size, sigma_x=sigma, sigma_y=sigma), params
    sx = float(rng.uniform(*aniso_sigma_x))
    sy = float(rng.uniform(*aniso_sigma_y))
    theta = float(rng.uniform(*rotation))
    params = {"kind": "aniso", "sigma_x": sx, "sigma_y": sy, "theta": theta}
    return gaussian_kernel(size=size, sigma_x=sx, sigma_y=sy, theta=theta), params


def apply_kernel(clip: Tensor, kernel: Tensor) -> Tensor:
    """Filter every channel of every frame of ``clip`` (T,C,H,W) with one 2-D ``kernel``.

    Borders are mirrored without repeating the edge pixel (OpenCV's default, torch's ``reflect``), falling back to
    edge replication for frames smaller than the kernel radius. See :func:`apply_kernels` for the method.
    """
    if clip.ndim != 4:
        raise ValueError(f"apply_kernel: clip must be (T,C,H,W), got shape {tuple(clip.shape)}")
    if kernel.ndim != 2:
        raise ValueError(f"apply_kernel: kernel must be 2-D, got shape {tuple(kernel.shape)}")
    return apply_kernels(clip[None], kernel[None])[0]


def apply_kernels(clips: Tensor, kernels: Tensor) -> Tensor:
    """Filter a batch of clips (B,T,C,H,W), clip i with its own kernel ``kernels[i]`` (B,k,k), on their device.

    The filtering is done in the Fourier domain: a 21x21 kernel costs the same as a 3x3 one, and one batched
    transform serves every clip of a training batch. Gaussian kernels are point-symmetric, so correlation and
    convolution agree.
    """
    if clips.ndim != 5:
        raise ValueError(f"apply_kernels: clips must be (B,T,C,H,W), got shape {tuple(clips.shape)}")
    if kernels.ndim != 3 or kernels.shape[0] != clips.shape[0] or kernels.shape[1] != kernels.shape[2] \
            or kernels.shape[1] % 2 == 0:
        raise ValueError(f"apply_kernels: kernels must be (B,k,k) with B={clips.shape[0]} and odd k, "
                         f"got shape {tuple(kernels.shape)}")
    ks = kernels.shape[-1]
    pad = ks // 2
    kernels = kernels.to(clips)
    if pad == 0:
        return clips * kernels.view(-1, 1, 1, 1, 1)
    b, t, c, h, w = clips.shape
    mode = "reflect" if pad < h and pad < w else "replicate"
    x = F.pad(clips.reshape(b, t * c, h, w), (pad, pad, pad, pad), mode=mode).view(b, t, c, h + 2 * pad, w + 2 * pad)
    hp, wp = x.shape[-2:]
    # Any transform size >= the padded frame works; sizes with only small prime factors are several times faster
    # (a 256x256 frame pads to 276 = 4*3*23; 280 = 8*5*7 is ~3x faster).
    size = (_fast_size(hp), _fast_size(wp))
    spec = torch.fft.rfft2(x, s=size) * torch.fft.rfft2(kernels, s=size).view(b, 1, 1, size[0], -1)
    y = torch.fft.irfft2(spec, s=size)
    # Circular convolution of the padded frame: rows/cols ks-1 .. hp-1 never wrap around.
    return y[..., ks - 1 : hp, ks - 1 : wp].contiguous()


def _fast_size(n: int) -> int:
    """The smallest m >= n whose prime factors are all <= 7 (FFT libraries are fastest on those)."""
    m = n
    while True:
        r = m
        for p in (2, 3, 5, 7):
            while r % p == 0:
                r //= p
        if r == 1:
            return m
        m += 1

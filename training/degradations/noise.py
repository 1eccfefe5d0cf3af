"""Additive Gaussian noise, drawn per frame, gray (one field for all channels) or colour."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["add_gaussian_noise", "random_gaussian_noise"]


def add_gaussian_noise(clip: Tensor, *, sigmas: list[float], gray: list[bool], seed: int) -> Tensor:
    """Add N(0, sigma_t^2) noise to frame t of ``clip`` (T,C,H,W, values in [0,1] units) and clamp to [0,1].

    The noise fields come from a ``torch.Generator`` seeded with ``seed`` on the clip's device, so the same seed
    gives the same noise on the same device (CPU and CUDA generators differ from each other).
    """
    t = clip.shape[0]
    if len(sigmas) != t or len(gray) != t:
        raise ValueError(f"add_gaussian_noise: need one sigma and one gray flag per frame ({t}), "
                         f"got {len(sigmas)} and {len(gray)}")
    if any(s < 0 for s in sigmas):
        raise ValueError(f"add_gaussian_noise: sigmas must be >= 0, got {sigmas!r}")
    gen = torch.Generator(device=clip.device)
    gen.manual_seed(int(seed))
    n, h, w = clip.shape[1:]
    noise = torch.randn((t, n, h, w), generator=gen, device=clip.device, dtype=clip.dtype)
    gray_mask = torch.tensor(gray, device=clip.device).view(t, 1, 1, 1)
    # A gray frame uses its first channel's field on every channel.
    noise = torch.where(gray_mask, noise[:, :1].expand_as(noise), noise)
    scale = torch.tensor(sigmas, device=clip.device, dtype=clip.dtype).view(t, 1, 1, 1)
    return (clip + noise * scale).clamp_(0.0, 1.0)


def random_gaussian_noise(
    clip: Tensor, *, rng: np.random.Generator, sigma_range: tuple[float, float], gray_prob: float, per_frame: bool
) -> tuple[Tensor, dict[str, Any]]:
    """Draw sigma (given in 0-255 units, as in the paper) and gray/colour per frame or per clip, then add noise."""
    t = clip.shape[0]
    draws = t if per_frame else 1
    sig = [float(rng.uniform(*sigma_range)) for _ in range(draws)]
    gray = [bool(rng.random() < gray_prob) for _ in range(draws)]
    seed = int(rng.integers(0, 2**63 - 1))
    if not per_frame:
        sig, gray = sig * t, gray * t
    out = add_gaussian_noise(clip, sigmas=[s / 255.0 for s in sig], gray=gray, seed=seed)
    return out, {"sigma_255": [round(s, 4) for s in sig], "gray": gray}

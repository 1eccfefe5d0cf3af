"""Applying learned basic operators (LBOs) to clips, and a pool to draw them from."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from training.lbo_arch import LBONet, load_lbo

__all__ = ["apply_lbo", "draw_lbo", "load_lbo_pool"]


def load_lbo_pool(paths: Sequence[str | os.PathLike[str]], *, device: str | torch.device = "cpu") -> list[LBONet]:
    """Load every checkpoint in ``paths`` (see :func:`training.lbo_arch.load_lbo`) onto ``device``, frozen."""
    if not paths:
        raise ValueError("load_lbo_pool: paths is empty")
    pool = []
    for p in paths:
        net = load_lbo(p).to(device)
        net.requires_grad_(False)
        pool.append(net)
    return pool


def draw_lbo(pool: Sequence[nn.Module], *, rng: np.random.Generator) -> tuple[int, nn.Module]:
    """Pick one operator uniformly. Drawn per clip (the published code fixed one per data-loader worker)."""
    if not pool:
        raise ValueError("draw_lbo: pool is empty")
    i = int(rng.integers(len(pool)))
    return i, pool[i]


@torch.no_grad()
def apply_lbo(clip: Tensor, net: nn.Module, *, chunk: int = 16) -> Tensor:
    """Run ``net`` on the frames of ``clip`` (T,3,H,W), ``chunk`` frames at a time, on the net's device.

    The result comes back on the clip's device and dtype. No clamp: the pipeline clamps once before quantising.
    """
    if clip.ndim != 4 or clip.shape[1] != 3:
        raise ValueError(f"apply_lbo: clip must be (T,3,H,W), got {tuple(clip.shape)}")
    p = next(net.parameters())
    outs = [net(clip[i : i + chunk].to(p)) for i in range(0, clip.shape[0], chunk)]
    return torch.cat(outs).to(clip)

"""The learned basic operator (LBO): a tiny CNN that maps a 2x pseudo-HR frame to an LR frame.

AnimeSR learns a few of these from real anime (pseudo-HR made by the step-1 model) and then uses them in place of a
hand-made x0.5 resize, so the synthetic degradations pick up the blur/ringing of real production pipelines.
The layer names (``main.0/2/4``) match the published checkpoints so they load unchanged.
"""

from __future__ import annotations

import math
import os

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from vsanimesr.loader import WeightsError, load_state_dict

__all__ = ["LBONet", "load_lbo"]


class LBONet(nn.Module):
    """Pixel-unshuffle by ``downscale`` -> conv3x3 -> LReLU(0.2) -> conv3x3 -> LReLU(0.2) -> conv3x3 to RGB.

    No skip connection and no clamp: the network owns the whole mapping, which is what lets it learn
    degradations a fixed kernel cannot express. Input (N,3,H,W) with H, W divisible by ``downscale``;
    output (N,3,H/downscale,W/downscale).
    """

    def __init__(self, *, num_feat: int = 64, downscale: int = 2) -> None:
        super().__init__()
        if num_feat < 1:
            raise ValueError(f"LBONet: num_feat must be >= 1, got {num_feat!r}")
        if downscale < 1:
            raise ValueError(f"LBONet: downscale must be >= 1, got {downscale!r}")
        self.num_feat = num_feat
        self.downscale = downscale
        in_ch = 3 * downscale * downscale
        self.main = nn.Sequential(
            nn.Conv2d(in_ch, num_feat, 3, 1, 1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(num_feat, num_feat, 3, 1, 1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(num_feat, 3, 3, 1, 1),
        )
        for m in self.main:
            if isinstance(m, nn.Conv2d):  # the published init: kaiming-normal, zero bias
                nn.init.kaiming_normal_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"LBONet.forward: expected (N,3,H,W), got {tuple(x.shape)}")
        d = self.downscale
        if x.shape[-2] % d or x.shape[-1] % d:
            raise ValueError(f"LBONet.forward: H and W must be divisible by {d}, got {tuple(x.shape[-2:])}")
        return self.main(F.pixel_unshuffle(x, d))


def load_lbo(path: str | os.PathLike[str]) -> LBONet:
    """Build an :class:`LBONet` from a checkpoint (bare state dict, or ``params``/``params_ema`` wrapper).

    ``num_feat`` and ``downscale`` are read from the tensor shapes. Returns the net in eval mode on the CPU.

    Raises:
        WeightsError: the file is unreadable or is not an LBO checkpoint.
    """
    state = load_state_dict(path)
    expected = {f"main.{i}.{p}" for i in (0, 2, 4) for p in ("weight", "bias")}
    if set(state) != expected:
        missing = sorted(expected - set(state))
        extra = sorted(set(state) - expected)
        raise WeightsError(
            f"load_lbo: {str(path)!r} is not an LBO checkpoint (missing keys {missing[:6]}, unexpected {extra[:6]})"
        )
    w0 = state["main.0.weight"]
    num_feat, in_ch = int(w0.shape[0]), int(w0.shape[1])
    downscale = math.isqrt(in_ch // 3)
    if downscale * downscale * 3 != in_ch:
        raise WeightsError(f"load_lbo: {str(path)!r}: first conv has {in_ch} input channels, not 3*d*d")
    net = LBONet(num_feat=num_feat, downscale=downscale)
    try:
        net.load_state_dict({k: v.to(torch.float32) for k, v in state.items()}, strict=True)
    except RuntimeError as e:
        raise WeightsError(f"load_lbo: {str(path)!r}: {e}") from e
    return net.eval()

"""The AnimeSR network (Wu et al., NeurIPS 2022): a unidirectional recurrent, sliding-window x4 video SR model.

Parameter names follow the published state dicts (``recurrent_cell.*``) so that ``AnimeSR_v1`` and ``AnimeSR_v2``
load strictly. The module is pure: no I/O, no device or dtype decisions, no padding. The caller (the engine) feeds
frames whose height and width are multiples of 4.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["AnimeSRNet", "RecurrentCell", "ResidualBlock"]


def _up(x: Tensor, factor: int) -> Tensor:
    return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)


class ResidualBlock(nn.Module):
    """conv3x3 -> ReLU -> conv3x3, plus identity.

    Initialised as the published code does (kaiming-normal weights scaled by 0.1, zero biases): each block starts
    close to the identity, so a deep stack trains stably from scratch. Loading weights replaces all of it.
    """

    def __init__(self, *, num_feat: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.reset_parameters()

    def reset_parameters(self, *, scale: float = 0.1) -> None:
        with torch.no_grad():
            for conv in (self.conv1, self.conv2):
                nn.init.kaiming_normal_(conv.weight)  # fan_in, gain sqrt(2)
                conv.weight.mul_(scale)
                nn.init.zeros_(conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


def _head(in_ch: int, out_ch: int, stride: int) -> nn.Sequential:
    # Index 0 is the conv and index 1 the activation, matching the ``conv_s*_first.0`` keys.
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, stride, 1), nn.LeakyReLU(0.1, inplace=True))


class RecurrentCell(nn.Module):
    """Multi-scale (x1, x1/2, x1/4) residual body with right-aligned block schedules.

    The x1 branch runs ``num_blocks[0]`` blocks; the coarser branches start later so that all branches finish on
    the same step, and finer branches add the upsampled coarser features before their last blocks.
    """

    def __init__(self, *, in_ch: int, num_feat: int, out_ch: int, num_blocks: tuple[int, int, int]) -> None:
        super().__init__()
        n1, n2, n4 = num_blocks
        if not n1 >= n2 >= n4 >= 1:
            raise ValueError(f"RecurrentCell: num_blocks must be non-increasing and >= 1, got {num_blocks!r}")
        self.num_blocks = (n1, n2, n4)
        self.conv_s1_first = _head(in_ch, num_feat, 1)
        self.conv_s2_first = _head(num_feat, num_feat, 2)
        self.conv_s4_first = _head(num_feat, num_feat, 2)
        self.body_s1_first = nn.ModuleList(ResidualBlock(num_feat=num_feat) for _ in range(n1))
        self.body_s2_first = nn.ModuleList(ResidualBlock(num_feat=num_feat) for _ in range(n2))
        self.body_s4_first = nn.ModuleList(ResidualBlock(num_feat=num_feat) for _ in range(n4))
        self.fusion = nn.Sequential(
            nn.Conv2d(3 * num_feat, out_ch * 2, 3, 1, 1),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(out_ch * 2, out_ch, 3, 1, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        n1, n2, n4 = self.num_blocks
        s1 = self.conv_s1_first(x)
        s2 = self.conv_s2_first(s1)
        s4 = self.conv_s4_first(s2)
        for i in range(n1):
            j2 = i - (n1 - n2)  # index of the x1/2 block at this step (negative: not started)
            j4 = i - (n1 - n4)
            # The x1 branch sees the coarser branches as they were after the previous step.
            t1 = s1
            if j2 >= 1:
                t1 = t1 + _up(s2, 2)
            if j4 >= 1:
                t1 = t1 + _up(s4, 4)
            new_s1 = self.body_s1_first[i](t1)
            if j2 >= 0:
                t2 = s2 + _up(s4, 2) if j4 >= 1 else s2
                new_s2 = self.body_s2_first[j2](t2)
            else:
                new_s2 = s2
            if j4 >= 0:
                s4 = self.body_s4_first[j4](s4)
            s1, s2 = new_s1, new_s2
        return self.fusion(torch.cat([s1, _up(s2, 2), _up(s4, 4)], dim=1))


class AnimeSRNet(nn.Module):
    """One recurrent step of AnimeSR.

    ``forward(frames, prev_out, state)`` takes ``frames`` = (B, 9, h, w): the previous, current and next RGB frames
    in [0, 1] concatenated on channels; ``prev_out`` = (B, 3, s*h, s*w), the previous raw output (zeros at a chain
    start); ``state`` = (B, num_feat, h, w), the hidden state (zeros at a chain start). It returns the new output and
    state. h and w must be multiples of 4 (two stride-2 levels inside).
    """

    def __init__(
        self,
        *,
        num_feat: int = 64,
        num_blocks: tuple[int, int, int] = (5, 3, 2),
        scale: int = 4,
    ) -> None:
        super().__init__()
        self.num_feat = num_feat
        self.scale = scale
        out_rgb = 3 * scale * scale
        self.recurrent_cell = RecurrentCell(
            in_ch=9 + out_rgb + num_feat,
            num_feat=num_feat,
            out_ch=out_rgb + num_feat,
            num_blocks=tuple(num_blocks),  # type: ignore[arg-type]
        )

    def forward(self, frames: Tensor, prev_out: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        s = self.scale
        x = torch.cat([frames, F.pixel_unshuffle(prev_out, s), state], dim=1)
        y = self.recurrent_cell(x)
        n_rgb = 3 * s * s
        out = F.pixel_shuffle(y[:, :n_rgb], s) + _up(frames[:, 3:6], s)
        new_state = F.leaky_relu(y[:, n_rgb:], 0.1)
        return out, new_state

    def init_state(self, frames: Tensor) -> tuple[Tensor, Tensor]:
        """Zero previous output and hidden state matching ``frames`` (B, 9, h, w) in device and dtype."""
        b, _, h, w = frames.shape
        s = self.scale
        out = frames.new_zeros(b, 3, h * s, w * s)
        state = frames.new_zeros(b, self.num_feat, h, w)
        return out, state

    def forward_sequence(self, clip: Tensor) -> Tensor:
        """Run a whole clip (B, T, 3, h, w) from a zero state, as in training; returns (B, T, 3, s*h, s*w).

        Edge frames use themselves as their missing neighbour.
        """
        b, t, c, h, w = clip.shape
        if t < 1:
            raise ValueError(f"AnimeSRNet.forward_sequence: clip needs at least one frame, got {tuple(clip.shape)}")
        outs = []
        prev_out, state = self.init_state(clip.new_zeros(b, 9, h, w))
        for i in range(t):
            window = torch.cat([clip[:, max(i - 1, 0)], clip[:, i], clip[:, min(i + 1, t - 1)]], dim=1)
            prev_out, state = self(window, prev_out, state)
            outs.append(prev_out)
        return torch.stack(outs, dim=1)

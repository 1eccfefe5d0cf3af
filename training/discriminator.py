"""Multi-scale spectral-norm PatchGAN discriminator used by AnimeSR's GAN stages.

Each scale is a plain PatchGAN (no normalisation layers; spectral norm keeps D Lipschitz instead, which is what lets
a least-squares GAN train stably without batch statistics). Coarser scales see the input bilinearly downscaled by
2 and 4, so D judges both fine line art and larger structures.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

__all__ = ["MultiScaleDiscriminator", "PatchDiscriminator"]


class PatchDiscriminator(nn.Module):
    """conv4x4 s2 3->f, s2 f->2f, s2 2f->4f, s1 4f->8f, s1 8f->1; LeakyReLU(0.2); spectral norm; padding 1.

    Output: (N, 1, H/8 - 2, W/8 - 2) realness scores, one per overlapping patch.
    """

    def __init__(self, *, in_ch: int = 3, num_feat: int = 64) -> None:
        super().__init__()
        f = num_feat
        chans = [(in_ch, f, 2), (f, 2 * f, 2), (2 * f, 4 * f, 2), (4 * f, 8 * f, 1), (8 * f, 1, 1)]
        layers: list[nn.Module] = []
        for i, (a, b, s) in enumerate(chans):
            layers.append(spectral_norm(nn.Conv2d(a, b, 4, s, 1)))
            if i < len(chans) - 1:
                layers.append(nn.LeakyReLU(0.2, inplace=True))
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class MultiScaleDiscriminator(nn.Module):
    """``num_scales`` PatchGANs at full, 1/2, 1/4 ... input size; returns one score map per scale."""

    def __init__(self, *, num_scales: int = 3, num_feat: int = 64, in_ch: int = 3) -> None:
        super().__init__()
        if num_scales < 1:
            raise ValueError(f"MultiScaleDiscriminator: num_scales must be >= 1, got {num_scales!r}")
        self.num_scales = num_scales
        self.scales = nn.ModuleList(PatchDiscriminator(in_ch=in_ch, num_feat=num_feat) for _ in range(num_scales))

    @property
    def min_size(self) -> int:
        """Smallest input side that leaves at least one patch at the coarsest scale."""
        return 24 * 2 ** (self.num_scales - 1)

    def forward(self, x: Tensor) -> list[Tensor]:
        """``x``: (N, 3, H, W) frames (a clip batch is flattened to N = B*T by the caller)."""
        h, w = x.shape[-2:]
        if min(h, w) < self.min_size:
            raise ValueError(
                f"MultiScaleDiscriminator.forward: input {h}x{w} is too small for {self.num_scales} scales "
                f"(needs >= {self.min_size}); use larger crops or fewer disc.num_scales"
            )
        outs = []
        for i, d in enumerate(self.scales):
            xi = x if i == 0 else F.interpolate(x, size=(h >> i, w >> i), mode="bilinear", align_corners=True)
            outs.append(d(xi))
        return outs

"""Downscaling with the hand-made basic operators of AnimeSR (area, bilinear, bicubic)."""

from __future__ import annotations

from torch import Tensor
from torch.nn import functional as F

__all__ = ["RESIZE_MODES", "resize"]

RESIZE_MODES = ("area", "bilinear", "bicubic")


def resize(clip: Tensor, *, factor: float, mode: str) -> Tensor:
    """Resize every frame of ``clip`` (T,C,H,W) by ``factor`` (0.5 halves each side).

    No antialiasing and half-pixel centres (``align_corners=False``): this is what OpenCV's INTER_AREA / LINEAR /
    CUBIC do when downscaling, so aliasing is part of the degradation, as in the published pipeline. Bicubic may
    overshoot [0,1]; the pipeline clamps before quantising.
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize: mode must be one of {RESIZE_MODES}, got {mode!r}")
    if not factor > 0:
        raise ValueError(f"resize: factor must be > 0, got {factor!r}")
    h, w = clip.shape[-2:]
    size = (round(h * factor), round(w * factor))
    if abs(size[0] - h * factor) > 1e-6 or abs(size[1] - w * factor) > 1e-6:
        raise ValueError(f"resize: frame size {h}x{w} times factor {factor} is not whole")
    if mode == "area":
        return F.interpolate(clip, size=size, mode="area")
    return F.interpolate(clip, size=size, mode=mode, align_corners=False)

"""vsanimesr: AnimeSR real-world anime video super-resolution for PyTorch and VapourSynth."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vsanimesr.archs.animesr import AnimeSRNet
from vsanimesr.loader import ModelInfo, WeightsError, load_model, load_state_dict

if TYPE_CHECKING:
    from vsanimesr.engine import AnimeSR

__all__ = ["AnimeSR", "AnimeSRNet", "ModelInfo", "WeightsError", "load_model", "load_state_dict", "upscale"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # Lazy: importing the package must not import vapoursynth (training and the CLI do not need it).
    if name == "AnimeSR":
        from vsanimesr.engine import AnimeSR

        return AnimeSR
    if name == "upscale":
        from vsanimesr.vs import upscale

        return upscale
    raise AttributeError(f"module 'vsanimesr' has no attribute {name!r}")

"""vsanimesr: AnimeSR real-world anime video super-resolution for PyTorch and VapourSynth."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

from vsanimesr.archs.animesr import AnimeSRNet
from vsanimesr.loader import ModelInfo, WeightsError, load_model, load_state_dict

if TYPE_CHECKING:
    from vsanimesr.engine import AnimeSR

__all__ = ["AnimeSR", "AnimeSRNet", "ModelInfo", "WeightsError", "load_model", "load_state_dict", "to_rgb",
           "upscale", "upscale_rgb"]
__version__ = "0.1.0"

# VapourSynth routes Python logging into its own log at every level, so under vspipe a library logger at NOTSET
# would print each DEBUG line (one per frame). The package logs INFO and above unless asked for more: set
# VSANIMESR_LOG=DEBUG, or logging.getLogger("vsanimesr").setLevel(logging.DEBUG).
_log = logging.getLogger("vsanimesr")
if _log.level == logging.NOTSET:
    _log.setLevel(os.environ.get("VSANIMESR_LOG", "INFO").upper())


def __getattr__(name: str) -> Any:
    # Lazy: importing the package must not import vapoursynth (training and the CLI do not need it).
    if name == "AnimeSR":
        from vsanimesr.engine import AnimeSR

        return AnimeSR
    if name in ("to_rgb", "upscale", "upscale_rgb"):
        from vsanimesr import vs

        return getattr(vs, name)
    raise AttributeError(f"module 'vsanimesr' has no attribute {name!r}")

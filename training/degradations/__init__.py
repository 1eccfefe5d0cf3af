"""Synthetic degradations for AnimeSR training: pure functions on torch tensors plus a YAML-driven pipeline."""

from __future__ import annotations

from training.configio import ConfigError
from training.degradations.blur import apply_kernel, apply_kernels, gaussian_kernel, random_gaussian_kernel
from training.degradations.codec import codec_roundtrip, quantize
from training.degradations.lbo import apply_lbo, draw_lbo, load_lbo_pool
from training.degradations.noise import add_gaussian_noise, random_gaussian_noise
from training.degradations.pipeline import (
    DegradationConfig,
    Draw,
    apply_tensor_steps,
    degrade_clip,
    draw_degradation,
    run_codec,
    to_uint8,
)
from training.degradations.resize import resize

__all__ = [
    "ConfigError",
    "DegradationConfig",
    "Draw",
    "add_gaussian_noise",
    "apply_kernel",
    "apply_kernels",
    "apply_lbo",
    "apply_tensor_steps",
    "codec_roundtrip",
    "degrade_clip",
    "draw_degradation",
    "draw_lbo",
    "gaussian_kernel",
    "load_lbo_pool",
    "quantize",
    "random_gaussian_kernel",
    "random_gaussian_noise",
    "resize",
    "run_codec",
    "to_uint8",
]

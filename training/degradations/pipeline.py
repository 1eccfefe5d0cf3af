"""The AnimeSR degradation pipeline, composed from a YAML config.

Published model (Eq. 2 of the paper): ``x = FFmpeg(Down(Down(Noise(Blur(y)))))``, where each x0.5 ``Down`` may be
replaced by a learned basic operator (LBO). ``order`` lists the steps; ``resize`` carries the downscaling and the
LBO replacement. Everything random is drawn from one ``numpy.random.Generator``, so a clip is a pure function of
(HR clip, config, generator state), and every draw is returned for logging.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import Tensor, nn

from training.degradations.blur import apply_kernel, random_gaussian_kernel
from training.degradations.codec import CODECS, X264_PROFILES, codec_roundtrip, quantize
from training.degradations.lbo import apply_lbo, draw_lbo
from training.degradations.noise import random_gaussian_noise
from training.degradations.resize import RESIZE_MODES, resize

__all__ = [
    "BlurConfig",
    "CodecConfig",
    "ConfigError",
    "DegradationConfig",
    "NoiseConfig",
    "ResizeConfig",
    "degrade_clip",
]

log = logging.getLogger("training.degradations")

STEPS = ("blur", "noise", "resize", "codec")

Choices = tuple[tuple[str, float], ...]
"""Weighted choices, written in YAML as a mapping ``{name: weight}``; weights are normalised."""


class ConfigError(ValueError):
    """A degradation config that cannot be used; the message names the file and the key."""


def _check_prob(owner: str, name: str, p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise ConfigError(f"{owner}.{name} must be in [0, 1], got {p!r}")


def _check_range(owner: str, name: str, r: tuple[float, float], *, lo: float = -math.inf) -> None:
    if len(r) != 2 or not lo <= r[0] <= r[1]:
        raise ConfigError(f"{owner}.{name} must be [low, high] with {lo} <= low <= high, got {list(r)!r}")


def _check_choices(owner: str, name: str, c: Choices, allowed: Sequence[str]) -> None:
    if not c:
        raise ConfigError(f"{owner}.{name} must name at least one of {list(allowed)}")
    for k, w in c:
        if k not in allowed:
            raise ConfigError(f"{owner}.{name}: unknown choice {k!r} (allowed: {list(allowed)})")
        if w < 0:
            raise ConfigError(f"{owner}.{name}: weight of {k!r} must be >= 0, got {w!r}")
    if sum(w for _, w in c) <= 0:
        raise ConfigError(f"{owner}.{name}: weights must not all be 0")


def _choose(rng: np.random.Generator, choices: Choices) -> str:
    names = [k for k, _ in choices]
    w = np.array([w for _, w in choices], dtype=np.float64)
    return names[int(rng.choice(len(names), p=w / w.sum()))]


@dataclass(frozen=True)
class BlurConfig:
    """One Gaussian kernel per clip, isotropic with ``iso_prob`` else anisotropic and rotated."""

    prob: float = 1.0
    kernel_size: int = 21
    iso_prob: float = 0.7
    iso_sigma: tuple[float, float] = (0.2, 4.0)
    aniso_sigma_x: tuple[float, float] = (0.2, 4.0)
    aniso_sigma_y: tuple[float, float] = (0.8, 3.0)
    rotation: tuple[float, float] = (-math.pi, math.pi)

    def __post_init__(self) -> None:
        _check_prob("blur", "prob", self.prob)
        _check_prob("blur", "iso_prob", self.iso_prob)
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ConfigError(f"blur.kernel_size must be a positive odd integer, got {self.kernel_size!r}")
        for name in ("iso_sigma", "aniso_sigma_x", "aniso_sigma_y"):
            _check_range("blur", name, getattr(self, name), lo=1e-6)
        _check_range("blur", "rotation", self.rotation)


@dataclass(frozen=True)
class NoiseConfig:
    """Gaussian noise; sigma in 0-255 units; gray (same field on R, G, B) with ``gray_prob``."""

    prob: float = 1.0
    sigma: tuple[float, float] = (0.0, 10.0)
    gray_prob: float = 0.5
    per_frame: bool = True
    """Draw sigma and gray/colour for each frame (published) rather than once per clip."""

    def __post_init__(self) -> None:
        _check_prob("noise", "prob", self.prob)
        _check_prob("noise", "gray_prob", self.gray_prob)
        _check_range("noise", "sigma", self.sigma, lo=0.0)


@dataclass(frozen=True)
class ResizeConfig:
    """Downscaling steps; their product must equal 1/scale. x0.5 steps may be replaced by an LBO."""

    factors: tuple[float, ...] = (0.5, 0.5)
    modes: Choices = (("area", 1 / 3), ("bilinear", 1 / 3), ("bicubic", 1 / 3))
    per_step_mode: bool = False
    """Draw the interpolation for each step (published LBO variant) rather than once per clip (published step 1)."""
    lbo_prob: float = 0.0
    """Probability that each x0.5 step uses a learned basic operator from the pool instead of interpolation."""

    def __post_init__(self) -> None:
        if not self.factors or any(not 0 < f <= 1 for f in self.factors):
            raise ConfigError(f"resize.factors must be a non-empty list of values in (0, 1], got {list(self.factors)}")
        _check_choices("resize", "modes", self.modes, RESIZE_MODES)
        _check_prob("resize", "lbo_prob", self.lbo_prob)


@dataclass(frozen=True)
class CodecConfig:
    """8-bit quantisation followed by a lossy codec round trip of the whole clip."""

    prob: float = 1.0
    codecs: Choices = (("libx264", 1.0),)
    crf: tuple[float, float] = (18.0, 35.0)
    """CRF range for libx264 and libx265, drawn as a float."""
    x264_profiles: Choices = (("baseline", 0.1), ("main", 0.2), ("high", 0.7))
    mpeg2_qscale: tuple[int, int] = (2, 15)
    preset: str = "medium"
    fps: int = 25
    threads: int = 1
    quantize: str = "round"
    """``round`` (correct) or ``truncate`` (the published code's ``astype(uint8)``)."""
    swap_rb: bool = False
    """Reproduce the published BGR-as-RGB encoder input; off by default."""

    def __post_init__(self) -> None:
        _check_prob("codec", "prob", self.prob)
        _check_choices("codec", "codecs", self.codecs, tuple(CODECS))
        _check_choices("codec", "x264_profiles", self.x264_profiles, X264_PROFILES)
        _check_range("codec", "crf", self.crf, lo=0.0)
        if self.crf[1] > 51:
            raise ConfigError(f"codec.crf must be within [0, 51], got {list(self.crf)}")
        _check_range("codec", "mpeg2_qscale", self.mpeg2_qscale, lo=1)
        if self.mpeg2_qscale[1] > 31:
            raise ConfigError(f"codec.mpeg2_qscale must be within [1, 31], got {list(self.mpeg2_qscale)}")
        if self.quantize not in ("round", "truncate"):
            raise ConfigError(f"codec.quantize must be 'round' or 'truncate', got {self.quantize!r}")
        if self.fps < 1 or self.threads < 1:
            raise ConfigError(f"codec.fps and codec.threads must be >= 1, got {self.fps!r}, {self.threads!r}")


@dataclass(frozen=True)
class DegradationConfig:
    """The whole pipeline. Load with :meth:`from_yaml` or :meth:`from_dict`."""

    scale: int = 4
    order: tuple[str, ...] = STEPS
    blur: BlurConfig = BlurConfig()
    noise: NoiseConfig = NoiseConfig()
    resize: ResizeConfig = ResizeConfig()
    codec: CodecConfig = CodecConfig()

    def __post_init__(self) -> None:
        if self.scale < 1:
            raise ConfigError(f"scale must be >= 1, got {self.scale!r}")
        unknown = [s for s in self.order if s not in STEPS]
        if unknown:
            raise ConfigError(f"order: unknown step(s) {unknown} (allowed: {list(STEPS)})")
        if len(set(self.order)) != len(self.order):
            raise ConfigError(f"order: each step may appear once, got {list(self.order)}")
        if "resize" not in self.order:
            raise ConfigError("order must contain 'resize' (it takes the clip to LR)")
        prod = math.prod(self.resize.factors)
        if abs(prod * self.scale - 1) > 1e-9:
            raise ConfigError(
                f"resize.factors {list(self.resize.factors)} multiply to {prod:g}, not 1/scale = 1/{self.scale}"
            )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, source: str = "<dict>") -> DegradationConfig:
        """Build from nested mappings; unknown keys and wrong types raise :class:`ConfigError` naming ``source``."""
        try:
            return _build(cls, d, "")
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> DegradationConfig:
        p = Path(path)
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8"))
        except OSError as e:
            raise ConfigError(f"DegradationConfig.from_yaml: cannot read {str(p)!r}: {e}") from e
        except yaml.YAMLError as e:
            raise ConfigError(f"DegradationConfig.from_yaml: {str(p)!r} is not valid YAML: {e}") from e
        if data is None:
            data = {}
        return cls.from_dict(data, source=str(p))

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML/JSON friendly) that :meth:`from_dict` reads back."""

        def conv(v: Any) -> Any:  # noqa: ANN401
            if dataclasses.is_dataclass(v):
                return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
            if isinstance(v, tuple) and v and all(isinstance(x, tuple) and len(x) == 2 for x in v):
                return {k: w for k, w in v}
            if isinstance(v, tuple):
                return list(v)
            return v

        return conv(self)


def _build(cls: type, data: Any, where: str) -> Any:  # noqa: ANN401
    """Recursively build dataclass ``cls`` from ``data``, converting lists to tuples and mappings to choices."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or 'top level'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            raise ConfigError(f"unknown key {path!r} (allowed here: {sorted(names)})")
        kwargs[key] = _convert(hints[key], value, path)
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(str(e)) from None


def _convert(tp: Any, value: Any, path: str) -> Any:  # noqa: ANN401
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path)
    if tp == Choices:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping of name -> weight, got {value!r}")
        return tuple((str(k), _convert(float, w, f"{path}.{k}")) for k, w in value.items())
    origin = typing.get_origin(tp)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, path) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"{path}: expected {len(args)} values, got {list(value)!r}")
        return tuple(_convert(a, v, path) for a, v in zip(args, value, strict=True))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{path}: unsupported field type {tp!r}")  # pragma: no cover - a bug in this module


# --------------------------------------------------------------------------------------------------- the pipeline


def degrade_clip(
    hr: Tensor,
    cfg: DegradationConfig,
    *,
    rng: np.random.Generator,
    lbo_pool: Sequence[nn.Module] | None = None,
) -> tuple[Tensor, dict[str, Any]]:
    """Degrade an HR clip into an LR clip.

    Args:
        hr: (T,3,H,W) float RGB in [0,1], on any device; H and W divisible by ``cfg.scale``.
        cfg: the pipeline.
        rng: the only source of randomness; the same state gives the same result (on the same device).
        lbo_pool: learned basic operators, needed when ``cfg.resize.lbo_prob > 0``.

    Returns:
        (T,3,H/scale,W/scale) float RGB in [0,1] on ``hr``'s device, and a JSON-serialisable dict of the draws.
    """
    if not isinstance(hr, Tensor) or hr.ndim != 4 or hr.shape[1] != 3 or not hr.is_floating_point():
        desc = tuple(hr.shape) if isinstance(hr, Tensor) else type(hr).__name__
        raise ValueError(f"degrade_clip: hr must be a float (T,3,H,W) tensor, got {desc}")
    h, w = hr.shape[-2:]
    if h % cfg.scale or w % cfg.scale:
        raise ValueError(f"degrade_clip: hr height and width must be divisible by scale={cfg.scale}, got {h}x{w}")
    if cfg.resize.lbo_prob > 0 and not lbo_pool:
        raise ValueError(f"degrade_clip: cfg.resize.lbo_prob={cfg.resize.lbo_prob} needs a non-empty lbo_pool")

    x = hr
    params: dict[str, Any] = {}
    for step in cfg.order:
        if step == "blur":
            x, params["blur"] = _blur(x, cfg.blur, rng)
        elif step == "noise":
            x, params["noise"] = _noise(x, cfg.noise, rng)
        elif step == "resize":
            x, params["resize"] = _resize(x, cfg.resize, rng, lbo_pool)
        elif step == "codec":
            x, params["codec"] = _codec(x, cfg.codec, rng)
    return x.clamp(0.0, 1.0), params


def _blur(x: Tensor, c: BlurConfig, rng: np.random.Generator) -> tuple[Tensor, dict[str, Any] | None]:
    if rng.random() >= c.prob:
        return x, None
    kernel, p = random_gaussian_kernel(
        rng=rng,
        size=c.kernel_size,
        iso_prob=c.iso_prob,
        iso_sigma=c.iso_sigma,
        aniso_sigma_x=c.aniso_sigma_x,
        aniso_sigma_y=c.aniso_sigma_y,
        rotation=c.rotation,
    )
    return apply_kernel(x, kernel), p


def _noise(x: Tensor, c: NoiseConfig, rng: np.random.Generator) -> tuple[Tensor, dict[str, Any] | None]:
    if rng.random() >= c.prob:
        return x, None
    return random_gaussian_noise(x, rng=rng, sigma_range=c.sigma, gray_prob=c.gray_prob, per_frame=c.per_frame)


def _resize(
    x: Tensor, c: ResizeConfig, rng: np.random.Generator, pool: Sequence[nn.Module] | None
) -> tuple[Tensor, list[str]]:
    clip_mode = _choose(rng, c.modes)
    done: list[str] = []
    for f in c.factors:
        use_lbo = c.lbo_prob > 0 and f == 0.5 and rng.random() < c.lbo_prob
        if use_lbo:
            assert pool
            i, net = draw_lbo(pool, rng=rng)
            x = apply_lbo(x, net)
            done.append(f"lbo{i}")
        else:
            mode = _choose(rng, c.modes) if c.per_step_mode else clip_mode
            x = resize(x, factor=f, mode=mode)
            done.append(mode)
    return x, done


def _codec(x: Tensor, c: CodecConfig, rng: np.random.Generator) -> tuple[Tensor, dict[str, Any] | None]:
    if rng.random() >= c.prob:
        return x, None
    name = _choose(rng, c.codecs)
    p: dict[str, Any] = {"codec": name}
    kw: dict[str, Any] = {}
    if name == "mpeg2video":
        kw["qscale"] = p["qscale"] = int(rng.integers(c.mpeg2_qscale[0], c.mpeg2_qscale[1] + 1))
    else:
        kw["crf"] = p["crf"] = float(rng.uniform(*c.crf))
        if name == "libx264":
            kw["profile"] = p["profile"] = _choose(rng, c.x264_profiles)
    frames = quantize(x.detach().permute(0, 2, 3, 1).float().cpu().numpy(), mode=c.quantize)
    y = codec_roundtrip(frames, codec=name, preset=c.preset, fps=c.fps, threads=c.threads, swap_rb=c.swap_rb, **kw)
    out = torch.from_numpy(y).to(device=x.device).permute(0, 3, 1, 2).to(x.dtype) / 255.0
    return out.contiguous(), p



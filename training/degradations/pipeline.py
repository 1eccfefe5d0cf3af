"""The AnimeSR degradation pipeline, composed from a YAML config.

Published model (Eq. 2 of the paper): ``x = FFmpeg(Down(Down(Noise(Blur(y)))))``, where each x0.5 ``Down`` may be
replaced by a learned basic operator (LBO). ``order`` lists the steps; ``resize`` carries the downscaling and the
LBO replacement; the codec, when used, comes last.

The pipeline is split in three so that training can put each part where it is cheapest:

1. :func:`draw_degradation` draws every random choice of one clip up front from one ``numpy.random.Generator``
   (a :class:`Draw`): a clip is a pure function of (HR clip, config, generator seed), whoever degrades it;
2. :func:`apply_tensor_steps` runs blur, noise, resize and LBOs on a whole batch of clips on its device (the
   training GPU), grouping clips that share an operator;
3. :func:`run_codec` quantises to 8 bits and makes the codec round trip on the CPU (in worker processes during
   training), falling back to the uncompressed clip if the encoder fails, as the published code did.

:func:`degrade_clip` chains the three for one clip.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from training.configio import ConfigError, Weights, from_data, load_yaml_config, to_data
from training.degradations.blur import apply_kernels, gaussian_kernel
from training.degradations.codec import CODECS, X264_LOSSLESS_BELOW, X264_PROFILES, codec_roundtrip
from training.degradations.noise import add_gaussian_noise
from training.degradations.resize import RESIZE_MODES, resize

__all__ = [
    "BlurConfig",
    "CodecConfig",
    "ConfigError",
    "DegradationConfig",
    "Draw",
    "NoiseConfig",
    "ResizeConfig",
    "apply_tensor_steps",
    "degrade_clip",
    "draw_degradation",
    "run_codec",
    "to_uint8",
]

log = logging.getLogger("training.degradations")

STEPS = ("blur", "noise", "resize", "codec")
LBO_CHUNK = 60
"""Frames per LBO call (4 clips of 15): bounds the operator's feature memory, whatever the batch."""


def _check_prob(owner: str, name: str, p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise ConfigError(f"{owner}.{name} must be in [0, 1], got {p!r}")


def _check_range(owner: str, name: str, r: tuple[float, float], *, lo: float = -math.inf) -> None:
    if len(r) != 2 or not lo <= r[0] <= r[1]:
        raise ConfigError(f"{owner}.{name} must be [low, high] with {lo} <= low <= high, got {list(r)!r}")


def _check_choices(owner: str, name: str, c: Weights, allowed: Sequence[str]) -> None:
    if not c:
        raise ConfigError(f"{owner}.{name} must name at least one of {list(allowed)}")
    for k, w in c:
        if k not in allowed:
            raise ConfigError(f"{owner}.{name}: unknown choice {k!r} (allowed: {list(allowed)})")
        if w < 0:
            raise ConfigError(f"{owner}.{name}: weight of {k!r} must be >= 0, got {w!r}")
    if sum(w for _, w in c) <= 0:
        raise ConfigError(f"{owner}.{name}: weights must not all be 0")


def _choose(rng: np.random.Generator, choices: Weights) -> str:
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
    modes: Weights = (("area", 1 / 3), ("bilinear", 1 / 3), ("bicubic", 1 / 3))
    per_step_mode: bool = False
    """Draw the interpolation for each step (published LBO variant) rather than once per clip (published step 1)."""
    lbo_prob: float = 0.0
    """Probability that each x0.5 step uses a learned basic operator from the pool instead of interpolation."""

    def __post_init__(self) -> None:
        if not self.factors or any(not 0 < f <= 1 for f in self.factors):
            raise ConfigError(f"resize.factors must be a non-empty list of values in (0, 1], got {list(self.factors)}")
        _check_choices("resize", "modes", self.modes, RESIZE_MODES)
        _check_prob("resize", "lbo_prob", self.lbo_prob)
        if self.lbo_prob > 0 and 0.5 not in self.factors:
            raise ConfigError(f"resize.lbo_prob={self.lbo_prob} needs a 0.5 step in resize.factors "
                              f"(an LBO is a x0.5 operator), got {list(self.factors)}")


@dataclass(frozen=True)
class CodecConfig:
    """8-bit quantisation followed by a lossy codec round trip of the whole clip."""

    prob: float = 1.0
    codecs: Weights = (("libx264", 1.0),)
    crf: tuple[float, float] = (18.0, 35.0)
    """CRF range for libx264 and libx265, drawn as a float."""
    x264_profiles: Weights = (("baseline", 0.1), ("main", 0.2), ("high", 0.7))
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
        uses_x264 = any(name == "libx264" and w > 0 for name, w in self.codecs)
        if uses_x264 and self.crf[0] < X264_LOSSLESS_BELOW:
            raise ConfigError(f"codec.crf {list(self.crf)} reaches below {X264_LOSSLESS_BELOW:g}, which libx264 "
                              f"encodes losslessly and its {'/'.join(X264_PROFILES)} profiles cannot open; "
                              f"start the range at {X264_LOSSLESS_BELOW:g} or more")
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
        if "codec" in self.order and self.order[-1] != "codec":
            raise ConfigError(f"order: 'codec' must be the last step (it runs on 8-bit frames in CPU workers, "
                              f"after the tensor steps), got {list(self.order)}")
        prod = math.prod(self.resize.factors)
        if abs(prod * self.scale - 1) > 1e-9:
            raise ConfigError(
                f"resize.factors {list(self.resize.factors)} multiply to {prod:g}, not 1/scale = 1/{self.scale}"
            )

    @property
    def uses_lbo(self) -> bool:
        return "resize" in self.order and self.resize.lbo_prob > 0

    @property
    def uses_codec(self) -> bool:
        return "codec" in self.order and self.codec.prob > 0

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, source: str = "<dict>") -> DegradationConfig:
        """Build from nested mappings; unknown keys and wrong types raise :class:`ConfigError` naming ``source``."""
        return from_data(cls, d, source=source)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> DegradationConfig:
        return load_yaml_config(cls, path)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML/JSON friendly) that :meth:`from_dict` reads back."""
        return to_data(self)


# --------------------------------------------------------------------------------------------------- draws


@dataclass(frozen=True)
class Draw:
    """Every random choice for one clip, drawn before any pixel is touched (see :func:`draw_degradation`)."""

    num_frames: int
    steps: tuple[str, ...] = ()
    """The config's ``order``: the steps that were considered (each may have drawn "skip")."""
    blur: dict[str, Any] | None = None
    """Kernel parameters: ``kind`` iso (``sigma``) or aniso (``sigma_x``, ``sigma_y``, ``theta``); None: no blur."""
    noise: tuple[tuple[float, ...], tuple[bool, ...], int] | None = None
    """Per-frame sigma (0-255 units), per-frame gray flag, and the seed of the noise fields; None: no noise."""
    resize: tuple[tuple[str, float], ...] = ()
    """Per x-factor step: an interpolation mode or ``lbo<i>`` (index into the LBO pool), and the factor."""
    codec: dict[str, Any] | None = None
    """``codec`` and ``crf`` (+ ``profile`` for libx264) or ``qscale``; None: no codec round trip."""

    def params(self) -> dict[str, Any]:
        """The draws as JSON-serialisable logging data: one entry per step of the order, None where skipped."""
        out: dict[str, Any] = {}
        for step in self.steps:
            if step == "blur":
                out["blur"] = None if self.blur is None else dict(self.blur)
            elif step == "noise":
                out["noise"] = None if self.noise is None else {
                    "sigma_255": [round(s, 4) for s in self.noise[0]], "gray": list(self.noise[1])}
            elif step == "resize":
                out["resize"] = [op for op, _ in self.resize]
            elif step == "codec":
                out["codec"] = None if self.codec is None else dict(self.codec)
        return out

    def kernel(self, size: int) -> Tensor | None:
        b = self.blur
        if b is None:
            return None
        if b["kind"] == "iso":
            return gaussian_kernel(size=size, sigma_x=b["sigma"], sigma_y=b["sigma"])
        return gaussian_kernel(size=size, sigma_x=b["sigma_x"], sigma_y=b["sigma_y"], theta=b["theta"])


def draw_degradation(cfg: DegradationConfig, rng: np.random.Generator, *, num_frames: int, num_lbos: int = 0) -> Draw:
    """Draw one clip's degradation: steps in ``cfg.order``, each drawing only what it needs, in a fixed order.

    ``num_lbos`` is the size of the LBO pool (needed when ``cfg.resize.lbo_prob > 0``).
    """
    if cfg.uses_lbo and num_lbos < 1:
        raise ValueError(f"draw_degradation: resize.lbo_prob={cfg.resize.lbo_prob} needs a non-empty LBO pool")
    kw: dict[str, Any] = {}
    for step in cfg.order:
        if step == "blur":
            c = cfg.blur
            if rng.random() < c.prob:
                if rng.random() < c.iso_prob:
                    kw["blur"] = {"kind": "iso", "sigma": float(rng.uniform(*c.iso_sigma))}
                else:
                    sx = float(rng.uniform(*c.aniso_sigma_x))
                    sy = float(rng.uniform(*c.aniso_sigma_y))
                    kw["blur"] = {"kind": "aniso", "sigma_x": sx, "sigma_y": sy,
                                  "theta": float(rng.uniform(*c.rotation))}
        elif step == "noise":
            n = cfg.noise
            if rng.random() < n.prob:
                draws = num_frames if n.per_frame else 1
                sig = [float(rng.uniform(*n.sigma)) for _ in range(draws)]
                gray = [bool(rng.random() < n.gray_prob) for _ in range(draws)]
                seed = int(rng.integers(0, 2**63 - 1))
                if not n.per_frame:
                    sig, gray = sig * num_frames, gray * num_frames
                kw["noise"] = (tuple(sig), tuple(gray), seed)
        elif step == "resize":
            r = cfg.resize
            clip_mode = _choose(rng, r.modes)
            ops = []
            for f in r.factors:
                if r.lbo_prob > 0 and f == 0.5 and rng.random() < r.lbo_prob:
                    ops.append((f"lbo{int(rng.integers(num_lbos))}", f))
                else:
                    ops.append((_choose(rng, r.modes) if r.per_step_mode else clip_mode, f))
            kw["resize"] = tuple(ops)
        elif step == "codec":
            c = cfg.codec
            if rng.random() < c.prob:
                name = _choose(rng, c.codecs)
                p: dict[str, Any] = {"codec": name}
                if name == "mpeg2video":
                    p["qscale"] = int(rng.integers(c.mpeg2_qscale[0], c.mpeg2_qscale[1] + 1))
                else:
                    p["crf"] = float(rng.uniform(*c.crf))
                    if name == "libx264":
                        p["profile"] = _choose(rng, c.x264_profiles)
                kw["codec"] = p
    return Draw(num_frames=num_frames, steps=tuple(cfg.order), **kw)


# --------------------------------------------------------------------------------------------------- tensor steps


@torch.no_grad()
def apply_tensor_steps(
    hr: Tensor, draws: Sequence[Draw], cfg: DegradationConfig, lbo_pool: Sequence[nn.Module] | None = None
) -> Tensor:
    """Blur, noise and resize/LBO a batch of clips (B,T,3,H,W) on its device; returns (B,T,3,H/s,W/s), unclamped.

    Clip i follows ``draws[i]``. Clips that share an operator (a resize mode, one LBO) run through it together,
    so a batch of 16 clips costs a few large kernel launches rather than many small ones. The codec step is not
    applied here (see :func:`run_codec`).
    """
    if not isinstance(hr, Tensor) or hr.ndim != 5 or hr.shape[2] != 3 or not hr.is_floating_point():
        desc = tuple(hr.shape) if isinstance(hr, Tensor) else type(hr).__name__
        raise ValueError(f"apply_tensor_steps: hr must be a float (B,T,3,H,W) tensor, got {desc}")
    if len(draws) != hr.shape[0] or any(d.num_frames != hr.shape[1] for d in draws):
        raise ValueError(f"apply_tensor_steps: need one draw of {hr.shape[1]} frames per clip, got "
                         f"{[d.num_frames for d in draws]} for {hr.shape[0]} clips")
    h, w = hr.shape[-2:]
    if h % cfg.scale or w % cfg.scale:
        raise ValueError(f"apply_tensor_steps: hr height and width must be divisible by scale={cfg.scale}, "
                         f"got {h}x{w}")
    x = hr
    for step in cfg.order:
        if step == "blur":
            idx = [i for i, d in enumerate(draws) if d.blur is not None]
            if idx:
                kernels = torch.stack([draws[i].kernel(cfg.blur.kernel_size) for i in idx])  # type: ignore[misc]
                x = _put(x, idx, apply_kernels(x[idx], kernels))
        elif step == "noise":
            x = x.clone() if x is hr else x
            for i, d in enumerate(draws):
                if d.noise is not None:
                    sig, gray, seed = d.noise
                    x[i] = add_gaussian_noise(x[i], sigmas=[s / 255.0 for s in sig], gray=list(gray), seed=seed)
        elif step == "resize":
            for j, f in enumerate(cfg.resize.factors):
                x = _resize_step(x, [d.resize[j][0] for d in draws], f, lbo_pool)
    return x


def _put(x: Tensor, idx: list[int], values: Tensor) -> Tensor:
    if len(idx) == x.shape[0]:
        return values
    out = x.clone()
    out[idx] = values
    return out


def _resize_step(x: Tensor, ops: list[str], factor: float, pool: Sequence[nn.Module] | None) -> Tensor:
    """One x``factor`` step of every clip; clips with the same operator are processed together."""
    b, t, c, h, w = x.shape
    out: Tensor | None = None
    for op in dict.fromkeys(ops):
        idx = [i for i, o in enumerate(ops) if o == op]
        frames = x[idx].reshape(len(idx) * t, c, h, w)
        if op.startswith("lbo"):
            if not pool:
                raise ValueError("apply_tensor_steps: a draw uses an LBO but lbo_pool is empty")
            net = pool[int(op[3:])]
            p = next(net.parameters())
            # LBO_CHUNK frames at a time: 16 clips x 15 frames at once would hold ~1 GB of 64-channel features
            y = torch.cat([net(frames[i : i + LBO_CHUNK].to(p)).to(frames)
                           for i in range(0, frames.shape[0], LBO_CHUNK)])
        else:
            y = resize(frames, factor=factor, mode=op)
        y = y.view(len(idx), t, c, *y.shape[-2:])
        if len(idx) == b:
            return y
        if out is None:
            out = y.new_empty(b, t, c, *y.shape[-2:])
        out[idx] = y
    assert out is not None
    return out


# --------------------------------------------------------------------------------------------------- codec


def to_uint8(x: Tensor, *, mode: str = "round") -> Tensor:
    """(..., 3, H, W) float in [0, 1] to (..., H, W, 3) uint8 on the same device: the codec's input.

    ``mode='truncate'`` reproduces the published code's ``astype(uint8)``; rounding is half-to-even, as NumPy's.
    """
    y = x.clamp(0.0, 1.0) * 255.0
    if mode == "round":
        y = y.round()
    elif mode != "truncate":
        raise ValueError(f"to_uint8: mode must be 'round' or 'truncate', got {mode!r}")
    return y.to(torch.uint8).movedim(-3, -1).contiguous()


def run_codec(frames: np.ndarray, params: Mapping[str, Any], cfg: CodecConfig) -> tuple[np.ndarray, str | None]:
    """The codec round trip of one clip (T,H,W,3 uint8) with drawn ``params``; CPU only, picklable for workers.

    Returns the decoded clip and None, or -- when encoding or decoding fails -- the input clip unchanged and the
    reason, so that one bad clip never stops a run (the published pipeline fell back the same way).
    """
    kw = {k: v for k, v in params.items() if k in ("crf", "qscale", "profile")}
    try:
        y = codec_roundtrip(frames, codec=params["codec"], preset=cfg.preset, fps=cfg.fps, threads=cfg.threads,
                            swap_rb=cfg.swap_rb, **kw)
    except Exception as e:  # noqa: BLE001 - any libav failure means: keep the clip uncompressed
        return frames, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return y, None


def degrade_clip(
    hr: Tensor,
    cfg: DegradationConfig,
    *,
    rng: np.random.Generator,
    lbo_pool: Sequence[nn.Module] | None = None,
) -> tuple[Tensor, dict[str, Any]]:
    """Degrade an HR clip into an LR clip: :func:`draw_degradation`, :func:`apply_tensor_steps`, :func:`run_codec`.

    Args:
        hr: (T,3,H,W) float RGB in [0,1], on any device; H and W divisible by ``cfg.scale``.
        cfg: the pipeline.
        rng: the only source of randomness; the same state gives the same result (on the same device).
        lbo_pool: learned basic operators, needed when ``cfg.resize.lbo_prob > 0``.

    Returns:
        (T,3,H/scale,W/scale) float RGB in [0,1] on ``hr``'s device, and a JSON-serialisable dict of the draws.
        When the codec failed, ``params["codec"]["fallback"]`` holds the reason and the clip is uncompressed.
    """
    if not isinstance(hr, Tensor) or hr.ndim != 4 or hr.shape[1] != 3 or not hr.is_floating_point():
        desc = tuple(hr.shape) if isinstance(hr, Tensor) else type(hr).__name__
        raise ValueError(f"degrade_clip: hr must be a float (T,3,H,W) tensor, got {desc}")
    h, w = hr.shape[-2:]
    if h % cfg.scale or w % cfg.scale:
        raise ValueError(f"degrade_clip: hr height and width must be divisible by scale={cfg.scale}, got {h}x{w}")
    if cfg.uses_lbo and not lbo_pool:
        raise ValueError(f"degrade_clip: cfg.resize.lbo_prob={cfg.resize.lbo_prob} needs a non-empty lbo_pool")
    draw = draw_degradation(cfg, rng, num_frames=hr.shape[0], num_lbos=len(lbo_pool or ()))
    x = apply_tensor_steps(hr[None], [draw], cfg, lbo_pool)[0]
    params = draw.params()
    if draw.codec is None:
        return x.clamp(0.0, 1.0), params
    frames = to_uint8(x, mode=cfg.codec.quantize).cpu().numpy()
    y, failed = run_codec(frames, draw.codec, cfg.codec)
    if failed:
        log.warning("degrade_clip: %s failed (%s); the clip stays uncompressed", draw.codec["codec"], failed)
        params["codec"]["fallback"] = failed
    out = torch.from_numpy(y).to(device=x.device).permute(0, 3, 1, 2).to(x.dtype) / 255.0
    return out.contiguous(), params

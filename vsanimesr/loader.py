"""The one place where AnimeSR checkpoints are read.

Accepts ``.pth``/``.pt`` (always ``torch.load(weights_only=True)``) and ``.safetensors``; unwraps ``params_ema`` /
``params`` / ``state_dict`` wrappers and a ``module.`` prefix; infers hyperparameters from tensor shapes; and loads
strictly. Every failure is a :class:`WeightsError` that names the file and what is wrong.
"""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from vsanimesr.archs.animesr import AnimeSRNet

__all__ = ["ModelInfo", "WeightsError", "canonicalize_state_dict", "load_model", "load_state_dict", "model_info"]

log = logging.getLogger("vsanimesr")

_PREFIX = "recurrent_cell."
_WRAPPER_KEYS = ("params_ema", "params", "state_dict", "model", "net_g_ema", "net_g")


class WeightsError(ValueError):
    """A weight file that cannot be used: missing, truncated, not a checkpoint, or another architecture."""


@dataclass(frozen=True)
class ModelInfo:
    """What a loaded AnimeSR checkpoint is, read from its tensor shapes."""

    num_feat: int
    """Width of every feature map and of the hidden state (64 in the published models)."""
    num_blocks: tuple[int, int, int]
    """Residual blocks at x1, x1/2 and x1/4 (5, 3, 2 in the published models)."""
    scale: int
    """Upscaling factor (4 in the published models)."""
    multiple_of: int = 4
    """Input height and width must be multiples of this (the engine pads)."""
    supports_half: bool = True
    """fp16 inference is numerically fine on CUDA."""


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Read a checkpoint file into a canonical (unwrapped, un-prefixed) state dict on the CPU."""
    p = Path(path)
    if not p.exists():
        raise WeightsError(f"load_state_dict: weight file {str(p)!r} does not exist")
    if not p.is_file():
        raise WeightsError(f"load_state_dict: weight path {str(p)!r} is not a file")
    if p.stat().st_size == 0:
        raise WeightsError(f"load_state_dict: weight file {str(p)!r} is empty")
    suffix = p.suffix.lower()
    if suffix == ".safetensors":
        obj = _read_safetensors(p)
    elif suffix in (".pth", ".pt", ".ckpt", ".bin"):
        obj = _read_torch(p)
    else:
        raise WeightsError(
            f"load_state_dict: weight file {str(p)!r} has unknown extension {suffix!r} "
            "(expected .pth, .pt, .ckpt, .bin or .safetensors)"
        )
    return canonicalize_state_dict(obj, source=str(p))


def _read_torch(p: Path) -> object:
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types here (RuntimeError, UnpicklingError, IndexError, ...)
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if zipfile.is_zipfile(p) is False and p.stat().st_size < 1024:
            hint = "too small to be a checkpoint"
        elif "central directory" in msg or "EOF" in msg or isinstance(e, EOFError):
            hint = "the file is truncated or corrupt"
        else:
            hint = "not a readable PyTorch checkpoint (or it contains objects other than tensors)"
        raise WeightsError(f"load_state_dict: cannot read {str(p)!r}: {hint} ({type(e).__name__}: {msg})") from e


def _read_safetensors(p: Path) -> object:
    try:
        from safetensors.torch import load_file
    except ImportError as e:  # pragma: no cover - safetensors is a dependency
        raise WeightsError(f"load_state_dict: reading {str(p)!r} needs the 'safetensors' package") from e
    try:
        return load_file(str(p), device="cpu")
    except Exception as e:  # safetensors raises its own SafetensorError type
        raise WeightsError(f"load_state_dict: cannot read {str(p)!r}: truncated or not a safetensors file ({e})") from e


def canonicalize_state_dict(obj: object, *, source: str = "<memory>") -> dict[str, Tensor]:
    """Unwrap trainer checkpoints (``params_ema`` preferred over ``params``) and strip ``module.`` prefixes."""
    if isinstance(obj, Mapping):
        for key in _WRAPPER_KEYS:
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise WeightsError(f"load_state_dict: {source!r} does not hold a state dict (got {type(obj).__name__})")
    out: dict[str, Tensor] = {}
    for k, v in obj.items():
        if not isinstance(k, str) or not isinstance(v, Tensor):
            raise WeightsError(
                f"load_state_dict: {source!r} is not a state dict of tensors (entry {k!r} is {type(v).__name__})"
            )
        while k.startswith("module."):
            k = k[len("module."):]
        out[k] = v
    return out


def model_info(state: Mapping[str, Tensor], *, source: str = "<memory>") -> ModelInfo:
    """Infer the AnimeSR hyperparameters from a canonical state dict, or explain why it is not AnimeSR."""
    head = state.get(_PREFIX + "conv_s1_first.0.weight")
    fuse = state.get(_PREFIX + "fusion.2.weight")
    if head is None or fuse is None or head.ndim != 4 or fuse.ndim != 4:
        sample = ", ".join(sorted(state)[:5])
        raise WeightsError(
            f"load_model: {source!r} is not an AnimeSR checkpoint: it lacks '{_PREFIX}conv_s1_first.0.weight' or "
            f"'{_PREFIX}fusion.2.weight' (its first keys: {sample})"
        )
    num_feat = int(head.shape[0])
    in_ch = int(head.shape[1])
    out_ch = int(fuse.shape[0])
    out_rgb = out_ch - num_feat
    scale = int(round((out_rgb / 3) ** 0.5))
    if 3 * scale * scale != out_rgb or in_ch != 9 + out_rgb + num_feat:
        raise WeightsError(
            f"load_model: {source!r} has AnimeSR-like keys but inconsistent shapes "
            f"(head {tuple(head.shape)}, fusion {tuple(fuse.shape)})"
        )

    def count(branch: str) -> int:
        return len({k.split(".")[2] for k in state if k.startswith(f"{_PREFIX}body_{branch}_first.")})

    blocks = (count("s1"), count("s2"), count("s4"))
    if not blocks[0] >= blocks[1] >= blocks[2] >= 1:
        raise WeightsError(f"load_model: {source!r} has an unsupported residual block layout {blocks}")
    return ModelInfo(num_feat=num_feat, num_blocks=blocks, scale=scale)


def load_model(weights: str | os.PathLike[str] | Mapping[str, Tensor], *, source: str | None = None) -> AnimeSRNet:
    """Build an :class:`AnimeSRNet` from a weight file or state dict and load it strictly (eval mode, CPU, fp32)."""
    if isinstance(weights, Mapping):
        src = source or "<state dict>"
        state = canonicalize_state_dict(weights, source=src)
    else:
        src = source or str(weights)
        state = load_state_dict(weights)
    info = model_info(state, source=src)
    with torch.device("meta"):
        net = AnimeSRNet(num_feat=info.num_feat, num_blocks=info.num_blocks, scale=info.scale)
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise WeightsError(
            f"load_model: {src!r} does not match the AnimeSR architecture {info}: "
            f"missing keys {_short(missing)}; unexpected keys {_short(unexpected)}"
        )
    bad = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items() if state[k].shape != v.shape]
    if bad:
        raise WeightsError(f"load_model: {src!r} has tensors of the wrong shape: {_short(bad)}")
    net.load_state_dict({k: v.float() for k, v in state.items()}, strict=True, assign=True)
    log.debug("loaded AnimeSR %s from %s", info, src)
    return net.eval()


def _short(items: list[str], n: int = 6) -> str:
    if not items:
        return "none"
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return "[" + ", ".join(items[:n]) + "]" + more

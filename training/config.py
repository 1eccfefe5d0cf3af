"""Typed, frozen training configuration loaded from YAML.

One YAML file describes one run: which stage (``lbo``, ``lbo_gan``, ``vsr_l1``, ``vsr_gan``), the model, the data,
the optimisation and the logging. Every section is a frozen dataclass; unknown keys and wrongly typed values are
errors that name the key and the file, because a typo in a 300k-iteration config should fail in the first second,
not silently fall back to a default. ``--set train.lr_g=1e-4`` style overrides are parsed with ``yaml.safe_load``
(never ``eval``).
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "STAGES",
    "Config",
    "ConfigError",
    "DataConfig",
    "DiscConfig",
    "LogConfig",
    "ModelConfig",
    "PerceptualConfig",
    "RunConfig",
    "TrainConfig",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "load_config",
]

STAGES = ("lbo", "lbo_gan", "vsr_l1", "vsr_gan")
DATA_KINDS = ("clips", "synthetic", "pairs")


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class RunConfig:
    out_dir: str = "runs/default"
    """Run folder: resolved config, loss log, validation images, checkpoints and the exported weights."""
    seed: int = 0
    device: str = "auto"
    """``auto`` (CUDA when available), ``cpu`` or ``cuda``. Under torchrun each process takes ``cuda:LOCAL_RANK``."""
    resume: bool = True
    """Continue from ``<out_dir>/ckpt/last.pth`` when it exists."""
    stop_at: int | None = None
    """Testing aid: end the process right after this iteration without saving, as if it had been killed."""


@dataclass(frozen=True)
class ModelConfig:
    pretrained: str | None = None
    """Start weights: ``v1``/``v2`` (published AnimeSR), a file (a previous stage's export), or none (scratch)."""
    num_feat: int = 64
    """Width when training from scratch (AnimeSR and LBO); ignored for ``pretrained`` (read from the weights)."""
    num_blocks: tuple[int, int, int] = (5, 3, 2)
    """AnimeSR residual blocks at x1, x1/2, x1/4 when training from scratch."""


@dataclass(frozen=True)
class DataConfig:
    kind: str = "clips"
    """``clips`` (AVC-style clip folders / videos, degraded on the fly), ``synthetic`` (generated cartoon clips,
    for tests and quick runs) or ``pairs`` (pseudo-HR/LQ frame pairs written by ``training.pseudo_hr``)."""
    paths: tuple[str, ...] = ()
    val_paths: tuple[str, ...] = ()
    """Held-out data of the same kind; empty: reuse ``paths`` with another seed (``clips``/``pairs``)."""
    degradation: str | None = None
    """Degradation pipeline YAML (``training.degradations.pipeline``); none: plain antialiased bicubic."""
    lbo_pool: tuple[str, ...] = ()
    """LBO checkpoints used by the degradation pipeline's learned x0.5 steps."""
    batch_size: int = 4
    """Per process (per GPU)."""
    num_workers: int = 4
    clip_len: int = 15
    gt_size: int = 256
    """HR crop (the pseudo-HR crop for the LBO stages)."""
    scale: int = 4
    """HR/LR ratio: 4 for the VSR stages, 2 for the LBO stages."""
    augment: bool = True
    """Random flips and transposes (shared by all frames of a clip, and by both images of a pair)."""
    num_clips: int = 64
    """``synthetic`` only: number of generated training clips."""
    num_val: int = 2
    """Validation items (clips or frame pairs)."""


@dataclass(frozen=True)
class TrainConfig:
    iters: int = 300_000
    lr_g: float = 2e-4
    lr_d: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.99)
    milestones: tuple[int, ...] = ()
    gamma: float = 0.5
    ema_decay: float = 0.0
    """0 disables EMA; the VSR stages use 0.999."""
    usm_gt: bool = False
    """Compare against a USM-sharpened GT (radius 51, weight 0.3, threshold 10), as in VSR stage 1."""
    l1_weight: float = 1.0
    mse_weight: float = 0.0
    perceptual_weight: float = 0.0
    gan_weight: float = 0.0


@dataclass(frozen=True)
class PerceptualConfig:
    pretrained: bool = True
    """False: randomly initialised VGG19 features (only for tests; the loss is then meaningless)."""
    weights_path: str | None = None
    """A local copy of torchvision's ``vgg19-dcbb9e9d.pth`` for offline machines."""
    layer_weights: dict[str, float] = field(
        default_factory=lambda: {"conv1_2": 0.1, "conv2_2": 0.1, "conv3_4": 1.0, "conv4_4": 1.0, "conv5_4": 1.0}
    )


@dataclass(frozen=True)
class DiscConfig:
    num_scales: int = 3
    num_feat: int = 64


@dataclass(frozen=True)
class LogConfig:
    log_every: int = 100
    val_every: int = 5000
    save_every: int = 5000


@dataclass(frozen=True)
class Config:
    stage: str
    run: RunConfig = RunConfig()
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    perceptual: PerceptualConfig = PerceptualConfig()
    disc: DiscConfig = DiscConfig()
    log: LogConfig = LogConfig()

    def __post_init__(self) -> None:
        def bad(key: str, value: object, why: str) -> ConfigError:
            return ConfigError(f"Config: {key}={value!r}: {why}")

        if self.stage not in STAGES:
            raise bad("stage", self.stage, f"must be one of {', '.join(STAGES)}")
        if self.data.kind not in DATA_KINDS:
            raise bad("data.kind", self.data.kind, f"must be one of {', '.join(DATA_KINDS)}")
        if self.stage.startswith("lbo") and self.data.kind == "clips":
            raise bad("data.kind", self.data.kind, f"stage {self.stage} trains on frame pairs ('pairs')")
        if self.stage.startswith("vsr") and self.data.kind == "pairs":
            raise bad("data.kind", self.data.kind, f"stage {self.stage} trains on clips ('clips' or 'synthetic')")
        if self.run.device not in ("auto", "cpu", "cuda"):
            raise bad("run.device", self.run.device, "must be auto, cpu or cuda")
        for key in ("train.iters", "data.batch_size", "data.gt_size", "data.scale", "data.clip_len",
                    "log.log_every", "log.val_every", "log.save_every", "disc.num_scales"):
            section, name = key.split(".")
            value = getattr(getattr(self, section), name)
            if value < 1:
                raise bad(key, value, "must be >= 1")
        if self.data.gt_size % self.data.scale:
            raise bad("data.gt_size", self.data.gt_size, f"must be divisible by data.scale={self.data.scale}")
        if not 0.0 <= self.train.ema_decay < 1.0:
            raise bad("train.ema_decay", self.train.ema_decay, "must be in [0, 1)")
        if self.stage in ("lbo_gan", "vsr_gan") and self.train.gan_weight <= 0:
            raise bad("train.gan_weight", self.train.gan_weight, f"stage {self.stage} needs a positive GAN weight")
        if self.stage in ("lbo", "vsr_l1") and self.train.gan_weight:
            raise bad("train.gan_weight", self.train.gan_weight, f"stage {self.stage} has no discriminator")
        if self.stage in ("lbo_gan", "vsr_gan"):  # D's coarsest PatchGAN needs 24 pixels
            d_in = self.data.gt_size // self.data.scale if self.stage == "lbo_gan" else self.data.gt_size
            need = 24 * 2 ** (self.disc.num_scales - 1)
            if d_in < need:
                raise bad("data.gt_size", self.data.gt_size,
                          f"the discriminator sees {d_in}px crops but {self.disc.num_scales} scale(s) need >= {need}")
        unknown = set(self.perceptual.layer_weights) - set(VGG_LAYERS)
        if unknown:
            raise bad("perceptual.layer_weights", sorted(unknown), f"known layers: {', '.join(VGG_LAYERS)}")


VGG_LAYERS = ("conv1_2", "conv2_2", "conv3_4", "conv4_4", "conv5_4")


# ---------------------------------------------------------------------------------------------------------------
# dict <-> dataclass with strict checking


def _convert(tp: Any, value: Any, key: str, where: str) -> Any:
    """Check/convert ``value`` to type ``tp``; raise ConfigError naming ``key`` in ``where``."""

    def fail(expected: str) -> ConfigError:
        return ConfigError(f"{where}: key {key!r} must be {expected}, got {value!r} ({type(value).__name__})")

    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise fail(f"a mapping of {tp.__name__} fields")
        return _from_dict(tp, value, prefix=key + ".", where=where)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise fail("set (not null)")
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, key, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise fail("true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail("an integer")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads '1e-4' (no dot) as a string
            try:
                return float(value)
            except ValueError:
                raise fail("a number") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail("a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise fail("a string")
        return value
    if origin is tuple:
        args = typing.get_args(tp)
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            if len(args) == 2 and args[1] is Ellipsis and not isinstance(value, Mapping) and value is not None:
                value = [value]  # a single path where a list is expected
            else:
                raise fail("a list")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{key}[{i}]", where) for i, v in enumerate(value))
        if len(value) != len(args):
            raise fail(f"a list of {len(args)} items")
        return tuple(_convert(a, v, f"{key}[{i}]", where) for i, (a, v) in enumerate(zip(args, value, strict=True)))
    if origin is dict:
        kt, vt = typing.get_args(tp)
        if not isinstance(value, Mapping):
            raise fail("a mapping")
        return {_convert(kt, k, key, where): _convert(vt, v, f"{key}.{k}", where) for k, v in value.items()}
    raise TypeError(f"_convert: unsupported annotation {tp!r} for {key!r}")  # a bug in this module


def _from_dict(cls: type, data: Mapping[str, Any], *, prefix: str, where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {prefix + str(unknown[0])!r} "
            f"(known keys here: {', '.join(prefix + n for n in names)})"
        )
    kwargs = {k: _convert(hints[k], v, prefix + k, where) for k, v in data.items()}
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in kwargs
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{where}: missing required key {prefix + missing[0]!r}")
    return cls(**kwargs)


def config_from_dict(data: Mapping[str, Any], *, source: str = "<dict>") -> Config:
    """Build a :class:`Config` from plain data; errors name ``source`` and the offending key."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: the top level must be a mapping, got {type(data).__name__}")
    try:
        return _from_dict(Config, data, prefix="", where=source)
    except ConfigError as e:
        if str(e).startswith("Config: "):  # a __post_init__ check: add the file name
            raise ConfigError(f"{source}: {str(e)[len('Config: '):]}") from None
        raise


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with ``a.b=value`` overrides applied (values parsed by ``yaml.safe_load``)."""
    out: dict[str, Any] = _deepcopy_dict(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set: expected KEY=VALUE (e.g. train.lr_g=1e-4), got {item!r}")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        _check_key_path(parts, item)
        node = out
        for p in parts[:-1]:
            child = node.get(p)
            if not isinstance(child, dict):
                child = {}
                node[p] = child
            node = child
        node[parts[-1]] = yaml.safe_load(raw)
    return out


def _check_key_path(parts: list[str], item: str) -> None:
    cls: Any = Config
    for i, p in enumerate(parts):
        if not dataclasses.is_dataclass(cls):
            if typing.get_origin(cls) is dict:  # a partial dict would silently drop the other entries
                raise ConfigError(f"--set {item!r}: set the whole mapping, e.g. {'.'.join(parts[:i])}={{a: 1, b: 2}}")
            raise ConfigError(f"--set {item!r}: {'.'.join(parts[:i])!r} has no sub-keys")
        hints = typing.get_type_hints(cls)
        if p not in hints:
            known = ", ".join(".".join(parts[:i] + [n]) for n in hints)
            raise ConfigError(f"--set {item!r}: unknown key {'.'.join(parts[: i + 1])!r} (known: {known})")
        cls = hints[p]
        if typing.get_origin(cls) in (typing.Union, types.UnionType):
            cls = next(a for a in typing.get_args(cls) if a is not type(None))


def _deepcopy_dict(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deepcopy_dict(v) if isinstance(v, Mapping) else v for k, v in d.items()}


def load_config(path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> Config:
    """Read a YAML config file, apply ``--set`` overrides and check everything."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"load_config: config file {str(p)!r} does not exist")
    with open(p, encoding="utf-8") as f:
        try:
            data = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise ConfigError(f"load_config: {str(p)!r} is not valid YAML: {e}") from e
    data = {} if data is None else data
    if not isinstance(data, Mapping):
        raise ConfigError(f"load_config: {str(p)!r}: the top level must be a mapping, got {type(data).__name__}")
    source = str(p) + (" (with --set overrides)" if overrides else "")
    return config_from_dict(apply_overrides(data, overrides), source=source)


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """Plain YAML-safe data (tuples become lists) that :func:`config_from_dict` reads back to an equal config."""

    def plain(v: Any) -> Any:
        if isinstance(v, tuple | list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(cfg))

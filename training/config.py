"""Typed, frozen training configuration loaded from YAML (with :mod:`training.configio`, the one loader).

One YAML file describes one run: which stage (``lbo``, ``lbo_gan``, ``vsr_l1``, ``vsr_gan``), the model, the data,
the optimisation and the logging. Every section is a frozen dataclass; unknown keys and wrongly typed values are
errors that name the key and the file. The degradation config a run names is loaded and cross-checked by
:func:`load_config` too, so every config mistake surfaces before anything heavy starts.

Paths: ``data.degradation`` written in a config file is relative to that file (so the shipped configs work from
any directory and from an installed package); every other path (data, LBO pool, weights, ``run.out_dir``) and
every path given with ``--set`` is relative to the current directory.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.configio import ConfigError, apply_overrides, from_data, read_yaml, to_data
from training.degradations.pipeline import DegradationConfig

__all__ = [
    "CONFIG_DIR",
    "Config",
    "ConfigError",
    "DataConfig",
    "DataKind",
    "DiscConfig",
    "LogConfig",
    "ModelConfig",
    "PerceptualConfig",
    "RunConfig",
    "Stage",
    "TrainConfig",
    "check_paths",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "load_degradation",
]

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
"""The shipped configs (also reachable as ``examples/configs`` in a checkout)."""


class Stage(enum.StrEnum):
    """The four training stages of the AnimeSR recipe."""

    LBO = "lbo"
    """Fit a learned basic operator: pseudo-HR -> real LQ, L1 + MSE."""
    LBO_GAN = "lbo_gan"
    """Fine-tune an LBO with L1 + perceptual + GAN."""
    VSR_L1 = "vsr_l1"
    """AnimeSR with L1 (against a USM-sharpened GT in stage 1), EMA."""
    VSR_GAN = "vsr_gan"
    """AnimeSR with L1 + perceptual + LSGAN (multi-scale PatchGAN), EMA."""

    @property
    def trains_lbo(self) -> bool:
        return self in (Stage.LBO, Stage.LBO_GAN)

    @property
    def has_discriminator(self) -> bool:
        return self in (Stage.LBO_GAN, Stage.VSR_GAN)


class DataKind(enum.StrEnum):
    CLIPS = "clips"
    """AVC-style clip folders / videos, degraded on the fly."""
    SYNTHETIC = "synthetic"
    """Generated cartoon clips, for tests and quick runs."""
    PAIRS = "pairs"
    """Pseudo-HR/LQ frame pairs written by ``training.pseudo_hr`` (the LBO stages)."""


VGG_LAYERS = ("conv1_2", "conv2_2", "conv3_4", "conv4_4", "conv5_4")


@dataclass(frozen=True)
class RunConfig:
    out_dir: str = "runs/default"
    """Run folder: resolved config, loss log, validation images, checkpoints and the exported weights."""
    seed: int = 0
    device: str = "auto"
    """``auto`` (CUDA when available), ``cpu`` or ``cuda``. Under torchrun each process takes ``cuda:LOCAL_RANK``."""
    resume: bool = True
    """Continue from ``<out_dir>/ckpt/last.pth`` when it exists (false: start fresh and overwrite it)."""
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
    kind: DataKind = DataKind.CLIPS
    paths: tuple[str, ...] = ()
    val_paths: tuple[str, ...] = ()
    """Held-out data of the same kind; empty: reuse ``paths`` with another seed (``clips``/``pairs``)."""
    degradation: str | None = None
    """Degradation pipeline YAML (``training.degradations.pipeline``); none: plain antialiased bicubic."""
    lbo_pool: tuple[str, ...] = ()
    """LBO checkpoints used by the degradation pipeline's learned x0.5 steps."""
    batch_size: int = 16
    """The global batch: clips (or frame pairs) per iteration over all processes. Under torchrun each of W
    processes takes batch_size / W, so one config trains the same model on 1, 2 or 4 GPUs (W must divide it)."""
    num_workers: int = 4
    """Data-loader workers per process: they read, crop and flip HR clips."""
    codec_workers: int = 4
    """Codec round-trip processes per process (0: in the training process). The tensor degradations (blur,
    noise, resize, LBOs) run on the training device."""
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
    weights: str | None = None
    """A local copy of torchvision's ``vgg19-dcbb9e9d.pth`` for offline machines (else torchvision's cache or
    download). Checked by SHA-256 before use."""
    weights_sha256: str | None = None
    """The file's expected SHA-256 (64 hex digits). None: it must start with ``dcbb9e9d``, the prefix torchvision
    publishes in the file name (torch.hub's own check)."""
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
    stage: Stage
    run: RunConfig = RunConfig()
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    perceptual: PerceptualConfig = PerceptualConfig()
    disc: DiscConfig = DiscConfig()
    log: LogConfig = LogConfig()

    def __post_init__(self) -> None:
        def bad(key: str, value: object, why: str) -> ConfigError:
            return ConfigError(f"{key}={value!r}: {why}")

        stage, d = self.stage, self.data
        if stage.trains_lbo and d.kind != DataKind.PAIRS:
            raise bad("data.kind", d.kind.value, f"stage {stage} trains on frame pairs ('pairs')")
        if not stage.trains_lbo and d.kind == DataKind.PAIRS:
            raise bad("data.kind", d.kind.value, f"stage {stage} trains on clips ('clips' or 'synthetic')")
        if self.run.device not in ("auto", "cpu", "cuda"):
            raise bad("run.device", self.run.device, "must be auto, cpu or cuda")
        for key in ("train.iters", "data.batch_size", "data.gt_size", "data.scale", "data.clip_len",
                    "log.log_every", "log.val_every", "log.save_every", "disc.num_scales", "model.num_feat"):
            section, name = key.split(".")
            value = getattr(getattr(self, section), name)
            if value < 1:
                raise bad(key, value, "must be >= 1")
        for key in ("data.num_workers", "data.codec_workers"):
            if getattr(d, key.split(".")[1]) < 0:
                raise bad(key, getattr(d, key.split(".")[1]), "must be >= 0")
        if d.gt_size % d.scale:
            raise bad("data.gt_size", d.gt_size, f"must be divisible by data.scale={d.scale}")
        if not stage.trains_lbo and (d.gt_size // d.scale) % 4:
            raise bad("data.gt_size", d.gt_size, f"the LR crop gt_size/scale must be a multiple of 4 (AnimeSR's "
                      f"two stride-2 levels), got {d.gt_size // d.scale}")
        if not 0.0 <= self.train.ema_decay < 1.0:
            raise bad("train.ema_decay", self.train.ema_decay, "must be in [0, 1)")
        if stage.has_discriminator and self.train.gan_weight <= 0:
            raise bad("train.gan_weight", self.train.gan_weight, f"stage {stage} needs a positive GAN weight")
        if not stage.has_discriminator and self.train.gan_weight:
            raise bad("train.gan_weight", self.train.gan_weight, f"stage {stage} has no discriminator")
        if stage.has_discriminator:  # D's coarsest PatchGAN needs 24 pixels
            d_in = d.gt_size // d.scale if stage.trains_lbo else d.gt_size
            need = 24 * 2 ** (self.disc.num_scales - 1)
            if d_in < need:
                raise bad("data.gt_size", d.gt_size,
                          f"the discriminator sees {d_in}px crops but {self.disc.num_scales} scale(s) need >= {need}")
        unknown = set(self.perceptual.layer_weights) - set(VGG_LAYERS)
        if unknown:
            raise bad("perceptual.layer_weights", sorted(unknown), f"known layers: {', '.join(VGG_LAYERS)}")
        sha = self.perceptual.weights_sha256
        if sha is not None and (len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha.lower())):
            raise bad("perceptual.weights_sha256", sha, "must be 64 hexadecimal digits")
        if d.degradation is not None and stage.trains_lbo:
            raise bad("data.degradation", d.degradation, f"stage {stage} trains on real pairs, not degraded clips")
        if stage.trains_lbo and self.model.pretrained in ("v1", "v2"):
            raise bad("model.pretrained", self.model.pretrained, f"stage {stage} trains an LBO; v1/v2 are AnimeSR")
        if d.lbo_pool and d.degradation is None:
            raise bad("data.lbo_pool", list(d.lbo_pool), "needs data.degradation (a pipeline with LBO steps)")


# ---------------------------------------------------------------------------------------------------------------


def config_from_dict(data: Mapping[str, Any], *, source: str = "<dict>") -> Config:
    """Build a :class:`Config` from plain data; errors name ``source`` and the offending key."""
    return from_data(Config, data, source=source)


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """Plain YAML-safe data that :func:`config_from_dict` reads back to an equal config."""
    return to_data(cfg)


def load_config(path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> Config:
    """Read a YAML config file, apply ``--set`` overrides and check everything, the degradation config included."""
    p = Path(path)
    data = read_yaml(p)
    deg = data.get("data", {}).get("degradation") if isinstance(data.get("data"), Mapping) else None
    if isinstance(deg, str) and not Path(deg).is_absolute():  # relative to the file that names it
        data["data"] = {**data["data"], "degradation": str(p.resolve().parent / deg)}
    source = str(p) + (" (with --set overrides)" if overrides else "")
    cfg = from_data(Config, apply_overrides(Config, data, overrides), source=source)
    load_degradation(cfg, source=source)
    return cfg


def load_degradation(cfg: Config, *, source: str = "config") -> DegradationConfig | None:
    """The run's degradation pipeline, checked against the run (scale, LBO pool); None when not configured."""
    d = cfg.data
    if d.degradation is None:
        return None
    deg = DegradationConfig.from_yaml(d.degradation)
    if deg.scale != d.scale:
        raise ConfigError(f"data.degradation {d.degradation!r} has scale {deg.scale} but data.scale is {d.scale}",
                          source=source)
    if deg.uses_lbo and not d.lbo_pool:
        raise ConfigError(f"data.degradation {d.degradation!r} uses LBOs (resize.lbo_prob={deg.resize.lbo_prob}) "
                          "but data.lbo_pool is empty", source=source)
    if d.lbo_pool and not deg.uses_lbo:
        raise ConfigError(f"data.lbo_pool is set but data.degradation {d.degradation!r} never uses an LBO "
                          "(resize.lbo_prob is 0)", source=source)
    return deg


def check_paths(cfg: Config, *, source: str = "config") -> None:
    """Every input file or folder the run names exists (run before anything heavy starts)."""
    d = cfg.data

    def need(key: str, path: str) -> None:
        if not Path(path).exists():
            raise ConfigError(f"{key}: {path!r} does not exist", source=source)

    if d.kind != DataKind.SYNTHETIC:
        if not d.paths:
            what = "pseudo_hr output folders (hr/ and lq/)" if d.kind == DataKind.PAIRS else "clip folders or videos"
            raise ConfigError(f"data.paths must name {what}", source=source)
        for p in d.paths:
            need("data.paths", p)
        for p in d.val_paths:
            need("data.val_paths", p)
    for p in d.lbo_pool:
        need("data.lbo_pool", p)
    m = cfg.model.pretrained
    if m is not None and m not in ("v1", "v2"):
        need("model.pretrained", m)
    if cfg.train.perceptual_weight > 0 and cfg.perceptual.pretrained and cfg.perceptual.weights is not None:
        need("perceptual.weights", cfg.perceptual.weights)

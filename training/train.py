"""Train an LBO or the AnimeSR network: ``python -m training.train CONFIG.yml [--set key=value ...]``.

One plain loop for the four stages of the AnimeSR recipe (chosen by ``stage`` in the config):

- ``lbo``     : fit a learned basic operator, pseudo-HR -> LQ, L1 + MSE.
- ``lbo_gan`` : fine-tune an LBO with L1 + perceptual + GAN.
- ``vsr_l1``  : AnimeSR stage 1, L1 against a USM-sharpened GT, EMA.
- ``vsr_gan`` : AnimeSR stage 2, L1 + perceptual + LSGAN with a multi-scale PatchGAN, EMA.

The file reads top to bottom like the loop it runs: :func:`setup` (processes, data, models, resume), then
:func:`train_step` once per iteration, with :class:`TrainState` as the one checkpoint (the same code saves and
restores it).

Multi-GPU / multi-node: launch the same command with ``torchrun`` (DDP; NCCL on CUDA, gloo on CPU).
``data.batch_size`` is the global batch: W processes take batch_size / W each and together see exactly the
samples one process would, so a config trains the same model on any number of GPUs (to float rounding).

Degradations: data-loader workers only read and crop HR clips; blur, noise, resize and the learned operators run
batched on the training device and the codec round trips in ``data.codec_workers`` processes
(:mod:`training.degradations.batched`).

The run folder (``run.out_dir``) gets ``config.yml`` (resolved), ``log.jsonl`` (one line per logged iteration:
losses, learning rate, codec fallbacks; validation lines carry ``val_l1``), ``val/*.png`` (input | output |
target), ``ckpt/last.pth`` (everything needed to resume exactly) and the exported weights: ``animesr.pth`` (VSR
stages; the EMA generator as a bare state dict, loadable by ``vsanimesr.load_model`` and
``core.animesr.Upscale(model=...)``) or ``lbo.pth`` (LBO stages; usable in a degradation config's LBO pool).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import random
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler

from training.config import (
    Config,
    ConfigError,
    DataKind,
    check_paths,
    config_to_dict,
    load_config,
    load_degradation,
)
from training.data import SyntheticClips
from training.discriminator import MultiScaleDiscriminator
from training.losses import PerceptualLoss, VGGWeightsError, lsgan_loss, usm_sharpen

__all__ = ["StreamSampler", "SyntheticClips", "TrainState", "main", "setup", "train_step"]

log = logging.getLogger("training.train")


# ---------------------------------------------------------------------------------------------------------------
# Data plumbing: a resumable, rank-aware sample stream


class StreamSampler(Sampler):
    """An endless stream of ``(epoch, index)`` keys: the concatenation of one seeded permutation per epoch.

    Global batch k is stream[k*B*W : (k+1)*B*W] (B per-process batch, W world size); process r takes its r-th slice.
    So the split over processes does not change which samples form a global batch, and resuming is exact: start at
    batch ``start_batch``. The epoch travels with the index so the dataset draws its augmentations from
    (seed, epoch, index) whichever worker loads the item.
    """

    def __init__(self, n: int, *, batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0,
                 start_batch: int = 0) -> None:
        if n < 1:
            raise ValueError(f"StreamSampler: the dataset is empty (n={n})")
        self.n, self.b, self.rank, self.world = n, batch_size, rank, world_size
        self.seed, self.start = seed, start_batch
        self._perm: tuple[int, np.ndarray] | None = None

    def _key(self, pos: int) -> tuple[int, int]:
        epoch = pos // self.n
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([self.seed, epoch]).permutation(self.n))
        return epoch, int(self._perm[1][pos % self.n])

    def __iter__(self) -> Iterator[tuple[int, int]]:
        k = self.start
        while True:
            base = k * self.b * self.world + self.rank * self.b
            for j in range(self.b):
                yield self._key(base + j)
            k += 1


class _EpochKeyed(Dataset):
    """Adapts a dataset with ``set_epoch`` to the ``(epoch, index)`` keys of :class:`StreamSampler`."""

    def __init__(self, ds: Dataset) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:  # noqa: ANN401
        epoch, index = key
        self.ds.set_epoch(epoch)  # type: ignore[attr-defined]
        return self.ds[index]


def _downscale(x: Tensor, scale: int) -> Tensor:
    """Antialiased bicubic 1/scale of (..., 3, H, W): the LR when no degradation pipeline is configured."""
    shape = x.shape
    y = F.interpolate(x.reshape(-1, *shape[-3:]), scale_factor=1 / scale, mode="bicubic", antialias=True,
                      align_corners=False).clamp(0, 1)
    return y.reshape(*shape[:-2], *y.shape[-2:])


def build_datasets(cfg: Config) -> tuple[Dataset, Dataset]:
    """The training set (HR only, uint8: degraded later on the device) and the validation set, by ``data.kind``."""
    d, seed = cfg.data, cfg.run.seed
    val_seed = seed + 10_007
    if d.kind == DataKind.PAIRS:
        from training.paired_data import PairedFrames

        train_set: Dataset = PairedFrames(d.paths, gt_size=d.gt_size, scale=d.scale, seed=seed, augment=d.augment)
        return train_set, PairedFrames(d.val_paths or d.paths, gt_size=d.gt_size, scale=d.scale, seed=val_seed,
                                       augment=False)
    kw = dict(clip_len=d.clip_len, gt_size=d.gt_size, scale=d.scale)
    if d.kind == DataKind.SYNTHETIC:
        return (SyntheticClips(d.num_clips, seed=seed, uint8=True, **kw),
                SyntheticClips(d.num_val, seed=val_seed, **kw))
    from training.data import ClipDataset

    return (ClipDataset(d.paths, seed=seed, augment=d.augment, uint8=True, **kw),
            ClipDataset(d.val_paths or d.paths, seed=val_seed, **kw))


class DataStream:
    """(input, target) batches on the training device, one per iteration, from batch ``start_batch`` on.

    LBO stages: (pseudo-HR, real LQ) frame pairs. VSR stages: (LR clip, HR clip), the LR made on the device from
    the HR by the degradation pipeline (:class:`DegradedStream`) or, without one, by antialiased bicubic.
    """

    def __init__(self, cfg: Config, train_set: Dataset, rt: Runtime, *, start_batch: int,
                 lbo_pool: Sequence[nn.Module] | None) -> None:
        self.cfg, self.device = cfg, rt.device
        per_process = cfg.data.batch_size // rt.world
        sampler = StreamSampler(len(train_set), batch_size=per_process, rank=rt.rank, world_size=rt.world,
                                seed=cfg.run.seed, start_batch=start_batch)
        loader = DataLoader(_EpochKeyed(train_set), batch_size=per_process, sampler=sampler,
                            num_workers=cfg.data.num_workers, pin_memory=rt.device.type == "cuda",
                            generator=torch.Generator().manual_seed(cfg.run.seed))  # keeps the global RNG untouched
        self.batches = iter(loader)
        self.degraded = None
        deg = load_degradation(cfg)
        if deg is not None:
            from training.degradations.batched import DegradedStream

            self.degraded = DegradedStream(self.batches, deg, device=rt.device, lbo_pool=lbo_pool,
                                           codec_workers=cfg.data.codec_workers)

    @property
    def codec_fallbacks(self) -> int:
        return self.degraded.fallbacks if self.degraded is not None else 0

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        return self

    def __next__(self) -> tuple[Tensor, Tensor]:
        if self.cfg.stage.trains_lbo:  # an LBO maps pseudo-HR to the real LQ
            batch = next(self.batches)
            return batch["hr"].to(self.device, non_blocking=True), batch["lq"].to(self.device, non_blocking=True)
        if self.degraded is not None:
            gt, lq = next(self.degraded)
            return lq, gt
        gt = next(self.batches)["gt"].to(self.device, non_blocking=True).float().div_(255.0)
        return _downscale(gt, self.cfg.data.scale), gt

    def close(self) -> None:
        if self.degraded is not None:
            self.degraded.close()


def validation_items(cfg: Config, val_set: Dataset, device: torch.device,
                     lbo_pool: Sequence[nn.Module] | None) -> list[tuple[Tensor, Tensor]]:
    """The fixed validation (input, target) pairs on the device, degraded once with each item's own seed."""
    items = []
    deg = load_degradation(cfg)
    for i in range(cfg.data.num_val):
        item = val_set[i % len(val_set)]  # type: ignore[index]
        if cfg.stage.trains_lbo:
            items.append((item["hr"][None].to(device), item["lq"][None].to(device)))
            continue
        gt = item["gt"].to(device)
        if deg is not None:
            from training.degradations.pipeline import degrade_clip

            lq, _ = degrade_clip(gt, deg, rng=np.random.default_rng(item["seed"]), lbo_pool=lbo_pool)
        else:
            lq = _downscale(gt, cfg.data.scale)
        items.append((lq[None], gt[None]))
    return items


# ---------------------------------------------------------------------------------------------------------------
# Processes and devices


@dataclass(frozen=True)
class Runtime:
    """Where this process runs: torchrun sets RANK/WORLD_SIZE/LOCAL_RANK; a plain run is one process."""

    device: torch.device
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    distributed: bool = False

    @property
    def master(self) -> bool:
        return self.rank == 0


def init_runtime(cfg: Config) -> Runtime:
    distributed = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    use_cuda = cfg.run.device == "cuda" or (cfg.run.device == "auto" and torch.cuda.is_available())
    if cfg.run.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("run.device='cuda' but CUDA is not available (use auto or cpu)")
    rank, world, local_rank = 0, 1, 0
    if distributed:
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        rank, world, local_rank = dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if cfg.data.batch_size % world:
        raise ConfigError(f"data.batch_size={cfg.data.batch_size} is the global batch and must be divisible by the "
                          f"number of processes ({world})")
    return Runtime(device=device, rank=rank, world=world, local_rank=local_rank, distributed=distributed)


# ---------------------------------------------------------------------------------------------------------------
# Models and the checkpoint state


class _Sequence(nn.Module):
    """Makes AnimeSR's clip forward the module's ``forward`` (DDP only hooks ``forward``)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, clip: Tensor) -> Tensor:
        return self.net.forward_sequence(clip)


def build_generator(cfg: Config) -> nn.Module:
    """AnimeSR (VSR stages) or an LBO, from scratch or from ``model.pretrained``."""
    m = cfg.model
    if cfg.stage.trains_lbo:
        from training.lbo_arch import LBONet, load_lbo

        return load_lbo(m.pretrained) if m.pretrained else LBONet(num_feat=m.num_feat, downscale=cfg.data.scale)
    from vsanimesr.archs.animesr import AnimeSRNet
    from vsanimesr.loader import load_model
    from vsanimesr.weights import resolve

    if m.pretrained:
        net = load_model(resolve(m.pretrained))
        if net.scale != cfg.data.scale:
            raise ConfigError(f"model.pretrained={m.pretrained!r} is x{net.scale} but data.scale is {cfg.data.scale}")
        return net
    return AnimeSRNet(num_feat=m.num_feat, num_blocks=m.num_blocks, scale=cfg.data.scale)


def model_settings(net: nn.Module | None) -> dict[str, Any] | None:
    """What fixes a network's tensor shapes (compared on resume, so a changed config gets a clear message)."""
    if net is None:
        return None
    if isinstance(net, MultiScaleDiscriminator):
        return {"num_scales": net.num_scales, "num_feat": int(net.scales[0].body[0].weight.shape[0])}
    from training.lbo_arch import LBONet

    if isinstance(net, LBONet):
        return {"arch": "lbo", "num_feat": net.num_feat, "downscale": net.downscale}
    return {"arch": "animesr", "num_feat": net.num_feat, "num_blocks": list(net.recurrent_cell.num_blocks),
            "scale": net.scale}


class CheckpointMismatch(ConfigError):
    """The run folder's checkpoint belongs to another stage or other model settings."""


@dataclass
class TrainState:
    """Everything that changes while training and decides the next loss: the one thing a checkpoint holds.

    :meth:`state_dict` and :meth:`load_state_dict` are the only code that writes and reads checkpoints.
    """

    cfg: Config
    net_g: nn.Module
    opt_g: torch.optim.Optimizer
    sched_g: torch.optim.lr_scheduler.LRScheduler
    ema: nn.Module | None = None
    net_d: nn.Module | None = None
    opt_d: torch.optim.Optimizer | None = None
    sched_d: torch.optim.lr_scheduler.LRScheduler | None = None
    iter: int = 0
    g_fwd: nn.Module | None = field(default=None, repr=False)
    """The generator as called in the step (DDP-wrapped under torchrun); not saved."""
    d_fwd: nn.Module | None = field(default=None, repr=False)

    @classmethod
    def create(cls, cfg: Config, device: torch.device) -> TrainState:
        tc = cfg.train
        net_g = build_generator(cfg).to(device).train()
        ema = copy.deepcopy(net_g).eval().requires_grad_(False) if tc.ema_decay > 0 else None
        opt_g = torch.optim.Adam(net_g.parameters(), lr=tc.lr_g, betas=tc.betas)
        sched_g = torch.optim.lr_scheduler.MultiStepLR(opt_g, milestones=list(tc.milestones), gamma=tc.gamma)
        s = cls(cfg=cfg, net_g=net_g, opt_g=opt_g, sched_g=sched_g, ema=ema)
        if cfg.stage.has_discriminator:
            s.net_d = MultiScaleDiscriminator(num_scales=cfg.disc.num_scales, num_feat=cfg.disc.num_feat)
            s.net_d = s.net_d.to(device).train()
            s.opt_d = torch.optim.Adam(s.net_d.parameters(), lr=tc.lr_d, betas=tc.betas)
            s.sched_d = torch.optim.lr_scheduler.MultiStepLR(s.opt_d, milestones=list(tc.milestones), gamma=tc.gamma)
        s.g_fwd = net_g if cfg.stage.trains_lbo else _Sequence(net_g)
        s.d_fwd = s.net_d
        return s

    def settings(self) -> dict[str, Any]:
        return {"stage": str(self.cfg.stage), "generator": model_settings(self.net_g),
                "discriminator": model_settings(self.net_d)}

    def state_dict(self) -> dict[str, Any]:
        def sd(x: Any) -> Any:  # noqa: ANN401
            return x.state_dict() if x is not None else None

        return {
            "iter": self.iter, "stage": str(self.cfg.stage), "settings": self.settings(),
            "config": config_to_dict(self.cfg),
            "net_g": sd(self.net_g), "opt_g": sd(self.opt_g), "sched_g": sd(self.sched_g), "net_g_ema": sd(self.ema),
            "net_d": sd(self.net_d), "opt_d": sd(self.opt_d), "sched_d": sd(self.sched_d),
            "rng": _rng_state(), "sampler": {"batches": self.iter},
        }

    def load_state_dict(self, ck: dict[str, Any], *, source: str) -> None:
        fresh = "use another run.out_dir, or --set run.resume=false to start fresh (it overwrites this checkpoint)"
        if ck.get("stage") != str(self.cfg.stage):
            raise CheckpointMismatch(f"{source} is a {ck.get('stage')!r} checkpoint but the config says stage "
                                     f"{str(self.cfg.stage)!r}; {fresh}")
        ours, theirs = self.settings(), ck.get("settings")
        if theirs is not None and theirs != ours:
            diff = ", ".join(f"{part} {theirs.get(part)} -> {ours[part]}" for part in ours
                             if theirs.get(part) != ours[part])
            raise CheckpointMismatch(f"{source} was made with other model settings ({diff}); {fresh}")
        try:
            self.net_g.load_state_dict(ck["net_g"])
            self.opt_g.load_state_dict(ck["opt_g"])
            self.sched_g.load_state_dict(ck["sched_g"])
            if self.ema is not None:
                self.ema.load_state_dict(ck["net_g_ema"])
            if self.net_d is not None:
                self.net_d.load_state_dict(ck["net_d"])
                self.opt_d.load_state_dict(ck["opt_d"])  # type: ignore[union-attr]
                self.sched_d.load_state_dict(ck["sched_d"])  # type: ignore[union-attr]
        except (RuntimeError, KeyError, ValueError, TypeError) as e:  # an older checkpoint without "settings"
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointMismatch(f"{source} was made with other model settings ({first[:200]}); {fresh}") from None
        _set_rng_state(ck["rng"])
        self.iter = int(ck["iter"])
        assert ck["sampler"]["batches"] == self.iter  # one global batch per iteration

    def save(self, path: Path) -> None:
        _atomic_save(self.state_dict(), path)

    def restore(self, path: Path) -> None:
        self.load_state_dict(torch.load(path, map_location=self.net_g_device, weights_only=True), source=str(path))

    @property
    def net_g_device(self) -> torch.device:
        return next(self.net_g.parameters()).device

    def export(self) -> dict[str, Tensor]:
        """The weights to ship: the EMA generator when there is one, as a bare CPU state dict."""
        return {k: v.detach().cpu().clone() for k, v in (self.ema or self.net_g).state_dict().items()}


# ---------------------------------------------------------------------------------------------------------------
# One training step


@dataclass
class Objective:
    """The loss terms of the stage, weighted as configured."""

    cfg: Config
    percep: PerceptualLoss | None = None

    @classmethod
    def create(cls, cfg: Config, device: torch.device) -> Objective:
        percep = None
        if cfg.train.perceptual_weight > 0:
            p = cfg.perceptual
            percep = PerceptualLoss(layer_weights=p.layer_weights, pretrained=p.pretrained, weights=p.weights,
                                    weights_sha256=p.weights_sha256).to(device)
        return cls(cfg=cfg, percep=percep)


def train_step(s: TrainState, obj: Objective, inp: Tensor, target: Tensor) -> dict[str, Tensor]:
    """One iteration: a G step (and a D step in the GAN stages), the schedulers and the EMA; returns the losses."""
    tc = s.cfg.train
    assert s.g_fwd is not None
    out = s.g_fwd(inp)
    ref = usm_sharpen(target) if tc.usm_gt else target
    flat_out, flat_ref = out.flatten(0, -4), ref.flatten(0, -4)  # all frames of all clips form one image batch

    losses: dict[str, Tensor] = {}
    if tc.l1_weight:
        losses["l1"] = tc.l1_weight * F.l1_loss(out, ref)
    if tc.mse_weight:
        losses["mse"] = tc.mse_weight * F.mse_loss(out, ref)
    if obj.percep is not None:
        losses["percep"] = tc.perceptual_weight * obj.percep(flat_out, flat_ref)
    if s.net_d is not None:
        s.net_d.requires_grad_(False)  # G step: gradients flow through D into G only
        losses["gan_g"] = tc.gan_weight * lsgan_loss(s.net_d(flat_out), True)
    loss_g = sum(losses.values())
    s.opt_g.zero_grad(set_to_none=True)
    loss_g.backward()  # type: ignore[union-attr]
    s.opt_g.step()
    s.sched_g.step()

    if s.net_d is not None:  # D step: real frames -> 1, generated frames -> 0, one forward for both
        s.net_d.requires_grad_(True)
        real = target.flatten(0, -4)
        preds = s.d_fwd(torch.cat([real, flat_out.detach()]))  # type: ignore[misc]
        n = real.shape[0]
        l_real = lsgan_loss([p[:n] for p in preds], True)
        l_fake = lsgan_loss([p[n:] for p in preds], False)
        losses["d_real"], losses["d_fake"] = l_real, l_fake
        s.opt_d.zero_grad(set_to_none=True)  # type: ignore[union-attr]
        (l_real + l_fake).backward()
        s.opt_d.step()  # type: ignore[union-attr]
        s.sched_d.step()  # type: ignore[union-attr]

    if s.ema is not None:
        with torch.no_grad():
            for pe, p in zip(s.ema.parameters(), s.net_g.parameters(), strict=True):
                pe.lerp_(p, 1.0 - tc.ema_decay)
            for be, b in zip(s.ema.buffers(), s.net_g.buffers(), strict=True):
                be.copy_(b)
    s.iter += 1
    return losses


# ---------------------------------------------------------------------------------------------------------------
# Checkpoint files, RNG state, validation


def _atomic_save(obj: Any, path: Path) -> None:  # noqa: ANN401
    """Write to a temporary file in the same folder, then rename: a kill never leaves a half-written file."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _rng_state() -> dict[str, Any]:
    # Stored as tensors / plain lists so the checkpoint loads with weights_only=True.
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "python": [version, list(internal), gauss_next],
    }


def _set_rng_state(s: dict[str, Any]) -> None:
    torch.set_rng_state(s["torch"])
    if s["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])
    kind, keys, pos, has_gauss, gauss = s["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = s["python"]
    random.setstate((version, tuple(internal), gauss_next))


def _truncate_log(path: Path, last_iter: int) -> None:
    """Drop log lines written after the checkpoint we resume from (they will be written again, identically)."""
    if not path.exists():
        return
    keep = []
    for ln in path.read_text().splitlines():
        try:
            if json.loads(ln)["iter"] <= last_iter:
                keep.append(ln)
        except (json.JSONDecodeError, KeyError):  # a line cut short by the kill
            continue
    path.write_text("".join(ln + "\n" for ln in keep))


def _to_image(x: Tensor) -> np.ndarray:
    return (x.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)


@torch.no_grad()
def validate(net: nn.Module, items: list[tuple[Tensor, Tensor]], cfg: Config, image_path: Path | None) -> float:
    """Mean L1 of the generator on the fixed validation items; writes input | output | target for the first."""
    lbo = cfg.stage.trains_lbo
    was_training = net.training
    net.eval()
    total = 0.0
    for i, (inp, target) in enumerate(items):
        out = net(inp) if lbo else net.forward_sequence(inp)
        total += F.l1_loss(out, target).item()
        if i == 0 and image_path is not None:
            if lbo:
                shown = [_downscale(inp, cfg.data.scale)[0], out[0], target[0]]  # bicubic x0.5 | LBO | real LQ
            else:
                t = inp.shape[1] // 2
                up = F.interpolate(inp[:, t], scale_factor=cfg.data.scale, mode="bicubic", align_corners=False)
                shown = [up[0], out[0, t], target[0, t]]  # bicubic | SR | GT, middle frame
            from PIL import Image

            image_path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.concatenate([_to_image(s) for s in shown], axis=1)).save(image_path)
    net.train(was_training)
    return total / max(len(items), 1)


# ---------------------------------------------------------------------------------------------------------------
# Setup and the loop


@dataclass
class Trainer:
    """What :func:`setup` builds for :func:`train`."""

    cfg: Config
    rt: Runtime
    state: TrainState
    objective: Objective
    data: DataStream
    val_items: list[tuple[Tensor, Tensor]]
    out_dir: Path

    @property
    def ckpt_path(self) -> Path:
        return self.out_dir / "ckpt" / "last.pth"

    @property
    def log_path(self) -> Path:
        return self.out_dir / "log.jsonl"

    @property
    def export_path(self) -> Path:
        return self.out_dir / ("lbo.pth" if self.cfg.stage.trains_lbo else "animesr.pth")


def setup(cfg: Config, *, source: str = "config") -> Trainer:
    """Check paths, start the process group, build models, losses and optimisers, resume, then start the data.

    Raises:
        ConfigError: a missing input, a world size that does not divide the batch, a checkpoint from another
            stage or other model settings. VGGWeightsError, vsanimesr.WeightsError: unusable weights.
    """
    check_paths(cfg, source=source)
    rt = init_runtime(cfg)
    torch.manual_seed(cfg.run.seed)  # the same on every rank: identical initial weights
    np.random.seed(cfg.run.seed)
    random.seed(cfg.run.seed)
    out_dir = Path(cfg.run.out_dir)
    if rt.master:
        (out_dir / "ckpt").mkdir(parents=True, exist_ok=True)
        (out_dir / "config.yml").write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))

    state = TrainState.create(cfg, rt.device)
    objective = Objective.create(cfg, rt.device)
    ckpt, log_path = out_dir / "ckpt" / "last.pth", out_dir / "log.jsonl"
    if cfg.run.resume and ckpt.exists():  # everything that influences the next loss: the curve continues exactly
        state.restore(ckpt)
        if rt.master:
            _truncate_log(log_path, state.iter)
        log.info("resumed from %s at iteration %d", ckpt, state.iter)
    elif rt.master and log_path.exists():
        log_path.unlink()  # a fresh run

    lbo_pool = None
    if cfg.data.lbo_pool:
        from training.degradations.lbo import load_lbo_pool

        lbo_pool = load_lbo_pool(cfg.data.lbo_pool, device=rt.device)
    try:
        train_set, val_set = build_datasets(cfg)
    except (ValueError, OSError) as e:  # no clips, clips too short, unreadable pairs: the data the config names
        raise ConfigError(f"data: {e}", source=source) from None
    val_items = validation_items(cfg, val_set, rt.device, lbo_pool) if rt.master else []
    data = DataStream(cfg, train_set, rt, start_batch=state.iter, lbo_pool=lbo_pool)
    if rt.distributed:  # gradients averaged over processes; the raw modules stay for EMA, checkpoints and export
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [rt.local_rank] if rt.device.type == "cuda" else None
        state.g_fwd = DDP(state.g_fwd, device_ids=ids)
        state.d_fwd = DDP(state.net_d, device_ids=ids) if state.net_d is not None else None
    log.info("stage %s: global batch %d = %d process(es) x %d, device %s", cfg.stage, cfg.data.batch_size, rt.world,
             cfg.data.batch_size // rt.world, rt.device)
    return Trainer(cfg=cfg, rt=rt, state=state, objective=objective, data=data, val_items=val_items, out_dir=out_dir)


def train(t: Trainer) -> int:
    """The loop: steps, logging, validation and checkpoints until ``train.iters``; returns the exit status."""
    cfg, rt, s = t.cfg, t.rt, t.state
    ema_or_g = s.ema or s.net_g

    def write_log(rec: dict[str, Any]) -> None:
        with open(t.log_path, "a") as f:
            f.write(json.dumps(rec) + "\n")

    if rt.master and s.iter == 0:
        img = t.out_dir / "val" / "iter_0000000.png"
        write_log({"iter": 0, "val_l1": validate(ema_or_g, t.val_items, cfg, img)})
    t0 = time.time()
    while s.iter < cfg.train.iters:
        inp, target = next(t.data)
        losses = train_step(s, t.objective, inp, target)
        it = s.iter
        if it % cfg.log.log_every == 0 or it == cfg.train.iters:
            vals = torch.stack([v.detach().float() for v in losses.values()]
                               + [torch.tensor(float(t.data.codec_fallbacks), device=rt.device)])
            if rt.distributed:
                dist.all_reduce(vals)
                vals[:-1] /= rt.world  # losses are averaged, fallbacks summed
            if rt.master:
                rec = {"iter": it, "lr_g": s.sched_g.get_last_lr()[0],
                       **dict(zip(losses, vals[:-1].tolist(), strict=True))}
                if vals[-1] > 0:
                    rec["codec_fallbacks"] = int(vals[-1])
                write_log(rec)
                log.info("iter %d %s (%.2f s/it)", it, " ".join(f"{k}={v:.5g}" for k, v in rec.items() if k != "iter"),
                         (time.time() - t0) / cfg.log.log_every)
                t0 = time.time()
        if rt.master and (it % cfg.log.val_every == 0 or it == cfg.train.iters):
            img = t.out_dir / "val" / f"iter_{it:07d}.png"
            write_log({"iter": it, "val_l1": validate(ema_or_g, t.val_items, cfg, img)})
        if rt.master and (it % cfg.log.save_every == 0 or it == cfg.train.iters):
            s.save(t.ckpt_path)
            _atomic_save(s.export(), t.export_path)
        if cfg.run.stop_at is not None and it >= cfg.run.stop_at:
            log.warning("stopping at iteration %d (run.stop_at), as if killed", it)
            return 3
    if rt.master:
        log.info("done: %s", t.export_path)
    if rt.distributed:
        dist.barrier()  # let rank 0 finish validation and saving before the group goes away
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="animesr-train", description=__doc__.split("\n\n")[0])
    ap.add_argument("config", help="YAML config (see training/configs/train_*.yml)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config value, e.g. --set train.lr_g=1e-4 (repeatable; YAML syntax)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from vsanimesr.loader import WeightsError

    trainer = None
    try:
        cfg = load_config(args.config, args.overrides)
        trainer = setup(cfg, source=args.config)
        return train(trainer)
    except (ConfigError, VGGWeightsError, WeightsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if trainer is not None:
            trainer.data.close()
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    raise SystemExit(main())

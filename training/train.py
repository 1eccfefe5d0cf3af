"""Train an LBO or the AnimeSR network: ``python -m training.train CONFIG.yml [--set key=value ...]``.

One plain loop for the four stages of the AnimeSR recipe (chosen by ``stage`` in the config):

- ``lbo``     : fit a learned basic operator, pseudo-HR -> LQ, L1 + MSE.
- ``lbo_gan`` : fine-tune an LBO with L1 + perceptual + GAN.
- ``vsr_l1``  : AnimeSR stage 1, L1 against a USM-sharpened GT, EMA.
- ``vsr_gan`` : AnimeSR stage 2, L1 + perceptual + LSGAN with a multi-scale PatchGAN, EMA.

Multi-GPU / multi-node: launch the same command with ``torchrun`` (DDP; NCCL on CUDA, gloo on CPU). The batch size
in the config is per process; the data stream is split so that N processes with batch b see exactly the samples one
process with batch N*b would see.

The run folder (``run.out_dir``) gets ``config.yml`` (resolved), ``log.jsonl`` (one line per logged iteration:
losses, learning rate; validation lines carry ``val_l1``), ``val/*.png`` (input | output | target),
``ckpt/last.pth`` (everything needed to resume exactly) and the exported weights: ``animesr.pth`` (VSR stages; the
EMA generator as a bare state dict, loadable by ``vsanimesr.load_model`` and ``core.animesr.Upscale(model=...)``)
or ``lbo.pth`` (LBO stages; usable in a degradation config's LBO pool).
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
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler

from training.config import Config, ConfigError, config_to_dict, load_config
from training.discriminator import MultiScaleDiscriminator
from training.losses import PerceptualLoss, VGGWeightsError, lsgan_loss, usm_sharpen

__all__ = ["StreamSampler", "SyntheticClips", "main"]

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


class SyntheticClips(Dataset):
    """Generated cartoon clips (HR kept in memory), degraded per (seed, epoch, index): for tests and quick runs."""

    def __init__(self, num_clips: int, *, clip_len: int, gt_size: int, scale: int, degradation: Any = None,
                 lbo_pool: Sequence[nn.Module] | None = None, seed: int = 0) -> None:
        from training.synthetic import make_synthetic_cartoon_clip

        clips = [make_synthetic_cartoon_clip(clip_len, gt_size, gt_size, rng=np.random.default_rng([seed, i]))
                 for i in range(num_clips)]
        self.clips = [torch.from_numpy(c).permute(0, 3, 1, 2).float().div(255.0) for c in clips]
        self.scale, self.degradation, self.lbo_pool, self.seed, self.epoch = scale, degradation, lbo_pool, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> dict[str, Any]:
        gt = self.clips[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        if rng.random() < 0.5:  # the clip played backwards, as in the published sampling
            gt = gt.flip(0)
        item: dict[str, Any] = {"gt": gt, "key": f"synthetic/{index}"}
        if self.degradation is not None:
            from training.degradations.pipeline import degrade_clip

            item["lq"], _ = degrade_clip(gt, self.degradation, rng=rng, lbo_pool=self.lbo_pool)
        return item


def _downscale(x: Tensor, scale: int) -> Tensor:
    """Antialiased bicubic 1/scale of (..., 3, H, W): the LR when no degradation pipeline is configured."""
    shape = x.shape
    y = F.interpolate(x.reshape(-1, *shape[-3:]), scale_factor=1 / scale, mode="bicubic", antialias=True,
                      align_corners=False).clamp(0, 1)
    return y.reshape(*shape[:-2], *y.shape[-2:])


def build_datasets(cfg: Config) -> tuple[Dataset, list[dict[str, Any]]]:
    """The training set and a fixed list of validation items, by ``data.kind``."""
    d, seed = cfg.data, cfg.run.seed
    val_seed = seed + 10_007
    if d.kind == "pairs":
        from training.paired_data import PairedFrames

        if not d.paths:
            raise ConfigError("build_datasets: data.paths must name at least one pseudo_hr output folder")
        train_set: Dataset = PairedFrames(d.paths, gt_size=d.gt_size, scale=d.scale, seed=seed, augment=d.augment)
        val_set = PairedFrames(d.val_paths or d.paths, gt_size=d.gt_size, scale=d.scale, seed=val_seed, augment=False)
    else:
        degradation = lbo_pool = None
        if d.degradation is not None:
            from training.degradations.pipeline import DegradationConfig

            degradation = DegradationConfig.from_yaml(d.degradation)
        if d.lbo_pool:
            from training.degradations.lbo import load_lbo_pool

            lbo_pool = load_lbo_pool(d.lbo_pool)
        kw = dict(clip_len=d.clip_len, gt_size=d.gt_size, scale=d.scale, degradation=degradation, lbo_pool=lbo_pool)
        if d.kind == "synthetic":
            train_set = SyntheticClips(d.num_clips, seed=seed, **kw)
            val_set = SyntheticClips(d.num_val, seed=val_seed, **kw)
        else:
            from training.data import ClipDataset

            if not d.paths:
                raise ConfigError("build_datasets: data.paths must name clip folders or videos")
            train_set = ClipDataset(d.paths, seed=seed, augment=d.augment, **kw)
            val_set = ClipDataset(d.val_paths or d.paths, seed=val_seed, **kw)
    val_items = [val_set[i % len(val_set)] for i in range(d.num_val)]  # type: ignore[arg-type]
    return train_set, val_items


# ---------------------------------------------------------------------------------------------------------------
# Models, checkpoints


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
    if cfg.stage in ("lbo", "lbo_gan"):
        from training.lbo_arch import LBONet, load_lbo

        return load_lbo(m.pretrained) if m.pretrained else LBONet(num_feat=m.num_feat, downscale=cfg.data.scale)
    from vsanimesr.archs.animesr import AnimeSRNet
    from vsanimesr.loader import load_model
    from vsanimesr.weights import resolve

    if m.pretrained:
        net = load_model(resolve(m.pretrained))
        if net.scale != cfg.data.scale:
            raise ConfigError(f"build_generator: model.pretrained is x{net.scale} but data.scale is {cfg.data.scale}")
        return net
    return AnimeSRNet(num_feat=m.num_feat, num_blocks=m.num_blocks, scale=cfg.data.scale)


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
def validate(net: nn.Module, items: list[dict[str, Any]], cfg: Config, device: torch.device,
             image_path: Path | None) -> float:
    """Mean L1 of the generator on the fixed validation items; writes input | output | target for the first."""
    lbo = cfg.stage in ("lbo", "lbo_gan")
    was_training = net.training
    net.eval()
    total = 0.0
    for i, item in enumerate(items):
        if lbo:
            inp, target = item["hr"][None].to(device), item["lq"][None].to(device)
            out = net(inp)
        else:
            target = item["gt"][None].to(device)
            inp = item["lq"][None].to(device) if "lq" in item else _downscale(target, cfg.data.scale)
            out = net.forward_sequence(inp)
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


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.split("\n\n")[0])
    ap.add_argument("config", help="YAML config (see examples/configs/train_*.yml)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config value, e.g. --set train.lr_g=1e-4 (repeatable; YAML syntax)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)  # noqa: T201
        return 2

    # --- processes and devices: torchrun sets RANK/WORLD_SIZE/LOCAL_RANK; a plain run is one process
    distributed = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    use_cuda = cfg.run.device == "cuda" or (cfg.run.device == "auto" and torch.cuda.is_available())
    rank, world, local_rank = 0, 1, 0
    if distributed:
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        rank, world, local_rank = dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    master = rank == 0
    seed = cfg.run.seed
    torch.manual_seed(seed)  # the same on every rank: identical initial weights
    np.random.seed(seed)
    random.seed(seed)
    out_dir = Path(cfg.run.out_dir)
    ckpt_path, log_path = out_dir / "ckpt" / "last.pth", out_dir / "log.jsonl"
    if master:
        (out_dir / "ckpt").mkdir(parents=True, exist_ok=True)
        (out_dir / "config.yml").write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))

    # --- models, losses, optimisers: explicit per stage
    stage, tc = cfg.stage, cfg.train
    vsr = stage in ("vsr_l1", "vsr_gan")
    net_g = build_generator(cfg).to(device).train()
    ema = copy.deepcopy(net_g).eval().requires_grad_(False) if tc.ema_decay > 0 else None
    net_d = None
    if stage in ("lbo_gan", "vsr_gan"):
        net_d = MultiScaleDiscriminator(num_scales=cfg.disc.num_scales, num_feat=cfg.disc.num_feat).to(device).train()
    percep = None
    if tc.perceptual_weight > 0:
        try:
            percep = PerceptualLoss(layer_weights=cfg.perceptual.layer_weights, pretrained=cfg.perceptual.pretrained,
                                    weights_path=cfg.perceptual.weights_path).to(device)
        except VGGWeightsError as e:
            print(f"error: {e}", file=sys.stderr)  # noqa: T201
            return 2
    opt_g = torch.optim.Adam(net_g.parameters(), lr=tc.lr_g, betas=tc.betas)
    sched_g = torch.optim.lr_scheduler.MultiStepLR(opt_g, milestones=list(tc.milestones), gamma=tc.gamma)
    opt_d = sched_d = None
    if net_d is not None:
        opt_d = torch.optim.Adam(net_d.parameters(), lr=tc.lr_d, betas=tc.betas)
        sched_d = torch.optim.lr_scheduler.MultiStepLR(opt_d, milestones=list(tc.milestones), gamma=tc.gamma)

    # --- resume: everything that influences the next loss, so the curve continues exactly
    it = 0
    if cfg.run.resume and ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location=device, weights_only=True)
        if ck["stage"] != stage:
            print(f"error: {ckpt_path} is a {ck['stage']!r} checkpoint but the config says stage {stage!r}; "  # noqa: T201
                  "use another run.out_dir or run.resume: false", file=sys.stderr)
            return 2
        net_g.load_state_dict(ck["net_g"])
        opt_g.load_state_dict(ck["opt_g"])
        sched_g.load_state_dict(ck["sched_g"])
        if ema is not None:
            ema.load_state_dict(ck["net_g_ema"])
        if net_d is not None:
            net_d.load_state_dict(ck["net_d"])
            opt_d.load_state_dict(ck["opt_d"])  # type: ignore[union-attr]
            sched_d.load_state_dict(ck["sched_d"])  # type: ignore[union-attr]
        _set_rng_state(ck["rng"])
        it = int(ck["iter"])
        assert ck["sampler"]["batches"] == it  # one global batch per iteration
        if master:
            _truncate_log(log_path, it)
        log.info("resumed from %s at iteration %d", ckpt_path, it)
    elif master and log_path.exists():
        log_path.unlink()  # a fresh run

    # --- data
    train_set, val_items = build_datasets(cfg)
    sampler = StreamSampler(len(train_set), batch_size=cfg.data.batch_size, rank=rank, world_size=world, seed=seed,
                            start_batch=it)
    loader = DataLoader(_EpochKeyed(train_set), batch_size=cfg.data.batch_size, sampler=sampler,
                        num_workers=cfg.data.num_workers, pin_memory=use_cuda,
                        generator=torch.Generator().manual_seed(seed))  # keeps the global RNG untouched
    batches = iter(loader)

    # --- DDP wrappers (gradients averaged over processes); the raw modules stay for EMA, checkpoints and export
    g_fwd: nn.Module = _Sequence(net_g) if vsr else net_g
    d_fwd: nn.Module | None = net_d
    if distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [local_rank] if use_cuda else None
        g_fwd = DDP(g_fwd, device_ids=ids)
        d_fwd = DDP(net_d, device_ids=ids) if net_d is not None else None
    export_name = "animesr.pth" if vsr else "lbo.pth"

    def write_log(rec: dict[str, Any]) -> None:
        with open(log_path, "a") as f:
            f.write(json.dumps(rec) + "\n")

    if master and it == 0:
        img = out_dir / "val" / "iter_0000000.png"
        write_log({"iter": 0, "val_l1": validate(ema or net_g, val_items, cfg, device, img)})

    t0 = time.time()
    while it < tc.iters:
        it += 1
        batch = next(batches)
        if vsr:
            target = batch["gt"].to(device, non_blocking=True)
            inp = batch["lq"].to(device) if "lq" in batch else _downscale(target, cfg.data.scale)
        else:  # an LBO maps pseudo-HR to the real LQ
            inp, target = batch["hr"].to(device), batch["lq"].to(device)
        out = g_fwd(inp)
        ref = usm_sharpen(target) if tc.usm_gt else target
        flat_out, flat_ref = out.flatten(0, -4), ref.flatten(0, -4)  # all frames of all clips form one image batch

        losses: dict[str, Tensor] = {}
        if tc.l1_weight:
            losses["l1"] = tc.l1_weight * F.l1_loss(out, ref)
        if tc.mse_weight:
            losses["mse"] = tc.mse_weight * F.mse_loss(out, ref)
        if percep is not None:
            losses["percep"] = tc.perceptual_weight * percep(flat_out, flat_ref)
        if net_d is not None:
            net_d.requires_grad_(False)  # G step: gradients flow through D into G only
            losses["gan_g"] = tc.gan_weight * lsgan_loss(net_d(flat_out), True)
        loss_g = sum(losses.values())
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()  # type: ignore[union-attr]
        opt_g.step()
        sched_g.step()

        if net_d is not None:  # D step: real frames -> 1, generated frames -> 0, one forward for both
            net_d.requires_grad_(True)
            real = target.flatten(0, -4)
            preds = d_fwd(torch.cat([real, flat_out.detach()]))  # type: ignore[misc]
            n = real.shape[0]
            l_real = lsgan_loss([p[:n] for p in preds], True)
            l_fake = lsgan_loss([p[n:] for p in preds], False)
            losses["d_real"], losses["d_fake"] = l_real, l_fake
            opt_d.zero_grad(set_to_none=True)  # type: ignore[union-attr]
            (l_real + l_fake).backward()
            opt_d.step()  # type: ignore[union-attr]
            sched_d.step()  # type: ignore[union-attr]

        if ema is not None:
            with torch.no_grad():
                for pe, p in zip(ema.parameters(), net_g.parameters(), strict=True):
                    pe.lerp_(p, 1.0 - tc.ema_decay)
                for be, b in zip(ema.buffers(), net_g.buffers(), strict=True):
                    be.copy_(b)

        if it % cfg.log.log_every == 0 or it == tc.iters:
            vals = torch.stack([v.detach().float() for v in losses.values()])
            if distributed:
                dist.all_reduce(vals)
                vals /= world
            if master:
                rec = {"iter": it, "lr_g": sched_g.get_last_lr()[0], **dict(zip(losses, vals.tolist(), strict=True))}
                write_log(rec)
                log.info("iter %d %s (%.2f s/it)", it, " ".join(f"{k}={v:.5f}" for k, v in rec.items() if k != "iter"),
                         (time.time() - t0) / cfg.log.log_every)
                t0 = time.time()
        if master and (it % cfg.log.val_every == 0 or it == tc.iters):
            img = out_dir / "val" / f"iter_{it:07d}.png"
            write_log({"iter": it, "val_l1": validate(ema or net_g, val_items, cfg, device, img)})
        if master and (it % cfg.log.save_every == 0 or it == tc.iters):
            state = {
                "iter": it, "stage": stage, "config": config_to_dict(cfg),
                "net_g": net_g.state_dict(), "opt_g": opt_g.state_dict(), "sched_g": sched_g.state_dict(),
                "net_g_ema": ema.state_dict() if ema is not None else None,
                "net_d": net_d.state_dict() if net_d is not None else None,
                "opt_d": opt_d.state_dict() if opt_d is not None else None,
                "sched_d": sched_d.state_dict() if sched_d is not None else None,
                "rng": _rng_state(), "sampler": {"batches": it},
            }
            _atomic_save(state, ckpt_path)
            _atomic_save({k: v.detach().cpu().clone() for k, v in (ema or net_g).state_dict().items()},
                         out_dir / export_name)
        if cfg.run.stop_at is not None and it >= cfg.run.stop_at:
            log.warning("stopping at iteration %d (run.stop_at), as if killed", it)
            return 3

    if master:
        log.info("done: %s", out_dir / export_name)
    if distributed:
        dist.barrier()  # let rank 0 finish validation and saving before the group goes away
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

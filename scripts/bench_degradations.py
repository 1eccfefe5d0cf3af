"""Clips/s per CPU core of the degradation data path, before and after moving the tensor steps to the device.

    python scripts/bench_degradations.py [--config training/configs/degradations_lbo.yml] [--clips 16]
        [--batch 16] [--device cpu|cuda]

Each clip is 15x256x256 HR -> 15x64x64 LR (the published sizes), with published-size LBOs (64 features,
randomly initialised: the cost does not depend on the weights). Rows:

- ``before``: every step (blur, noise, resize/LBO, codec) in a data-loader worker, one clip at a time on one
  core (:func:`degrade_clip` on the CPU), the way the data path worked before;
- ``after, worker``: what stays in a CPU process per clip: 8-bit quantisation and the codec round trip
  (:func:`run_codec`, as the codec worker processes run it);
- ``after, device``: blur, noise and resize/LBO for batches of ``--batch`` clips on ``--device``
  (:func:`apply_tensor_steps`, as the training loop runs it), wall time per clip.

Times are process CPU time (the fair per-core figure on a shared machine) with one torch thread, except the
device row (wall time, synchronised). The CPU model and its vector extensions are printed with the figures.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402 - after OMP_NUM_THREADS
import torch  # noqa: E402

from training.degradations import DegradationConfig, degrade_clip  # noqa: E402
from training.degradations.pipeline import apply_tensor_steps, draw_degradation, run_codec, to_uint8  # noqa: E402
from training.synthetic import make_synthetic_cartoon_clip  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def cpu_description() -> str:
    """Model name and the vector extensions that matter for convolutions (from /proc/cpuinfo)."""
    model, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "unknown CPU":
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16")
    have = [f for f in wanted if f in flags]
    lacking = [f for f in wanted if f not in flags]
    no = f"; no {', '.join(lacking)}" if lacking else ""
    return f"{model} ({', '.join(have) or 'no AVX2'}{no})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(REPO / "training/configs/degradations_lbo.yml"))
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--frames", type=int, default=15)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(1)
    device = torch.device(args.device)
    cfg = DegradationConfig.from_yaml(args.config)
    from training.lbo_arch import LBONet

    torch.manual_seed(0)
    pool = [LBONet().eval() for _ in range(3)] if cfg.uses_lbo else None
    rng0 = np.random.default_rng(0)
    hr = torch.stack([
        torch.from_numpy(make_synthetic_cartoon_clip(args.frames, args.size, args.size, rng=rng0)).permute(0, 3, 1, 2)
        for _ in range(4)
    ]).float().div(255)
    print(f"cpu: {cpu_description()}; torch {torch.__version__}, 1 thread")
    print(f"config {Path(args.config).name}: {args.frames}x{args.size}x{args.size} -> "
          f"{args.frames}x{args.size // cfg.scale}x{args.size // cfg.scale}, LBO pool {len(pool or [])}")

    # before: everything per clip on one CPU core
    degrade_clip(hr[0], cfg, rng=np.random.default_rng(0), lbo_pool=pool)  # warm-up
    c0 = time.process_time()
    for i in range(args.clips):
        degrade_clip(hr[i % 4], cfg, rng=np.random.default_rng(i), lbo_pool=pool)
    before = (time.process_time() - c0) / args.clips
    print(f"before (all steps per clip in a CPU worker): {before * 1000:.1f} ms CPU/clip -> "
          f"{1 / before:.2f} clips/s per core")

    # after: the device part, batched
    draws = [draw_degradation(cfg, np.random.default_rng(i), num_frames=args.frames, num_lbos=len(pool or []))
             for i in range(args.clips)]
    dev_pool = [n.to(device) for n in pool] if pool else None
    x_all = hr.to(device)
    lr_u8 = []

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    apply_tensor_steps(x_all[:1], draws[:1], cfg, dev_pool)  # warm-up
    sync()
    t0, c0 = time.perf_counter(), time.process_time()
    for start in range(0, args.clips, args.batch):
        idx = list(range(start, min(start + args.batch, args.clips)))
        lq = apply_tensor_steps(x_all[[i % 4 for i in idx]], [draws[i] for i in idx], cfg, dev_pool)
        lr_u8 += list(to_uint8(lq, mode=cfg.codec.quantize).cpu().numpy())
    sync()
    dev_wall, dev_cpu = (time.perf_counter() - t0) / args.clips, (time.process_time() - c0) / args.clips

    # after: the worker part, per clip
    coded = [i for i, d in enumerate(draws) if d.codec is not None]
    c0 = time.process_time()
    for i in coded:
        run_codec(lr_u8[i], draws[i].codec, cfg.codec)  # type: ignore[arg-type]
    worker = (time.process_time() - c0) / max(len(coded), 1)
    print(f"after, worker (quantised clip -> codec round trip): {worker * 1000:.1f} ms CPU/clip -> "
          f"{1 / worker:.2f} clips/s per core")
    print(f"after, device ({args.device}, batches of {args.batch}: blur, noise, resize/LBO): "
          f"{dev_wall * 1000:.1f} ms/clip wall ({dev_cpu * 1000:.1f} ms CPU/clip)")


if __name__ == "__main__":
    main()

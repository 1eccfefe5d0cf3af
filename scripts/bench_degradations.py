"""Clips/s per CPU core of the degradation pipeline: 15x256x256 HR -> 15x64x64 LR with H.264 (target >= 5).

    python scripts/bench_degradations.py [--config examples/configs/degradations.yml] [--clips 20] [--threads 1]

Runs with one torch thread by default, so the figure is per core. Reports wall-clock time and process CPU time
(the fair per-core figure on a shared machine), then the CPU time of each step on its own, to show where it goes.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from training.degradations import DegradationConfig, degrade_clip  # noqa: E402
from training.degradations.pipeline import _blur, _codec, _noise, _resize  # noqa: E402
from training.synthetic import make_synthetic_cartoon_clip  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "examples/configs/degradations.yml"))
    ap.add_argument("--clips", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--frames", type=int, default=15)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = DegradationConfig.from_yaml(args.config)
    if cfg.resize.lbo_prob > 0:
        from training.lbo_arch import LBONet

        pool = [LBONet().eval().to(args.device)]
        print("note: LBO config, using one randomly initialised LBONet")
    else:
        pool = None
    rng0 = np.random.default_rng(0)
    hr = [
        torch.from_numpy(make_synthetic_cartoon_clip(args.frames, args.size, args.size, rng=rng0))
        .permute(0, 3, 1, 2).float().div(255).to(args.device)
        for _ in range(4)
    ]
    degrade_clip(hr[0], cfg, rng=np.random.default_rng(0), lbo_pool=pool)  # warm-up
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(args.clips):
        lr, _ = degrade_clip(hr[i % len(hr)], cfg, rng=np.random.default_rng(i), lbo_pool=pool)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    rate = args.clips / dt
    print(f"{args.clips} clips {tuple(hr[0].shape)} -> {tuple(lr.shape)} on {args.device}, {args.threads} thread(s): "
          f"{dt / args.clips * 1000:.1f} ms/clip wall, {rate:.2f} clips/s")
    # CPU time (all threads of this process) is the fair per-core figure on a shared machine.
    print(f"CPU time {cpu / args.clips * 1000:.1f} ms/clip -> {args.clips / cpu:.2f} clips/s per CPU core")

    steps = {"blur": 0.0, "noise": 0.0, "resize": 0.0, "codec": 0.0}
    fns = (
        ("blur", lambda x, r: _blur(x, cfg.blur, r)),
        ("noise", lambda x, r: _noise(x, cfg.noise, r)),
        ("resize", lambda x, r: _resize(x, cfg.resize, r, pool)),
        ("codec", lambda x, r: _codec(x, cfg.codec, r)),
    )
    for i in range(args.clips):
        rng = np.random.default_rng(i)
        x = hr[i % len(hr)]
        for name, fn in fns:
            t = time.process_time()
            x, _ = fn(x, rng)
            steps[name] += time.process_time() - t
    print("per step (CPU ms/clip): " + ", ".join(f"{k} {v / args.clips * 1000:.1f}" for k, v in steps.items()))


if __name__ == "__main__":
    main()

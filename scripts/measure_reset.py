"""Measure how visible periodic recurrence restarts are, to choose ``reset_interval`` / ``warmup`` defaults.

For each warm-up length, the clip is upscaled with periodic restarts and compared with one linear chain
(``reset_interval=0``): the PSNR of each restart frame (and the worst frame after it) against the linear chain says
how far a restart moves the picture. Also prints the scene-cut metric's distribution.

    python scripts/measure_reset.py VIDEO [--crop 160x240] [--frames 0:181] [--interval 32] [--warmups 0,2,4,8,16]
"""

from __future__ import annotations

import argparse
import time

import av
import numpy as np
import torch

from animesr_tools.evaluation import restart_visibility
from vsanimesr.engine import AnimeSR, scene_metric


def read_frames(path: str, start: int, stop: int, crop: tuple[int, int] | None) -> np.ndarray:
    frames = []
    with av.open(path) as f:
        for i, fr in enumerate(f.decode(video=0)):
            if i >= stop:
                break
            if i >= start:
                a = fr.to_ndarray(format="rgb24")
                if crop:
                    h, w = crop
                    y0, x0 = (a.shape[0] - h) // 2, (a.shape[1] - w) // 2
                    a = a[y0 : y0 + h, x0 : x0 + w]
                frames.append(a)
    return np.stack(frames)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("video")
    ap.add_argument("--crop", default="160x240", help="HxW centre crop of the LR frames ('' for none)")
    ap.add_argument("--frames", default="0:181")
    ap.add_argument("--interval", type=int, default=32)
    ap.add_argument("--warmups", default="0,2,4,8,16")
    ap.add_argument("--model", default="v2")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    crop = tuple(int(v) for v in args.crop.split("x")) if args.crop else None
    a, b = (int(v) for v in args.frames.split(":"))
    clip = read_frames(args.video, a, b, crop)  # type: ignore[arg-type]
    t = torch.from_numpy(clip).float() / 255
    metric = [scene_metric(t[i - 1], t[i]) for i in range(1, len(t))]
    order = np.argsort(metric)[::-1]
    print(f"scene metric: top values {[(int(i) + 1 + a, round(metric[i], 4)) for i in order[:5]]}, "
          f"median {np.median(metric):.4f}")

    t0 = time.perf_counter()
    linear = AnimeSR(model=args.model, device="cpu", reset_interval=0, scene_threshold=0).upscale(clip)
    print(f"linear chain: {len(clip)} frames in {time.perf_counter() - t0:.1f} s")
    print(f"restart frames: {list(range(args.interval, len(clip), args.interval))}")
    print("| warmup | PSNR at restart (mean / min) | worst PSNR in the 8 frames after | steps / frame |")
    print("|---|---|---|---|")
    for w in (int(v) for v in args.warmups.split(",")):
        r = restart_visibility(clip, model=args.model, interval=args.interval, warmup=w, linear=linear)
        print(f"| {w} | {np.mean(r.psnr_at):.2f} / {np.min(r.psnr_at):.2f} | {np.min(r.psnr_worst_after):.2f} "
              f"| {r.steps_per_frame:.3f} |")


if __name__ == "__main__":
    main()

"""Frames/s through ``core.animesr.Upscale`` under vspipe vs the engine's bare loop on the same frames.

    python scripts/bench_vs.py [--frames 24] [--crop 160x96] [--device cpu] [--threads 2]

Both runs use the same frames (a centre crop of the demo clip, or synthetic frames when it is absent), the same
engine settings and the same torch thread count, so the ratio measures what the VapourSynth route costs.
vspipe's own timer starts after the script (and the engine) is built, as the bare loop's does.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from animesr_tools.vsbench import BARE, VPY

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO.parent / "shared" / "data" / "onepiece_demo.mp4"




def load_frames(n: int, w: int, h: int) -> np.ndarray:
    """(n, 3, h, w) float32 RGB in [0, 1]."""
    import vapoursynth as vs

    core = vs.core
    if DEMO.exists() and hasattr(core, "bs"):
        clip = core.bs.VideoSource(str(DEMO))
        clip = core.std.CropAbs(clip, width=w, height=h, left=(clip.width - w) // 4 * 2, top=(clip.height - h) // 4 * 2)
        clip = core.resize.Bicubic(clip, format=vs.RGBS, matrix_in_s="170m")
        return np.stack([np.stack([np.asarray(f[p]) for p in range(3)]) for f in clip.frames(close=True)][:n])
    rng = np.random.default_rng(0)
    base = rng.random((3, h, w), dtype=np.float32)
    return np.stack([np.roll(base, t, axis=2) for t in range(n)])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--crop", default="160x96", help="low-resolution WxH")
    ap.add_argument("--model", default="v2")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    args = ap.parse_args(argv)
    w, h = (int(v) for v in args.crop.lower().split("x"))

    import torch

    torch.set_num_threads(args.threads)
    frames = load_frames(args.frames, w, h)
    n = len(frames)
    with tempfile.TemporaryDirectory() as tmp:
        npy = Path(tmp) / "frames.npy"
        np.save(npy, frames)
        fmt = dict(threads=args.threads, npy=str(npy), model=args.model, device=args.device)
        script = Path(tmp) / "bench.vpy"
        script.write_text(VPY.format(**fmt, extra=""))
        bare = Path(tmp) / "bare.py"
        bare.write_text(BARE.format(**fmt))
        vspipe = Path(sys.executable).with_name("vspipe")
        env = dict(os.environ, PYTHONPATH=str(REPO))
        # Both runs are fresh processes with the same settings, run back to back.
        proc = subprocess.run([str(vspipe), "-p", str(script), "."], capture_output=True, text=True, env=env)
        ref = subprocess.run([sys.executable, str(bare)], capture_output=True, text=True, env=env)
    m = re.search(r"Output (\d+) frames in ([\d.]+) seconds \(([\d.]+) fps\)", proc.stderr)
    b = re.search(r"BARE_FPS ([\d.]+)", ref.stdout)
    if proc.returncode != 0 or ref.returncode != 0 or not m or not b:
        print(proc.stderr[-3000:], ref.stderr[-3000:])
        return 1
    vs_fps, bare_fps = float(m.group(3)), float(b.group(1))
    print(f"{n} frames of {w}x{h} -> {4 * w}x{4 * h}, model {args.model}, device {args.device}, "
          f"{args.threads} torch threads")
    print(f"vspipe core.animesr.Upscale : {vs_fps:8.3f} frames/s")
    print(f"engine bare loop            : {bare_fps:8.3f} frames/s")
    print(f"ratio (vspipe / bare)       : {vs_fps / bare_fps:8.3f}   (target >= 0.95 on CPU)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

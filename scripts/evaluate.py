"""Compare upscalers on quality, temporal stability and restart visibility; writes tables, plots and crops.

    python scripts/evaluate.py --clips ../shared/data/onepiece_demo.mp4 --crop 160x120 --frames 0:48 \\
        --synthetic 2 --models bicubic,v1,v2,realesrgan-animevideov3 --out eval_out

Clips:
    --clips       real low-quality videos or image folders: no ground truth, so NIQE + flicker only.
    --hr-clips    high-quality videos or image folders, degraded by the project's pipeline into synthetic pairs
                  (PSNR/SSIM on Y against the original, plus everything above).
    --synthetic N procedural cartoon clips (training.synthetic) degraded the same way; the default when neither
                  --clips nor --hr-clips is given.
Models: ``v1``, ``v2``, a weight file, ``bicubic``, ``nearest``, ``realesrgan-animevideov3`` (skipped with a message
when its optional packages are missing). AnimeSR models run through the engine with its default recurrence settings.

Writes OUT/results.csv, OUT/results.md, OUT/metrics.png, OUT/frames_*.png (per-frame PSNR: synthetic clips against
the ground truth; restarts against one linear chain) and OUT/crops_<clip>.png. Metric definitions:
``vsanimesr/evaluation.py``.
"""

from __future__ import annotations

import argparse
import logging
import math
import re
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

from animesr_tools.evaluation import (  # noqa: E402
    Clip,
    clip_metrics,
    format_markdown,
    is_recurrent,
    make_upscaler,
    restart_visibility,
    save_crops,
    save_plots,
    write_csv,
)

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def parse_size(text: str, what: str) -> tuple[int, int]:
    """'WxH' -> (W, H)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what}: expected WxH, e.g. 160x120, got {text!r}") from None
    if w < 1 or h < 1:
        raise argparse.ArgumentTypeError(f"{what}: width and height must be >= 1, got {text!r}")
    return w, h


def parse_range(text: str) -> tuple[int, int | None]:
    """'START:END' (END exclusive, may be empty) -> (start, end)."""
    a, sep, b = text.partition(":")
    try:
        start, end = int(a or 0), (int(b) if b else None)
    except ValueError:
        start, end = -1, None
    if not sep or start < 0 or (end is not None and end <= start):
        raise argparse.ArgumentTypeError(f"--frames: expected START:END with 0 <= START < END, got {text!r}")
    return start, end


def centre_crop(frames: np.ndarray, size: tuple[int, int] | None, multiple: int = 1) -> np.ndarray:
    """Centre crop to (W, H) (clamped to the frame), then down to a multiple of ``multiple`` per side."""
    h, w = frames.shape[1:3]
    cw, ch = size if size else (w, h)
    cw, ch = min(cw, w) // multiple * multiple, min(ch, h) // multiple * multiple
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    return np.ascontiguousarray(frames[:, y0 : y0 + ch, x0 : x0 + cw])


def _natural_key(p: Path) -> list[object]:
    """'2.png' before '10.png'."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", p.name)]


def read_clip(path: Path, frames: tuple[int, int | None]) -> np.ndarray:
    """(T, H, W, 3) uint8 RGB frames [start, end) of a video file or a folder of images (natural order)."""
    start, end = frames
    out = []
    if path.is_dir():
        from PIL import Image

        files = sorted((p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTS), key=_natural_key)
        for p in files[start:end]:
            out.append(np.asarray(Image.open(p).convert("RGB")))
    elif path.is_file():
        import av

        with av.open(str(path)) as f:
            for i, fr in enumerate(f.decode(video=0)):
                if end is not None and i >= end:
                    break
                if i >= start:
                    out.append(fr.to_ndarray(format="rgb24"))
    else:
        raise SystemExit(f"evaluate: {path} does not exist")
    if not out:
        raise SystemExit(f"evaluate: no frames in {path} for --frames {start}:{'' if end is None else end}")
    return np.stack(out)


def degrade(hr: np.ndarray, cfg_path: str | None, seed: int) -> np.ndarray:
    """The project's degradation pipeline (training.degradations) on an HR clip -> (T, H/4, W/4, 3) uint8."""
    import torch

    from training.degradations import DegradationConfig, degrade_clip

    cfg = DegradationConfig.from_yaml(cfg_path) if cfg_path else DegradationConfig()
    if cfg.scale != 4:
        raise SystemExit(f"evaluate: the degradation config must have scale 4 (AnimeSR is x4), got {cfg.scale}")
    x = torch.from_numpy(hr).permute(0, 3, 1, 2).float() / 255.0
    lr, _ = degrade_clip(x, cfg, rng=np.random.default_rng(seed))
    return (lr.permute(0, 2, 3, 1).numpy() * 255.0 + 0.5).clip(0, 255).astype(np.uint8)


def build_clips(args: argparse.Namespace) -> list[Clip]:
    clips = []
    for p in args.clips:
        lr = centre_crop(read_clip(Path(p), args.frames), args.crop)
        clips.append(Clip(name=Path(p).stem, lr=lr))
    hr_sources: list[tuple[str, np.ndarray]] = []
    for p in args.hr_clips:
        crop = (4 * args.crop[0], 4 * args.crop[1]) if args.crop else None
        hr_sources.append((Path(p).stem, centre_crop(read_clip(Path(p), args.frames), crop, multiple=4)))
    n_synth = args.synthetic if args.synthetic is not None else (0 if clips or hr_sources else 1)
    if n_synth:
        from training.synthetic import make_synthetic_cartoon_clip

        w, h = args.synthetic_size
        for i in range(n_synth):
            rng = np.random.default_rng(args.seed + i)
            hr_sources.append(
                (f"cartoon{i}", make_synthetic_cartoon_clip(args.synthetic_frames, 4 * h, 4 * w, rng=rng))
            )
    for i, (name, hr) in enumerate(hr_sources):
        clips.append(Clip(name=name, lr=degrade(hr, args.degradation, args.seed + 1000 + i), hr=hr))
    return clips


def label_of(spec: str) -> str:
    return Path(spec).stem if ("/" in spec or spec.endswith((".pth", ".safetensors"))) else spec


def build_parser() -> argparse.ArgumentParser:
    from vsanimesr.engine import DEFAULT_WARMUP

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", nargs="*", default=[], metavar="PATH", help="real LQ videos / image folders")
    ap.add_argument("--hr-clips", nargs="*", default=[], metavar="PATH", help="HQ videos / folders to degrade")
    ap.add_argument("--synthetic", type=int, default=None, metavar="N", help="procedural cartoon clips to degrade")
    ap.add_argument(
        "--synthetic-size",
        type=lambda t: parse_size(t, "--synthetic-size"),
        default=(64, 48),
        metavar="WxH",
        help="LR size of the procedural clips (HR is 4x); default 64x48",
    )
    ap.add_argument("--synthetic-frames", type=int, default=12, metavar="T")
    ap.add_argument(
        "--degradation",
        default=None,
        metavar="YAML",
        help="degradation pipeline config (default: DegradationConfig(), the published step-1 recipe)",
    )
    ap.add_argument("--models", default="bicubic,v2", help="comma-separated list; default %(default)s")
    ap.add_argument(
        "--frames",
        type=parse_range,
        default=(0, None),
        metavar="START:END",
        help="frame range of file clips (END exclusive)",
    )
    ap.add_argument(
        "--crop",
        type=lambda t: parse_size(t, "--crop"),
        default=None,
        metavar="WxH",
        help="centre crop of the LR frames (HR clips: 4x this)",
    )
    ap.add_argument(
        "--reset-interval",
        type=int,
        default=16,
        metavar="N",
        help="restart period for the restart-visibility check (0 = skip); default %(default)s",
    )
    ap.add_argument("--warmup", type=int, default=DEFAULT_WARMUP, help="warm-up for that check; default %(default)s")
    ap.add_argument("--niqe-every", type=int, default=4, metavar="K", help="NIQE on every K-th frame")
    ap.add_argument("--crop-border", type=int, default=4, help="pixels ignored at each edge for PSNR/SSIM")
    ap.add_argument("--crop-size", type=int, default=48, metavar="S", help="side-by-side crop side, LR pixels")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch / ncnn threads; default %(default)s")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("eval_out"))
    return ap


def main(argv: list[str] | None = None) -> int:
    from animesr_tools.peers import PeerUnavailable

    ap = build_parser()
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    import torch

    torch.set_num_threads(args.threads)
    specs = [s.strip() for s in args.models.split(",") if s.strip()]
    if not specs:
        ap.error("--models is empty")
    args.out.mkdir(parents=True, exist_ok=True)
    clips = build_clips(args)

    upscalers = {}
    for spec in specs:
        try:
            upscalers[spec] = make_upscaler(spec, device=args.device, threads=args.threads)
        except PeerUnavailable as e:
            print(f"skipping {spec}: {e}")

    rows: list[dict[str, object]] = []
    per_frame: dict[str, dict[str, list[float]]] = {}
    for clip in clips:
        t, h, w, _ = clip.lr.shape
        print(f"clip {clip.name} ({clip.kind}): {t} frames of {w}x{h}")
        outputs: dict[str, np.ndarray] = {}
        for spec, up in upscalers.items():
            label = label_of(spec)
            t0 = time.perf_counter()
            out = up(clip.lr)
            spf = (time.perf_counter() - t0) / t
            outputs[label] = out
            m = clip_metrics(clip, out, niqe_every=args.niqe_every, crop_border=args.crop_border)
            row: dict[str, object] = {
                "clip": clip.name,
                "kind": clip.kind,
                "model": label,
                "frames": t,
                "lr_size": f"{w}x{h}",
                "seconds_per_frame": spf,
            }
            row.update({k: v for k, v in m.items() if k != "psnr_y_frames"})
            if m["psnr_y_frames"]:
                per_frame.setdefault(f"{clip.name} PSNR-Y vs ground truth", {})[label] = m["psnr_y_frames"]
            if args.reset_interval and is_recurrent(spec) and t > args.reset_interval:
                rv = restart_visibility(
                    clip.lr, model=spec, interval=args.reset_interval, warmup=args.warmup, device=args.device
                )
                row["restart_psnr_mean"], row["restart_psnr_min"] = rv.mean, min(rv.psnr_worst_after)
                per_frame.setdefault(f"{clip.name} restarts every {rv.interval} (warmup {rv.warmup}) vs linear", {})[
                    label
                ] = list(rv.per_frame)
            rows.append(row)
            print(
                "  "
                + ", ".join(
                    f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in row.items()
                    if k not in ("clip", "kind") and not (isinstance(v, float) and math.isnan(v))
                )
            )
        if clip.hr is not None:
            m = clip_metrics(clip, clip.hr.astype(np.float32) / 255.0, niqe_every=args.niqe_every)
            rows.append(
                {
                    "clip": clip.name,
                    "kind": clip.kind,
                    "model": "ground truth",
                    "frames": t,
                    "lr_size": f"{w}x{h}",
                    "niqe": m["niqe"],
                    "flicker_ratio": m["flicker_ratio"],
                    "flicker_vs_gt": 1.0,
                    "sharpness": m["sharpness"],
                }
            )
        save_crops(clip, outputs, args.out / f"crops_{clip.name}.png", size=args.crop_size)

    write_csv(rows, args.out / "results.csv")
    md = format_markdown(rows)
    (args.out / "results.md").write_text(md, encoding="utf-8")
    save_plots(rows, args.out, per_frame=per_frame)
    print()
    print(md)
    print(f"wrote {args.out}/results.csv, results.md, metrics.png, frames_*.png, crops_*.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Contact sheet of random degradations: one HR crop and several LR draws, with the drawn parameters printed.

    animesr-preview-degradations --config training/configs/degradations.yml \\
        --input CLIP_DIR_OR_VIDEO --out sheet.png --seed 0 [--draws 5] [--lbo a.pth b.pth]
    (or python -m training.preview_degradations ...)

LR tiles are shown at HR size (nearest-neighbour), so codec blocks and aliasing stay visible.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from training.data import ClipDataset
from training.degradations import ConfigError, DegradationConfig, degrade_clip, load_lbo_pool

__all__ = ["describe_params", "main", "make_sheet"]

_TEXT_H = 14  # pixels per text line


def describe_params(params: dict[str, Any]) -> list[str]:
    """Short human-readable lines for a :func:`degrade_clip` parameter dict."""
    lines = []
    b = params.get("blur")
    if b is None:
        lines.append("blur: none")
    elif b["kind"] == "iso":
        lines.append(f"blur iso s={b['sigma']:.2f}")
    else:
        lines.append(f"blur aniso {b['sigma_x']:.2f}/{b['sigma_y']:.2f} th={b['theta']:.2f}")
    n = params.get("noise")
    if n is None:
        lines.append("noise: none")
    else:
        s = n["sigma_255"]
        lines.append(f"noise s={np.mean(s):.1f} ({min(s):.1f}-{max(s):.1f}) gray {sum(n['gray'])}/{len(n['gray'])}")
    if "resize" in params:
        lines.append("down " + ",".join(params["resize"]))
    c = params.get("codec")
    if c is None:
        lines.append("codec: none")
    elif "qscale" in c:
        lines.append(f"{c['codec']} q={c['qscale']}")
    else:
        lines.append(f"{c['codec']} crf={c['crf']:.1f} {c.get('profile', '')}".rstrip())
    return lines


def _tile(img: np.ndarray, lines: list[str], width: int) -> np.ndarray:
    """An RGB uint8 tile with ``lines`` of text on a white band below."""
    band = np.full((_TEXT_H * len(lines) + 6, width, 3), 255, np.uint8)
    for i, text in enumerate(lines):
        cv2.putText(band, text, (3, _TEXT_H * (i + 1)), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([img, band], axis=0)


def make_sheet(hr: torch.Tensor, lrs: list[torch.Tensor], params: list[dict[str, Any]], *, frame: int) -> np.ndarray:
    """Side by side: frame ``frame`` of the HR clip and of each LR draw (upscaled to HR size). RGB uint8."""

    def to_img(x: torch.Tensor) -> np.ndarray:
        return (x[frame].clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)

    h, w = hr.shape[-2:]
    tiles = [to_img(hr)] + [cv2.resize(to_img(lr), (w, h), interpolation=cv2.INTER_NEAREST) for lr in lrs]
    texts = [[f"HR crop {h}x{w}", f"frame {frame}"]] + [describe_params(p) for p in params]
    rows = max(len(t) for t in texts)
    texts = [t + [""] * (rows - len(t)) for t in texts]
    gap = np.full((h + _TEXT_H * rows + 6, 4, 3), 128, np.uint8)
    out = []
    for img, text in zip(tiles, texts, strict=True):
        out += [_tile(img, text, w), gap]
    return np.concatenate(out[:-1], axis=1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="animesr-preview-degradations",
                                 description="Write a contact sheet of random degradations of one clip.")
    ap.add_argument("--config", required=True, help="degradation YAML (e.g. training/configs/degradations.yml)")
    ap.add_argument("--input", required=True, help="a clip folder of numbered frames, or a video file")
    ap.add_argument("--out", required=True, help="output PNG")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--draws", type=int, default=4, help="number of LR draws")
    ap.add_argument("--clip-len", type=int, default=15)
    ap.add_argument("--gt-size", type=int, default=256)
    ap.add_argument("--lbo", nargs="*", default=[], help="LBO checkpoints (needed when resize.lbo_prob > 0)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)

    from vsanimesr.loader import WeightsError

    try:
        cfg = DegradationConfig.from_yaml(args.config)
        if cfg.uses_lbo and not args.lbo:
            raise ConfigError(f"{args.config}: resize.lbo_prob={cfg.resize.lbo_prob} needs LBO checkpoints (--lbo)")
        pool = load_lbo_pool(args.lbo) if args.lbo else None
        ds = ClipDataset(args.input, clip_len=args.clip_len, gt_size=args.gt_size, scale=cfg.scale, seed=args.seed)
        item = ds[0]
    except (ValueError, OSError, WeightsError) as e:  # ConfigError is a ValueError
        print(f"error: {e}", file=sys.stderr)  # noqa: T201
        return 2
    hr = item["gt"]
    lrs, params = [], []
    for i in range(args.draws):
        lr, p = degrade_clip(hr, cfg, rng=np.random.default_rng([args.seed, i]), lbo_pool=pool)
        lrs.append(lr)
        params.append(p)
    sheet = make_sheet(hr, lrs, params, frame=hr.shape[0] // 2)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)):
        print(f"error: cannot write {out}", file=sys.stderr)  # noqa: T201
        return 2
    print(f"wrote {out} ({sheet.shape[1]}x{sheet.shape[0]}) from {item['key']}")  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Procedurally drawn cartoon clips: flat colours, dark outlines and a few moving shapes over a gradient.

Tests, the demo and the training smoke tests use these instead of real anime, so they run anywhere and are exactly
reproducible from a seed. They share the statistics that matter to AnimeSR (large flat areas, sharp anti-aliased
line art, rigid motion), not the look of real footage.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

__all__ = ["make_synthetic_cartoon_clip", "write_clip_folder"]

_SHAPES = ("circle", "ellipse", "rectangle", "triangle")


def make_synthetic_cartoon_clip(num_frames: int, height: int, width: int, *, rng: np.random.Generator) -> np.ndarray:
    """Draw a (num_frames, height, width, 3) uint8 RGB clip.

    Args:
        num_frames: number of frames, >= 1.
        height, width: frame size, each >= 8.
        rng: the only source of randomness; the same state gives the same clip.
    """
    if num_frames < 1:
        raise ValueError(f"make_synthetic_cartoon_clip: num_frames must be >= 1, got {num_frames!r}")
    if height < 8 or width < 8:
        raise ValueError(f"make_synthetic_cartoon_clip: height and width must be >= 8, got {height}x{width}")
    short = min(height, width)
    # Background: a linear gradient between two soft colours along a random direction.
    c0, c1 = rng.uniform(90, 255, size=(2, 3))
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    proj = xx * np.cos(angle) + yy * np.sin(angle)
    proj = (proj - proj.min()) / max(float(np.ptp(proj)), 1e-6)
    background = (c0[None, None] * (1 - proj[..., None]) + c1[None, None] * proj[..., None]).astype(np.uint8)

    outline = max(1, short // 48)
    shapes = []
    for _ in range(int(rng.integers(3, 7))):
        shapes.append(
            {
                "kind": _SHAPES[int(rng.integers(len(_SHAPES)))],
                "centre": rng.uniform([0.1 * width, 0.1 * height], [0.9 * width, 0.9 * height]),
                "velocity": rng.uniform(-1, 1, size=2) * short / 40,
                "size": rng.uniform(0.08, 0.25) * short,
                "aspect": rng.uniform(0.5, 1.5),
                "angle": rng.uniform(0, 180),
                "spin": rng.uniform(-3, 3),
                "fill": tuple(int(v) for v in rng.integers(0, 256, size=3)),
                "line": tuple(int(v) for v in rng.integers(0, 50, size=3)),
            }
        )

    frames = np.empty((num_frames, height, width, 3), np.uint8)
    for t in range(num_frames):
        img = background.copy()
        for s in shapes:
            cx, cy = s["centre"] + s["velocity"] * t
            ang = s["angle"] + s["spin"] * t
            r = s["size"]
            _draw_shape(img, s["kind"], (cx, cy), r, s["aspect"], ang, s["fill"], s["line"], outline)
        frames[t] = img
    return frames


def _draw_shape(
    img: np.ndarray,
    kind: str,
    centre: tuple[float, float],
    r: float,
    aspect: float,
    angle: float,
    fill: tuple[int, int, int],
    line: tuple[int, int, int],
    thickness: int,
) -> None:
    """Fill then outline one shape in place (cv2 draws at 1/16 px precision with ``shift=4``)."""
    if kind in ("circle", "ellipse"):
        axes = (r, r) if kind == "circle" else (r, r * aspect)
        box = ((float(centre[0]), float(centre[1])), (2 * axes[0], 2 * axes[1]), float(angle))
        cv2.ellipse(img, box, fill, -1, cv2.LINE_AA)
        cv2.ellipse(img, box, line, thickness, cv2.LINE_AA)
        return
    if kind == "rectangle":
        pts = cv2.boxPoints(((float(centre[0]), float(centre[1])), (2 * r, 2 * r * aspect), float(angle)))
    else:  # triangle
        a = np.deg2rad(angle) + np.array([0, 2 * np.pi / 3, 4 * np.pi / 3])
        pts = np.stack([centre[0] + r * np.cos(a), centre[1] + r * np.sin(a)], axis=1)
    poly = [np.round(np.asarray(pts) * 16).astype(np.int32)]
    cv2.fillPoly(img, poly, fill, cv2.LINE_AA, shift=4)
    cv2.polylines(img, poly, True, line, thickness, cv2.LINE_AA, shift=4)


def write_clip_folder(frames: np.ndarray, folder: str | os.PathLike[str]) -> Path:
    """Write a (T,H,W,3) uint8 RGB clip as ``00000000.png``, ``00000001.png``, ... (an AVC-style clip folder)."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        if not cv2.imwrite(str(out / f"{i:08d}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR)):
            raise OSError(f"write_clip_folder: cannot write {out / f'{i:08d}.png'}")
    return out

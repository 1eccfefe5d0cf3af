"""Evaluation building blocks: upscalers by name, per-clip metrics, restart visibility, tables, plots and crops.

``scripts/evaluate.py`` strings these together; they are kept here, as pure functions, so tests and other scripts
(``scripts/measure_reset.py``) can reuse them. What each number means:

* **NIQE** (lower = more natural): :func:`animesr_tools.metrics.niqe` on the luma Y of the output clamped to [0, 1],
  averaged over every ``niqe_every``-th frame. Needs outputs larger than 192 px per side; smaller ones give NaN.
* **PSNR / SSIM on Y** (synthetic pairs only): against the ground-truth HR clip, after cropping ``crop_border``
  pixels on each side (the SR literature crops ``scale`` pixels), outputs clamped to [0, 1].
* **Flicker ratio**: mean absolute difference of consecutive output frames (on Y) divided by the same for the input
  clip (:func:`animesr_tools.metrics.flicker`). The input's own frame-to-frame change (motion, and the codec's flicker
  for real clips) is the unit: 1.0 = the upscaler added no temporal change of its own, > 1 = it adds flicker or
  sharpens changes that were there, < 1 = it smooths over time. Compare models on the same clip, not across clips.
  A sharp output of a moving clip has more frame-to-frame change than a blurry input, so even the ground truth
  scores above 1; for synthetic pairs **flicker vs GT** (the same ratio against the ground truth's own temporal
  change) is the cleaner number: 1.0 = as stable as the truth.
* **Sharpness**: variance of the Laplacian of Y (:func:`animesr_tools.metrics.sharpness`), x1000; context, not quality.
* **Restart visibility** (:func:`restart_visibility`): the engine restarts its recurrence every ``reset_interval``
  frames behind ``warmup`` discarded lead-in steps; the PSNR (RGB, clamped) of the restarted frames against one
  unbroken chain over the same frames says how visible a restart is (inf = identical).
"""

from __future__ import annotations

import csv
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from animesr_tools.metrics import NIQE_PATCH_SIZE, flicker, niqe, psnr, rgb_to_y, sharpness, ssim
from vsanimesr.video import to_uint

__all__ = [
    "CLASSIC",
    "Clip",
    "RestartVisibility",
    "bicubic_upscale",
    "clip_metrics",
    "format_markdown",
    "make_upscaler",
    "nearest_upscale",
    "restart_visibility",
    "save_crops",
    "save_plots",
    "write_csv",
]

log = logging.getLogger(__name__)

Upscaler = Callable[[np.ndarray], np.ndarray]
"""(T, h, w, 3) uint8 RGB -> (T, 4h, 4w, 3) float32 RGB (unclamped)."""

CLASSIC = ("bicubic", "nearest")
"""Non-learned upscalers accepted by :func:`make_upscaler`."""

COLUMNS = (
    "clip",
    "kind",
    "model",
    "frames",
    "lr_size",
    "niqe",
    "psnr_y",
    "ssim_y",
    "flicker_ratio",
    "flicker_vs_gt",
    "sharpness",
    "restart_psnr_mean",
    "restart_psnr_min",
    "seconds_per_frame",
)
"""CSV/Markdown columns, in order (restart columns only for AnimeSR models)."""


@dataclass(frozen=True)
class Clip:
    """One evaluation clip: low-resolution input and, for synthetic pairs, its ground truth.

    Attributes:
        name: short label used in tables and file names.
        lr: (T, h, w, 3) uint8 RGB, the upscalers' input.
        hr: (T, 4h, 4w, 3) uint8 RGB ground truth, or None for real (no-reference) clips.
    """

    name: str
    lr: np.ndarray
    hr: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.lr.ndim != 4 or self.lr.shape[-1] != 3 or self.lr.dtype != np.uint8 or len(self.lr) < 1:
            raise ValueError(
                f"Clip: lr must be a non-empty (T, h, w, 3) uint8 array, got {self.lr.dtype} {self.lr.shape}"
            )
        if self.hr is not None:
            t, h, w, _ = self.lr.shape
            if self.hr.shape != (t, 4 * h, 4 * w, 3) or self.hr.dtype != np.uint8:
                raise ValueError(
                    f"Clip: hr must be (T, 4h, 4w, 3) = {(t, 4 * h, 4 * w, 3)} uint8, got "
                    f"{self.hr.dtype} {self.hr.shape}"
                )

    @property
    def kind(self) -> str:
        return "real" if self.hr is None else "synthetic"


# ----------------------------------------------------------------------------------------------- upscalers
def _resize(frames: np.ndarray, mode: str, scale: int) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    if frames.dtype == np.uint8:
        x = x / 255.0
    kw = {"align_corners": False} if mode == "bicubic" else {}
    y = F.interpolate(x, scale_factor=scale, mode=mode, **kw)
    return y.permute(0, 2, 3, 1).numpy().astype(np.float32)


def bicubic_upscale(frames: np.ndarray, *, scale: int = 4) -> np.ndarray:
    """Bicubic (a = -0.75, torch's kernel) x``scale``: (T, h, w, 3) -> (T, sh, sw, 3) float32, unclamped."""
    return _resize(frames, "bicubic", scale)


def nearest_upscale(frames: np.ndarray, *, scale: int = 4) -> np.ndarray:
    """Pixel replication x``scale`` (shows the input as it is): (T, h, w, 3) -> (T, sh, sw, 3) float32."""
    return _resize(frames, "nearest", scale)


def make_upscaler(
    spec: str,
    *,
    device: str = "cpu",
    threads: int = 1,
    reset_interval: int | None = None,
    warmup: int | None = None,
    scene_threshold: float | None = None,
) -> Upscaler:
    """An upscaler by name: ``bicubic``, ``nearest``, a peer from :data:`animesr_tools.peers.PEERS`, or an AnimeSR model
    (``v1``, ``v2`` or a weight file path) run by the engine with the given recurrence settings (None = defaults).

    Raises :class:`animesr_tools.peers.PeerUnavailable` for a peer that cannot run here.
    """
    from animesr_tools.peers import PEERS, load_peer

    if spec == "bicubic":
        return bicubic_upscale
    if spec == "nearest":
        return nearest_upscale
    if spec in PEERS:
        return load_peer(spec, threads=threads).upscale
    from vsanimesr.engine import AnimeSR

    sr = AnimeSR(
        model=spec, device=device, reset_interval=reset_interval, warmup=warmup, scene_threshold=scene_threshold
    )
    if sr.scale != 4:  # references, crops and metrics here are x4
        raise ValueError(f"evaluation: model {spec!r} upscales x{sr.scale}; only x4 models can be evaluated")
    return sr.upscale


def is_recurrent(spec: str) -> bool:
    """True for AnimeSR models (names and paths), False for the classic resizers and peers."""
    from animesr_tools.peers import PEERS

    return spec not in CLASSIC and spec not in PEERS


# ----------------------------------------------------------------------------------------------- restarts
@dataclass(frozen=True)
class RestartVisibility:
    """How far periodic restarts move the picture from one unbroken chain.

    Attributes:
        boundaries: restart frames (multiples of ``interval`` inside the clip).
        psnr_at: PSNR (dB) of each restart frame against the linear chain.
        psnr_worst_after: for each restart, the lowest PSNR among it and the 7 frames after it.
        per_frame: PSNR of every frame against the linear chain (inf where identical, i.e. before the first restart).
        steps_per_frame: network steps per output frame (1 + warm-up overhead).
    """

    interval: int
    warmup: int
    boundaries: tuple[int, ...]
    psnr_at: tuple[float, ...]
    psnr_worst_after: tuple[float, ...]
    per_frame: tuple[float, ...] = field(repr=False)
    steps_per_frame: float

    @property
    def mean(self) -> float:
        return float(np.mean(self.psnr_at)) if self.psnr_at else math.nan

    @property
    def min(self) -> float:
        return float(np.min(self.psnr_at)) if self.psnr_at else math.nan


def restart_visibility(
    frames: np.ndarray,
    *,
    model: str = "v2",
    interval: int,
    warmup: int,
    device: str = "cpu",
    linear: np.ndarray | None = None,
) -> RestartVisibility:
    """Upscale ``frames`` with a restart every ``interval`` frames (``warmup`` lead-in steps, scene detection off)
    and compare with one linear chain (``reset_interval=0``; pass ``linear`` to reuse one already computed).

    Args:
        frames: (T, h, w, 3) uint8 or float RGB; T > ``interval`` for any boundary to exist.
        model: AnimeSR model name or weight path.
        interval, warmup: the engine's ``reset_interval`` (>= 1) and ``warmup``.
        linear: optional (T, 4h, 4w, 3) output of the same model with ``reset_interval=0, scene_threshold=0``.
    """
    from vsanimesr.engine import AnimeSR

    if not isinstance(interval, int) or interval < 1:
        raise ValueError(f"restart_visibility: interval must be an integer >= 1, got {interval!r}")
    if linear is None:
        linear = AnimeSR(model=model, device=device, reset_interval=0, scene_threshold=0).upscale(frames)
    lin = np.clip(linear, 0, 1)
    sr = AnimeSR(model=model, device=device, reset_interval=interval, warmup=warmup, scene_threshold=0)
    out = np.clip(sr.upscale(frames), 0, 1)
    t = len(frames)
    per_frame = tuple(psnr(out[k], lin[k]) for k in range(t))
    bounds = tuple(range(interval, t, interval))
    return RestartVisibility(
        interval=interval,
        warmup=warmup,
        boundaries=bounds,
        psnr_at=tuple(per_frame[p] for p in bounds),
        psnr_worst_after=tuple(min(per_frame[p : p + 8]) for p in bounds),
        per_frame=per_frame,
        steps_per_frame=sr.steps / t,
    )


# ----------------------------------------------------------------------------------------------- metrics
def clip_metrics(
    clip: Clip,
    output: np.ndarray,
    *,
    niqe_every: int = 1,
    crop_border: int = 4,
) -> dict[str, float]:
    """Quality and stability numbers of one upscaled clip (see the module docstring for definitions).

    Args:
        clip: the input (and ground truth, if any).
        output: (T, 4h, 4w, 3) float RGB from an upscaler; clamped to [0, 1] here.
        niqe_every: NIQE on frames 0, k, 2k, ... (NIQE costs about a second per 640x480 frame).
        crop_border: pixels dropped on each side before PSNR/SSIM.

    Returns:
        ``niqe``, ``psnr_y``, ``ssim_y``, ``flicker_ratio``, ``flicker_vs_gt``, ``sharpness`` (NaN where not
        applicable) and the per-frame PSNR list under ``psnr_y_frames`` (empty for real clips).
    """
    t, h, w, _ = clip.lr.shape
    if output.shape != (t, 4 * h, 4 * w, 3):
        raise ValueError(
            f"clip_metrics: output must be {(t, 4 * h, 4 * w, 3)} for clip {clip.name!r}, got {output.shape}"
        )
    if niqe_every < 1 or crop_border < 0:
        raise ValueError(f"clip_metrics: niqe_every must be >= 1 and crop_border >= 0, got {niqe_every}, {crop_border}")
    y = rgb_to_y(np.clip(output, 0.0, 1.0))
    res: dict[str, float | list[float]] = {}
    if min(y.shape[1:]) > 2 * NIQE_PATCH_SIZE + 1:
        res["niqe"] = float(np.mean([niqe(y[k]) for k in range(0, t, niqe_every)]))
    else:
        res["niqe"] = math.nan
    res["sharpness"] = 1000.0 * float(np.mean([sharpness(f) for f in y]))
    res["flicker_ratio"] = flicker(y, rgb_to_y(clip.lr)) if t >= 2 else math.nan
    frames_psnr: list[float] = []
    if clip.hr is not None:
        ref = rgb_to_y(clip.hr)
        b = crop_border
        sl = (slice(None), slice(b, y.shape[1] - b or None), slice(b, y.shape[2] - b or None))
        yc, rc = y[sl], ref[sl]
        frames_psnr = [psnr(a, r) for a, r in zip(yc, rc, strict=True)]
        res["psnr_y"] = psnr(yc, rc)  # over the whole clip (MSE pooled), not a mean of per-frame dB
        res["ssim_y"] = ssim(yc, rc) if min(yc.shape[1:]) >= 11 else math.nan
        res["flicker_vs_gt"] = flicker(y, ref) if t >= 2 else math.nan
    else:
        res["psnr_y"] = res["ssim_y"] = res["flicker_vs_gt"] = math.nan
    res["psnr_y_frames"] = frames_psnr
    return res  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------------- outputs
def _fmt(v: object, digits: int) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return ""
        if math.isinf(v):
            return "inf"
        return f"{v:.{digits}f}"
    return str(v)


def write_csv(rows: Sequence[dict[str, object]], path: str | os.PathLike[str]) -> Path:
    """All :data:`COLUMNS` of ``rows`` as CSV (NaN -> empty cell); returns the path."""
    p = Path(path)
    with p.open("w", newline="", encoding="utf-8") as f:
        wr = csv.writer(f)
        wr.writerow(COLUMNS)
        for r in rows:
            wr.writerow([_fmt(r.get(c, math.nan), 6) for c in COLUMNS])
    return p


def format_markdown(rows: Sequence[dict[str, object]]) -> str:
    """A Markdown table of ``rows`` (columns that are empty in every row are left out)."""
    digits = {
        "niqe": 3,
        "psnr_y": 2,
        "ssim_y": 4,
        "flicker_ratio": 3,
        "flicker_vs_gt": 3,
        "sharpness": 3,
        "restart_psnr_mean": 2,
        "restart_psnr_min": 2,
        "seconds_per_frame": 3,
    }
    cols = [c for c in COLUMNS if any(_fmt(r.get(c, math.nan), 2) for r in rows)]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c, math.nan), digits.get(c, 3)) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def busiest_window(frame: np.ndarray, size: int) -> tuple[int, int]:
    """Top-left (y, x) of the ``size`` x ``size`` window of ``frame`` (h, w, 3) with the most gradient energy, on a
    grid of ``size // 2`` steps: the crop most likely to show line art, where upscalers differ most."""
    g = rgb_to_y(frame)
    e = np.abs(np.diff(g, axis=0))[:, :-1] + np.abs(np.diff(g, axis=1))[:-1, :]
    h, w = g.shape
    size = min(size, h, w)
    best, pos = -1.0, (0, 0)
    step = max(size // 2, 1)
    for y in range(0, max(h - size, 0) + 1, step):
        for x in range(0, max(w - size, 0) + 1, step):
            s = float(e[y : y + size - 1, x : x + size - 1].sum())
            if s > best:
                best, pos = s, (y, x)
    return pos


def save_crops(
    clip: Clip,
    outputs: dict[str, np.ndarray],
    path: str | os.PathLike[str],
    *,
    frame: int | None = None,
    size: int = 48,
) -> Path:
    """Side-by-side PNG of one frame's crop: input (nearest x4), each output, and the ground truth if any.

    Args:
        clip: the clip; the crop is the ``size`` x ``size`` LR window with the most detail (:func:`busiest_window`).
        outputs: label -> (T, 4h, 4w, 3) float output (e.g. ``bicubic``, ``v2``).
        frame: frame index (default: the middle frame).
        size: crop side in LR pixels (shown 4x enlarged).
    """
    from PIL import Image, ImageDraw

    n = len(clip.lr) // 2 if frame is None else frame
    if not 0 <= n < len(clip.lr):
        raise ValueError(f"save_crops: frame must be in [0, {len(clip.lr) - 1}], got {frame!r}")
    y, x = busiest_window(clip.lr[n], size)
    s = min(size, *clip.lr.shape[1:3])
    panels = [("input (nearest)", np.repeat(np.repeat(clip.lr[n, y : y + s, x : x + s], 4, 0), 4, 1))]
    for label, out in outputs.items():
        panels.append((label, to_uint(out[n, 4 * y : 4 * (y + s), 4 * x : 4 * (x + s)], 8)))
    if clip.hr is not None:
        panels.append(("ground truth", clip.hr[n, 4 * y : 4 * (y + s), 4 * x : 4 * (x + s)]))
    side, label_h, gap = 4 * s, 14, 4
    sheet = Image.new("RGB", (len(panels) * (side + gap) - gap, side + label_h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, (label, img) in enumerate(panels):
        x0 = i * (side + gap)
        sheet.paste(Image.fromarray(img), (x0, label_h))
        draw.text((x0 + 2, 1), label, fill=(0, 0, 0))
    p = Path(path)
    sheet.save(p)
    return p


def save_plots(
    rows: Sequence[dict[str, object]],
    out_dir: str | os.PathLike[str],
    *,
    per_frame: dict[str, dict[str, Sequence[float]]] | None = None,
) -> list[Path]:
    """PNG plots: ``metrics.png`` (one bar chart per metric, models grouped by clip) and, for each entry of
    ``per_frame`` (title -> {label: series}), a line plot ``frames_<title>.png``. Returns the written paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    written = []
    metrics = [
        (c, t)
        for c, t in (
            ("niqe", "NIQE (lower = more natural)"),
            ("psnr_y", "PSNR Y (dB)"),
            ("ssim_y", "SSIM Y"),
            ("flicker_ratio", "flicker / input flicker"),
            ("flicker_vs_gt", "flicker / ground-truth flicker"),
            ("restart_psnr_min", "restart PSNR, worst (dB)"),
        )
        if any(isinstance(r.get(c), float) and math.isfinite(r[c]) for r in rows)
    ]  # type: ignore[arg-type]
    if metrics:
        clips = list(dict.fromkeys(str(r["clip"]) for r in rows))
        models = list(dict.fromkeys(str(r["model"]) for r in rows))
        fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.6), squeeze=False)
        width = 0.8 / max(len(models), 1)
        for ax, (col, title) in zip(axes[0], metrics, strict=True):
            for j, m in enumerate(models):
                vals = []
                for c in clips:
                    v = next((r.get(col) for r in rows if r["clip"] == c and r["model"] == m), math.nan)
                    vals.append(v if isinstance(v, float) and math.isfinite(v) else math.nan)
                ax.bar(np.arange(len(clips)) + j * width, vals, width, label=m)
            ax.set_xticks(np.arange(len(clips)) + width * (len(models) - 1) / 2, clips, fontsize=7, rotation=15)
            ax.set_title(title, fontsize=9)
        axes[0][0].legend(fontsize=7)
        fig.tight_layout()
        p = out / "metrics.png"
        fig.savefig(p, dpi=100)
        plt.close(fig)
        written.append(p)
    for title, series in (per_frame or {}).items():
        fig, ax = plt.subplots(figsize=(7, 3.2))
        for label, ys in series.items():
            ys = [min(v, 99.0) for v in ys]  # identical frames (inf dB) drawn at the top
            ax.plot(range(len(ys)), ys, label=label, lw=1)
        ax.set_xlabel("frame")
        ax.set_ylabel("PSNR (dB; identical = 99)")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        p = out / f"frames_{_safe(title)}.png"
        fig.savefig(p, dpi=100)
        plt.close(fig)
        written.append(p)
    return written


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:80]

"""Choosing training clips from raw anime videos (the AVC recipe, rebuilt from weight-free parts).

Two decoding passes per video, so memory stays flat whatever the video's length:

1. :func:`analyze_video` decodes every frame once (PyAV) and keeps only per-frame numbers
   (:class:`FrameStats`): a content distance to the previous frame (for cuts), the optical-flow motion to the
   previous frame, the dominant-gray-level fraction (flat / black frames) and, on every ``score_every``-th
   frame, the quality scorers' values.
2. :func:`select_windows` picks windows of ``clip_len`` consecutive frames from those numbers (pure NumPy, easy
   to test), and :func:`extract_clips` decodes again and writes the chosen frames as PNG.

Measures (all computed on frames shrunk to ``analysis_width`` pixels wide, area interpolation):

* **Cuts.** Two tests must both pass at frame t (a new shot starts there):

  - ``content[t]``, the mean over pixels of ``(|ΔH| + |ΔS| + |ΔV|) / 3`` between frames t-1 and t in HSV on the
    0..255 scale (hue is circular: OpenCV's 0..179 hue, the short way round, scaled so a half turn is 255), is at
    least ``cut_threshold`` (default 30; AnimeSR's preprocessing used 30 on a similar HSV measure, PySceneDetect's
    content detector 27): *the picture changed*;
  - ``palette[t]``, the total-variation distance (0..1) between the two frames' colour histograms (8 levels per
    RGB channel, 512 bins), is at least ``palette_threshold`` (default 0.15): *the colours changed*.

  The second test exists because anime is drawn on twos and threes: a new drawing inside a shot (a mouth opens,
  a head turns) moves many pixels at once but keeps the palette. On the project's demo clip the real cut scores
  content 67.5 / palette 0.35, while in-shot drawing changes reach 28.3 / 0.072. A new shot also needs the
  current one to be at least ``min_shot_len`` frames long (flashes, fades).
* **Motion.** Mean Farneback optical-flow magnitude between consecutive gray frames, converted to pixels of the
  original resolution (multiplied by ``width / analysis_width``). Not defined across a cut.
* **Flat frames.** The fraction of pixels whose 8-bit gray level is within ``flat_tolerance`` of the most
  common level; a frame is flat (black, white, a title card of one colour) when it reaches ``flat_fraction``
  (default 0.9, the AnimeSR recipe's drop level).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from training.configio import ConfigError, Weights, from_data
from training.scoring import FrameScorer

__all__ = [
    "ClipWindow",
    "Candidates",
    "FrameStats",
    "SelectConfig",
    "analyze_video",
    "candidate_windows",
    "content_distance",
    "detect_cuts",
    "extract_clips",
    "flat_fraction",
    "gate_report",
    "motion_magnitude",
    "palette_distance",
    "select_windows",
]

logger = logging.getLogger(__name__)

ProgressFactory = Callable[[int | None, str], "ProgressBar"]


class ProgressBar:
    """The two methods of a tqdm bar the analysis uses; the default does nothing."""

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class SelectConfig:
    """How clips are chosen; every field is a CLI option of ``scripts/build_dataset.py``."""

    clip_len: int = 100
    """Frames per clip (AVC used 100)."""
    clips_per_video: int = 1
    """Clips that lie inside one shot, the best first, never overlapping."""
    cut_clips: int = 0
    """Extra clips that contain exactly one cut (the paper let some clips cross a cut)."""
    min_cut_side: int = 10
    """In a cut clip, each side of the cut has at least this many frames."""
    min_motion: float = 0.5
    """Mean motion of a clip, in pixels/frame at full resolution, must reach this (rejects static shots)."""
    flat_fraction: float = 0.9
    """A frame whose dominant gray level covers this fraction of pixels is flat and never selected."""
    flat_tolerance: int = 2
    """Gray levels within this many 8-bit codes of the dominant one count as dominant (compression noise)."""
    cut_threshold: float = 30.0
    """HSV content distance (0..255) a cut must reach."""
    palette_threshold: float = 0.15
    """Colour-histogram distance (0..1) a cut must also reach."""
    min_shot_len: int = 8
    """No second cut within this many frames of the previous one (flashes, fades)."""
    analysis_width: int = 160
    """Width of the shrunk frames for cuts, motion and flatness."""
    score_every: int = 10
    """Run the quality scorers on every n-th frame (NIQE is the slowest step)."""
    motion_weight: float = 1.0
    """Weight of the motion z-score in the combined window score."""
    scorer_weights: Weights = ()
    """Weights of the scorers' z-scores, ``{name: weight}``; scorers not listed weigh 1."""
    scorers: tuple[str, ...] = ("niqe", "sharpness")
    """Quality scorers: built-in names or ``package.module:factory`` (see ``training/scoring.py``)."""
    quality_gate: Weights = (("sharpness", 0.001),)
    """An absolute floor, ``{scorer: threshold}``: a clip whose mean score is worse (below the threshold for a
    higher-is-better scorer, above it for a lower-is-better one) is never chosen, however it ranks in its video.
    Ranking is only within a video, so without a gate every video yields its best clip however poor. The default
    keeps the variance of the Laplacian (``sharpness``, luma in [0, 1] at <= 480 lines) at 0.001 or more: on the
    project's anime sample frames measure 0.0055-0.0125, the same after x2 down- and bicubic up-scaling
    0.0021-0.0038, after x4 0.0004 and after a sigma-2 Gaussian blur 0.0002. ``{}`` turns the gate off; gates of
    scorers that are not in use are ignored."""

    def __post_init__(self) -> None:
        def bad(name: str, rule: str) -> None:
            raise ConfigError(f"SelectConfig: {name} must be {rule}, got {getattr(self, name)!r}")

        for name in ("clip_len", "clips_per_video", "cut_clips", "min_shot_len", "analysis_width", "score_every"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < (0 if name in ("clips_per_video", "cut_clips") else 1):
                bad(name, "a non-negative integer" if name in ("clips_per_video", "cut_clips") else "an integer >= 1")
        if self.clip_len < 2:
            bad("clip_len", ">= 2")
        if self.score_every > self.clip_len:
            bad("score_every", f"<= clip_len ({self.clip_len}) so every clip has a scored frame")
        if not 0.0 <= self.palette_threshold <= 1.0:
            bad("palette_threshold", "in [0, 1]")
        if not 0.0 < self.flat_fraction <= 1.0:
            bad("flat_fraction", "in (0, 1]")
        if not 0 <= self.flat_tolerance < 128:
            bad("flat_tolerance", "in [0, 128)")
        if self.min_motion < 0:
            bad("min_motion", ">= 0")
        if self.analysis_width < 16:
            bad("analysis_width", ">= 16")
        if self.cut_clips and not 1 <= self.min_cut_side <= self.clip_len // 2:
            bad("min_cut_side", f"in [1, clip_len // 2 = {self.clip_len // 2}]")
        if not self.scorers or len(set(self.scorers)) != len(self.scorers):
            bad("scorers", "a non-empty list of distinct names")

    def weight_of(self, scorer: str) -> float:
        return dict(self.scorer_weights).get(scorer, 1.0)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str = "SelectConfig") -> SelectConfig:
        """Build from a YAML-style mapping with the rules of :mod:`training.configio` (unknown keys are errors)."""
        return from_data(cls, data, source=source)


@dataclass
class FrameStats:
    """Per-frame numbers from one decoding pass; index t is the t-th decoded frame."""

    width: int
    height: int
    fps: float
    content: np.ndarray
    """(N,) HSV content distance to frame t-1 (0 for t = 0)."""
    palette: np.ndarray
    """(N,) colour-histogram distance to frame t-1 (0 for t = 0)."""
    motion: np.ndarray
    """(N,) motion from frame t-1 to t in full-resolution pixels (nan for t = 0)."""
    flat: np.ndarray
    """(N,) dominant-gray-level fraction."""
    quality: dict[str, np.ndarray] = field(default_factory=dict)
    """Per scorer, (N,) scores, nan on frames that were not scored."""
    higher_is_better: dict[str, bool] = field(default_factory=dict)
    error: str | None = None
    """Set when decoding stopped early; the stats cover the frames decoded before that."""

    @property
    def n_frames(self) -> int:
        return int(self.content.shape[0])


@dataclass(frozen=True)
class ClipWindow:
    """One chosen clip: frames ``start`` .. ``end - 1`` of the source."""

    start: int
    end: int
    score: float
    motion: float
    quality: dict[str, float]
    cuts: tuple[int, ...] = ()

    def to_json(self) -> dict:
        d = asdict(self)
        d["cuts"] = list(self.cuts)
        return d


# --------------------------------------------------------------------------------------- per-frame measures
def _shrink(rgb: np.ndarray, width: int) -> np.ndarray:
    import cv2

    h, w = rgb.shape[:2]
    if w <= width:
        return np.ascontiguousarray(rgb)
    return cv2.resize(rgb, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)


def _hsv(rgb_small: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(rgb_small, cv2.COLOR_RGB2HSV).astype(np.int16)


def content_distance(prev_hsv: np.ndarray, hsv: np.ndarray) -> float:
    """Mean HSV difference (0..255) of two OpenCV-HSV frames (int), hue taken the short way round."""
    d = np.abs(hsv - prev_hsv)
    dh = np.minimum(d[..., 0], 180 - d[..., 0]) * (255.0 / 90.0)
    return float((dh.mean() + d[..., 1].mean() + d[..., 2].mean()) / 3.0)


def _color_hist(rgb_small: np.ndarray) -> np.ndarray:
    q = (rgb_small >> 5).reshape(-1, 3).astype(np.int64)
    h = np.bincount((q[:, 0] << 6) | (q[:, 1] << 3) | q[:, 2], minlength=512)
    return h / h.sum()


def palette_distance(prev_hist: np.ndarray, hist: np.ndarray) -> float:
    """Total-variation distance (0..1) between two normalised colour histograms."""
    return float(0.5 * np.abs(hist - prev_hist).sum())


def flat_fraction(gray: np.ndarray, *, tolerance: int = 2) -> float:
    """Fraction of pixels of a uint8 gray image within ``tolerance`` levels of its most common level."""
    hist = np.bincount(gray.ravel(), minlength=256).astype(np.int64)
    window = np.convolve(hist, np.ones(2 * tolerance + 1, dtype=np.int64), mode="same")
    mode = int(np.argmax(hist))
    return float(window[mode] / gray.size)


def motion_magnitude(prev_gray: np.ndarray, gray: np.ndarray) -> float:
    """Mean Farneback optical-flow magnitude (pixels of these images) from ``prev_gray`` to ``gray``."""
    import cv2

    flow = cv2.calcOpticalFlowFarneback(prev_gray, gray, None, 0.5, 3, 15, 3, 5, 1.2, 0)
    return float(np.mean(np.hypot(flow[..., 0], flow[..., 1])))


def detect_cuts(
    content: np.ndarray,
    palette: np.ndarray | None = None,
    *,
    threshold: float,
    palette_threshold: float = 0.0,
    min_shot_len: int,
) -> list[int]:
    """Frame indices where a new shot starts (never 0), from :attr:`FrameStats.content` and ``.palette``."""
    if palette is not None and len(palette) != len(content):
        raise ValueError(f"detect_cuts: content and palette differ in length ({len(content)} vs {len(palette)})")
    cuts: list[int] = []
    last = 0
    for t in range(1, len(content)):
        changed = content[t] >= threshold and (palette is None or palette[t] >= palette_threshold)
        if changed and t - last >= min_shot_len:
            cuts.append(t)
            last = t
    return cuts


# --------------------------------------------------------------------------------------- decoding passes
def analyze_video(
    path: str | os.PathLike[str],
    cfg: SelectConfig,
    scorers: Sequence[FrameScorer],
    *,
    progress: ProgressFactory | None = None,
) -> FrameStats:
    """First pass: decode every frame with PyAV and measure it (see the module docstring).

    Raises:
        av.error.FFmpegError / OSError: the file cannot be opened or no frame decodes. An error after some
        frames decoded is recorded in :attr:`FrameStats.error` instead, so a truncated file still yields clips.
    """
    import av
    import cv2

    content: list[float] = []
    palette: list[float] = []
    motion: list[float] = []
    flat: list[float] = []
    quality: dict[str, list[float]] = {s.name: [] for s in scorers}
    error: str | None = None
    prev_hsv = prev_gray = prev_hist = None
    width = height = 0
    with av.open(os.fspath(path)) as container:
        if not container.streams.video:
            raise ValueError(f"analyze_video: {path} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        fps = float(stream.average_rate or stream.guessed_rate or 0.0)
        bar = (progress or (lambda total, desc: ProgressBar()))(stream.frames or None, Path(path).name)
        try:
            for t, frame in enumerate(container.decode(stream)):
                rgb = frame.to_ndarray(format="rgb24")
                height, width = rgb.shape[:2]
                small = _shrink(rgb, cfg.analysis_width)
                hsv = _hsv(small)
                gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
                hist = _color_hist(small)
                content.append(0.0 if prev_hsv is None else content_distance(prev_hsv, hsv))
                palette.append(0.0 if prev_hist is None else palette_distance(prev_hist, hist))
                scale = width / gray.shape[1]
                motion.append(math.nan if prev_gray is None else motion_magnitude(prev_gray, gray) * scale)
                flat.append(flat_fraction(gray, tolerance=cfg.flat_tolerance))
                for s in scorers:
                    quality[s.name].append(float(s(rgb)) if t % cfg.score_every == 0 else math.nan)
                prev_hsv, prev_gray, prev_hist = hsv, gray, hist
                bar.update(1)
        except (av.error.FFmpegError, ValueError, OSError) as e:
            if not content:
                raise
            error = f"decoding stopped after {len(content)} frames: {e}"
            logger.warning("%s: %s", path, error)
        finally:
            bar.close()
    if not content:
        raise ValueError(f"analyze_video: no frame could be decoded from {path}")
    return FrameStats(
        width=width,
        height=height,
        fps=fps,
        content=np.asarray(content),
        palette=np.asarray(palette),
        motion=np.asarray(motion),
        flat=np.asarray(flat),
        quality={k: np.asarray(v) for k, v in quality.items()},
        higher_is_better={s.name: bool(s.higher_is_better) for s in scorers},
        error=error,
    )


def extract_clips(
    path: str | os.PathLike[str],
    windows: Sequence[ClipWindow],
    folders: Sequence[Path],
    *,
    progress: ProgressFactory | None = None,
) -> None:
    """Second pass: write frames ``w.start .. w.end - 1`` of each window as ``folder/00000000.png``, ...

    Each folder is written as ``<folder>.partial`` and renamed when complete, so an interrupted run never leaves
    a clip folder that looks finished. PNG is lossless; frames are 8-bit RGB.
    """
    import av
    import cv2

    if len(windows) != len(folders):
        raise ValueError(f"extract_clips: {len(windows)} windows but {len(folders)} folders")
    if not windows:
        return
    tmp = [f.with_name(f.name + ".partial") for f in folders]
    for d in (*folders, *tmp):
        if d.exists():
            shutil.rmtree(d)
    for d in tmp:
        d.mkdir(parents=True)
    last = max(w.end for w in windows)
    written = [0] * len(windows)
    with av.open(os.fspath(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        bar = (progress or (lambda total, desc: ProgressBar()))(last, f"{Path(path).name} (writing)")
        try:
            for t, frame in enumerate(container.decode(stream)):
                if t >= last:
                    break
                bar.update(1)
                hits = [i for i, w in enumerate(windows) if w.start <= t < w.end]
                if not hits:
                    continue
                bgr = frame.to_ndarray(format="bgr24")
                for i in hits:
                    name = tmp[i] / f"{t - windows[i].start:08d}.png"
                    if not cv2.imwrite(str(name), bgr, [cv2.IMWRITE_PNG_COMPRESSION, 3]):
                        raise OSError(f"extract_clips: could not write {name}")
                    written[i] += 1
        finally:
            bar.close()
    for w, n, src, dst in zip(windows, written, tmp, folders, strict=True):
        if n != w.end - w.start:
            raise ValueError(f"extract_clips: {path} gave {n} of {w.end - w.start} frames for clip {dst.name}")
        src.rename(dst)


# --------------------------------------------------------------------------------------- selection
def _window_sums(x: np.ndarray, length: int) -> np.ndarray:
    """Sums over every window of ``length`` consecutive entries (len(x) - length + 1 values)."""
    c = np.concatenate([[0.0], np.cumsum(x, dtype=np.float64)])
    return c[length:] - c[:-length]


def _zscore(x: np.ndarray) -> np.ndarray:
    sd = float(np.std(x))
    return np.zeros_like(x) if sd == 0 or not math.isfinite(sd) else (x - np.mean(x)) / sd


@dataclass(frozen=True)
class Candidates:
    """Every window ``[s, s + clip_len)`` of a video with its measures (index = start frame)."""

    motion: np.ndarray
    quality: dict[str, np.ndarray]
    n_cuts: np.ndarray
    ok: np.ndarray
    """No flat frame, enough motion, scored where a scorer scored anything."""
    gate_ok: np.ndarray
    """Passes :attr:`SelectConfig.quality_gate`."""
    sides_ok: np.ndarray
    """A cut clip's one cut has at least ``min_cut_side`` frames on each side."""


def candidate_windows(stats: FrameStats, cuts: Sequence[int], cfg: SelectConfig) -> Candidates | None:
    """The measures of every window (None when the video is shorter than one clip)."""
    n, length = stats.n_frames, cfg.clip_len
    if n < length:
        return None
    starts = n - length + 1
    flat_count = _window_sums((stats.flat >= cfg.flat_fraction).astype(np.float64), length)
    pair_ok = np.isfinite(stats.motion)
    cut_mask = np.zeros(n, dtype=bool)
    cut_mask[[c for c in cuts if 0 < c < n]] = True
    pair_ok &= ~cut_mask  # motion into a cut frame compares two different shots
    # pairs (t-1, t) inside [s, s+L) are t = s+1 .. s+L-1: a window of L-1 entries starting at s+1
    pair_sum = _window_sums(np.where(pair_ok, stats.motion, 0.0)[1:], length - 1)
    pair_cnt = _window_sums(pair_ok[1:].astype(np.float64), length - 1)
    motion = np.divide(pair_sum, pair_cnt, out=np.zeros_like(pair_sum), where=pair_cnt > 0)
    n_cuts = _window_sums(cut_mask[1:].astype(np.float64), length - 1).round().astype(int)

    quality: dict[str, np.ndarray] = {}
    for name, values in stats.quality.items():
        ok = np.isfinite(values)
        s = _window_sums(np.where(ok, values, 0.0), length)
        k = _window_sums(ok.astype(np.float64), length)
        quality[name] = np.divide(s, k, out=np.full_like(s, np.nan), where=k > 0)

    base_ok = (flat_count == 0) & (motion >= cfg.min_motion) & (pair_cnt > 0)
    for q in quality.values():
        base_ok &= np.isfinite(q) | np.all(~np.isfinite(q))  # a scorer that abstained everywhere is ignored
    gate_ok = np.ones(starts, dtype=bool)
    for name, threshold in cfg.quality_gate:
        q = quality.get(name)
        if q is None or np.all(~np.isfinite(q)):
            continue  # not in use, or abstained everywhere: nothing to gate on
        higher = stats.higher_is_better.get(name, True)
        gate_ok &= (q >= threshold) if higher else (q <= threshold)

    # a cut clip has exactly one cut c with at least min_cut_side frames each side: s in [c - L + m, c - m]
    sides_ok = np.zeros(starts, dtype=bool)
    for c in cuts:
        sides_ok[max(0, c - length + cfg.min_cut_side) : max(0, c - cfg.min_cut_side + 1)] = True
    return Candidates(motion=motion, quality=quality, n_cuts=n_cuts, ok=base_ok, gate_ok=gate_ok, sides_ok=sides_ok)


def gate_report(stats: FrameStats, cuts: Sequence[int], cfg: SelectConfig) -> dict[str, Any]:
    """What the quality gate did to a video: eligible windows, how many it rejected, the best scores it saw."""
    c = candidate_windows(stats, cuts, cfg)
    if c is None:
        return {"eligible": 0, "rejected": 0}
    eligible = c.ok & ((c.n_cuts == 0) | ((c.n_cuts == 1) & c.sides_ok))
    out: dict[str, Any] = {"eligible": int(eligible.sum()), "rejected": int((eligible & ~c.gate_ok).sum())}
    best = {}
    for name, _ in cfg.quality_gate:
        q = c.quality.get(name)
        if q is not None and eligible.any() and np.isfinite(q[eligible]).any():
            v = q[eligible]
            best[name] = float(np.nanmax(v) if stats.higher_is_better.get(name, True) else np.nanmin(v))
    if best:
        out["best"] = best
    return out


def select_windows(stats: FrameStats, cuts: Sequence[int], cfg: SelectConfig) -> list[ClipWindow]:
    """Choose the clips: ``cfg.clips_per_video`` inside one shot, then ``cfg.cut_clips`` across exactly one cut.

    A window ``[s, s + clip_len)`` is eligible when it has no flat frame, its mean motion (over the frame
    pairs inside it that do not straddle a cut) reaches ``cfg.min_motion`` and it passes the absolute
    ``cfg.quality_gate``. Eligible windows are ranked by ``motion_weight * z(motion) + Σ weight_s * ± z(quality_s)``,
    where z standardises a component over the eligible windows of this video and the sign makes higher better.
    The best non-overlapping windows win.
    """
    cand = candidate_windows(stats, cuts, cfg)
    if cand is None:
        return []
    length = cfg.clip_len
    starts = np.arange(cand.motion.size)
    motion, quality = cand.motion, cand.quality
    base_ok = cand.ok & cand.gate_ok
    chosen: list[ClipWindow] = []
    taken = np.zeros(stats.n_frames, dtype=bool)
    for want, eligible in (
        (cfg.clips_per_video, base_ok & (cand.n_cuts == 0)),
        (cfg.cut_clips, base_ok & (cand.n_cuts == 1) & cand.sides_ok),
    ):
        idx = starts[eligible]
        if not want or idx.size == 0:
            continue
        score = cfg.motion_weight * _zscore(motion[idx])
        for name, q in quality.items():
            if np.all(~np.isfinite(q[idx])):
                continue
            sign = 1.0 if stats.higher_is_better.get(name, True) else -1.0
            score = score + cfg.weight_of(name) * sign * _zscore(q[idx])
        picked = 0
        for j in np.argsort(-score, kind="stable"):
            s = int(idx[j])
            if picked == want:
                break
            if taken[s : s + length].any():
                continue
            taken[s : s + length] = True
            picked += 1
            chosen.append(
                ClipWindow(
                    start=s,
                    end=s + length,
                    score=float(score[j]),
                    motion=float(motion[s]),
                    quality={k: float(v[s]) for k, v in quality.items()},
                    cuts=tuple(c for c in cuts if s < c < s + length),
                )
            )
    return chosen

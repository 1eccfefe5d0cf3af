"""Clip datasets for AnimeSR training.

A *clip* is either a folder of numbered frames (the AVC-Train layout: one folder per clip, ``00000000.png`` ...) or
a video file. Each item is a short window sampled by the published rules: ``clip_len`` frames at a temporal interval
drawn from ``intervals``, reversed with p=0.5, one ``gt_size`` crop and one set of flips/transposes shared by all
frames, then (optionally) degraded to LR with :func:`training.degradations.pipeline.degrade_clip`.

Every random choice comes from a generator seeded by ``(seed, epoch, index)``, so an item does not depend on which
worker or rank loads it: the dataset works with any number of ``DataLoader`` workers and with
``DistributedSampler``. Call :meth:`ClipDataset.set_epoch` each epoch (with ``persistent_workers=False``, or the
workers keep their copy of the old epoch).
"""

from __future__ import annotations

import bisect
import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from training.degradations.pipeline import DegradationConfig, degrade_clip
from training.synthetic import make_synthetic_cartoon_clip

__all__ = [
    "IMAGE_EXTS",
    "VIDEO_EXTS",
    "ClipDataset",
    "ClipSource",
    "SyntheticClips",
    "find_clips",
    "item_seeds",
    "make_synthetic_cartoon_clip",
]

log = logging.getLogger("training.data")

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_EXTS = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".ts", ".m2ts", ".mpg", ".mpeg", ".flv", ".wmv", ".y4m")


def item_seeds(seed: int, epoch: int, index: int) -> tuple[np.random.Generator, int]:
    """The sampling generator and the degradation seed of item ``index`` in ``epoch``: independent streams that
    depend on nothing else (not on the worker, the rank or the order in which items are loaded)."""
    seq = np.random.SeedSequence([seed, epoch, index])
    return np.random.default_rng(seq.spawn(1)[0]), int(seq.generate_state(2, np.uint64)[1] >> np.uint64(1))


def _natural_key(name: str) -> list[Any]:
    return [int(tok) if tok.isdigit() else tok for tok in re.split(r"(\d+)", name)]


@dataclass(frozen=True)
class ClipSource:
    """One clip: a sorted tuple of frame files, or a video file (with its frame timestamps when known)."""

    key: str
    num_frames: int
    frames: tuple[str, ...] = ()
    video: str | None = None
    pts: tuple[int, ...] = ()
    """Video only: presentation timestamp of each frame in display order (empty: decode from the start)."""
    keyframes: tuple[int, ...] = ()
    """Video only: sorted timestamps of the keyframes, the places a decoder can start from."""

    def read(self, indices: Sequence[int]) -> np.ndarray:
        """Frames at ``indices`` (any order, repeats allowed) as (len,H,W,3) uint8 RGB."""
        if not indices or min(indices) < 0 or max(indices) >= self.num_frames:
            raise IndexError(f"ClipSource.read: indices {list(indices)[:5]} outside clip {self.key!r} "
                             f"of {self.num_frames} frames")
        if self.video is None:
            out = []
            for i in indices:
                img = cv2.imread(self.frames[i], cv2.IMREAD_COLOR)
                if img is None:
                    raise OSError(f"ClipSource.read: cannot read image {self.frames[i]!r}")
                out.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
            return np.stack(out)
        got = self._decode(set(indices), seek=bool(self.pts))
        if len(got) < len(set(indices)) and self.pts:
            log.warning("ClipSource.read: seeking in %s missed frames; decoding from the start", self.video)
            got = self._decode(set(indices), seek=False)
        missing = set(indices) - set(got)
        if missing:
            raise OSError(f"ClipSource.read: {self.video!r} has no frame(s) {sorted(missing)[:5]}")
        return np.stack([got[i] for i in indices])

    def _decode(self, wanted: set[int], *, seek: bool) -> dict[int, np.ndarray]:
        """Decode the wanted frames, starting at the last keyframe before them when ``seek`` (else at frame 0)."""
        assert self.video is not None
        first, last = min(wanted), max(wanted)
        index_of = {p: i for i, p in enumerate(self.pts)}
        got: dict[int, np.ndarray] = {}
        with av.open(self.video) as container:
            stream = container.streams.video[0]
            stream.thread_count = 1
            if seek:
                start = bisect.bisect_right(self.keyframes, self.pts[first]) - 1
                container.seek(self.keyframes[max(start, 0)], stream=stream, backward=True)
            for n, frame in enumerate(container.decode(stream)):
                i = index_of.get(frame.pts, -1) if seek else n
                if i in wanted:
                    # threads=1: libswscale's own thread pool would hang in forked data-loader workers.
                    got[i] = frame.to_ndarray(format="rgb24", threads=1)
                if i >= last:
                    break
        return got


def _index_video(path: Path) -> ClipSource:
    """Read the packet timestamps (no decoding) so that items can seek instead of decoding from the start."""
    pts: list[int] = []
    keyframes: list[int] = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for p in container.demux(stream):
            if p.size == 0:
                continue
            pts.append(-1 if p.pts is None else int(p.pts))
            if p.is_keyframe and p.pts is not None:
                keyframes.append(int(p.pts))
    if not pts:
        raise ValueError(f"find_clips: {str(path)!r} has no video frames")
    if min(pts) < 0 or len(set(pts)) != len(pts) or not keyframes:
        log.info("find_clips: %s has no usable timestamps; items will decode from the start", path)
        return ClipSource(key=path.stem, num_frames=len(pts), video=str(path))
    return ClipSource(key=path.stem, num_frames=len(pts), video=str(path), pts=tuple(sorted(pts)),
                      keyframes=tuple(sorted(keyframes)))


def _frames_in(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS), key=lambda p: _natural_key(p.name))


def find_clips(root_or_paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[ClipSource]:
    """Collect clips from a clip folder, a folder of clip folders and/or videos, a video file, or a list of these."""
    items = [root_or_paths] if isinstance(root_or_paths, (str, os.PathLike)) else list(root_or_paths)
    clips: list[ClipSource] = []
    for item in items:
        p = Path(item)
        if p.is_file():
            if p.suffix.lower() not in VIDEO_EXTS:
                raise ValueError(f"find_clips: {str(p)!r} is not a video file (extensions: {VIDEO_EXTS})")
            clips.append(_index_video(p))
        elif p.is_dir():
            frames = _frames_in(p)
            if frames:
                clips.append(ClipSource(key=p.name, num_frames=len(frames), frames=tuple(map(str, frames))))
                continue
            for child in sorted(p.iterdir(), key=lambda c: _natural_key(c.name)):
                if child.is_dir() and (frames := _frames_in(child)):
                    clips.append(ClipSource(key=child.name, num_frames=len(frames), frames=tuple(map(str, frames))))
                elif child.is_file() and child.suffix.lower() in VIDEO_EXTS:
                    clips.append(_index_video(child))
        else:
            raise FileNotFoundError(f"find_clips: {str(p)!r} does not exist")
    if not clips:
        raise ValueError(f"find_clips: no clip folders or videos found in {[str(i) for i in items]}")
    return clips


class ClipDataset(Dataset):
    """Random HR/LR training windows from clips.

    Args:
        root_or_paths: see :func:`find_clips`.
        clip_len: frames per item (15 in the paper).
        gt_size: side of the square HR crop (256 in the paper).
        scale: HR/LR size ratio; must match ``degradation.scale``.
        intervals: temporal strides to draw from; only those that fit in the clip are used.
        degradation: the LR pipeline; ``None`` returns HR only (degrade later, e.g. batched on the GPU with
            :class:`training.degradations.batched.DegradedStream`, from the item's ``seed``).
        lbo_pool: learned basic operators for ``degradation`` (kept on the CPU inside workers).
        seed: base seed; items are a pure function of (seed, epoch, index).
        reverse_prob: probability of playing the window backwards.
        augment: random horizontal flip, vertical flip and transpose, each with p=0.5.
        repeat: the dataset length is ``repeat`` x the number of clips (an epoch visits each clip ``repeat`` times).
        uint8: return ``gt`` as uint8 (a quarter of the bytes to pin and copy; the trainer converts on its device).

    Items are dicts: ``gt`` (T,3,gt,gt) float in [0,1] (uint8 0..255 with ``uint8``); ``lq`` (T,3,gt/scale,
    gt/scale) when ``degradation`` is set; ``key`` ``"<clip>/<first frame>"``; ``seed`` (int, the item's
    degradation seed); ``params`` (JSON string of the degradation draws).
    """

    def __init__(
        self,
        root_or_paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        *,
        clip_len: int = 15,
        gt_size: int = 256,
        scale: int = 4,
        intervals: Sequence[int] = (1, 2, 3),
        degradation: DegradationConfig | None = None,
        lbo_pool: Sequence[nn.Module] | None = None,
        seed: int = 0,
        reverse_prob: float = 0.5,
        augment: bool = True,
        repeat: int = 1,
        uint8: bool = False,
    ) -> None:
        if clip_len < 1:
            raise ValueError(f"ClipDataset: clip_len must be >= 1, got {clip_len!r}")
        if gt_size < 1 or gt_size % scale:
            raise ValueError(f"ClipDataset: gt_size must be a positive multiple of scale={scale}, got {gt_size!r}")
        if not intervals or any(int(i) < 1 for i in intervals):
            raise ValueError(f"ClipDataset: intervals must be positive integers, got {list(intervals)!r}")
        if degradation is not None and degradation.scale != scale:
            raise ValueError(f"ClipDataset: scale={scale} differs from degradation.scale={degradation.scale}")
        if repeat < 1:
            raise ValueError(f"ClipDataset: repeat must be >= 1, got {repeat!r}")
        self.clips = find_clips(root_or_paths)
        too_short = [c.key for c in self.clips if c.num_frames < clip_len]
        if too_short:
            raise ValueError(f"ClipDataset: clip(s) shorter than clip_len={clip_len}: {too_short[:5]}")
        self.clip_len = clip_len
        self.gt_size = gt_size
        self.scale = scale
        self.intervals = tuple(int(i) for i in intervals)
        self.degradation = degradation
        self.lbo_pool = lbo_pool
        self.seed = int(seed)
        self.reverse_prob = float(reverse_prob)
        self.augment = augment
        self.repeat = int(repeat)
        self.uint8 = uint8
        self.epoch = 0
        log.info("ClipDataset: %d clips, %d items", len(self.clips), len(self))

    def set_epoch(self, epoch: int) -> None:
        """Choose a different (but reproducible) draw for every item; call once per epoch, like the sampler's."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.clips) * self.repeat

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"ClipDataset: index {index} out of range [0, {len(self)})")
        sample_rng, degrade_seed = item_seeds(self.seed, self.epoch, index)
        clip = self.clips[index % len(self.clips)]

        fits = [i for i in self.intervals if (self.clip_len - 1) * i + 1 <= clip.num_frames]
        interval = fits[int(sample_rng.integers(len(fits)))]
        span = (self.clip_len - 1) * interval + 1
        start = int(sample_rng.integers(0, clip.num_frames - span + 1))
        indices = list(range(start, start + span, interval))
        if sample_rng.random() < self.reverse_prob:
            indices.reverse()
        frames = clip.read(indices)

        h, w = frames.shape[1:3]
        if h < self.gt_size or w < self.gt_size:
            raise ValueError(f"ClipDataset: clip {clip.key!r} frames are {h}x{w}, smaller than gt_size={self.gt_size}")
        top = int(sample_rng.integers(0, h - self.gt_size + 1))
        left = int(sample_rng.integers(0, w - self.gt_size + 1))
        frames = frames[:, top : top + self.gt_size, left : left + self.gt_size]
        if self.augment:
            hflip, vflip, transpose = (bool(v) for v in sample_rng.random(3) < 0.5)
            if hflip:
                frames = frames[:, :, ::-1]
            if vflip:
                frames = frames[:, ::-1]
            if transpose:
                frames = frames.transpose(0, 2, 1, 3)
        gt_u8 = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
        gt = gt_u8.float().div_(255.0)

        item: dict[str, Any] = {"gt": gt_u8 if self.uint8 else gt, "key": f"{clip.key}/{indices[0]:06d}",
                                "seed": degrade_seed}
        if self.degradation is not None:
            lq, params = degrade_clip(
                gt, self.degradation, rng=np.random.default_rng(degrade_seed), lbo_pool=self.lbo_pool
            )
            item["lq"] = lq
            item["params"] = json.dumps(params)
        return item


class SyntheticClips(Dataset):
    """Generated cartoon clips (HR kept in memory as uint8), for tests and quick runs; items as :class:`ClipDataset`.

    The clip is played backwards with p=0.5, as in the published sampling; ``degradation`` (optional) degrades it
    in the item, like :class:`ClipDataset`.
    """

    def __init__(self, num_clips: int, *, clip_len: int, gt_size: int, scale: int,
                 degradation: DegradationConfig | None = None, lbo_pool: Sequence[nn.Module] | None = None,
                 seed: int = 0, uint8: bool = False) -> None:
        if num_clips < 1:
            raise ValueError(f"SyntheticClips: num_clips must be >= 1, got {num_clips!r}")
        clips = [make_synthetic_cartoon_clip(clip_len, gt_size, gt_size, rng=np.random.default_rng([seed, i]))
                 for i in range(num_clips)]
        self.clips = [torch.from_numpy(c).permute(0, 3, 1, 2).contiguous() for c in clips]
        self.scale, self.degradation, self.lbo_pool, self.seed = scale, degradation, lbo_pool, seed
        self.uint8 = uint8
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng, degrade_seed = item_seeds(self.seed, self.epoch, index)
        gt_u8 = self.clips[index]
        if rng.random() < 0.5:
            gt_u8 = gt_u8.flip(0)
        gt = gt_u8.float().div(255.0)
        item: dict[str, Any] = {"gt": gt_u8 if self.uint8 else gt, "key": f"synthetic/{index}", "seed": degrade_seed}
        if self.degradation is not None:
            item["lq"], params = degrade_clip(gt, self.degradation, rng=np.random.default_rng(degrade_seed),
                                              lbo_pool=self.lbo_pool)
            item["params"] = json.dumps(params)
        return item

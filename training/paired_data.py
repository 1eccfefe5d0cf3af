"""Pseudo-HR / LQ frame pairs for fitting learned basic operators (LBOs).

Layout (what ``python -m training.pseudo_hr`` writes): ``ROOT/hr/NAME.png`` (pseudo-HR, exactly 2x the LQ size) and
``ROOT/lq/NAME.png`` (the real low-quality frame). Each item is one random aligned crop (``gt_size`` from the
pseudo-HR, ``gt_size/scale`` from the LQ) with the same random flips / 90-degree rotation on both, drawn from a
generator seeded by ``(seed, epoch, index)`` so items do not depend on worker or rank.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

__all__ = ["PairedFrames", "find_pairs", "read_rgb"]

log = logging.getLogger("training.paired_data")

_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def read_rgb(path: str | os.PathLike[str]) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB."""
    with Image.open(path) as im:
        return np.array(im.convert("RGB"))  # a writable copy


def find_pairs(roots: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[tuple[str, str]]:
    """(pseudo-HR, LQ) file pairs from one or more ``ROOT`` folders holding ``hr/`` and ``lq/`` with equal names."""
    items = [roots] if isinstance(roots, (str, os.PathLike)) else list(roots)
    pairs: list[tuple[str, str]] = []
    for root in items:
        hr_dir, lq_dir = Path(root) / "hr", Path(root) / "lq"
        if not hr_dir.is_dir() or not lq_dir.is_dir():
            raise FileNotFoundError(f"find_pairs: {str(root)!r} must contain the folders 'hr' and 'lq'")
        names = sorted(p.name for p in hr_dir.iterdir() if p.suffix.lower() in _EXTS)
        lq_names = {p.name for p in lq_dir.iterdir() if p.suffix.lower() in _EXTS}
        missing = [n for n in names if n not in lq_names]
        if missing:
            raise FileNotFoundError(f"find_pairs: {str(lq_dir)!r} lacks {len(missing)} frame(s), e.g. {missing[0]!r}")
        pairs += [(str(hr_dir / n), str(lq_dir / n)) for n in names]
    if not pairs:
        raise ValueError(f"find_pairs: no frame pairs in {[str(i) for i in items]}")
    return pairs


class PairedFrames(Dataset):
    """Random aligned crops of pseudo-HR/LQ pairs.

    Args:
        roots: see :func:`find_pairs`.
        gt_size: side of the pseudo-HR crop (256 in the published recipe); the LQ crop is ``gt_size // scale``.
        scale: pseudo-HR / LQ size ratio (2: an LBO is a x0.5 operator).
        seed: items are a pure function of (seed, epoch, index).
        augment: random horizontal flip, vertical flip and 90-degree rotation (transpose), each p=0.5.
        cache: keep decoded frames in memory (small sets, tests).

    Items: ``hr`` (3, gt, gt) and ``lq`` (3, gt/scale, gt/scale) floats in [0, 1], and ``key`` (the file name).
    """

    def __init__(
        self,
        roots: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        *,
        gt_size: int = 256,
        scale: int = 2,
        seed: int = 0,
        augment: bool = True,
        cache: bool = False,
    ) -> None:
        if scale < 1 or gt_size < scale or gt_size % scale:
            raise ValueError(f"PairedFrames: gt_size={gt_size!r} must be a positive multiple of scale={scale!r}")
        self.pairs = find_pairs(roots)
        self.gt_size = gt_size
        self.scale = scale
        self.seed = int(seed)
        self.augment = augment
        self.epoch = 0
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] | None = {} if cache else None
        log.info("PairedFrames: %d pairs", len(self.pairs))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.pairs)

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        hr_path, lq_path = self.pairs[index]
        hr, lq = read_rgb(hr_path), read_rgb(lq_path)
        s = self.scale
        if hr.shape[0] != lq.shape[0] * s or hr.shape[1] != lq.shape[1] * s:
            raise ValueError(
                f"PairedFrames: {hr_path!r} is {hr.shape[1]}x{hr.shape[0]} but must be {s}x its LQ "
                f"{lq_path!r} ({lq.shape[1]}x{lq.shape[0]})"
            )
        if lq.shape[0] * s < self.gt_size or lq.shape[1] * s < self.gt_size:
            raise ValueError(f"PairedFrames: {hr_path!r} is smaller than gt_size={self.gt_size}")
        if self._cache is not None:
            self._cache[index] = (hr, lq)
        return hr, lq

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"PairedFrames: index {index} out of range [0, {len(self)})")
        hr, lq = self._load(index)
        rng = np.random.default_rng([self.seed, self.epoch, index])
        s, lq_size = self.scale, self.gt_size // self.scale
        top = int(rng.integers(0, lq.shape[0] - lq_size + 1))
        left = int(rng.integers(0, lq.shape[1] - lq_size + 1))
        lq = lq[top : top + lq_size, left : left + lq_size]
        hr = hr[top * s : top * s + self.gt_size, left * s : left * s + self.gt_size]
        if self.augment:
            hflip, vflip, rot = (bool(v) for v in rng.random(3) < 0.5)
            for flag, op in ((hflip, lambda a: a[:, ::-1]), (vflip, lambda a: a[::-1]),
                             (rot, lambda a: a.transpose(1, 0, 2))):
                if flag:
                    hr, lq = op(hr), op(lq)

        def to_tensor(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1).float().div_(255.0)

        return {"hr": to_tensor(hr), "lq": to_tensor(lq), "key": Path(self.pairs[index][0]).name}

"""Pluggable per-frame quality scorers for the dataset builder (``scripts/build_dataset.py``).

The AnimeSR authors ranked frames with hyperIQA; its weights are not available offline, so the defaults here are
weight-free: NIQE (:func:`animesr_tools.metrics.niqe`, lower is better) and sharpness (variance of the Laplacian,
higher is better). The builder only compares frames *of the same video* (it z-scores every scorer over the
candidate windows of one video), so a scorer's scale does not matter, only its ordering.

Plugging in a learned scorer: write any object with a ``name``, a ``higher_is_better`` flag and a
``__call__(rgb) -> float`` taking one ``(H, W, 3)`` uint8 RGB frame, plus a zero-argument factory that builds it::

    # mypkg/hyperiqa_scorer.py
    class HyperIQAScorer:
        name = "hyperiqa"
        higher_is_better = True

        def __init__(self) -> None:
            self.net = load_my_hyperiqa("hyperiqa.pth").eval()

        def __call__(self, rgb: np.ndarray) -> float:
            with torch.no_grad():
                return float(self.net(to_tensor(rgb)[None]))

    def make() -> HyperIQAScorer:
        return HyperIQAScorer()

and pass ``--scorer mypkg.hyperiqa_scorer:make`` (repeatable; ``--scorer niqe --scorer sharpness`` are the
defaults). A scorer may return ``nan`` to abstain on a frame (e.g. too small for it).
"""

from __future__ import annotations

import importlib
import logging
import math
from typing import Protocol, runtime_checkable

import numpy as np

from animesr_tools import metrics

__all__ = ["BUILTIN_SCORERS", "FrameScorer", "NiqeScorer", "SharpnessScorer", "make_scorer"]

logger = logging.getLogger(__name__)


@runtime_checkable
class FrameScorer(Protocol):
    """What the dataset builder needs from a no-reference quality scorer."""

    name: str
    """Column name in the manifest; must be unique among the scorers of one run."""
    higher_is_better: bool
    """Direction of the score: NIQE is lower-is-better, most learned IQA models higher-is-better."""

    def __call__(self, rgb: np.ndarray) -> float:
        """Score one ``(H, W, 3)`` uint8 RGB frame; ``nan`` to abstain."""
        ...


def _gray_u8(rgb: np.ndarray, *, max_height: int | None) -> np.ndarray:
    """Full-range BT.601 luma as uint8, shrunk (area average) so its height is at most ``max_height``."""
    import cv2

    gray = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    h, w = gray.shape
    if max_height is not None and h > max_height:
        gray = cv2.resize(gray, (max(1, round(w * max_height / h)), max_height), interpolation=cv2.INTER_AREA)
    return gray


class NiqeScorer:
    """NIQE on the luma, lower is better; abstains (``nan``) on frames of 193 px or less per side.

    Frames taller than ``max_height`` are area-downscaled first: NIQE costs about 0.1 s per 480p frame, and a
    downscale also stops compression noise at full resolution from dominating the score.
    """

    name = "niqe"
    higher_is_better = False

    def __init__(self, *, max_height: int | None = 480) -> None:
        if max_height is not None and max_height <= 2 * metrics.NIQE_PATCH_SIZE + 1:
            raise ValueError(f"NiqeScorer: max_height must be > {2 * metrics.NIQE_PATCH_SIZE + 1}, got {max_height}")
        self.max_height = max_height

    def __call__(self, rgb: np.ndarray) -> float:
        gray = _gray_u8(rgb, max_height=self.max_height)
        if min(gray.shape) <= 2 * metrics.NIQE_PATCH_SIZE + 1:
            return math.nan
        return metrics.niqe(gray)


class SharpnessScorer:
    """Variance of the Laplacian of the luma (values in [0, 1]), higher is better: favours crisp line art."""

    name = "sharpness"
    higher_is_better = True

    def __init__(self, *, max_height: int | None = 480) -> None:
        self.max_height = max_height

    def __call__(self, rgb: np.ndarray) -> float:
        return metrics.sharpness(_gray_u8(rgb, max_height=self.max_height))


BUILTIN_SCORERS: dict[str, type[NiqeScorer] | type[SharpnessScorer]] = {
    "niqe": NiqeScorer,
    "sharpness": SharpnessScorer,
}


def make_scorer(spec: str) -> FrameScorer:
    """A scorer from a built-in name (``niqe``, ``sharpness``) or ``package.module:factory``.

    Raises:
        ValueError: unknown name, or the factory's result lacks ``name``/``higher_is_better``/``__call__``.
    """
    if spec in BUILTIN_SCORERS:
        return BUILTIN_SCORERS[spec]()
    if ":" not in spec:
        raise ValueError(
            f"make_scorer: spec must be one of {sorted(BUILTIN_SCORERS)} or 'package.module:factory', got {spec!r}"
        )
    module_name, _, attr = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"make_scorer: cannot load {spec!r}: {e}") from e
    scorer = factory()
    if not isinstance(scorer, FrameScorer) or not isinstance(scorer.name, str):
        raise ValueError(
            f"make_scorer: {spec!r} returned {type(scorer).__name__}, which lacks name / higher_is_better / __call__"
        )
    logger.info("using scorer %s from %s", scorer.name, spec)
    return scorer

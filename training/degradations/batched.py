"""Degrading training batches on the training device, with the codec round trips in worker processes.

With learned basic operators the tensor steps cost ~0.5 s of CPU per 15x256x256 clip, so data-loader workers
cannot keep a GPU fed. Here the workers only read and crop HR clips (as uint8); the training loop then

1. draws each clip's degradation from the clip's own seed (a pure function of run seed, epoch and index, so the
   result does not depend on how many workers or processes there are),
2. runs blur, noise, resize and LBOs for the whole batch on the training device (:func:`apply_tensor_steps`),
3. hands the 8-bit LR clips to a pool of codec processes and moves on: the round trips of batch k+depth run
   while the device trains on batch k, so the codec stays off the critical path.

A failed round trip keeps its clip uncompressed (see :func:`run_codec`); the stream counts such clips.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from training.degradations.pipeline import (
    CodecConfig,
    DegradationConfig,
    Draw,
    apply_tensor_steps,
    draw_degradation,
    run_codec,
    to_uint8,
)

__all__ = ["CodecWorkers", "DegradedStream"]

log = logging.getLogger("training.degradations")


class _Done:
    """A finished result with the ``Future.result()`` interface (inline mode)."""

    def __init__(self, value: Any) -> None:  # noqa: ANN401
        self._value = value

    def result(self) -> Any:  # noqa: ANN401
        return self._value


class CodecWorkers:
    """Runs :func:`run_codec` in ``workers`` spawned processes (0: in the calling process, synchronously).

    Spawned, not forked: the parent may hold CUDA contexts and thread pools that a fork would copy half-alive.
    If a worker dies (a crash inside libav), the pool is replaced and the affected clips stay uncompressed.
    """

    def __init__(self, cfg: CodecConfig, workers: int) -> None:
        if workers < 0:
            raise ValueError(f"CodecWorkers: workers must be >= 0, got {workers!r}")
        self.cfg = cfg
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
        return self._pool

    def submit(self, frames: np.ndarray, params: Mapping[str, Any]) -> Future | _Done:
        if self.workers == 0:
            return _Done(run_codec(frames, params, self.cfg))
        return self._executor().submit(run_codec, frames, dict(params), self.cfg)

    def result(self, job: Future | _Done, frames: np.ndarray) -> tuple[np.ndarray, str | None]:
        """The job's result; a dead worker means: the clip stays uncompressed, and a fresh pool."""
        try:
            return job.result()
        except BrokenProcessPool as e:
            self.close()
            return frames, f"codec worker died: {e}"

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


@dataclass
class _Pending:
    gt: Tensor
    lq: Tensor
    """The tensor steps' output (B,T,3,h,w), unclamped; codec'd clips are replaced in :meth:`DegradedStream._finish`."""
    frames: dict[int, np.ndarray]
    jobs: dict[int, Any]
    draws: list[Draw]
    keys: list[str]


class DegradedStream:
    """(gt, lq) float batches on ``device`` from an iterator of HR batches.

    Each HR batch is a mapping with ``gt`` (B,T,3,H,W), uint8 or float in [0, 1], ``seed`` (B,) integers and
    optionally ``key`` (B,) strings. ``depth`` batches are kept in flight so the codec round trips overlap with
    training. Counters: :attr:`clips`, :attr:`fallbacks` (clips left uncompressed after a codec failure).

    Codec workers are spawned processes: a script that creates a stream with ``codec_workers > 0`` needs the
    usual ``if __name__ == "__main__":`` guard (``python -m training.train`` has it).
    """

    def __init__(
        self,
        batches: Iterator[Mapping[str, Any]],
        cfg: DegradationConfig,
        *,
        device: torch.device,
        lbo_pool: Sequence[nn.Module] | None = None,
        codec_workers: int = 0,
        depth: int = 2,
    ) -> None:
        if cfg.uses_lbo and not lbo_pool:
            raise ValueError(f"DegradedStream: resize.lbo_prob={cfg.resize.lbo_prob} needs a non-empty lbo_pool")
        if depth < 1:
            raise ValueError(f"DegradedStream: depth must be >= 1, got {depth!r}")
        self.batches = batches
        self.cfg = cfg
        self.device = device
        self.lbo_pool = list(lbo_pool or ())
        self.codec = CodecWorkers(cfg.codec, codec_workers)
        self.depth = depth if cfg.uses_codec else 1
        self.clips = 0
        self.fallbacks = 0
        self._pending: deque[_Pending] = deque()

    def __iter__(self) -> DegradedStream:
        return self

    def __next__(self) -> tuple[Tensor, Tensor]:
        while len(self._pending) < self.depth:
            batch = next(self.batches, None)
            if batch is None:  # the source ended: hand out what is in flight
                break
            self._pending.append(self._start(batch))
        if not self._pending:
            raise StopIteration
        return self._finish(self._pending.popleft())

    def close(self) -> None:
        self.codec.close()

    def _start(self, batch: Mapping[str, Any]) -> _Pending:
        gt = batch["gt"].to(self.device, non_blocking=True)
        gt = gt.float().div_(255.0) if gt.dtype == torch.uint8 else gt.float()
        seeds = [int(s) for s in batch["seed"]]
        keys = [str(k) for k in batch.get("key", [str(s) for s in seeds])]
        draws = [draw_degradation(self.cfg, np.random.default_rng(s), num_frames=gt.shape[1],
                                  num_lbos=len(self.lbo_pool)) for s in seeds]
        lq = apply_tensor_steps(gt, draws, self.cfg, self.lbo_pool)
        coded = [i for i, d in enumerate(draws) if d.codec is not None]
        frames: dict[int, np.ndarray] = {}
        jobs: dict[int, Any] = {}
        if coded:
            u8 = to_uint8(lq[coded], mode=self.cfg.codec.quantize).cpu().numpy()
            for j, i in enumerate(coded):
                frames[i] = u8[j]
                jobs[i] = self.codec.submit(u8[j], draws[i].codec)  # type: ignore[arg-type]
        return _Pending(gt=gt, lq=lq, frames=frames, jobs=jobs, draws=draws, keys=keys)

    def _finish(self, p: _Pending) -> tuple[Tensor, Tensor]:
        lq = p.lq.clamp(0.0, 1.0)
        for i, job in p.jobs.items():
            y, failed = self.codec.result(job, p.frames[i])
            if failed:
                self.fallbacks += 1
                log.warning("codec round trip of clip %s failed (%s); using it uncompressed (%d so far)",
                            p.keys[i], failed, self.fallbacks)
            lq[i] = torch.from_numpy(y).to(self.device).permute(0, 3, 1, 2).to(lq.dtype).div_(255.0)
        self.clips += len(p.draws)
        return p.gt, lq

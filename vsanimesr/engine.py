"""The AnimeSR inference engine: devices, precision, padding, tiling and *deterministic* recurrence.

AnimeSR carries its previous output and a hidden state from frame to frame, so a naive player that seeks gets a
different picture than one that plays linearly. This engine defines the output of frame ``n`` as a function of the
input frames alone:

* A *chain* is a run of recurrent steps that starts from a zero state.
* Chains restart at scene cuts (a cut at ``k`` means frames ``k-1`` and ``k`` belong to different shots; the neighbour
  frames used by a step never cross a cut) and every ``reset_interval`` frames.
* A periodic restart at ``P`` is led in by ``warmup`` steps on frames ``P - warmup .. P - 1`` (from a zero state,
  outputs discarded), so the restart is not visible. A cut inside the warm-up shortens it.
* Frame ``n`` therefore reads at most input frames ``window(n)`` = ``[P - warmup - 1, n + 1]``.

Sequential use costs one network step per frame plus ``warmup`` steps per periodic restart; random access costs at
most ``reset_interval + warmup`` steps. ``reset_interval=0`` and ``scene_threshold=0`` give the published behaviour:
one chain from frame 0.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from vsanimesr.loader import load_model
from vsanimesr.weights import resolve

__all__ = [
    "DEFAULT_RESET_INTERVAL",
    "DEFAULT_SCENE_THRESHOLD",
    "DEFAULT_WARMUP",
    "AnimeSR",
    "resolve_device",
    "scene_metric",
]

log = logging.getLogger("vsanimesr")

DEFAULT_RESET_INTERVAL = 48
"""Frames between periodic chain restarts (bounds the cost of a seek to ``reset_interval + warmup`` steps)."""
DEFAULT_WARMUP = 4
"""Discarded lead-in steps before each periodic restart (the output settles in about 5 frames from zero)."""
DEFAULT_SCENE_THRESHOLD = 0.15
"""Cut when :func:`scene_metric` of consecutive low-resolution frames exceeds this (see the function for data)."""


FrameLike = Any  # (H, W, 3) array, or a sequence of 3 planes (R, G, B) each (H, W)


def resolve_device(device: str | torch.device) -> torch.device:
    """Map ``auto``/``cpu``/``cuda``/``cuda:N`` to a torch device, with a clear error when CUDA is missing."""
    name = str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"AnimeSR: device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"AnimeSR: device={name!r} but CUDA is not available (torch {torch.__version__})")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"AnimeSR: device={name!r} but only {torch.cuda.device_count()} CUDA device(s) exist")
    elif dev.type != "cpu":
        raise ValueError(f"AnimeSR: device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    return dev


def scene_metric(a: Tensor, b: Tensor, *, bins: int = 16) -> float:
    """Histogram distance of two RGB frames (3, H, W) in [0, 1]: half the L1 distance of per-channel histograms.

    0 for the same colour distribution, 1 for disjoint ones; cheap and independent of resolution. Histograms ignore
    motion, which a pixel difference confuses with cuts: on the sample clip (640x480) the real cut (frame 100) scores
    0.255 while the largest in-shot value (a key-frame change of fast animation) is 0.048; the mean absolute pixel
    difference gave 0.23 vs 0.10. Hence the default threshold 0.15.
    """
    return float((_histogram(a, bins) - _histogram(b, bins)).abs().sum()) / (2 * 3)


def _histogram(x: Tensor, bins: int) -> Tensor:
    q = (x.float().clamp(0, 1) * (bins - 1e-3)).long().flatten(1)  # (3, H*W) bin indices
    offsets = torch.arange(3, device=q.device)[:, None] * bins
    counts = torch.bincount((q + offsets).flatten(), minlength=3 * bins).float()
    return counts / q.shape[1]


@dataclass
class _Chain:
    start: int  # first frame of the chain (stepped from a zero state)
    serve_from: int  # first frame whose output is final (earlier ones are warm-up)
    pos: int  # last frame stepped
    outs: list[Tensor]  # previous raw output, one per tile
    states: list[Tensor]  # hidden state, one per tile


class AnimeSR:
    """AnimeSR x4 upscaler for whole clips, streams and random access with deterministic recurrence.

    Args:
        model: ``"v1"``, ``"v2"`` or a path to a weight file (``.pth`` / ``.safetensors``).
        device: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        fp16: half-precision compute; CUDA only (the CPU has no fast, accurate fp16 convolutions).
        tile: tile size in low-resolution pixels (0 = whole frame); each tile keeps its own recurrent state.
        tile_overlap: context added on each side of a tile (low-resolution pixels).
        reset_interval: frames between periodic chain restarts; 0 = never. None = :data:`DEFAULT_RESET_INTERVAL`.
        warmup: lead-in steps before each periodic restart. None = :data:`DEFAULT_WARMUP`.
        scene_threshold: cut detector threshold (see :func:`scene_metric`); 0 disables it. None = default.
        compile: run the network through ``torch.compile`` (faster after a slow first call).
        bf16: bfloat16 autocast for the convolutions (about 2x on CPUs with AVX512-BF16/AMX; the recurrent state and
            the output stay float32). Not bit-compatible with fp32: see the README for the measured drift.
        channels_last: memory format for the network; None = on for CPU and CUDA.
        tf32: let fp32 convolutions on CUDA use TF32 tensor cores (faster; measured max error vs the CPU up to 2.5e-2
            with v1). Off by default: fp32 means IEEE fp32, matching the CPU to about 1e-5.
        output_cache: recent outputs kept, so that requests arriving slightly out of order (VapourSynth delivers
            them so) are served without recomputing; a request ahead of the chain computes the frames between.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] = "v2",
        device: str | torch.device = "auto",
        fp16: bool = False,
        tile: int = 0,
        tile_overlap: int = 16,
        reset_interval: int | None = None,
        warmup: int | None = None,
        scene_threshold: float | None = None,
        *,
        compile: bool = False,
        bf16: bool = False,
        channels_last: bool | None = None,
        output_cache: int = 4,
        tf32: bool = False,
    ) -> None:
        if fp16 and bf16:
            raise ValueError("AnimeSR: fp16=True and bf16=True exclude each other; pick one")
        self.device = resolve_device(device)
        if fp16 and self.device.type != "cuda":
            raise ValueError(
                f"AnimeSR: fp16=True needs a CUDA device, got device={str(self.device)!r} "
                "(on the CPU use fp16=False; the VapourSynth filter still accepts RGBH there)"
            )
        self.fp16 = bool(fp16)
        self.bf16 = bool(bf16)
        self.tf32 = bool(tf32)
        self.dtype = torch.float16 if self.fp16 else torch.float32
        for name, value in (("tile", tile), ("tile_overlap", tile_overlap)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"AnimeSR: {name} must be an integer >= 0, got {value!r}")
        # Tiles and overlaps are kept on the network's 4-pixel grid so that every tile is a valid input size.
        self.tile = _round_up(tile, 4)
        self.tile_overlap = _round_up(tile_overlap, 4)
        self.reset_interval = DEFAULT_RESET_INTERVAL if reset_interval is None else reset_interval
        self.warmup = DEFAULT_WARMUP if warmup is None else warmup
        self.scene_threshold = DEFAULT_SCENE_THRESHOLD if scene_threshold is None else float(scene_threshold)
        for name, value in (("reset_interval", self.reset_interval), ("warmup", self.warmup)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"AnimeSR: {name} must be an integer >= 0, got {value!r}")
        if not isinstance(output_cache, int) or isinstance(output_cache, bool) or output_cache < 1:
            raise ValueError(f"AnimeSR: output_cache must be an integer >= 1, got {output_cache!r}")
        self.output_cache = output_cache
        if not math.isfinite(self.scene_threshold) or self.scene_threshold < 0:
            raise ValueError(f"AnimeSR: scene_threshold must be a finite number >= 0, got {scene_threshold!r}")

        try:
            self.model_path = resolve(model)
        except ValueError as e:
            raise ValueError(
                f"AnimeSR: model must be 'v1', 'v2' or the path of a weight file, got {str(model)!r}"
            ) from e
        net = load_model(self.model_path)
        self.scale = net.scale
        self.channels_last = (self.device.type in ("cpu", "cuda")) if channels_last is None else channels_last
        net = net.to(self.device, self.dtype)
        if self.channels_last:
            net = net.to(memory_format=torch.channels_last)
        self.net = net
        self._step_fn: Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]] = net
        if compile:
            self._step_fn = torch.compile(net, dynamic=False)
        self.steps = 0
        """Network steps executed so far (a step = one frame through the network, all tiles)."""
        self.reset()

    # ------------------------------------------------------------------ public API

    def reset(self) -> None:
        """Forget the recurrent state and every cache (call it before reusing the engine on another clip)."""
        # Recent chains by start frame: requests that arrive out of order across a restart point (VapourSynth
        # sends frame n + 4 while n is still running) resume their own chain instead of rebuilding the other one.
        self._chains: OrderedDict[int, _Chain] = OrderedDict()
        self._outputs: OrderedDict[int, Tensor] = OrderedDict()
        self._cuts: dict[int, bool] = {}
        self._frames: OrderedDict[int, Tensor] = OrderedDict()
        self._size: tuple[int, int] | None = None  # (H, W) of the clip's frames before padding

    def window(self, n: int, num_frames: int) -> tuple[int, int]:
        """Inclusive range of input frame indices that the output of frame ``n`` may depend on."""
        self._check_index(n, num_frames, "window")
        return max(0, self.period(n) - self.warmup - 1), min(num_frames - 1, n + 1)

    def period(self, n: int) -> int:
        """The periodic restart point at or before frame ``n`` (0 when ``reset_interval`` is 0)."""
        return (n // self.reset_interval) * self.reset_interval if self.reset_interval else 0

    def frame(
        self,
        n: int,
        get_frame: Callable[[int], FrameLike],
        num_frames: int,
        scene_change: Callable[[int], bool | None] | None = None,
    ) -> np.ndarray:
        """Random access: the (4H, 4W, 3) float32 output of frame ``n``; equals ``upscale(all frames)[n]``.

        ``get_frame(k)`` returns input frame ``k`` as an (H, W, 3) array (uint8, or float in [0, 1]) or as three
        (H, W) planes R, G, B. ``scene_change(k)`` may report a known cut before frame ``k`` (e.g. VapourSynth's
        ``_SceneChangePrev``); None falls back to the detector.
        """
        out = self._frame_tensor(n, get_frame, num_frames, scene_change)
        return _to_host(out.permute(1, 2, 0))

    def frame_planar(
        self,
        n: int,
        get_frame: Callable[[int], FrameLike],
        num_frames: int,
        scene_change: Callable[[int], bool | None] | None = None,
        *,
        out_dtype: Any = None,
        out: np.ndarray | Sequence[np.ndarray] | None = None,
    ) -> np.ndarray | None:
        """As :meth:`frame` but planar (3, 4H, 4W) float32 (or ``out_dtype``): the VapourSynth path.

        ``out`` (an array of that shape, or three (4H, 4W) plane arrays that may have row padding, e.g. a
        VapourSynth frame's planes) receives the result directly and None is returned: on CUDA that is one copy from
        the GPU into the caller's memory instead of a fresh array plus another copy.
        """
        dtypes = [np.dtype(np.float32 if out_dtype is None else out_dtype)] if out is None else (
            [out.dtype] if isinstance(out, np.ndarray) else [p.dtype for p in out])
        bad = [d for d in dtypes if d not in _TORCH_DTYPES]
        if bad:
            raise ValueError(f"AnimeSR.frame_planar: out_dtype/out must be float32 or float16, got {bad[0]}")
        t = self._frame_tensor(n, get_frame, num_frames, scene_change)
        if out is None:
            return _to_host(t, dtypes[0])
        if isinstance(out, np.ndarray):
            if out.shape != tuple(t.shape):
                raise ValueError(f"AnimeSR.frame_planar: out must have shape {tuple(t.shape)}, got {out.shape}")
            _to_host(t, dst=out)
            return None
        if [p.shape for p in out] != [tuple(t.shape[1:])] * 3:
            raise ValueError(f"AnimeSR.frame_planar: out must be three {tuple(t.shape[1:])} planes, "
                             f"got shapes {[p.shape for p in out]}")
        for plane, dst in zip(t, out, strict=True):
            _to_host(plane, dst=dst)
        return None

    def upscale(self, frames: np.ndarray | Sequence[FrameLike]) -> np.ndarray:
        """Upscale a whole clip: (T, H, W, 3) uint8 or float in [0, 1] -> (T, 4H, 4W, 3) float32, unclamped."""
        if isinstance(frames, np.ndarray) and (frames.ndim != 4 or frames.shape[-1] != 3):
            raise ValueError(f"AnimeSR.upscale: frames must have shape (T, H, W, 3), got {frames.shape}")
        t = len(frames)
        if t == 0:
            raise ValueError("AnimeSR.upscale: frames is empty")
        self.reset()
        result: np.ndarray | None = None
        for n in range(t):
            out = self._frame_tensor(n, frames.__getitem__, t, None).permute(1, 2, 0)
            if result is None:
                result = np.empty((t, *out.shape), np.float32)
            _to_host(out, dst=result[n])
        self.reset()
        assert result is not None
        return result

    def stream(self, frames: Iterable[FrameLike]) -> Iterator[np.ndarray]:
        """Upscale frames as they arrive (one step per frame, one frame of look-ahead); yields (4H, 4W, 3) float32."""
        self.reset()
        keep = self.warmup + 4  # a periodic restart at n re-reads frames n - warmup - 1 .. n + 1
        buf: OrderedDict[int, FrameLike] = OrderedDict()
        it = iter(frames)
        n_read = 0
        for n in range(1 << 62):
            while n_read <= n + 1:  # read up to frame n + 1 (the next neighbour) if it exists
                try:
                    buf[n_read] = next(it)
                except StopIteration:
                    break
                n_read += 1
                while len(buf) > keep:
                    buf.popitem(last=False)
            if n >= n_read:
                break
            yield self.frame(n, buf.__getitem__, n_read)
        self.reset()

    # ------------------------------------------------------------------ recurrence

    def _frame_tensor(
        self,
        n: int,
        get_frame: Callable[[int], FrameLike],
        num_frames: int,
        scene_change: Callable[[int], bool | None] | None,
    ) -> Tensor:
        self._check_index(n, num_frames, "frame")
        cached = self._outputs.get(n)
        if cached is not None:
            return cached
        with torch.inference_mode():
            fetch = _FrameFetcher(self, get_frame)
            start = self._chain_start(n, fetch, scene_change)
            chain = self._chains.pop(start, None)
            if chain is None or not (start <= chain.pos < n):
                chain = self._new_chain(start, max(start, self.period(n)), fetch)
            while chain.pos < n:
                k = chain.pos + 1
                self._step(chain, k, fetch, num_frames, scene_change)
            self._chains[start] = chain
            while len(self._chains) > _MAX_CHAINS:
                self._chains.popitem(last=False)
            out = self._outputs[n]
            self._frames = fetch.keep_recent(self.warmup + 3)
        return out

    def _chain_start(self, n: int, fetch: _FrameFetcher, scene_change: Callable[[int], bool | None] | None) -> int:
        lead = max(self.period(n) - self.warmup, 0)
        for k in range(n, lead, -1):  # the latest cut in (lead, n] starts the chain itself
            if self._is_cut(k, fetch, scene_change):
                return k
        return lead

    def _is_cut(self, k: int, fetch: _FrameFetcher, scene_change: Callable[[int], bool | None] | None) -> bool:
        if k <= 0:
            return False
        known = self._cuts.get(k)
        if known is not None:
            return known
        flag = scene_change(k) if scene_change is not None else None
        if flag is None:
            flag = self.scene_threshold > 0 and scene_metric(fetch(k - 1), fetch(k)) > self.scene_threshold
        self._cuts[k] = bool(flag)
        return bool(flag)

    def _new_chain(self, start: int, serve_from: int, fetch: _FrameFetcher) -> _Chain:
        cur = fetch(start)
        tiles = self._tiles(cur.shape[-2], cur.shape[-1])
        outs, states = [], []
        for y0, y1, x0, x1, *_ in tiles:
            frames9 = cur.new_zeros(1, 9, y1 - y0, x1 - x0)
            o, s = self.net.init_state(frames9)
            outs.append(self._fmt(o))
            states.append(self._fmt(s))
        log.debug("AnimeSR: new chain at frame %d (outputs final from %d)", start, serve_from)
        return _Chain(start=start, serve_from=serve_from, pos=start - 1, outs=outs, states=states)

    def _step(
        self,
        chain: _Chain,
        k: int,
        fetch: _FrameFetcher,
        num_frames: int,
        scene_change: Callable[[int], bool | None] | None,
    ) -> None:
        # Neighbours never cross a cut; the clip's ends repeat the edge frame.
        prev_i = k - 1 if k > 0 and not self._is_cut(k, fetch, scene_change) else k
        next_i = k + 1 if k + 1 < num_frames and not self._is_cut(k + 1, fetch, scene_change) else k
        cur = fetch(k)
        frames9 = torch.cat([fetch(prev_i), cur, fetch(next_i)], dim=0)[None]
        s = self.scale
        tiles = self._tiles(*cur.shape[-2:])
        with _cudnn_tf32(self.tf32 if self.device.type == "cuda" else None), \
                torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            full = self._run_tiles(chain, frames9, tiles, cur)
        chain.pos = k
        self.steps += 1
        if k < chain.serve_from:
            return  # warm-up output: belongs to the previous chain's frame, never shown
        ph, pw = self._size  # type: ignore[misc]
        self._outputs[k] = full[0, :, : ph * s, : pw * s].float().contiguous()
        while len(self._outputs) > self.output_cache:
            self._outputs.popitem(last=False)

    def _run_tiles(self, chain: _Chain, frames9: Tensor, tiles: list[tuple[int, ...]], cur: Tensor) -> Tensor:
        """One network step on every tile; updates the chain's per-tile state and returns the full output."""
        h, w = cur.shape[-2:]
        s = self.scale
        if len(tiles) == 1:
            out, chain.states[0] = self._step_fn(self._fmt(frames9), chain.outs[0], chain.states[0])
            chain.outs[0] = out
            full = out
        else:
            full = cur.new_empty(1, 3, h * s, w * s)
            for i, (y0, y1, x0, x1, cy0, cy1, cx0, cx1) in enumerate(tiles):
                out, chain.states[i] = self._step_fn(
                    self._fmt(frames9[:, :, y0:y1, x0:x1]), chain.outs[i], chain.states[i]
                )
                chain.outs[i] = out
                full[:, :, cy0 * s : cy1 * s, cx0 * s : cx1 * s] = out[
                    :, :, (cy0 - y0) * s : (cy1 - y0) * s, (cx0 - x0) * s : (cx1 - x0) * s
                ]
        if self.bf16:  # carry the recurrence in float32 so that rounding does not compound through the state
            chain.outs = [self._fmt(o) for o in chain.outs]
            chain.states = [self._fmt(st) for st in chain.states]
        return full

    # ------------------------------------------------------------------ helpers

    def _fmt(self, x: Tensor) -> Tensor:
        x = x.to(self.device, self.dtype)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _tiles(self, h: int, w: int) -> list[tuple[int, int, int, int, int, int, int, int]]:
        """Fixed tile grid on the padded frame: (input box y0, y1, x0, x1, core box cy0, cy1, cx0, cx1)."""
        if self.tile == 0 or (self.tile >= h and self.tile >= w):
            return [(0, h, 0, w, 0, h, 0, w)]
        t, o = self.tile, self.tile_overlap
        boxes = []
        for cy0 in range(0, h, t):
            cy1 = min(cy0 + t, h)
            for cx0 in range(0, w, t):
                cx1 = min(cx0 + t, w)
                boxes.append((max(cy0 - o, 0), min(cy1 + o, h), max(cx0 - o, 0), min(cx1 + o, w), cy0, cy1, cx0, cx1))
        return boxes

    @staticmethod
    def _check_index(n: int, num_frames: int, func: str) -> None:
        if not isinstance(num_frames, int) or num_frames < 1:
            raise ValueError(f"AnimeSR.{func}: num_frames must be a positive integer, got {num_frames!r}")
        if not isinstance(n, int) or not 0 <= n < num_frames:
            raise ValueError(f"AnimeSR.{func}: n must be in [0, {num_frames - 1}], got {n!r}")


class _FrameFetcher:
    """Converts, pads and memoises input frames for one request (plus a few kept from the previous request)."""

    def __init__(self, engine: AnimeSR, get_frame: Callable[[int], FrameLike]) -> None:
        self.engine = engine
        self.get_frame = get_frame
        self.cache: OrderedDict[int, Tensor] = OrderedDict(engine._frames)

    def __call__(self, k: int) -> Tensor:
        x = self.cache.get(k)
        if x is None:
            x = self._convert(self.get_frame(k), k)
            self.cache[k] = x
        else:
            self.cache.move_to_end(k)
        return x

    def keep_recent(self, n: int) -> OrderedDict[int, Tensor]:
        while len(self.cache) > n:
            self.cache.popitem(last=False)
        return self.cache

    def _convert(self, frame: FrameLike, k: int) -> Tensor:
        """(H, W, 3) or 3 planes -> (3, H', W') float tensor on the device, replicate-padded to multiples of 4."""
        eng = self.engine
        if isinstance(frame, Tensor):
            t = frame
        elif isinstance(frame, Sequence) and len(frame) == 3 and not isinstance(frame, np.ndarray):
            t = torch.stack([_as_tensor(p) for p in frame])
        else:
            t = _as_tensor(frame)
        if t.ndim == 3 and t.shape[-1] == 3 and not (isinstance(frame, Sequence) and len(frame) == 3):
            t = t.permute(2, 0, 1)
        if t.ndim != 3 or t.shape[0] != 3 or t.shape[1] < 1 or t.shape[2] < 1:
            raise ValueError(f"AnimeSR: frame {k} must be (H, W, 3) or three (H, W) planes, got shape {tuple(t.shape)}")
        if t.dtype == torch.uint8:
            t = t.to(eng.device, torch.float32) / 255.0
        elif t.is_floating_point():
            t = t.to(eng.device, torch.float32)
        else:
            raise ValueError(f"AnimeSR: frame {k} must be uint8 or floating point, got {t.dtype}")
        h, w = t.shape[-2:]
        if eng._size is None:
            eng._size = (h, w)
        elif eng._size != (h, w):
            raise ValueError(f"AnimeSR: frame {k} is {w}x{h} but earlier frames are {eng._size[1]}x{eng._size[0]}")
        ph, pw = _round_up(h, 4) - h, _round_up(w, 4) - w
        if ph or pw:
            # Replicate padding cannot pad more than the input has along a dimension in some torch versions: expand.
            t = F.pad(t[None], (0, pw, 0, ph), mode="replicate")[0] if h > 1 and w > 1 else _pad_edge(t, ph, pw)
        return t.to(eng.dtype)


def _to_host(t: Tensor, dtype: Any = np.float32, dst: np.ndarray | None = None) -> np.ndarray:
    """Copy ``t`` into ``dst`` (in its dtype) or a fresh array of ``dtype``, converting on the tensor's device.

    One copy straight into the destination: fresh host memory is costly to touch (on an H200 the old path of
    ``.cpu()``, ``.astype()`` and a transposing stack held the engine at 17-19 frames/s at 640x360 in every precision;
    this one gives 29 in fp32 and 55 in fp16). The result never aliases the engine's output cache.
    """
    dtype = np.dtype(dtype if dst is None else dst.dtype)
    src = t.to(_TORCH_DTYPES[dtype])
    if dst is None:
        dst = np.empty(tuple(src.shape), dtype)
    if src.device.type == "cpu":
        np.copyto(dst, src.numpy())
    else:
        torch.from_numpy(dst).copy_(src)  # a device-to-host copy into dst (strided rows are fine)
    return dst


_MAX_CHAINS = 3  # live recurrent chains per engine (each holds one output and one hidden state per tile)

_TORCH_DTYPES = {np.dtype(np.float32): torch.float32, np.dtype(np.float16): torch.float16}

# cuDNN's TF32 switch is process-wide; steps flip it under one lock so engines in other threads never see another
# engine's setting in the middle of a step.
_TF32_LOCK = threading.Lock()


@contextlib.contextmanager
def _cudnn_tf32(allow: bool | None) -> Iterator[None]:
    """Run a CUDA step with cuDNN's TF32 switch set to ``allow`` (None: leave it alone, e.g. on the CPU)."""
    if allow is None:
        yield
        return
    with _TF32_LOCK:
        old = torch.backends.cudnn.allow_tf32
        torch.backends.cudnn.allow_tf32 = allow
        try:
            yield
        finally:
            torch.backends.cudnn.allow_tf32 = old


def _as_tensor(a: Any) -> Tensor:
    """A CPU tensor view of an array; read-only inputs (VapourSynth planes) are copied, an LR frame is cheap."""
    arr = np.asarray(a)
    if not arr.flags.writeable:
        arr = arr.copy()
    return torch.from_numpy(np.ascontiguousarray(arr))


def _pad_edge(t: Tensor, ph: int, pw: int) -> Tensor:
    if pw:
        t = torch.cat([t, t[:, :, -1:].expand(-1, -1, pw)], dim=2)
    if ph:
        t = torch.cat([t, t[:, -1:, :].expand(-1, ph, -1)], dim=1)
    return t


def _round_up(x: int, m: int) -> int:
    return (x + m - 1) // m * m

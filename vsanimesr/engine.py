"""The AnimeSR inference engine: devices, precision, padding, tiling and *deterministic* recurrence.

AnimeSR carries its previous output and a hidden state from frame to frame, so a naive player that seeks gets a
different picture than one that plays linearly. This engine defines the output of frame ``n`` as a function of the
input frames alone:

* A *chain* is a run of recurrent steps that starts from a zero state.
* Chains restart at scene cuts (a cut at ``k`` means frames ``k-1`` and ``k`` belong to different shots; the neighbour
  frames used by a step never cross a cut) and every ``reset_interval`` frames.
* A periodic restart at ``P`` is led in by ``warmup`` steps on frames ``P - warmup .. P - 1`` (from a zero state,
  outputs discarded), so the restart is not visible. A cut inside the warm-up shortens it.
* Frame ``n`` therefore reads at most input frames ``window(n)`` = ``[P - warmup - 1, n + 1]``
  (:meth:`vsanimesr.options.Options.window`, the one definition every layer asks).

What is fixed (network, device, precision) is an :class:`AnimeSR`; what belongs to one clip (chains, caches, frame
size, cuts) is a :class:`Session` from :meth:`AnimeSR.open`.

Sequential use costs one network step per frame plus ``warmup`` steps per periodic restart; random access costs at
most ``reset_interval + warmup`` steps. ``reset_interval=0`` and ``scene_threshold=0`` give the published behaviour:
one chain from frame 0.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from vsanimesr.backends import make_step, use_bf16
from vsanimesr.loader import WeightsError, load_model
from vsanimesr.options import (
    DEFAULT_RESET_INTERVAL,
    DEFAULT_SCENE_THRESHOLD,
    DEFAULT_WARMUP,
    OptionError,
    Options,
)
from vsanimesr.weights import resolve

__all__ = [
    "DEFAULT_RESET_INTERVAL",
    "DEFAULT_SCENE_THRESHOLD",
    "DEFAULT_WARMUP",
    "AnimeSR",
    "Options",
    "Session",
    "resolve_device",
    "scene_metric",
]

log = logging.getLogger("vsanimesr")

FrameLike = Any  # (H, W, 3) array, or a sequence of 3 planes (R, G, B) each (H, W)


def resolve_device(device: str | torch.device) -> torch.device:
    """Map ``auto``/``cpu``/``cuda``/``cuda:N`` to a torch device; an :class:`OptionError` names what is wrong."""
    name = str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise OptionError("device", name, "must be 'auto', 'cpu', 'cuda' or 'cuda:N'")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise OptionError("device", name, f"CUDA is not available (torch {torch.__version__})")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise OptionError("device", name, f"only {torch.cuda.device_count()} CUDA device(s) exist")
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


GetFrame = Callable[[int], FrameLike]
SceneChange = Callable[[int], "bool | None"]


class AnimeSR:
    """AnimeSR upscaler: one network on one device, shared by any number of clips (see :meth:`open`).

    Pass an :class:`~vsanimesr.options.Options`, or its fields as keywords (``AnimeSR(device="cpu", tile=256)``), or
    both (keywords override). What belongs to one clip (recurrent chains, caches, frame size, cuts) lives in a
    :class:`Session`; :meth:`upscale` and :meth:`stream` open their own, so they never see another clip's state.

    Engine-only keywords: ``channels_last`` (memory format; None = on) and ``output_cache`` (recent outputs each
    session keeps, so requests arriving slightly out of order, as VapourSynth sends them, cost no recomputation).
    """

    def __init__(
        self,
        options: Options | None = None,
        /,
        *,
        channels_last: bool | None = None,
        output_cache: int = 4,
        **kwargs: Any,
    ) -> None:
        kwargs = {k: v for k, v in kwargs.items() if v is not None}  # None means "the default", as in the CLI
        try:
            opts = (options or Options()).replace(**kwargs) if kwargs else (options or Options())
        except TypeError as e:  # an unknown keyword
            raise TypeError(f"AnimeSR: {e}") from None
        except OptionError as e:
            raise e.prefixed("AnimeSR") from None
        if opts.fp16 and opts.bf16:
            raise OptionError("bf16", True, "fp16 and bf16 exclude each other; pick one").prefixed("AnimeSR")
        try:
            self.device = resolve_device(opts.device)
        except OptionError as e:
            raise e.prefixed("AnimeSR") from None
        if opts.fp16 and self.device.type != "cuda":
            raise OptionError(
                "fp16", True, f"needs a CUDA device, got device={str(self.device)!r} (the VapourSynth filter still "
                "accepts RGBH on the CPU, computing in fp32)"
            ).prefixed("AnimeSR")
        if not isinstance(output_cache, int) or isinstance(output_cache, bool) or output_cache < 1:
            raise OptionError("output_cache", output_cache, "must be an integer >= 1").prefixed("AnimeSR")
        self.options = opts
        self.output_cache = output_cache
        self.fp16 = bool(opts.fp16)
        self.bf16 = opts.bf16 and use_bf16(self.device)  # a CPU without bf16 instructions: fp32 and one warning
        self.tf32 = opts.tf32 and self.device.type == "cuda"
        self.dtype = torch.float16 if self.fp16 else torch.float32
        # Tiles and overlaps are kept on the network's 4-pixel grid so that every tile is a valid input size.
        self.tile = _round_up(opts.tile, 4)
        self.tile_overlap = _round_up(opts.tile_overlap, 4)
        self.reset_interval, self.warmup, self.scene_threshold = opts.reset_interval, opts.warmup, opts.scene_threshold

        try:
            self.model_path = resolve(opts.model)
        except ValueError as e:
            raise OptionError("model", opts.model, "must be 'v1', 'v2' or the path of a weight file").prefixed(
                "AnimeSR") from e
        try:
            net = load_model(self.model_path)
        except WeightsError as e:
            raise OptionError("model", opts.model, str(e)).prefixed("AnimeSR") from e
        self.scale: int = net.scale
        """The model's own upscaling factor (4 for the published models)."""
        if channels_last is None:  # other backends than torch take plain NCHW tensors
            channels_last = self.device.type in ("cpu", "cuda") and opts.backend == "torch"
        self.channels_last = channels_last
        net = net.to(self.device, self.dtype)
        if self.channels_last:
            net = net.to(memory_format=torch.channels_last)
        self.net = net
        try:
            self._step_fn: Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]] = make_step(
                opts.backend, net, model_path=self.model_path, device=self.device, precision=self.precision,
                compile=opts.compile, cuda_graphs=opts.cuda_graphs)
        except OptionError as e:
            raise e.prefixed("AnimeSR") from None
        self.steps = 0
        """Network steps executed so far by all sessions (a step = one frame through the network, all tiles)."""
        self._steps_lock = threading.Lock()
        self._default: Session | None = None
        self._default_lock = threading.Lock()

    @property
    def precision(self) -> str:
        """What the convolutions compute in: ``fp32``, ``tf32`` (CUDA), ``fp16`` (CUDA) or ``bf16``."""
        return "fp16" if self.fp16 else "bf16" if self.bf16 else "tf32" if self.tf32 else "fp32"

    def describe(self) -> str:
        """One line for logs: model, device, backend, precision and recurrence settings."""
        o = self.options
        return (f"model={o.model} (x{self.scale}) device={self.device} backend={o.backend} precision={self.precision}"
                f" tile={self.tile} reset_interval={o.reset_interval} warmup={o.warmup}"
                f" scene_threshold={o.scene_threshold:g}")

    # ------------------------------------------------------------------ clips

    def open(
        self,
        get_frame: GetFrame,
        num_frames: int,
        scene_change: SceneChange | None = None,
        *,
        output_cache: int | None = None,
    ) -> Session:
        """Start upscaling one clip: ``get_frame(k)`` returns input frame ``k`` (see :meth:`Session.frame`).

        ``scene_change(k)`` may report a known cut before frame ``k`` (e.g. VapourSynth's ``_SceneChangePrev``);
        None (or a None answer) falls back to the detector. The session owns all per-clip state, so any number
        of clips can be open on one engine at once.
        """
        return Session(self, get_frame, num_frames, scene_change,
                       output_cache=self.output_cache if output_cache is None else output_cache)

    def frame(
        self, n: int, get_frame: GetFrame, num_frames: int, scene_change: SceneChange | None = None
    ) -> np.ndarray:
        """Random access without an explicit session: the (sH, sW, 3) float32 output of frame ``n``.

        The engine keeps one session for the last ``(get_frame, num_frames, scene_change)`` it saw (compared by
        equality, so ``clip.__getitem__`` of the same object matches); other arguments start a new session, so
        another clip can never be served this clip's cached frames. Use :meth:`open` to hold several clips.
        """
        return self._session_for(get_frame, num_frames, scene_change).frame(n)

    def frame_planar(
        self,
        n: int,
        get_frame: GetFrame,
        num_frames: int,
        scene_change: SceneChange | None = None,
        *,
        out_dtype: Any = None,
        out: np.ndarray | Sequence[np.ndarray] | None = None,
    ) -> np.ndarray | None:
        """As :meth:`frame` but planar; see :meth:`Session.frame_planar`."""
        return self._session_for(get_frame, num_frames, scene_change).frame_planar(n, out_dtype=out_dtype, out=out)

    def upscale(self, frames: np.ndarray | Sequence[FrameLike]) -> np.ndarray:
        """Upscale a whole clip: (T, H, W, 3) uint8 or float in [0, 1] -> (T, sH, sW, 3) float32, unclamped."""
        if isinstance(frames, np.ndarray) and (frames.ndim != 4 or frames.shape[-1] != 3):
            raise ValueError(f"AnimeSR.upscale: frames must have shape (T, H, W, 3), got {frames.shape}")
        t = len(frames)
        if t == 0:
            raise ValueError("AnimeSR.upscale: frames is empty")
        session = self.open(frames.__getitem__, t)
        result: np.ndarray | None = None
        for n in range(t):
            out = session.tensor(n).permute(1, 2, 0)
            if result is None:
                result = np.empty((t, *out.shape), np.float32)
            _to_host(out, dst=result[n])
        assert result is not None
        return result

    def stream(self, frames: Iterable[FrameLike]) -> Iterator[np.ndarray]:
        """Upscale frames as they arrive (one step per frame, one frame of look-ahead); yields (sH, sW, 3) float32.

        Only :attr:`Options.restart_span` input frames are held at a time.
        """
        for t in self.stream_tensors(frames):
            yield _to_host(t.permute(1, 2, 0))

    def stream_tensors(self, frames: Iterable[FrameLike]) -> Iterator[Tensor]:
        """:meth:`stream`, yielding each output as a (3, sH, sW) float32 tensor on the engine's device (read only;
        valid until the next one is asked for): for consumers that convert on the device (the CLI's encoder)."""
        keep = self.options.restart_span
        buf: OrderedDict[int, FrameLike] = OrderedDict()
        session = self.open(buf.__getitem__, 1)
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
            session.num_frames = n_read  # known up to n + 1: enough to tell whether frame n has a next neighbour
            yield session.tensor(n)

    def reset(self) -> None:
        """Forget the session that :meth:`frame` / :meth:`frame_planar` keep (sessions from :meth:`open` are
        unaffected)."""
        with self._default_lock:
            self._default = None

    def window(self, n: int, num_frames: int) -> tuple[int, int]:
        """Inclusive range of input frames that output frame ``n`` may depend on (:meth:`Options.window`)."""
        return self.options.window(n, num_frames)

    def period(self, n: int) -> int:
        """The periodic restart point at or before frame ``n`` (:meth:`Options.period`)."""
        return self.options.period(n)

    # ------------------------------------------------------------------ network steps (shared by sessions)

    def _session_for(self, get_frame: GetFrame, num_frames: int, scene_change: SceneChange | None) -> Session:
        with self._default_lock:
            s = self._default
            if s is None or (s.get_frame, s.num_frames, s.scene_change) != (get_frame, num_frames, scene_change):
                s = self._default = self.open(get_frame, num_frames, scene_change)
            return s

    def _initial_state(self, cur: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        outs, states = [], []
        for y0, y1, x0, x1, *_ in self._tiles(cur.shape[-2], cur.shape[-1]):
            o, s = self.net.init_state(cur.new_zeros(1, 9, y1 - y0, x1 - x0))
            outs.append(self._fmt(o))
            states.append(self._fmt(s))
        return outs, states

    def _run_step(self, chain: _Chain, frames9: Tensor) -> Tensor:
        """One network step on every tile: updates the chain's per-tile state, returns the (1, 3, sH', sW') output."""
        with _cudnn_tf32(self.tf32 if self.device.type == "cuda" else None), \
                torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            full = self._run_tiles(chain, frames9)
        with self._steps_lock:
            self.steps += 1
        return full

    def _run_tiles(self, chain: _Chain, frames9: Tensor) -> Tensor:
        h, w = frames9.shape[-2:]
        s = self.scale
        tiles = self._tiles(h, w)
        if len(tiles) == 1:
            out, chain.states[0] = self._step_fn(self._fmt(frames9), chain.outs[0], chain.states[0])
            chain.outs[0] = out
            full = out
        else:
            full = frames9.new_empty(1, 3, h * s, w * s)
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


class Session:
    """One clip on one engine: its recurrent chains, output cache, cut decisions and frame size.

    Output frame ``n`` is a function of input frames :meth:`window` ``(n)`` alone, whatever order frames are asked
    in. Requests are serialised by a lock, so VapourSynth may call from several threads. Made by
    :meth:`AnimeSR.open`.
    """

    def __init__(
        self,
        engine: AnimeSR,
        get_frame: GetFrame,
        num_frames: int,
        scene_change: SceneChange | None,
        *,
        output_cache: int,
    ) -> None:
        engine.options.window(0, num_frames)  # validates num_frames
        if not isinstance(output_cache, int) or isinstance(output_cache, bool) or output_cache < 1:
            raise OptionError("output_cache", output_cache, "must be an integer >= 1").prefixed("AnimeSR.open")
        self.engine = engine
        self.get_frame = get_frame
        self.num_frames = num_frames
        self.scene_change = scene_change
        self.output_cache = output_cache
        self.steps = 0
        """Network steps this session ran (sequential access: one per frame plus warm-up at restarts)."""
        self._lock = threading.RLock()
        # Recent chains by start frame: requests that arrive out of order across a restart point (VapourSynth
        # sends frame n + 4 while n is still running) resume their own chain instead of rebuilding the other one.
        self._chains: OrderedDict[int, _Chain] = OrderedDict()
        self._outputs: OrderedDict[int, Tensor] = OrderedDict()
        self._cuts: dict[int, bool] = {}
        self._inputs: OrderedDict[int, Tensor] = OrderedDict()  # converted, padded input frames
        self._size: tuple[int, int] | None = None  # (H, W) of the clip's frames before padding

    def window(self, n: int) -> tuple[int, int]:
        """Inclusive range of input frames that output frame ``n`` may depend on."""
        return self.engine.options.window(n, self.num_frames)

    def frame(self, n: int) -> np.ndarray:
        """The (sH, sW, 3) float32 output of frame ``n`` (unclamped; equals ``engine.upscale(all frames)[n]``).

        ``get_frame(k)`` returns input frame ``k`` as an (H, W, 3) array (uint8, or float in [0, 1]) or as three
        (H, W) planes R, G, B.
        """
        return _to_host(self.tensor(n).permute(1, 2, 0))

    def frame_planar(
        self, n: int, *, out_dtype: Any = None, out: np.ndarray | Sequence[np.ndarray] | None = None
    ) -> np.ndarray | None:
        """As :meth:`frame` but planar (3, sH, sW) float32 (or ``out_dtype``): the VapourSynth path.

        ``out`` (an array of that shape, or three (sH, sW) plane arrays that may have row padding, e.g. a
        VapourSynth frame's planes) receives the result directly and None is returned: on CUDA that is one copy from
        the GPU into the caller's memory instead of a fresh array plus another copy.
        """
        dtypes = [np.dtype(np.float32 if out_dtype is None else out_dtype)] if out is None else (
            [out.dtype] if isinstance(out, np.ndarray) else [p.dtype for p in out])
        bad = [d for d in dtypes if d not in _TORCH_DTYPES]
        if bad:
            raise ValueError(f"AnimeSR.frame_planar: out_dtype/out must be float32 or float16, got {bad[0]}")
        t = self.tensor(n)
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

    def tensor(self, n: int) -> Tensor:
        """The (3, sH, sW) float32 output of frame ``n`` on the engine's device (shared with the cache: read only)."""
        opts = self.engine.options
        opts.window(n, self.num_frames)  # validates n
        with self._lock:
            cached = self._outputs.get(n)
            if cached is not None:
                return cached
            with torch.inference_mode():
                start = self._chain_start(n)
                # Popped while it advances: a step that fails leaves no half-advanced chain behind.
                chain = self._chains.pop(start, None)
                if chain is None or not (start <= chain.pos < n):
                    chain = self._new_chain(start, max(start, opts.period(n)))
                while chain.pos < n:
                    self._step(chain, chain.pos + 1)
                self._chains[start] = chain
                while len(self._chains) > _MAX_CHAINS:
                    self._chains.popitem(last=False)
                while len(self._inputs) > opts.restart_span:  # what the next request's restart may re-read
                    self._inputs.popitem(last=False)
                return self._outputs[n]

    # ------------------------------------------------------------------ recurrence

    def _chain_start(self, n: int) -> int:
        lead = max(self.engine.options.period(n) - self.engine.warmup, 0)
        for k in range(n, lead, -1):  # the latest cut in (lead, n] starts the chain itself
            if self._is_cut(k):
                return k
        return lead

    def _is_cut(self, k: int) -> bool:
        if k <= 0:
            return False
        known = self._cuts.get(k)
        if known is not None:
            return known
        flag = self.scene_change(k) if self.scene_change is not None else None
        if flag is None:
            th = self.engine.scene_threshold
            flag = th > 0 and scene_metric(self._input(k - 1), self._input(k)) > th
        self._cuts[k] = bool(flag)
        return bool(flag)

    def _new_chain(self, start: int, serve_from: int) -> _Chain:
        outs, states = self.engine._initial_state(self._input(start))
        log.debug("AnimeSR: new chain at frame %d (outputs final from %d)", start, serve_from)
        return _Chain(start=start, serve_from=serve_from, pos=start - 1, outs=outs, states=states)

    def _step(self, chain: _Chain, k: int) -> None:
        # Neighbours never cross a cut; the clip's ends repeat the edge frame.
        prev_i = k - 1 if k > 0 and not self._is_cut(k) else k
        next_i = k + 1 if k + 1 < self.num_frames and not self._is_cut(k + 1) else k
        frames9 = torch.cat([self._input(prev_i), self._input(k), self._input(next_i)], dim=0)[None]
        full = self.engine._run_step(chain, frames9)
        chain.pos = k
        self.steps += 1
        if k < chain.serve_from:
            return  # warm-up output: belongs to the previous chain's frame, never shown
        s = self.engine.scale
        ph, pw = self._size  # type: ignore[misc]
        self._outputs[k] = full[0, :, : ph * s, : pw * s].float().contiguous()
        while len(self._outputs) > self.output_cache:
            self._outputs.popitem(last=False)

    def _input(self, k: int) -> Tensor:
        """Input frame ``k`` converted, padded and memoised (the last few are kept across requests)."""
        x = self._inputs.get(k)
        if x is None:
            x = self._inputs[k] = self._convert(self.get_frame(k), k)
        else:
            self._inputs.move_to_end(k)
        return x

    def _convert(self, frame: FrameLike, k: int) -> Tensor:
        """(H, W, 3) or 3 planes -> (3, H', W') tensor on the device, replicate-padded to multiples of 4."""
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
        if self._size is None:
            self._size = (h, w)
        elif self._size != (h, w):
            raise ValueError(f"AnimeSR: frame {k} is {w}x{h} but earlier frames are {self._size[1]}x{self._size[0]}")
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

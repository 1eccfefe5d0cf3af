"""CUDA graphs for the torch backend: the network step captured once per input shape, then replayed.

At 640x360 on a large GPU one AnimeSR step is a few milliseconds of kernels, but launching them one by one from
Python costs the CPU about as long again, and the CPU also has to feed VapourSynth; a replayed graph launches the
whole step with one call. ``Options.cuda_graphs`` turns it on (off by default: keep it only where the benchmark's
``-graphs`` rows show a gain on your GPU).

A captured graph reads and writes fixed ("static") tensors, so every call copies its inputs in and clones its
outputs out. The engine keeps outputs (cache, recurrent state of several chains and tiles), which a later replay
would otherwise overwrite; at 640x360 fp16 the copies move about 0.1 GB per step, tens of microseconds on the
GPU. Output equals the eager step up to cuDNN's choice of kernels, which capture does not change.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["CUDAGraphStep"]

log = logging.getLogger("vsanimesr")

Step = Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]
_Key = tuple[tuple[tuple[int, ...], tuple[int, ...], torch.dtype], ...]


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    inputs: tuple[Tensor, Tensor, Tensor]  # static frames9, prev_out, state
    outputs: tuple[Tensor, Tensor]  # static out, new_state


class CUDAGraphStep:
    """``step(frames9, prev_out, state) -> (out, new_state)`` replaying ``step`` as CUDA graphs on ``device``.

    One graph per distinct input shape, stride and dtype (a clip's padded size, or each distinct tile size), at most
    ``max_graphs`` kept (least recently used dropped, with their memory). Calls are serialised: the static tensors
    are shared by every caller.
    """

    def __init__(self, step: Step, *, device: torch.device, max_graphs: int = 8, warmup: int = 3) -> None:
        if device.type != "cuda":
            raise ValueError(f"CUDAGraphStep: device must be a CUDA device, got {device}")
        self.step, self.device, self.max_graphs, self.warmup = step, device, max_graphs, warmup
        self._graphs: OrderedDict[_Key, _Graph] = OrderedDict()
        self._lock = threading.Lock()
        self.captures = 0
        """Graphs captured so far (a new shape, or one dropped and seen again)."""

    def __call__(self, frames9: Tensor, prev_out: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        args = (frames9, prev_out, state)
        key = tuple((tuple(t.shape), tuple(t.stride()), t.dtype) for t in args)
        with self._lock, torch.cuda.device(self.device):  # capture and replay on the engine's GPU, not cuda:0
            g = self._graphs.get(key)
            if g is None:
                g = self._capture(args)
                self._graphs[key] = g
                while len(self._graphs) > self.max_graphs:
                    self._graphs.popitem(last=False)
            else:
                self._graphs.move_to_end(key)
                for dst, src in zip(g.inputs, args, strict=True):
                    dst.copy_(src)
            g.graph.replay()
            out, new_state = g.outputs
            return out.clone(), new_state.clone()

    def _capture(self, args: tuple[Tensor, Tensor, Tensor]) -> _Graph:
        """Warm up on a side stream (cuDNN picks its kernels, allocators grow), then capture one step."""
        static = tuple(a.clone() for a in args)  # clone keeps channels_last strides
        current = torch.cuda.current_stream(self.device)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(current)
        # Autocast's weight-cast cache must not hold tensors that belong to a graph's private memory pool.
        def autocast() -> torch.autocast:
            return torch.autocast("cuda", dtype=torch.get_autocast_dtype("cuda"),
                                  enabled=torch.is_autocast_enabled("cuda"), cache_enabled=False)  # fmt: skip

        with torch.cuda.stream(side), autocast():
            for _ in range(self.warmup):
                self.step(*static)
        current.wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # thread_local: VapourSynth's other threads may allocate or copy while this one captures.
        with torch.cuda.graph(graph, capture_error_mode="thread_local"), autocast():
            out, new_state = self.step(*static)
        self.captures += 1
        log.debug("AnimeSR: captured a CUDA graph of the step for input %s %s", tuple(args[0].shape), args[0].dtype)
        # The capture only recorded kernels; the inputs are already in place, so the caller's replay computes them.
        return _Graph(graph, static, (out, new_state))  # type: ignore[arg-type]

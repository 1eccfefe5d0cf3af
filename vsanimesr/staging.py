"""Getting device planes into the caller's host memory: one copy, through pinned buffers, overlapping compute.

A 2560x1440 RGBS frame is 44 MB; copied from a GPU into pageable memory (a VapourSynth frame) it crawls at a few
GB/s and stalls the GPU. Here the planes the :class:`~vsanimesr.formats.Converter` produced (integers, usually a
quarter of that) go into one packed device buffer, are copied on a side CUDA stream into page-locked host memory
(DMA at full bus speed, no CPU involvement), and only then ``memcpy``'d into the destination planes. Between
:meth:`PlaneWriter.start` and :meth:`PlaneWriter.finish` the caller may queue the next frame's network step: the copy
runs while the GPU computes.

Buffers are allocated once per writer (one slot per frame in flight, normally two) and reused; nothing is allocated
per frame. On the CPU there is nothing to stage: :meth:`PlaneWriter.finish` writes the converted planes straight into
the destination (the cast and the row-strided write are one pass).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from vsanimesr.formats import Converter, OutputSpec

__all__ = ["PinnedStaging", "PlaneWriter", "Ticket"]

log = logging.getLogger("vsanimesr")

_ALIGN = 256  # plane offsets inside the packed buffers (bytes): any dtype view, coalesced copies


@dataclass
class _Slot:
    device_buf: Tensor  # uint8, packed planes on the GPU
    host_buf: Tensor  # uint8, the same layout in pinned host memory
    device_planes: list[Tensor]
    host_planes: list[np.ndarray]
    ready: torch.cuda.Event  # the planes were written on the compute stream
    copied: torch.cuda.Event  # the device-to-host copy finished on the side stream


class PinnedStaging:
    """Packed device buffers, their pinned host twins and a side stream for a fixed list of planes.

    ``shapes`` and ``dtype`` describe the planes (a frame of one format). Protocol, per frame::

        slot = staging.acquire()          # device planes to write (on the current stream)
        ...write slot's device planes...
        staging.submit(slot)              # async copy device -> pinned on the side stream
        ...queue more GPU work...
        staging.collect(slot, dst)        # wait for the copy, memcpy pinned -> dst planes, release the slot

    A slot is reused only after it was collected and its copy finished, so the compute stream never overwrites a
    buffer that is still being copied. The pool grows to the number of frames in flight (normally 2) and stays.
    """

    def __init__(self, shapes: Sequence[tuple[int, int]], dtype: torch.dtype, device: str | torch.device) -> None:
        self.device = torch.device(device)
        if self.device.type != "cuda":
            raise ValueError(f"PinnedStaging: needs a CUDA device, got {str(self.device)!r}")
        self.shapes = [tuple(int(v) for v in s) for s in shapes]
        self.dtype = dtype
        item = torch.empty((), dtype=dtype).element_size()
        self.offsets = []
        nbytes = 0
        for h, w in self.shapes:
            self.offsets.append(nbytes)
            nbytes += -(-h * w * item // _ALIGN) * _ALIGN
        self.nbytes = nbytes
        self.stream = torch.cuda.Stream(device=self.device)
        self._free: list[_Slot] = []
        self._lock = threading.Lock()
        self.slots_allocated = 0
        """Slots created so far (each one device buffer plus one pinned buffer of :attr:`nbytes`)."""

    def _new_slot(self) -> _Slot:
        dev = torch.empty(self.nbytes, dtype=torch.uint8, device=self.device)
        host = torch.empty(self.nbytes, dtype=torch.uint8, pin_memory=True)
        host_np = host.numpy()
        np_dtype = torch.empty((), dtype=self.dtype).numpy().dtype
        dplanes, hplanes = [], []
        for (h, w), off in zip(self.shapes, self.offsets, strict=True):
            n = h * w * np_dtype.itemsize
            dplanes.append(dev[off : off + n].view(self.dtype).view(h, w))
            hplanes.append(host_np[off : off + n].view(np_dtype).reshape(h, w))
        self.slots_allocated += 1
        log.debug("PinnedStaging: slot %d, %d bytes pinned", self.slots_allocated, self.nbytes)
        # The host waits on `copied` while VapourSynth's other threads need the CPU: a blocking wait, not a spin.
        return _Slot(dev, host, dplanes, hplanes, torch.cuda.Event(), torch.cuda.Event(blocking=True))

    def acquire(self) -> _Slot:
        """A free slot; the current stream waits until its previous copy is done before anything writes it."""
        with self._lock:
            slot = self._free.pop() if self._free else self._new_slot()
        torch.cuda.current_stream(self.device).wait_event(slot.copied)
        return slot

    def submit(self, slot: _Slot) -> None:
        """Queue the copy of ``slot``'s device planes to its pinned buffer, after the work queued so far."""
        slot.ready.record(torch.cuda.current_stream(self.device))
        self.stream.wait_event(slot.ready)
        with torch.cuda.stream(self.stream):
            slot.host_buf.copy_(slot.device_buf, non_blocking=True)
            slot.copied.record(self.stream)

    def collect(self, slot: _Slot, dst: Sequence[np.ndarray] | None = None) -> list[np.ndarray]:
        """Wait for ``slot``'s copy, copy its planes into ``dst`` (if given) and release the slot.

        Without ``dst`` the returned arrays are fresh copies (the pinned memory is reused by later frames).
        """
        slot.copied.synchronize()
        try:
            if dst is None:
                return [p.copy() for p in slot.host_planes]
            for d, p in zip(dst, slot.host_planes, strict=True):
                np.copyto(d, p)
            return list(dst)
        finally:
            with self._lock:
                self._free.append(slot)


@dataclass
class Ticket:
    """A frame on its way to the host: returned by :meth:`PlaneWriter.start`, consumed by ``finish``."""

    rgb: Tensor | None  # CPU path: the frame, converted at finish
    slot: _Slot | None  # CUDA path: the staging slot holding the converted planes


class PlaneWriter:
    """Engine output (float RGB (3, H, W) on ``device``) -> ``spec``'s planes in the caller's host memory.

    ``write(rgb, dst)`` does it in one call; ``start(rgb)`` / ``finish(ticket, dst)`` split it so that the caller
    can queue the next frame's GPU work in between. ``dst`` are the destination planes (numpy arrays of
    :attr:`plane_shapes` and the format's dtype; row padding allowed, e.g. a VapourSynth frame's planes).
    ``src_size`` (default: ``size``) is the engine's output size, resized to ``size`` on the device when it differs.
    """

    def __init__(
        self,
        spec: OutputSpec,
        size: tuple[int, int],
        *,
        src_size: tuple[int, int] | None = None,
        device: str | torch.device = "cpu",
        pinned: bool | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.converter = Converter(spec, size, src_size=src_size, device=self.device)
        self.spec = spec
        self.plane_shapes = self.converter.plane_shapes
        self.dtype = spec.format.numpy_dtype
        use_pinned = self.device.type == "cuda" if pinned is None else pinned
        if use_pinned and self.device.type != "cuda":
            raise ValueError(f"PlaneWriter: pinned staging needs a CUDA device, got {str(self.device)!r}")
        self.staging = PinnedStaging(self.plane_shapes, spec.format.dtype, self.device) if use_pinned else None

    def check(self, dst: Sequence[np.ndarray]) -> None:
        """Raise a ValueError naming the problem unless ``dst`` fits this writer's planes."""
        if len(dst) != len(self.plane_shapes):
            raise ValueError(f"PlaneWriter: dst must be {len(self.plane_shapes)} planes, got {len(dst)}")
        for i, (d, shape) in enumerate(zip(dst, self.plane_shapes, strict=True)):
            if not isinstance(d, np.ndarray) or d.shape != shape or d.dtype != self.dtype:
                got = (d.shape, d.dtype) if isinstance(d, np.ndarray) else type(d).__name__
                raise ValueError(f"PlaneWriter: dst[{i}] must be a {shape} {self.dtype} array, got {got}")
            if not d.flags.writeable:
                raise ValueError(f"PlaneWriter: dst[{i}] is read-only")

    def start(self, rgb: Tensor) -> Ticket:
        """Convert ``rgb`` on its device and (CUDA) queue the copy to pinned memory; returns at once on CUDA."""
        if self.staging is None:
            return Ticket(rgb=rgb, slot=None)
        slot = self.staging.acquire()
        self.converter(rgb, out=slot.device_planes)
        self.staging.submit(slot)
        return Ticket(rgb=None, slot=slot)

    def finish(self, ticket: Ticket, dst: Sequence[np.ndarray]) -> None:
        """Write the frame of ``ticket`` into ``dst`` (waits for its copy on CUDA)."""
        if ticket.slot is not None:
            assert self.staging is not None
            try:
                self.check(dst)
            except ValueError:
                self.staging.collect(ticket.slot)  # release the slot all the same
                raise
            self.staging.collect(ticket.slot, dst)
            return
        self.check(dst)
        assert ticket.rgb is not None
        self.converter(ticket.rgb, out=[torch.from_numpy(d) for d in dst])

    def write(self, rgb: Tensor, dst: Sequence[np.ndarray]) -> None:
        """``finish(start(rgb), dst)``."""
        self.finish(self.start(rgb), dst)

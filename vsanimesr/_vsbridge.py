"""The Python side of the native ``core.animesr.Upscale`` filter (vsanimesr/_plugin/animesr.c).

The C filter owns frame requests and the VapourSynth frames; this module owns the engine. It is called with the GIL
held from VapourSynth's worker threads, so it never requests frames and never raises into C: :func:`create` and
:meth:`Bridge.process` return an error *string* (starting with ``animesr.Upscale:``) instead, which the filter turns
into a graph-build error or that frame's error.

Users do not import this module; see :func:`vsanimesr.vs.upscale` and ``core.animesr.Upscale``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import traceback
from typing import Any, Protocol

import numpy as np

__all__ = ["Bridge", "create"]

log = logging.getLogger("vsanimesr.vs")

PREFIX = "animesr.Upscale: "
OUTPUT_CACHE_BYTES = 512 << 20
"""Memory for the engine's cache of recent outputs (see :meth:`Bridge.process`); 2 to 16 frames."""


class Window(Protocol):
    """What the C filter passes: ``window(k)`` -> (R, G, B) read-only planes; ``window.scene_change(k)``."""

    def __call__(self, k: int) -> tuple[Any, Any, Any]: ...
    def scene_change(self, k: int) -> bool | None: ...


def _message(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.removeprefix("AnimeSR: ")


def create(**kwargs: Any) -> Bridge | str:
    """Validate the filter's arguments (see :class:`Bridge`) and build the engine; an error string on bad input."""
    try:
        return Bridge(**kwargs)
    except _ArgError as e:
        return PREFIX + str(e)
    except Exception as e:  # engine construction: ValueError, WeightsError, RuntimeError, OSError ...
        return PREFIX + _message(e)


class _ArgError(ValueError):
    pass


class Bridge:
    """One ``Upscale`` instance: the engine, its resolved settings, and the frame entry point for the C filter."""

    def __init__(
        self,
        *,
        width: int,
        height: int,
        num_frames: int,
        format: str,  # noqa: A002 - the VapourSynth format name, e.g. "RGBS"
        model: str = "v2",
        device: str = "auto",
        fp16: int | None = None,
        tile: int = 0,
        tile_overlap: int = 16,
        reset_interval: int | None = None,
        warmup: int | None = None,
        scene_threshold: float | None = None,
        outscale: float = 4.0,
        bf16: int = 0,
        compile: int = 0,  # noqa: A002
        tf32: int = 0,
    ) -> None:
        import torch

        from vsanimesr.engine import AnimeSR, resolve_device

        if format not in ("RGBS", "RGBH"):
            raise _ArgError(f"clip: format {format} is not supported (need RGBS or RGBH)")
        for name, value in (("tile", tile), ("tile_overlap", tile_overlap)):
            if value < 0:
                raise _ArgError(f"{name} must be >= 0, got {value}")
        for name, value in (("reset_interval", reset_interval), ("warmup", warmup)):
            if value is not None and value < 0:
                raise _ArgError(f"{name} must be >= 0, got {value}")
        if scene_threshold is not None and not (math.isfinite(scene_threshold) and scene_threshold >= 0):
            raise _ArgError(
                f"scene_threshold must be a finite number >= 0 (0 disables the detector), got {scene_threshold}"
            )
        if not (math.isfinite(outscale) and outscale > 0):
            raise _ArgError(f"outscale must be a finite number > 0, got {outscale}")
        if fp16 is not None and fp16 not in (0, 1):
            raise _ArgError(f"fp16 must be 0 or 1 (or unset), got {fp16}")
        for name, value in (("bf16", bf16), ("compile", compile), ("tf32", tf32)):
            if value not in (0, 1):
                raise _ArgError(f"{name} must be 0 or 1, got {value}")
        try:
            dev = resolve_device(device)
        except ValueError as e:
            raise _ArgError(f"device={device!r}: {_message(e)}") from e
        # RGBH means half-precision compute where that is fast and accurate (CUDA); the CPU computes in fp32.
        use_fp16 = bool(fp16) if fp16 is not None else (format == "RGBH" and dev.type == "cuda" and not bf16)
        if use_fp16 and dev.type != "cuda":
            raise _ArgError(f"fp16=1 needs a CUDA device, got device={device!r} (resolved to {str(dev)!r})")
        try:
            self.sr = AnimeSR(
                model=model,
                device=str(dev),
                fp16=use_fp16,
                tile=tile,
                tile_overlap=tile_overlap,
                reset_interval=reset_interval,
                warmup=warmup,
                scene_threshold=scene_threshold,
                bf16=bool(bf16),
                compile=bool(compile),
                tf32=bool(tf32),
                output_cache=min(16, max(2, OUTPUT_CACHE_BYTES // (3 * 16 * width * height * 4))),
            )
        except Exception as e:
            if type(e).__name__ == "WeightsError":
                raise _ArgError(f"model={model!r}: {_message(e)}") from e
            raise
        self._torch = torch
        self.device = dev
        self.width, self.height, self.num_frames = width, height, num_frames
        self.out_dtype = np.float16 if format == "RGBH" else np.float32
        self.reset_interval: int = self.sr.reset_interval
        self.warmup: int = self.sr.warmup
        self.ring_capacity = max(8, self.reset_interval + self.warmup + 3)
        if outscale == 4.0:
            self.out_width, self.out_height = 4 * width, 4 * height
        else:
            self.out_width, self.out_height = round(width * outscale), round(height * outscale)
            if self.out_width < 1 or self.out_height < 1:
                raise _ArgError(f"outscale={outscale} gives an empty {self.out_width}x{self.out_height} frame")
        self._lock = threading.Lock()
        log.debug(
            "animesr.Upscale: %dx%d %s, %d frames, device=%s fp16=%s reset_interval=%d warmup=%d",
            width, height, format, num_frames, dev, use_fp16, self.reset_interval, self.warmup,
        )

    @property
    def steps(self) -> int:
        """Network steps executed by this instance's engine."""
        return self.sr.steps

    def process(self, n: int, window: Window, planes: tuple[memoryview, ...], stride: int) -> str | None:
        """Write output frame ``n`` into ``planes`` (the new frame's three writable planes, rows ``stride`` bytes
        apart); return None, or an error message.

        VapourSynth delivers requests slightly out of order even in a sequential render; the engine's output cache
        (sized from :data:`OUTPUT_CACHE_BYTES`) absorbs that, so a sequential render costs one step per frame.
        """
        with self._lock:
            try:
                item = np.dtype(self.out_dtype).itemsize
                shape, strides = (4 * self.height, 4 * self.width), (stride, item)
                dst = [np.ndarray(shape, self.out_dtype, buffer=p, strides=strides) for p in planes]
                self._compute(n, window, dst)
                log.debug("animesr.Upscale: frame %d done, %d network steps so far", n, self.sr.steps)
                return None
            except Exception as e:
                self.sr.reset()  # a failed step may leave a half-advanced chain: start clean next time
                tb = "".join(traceback.format_exception(e)).rstrip()
                return f"{PREFIX}frame {n}: {type(e).__name__}: {_message(e)}\n{tb}"

    def _compute(self, k: int, window: Window, dst: list[np.ndarray]) -> None:
        # Each call from C may run on a fresh thread state, so the CUDA device is set here, every time (the engine
        # sets inference mode itself).
        cuda = self.device.type == "cuda"
        with self._torch.cuda.device(self.device) if cuda else contextlib.nullcontext():
            self.sr.frame_planar(k, window, self.num_frames, window.scene_change, out=dst)

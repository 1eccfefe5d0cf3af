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
    except Exception as e:  # OptionError, WeightsError, RuntimeError, OSError ...: all become graph-build errors
        return PREFIX + _message(e)


class Bridge:
    """One ``Upscale`` instance: the engine, this clip's session, and the entry points for the C filter.

    ``width``, ``height``, ``num_frames`` and ``format`` describe the source clip; every other keyword is an
    :class:`~vsanimesr.options.Options` field, passed by the C filter exactly as the user gave it.
    """

    def __init__(self, *, width: int, height: int, num_frames: int, format: str, **options: Any) -> None:  # noqa: A002
        from vsanimesr.engine import AnimeSR, resolve_device
        from vsanimesr.options import OptionError, Options

        if format not in ("RGBS", "RGBH"):
            raise OptionError("clip", format, "format is not supported (need RGBS or RGBH; vsanimesr.upscale() "
                              "converts YUV, GRAY and integer RGB)")
        opts = Options.from_args(options)
        dev = resolve_device(opts.device)
        if opts.fp16 is None:  # RGBH means half-precision compute where that is fast and accurate (CUDA)
            opts = opts.replace(fp16=format == "RGBH" and dev.type == "cuda" and not opts.bf16)
        self.sr = AnimeSR(
            opts.replace(device=str(dev)),
            output_cache=min(16, max(2, OUTPUT_CACHE_BYTES // (3 * 16 * width * height * 4))),
        )
        self.device = dev
        self.num_frames = num_frames
        self.out_dtype = np.float16 if format == "RGBH" else np.float32
        scale = self.sr.scale
        self.native_width, self.native_height = scale * width, scale * height
        outscale = float(scale) if opts.outscale is None else opts.outscale
        self.out_width, self.out_height = round(width * outscale), round(height * outscale)
        if self.out_width < 1 or self.out_height < 1:
            raise OptionError("outscale", outscale, f"gives an empty {self.out_width}x{self.out_height} frame")
        self.ring_capacity = max(8, opts.window_span)
        """Source frames the C filter keeps referenced: a whole window, so sequential requests fetch each once."""
        self._window: Window | None = None  # the C filter's frames for the request being computed
        self.session = self.sr.open(self._source_frame, num_frames, self._scene_change)
        self._lock = threading.Lock()
        self._cuda = torch_cuda_device(dev)
        log.info("animesr.Upscale: %dx%d %s, %d frames -> %dx%d; %s", width, height, format, num_frames,
                 self.out_width, self.out_height, self.sr.describe())

    @property
    def steps(self) -> int:
        """Network steps executed by this instance's engine."""
        return self.sr.steps

    def window(self, n: int) -> tuple[int, int]:
        """The source frames the C filter must hand over for output frame ``n`` (the engine's one definition)."""
        return self.session.window(n)

    def process(self, n: int, window: Window, planes: tuple[memoryview, ...], stride: int) -> str | None:
        """Write output frame ``n`` into ``planes`` (the new frame's three writable planes, rows ``stride`` bytes
        apart); return None, or an error message.

        VapourSynth delivers requests slightly out of order even in a sequential render; the session's output cache
        (sized from :data:`OUTPUT_CACHE_BYTES`) absorbs that, so a sequential render costs one step per frame.
        """
        with self._lock:
            try:
                item = np.dtype(self.out_dtype).itemsize
                shape, strides = (self.native_height, self.native_width), (stride, item)
                dst = [np.ndarray(shape, self.out_dtype, buffer=p, strides=strides) for p in planes]
                self._window = window
                # Each call from C may run on a fresh thread state, so the CUDA device is set here, every time.
                with self._cuda:
                    self.session.frame_planar(n, out=dst)
                log.debug("animesr.Upscale: frame %d done, %d network steps so far", n, self.sr.steps)
                return None
            except Exception as e:
                tb = "".join(traceback.format_exception(e)).rstrip()
                return f"{PREFIX}frame {n}: {type(e).__name__}: {_message(e)}\n{tb}"
            finally:
                self._window = None

    def _source_frame(self, k: int) -> tuple[Any, Any, Any]:
        assert self._window is not None, "source frames are only read inside process()"
        return self._window(k)

    def _scene_change(self, k: int) -> bool | None:
        assert self._window is not None, "source frames are only read inside process()"
        return self._window.scene_change(k)


def torch_cuda_device(dev: Any) -> contextlib.AbstractContextManager[Any]:
    """``torch.cuda.device(dev)`` for a CUDA device, else a no-op context (reusable, unlike a generator)."""
    if dev.type != "cuda":
        return contextlib.nullcontext()
    import torch

    return torch.cuda.device(dev)

"""The engine side of ``core.animesr.Upscale``, shared by its two hosts.

* The native filter (vsanimesr/_plugin/animesr.c) owns frame requests and the VapourSynth frames, and calls
  :func:`create`, :meth:`Bridge.window` and :meth:`Bridge.process`.
* The pure-Python filter (:func:`vsanimesr.vs.upscale_rgb` without the plugin) feeds the same :class:`Bridge` from
  ``std.ModifyFrame`` through :meth:`Bridge.render`.

Everything a graph build decides (the clip checks, the options, device, fp16 default, output format, sizes and frame
properties) is decided here once, so both hosts accept the same arguments and fail with the same
``animesr.Upscale:`` messages. It is called with the GIL held from VapourSynth's worker threads, so it never requests
frames and never raises into C: :func:`create` and :meth:`Bridge.process` return an error *string* (starting with
``animesr.Upscale:``) instead, which the host turns into a graph-build error or that frame's error.

Users do not import this module; see :func:`vsanimesr.vs.upscale` and ``core.animesr.Upscale``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import traceback
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Protocol

import numpy as np

__all__ = ["HOSTS", "Bridge", "Output", "check_clip", "create", "resolve_output"]

log = logging.getLogger("vsanimesr.vs")

PREFIX = "animesr.Upscale: "
OUTPUT_CACHE_BYTES = 512 << 20
"""Memory for the engine's cache of recent outputs (see :meth:`Bridge.render`); 2 to 16 frames."""
INPUT_FORMATS = ("RGBS", "RGBH")
MAX_SIDE = 0x7FFFFFFF // 64
"""Largest input width/height: the output size (and the C filter's plane arithmetic) must stay within an int."""
HOSTS = {
    "native": "native filter",
    "python": "pure-Python filter (std.ModifyFrame)",
}
"""Who drives a :class:`Bridge` (named in the start log line)."""


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


def check_clip(width: int, height: int, format: str | None) -> None:  # noqa: A002 - VapourSynth's name
    """The input clip's constraints (``format`` is the format's name, None for a variable format; a variable frame
    size is 0x0); a ValueError says what is wrong, without the ``animesr.Upscale:`` prefix."""
    if format is None:
        raise ValueError("clip: variable format is not supported (need constant RGBS or RGBH)")
    if width <= 0 or height <= 0:
        raise ValueError(f"clip: variable frame size is not supported (format {format})")
    if format not in INPUT_FORMATS:
        raise ValueError(f"clip: format {format} is not supported (need RGBS or RGBH; vsanimesr.upscale() converts "
                         "YUV, GRAY and integer RGB)")
    if width > MAX_SIDE or height > MAX_SIDE:
        raise ValueError(f"clip: frame size {width}x{height} is too large")


class Bridge:
    """One ``Upscale`` instance: the engine, this clip's session, and the entry points for its host.

    ``width``, ``height``, ``num_frames`` and ``format`` describe the source clip (see :func:`check_clip`);
    ``output`` holds the output arguments (:class:`~vsanimesr.options.OutputArgs`); ``host`` says who drives it (a
    key of :data:`HOSTS`); every other keyword is an :class:`~vsanimesr.options.Options` field, passed exactly as the
    user gave it.

    What a host needs to build its node: ``out_width`` x ``out_height`` frames of format ``out_format_id``, tagged
    with ``frame_props`` (and :meth:`sample_aspect_ratio`), written by :meth:`process` / :meth:`render`.
    """

    def __init__(
        self, *, width: int, height: int, num_frames: int, format: str | None,  # noqa: A002
        output: dict[str, Any] | None = None, host: str = "native", **options: Any,
    ) -> None:
        from vsanimesr.engine import AnimeSR, resolve_device
        from vsanimesr.options import OptionError, Options
        from vsanimesr.staging import PlaneWriter

        check_clip(width, height, format)
        if host not in HOSTS:
            raise ValueError(f"host={host!r}: must be one of {', '.join(HOSTS)}")
        opts = Options.from_args(options)
        self.output = resolve_output(output or {}, format)
        dev = resolve_device(opts.device)
        if opts.fp16 is None:  # RGBH means half-precision compute where that is fast and accurate (CUDA)
            opts = opts.replace(fp16=format == "RGBH" and dev.type == "cuda" and not opts.bf16)
        self.sr = AnimeSR(
            opts.replace(device=str(dev)),
            output_cache=min(16, max(2, OUTPUT_CACHE_BYTES // (3 * 16 * width * height * 4))),
        )
        self.device = dev
        self.host = host
        self.num_frames = num_frames
        self.in_width, self.in_height = width, height
        scale = self.sr.scale
        self.native_width, self.native_height = scale * width, scale * height
        """The model's output size (the engine's frames, before the ``outscale`` resize)."""
        outscale = float(scale) if opts.outscale is None else opts.outscale
        self.out_width, self.out_height = round(width * outscale), round(height * outscale)
        """The filter's frame size: the model's output resized on the device (Spline36) when ``outscale`` asks."""
        if self.out_width < 1 or self.out_height < 1:
            raise OptionError("outscale", outscale, f"gives an empty {self.out_width}x{self.out_height} frame")
        fmt = self.output.spec.format
        if self.out_width % (1 << fmt.ss_w) or self.out_height % (1 << fmt.ss_h):
            raise OptionError("outscale", outscale, f"gives a {self.out_width}x{self.out_height} frame, but format="
                              f"{self.output.format_name} needs a width and height divisible by its subsampling")
        self.out_format_id = self.output.format_id
        """The VapourSynth format id of the frames the filter returns."""
        self.frame_props = self.output.props
        """Frame properties the filter sets on every output frame (None: delete the key)."""
        self.writer = PlaneWriter(self.output.spec, (self.out_height, self.out_width),
                                  src_size=(self.native_height, self.native_width), device=dev)
        self.ring_capacity = max(8, opts.window_span)
        """Source frames the C filter keeps referenced: a whole window, so sequential requests fetch each once."""
        self._window: Window | None = None  # the C filter's frames for the request being computed
        self.session = self.sr.open(self._source_frame, num_frames, self._scene_change)
        self._lock = threading.Lock()
        self._cuda = torch_cuda_device(dev)
        log.info("animesr.Upscale: %dx%d %s, %d frames -> %dx%d %s; %s; %s", width, height, format, num_frames,
                 self.out_width, self.out_height, self.output.describe(), HOSTS[host], self.sr.describe())

    @property
    def steps(self) -> int:
        """Network steps executed by this instance's engine."""
        return self.sr.steps

    def window(self, n: int) -> tuple[int, int]:
        """The source frames the C filter must hand over for output frame ``n`` (the engine's one definition)."""
        return self.session.window(n)

    def sample_aspect_ratio(self, num: int, den: int) -> tuple[int, int]:
        """A source frame's ``_SARNum``/``_SARDen`` for the output frame: the display aspect ratio is kept when
        ``outscale`` rounding makes the scale uneven, as core.resize does (SAR * in_w * out_h / (out_w * in_h))."""
        factor = Fraction(self.in_width * self.out_height, self.out_width * self.in_height)
        if factor == 1 or num <= 0 or den <= 0:
            return num, den
        sar = Fraction(num, den) * factor
        return sar.numerator, sar.denominator

    def process(
        self, n: int, window: Window, planes: tuple[memoryview, ...], strides: tuple[int, ...]
    ) -> str | None:
        """The C filter's entry point: :meth:`render` into ``planes`` (the new frame's writable planes as flat
        memoryviews, rows ``strides[i]`` bytes apart)."""
        try:
            item = self.writer.dtype.itemsize
            dst = [np.ndarray(shape, self.writer.dtype, buffer=p, strides=(stride, item))
                   for p, shape, stride in zip(planes, self.writer.plane_shapes, strides, strict=True)]
        except Exception as e:
            return f"{PREFIX}frame {n}: {type(e).__name__}: {_message(e)}"
        return self.render(n, window, dst)

    def render(self, n: int, window: Window, dst: list[np.ndarray]) -> str | None:
        """Write output frame ``n`` into ``dst`` (the output frame's planes as arrays, rows may be padded); return
        None, or an error message.

        The frame is converted to the output format on the engine's device and copied to the host once. On CUDA
        only the network step, the conversion and queueing the copy (to pinned memory, on a side stream) hold the
        instance's lock; waiting for the copy and the ``memcpy`` into ``planes`` do not, so with several requests
        in flight (``core.num_threads`` > 1) the next frame's step runs on the GPU while this one is copied.
        VapourSynth delivers requests slightly out of order even in a sequential render; the session's output cache
        (sized from :data:`OUTPUT_CACHE_BYTES`) absorbs that, so a sequential render costs one step per frame.
        """
        try:
            self.writer.check(dst)
            with self._lock:
                try:
                    self._window = window
                    # Each call from C may run on a fresh thread state, so the CUDA device is set here, every time.
                    with self._cuda:
                        ticket = self.writer.start(self.session.tensor(n))
                        if ticket.slot is None:  # CPU: the conversion itself writes dst (and uses shared buffers)
                            self.writer.finish(ticket, dst)
                finally:
                    self._window = None
            if ticket.slot is not None:
                self.writer.finish(ticket, dst)
            log.debug("animesr.Upscale: frame %d done, %d network steps so far", n, self.sr.steps)
            return None
        except Exception as e:
            tb = "".join(traceback.format_exception(e)).rstrip()
            return f"{PREFIX}frame {n}: {type(e).__name__}: {_message(e)}\n{tb}"

    def _source_frame(self, k: int) -> tuple[Any, Any, Any]:
        assert self._window is not None, "source frames are only read inside process()"
        return self._window(k)

    def _scene_change(self, k: int) -> bool | None:
        assert self._window is not None, "source frames are only read inside process()"
        return self._window.scene_change(k)


TRANSFERS = frozenset({1, 2, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18})
"""H.273 ``TransferCharacteristics`` codes (2 = unspecified; 0 and 3 are reserved)."""
PRIMARIES = frozenset({1, 2, 4, 5, 6, 7, 8, 9, 10, 11, 12, 22})
"""H.273 ``ColourPrimaries`` codes (2 = unspecified)."""


@dataclass(frozen=True)
class Output:
    """The filter's output, resolved from its arguments: what to write and how to tag it."""

    spec: Any  # vsanimesr.formats.OutputSpec
    format_id: int
    format_name: str
    props: dict[str, int | None]  # frame properties to set; None deletes the key

    def describe(self) -> str:
        fmt = self.spec.format
        if fmt.family.value == "RGB" and fmt.is_float:
            return self.format_name
        rng = "full" if self.spec.full_range else "limited"
        return f"{self.format_name} (matrix {self.props['_Matrix']}, {rng} range)"


def resolve_output(output: dict[str, Any], clip_format: str) -> Output:
    """Map the filter's output arguments (:class:`vsanimesr.options.OutputArgs`) to an ``OutputSpec`` and the frame
    properties that describe it, with VapourSynth's own constants (``vs.RANGE_FULL`` etc.: never hard-coded, they
    changed meaning between releases). Bad values raise :class:`OptionError` naming the argument and the value."""
    import vapoursynth as vs

    from vsanimesr.formats import MATRICES, Family, OutputSpec, PixelFormat
    from vsanimesr.options import OUTPUT_FIELDS, OptionError

    known = [f.name for f in OUTPUT_FIELDS]
    unknown = sorted(set(output) - set(known))
    if unknown:
        raise OptionError(unknown[0], output[unknown[0]], f"unknown output argument (known: {', '.join(known)})")
    for name in known:
        value = output.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise OptionError(name, value, "must be an integer")
    fmt_id = None if output.get("format") is None else int(output["format"])  # a plain int in messages
    if fmt_id is None:
        vf = vs.core.get_video_format(getattr(vs, clip_format))  # the input's: RGBS or RGBH
    else:
        try:
            vf = vs.core.get_video_format(fmt_id)
        except (vs.Error, ValueError, OverflowError) as e:
            raise OptionError("format", fmt_id, f"is not a VapourSynth format id (use e.g. vs.YUV420P10): {e}") \
                from None
        if vf.color_family == vs.UNDEFINED:
            raise OptionError("format", fmt_id, "is not a VapourSynth format id (use e.g. vs.YUV420P10)")
    try:
        family = Family(vf.color_family.name)
        pixel = PixelFormat(family, vf.bits_per_sample, vf.sample_type == vs.FLOAT, vf.subsampling_w,
                            vf.subsampling_h)
    except ValueError as e:
        why = str(e).removeprefix("PixelFormat: ")
        raise OptionError("format", fmt_id, f"{vf.name} is not supported ({why}); use RGB, YUV 4:4:4/4:2:2/4:2:0 "
                          "or GRAY with 8-16-bit integer, half or float samples") from None
    matrix = output.get("matrix")
    if matrix is not None and matrix not in MATRICES:
        raise OptionError("matrix", matrix, f"must be one of {', '.join(map(str, MATRICES))} (H.273 codes: 1 BT.709, "
                          "4 FCC, 5/6 BT.601, 7 SMPTE 240M, 9 BT.2020 NCL)")
    rng = output.get("range")
    full = None
    if rng is not None:
        choices = {int(vs.RANGE_LIMITED): False, int(vs.RANGE_FULL): True}
        if rng not in choices:
            raise OptionError("range", rng, f"must be vs.RANGE_LIMITED ({int(vs.RANGE_LIMITED)}) or vs.RANGE_FULL "
                              f"({int(vs.RANGE_FULL)})")
        full = choices[rng]
    for name, codes in (("transfer", TRANSFERS), ("primaries", PRIMARIES)):
        value = output.get(name)
        if value is not None and value not in codes:
            raise OptionError(name, value, f"must be an H.273 code: one of {', '.join(map(str, sorted(codes)))}")
    spec = OutputSpec(pixel, matrix=1 if matrix is None else matrix, full_range=full)
    props: dict[str, int | None] = {
        "_Matrix": spec.matrix_prop,
        "_Range": int(vs.RANGE_FULL) if spec.full_range else int(vs.RANGE_LIMITED),
        "_ChromaLocation": int(vs.CHROMA_LEFT) if spec.chroma_left else None,
    }
    for name, key in (("transfer", "_Transfer"), ("primaries", "_Primaries")):
        if output.get(name) is not None:
            props[key] = output[name]
    return Output(spec=spec, format_id=vf.id, format_name=vf.name, props=props)


def torch_cuda_device(dev: Any) -> contextlib.AbstractContextManager[Any]:
    """``torch.cuda.device(dev)`` for a CUDA device, else a no-op context (reusable, unlike a generator)."""
    if dev.type != "cuda":
        return contextlib.nullcontext()
    import torch

    return torch.cuda.device(dev)

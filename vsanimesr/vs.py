"""VapourSynth entry points: :func:`upscale` for clips of any format, :func:`upscale_rgb` for RGBS/RGBH.

:func:`upscale_rgb` is ``core.animesr.Upscale`` when the native plugin is loaded, and its pure-Python twin otherwise
(or when asked, see :func:`resolve_implementation`): ``std.ModifyFrame`` over the clip shifted by every offset of the
engine's input window, driving the same bridge (vsanimesr/_vsbridge.py) and so the same engine session, options,
checks and error messages. Both give the same frames bit for bit in any request order.

:func:`upscale` converts to RGB with the clip's own colour properties, upscales, and converts back.

Levels and tags (VapourSynth's resizers and vsjetpack agree on these):

* An integer clip codes its levels in its range: limited (Y 16-235 at 8 bits) or full (0-255).
* A float clip is normalised whatever its tags (Y and RGB 0..1, U and V -0.5..0.5: what ``core.resize`` reads and
  writes); its ``_Range`` only says which range to restore when it goes back to integers (``vstools.depth``,
  ``finalize_clip``).
* The input's range is the ``range`` argument, else frame 0's ``_Range`` (or the older ``_ColorRange``), else limited
  for YUV/GRAY and full for RGB.
* The output keeps the input's range when the colour family stays on the same side (YUV/GRAY in and YUV/GRAY out, or
  RGB in and RGB out), else takes the family's usual one (limited YUV/GRAY, full RGB). Integer output is coded in it,
  float output is tagged with it, so ``depth(upscale(depth(src, 32)), 8)`` has the levels of ``upscale(src)``.
* ``_Matrix``, ``_ChromaLocation``, ``_Transfer`` and ``_Primaries`` come from the arguments, else frame 0, else:
  matrix BT.709 for HD (width >= 1280 or height >= 720), BT.601 otherwise (``170m``; ``470bg`` for 576 lines); chroma
  location left; transfer and primaries the matrix's family for YUV/GRAY input (for RGB input only known values are
  written). They drive the conversions and are written to YUV and GRAY output (the chroma location when known or
  subsampled). The network works on the gamma-encoded values it was trained on, so nothing is linearised.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import vapoursynth as vs

from vsanimesr.options import FIELDS, OUTPUT_FIELDS, OptionError, Options

__all__ = ["IMPLEMENTATION_ENV", "IMPLEMENTATIONS", "device_output", "resolve_implementation", "to_rgb",
           "upscale", "upscale_rgb", "window_offsets"]

log = logging.getLogger("vsanimesr.vs")

_FUNC = "vsanimesr.upscale"
_FUNC_RGB = "vsanimesr.upscale_rgb"

IMPLEMENTATIONS = ("auto", "native", "python")
"""``auto``: the native filter when ``core.animesr`` is loaded, else the pure-Python one; ``native``; ``python``."""
IMPLEMENTATION_ENV = "VSANIMESR_IMPLEMENTATION"
"""Environment variable that sets the default of ``implementation`` (one of :data:`IMPLEMENTATIONS`)."""
CACHE_MARGIN = 16
"""Low-resolution frames the pure-Python filter keeps beyond its window (plus ``core.num_threads``): for requests
that arrive ahead of the frame being computed."""

_COLOR_RANGE_FULL = 0  # the older _ColorRange property counts the other way round from _Range: 0 full, 1 limited
_MATRIX_RGB, _MATRIX_BT709, _MATRIX_UNSPECIFIED = 0, 1, 2
_MATRIX_BT470BG, _MATRIX_ST170M = 5, 6
_UNSPECIFIED = 2  # _Transfer / _Primaries "unspecified"


# --------------------------------------------------------------------------------------------- choosing the path


def native_available() -> bool:
    """Whether this environment's core has the native ``animesr`` plugin."""
    return hasattr(vs.core, "animesr")


def resolve_implementation(implementation: str | None = None, *, func: str = _FUNC_RGB) -> str:
    """``native`` or ``python``: the argument, else :data:`IMPLEMENTATION_ENV`, else ``auto`` (native when loaded)."""
    value, source = implementation, "implementation"
    if value is None:
        value, source = os.environ.get(IMPLEMENTATION_ENV) or "auto", IMPLEMENTATION_ENV
    if value not in IMPLEMENTATIONS:
        raise vs.Error(f"{func}: {source}={value!r}: must be one of {', '.join(IMPLEMENTATIONS)}")
    if value == "auto":
        return "native" if native_available() else "python"
    if value == "native" and not native_available():
        raise vs.Error(f"{func}: {source}='native': the native plugin core.animesr is not loaded (it is built by "
                       "`pip install` where a C compiler exists, not on Windows); use implementation='python'")
    return value


# --------------------------------------------------------------------------------------------- RGBS/RGBH


def upscale_rgb(clip: vs.VideoNode, *, implementation: str | None = None, **options: Any) -> vs.VideoNode:
    """``core.animesr.Upscale`` with or without the native plugin (the same arguments, defaults, frames and errors).

    ``options`` are :class:`vsanimesr.options.Options` fields and the output arguments of
    :class:`vsanimesr.options.OutputArgs` (``format``, ``matrix``, ``range``, ``transfer``, ``primaries``: see the
    signature); ``implementation`` picks the path (:func:`resolve_implementation`). Errors at graph build are
    ``vs.Error`` starting with ``animesr.Upscale:``.
    """
    impl = resolve_implementation(implementation)
    # Only what the caller set reaches the filter, in the filter's types, so the defaults live in Options alone.
    args = {k: _vs_value(v) for k, v in options.items() if v is not None}
    if impl == "native":
        return vs.core.animesr.Upscale(clip, **args)
    return _python_upscale(clip, args)


def _vs_value(v: Any) -> Any:
    """What the native filter would receive: plain ints for flags and enums (vs.YUV420P10, vs.RANGE_FULL), str
    for paths."""
    if isinstance(v, int):
        return int(v)
    return os.fspath(v) if isinstance(v, os.PathLike) else v


def _signature() -> inspect.Signature:
    """``upscale_rgb``'s signature from the one options definition (for help() and editors)."""
    params = [inspect.Parameter("clip", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation="vs.VideoNode")]
    params += [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=f.type)
               for f in (*FIELDS, *OUTPUT_FIELDS)]
    params.append(inspect.Parameter("implementation", inspect.Parameter.KEYWORD_ONLY, default=None,
                                    annotation="str | None"))
    return inspect.Signature(params, return_annotation="vs.VideoNode")


upscale_rgb.__signature__ = _signature()  # type: ignore[attr-defined]
upscale_rgb.__doc__ = (upscale_rgb.__doc__ or "") + "\n    Arguments:\n" + "".join(
    f"        {f.name} (default {f.default!r}): {f.metadata['help']}\n" for f in (*FIELDS, *OUTPUT_FIELDS))


def window_offsets(opts: Options) -> tuple[int, int, bool]:
    """``(first, last, bounded)``: frame ``n``'s window lies within ``[n + first, n + last]`` for every ``n``.

    Probed from :meth:`Options.window` itself (two clip lengths beyond :attr:`Options.window_span`, so every phase
    of the periodic restarts is seen). Without periodic restarts windows grow with ``n`` (``bounded`` False); the
    offsets then cover :attr:`Options.restart_span`, what a sequential render reads.
    """

    def reach(length: int) -> tuple[int, int]:
        spans = [opts.window(n, length) for n in range(length)]
        return min(lo - n for n, (lo, _) in enumerate(spans)), max(hi - n for n, (_, hi) in enumerate(spans))

    probe = 2 * opts.window_span + 2
    (first, last), (first2, _) = reach(probe), reach(2 * probe)
    if first == first2:
        return first, last, True
    return last + 1 - opts.restart_span, last, False


def _shift(clip: vs.VideoNode, d: int) -> vs.VideoNode:
    """``clip`` with frame ``n`` showing frame ``clamp(n + d, 0, num_frames - 1)``."""
    n = clip.num_frames
    if d == 0:
        return clip
    if abs(d) >= n:
        return clip[0] * n if d < 0 else clip[-1] * n
    return clip[0] * -d + clip[: n + d] if d < 0 else clip[d:] + clip[-1] * d


class _FrameWindow:
    """The bridge's view of frame ``n``'s inputs: ``window(k)`` -> (R, G, B) read-only planes, ``scene_change(k)``.

    ``frames[i]`` is source frame ``n + first + i``; frames outside them (only for unbounded windows, after an
    out-of-order request) are fetched from ``source`` on the spot.
    """

    def __init__(self, n: int, first: int, frames: Sequence[vs.VideoFrame], source: vs.VideoNode | None) -> None:
        self.n, self.first, self.frames, self.source = n, first, frames, source

    def _frame(self, k: int) -> vs.VideoFrame:
        i = k - self.n - self.first
        if 0 <= i < len(self.frames):
            return self.frames[i]
        if self.source is None:
            raise IndexError(f"frame {k} is outside the shifted clips' window [{self.n + self.first}, "
                             f"{self.n + self.first + len(self.frames) - 1}] of output frame {self.n}")
        log.debug("animesr.Upscale: frame %d: fetching source frame %d outside the shifted clips", self.n, k)
        return self.source.get_frame(k)

    def __call__(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        f = self._frame(k)
        return np.asarray(f[0]), np.asarray(f[1]), np.asarray(f[2])

    def scene_change(self, k: int) -> bool | None:
        value = self._frame(k).props.get("_SceneChangePrev")
        return bool(value) if isinstance(value, int) else None


@dataclass
class _Render:
    """The ``std.ModifyFrame`` callback: one output frame from the shifted clips' frames, by the bridge."""

    bridge: Any  # vsanimesr._vsbridge.Bridge
    core: vs.Core
    fmt: vs.VideoFormat
    first: int
    source: vs.VideoNode | None  # set when windows are unbounded

    def __call__(self, n: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:
        out = self.core.create_video_frame(self.fmt, self.bridge.out_width, self.bridge.out_height)
        dst = [np.asarray(out[p]) for p in range(self.fmt.num_planes)]
        error = self.bridge.render(n, _FrameWindow(n, self.first, f, self.source), dst)
        if error is not None:
            raise vs.Error(error)
        return out


def _python_upscale(clip: Any, args: dict[str, Any]) -> vs.VideoNode:
    """The pure-Python ``Upscale``: the same bridge as the native filter, fed by ``std.ModifyFrame``.

    The filter needs frames ``window(n)`` for output ``n``; ModifyFrame hands over one frame per clip, so it gets the
    clip shifted by each offset the window can take. A fixed VapourSynth frame cache holds the low-resolution frames
    of the window, so a sequential render computes each of them once. The output frames carry the source frame's
    properties plus what the bridge says was written, as the native filter's do.
    """
    from vsanimesr import _vsbridge

    if not isinstance(clip, vs.VideoNode):
        raise vs.Error(f"{_vsbridge.PREFIX}clip must be a vapoursynth.VideoNode, got {type(clip).__name__}")
    fmt = clip.format
    output = {f.name: args.pop(f.name) for f in OUTPUT_FIELDS if f.name in args}
    bridge = _vsbridge.create(
        width=clip.width, height=clip.height, num_frames=clip.num_frames,
        format=None if fmt is None or fmt.id == vs.NONE else fmt.name, output=output, host="python", **args,
    )
    if isinstance(bridge, str):
        raise vs.Error(bridge)
    first, last, bounded = window_offsets(bridge.sr.options)
    core = vs.core.core
    out_fmt = core.get_video_format(bridge.out_format_id)
    template = core.std.BlankClip(clip, width=bridge.out_width, height=bridge.out_height, format=out_fmt.id,
                                  keep=True)
    # The shifted clips read a private node whose cache holds the window plus the frames requested ahead, so each
    # source frame is computed once in a sequential render (VapourSynth's automatic cache starts small and would
    # compute the first ~100 frames ten times over while it grows). A new node, so the user's clip keeps its cache.
    held = core.std.SetFrameProps(clip, AnimeSRWindow=1)
    core.std.SetVideoCache(held, mode=1, fixedsize=1, maxsize=last - first + 1 + CACHE_MARGIN + core.num_threads)
    shifted = [_shift(held, d) for d in range(first, last + 1)]
    render = _Render(bridge, core, out_fmt, first, None if bounded else clip)
    up = core.std.CopyFrameProps(core.std.ModifyFrame(template, shifted, render), clip)
    tags = {k: v for k, v in bridge.frame_props.items() if v is not None}
    gone = [k for k, v in bridge.frame_props.items() if v is None]
    up = core.std.SetFrameProps(up, **tags) if tags else up
    up = core.std.RemoveFrameProps(up, gone) if gone else up
    if bridge.sample_aspect_ratio(1, 1) != (1, 1):  # outscale rounding made the scale uneven: keep the aspect

        def aspect(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
            num, den = f.props.get("_SARNum"), f.props.get("_SARDen")
            if not isinstance(num, int) or not isinstance(den, int):
                return f
            f = f.copy()
            f.props["_SARNum"], f.props["_SARDen"] = bridge.sample_aspect_ratio(num, den)
            return f

        up = core.std.ModifyFrame(up, up, aspect)
    return up


# --------------------------------------------------------------------------------------------- any format


@dataclass(frozen=True)
class _Colour:
    """What the conversions use and the output is tagged with (H.273 codes, VapourSynth range constants)."""

    matrix: int
    transfer: int | None
    primaries: int | None
    chromaloc: int | None
    range_in: int
    range_out: int


def _default_matrix(clip: vs.VideoNode) -> int:
    if clip.width >= 1280 or clip.height >= 720:
        return _MATRIX_BT709
    return _MATRIX_BT470BG if clip.height == 576 else _MATRIX_ST170M  # PAL / NTSC; the same coefficients


def _prop(props: Any, key: str, unspecified: tuple[int, ...] = (_UNSPECIFIED,)) -> int | None:
    value = props.get(key)
    return None if not isinstance(value, int) or int(value) in unspecified else int(value)


def _range_prop(props: Any) -> int | None:
    """``_Range`` (VapourSynth R7x+: vs.RANGE_LIMITED / vs.RANGE_FULL), else the older ``_ColorRange``."""
    if isinstance(props.get("_Range"), int):
        return vs.RANGE_FULL if int(props["_Range"]) == vs.RANGE_FULL else vs.RANGE_LIMITED
    if isinstance(props.get("_ColorRange"), int):
        return vs.RANGE_FULL if int(props["_ColorRange"]) == _COLOR_RANGE_FULL else vs.RANGE_LIMITED
    return None


_RANGE_NAMES = {"full": vs.RANGE_FULL, "limited": vs.RANGE_LIMITED}


def _colour(
    clip: vs.VideoNode, out_fmt: vs.VideoFormat, *, matrix: int | None, transfer: int | None, primaries: int | None,
    chromaloc: int | None, range: str | None,  # noqa: A002
) -> _Colour:
    props = clip.get_frame(0).props
    is_rgb = clip.format.color_family == vs.RGB
    if range is not None and range not in _RANGE_NAMES:
        raise vs.Error(f"{_FUNC}: range={range!r} must be 'full' or 'limited'")
    mat = matrix if matrix is not None else (None if is_rgb else _prop(props, "_Matrix", (_MATRIX_RGB,
                                                                                           _MATRIX_UNSPECIFIED)))
    mat = mat if mat is not None else _default_matrix(clip)
    trc = transfer if transfer is not None else _prop(props, "_Transfer")
    prim = primaries if primaries is not None else _prop(props, "_Primaries")
    if not is_rgb:  # BT.709 and BT.601 share one transfer curve; primaries follow the matrix family
        trc = trc or (1 if mat == _MATRIX_BT709 else 6)
        prim = prim or (1 if mat == _MATRIX_BT709 else mat if mat in (_MATRIX_BT470BG, _MATRIX_ST170M) else 6)
    loc = chromaloc if chromaloc is not None else (None if is_rgb else _prop(props, "_ChromaLocation", ()))
    r_in = _RANGE_NAMES[range] if range is not None else _range_prop(props)
    if r_in is None:
        r_in = vs.RANGE_FULL if is_rgb else vs.RANGE_LIMITED
    same_side = is_rgb == (out_fmt.color_family == vs.RGB)
    r_out = r_in if same_side else vs.RANGE_FULL if out_fmt.color_family == vs.RGB else vs.RANGE_LIMITED
    return _Colour(mat, trc, prim, loc, r_in, r_out)


def _check_input(clip: Any, func: str) -> None:
    """What :func:`upscale` and :func:`to_rgb` accept: a constant-format, constant-size YUV, GRAY or RGB clip."""
    if not isinstance(clip, vs.VideoNode):
        raise vs.Error(f"{func}: clip must be a vapoursynth.VideoNode, got {type(clip).__name__}")
    if clip.format is None or clip.format.id == vs.NONE:
        raise vs.Error(f"{func}: clip: variable format is not supported")
    if clip.width == 0 or clip.height == 0:
        raise vs.Error(f"{func}: clip: variable frame size is not supported")
    if clip.format.color_family not in (vs.YUV, vs.GRAY, vs.RGB):
        raise vs.Error(f"{func}: clip: format {clip.format.name} is not supported (need YUV, GRAY or RGB)")


def _to_rgb(clip: vs.VideoNode, c: _Colour, *, fp16: bool) -> vs.VideoNode:
    """RGBS (RGBH when ``fp16`` or already RGBH), full range. Float input is normalised whatever its range (the
    resizers ignore range_in for it)."""
    rgb_fmt = vs.RGBH if fp16 or clip.format.id == vs.RGBH else vs.RGBS
    if clip.format.id == rgb_fmt:
        return clip
    if clip.format.color_family == vs.RGB:
        return vs.core.resize.Point(clip, format=rgb_fmt, range_in=c.range_in, range=vs.RANGE_FULL)
    loc = {} if c.chromaloc is None else {"chromaloc_in": c.chromaloc}
    return vs.core.resize.Bicubic(clip, format=rgb_fmt, matrix_in=c.matrix, range_in=c.range_in, **loc)


def to_rgb(
    clip: vs.VideoNode,
    *,
    matrix: int | None = None,
    chromaloc: int | None = None,
    range: str | None = None,  # noqa: A002 - "full" or "limited"
    fp16: bool = False,
) -> vs.VideoNode:
    """``clip`` as RGBS (RGBH with ``fp16``) for ``upscale_rgb``, read with the same properties and defaults as
    :func:`upscale` reads them (``matrix``, ``chromaloc`` and ``range`` override the clip's).

    For scripts that choose the output colour themselves: ``upscale_rgb(to_rgb(clip), format=vs.YUV420P10,
    matrix=1, ...)`` converts at low resolution on the way in and on the engine's device on the way out.
    """
    func = "vsanimesr.to_rgb"
    _check_input(clip, func)
    try:
        c = _colour(clip, clip.format, matrix=matrix, transfer=None, primaries=None, chromaloc=chromaloc,
                    range=range)
    except vs.Error as e:
        raise vs.Error(str(e).replace(_FUNC, func, 1)) from None
    return _to_rgb(clip, c, fp16=bool(fp16))


def device_output(out_fmt: vs.VideoFormat, colour: _Colour) -> dict[str, int | None] | None:
    """The filter's output arguments that write ``out_fmt`` as ``colour`` says, or None where only ``core.resize``
    can (chroma not sited left, a matrix the filter does not know, a format it cannot write).

    Converting on the engine's device means only the final planes cross to the host; at x4 the conversion on the
    host costs more than the network on a GPU (the filter's ``format`` argument, :mod:`vsanimesr.formats`).
    """
    from vsanimesr import _vsbridge

    is_rgb = out_fmt.color_family == vs.RGB
    subsampled = out_fmt.subsampling_w or out_fmt.subsampling_h
    if subsampled and colour.chromaloc not in (None, int(vs.CHROMA_LEFT)):
        return None
    args = {"format": out_fmt.id, "matrix": None if is_rgb else colour.matrix, "range": int(colour.range_out)}
    try:
        _vsbridge.resolve_output(args, "RGBS")  # the filter's own check of what it can write
    except OptionError:
        return None
    return args


def _resolve_format(fmt: Any, clip: vs.VideoNode) -> vs.VideoFormat:
    if fmt is None:
        return clip.format
    try:
        return vs.core.get_video_format(fmt)
    except (vs.Error, TypeError, ValueError) as e:
        raise vs.Error(f"{_FUNC}: format={fmt!r} is not a VapourSynth video format ({e})") from e


def upscale(
    clip: vs.VideoNode,
    *,
    format: Any = None,  # noqa: A002 - VapourSynth's own name for it
    matrix: int | None = None,
    transfer: int | None = None,
    primaries: int | None = None,
    chromaloc: int | None = None,
    range: str | None = None,  # noqa: A002 - "full" or "limited"
    dither_type: str | None = None,
    implementation: str | None = None,
    **options: Any,
) -> vs.VideoNode:
    """Upscale ``clip`` with AnimeSR (x4 for the published models); returns ``format`` (default: the input's format).

    ``options`` are :class:`vsanimesr.options.Options` fields (``model``, ``device``, ``fp16``, ``tile``,
    ``reset_interval``, ``outscale``, ...), the same as ``core.animesr.Upscale``'s, checked here first.
    ``matrix``, ``transfer``, ``primaries``, ``chromaloc`` (H.273 codes / VapourSynth's chroma locations, as in the
    frame properties) and ``range`` (``"full"`` or ``"limited"``) override the clip's properties; see the module
    docstring for levels and tags. Compute runs in RGBH when the input is RGBH or ``fp16`` is true, else RGBS.
    The output conversion runs inside the filter, on the engine's device (:func:`device_output`), whenever it can
    write the result (chroma sited left, a matrix it knows, no ``dither_type``); otherwise ``core.resize`` converts
    the x4 RGB with ``dither_type`` (default ``"none"``: rounding, as the filter does).
    ``implementation`` picks the native or the pure-Python filter (:func:`resolve_implementation`).
    """
    try:
        opts = Options.from_args(options)
    except OptionError as e:
        raise vs.Error(f"{_FUNC}: {e}") from None
    _check_input(clip, _FUNC)
    fmt = clip.format
    out_fmt = _resolve_format(format, clip)
    if out_fmt.color_family not in (vs.YUV, vs.GRAY, vs.RGB):
        raise vs.Error(f"{_FUNC}: format={out_fmt.name} is not supported (need YUV, GRAY or RGB)")
    impl = resolve_implementation(implementation, func=_FUNC)
    c = _colour(clip, out_fmt, matrix=matrix, transfer=transfer, primaries=primaries, chromaloc=chromaloc,
                range=range)
    log.debug("%s: %s %s -> %s via %s", _FUNC, fmt.name, c, out_fmt.name, impl)
    core = vs.core
    rgb = _to_rgb(clip, c, fp16=opts.fp16 is True)

    set_options = {k: v for k, v in opts.as_dict().items() if options.get(k) is not None}
    output = device_output(out_fmt, c) if dither_type is None else None
    up = upscale_rgb(rgb, implementation=impl, **set_options, **(output or {}))

    # Back to the requested format, coded in (integer) or tagged with (float) the output range.
    dither_type = dither_type or "none"
    if output is not None or (out_fmt.id == up.format.id and c.range_out == vs.RANGE_FULL):
        out = up
    elif out_fmt.color_family == vs.RGB:
        out = core.resize.Point(up, format=out_fmt.id, range=c.range_out, dither_type=dither_type)
    elif out_fmt.color_family == vs.GRAY:  # the luma of the matrix
        out = core.resize.Point(up, format=out_fmt.id, matrix=c.matrix, range=c.range_out, dither_type=dither_type)
    else:
        loc = {} if c.chromaloc is None else {"chromaloc": c.chromaloc}
        out = core.resize.Spline36(up, format=out_fmt.id, matrix=c.matrix, range=c.range_out,
                                   dither_type=dither_type, **loc)
    tags = {"_Transfer": c.transfer, "_Primaries": c.primaries}
    if out_fmt.color_family != vs.RGB:  # kept on GRAY too (as core.resize and vstools keep it there)
        tags["_ChromaLocation"] = c.chromaloc
    tags = {k: v for k, v in tags.items() if v is not None}
    return core.std.SetFrameProps(out, **tags) if tags else out

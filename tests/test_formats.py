"""Device-side output formats and the shared resampler against VapourSynth's own conversions (zimg), on the CPU.

The reference for every format is ``core.resize`` applied to the same float RGBS frame (clamped with std.Expr for
integer targets): Y, GRAY and RGB planes within 1 LSB; 4:4:4 chroma within 1 LSB of ``resize.Point``; 4:2:0 chroma
within 1 LSB of ``resize.Spline36`` (the filter used here; measured: identical) and, as a stated figure, PSNR >= 25 dB
against ``resize.Point``'s nearest-sample subsampling, which aliases the deliberately noisy, hard-edged test frame
(measured 25.7-27.0 dB for V and 30.7-32.1 dB for U).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import make_frame

from animesr_tools.metrics import psnr
from vsanimesr.formats import FORMATS, MATRICES, Converter, Family, OutputSpec, PixelFormat
from vsanimesr.resample import Resampler, resize, taps
from vsanimesr.staging import PinnedStaging, PlaneWriter

vs = pytest.importorskip("vapoursynth")
core = vs.core

H, W = 46, 62  # even (4:2:0), not a multiple of 4 or 8: edges and mirroring are exercised


def rgbs_clip(data: np.ndarray) -> vs.VideoNode:
    blank = core.std.BlankClip(width=data.shape[2], height=data.shape[1], format=vs.RGBS, length=1)

    def fill(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        f = f.copy()
        for p in range(3):
            np.asarray(f[p])[:] = data[p]
        return f

    return core.std.ModifyFrame(blank, blank, fill)


def frame_planes(clip: vs.VideoNode) -> list[np.ndarray]:
    f = clip.get_frame(0)
    return [np.array(f[p]) for p in range(clip.format.num_planes)]


def vs_format(fmt: PixelFormat) -> vs.VideoFormat:
    """The VapourSynth format for ``fmt`` (the mapping the VapourSynth layer makes: fields, not names)."""
    return core.query_video_format(getattr(vs, fmt.family.value), vs.FLOAT if fmt.is_float else vs.INTEGER,
                                   fmt.bits, fmt.ss_w, fmt.ss_h)


def reference(data: np.ndarray, spec: OutputSpec, kernel: str = "Point") -> list[np.ndarray]:
    clip = rgbs_clip(data)
    if spec.clamp:
        clip = core.std.Expr(clip, "x 0 max 1 min")
    fmt = spec.format
    kwargs = dict(format=vs_format(fmt).id, range_s="full" if spec.full_range else "limited")
    if fmt.family != Family.RGB:
        kwargs["matrix"] = spec.matrix
    return frame_planes(getattr(core.resize, kernel)(clip, **kwargs))


def _specs() -> list[tuple[str, int, bool | None]]:
    out = []
    for name, fmt in FORMATS.items():
        if fmt.is_float:
            out += [(name, m, None) for m in ((1, 6, 9) if fmt.family != Family.RGB else (1,))]
        elif fmt.family == Family.RGB:
            out += [(name, 1, False), (name, 1, True)]
        else:
            out += [(name, m, r) for m in (1, 6, 9) for r in (False, True)]
    return out


@pytest.mark.parametrize(("name", "matrix", "full"), _specs())
def test_every_format_matches_vapoursynth(name: str, matrix: int, full: bool | None) -> None:
    data = make_frame(H, W)
    spec = OutputSpec(FORMATS[name], matrix=matrix, full_range=full)
    fmt = spec.format
    ours = [p.numpy() for p in Converter(spec, (H, W))(torch.from_numpy(data))]
    point = reference(data, spec)
    assert [o.shape for o in ours] == [p.shape for p in point] == list(fmt.plane_shapes(H, W))
    assert all(o.dtype == fmt.numpy_dtype == p.dtype for o, p in zip(ours, point, strict=True))
    lsb = 1.0 if not fmt.is_float else (2.0**-10 if fmt.bits == 16 else 1e-6)
    luma_like = ours if fmt.family == Family.RGB else ours[:1]
    for i, o in enumerate(luma_like):
        assert np.abs(o.astype(np.float64) - point[i]).max() <= lsb, f"plane {i}"
    if fmt.family != Family.YUV:
        return
    if fmt.ss_w or fmt.ss_h:
        spline = reference(data, spec, "Spline36")
        np.testing.assert_array_equal(spline[0], point[0])  # the kernel only touches chroma here
        peak = (1 << fmt.bits) - 1
        for i in (1, 2):
            assert np.abs(ours[i].astype(np.float64) - spline[i]).max() <= lsb, f"plane {i} vs Spline36"
            assert psnr(ours[i] / peak, point[i] / peak) >= 25, f"plane {i} vs Point"
    else:
        for i in (1, 2):
            assert np.abs(ours[i].astype(np.float64) - point[i]).max() <= lsb, f"plane {i}"


def test_float_output_is_unclamped_unless_asked() -> None:
    data = make_frame(H, W)
    assert data.min() < 0 and data.max() > 1  # the frame really has out-of-range values
    t = torch.from_numpy(data)
    rgbs = Converter(OutputSpec(FORMATS["RGBS"]), (H, W))(t)
    np.testing.assert_array_equal(np.stack([p.numpy() for p in rgbs]), data)
    rgbh = Converter(OutputSpec(FORMATS["RGBH"]), (H, W))(t)
    np.testing.assert_array_equal(np.stack([p.numpy() for p in rgbh]), data.astype(np.float16))
    clamped = Converter(OutputSpec(FORMATS["RGBS"], clamp=True), (H, W))(t)
    np.testing.assert_array_equal(np.stack([p.numpy() for p in clamped]), np.clip(data, 0, 1))


def test_gray_is_the_luma_of_yuv_with_the_same_matrix() -> None:
    data = torch.from_numpy(make_frame(H, W))
    for m in (1, 5, 9):
        gray = Converter(OutputSpec(FORMATS["GRAY10"], matrix=m), (H, W))(data)[0]
        y = Converter(OutputSpec(FORMATS["YUV444P10"], matrix=m), (H, W))(data)[0]
        torch.testing.assert_close(gray, y, rtol=0, atol=0)
    grey = data[:1].expand(3, -1, -1).clamp(0, 1)  # R = G = B: every matrix gives the grey value itself
    for m in MATRICES:
        g = Converter(OutputSpec(FORMATS["GRAY16"], matrix=m, full_range=True), (H, W))(grey)[0]
        expect = (grey[0] * 65535).round()
        assert (g.float() - expect).abs().max() <= 1, m


@pytest.mark.parametrize("matrix", [4, 5, 7])
def test_other_matrices_match_vapoursynth(matrix: int) -> None:
    data = make_frame(H, W)
    spec = OutputSpec(FORMATS["YUV444P16"], matrix=matrix)
    ours = Converter(spec, (H, W))(torch.from_numpy(data))
    for o, r in zip(ours, reference(data, spec), strict=True):
        assert np.abs(o.numpy().astype(np.int64) - r).max() <= 1


def test_writes_into_strided_vapoursynth_planes() -> None:
    data = make_frame(H, W)
    spec = OutputSpec(FORMATS["YUV420P10"])
    frame = core.std.BlankClip(width=W, height=H, format=vs.YUV420P10, length=1).get_frame(0).copy()
    dst = [np.asarray(frame[p]) for p in range(3)]
    assert dst[0].strides[0] > W * 2  # VapourSynth pads rows: the write must honour the stride
    writer = PlaneWriter(spec, (H, W))
    assert writer.staging is None  # CPU: direct write, nothing pinned
    writer.write(torch.from_numpy(data), dst)
    expect = Converter(spec, (H, W))(torch.from_numpy(data))
    for d, e in zip(dst, expect, strict=True):
        np.testing.assert_array_equal(d, e.numpy())
    # start/finish is the same thing split in two
    frame2 = core.std.BlankClip(width=W, height=H, format=vs.YUV420P10, length=1).get_frame(0).copy()
    dst2 = [np.asarray(frame2[p]) for p in range(3)]
    writer.finish(writer.start(torch.from_numpy(data)), dst2)
    for d, e in zip(dst2, dst, strict=True):
        np.testing.assert_array_equal(d, e)


def test_outscale_resize_then_convert_matches_vapoursynth() -> None:
    data = make_frame(H, W)
    for size in ((30, 40), (70, 94)):  # down by a non-integer factor, and up
        spec = OutputSpec(FORMATS["YUV444P10"], matrix=1)
        ours = Converter(spec, size, src_size=(H, W))(torch.from_numpy(data))
        clip = core.resize.Spline36(rgbs_clip(data), size[1], size[0])
        clip = core.resize.Point(core.std.Expr(clip, "x 0 max 1 min"), format=vs.YUV444P10, matrix=1,
                                 range_s="limited")
        for o, r in zip(ours, frame_planes(clip), strict=True):
            assert np.abs(o.numpy().astype(np.int64) - r).max() <= 1


@pytest.mark.parametrize("kernel", ["spline36", "bicubic", "bilinear"])
def test_resampler_matches_core_resize(kernel: str) -> None:
    data = make_frame(H, W)
    clip = rgbs_clip(data)
    for h, w in ((23, 31), (12, 62), (46, 20), (92, 124), (184, 248), (61, 83), (9, 11)):
        ref = np.stack(frame_planes(getattr(core.resize, kernel.capitalize())(clip, w, h)))
        ours = Resampler((H, W), (h, w), filter=kernel)(torch.from_numpy(data)).numpy()
        assert np.abs(ours - ref).max() < 2e-6, (h, w)


def test_taps_choose_the_strided_path_for_integer_downscales() -> None:
    assert taps(2 * W, W, shift=-0.5).stride == 2  # 4:2:0 chroma, left sited
    assert taps(4 * H, H).stride == 4  # outscale=1 from the x4 output
    assert taps(W, 2 * W).stride is None and taps(W, 47).stride is None
    t = taps(W, 47)
    np.testing.assert_allclose(t.weights.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    # Both paths give the same result where both apply: downscale by 2 strided vs. a gathered equivalent.
    x = torch.from_numpy(make_frame(H, W))
    strided = Resampler((H, W), (H // 2, W // 2))(x)
    gathered = Resampler((H, W), (H // 2, W // 2))
    for axis in gathered._axes:
        axis.taps = replace(axis.taps, stride=None)
    torch.testing.assert_close(gathered(x), strided, rtol=0, atol=1e-6)
    assert torch.equal(resize(x, (H, W)), x)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: PixelFormat("XYZ", 8), "family must be RGB, YUV or GRAY"),
        (lambda: PixelFormat(Family.YUV, 7), r"integer samples need bits in \[8"),
        (lambda: PixelFormat(Family.RGB, 24, True), r"float samples need bits in \[16, 32\], got 24"),
        (lambda: PixelFormat(Family.RGB, 8, False, 1, 1), "only YUV can be subsampled"),
        (lambda: PixelFormat(Family.YUV, 8, False, 2, 0), "subsampling must be 0 or 1"),
        (lambda: PixelFormat.parse("YUV411P8"), "not a format name"),
        (lambda: PixelFormat.parse("RGB25"), "RGB bits must be 3 x bits"),
        (lambda: OutputSpec(FORMATS["YUV420P10"], matrix=2), r"matrix must be one of \[1, 4, 5, 6, 7, 9\].*got 2"),
        (lambda: OutputSpec(FORMATS["YUV420P10"], matrix=True), "matrix must be one of"),
        (lambda: OutputSpec("YUV420P10"), "format must be a PixelFormat"),
        (lambda: Converter(OutputSpec(FORMATS["YUV420P8"]), (45, 62)), "YUV420P8 needs a size divisible"),
        (lambda: Converter(OutputSpec(FORMATS["RGB24"]), (H, W))(torch.zeros(3, H, W + 1)),
         r"rgb must be \(3, 46, 62\)"),
        (lambda: Converter(OutputSpec(FORMATS["GRAY8"]), (H, W))(torch.zeros(3, H, W), out=[torch.zeros(H, W)] * 3),
         "out must be planes of shapes"),
        (lambda: PlaneWriter(OutputSpec(FORMATS["GRAY8"]), (H, W), pinned=True), "pinned staging needs a CUDA device"),
        (lambda: PinnedStaging([(H, W)], torch.uint8, "cpu"), "PinnedStaging: needs a CUDA device"),
        (lambda: taps(10, 5, filter="lanczos"), "filter must be one of"),
        (lambda: Resampler((H, W), (10, 10))(torch.zeros(3, H + 1, W)), "Resampler: input must be"),
    ],
)
def test_bad_arguments_name_function_argument_and_value(make, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


def test_writer_rejects_wrong_destination_planes() -> None:
    writer = PlaneWriter(OutputSpec(FORMATS["YUV420P8"]), (H, W))
    rgb = torch.from_numpy(make_frame(H, W))
    good = [np.zeros(s, np.uint8) for s in writer.plane_shapes]
    msg = r"dst\[1\] must be a \(23, 31\) uint8 array, got \(\(23, 31\), dtype\('uint16'\)\)"
    with pytest.raises(ValueError, match=msg):
        writer.write(rgb, [good[0], np.zeros((23, 31), np.uint16), good[2]])
    with pytest.raises(ValueError, match="dst must be 3 planes, got 1"):
        writer.write(rgb, good[:1])
    ro = good[2].copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match=r"dst\[2\] is read-only"):
        writer.write(rgb, [good[0], good[1], ro])


def test_format_names_round_trip_and_match_vapoursynth() -> None:
    for name, fmt in FORMATS.items():
        assert PixelFormat.parse(name) == fmt and PixelFormat.parse(name.lower()) == fmt
        vf = vs_format(fmt)
        assert vf.name.upper() == name  # VapourSynth spells GRAY formats "Gray8"
        assert (vf.bits_per_sample, vf.subsampling_w, vf.subsampling_h) == (fmt.bits, fmt.ss_w, fmt.ss_h)
    assert PixelFormat.parse("YUV422P12").plane_shapes(4, 8) == ((4, 8), (4, 4), (4, 4))
    assert OutputSpec(FORMATS["RGB24"]).full_range and not OutputSpec(FORMATS["YUV420P10"]).full_range
    assert OutputSpec(FORMATS["RGB24"]).matrix_prop == 0 and OutputSpec(FORMATS["GRAY8"], matrix=9).matrix_prop == 9
    assert OutputSpec(FORMATS["YUV420P8"]).chroma_left and not OutputSpec(FORMATS["YUV444P10"]).chroma_left

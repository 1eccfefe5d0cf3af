"""The ``animesr`` command and its video plumbing (vsanimesr/cli.py, vsanimesr/video.py).

Plumbing tests use a cheap stand-in for the network (``_identity``), so they check remuxing, timestamps and
error handling in about a second each. They run on a small video with audio made here (so a clean clone tests them
too) and on ../shared's real clip when it is there. End-to-end tests run the real engine on a few small frames.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import clip_from, planes, smooth_frames, write_h264_aac
from PIL import Image

from vsanimesr.cli import build_parser, flag, main
from vsanimesr.options import FIELDS
from vsanimesr.video import (
    CODECS,
    Crop,
    Encoding,
    FrameEncoder,
    FrameRange,
    Tracks,
    VideoEncoder,
    VideoError,
    join_segments,
    parse_crop,
    parse_frame_range,
    parse_tracks,
    target_size,
    to_uint,
    transcode_video,
)

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "2"}
FAST = Encoding("h264", preset="ultrafast")


def _identity(frames):  # the same size, float in [0, 1], like the engine's output type
    for f in frames:
        yield f.astype(np.float32) / 255.0


def _probe(path: Path) -> dict:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        info = {
            "streams": sorted(s.type for s in c.streams),
            "audio_codec": c.streams.audio[0].codec_context.name if c.streams.audio else None,
            "rate": v.average_rate,
            "size": (v.codec_context.width, v.codec_context.height),
            "pix_fmt": v.codec_context.pix_fmt,
            "codec": v.codec_context.name,
        }
        info["pts"] = [f.pts * f.time_base for f in c.decode(video=0)]
    info["frames"] = len(info["pts"])
    return info


def _audio_packets(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for p in c.demux(audio=0) if p.dts is not None)


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _write_sample(path: Path, *, num_frames: int = 48, height: int = 48, width: int = 64) -> None:
    """A small H.264 + AAC MP4 at 23.976 fps (moving gradients and a 440 Hz tone)."""
    yy, xx = np.mgrid[0:height, 0:width]
    write_h264_aac(path, (np.stack([(xx * 4 + i * 3) % 256, (yy * 5) % 256, np.full_like(xx, (i * 11) % 256)], -1)
                          for i in range(num_frames)))


@pytest.fixture(scope="session")
def sample_video(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sample") / "sample.mp4"
    _write_sample(path)
    return path


@pytest.fixture(params=["sample", "onepiece"])
def video(request, sample_video) -> Path:
    """Each plumbing test runs on the generated sample and on the real clip (skipped when ../shared is absent)."""
    return sample_video if request.param == "sample" else request.getfixturevalue("demo_video")


# ---------------------------------------------------------------------------------------------- argument parsing


def test_help_lists_every_option(capsys):
    for command in ("upscale", "frames"):
        with pytest.raises(SystemExit) as e:
            main([command, "--help"])
        assert e.value.code == 0
        text = capsys.readouterr().out
        sub = build_parser()._subparsers._group_actions[0].choices[command]
        for action in sub._actions:
            assert action.help, f"{command}: {action.dest} has no help text"
            for name in action.option_strings:
                assert name in text, f"{command} --help does not mention {name}"
    upscale_help = build_parser()._subparsers._group_actions[0].choices["upscale"].format_help()
    for name in ("--codec", "--crf", "--preset", "--tune", "--x265-params", "--x264-params", "--audio",
                 "--subtitles", "--threads", "--frames", "--crop"):
        assert name in upscale_help
    for f in FIELDS:  # every engine option, with the help text defined in vsanimesr/options.py
        assert flag(f.name) in upscale_help, f.name
        assert " ".join(f.metadata["help"].split()[:4]) in " ".join(upscale_help.split()), f.name


@pytest.mark.parametrize(("argv", "message"), [
    (["--tile", "-1"], "argument --tile: must be >= 0"),
    (["--reset-interval", "x"], "argument --reset-interval: expected an integer, got 'x'"),
    (["--scene-threshold", "-0.5"], "argument --scene-threshold: must be >= 0.0"),
    (["--outscale", "0"], "argument --outscale: must be > 0"),
    (["--backend", "tensorflow"], "argument --backend: invalid choice"),
    (["--threads", "0"], "argument --threads: must be >= 1"),
    (["--crop", "16x8"], "argument --crop: expected W:H (centred) or W:H:X:Y"),
    (["--audio", "0;1"], "argument --audio: expected all, none or a list"),
])
def test_bad_engine_options_are_usage_errors_naming_the_flag(capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        main(["upscale", "in.mp4", "out.mkv", *argv])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("animesr upscale: error: " + message), err


def test_parsers_reject_bad_values():
    assert parse_frame_range("5:9") == FrameRange(5, 9)
    assert parse_frame_range(":9") == FrameRange(0, 9)
    assert parse_frame_range("5:") == FrameRange(5, None)
    for bad in ("5", "9:5", "a:b", "-1:3"):
        with pytest.raises(ValueError, match="parse_frame_range"):
            parse_frame_range(bad)
    assert parse_crop("16:8:2:4").x == 2
    for bad in ("16", "0:8", "16:8:2", "a:b", "16x8"):
        with pytest.raises(ValueError, match="parse_crop"):
            parse_crop(bad)
    # W:H is centred (FFmpeg's crop=w:h) on even offsets, so that 4:2:0 chroma stays aligned in the .vpy too
    assert parse_crop("32:24").box(64, 48) == (16, 12, 32, 24)
    assert parse_crop("31:23").box(64, 48) == (16, 12, 31, 23)
    assert parse_crop("32:24:1:3").box(64, 48) == (1, 3, 32, 24)
    with pytest.raises(VideoError, match="crop 65:24 does not fit the 64x48 input"):
        Crop(65, 24).box(64, 48)
    assert parse_tracks("all") is None and parse_tracks("none") == ()
    assert parse_tracks("0, eng,2") == (0, "eng", 2)
    with pytest.raises(SystemExit):
        main(["upscale", "a.mp4", "b.mp4", "--frames", "9:5"])


def test_sizes_and_quantisation():
    assert target_size(120, 160, 4) == (480, 640)
    assert target_size(100, 50, 1.01, even=True) == (102, 50)  # 101 -> 102: 4:2:0 needs even sizes
    x = np.array([-0.2, 0.0, 0.5, 1.0, 1.3], np.float32)
    assert to_uint(x, 8).tolist() == [0, 0, 128, 255, 255]
    assert to_uint(x, 10).tolist() == [0, 0, 32768, 65535, 65535]


@pytest.mark.parametrize("codec", ["ffv1", "h264"])
def test_encoder_frames_are_the_filters_planes(tmp_path, codec):
    """The frames the CLI (and every distributed chunk) gives the encoder are the planes that
    core.animesr.Upscale(format=YUV420P10 / YUV420P8) writes: vsanimesr.formats' BT.709 limited-range conversion
    (tested against core.resize in test_formats.py), after the same Spline36 resize for outscale; from host arrays
    (uint8 or float) and from tensors alike. FFV1 keeps them exactly."""
    import torch

    from vsanimesr.formats import Converter, OutputSpec, PixelFormat

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:46, 0:62].astype(np.float32)
    rgb = np.stack([0.5 + 0.6 * np.sin(xx / (3 + c) + yy / (4 + c)) for c in range(3)], -1)  # beyond [0, 1] too
    rgb += 0.03 * rng.standard_normal(rgb.shape).astype(np.float32)
    spec = CODECS[codec]
    fmt = PixelFormat.parse("YUV420P10" if spec.bits == 10 else "YUV420P8")
    for size in ((46, 62), (34, 46)):  # as upscaled, and with an outscale resize
        want = Converter(OutputSpec(fmt, matrix=1, full_range=False), size, src_size=(46, 62))(
            torch.from_numpy(rgb).permute(2, 0, 1))
        enc = FrameEncoder(spec, size)
        for y in (rgb, torch.from_numpy(rgb).permute(2, 0, 1).contiguous()):
            vf = enc(y)
            assert (vf.format.name, vf.height, vf.width) == (spec.pix_fmt, *size)
            got = [np.asarray(p) for p in _planes(vf)]
            for g, w in zip(got, want, strict=True):
                np.testing.assert_array_equal(g, w.numpy())
    u8 = (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)
    a, b = enc(u8), enc(u8.astype(np.float32) / 255)
    for pa, pb in zip(_planes(a), _planes(b), strict=True):
        np.testing.assert_array_equal(pa, pb)
    if codec == "ffv1":  # lossless: what is decoded is what was written
        path = tmp_path / "planes.mkv"
        with av.open(str(path), "w") as out:
            st = out.add_stream("ffv1", rate=24)
            st.height, st.width, st.pix_fmt = *size, spec.pix_fmt
            frame = enc(rgb)
            frame.pts = 0
            out.mux(st.encode(frame))
            out.mux(st.encode(None))
        with av.open(str(path)) as c:
            back = next(c.decode(video=0))
        for g, w in zip(_planes(back), _planes(enc(rgb)), strict=True):
            np.testing.assert_array_equal(g, w)


def _planes(vf) -> list[np.ndarray]:  # noqa: ANN001
    """The planes of a PyAV frame without row padding."""
    dtype = np.uint16 if vf.format.name.endswith("10le") else np.uint8
    return [np.ndarray((p.height, p.width), dtype, buffer=p, strides=(p.line_size, dtype().itemsize)).copy()
            for p in vf.planes]


# ---------------------------------------------------------------------------------------------- plumbing, fast


def test_whole_video_keeps_timestamps_rate_and_audio(video, tmp_path):
    out = tmp_path / "same.mkv"
    summary = transcode_video(video, out, _identity, encoding=FAST, scale=1)
    src, dst = _probe(video), _probe(out)
    assert summary["frames"] == src["frames"] == dst["frames"] > 0
    # Matroska stores milliseconds, so timestamps match to within its rounding.
    assert max(abs(a - b) for a, b in zip(dst["pts"], src["pts"], strict=True)) <= Fraction(1, 1000)
    assert dst["rate"] == src["rate"]
    assert dst["streams"] == ["audio", "video"] and dst["audio_codec"] == "aac"
    assert _audio_packets(out) == _audio_packets(video)
    assert _listing(tmp_path) == ["same.mkv"]


def test_frame_range_is_shifted_to_zero_with_its_audio(video, tmp_path):
    out = tmp_path / "part.mp4"
    transcode_video(video, out, _identity, encoding=FAST, scale=1, frames=FrameRange(10, 34))
    info = _probe(out)
    assert info["frames"] == 24
    step = 1 / _probe(video)["rate"]
    assert [round(t / step) for t in info["pts"]] == list(range(24))
    with av.open(str(out)) as c:
        a = c.streams.audio[0]
        dur = sum(p.duration for p in c.demux(a) if p.dts is not None) * a.time_base
    assert abs(float(dur) - 24 * float(step)) < 0.05  # the audio of those 24 frames, not of the whole clip


def test_truncated_input_gives_clear_error_and_no_file(video, tmp_path, capsys):
    bad = tmp_path / "in" / "truncated.mp4"
    bad.parent.mkdir()
    bad.write_bytes(video.read_bytes()[: video.stat().st_size // 2])
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    assert main(["upscale", str(bad), str(out_dir / "x.mp4"), "-q"]) == 1
    err = capsys.readouterr().err.strip()
    assert "truncated.mp4" in err and "corrupt" in err and len(err.splitlines()) == 1
    assert _listing(out_dir) == []


def test_input_cut_mid_stream_is_an_error(video, tmp_path):
    # With the index at the front ("faststart") a cut file still opens; the missing frames must be noticed.
    fs = tmp_path / "faststart.mp4"
    with av.open(str(video)) as inp, av.open(str(fs), "w", options={"movflags": "faststart"}) as out:
        m = {s.index: out.add_stream_from_template(s) for s in inp.streams}
        for p in inp.demux():
            if p.dts is not None:
                p.stream = m[p.stream.index]
                out.mux(p)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(fs.read_bytes()[: fs.stat().st_size // 2])
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(VideoError, match=f"ended after .* of {_probe(video)['frames']} frames"):
        transcode_video(cut, out_dir / "x.mkv", _identity, encoding=FAST, scale=1)
    assert _listing(out_dir) == []


@pytest.mark.parametrize("where", ["missing_dir", "under_a_file"])
def test_unwritable_output_path(sample_video, tmp_path, capsys, where):
    target = tmp_path / "nope" / "x.mp4"
    if where == "under_a_file":
        (tmp_path / "nope").write_text("a file, not a folder")
    assert main(["upscale", str(sample_video), str(target), "-q"]) == 1
    err = capsys.readouterr().err.strip()
    assert "cannot write to the output folder" in err and len(err.splitlines()) == 1
    assert not target.exists()


def test_existing_output_needs_overwrite(sample_video, tmp_path, capsys):
    out = tmp_path / "x.mp4"
    out.write_bytes(b"keep me")
    assert main(["upscale", str(sample_video), str(out), "-q"]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert out.read_bytes() == b"keep me"


_FULL_DISK_SNIPPET = """
import sys
import numpy as np
from vsanimesr.video import Encoding, VideoError, transcode_video
def ident(frames):
    for f in frames:
        yield f.astype(np.float32) / 255
try:
    transcode_video(sys.argv[1], sys.argv[2], ident, encoding=Encoding("h264", preset="ultrafast"), scale=1)
except VideoError as e:
    print(e)
    sys.exit(3)
"""


def test_full_disk_leaves_no_partial_file(video, tmp_path):
    # A file-size limit makes writes fail with EFBIG, as a full disk fails them with ENOSPC.
    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))

    out = tmp_path / "x.mkv"
    r = subprocess.run([sys.executable, "-c", _FULL_DISK_SNIPPET, str(video), str(out)], env=ENV,
                       preexec_fn=limit, capture_output=True, text=True, timeout=120)
    assert r.returncode == 3, r.stderr[-2000:]
    assert "disk full or file size limit" in r.stdout
    assert _listing(tmp_path) == []


@pytest.mark.parametrize("entry", ["module", "console-script"])
@pytest.mark.parametrize("when", ["engine-loading", "later"])
def test_ctrl_c_exits_130_and_removes_partial_file(tmp_path, entry, when):
    src = tmp_path / "long.mp4"
    _write_sample(src, num_frames=600)  # long enough to be still running a second after start on any machine
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    script = Path(sys.executable).parent / "animesr"
    if entry == "console-script" and not script.exists():
        pytest.skip(f"{script} is not installed (run `make test`)")
    prog = [str(script)] if entry == "console-script" else [sys.executable, "-m", "vsanimesr.cli"]
    cmd = [*prog, "upscale", str(src), str(out_dir / "x.mp4"), "--device", "cpu", "-q", "-v"]
    # A shell without job control starts background jobs with SIGINT ignored; restore the default for the child.
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        if when == "engine-loading":  # interrupt the import of the engine and the loading of the weights
            line = proc.stderr.readline()
            while line and "loading the engine" not in line:
                line = proc.stderr.readline()
            assert line, "the CLI never said it was loading the engine"
        else:
            deadline = time.monotonic() + 120
            while not any(out_dir.iterdir()):  # the temporary file appears once the engine is ready
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else ""
                time.sleep(0.01)
            time.sleep(1.0)
        assert proc.poll() is None, proc.stderr.read()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1] == "animesr upscale: interrupted; no output written"
    assert _listing(out_dir) == []


# ---------------------------------------------------------------------------------------------- real engine


@pytest.mark.slow
def test_upscale_demo_video_4x(demo_video, weights_v2, tmp_path):
    """The CLI end to end on real footage: 4x size, same frame count and rate, audio copied, HEVC 10-bit."""
    out = tmp_path / "x4.mp4"
    r = subprocess.run(
        [sys.executable, "-m", "vsanimesr.cli", "upscale", str(demo_video), str(out), "--device", "cpu",
         "--frames", "40:43", "--crop", "160:120:240:180", "--preset", "ultrafast"],
        env=ENV, capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "frame/s" in r.stderr  # the progress bar
    info = _probe(out)
    assert info["size"] == (640, 480) and info["frames"] == 3
    assert info["codec"] == "hevc" and info["pix_fmt"] == "yuv420p10le"
    assert info["rate"] == Fraction(1199, 50)
    assert info["audio_codec"] == "aac"
    assert _listing(tmp_path) == ["x4.mp4"]


def test_upscale_sample_4x(sample_video, weights_v2, tmp_path, capsys):
    out = tmp_path / "x4.mkv"
    assert main(["upscale", str(sample_video), str(out), "--device", "cpu", "--frames", ":5", "--threads", "2"]) == 0
    lines = [line.split("\r")[-1] for line in capsys.readouterr().err.strip().split("\n")]
    # one start line, the progress bar (redrawn in place), the summary: nothing per frame
    assert len(lines) == 3, lines
    assert lines[0] == ("animesr upscale: 5 frames, 64x48 -> 256x192 hevc (crf 18); model=v2 (x4) device=cpu "
                        "backend=torch precision=fp32 tile=0 reset_interval=48 warmup=4 scene_threshold=0.15")
    assert "5/5" in lines[1] and "frame/s" in lines[1]
    assert lines[2].startswith(f"animesr upscale: wrote 5 frames to {out} in ")
    info = _probe(out)
    assert info["size"] == (256, 192) and info["frames"] == 5 and info["rate"] == Fraction(24000, 1001)
    assert info["codec"] == "hevc" and info["audio_codec"] == "aac"


def test_frames_folder(weights_v2, tmp_path):
    rng = np.random.default_rng(0)
    src = tmp_path / "lr"
    src.mkdir()
    for i in (1, 2, 10):  # natural order: 1, 2, 10
        Image.fromarray(rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)).save(src / f"f{i}.png")
    dst = tmp_path / "sr"
    argv = ["frames", str(src), str(dst), "--device", "cpu", "-q"]
    assert main(argv) == 0
    assert _listing(dst) == ["f1.png", "f10.png", "f2.png"]
    assert Image.open(dst / "f10.png").size == (80, 96)
    assert main(argv) == 1  # not empty now
    assert main([*argv, "--overwrite", "--outscale", "2"]) == 0
    assert Image.open(dst / "f1.png").size == (40, 48)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lr", "sr"]


@pytest.mark.parametrize("outscale", [2.0, 3.0])
def test_outscale_resizes_as_the_filter_does(core, weights_v2, tmp_path, outscale):
    """One kernel: `animesr --outscale` and core.animesr.Upscale(outscale=) give the same pictures (Spline36)."""
    frames = np.rint(smooth_frames(4) * 255) / 255  # what an 8-bit PNG holds
    src = tmp_path / "lr"
    src.mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(to_uint(np.moveaxis(f, 0, -1), 8)).save(src / f"{i}.png")
    assert main(["frames", str(src), str(tmp_path / "sr"), "--device", "cpu", "--outscale", str(outscale), "-q"]) == 0
    up = core.animesr.Upscale(clip_from(core, frames), device="cpu", outscale=outscale)
    for i in range(len(frames)):
        cli = np.asarray(Image.open(tmp_path / "sr" / f"{i}.png"))
        ref = to_uint(np.moveaxis(planes(up.get_frame(i)), 0, -1), 8)
        assert cli.shape == ref.shape == (round(16 * outscale), round(24 * outscale), 3)
        assert np.abs(cli.astype(int) - ref).max() <= 1, i


# ---------------------------------------------------------------------------------------------- streams and tags

_ASS_HEADER = """[Script Info]
ScriptType: v4.00+
PlayResX: 64
PlayResY: 48

[V4+ Styles]
Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, BackColour, Bold, Italic, \
Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, Shadow, Alignment, MarginL, MarginR, \
MarginV, Encoding
Style: Default,Test Sans,20,&H00FFFFFF,&H000000FF,&H00000000,&H00000000,0,0,0,0,100,100,0,0,1,1,0,2,10,10,10,1

[Events]
Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text
"""
_FONT = b"\x00\x01\x00\x00 not really a font, but an attachment's bytes all the same"
_D = av.stream.Disposition


def _write_tagged_mkv(path: Path, *, num_frames: int = 48) -> None:
    """What an anime release looks like: Japanese and English audio with titles and flags, forced ASS signs with
    their font attached, chapters and a title."""
    rate = Fraction(24000, 1001)
    with av.open(str(path), "w") as out:
        out.metadata["title"] = "Episode 1"
        v = out.add_stream("libx264", rate=rate)
        v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        v.metadata["language"] = "jpn"
        audio = []
        for lang, title, disp in (("jpn", "Japanese 2.0", _D.default), ("eng", "English commentary", _D.comment)):
            a = out.add_stream("aac", rate=48000)
            a.layout = "stereo"
            a.metadata["language"], a.metadata["title"] = lang, title
            a.disposition = disp
            audio.append(a)
        s = out.add_stream("ass")
        s.codec_context.extradata = _ASS_HEADER.encode()
        s.metadata["language"], s.metadata["title"] = "eng", "Signs"
        s.disposition = _D.default | _D.forced
        out.add_attachment("TestSans.ttf", "font/ttf", _FONT)
        out.set_chapters([
            {"id": 1, "start": 0, "end": 1000, "time_base": Fraction(1, 1000), "metadata": {"title": "Opening"}},
            {"id": 2, "start": 1000, "end": 2002, "time_base": Fraction(1, 1000), "metadata": {"title": "Part A"}},
        ])
        yy, xx = np.mgrid[0:48, 0:64]
        for i in range(num_frames):
            img = np.stack([(xx * 4 + i * 3) % 256, (yy * 5) % 256, np.full_like(xx, (i * 11) % 256)], -1)
            vf = av.VideoFrame.from_ndarray(img.astype(np.uint8), format="rgb24")
            vf.pts = i
            out.mux(v.encode(vf))
        out.mux(v.encode(None))
        n = int(48000 * num_frames / rate)
        for k, a in enumerate(audio):
            tone = (0.2 * np.sin(2 * np.pi * (440 + 220 * k) * np.arange(n) / 48000)).astype(np.float32)
            for j in range(0, n, 1024):
                af = av.AudioFrame.from_ndarray(np.stack([tone[j : j + 1024]] * 2), format="fltp", layout="stereo")
                af.sample_rate, af.pts = 48000, j
                out.mux(a.encode(af))
            out.mux(a.encode(None))
        for k, (t0, t1, text) in enumerate(((100, 900, "Hello"), (1200, 1900, "World"))):
            p = av.Packet(f"{k},0,Default,,0,0,0,,{text}".encode())
            p.pts = p.dts = t0
            p.duration, p.time_base, p.stream = t1 - t0, Fraction(1, 1000), s
            out.mux(p)


@pytest.fixture(scope="session")
def tagged_mkv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tagged") / "episode.mkv"
    _write_tagged_mkv(path)
    return path


def _layout(path: Path) -> dict:
    """Everything a player shows besides the pictures: streams in order with tags and flags, chapters, title."""
    with av.open(str(path)) as c:
        streams = []
        for s in c.streams:
            if s.discard == av.stream.Discard.all:  # MP4's chapter track, read back as chapters
                continue
            if s.type == "attachment":
                streams.append(("attachment", s.metadata.get("filename"), s.metadata.get("mimetype"), s.data))
            else:
                tags = {k: v for k, v in s.metadata.items() if k in ("language", "title")}
                streams.append((s.type, s.codec_context.name, tags, int(s.disposition)))
        chapters = [(round(float(ch["start"] * ch["time_base"]), 3), round(float(ch["end"] * ch["time_base"]), 3),
                     ch["metadata"].get("title")) for ch in c.chapters()]
        subs = []
        if c.streams.subtitles:
            st = c.streams.subtitles[0]
            subs = [(round(float(p.pts * st.time_base), 3), round(float(p.duration * st.time_base), 3), bytes(p))
                    for p in c.demux(st) if p.pts is not None]
        return {"title": c.metadata.get("title"), "streams": streams, "chapters": chapters, "subtitles": subs}


def test_mkv_keeps_stream_order_tags_dispositions_chapters_and_attachments(tagged_mkv, tmp_path):
    out = tmp_path / "out.mkv"
    summary = transcode_video(tagged_mkv, out, _identity, encoding=FAST, scale=1)
    src, dst = _layout(tagged_mkv), _layout(out)
    assert summary["dropped"] == []
    assert dst["streams"][0][:2] == ("video", "h264")
    assert dst == src  # video first, then jpn (default), eng (comment), ASS signs (default+forced), the font
    assert [s[0] for s in dst["streams"]] == ["video", "audio", "audio", "subtitle", "attachment"]
    assert dst["streams"][4][3] == _FONT
    assert dst["chapters"] == [(0.0, 1.0, "Opening"), (1.0, 2.002, "Part A")]
    assert _audio_packets(out) == _audio_packets(tagged_mkv)


def test_frame_range_cuts_chapters_and_subtitle_events(tagged_mkv, tmp_path):
    out = tmp_path / "part.mkv"
    transcode_video(tagged_mkv, out, _identity, encoding=FAST, scale=1, frames=FrameRange(10, 30))
    t0, t1 = 10 * 1001 / 24000, 30 * 1001 / 24000  # 0.417 s and 1.251 s
    info = _layout(out)
    assert [s[0] for s in info["streams"]] == ["video", "audio", "audio", "subtitle", "attachment"]
    ms = pytest.approx  # Matroska keeps milliseconds
    assert info["chapters"] == [(0.0, ms(1.0 - t0, abs=2e-3), "Opening"), (ms(1.0 - t0, abs=2e-3),
                                                                           ms(t1 - t0, abs=2e-3), "Part A")]
    # "Hello" (0.1-0.9 s) is on screen at the cut: it stays, from 0; "World" starts at 1.2 s, inside the range
    assert info["subtitles"] == [(0.0, ms(0.9 - t0, abs=2e-3), b"0,0,Default,,0,0,0,,Hello"),
                                 (ms(1.2 - t0, abs=2e-3), 0.7, b"1,0,Default,,0,0,0,,World")]


def test_track_selection(tagged_mkv, tmp_path):
    out = tmp_path / "eng.mkv"
    transcode_video(tagged_mkv, out, _identity, encoding=FAST, scale=1, tracks=Tracks(audio=("eng",), subtitles=()))
    streams = _layout(out)["streams"]
    assert [(s[0], s[2].get("language") if s[0] != "attachment" else None) for s in streams] == [
        ("video", "jpn"), ("audio", "eng"), ("attachment", None)]
    with pytest.raises(VideoError, match=r"no audio track 2 in .* \(audio tracks: 0: aac, jpn, \"Japanese 2.0\"; "
                                         r"1: aac, eng, \"English commentary\"\)"):
        transcode_video(tagged_mkv, tmp_path / "x.mkv", _identity, encoding=FAST, scale=1, tracks=Tracks(audio=(2,)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eng.mkv"]


def test_join_segments_equals_one_run(tagged_mkv, tmp_path):
    """Chunked runs (vsanimesr.distributed) encode parts with segment=True and join them: the same file as one run."""
    lossless = Encoding("h264", preset="ultrafast", params="qp=0")
    whole = tmp_path / "whole.mkv"
    transcode_video(tagged_mkv, whole, _identity, encoding=lossless, scale=1, frames=FrameRange(5, 44))
    parts = []
    for a, b in ((5, 17), (17, 30), (30, 44)):
        parts.append(tmp_path / f"part{a}.nut")  # .nut keeps the source's time base: exact timestamps
        transcode_video(tagged_mkv, parts[-1], _identity, encoding=lossless, scale=1, frames=FrameRange(a, b),
                        segment=True)
    joined = tmp_path / "joined.mkv"
    summary = join_segments(tagged_mkv, parts, joined, frames=FrameRange(5, 44))
    assert summary["frames"] == 39
    assert _layout(joined) == _layout(whole)

    def frames(path: Path) -> list:
        with av.open(str(path)) as c:
            return [(f.pts, f.to_ndarray().tobytes()) for f in c.decode(video=0)]

    assert frames(joined) == frames(whole)
    assert _audio_packets(joined) == _audio_packets(whole)
    with pytest.raises(VideoError, match="not after the previous one"):
        join_segments(tagged_mkv, [parts[1], parts[0]], tmp_path / "bad.mkv")


def test_video_encoder_replaces_impossible_decoding_timestamps(tmp_path):
    """x265 leaves the dts of a clip shorter than its B-frame delay uninitialised (MP4 then failed now and then with
    "pts/dts pair unsupported"): VideoEncoder passes good timestamps through and replaces impossible ones."""
    from fractions import Fraction

    tb = Fraction(1, 1000)
    frames = [np.full((32, 48, 3), v, np.float32) for v in (0.2, 0.4, 0.6, 0.8)]
    with av.open(str(tmp_path / "x.mp4"), "w") as out:
        st = out.add_stream("libx264", rate=24)
        st.height, st.width, st.pix_fmt, st.time_base = 32, 48, "yuv420p", tb
        enc = VideoEncoder(st, CODECS["h264"], (32, 48), rate=Fraction(24), time_base=tb)
        packets = [p for i, y in enumerate(frames) for p in enc.encode(y, round(i * 1000 / 24))] + enc.flush()
        good = [(p.pts, p.dts) for p in packets]
        assert all(d is not None and d <= p for p, d in good) and [d for _, d in good] == sorted({d for _, d in good})
        enc2 = VideoEncoder(st, CODECS["h264"], (32, 48), rate=Fraction(24), time_base=tb)
        garbage = (-94213205076608, None, 10**12, -4)  # long before, missing, after the pts, not after the previous
        for p, d in zip(packets, garbage, strict=True):
            p.dts = d
        enc2._checked(packets)
        assert [(p.pts, p.dts) for p in packets] == [(good[0][0], good[0][0])] + [
            (p, good[0][0] + k) for k, (p, _) in enumerate(good[1:], 1)]


def test_mp4_says_what_it_cannot_hold(tagged_mkv, weights_v2, tmp_path, capsys):
    out = tmp_path / "out.mp4"
    assert main(["upscale", str(tagged_mkv), str(out), "--device", "cpu", "--frames", ":2", "--preset",
                 "ultrafast", "-q"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0] == ('animesr upscale: not kept: subtitle stream #3 (ssa, eng, "Signs"): the mp4 format cannot '
                      "hold it ('mp4' format does not support 'ssa' codec)")
    assert err[1] == "animesr upscale: not kept: attachment stream #4 (TestSans.ttf): only Matroska (.mkv) holds " \
                     "attachments"
    assert err[2].startswith("animesr upscale: wrote 2 frames to ") and len(err) == 3
    streams = _layout(out)["streams"]
    assert [(s[0], s[2].get("language"), s[3]) for s in streams] == [
        ("video", "jpn", int(_D.default)), ("audio", "jpn", int(_D.default)), ("audio", "eng", int(_D.comment))]


# ---------------------------------------------------------------------------------------------- messages


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "\r" not in err and "frame/s" not in err, f"a progress bar before the error: {err!r}"
    lines = err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].count("animesr") == 1, lines[0]  # one prefix
    return lines[0]


def test_frames_past_the_end_say_the_real_length(sample_video, tagged_mkv, tmp_path, capsys):
    assert main(["upscale", str(sample_video), str(tmp_path / "x.mkv"), "--frames", "500:510"]) == 1
    assert _one_error_line(capsys) == (f"animesr upscale: error: frames 500:510 start past the end of "
                                       f"'{sample_video}', which has 48 frames (0 to 47)")
    # Matroska has no frame count in its header: the length comes from the track's duration
    assert main(["upscale", str(tagged_mkv), str(tmp_path / "x.mkv"), "--frames", "500:"]) == 1
    assert "which has about 48 frames (0 to 47)" in _one_error_line(capsys)
    assert _listing(tmp_path) == []


def test_checks_come_before_the_engine_and_the_progress_bar(sample_video, tmp_path, capsys):
    out = str(tmp_path / "x.mkv")
    cases = [
        (["--x265-params", "nosuch=1"], "--x265-params 'nosuch=1': libx265 refused it (Unknown option: nosuch)"),
        (["--preset", "fastest"], "--preset 'fastest': libx265 refused it"),
        (["--codec", "h264", "--tune", "cartoon"], "--tune 'cartoon': not one of libx264's tunes (animation, film"),
        (["--crop", "100:20"], "crop 100:20 does not fit the 64x48 input"),
        (["--audio", "jpn"], "no audio track 'jpn' in"),
        (["--model", "v9"], "--model v9: must be 'v1', 'v2' or the path of a weight file"),
    ]
    if not __import__("torch").cuda.is_available():
        cases.append((["--device", "cuda"], "--device cuda: CUDA is not available"))
    for extra, message in cases:
        assert main(["upscale", str(sample_video), out, *extra]) == 1, extra
        line = _one_error_line(capsys)
        assert line.startswith("animesr upscale: error: " + message), line
    assert _listing(tmp_path) == []


def test_frames_into_a_non_empty_folder_fails_before_any_work(tmp_path, capsys):
    src, dst = tmp_path / "lr", tmp_path / "sr"
    src.mkdir()
    dst.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(src / "a.png")
    (dst / "keep.txt").write_text("mine")
    assert main(["frames", str(src), str(dst)]) == 1
    assert _one_error_line(capsys) == (f"animesr frames: error: output folder '{dst}' is not empty "
                                       "(pass --overwrite to replace it)")
    assert main(["frames", str(src), str(tmp_path / "new"), "--frames", "3:"]) == 1
    assert _one_error_line(capsys).endswith("which has 1 images (0 to 0)")


def test_chunked_run_equals_one_run(tagged_mkv, weights_v2, tmp_path, capsys):
    """--workers 0: the chunks of vsanimesr.distributed in this process; with FFV1 the same frames as one run, and the
    same streams, tags, chapters and attachments (joined by video.join_segments)."""
    common = ["--device", "cpu", "--codec", "ffv1", "--frames", ":16", "--reset-interval", "4", "--warmup", "2",
              "--audio", "jpn", "-q"]
    one, chunked = tmp_path / "one.mkv", tmp_path / "chunked.mkv"
    assert main(["upscale", str(tagged_mkv), str(one), *common]) == 0
    assert main(["upscale", str(tagged_mkv), str(chunked), *common, "--workers", "0", "--chunk-frames", "8"]) == 0
    assert _layout(chunked) == _layout(one)
    assert [s[0] for s in _layout(one)["streams"]] == ["video", "audio", "subtitle", "attachment"]

    def frames(path: Path) -> list:
        with av.open(str(path)) as c:
            return [(f.pts, f.to_ndarray().tobytes()) for f in c.decode(video=0)]

    assert len(frames(one)) == 16 and frames(chunked) == frames(one)
    assert _audio_packets(chunked) == _audio_packets(one)
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["upscale", str(tagged_mkv), str(tmp_path / "x.mkv"), "--workers", "-1"])
    assert "argument --workers: must be >= 0" in capsys.readouterr().err

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
from PIL import Image

from vsanimesr.cli import build_parser, main
from vsanimesr.video import (
    FrameRange,
    VideoError,
    parse_crop,
    parse_frame_range,
    target_size,
    to_uint,
    transcode_video,
)

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "2"}


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
    rate = Fraction(24000, 1001)
    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=rate)
        v.width, v.height, v.pix_fmt = width, height, "yuv420p"
        a = out.add_stream("aac", rate=48000)
        a.layout = "stereo"
        yy, xx = np.mgrid[0:height, 0:width]
        for i in range(num_frames):
            img = np.stack([(xx * 4 + i * 3) % 256, (yy * 5) % 256, np.full_like(xx, (i * 11) % 256)], -1)
            vf = av.VideoFrame.from_ndarray(img.astype(np.uint8), format="rgb24")
            vf.pts = i
            out.mux(v.encode(vf))
        out.mux(v.encode(None))
        n = int(48000 * num_frames / rate)
        tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(n) / 48000)).astype(np.float32)
        for k in range(0, n, 1024):
            af = av.AudioFrame.from_ndarray(np.stack([tone[k : k + 1024]] * 2), format="fltp", layout="stereo")
            af.sample_rate, af.pts = 48000, k
            out.mux(a.encode(af))
        out.mux(a.encode(None))


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
            for flag in action.option_strings:
                assert flag in text, f"{command} --help does not mention {flag}"
    for flag in ("--model", "--device", "--fp16", "--outscale", "--codec", "--crf", "--tile", "--frames", "--crop"):
        assert flag in build_parser()._subparsers._group_actions[0].choices["upscale"].format_help()


def test_parsers_reject_bad_values():
    assert parse_frame_range("5:9") == FrameRange(5, 9)
    assert parse_frame_range(":9") == FrameRange(0, 9)
    assert parse_frame_range("5:") == FrameRange(5, None)
    for bad in ("5", "9:5", "a:b", "-1:3"):
        with pytest.raises(ValueError, match="parse_frame_range"):
            parse_frame_range(bad)
    assert parse_crop("16:8:2:4").x == 2
    for bad in ("16", "0:8", "16:8:2", "a:b"):
        with pytest.raises(ValueError, match="parse_crop"):
            parse_crop(bad)
    with pytest.raises(SystemExit):
        main(["upscale", "a.mp4", "b.mp4", "--frames", "9:5"])


def test_sizes_and_quantisation():
    assert target_size(120, 160, 4) == (480, 640)
    assert target_size(100, 50, 1.01, even=True) == (102, 50)  # 101 -> 102: 4:2:0 needs even sizes
    x = np.array([-0.2, 0.0, 0.5, 1.0, 1.3], np.float32)
    assert to_uint(x, 8).tolist() == [0, 0, 128, 255, 255]
    assert to_uint(x, 10).tolist() == [0, 0, 32768, 65535, 65535]


# ---------------------------------------------------------------------------------------------- plumbing, fast


def test_whole_video_keeps_timestamps_rate_and_audio(video, tmp_path):
    out = tmp_path / "same.mkv"
    summary = transcode_video(video, out, _identity, codec="h264", preset="ultrafast", scale=1)
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
    transcode_video(video, out, _identity, codec="h264", preset="ultrafast", scale=1, frames=FrameRange(10, 34))
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
        transcode_video(cut, out_dir / "x.mkv", _identity, codec="h264", preset="ultrafast", scale=1)
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
from vsanimesr.video import VideoError, transcode_video
def ident(frames):
    for f in frames:
        yield f.astype(np.float32) / 255
try:
    transcode_video(sys.argv[1], sys.argv[2], ident, codec="h264", preset="ultrafast", scale=1)
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
@pytest.mark.parametrize("delay", [0.0, 1.0], ids=["during-imports", "later"])
def test_ctrl_c_exits_130_and_removes_partial_file(tmp_path, entry, delay):
    src = tmp_path / "long.mp4"
    _write_sample(src, num_frames=600)  # long enough to be still running a second after start on any machine
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    script = Path(sys.executable).parent / "animesr"
    if entry == "console-script" and not script.exists():
        pytest.skip(f"{script} is not installed (run `make test`)")
    prog = [str(script)] if entry == "console-script" else [sys.executable, "-m", "vsanimesr.cli"]
    cmd = [*prog, "upscale", str(src), str(out_dir / "x.mp4"), "--device", "cpu", "-q"]
    # A shell without job control starts background jobs with SIGINT ignored; restore the default for the child.
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 60
        while not any(out_dir.iterdir()):  # the temporary file appears before torch and the engine load
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else ""
            time.sleep(0.01)
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in err
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


def test_upscale_sample_4x(sample_video, weights_v2, tmp_path):
    out = tmp_path / "x4.mkv"
    assert main(["upscale", str(sample_video), str(out), "--device", "cpu", "--frames", ":5", "-q"]) == 0
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

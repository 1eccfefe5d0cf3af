"""Chunked upscaling on Ray (vsanimesr/distributed.py) and chunked vspipe runs: frame-exact with one linear run.

The clip is real frames drawn procedurally (two cartoons, so there is a scene cut at frame CUT), 32x24, H.264 with
B-frames and a keyframe every 10 frames (so chunks really seek), with an AAC track. Restarts every 4 frames and
chunks of 8 frames give 5 chunks with a periodic restart inside each. Every output is FFV1 (lossless), so "the same
result" is checked bit for bit on the decoded frames, with their count and timestamps.

Ray runs locally, on the loopback interface, started and stopped by the tests (bounded by pytest-timeout).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from vsanimesr.distributed import ChunkError, index_video, plan_chunks, upscale_video
from vsanimesr.options import Options
from vsanimesr.video import Encoding, FrameRange

N, CUT, H, W = 40, 19, 24, 32
OPTS = Options(device="cpu", reset_interval=4, warmup=2)
CHUNK = 8  # two restart periods per chunk: 5 chunks, a periodic restart inside each, the cut inside chunk 2


def write_clip(path: Path, *, n: int = N, cut: int = CUT, height: int = H, width: int = W) -> None:
    """Two procedural cartoons (a scene cut at ``cut``), drawn at 4x and averaged down, H.264 + AAC at 23.976 fps."""
    from training.synthetic import make_synthetic_cartoon_clip

    shots = [make_synthetic_cartoon_clip(k, 4 * height, 4 * width, rng=np.random.default_rng(seed))
             for k, seed in ((cut, 1), (n - cut, 2))]
    hr = np.concatenate(shots).astype(np.float32)
    lr = hr.reshape(n, height, 4, width, 4, 3).mean(axis=(2, 4)).round().astype(np.uint8)
    rate = Fraction(24000, 1001)
    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=rate)
        v.width, v.height, v.pix_fmt = width, height, "yuv420p"
        v.options = {"crf": "12", "x264-params": "keyint=10:min-keyint=10:bframes=2:scenecut=0:log-level=error"}
        a = out.add_stream("aac", rate=48000)
        a.layout = "stereo"
        for i, img in enumerate(lr):
            vf = av.VideoFrame.from_ndarray(img, format="rgb24")
            vf.pts = i
            out.mux(v.encode(vf))
        out.mux(v.encode(None))
        samples = int(48000 * n / rate)
        tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(samples) / 48000)).astype(np.float32)
        for k in range(0, samples, 1024):
            af = av.AudioFrame.from_ndarray(np.stack([tone[k : k + 1024]] * 2), format="fltp", layout="stereo")
            af.sample_rate, af.pts = 48000, k
            out.mux(a.encode(af))
        out.mux(a.encode(None))


def decode(path: Path) -> tuple[list[Fraction], np.ndarray, int]:
    """Timestamps (seconds) and 10-bit YUV planes of every video frame, and the number of audio packets."""
    with av.open(str(path)) as c:
        frames = [(f.pts * f.time_base, f.to_ndarray(format="yuv420p10le")) for f in c.decode(video=0)]
    with av.open(str(path)) as c:
        audio = sum(1 for p in c.demux(audio=0) if p.size) if c.streams.audio else 0
    return [t for t, _ in frames], np.stack([f for _, f in frames]), audio


def assert_same_video(got: Path, want: Path) -> None:
    t_got, f_got, a_got = decode(got)
    t_want, f_want, a_want = decode(want)
    assert len(t_got) == len(t_want)
    assert t_got == t_want
    assert np.array_equal(f_got, f_want), f"{int((f_got != f_want).sum())} samples differ"
    assert a_got == a_want > 0


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    write_clip(path)
    return path


def single_process(src: Path, dest: Path, *, frames: FrameRange | None = None) -> Path:
    """The single-process path (what ``animesr upscale`` runs), with one torch thread as each Ray worker has: CPU
    kernels may sum in another order with another thread count."""
    from vsanimesr.engine import AnimeSR
    from vsanimesr.video import transcode_video

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        transcode_video(src, dest, AnimeSR(OPTS).stream, encoding=Encoding("ffv1"), frames=frames or FrameRange())
    finally:
        torch.set_num_threads(threads)
    return dest


@pytest.fixture(scope="module")
def reference(clip, tmp_path_factory) -> Path:
    return single_process(clip, tmp_path_factory.mktemp("ref") / "ref.mkv")


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray instance for this module's in-process runs (upscale_video uses a running one and leaves it)."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # Ray's single-machine switch: loopback only
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=100 << 20, log_to_driver=False)
    yield ray
    ray.shutdown()


# ---------------------------------------------------------------------------------------------- the plan


def test_plan_chunks_are_whole_periods_whose_windows_they_read():
    chunks = plan_chunks(N, OPTS, CHUNK)
    assert [(c.start, c.end) for c in chunks] == [(0, 8), (8, 16), (16, 24), (24, 32), (32, 40)]
    assert [(c.first, c.last) for c in chunks] == [(0, 8), (5, 16), (13, 24), (21, 32), (29, 39)]
    for c in chunks:
        for n in range(c.start, c.end):
            lo, hi = OPTS.window(n, N)
            assert c.first <= lo and hi <= c.last, (c, n)
    assert [len(c) for c in plan_chunks(N, OPTS, 10)] == [8] * 5  # 10 frames round to 2 periods of 4
    assert [len(c) for c in plan_chunks(10, OPTS, 1)] == [4, 4, 2]  # at least one period
    one = plan_chunks(N, OPTS.replace(reset_interval=0), CHUNK)
    assert [(c.start, c.end, c.first, c.last) for c in one] == [(0, N, 0, N - 1)]
    with pytest.raises(ValueError, match="plan_chunks: chunk_frames must be a positive integer, got 0"):
        plan_chunks(N, OPTS, 0)


def test_index_matches_decoding_and_seeks_land_on_the_frame(clip):
    index = index_video(clip)
    with av.open(str(clip)) as c:
        decoded = [(f.pts, f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]
    assert list(index.pts) == [p for p, _ in decoded]
    assert index.seekable and index.keyframes == (0, 10, 20, 30)
    assert (index.width, index.height, index.rate) == (W, H, Fraction(24000, 1001))
    assert index.seek_points(25) == [index.pts[20], index.pts[10], None]


# ---------------------------------------------------------------------------------------------- runs on Ray


@pytest.mark.slow
def test_killed_worker_is_retried_and_the_output_is_unchanged(clip, reference, ray_local, tmp_path):
    """Kill the worker that holds a chunk, by its pid, while it writes its segment; Ray retries the chunk."""
    work = tmp_path / "work"
    killed: list[tuple[str, int]] = []

    def killer() -> None:
        deadline = time.monotonic() + 300
        while not killed and time.monotonic() < deadline:
            for pid_file in sorted((work / "running").glob("chunk_*.pid")) if (work / "running").is_dir() else []:
                name = pid_file.stem
                partial = list((work / "segments").glob(f".{name}.*.partial.*"))
                if partial and partial[0].stat().st_size > 0:  # mid-chunk: frames are being written
                    pid = int(pid_file.read_text())
                    os.kill(pid, signal.SIGKILL)
                    killed.append((name, pid))
                    break
            time.sleep(0.02)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    summary = upscale_video(clip, tmp_path / "out.mkv", OPTS, workers=2, threads=1, chunk_frames=CHUNK,
                            encoding=Encoding("ffv1"), work_dir=work)
    t.join()
    assert killed, "no worker was caught mid-chunk"
    index = int(killed[0][0].removeprefix("chunk_"))
    result = summary["results"][index]
    assert result["attempts"] == 2 and result["pid"] != killed[0][1]
    assert summary["chunks"] == 5 and summary["frames"] == N
    assert_same_video(tmp_path / "out.mkv", reference)


@pytest.mark.slow
def test_failing_chunk_names_its_frames_keeps_the_others_and_resumes(clip, ray_local, tmp_path):
    """A chunk that fails on every attempt fails the run with one line naming its frames; the finished chunks stay,
    and the same call afterwards redoes only that chunk. With a frame range, as ``--frames 3:37``."""
    frames = FrameRange(3, 37)  # 34 frames: chunks 0-7, 8-15, 16-23, 24-31, 32-33 of the range
    want = single_process(clip, tmp_path / "ref.mkv", frames=frames)
    work = tmp_path / "work"
    blocker = work / "segments" / "chunk_00002.nut"
    blocker.mkdir(parents=True)  # the segment cannot be renamed into place: every attempt fails
    kw = dict(workers=2, threads=1, chunk_frames=CHUNK, encoding=Encoding("ffv1"), work_dir=work, frames=frames)
    with pytest.raises(ChunkError) as e:
        upscale_video(clip, tmp_path / "out.mkv", OPTS, retries=1, **kw)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("frames 16-23 failed after 2 attempts: ") and "Is a directory" in msg, msg
    assert "4 of 5 chunks are finished and kept" in msg, msg
    assert not (tmp_path / "out.mkv").exists()
    blocker.rmdir()
    summary = upscale_video(clip, tmp_path / "out.mkv", OPTS, **kw)
    assert summary["reused"] == 4 and list(summary["results"]) == [2]
    assert_same_video(tmp_path / "out.mkv", want)


# ---------------------------------------------------------------------------------------------- the command line

REPO = Path(__file__).resolve().parents[1]
ENGINE_FLAGS = ["--warmup", "2", "--device", "cpu", "--threads", "1", "--codec", "ffv1", "--reset-interval", "4"]


def animesr(*args: str, **kw) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "vsanimesr.cli", "upscale", *args], capture_output=True, text=True,
                          env=env, timeout=600, **kw)


@pytest.mark.slow
def test_cli_workers_give_the_single_process_output(clip, tmp_path):
    """``animesr upscale --workers 2`` (a local Ray instance started and stopped by the command) and the plain
    single-process command, both lossless: the same frames bit for bit, the same count and timestamps, the audio."""
    one = animesr(str(clip), str(tmp_path / "one.mkv"), *ENGINE_FLAGS)
    assert one.returncode == 0, one.stderr
    two = animesr(str(clip), str(tmp_path / "two.mkv"), *ENGINE_FLAGS, "--workers", "2", "--chunk-frames", str(CHUNK))
    assert two.returncode == 0, two.stderr
    assert "chunks of about 8 frames on 2 local Ray workers" in two.stderr
    assert f"{N}/{N}" in two.stderr.replace("\r", "\n").splitlines()[-2]  # one bar over all frames, to the end
    assert two.stderr.splitlines()[-1].startswith(f"animesr upscale: wrote {N} frames to ")
    assert not list(tmp_path.glob(".*chunks"))  # the default work dir is gone after success
    assert_same_video(tmp_path / "two.mkv", tmp_path / "one.mkv")


@pytest.mark.slow
def test_cli_ctrl_c_keeps_chunks_resume_skips_them(clip, reference, ray_local, tmp_path):
    """On a running cluster (``--address``, this module's Ray instance): Ctrl-C after some chunks exits 130 and keeps
    them; other settings or another input in that work dir are refused before any work; the same command then
    redoes only the rest (finished segments untouched) and gives one run's output."""
    address = ray_local.get_runtime_context().gcs_address
    work = tmp_path / "work"
    cmd = [str(clip), str(tmp_path / "out.mkv"), *ENGINE_FLAGS, "--address", address, "--chunk-frames", str(CHUNK),
           "--work-dir", str(work)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "vsanimesr.cli", "upscale", *cmd], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    done: dict = {}
    while time.monotonic() < deadline and proc.poll() is None:
        if (work / "manifest.json").exists():
            with contextlib.suppress(ValueError):
                done = json.loads((work / "manifest.json").read_text())["done"]
            if len(done) >= 2:
                break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    kept = json.loads((work / "manifest.json").read_text())["done"]
    assert 2 <= len(kept) < 5, err
    assert f"interrupted: {len(kept)} of 5 chunks are finished and kept in {work}" in err
    assert not (tmp_path / "out.mkv").exists()
    # The recorded chunks (a segment finished after the driver's last record is not trusted and is redone).
    stamps = {p.name: p.stat().st_mtime_ns for p in (work / "segments").glob("chunk_*")
              if str(int(p.stem.removeprefix("chunk_"))) in kept}
    assert len(stamps) == len(kept)

    other = animesr(*cmd, "--reset-interval", "8")  # the last one given counts
    assert other.returncode == 1
    assert other.stderr.strip().splitlines()[-1].startswith(
        f"animesr upscale: error: work dir {str(work)!r} holds another job (differs in: option.reset_interval 4 -> 8")
    moved = tmp_path / "moved.mp4"
    write_clip(moved, n=N - 1)
    other = animesr(str(moved), *cmd[1:])
    assert other.returncode == 1 and "differs in: input path" in other.stderr, other.stderr

    again = animesr(*cmd)
    assert again.returncode == 0, again.stderr
    assert {p: (work / "segments" / p).stat().st_mtime_ns for p in stamps} == stamps
    assert len(json.loads((work / "manifest.json").read_text())["done"]) == 5
    assert_same_video(tmp_path / "out.mkv", reference)


# ---------------------------------------------------------------------------------------------- vspipe -s/-e

_CHUNK_VPY = """
import numpy as np
import torch
import vapoursynth as vs
import vsanimesr

torch.set_num_threads(1)  # the same in every vspipe process (CPU kernels may sum in another order otherwise)
core = vs.core
data = np.load({npy!r})  # (n, H, W, 3) uint8 RGB
rgb = core.std.BlankClip(width=data.shape[2], height=data.shape[1], format=vs.RGB24, length=data.shape[0])

def fill(n, f):
    f = f.copy()
    for p in range(3):
        np.asarray(f[p])[:] = data[n, :, :, p]
    return f

src = core.resize.Bicubic(core.std.ModifyFrame(rgb, rgb, fill), format=vs.YUV420P8, matrix_s="170m")
vsanimesr.upscale(src, device="cpu", reset_interval=4, warmup=2, format=vs.YUV420P10).set_output()
"""


def test_vspipe_chunks_equal_one_run(core, tmp_path):
    """``vspipe -s A -e B`` pieces of an upscale script, concatenated, are byte for byte one run: any split works
    (the filter's output does not depend on request order); splits at restart points cost no extra steps."""
    import subprocess
    import sys

    from training.synthetic import make_synthetic_cartoon_clip

    n, cut = 14, 6
    frames = np.concatenate([make_synthetic_cartoon_clip(k, H, W, rng=np.random.default_rng(seed))
                             for k, seed in ((cut, 3), (n - cut, 4))])
    np.save(tmp_path / "clip.npy", frames)
    script = tmp_path / "up.vpy"
    script.write_text(_CHUNK_VPY.format(npy=str(tmp_path / "clip.npy")))
    vspipe = Path(sys.executable).with_name("vspipe")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]), OMP_NUM_THREADS="1")

    def run(*args: str, name: str) -> bytes:
        out = tmp_path / name
        proc = subprocess.run([str(vspipe), *args, str(script), str(out)], capture_output=True, text=True, env=env,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr
        return out.read_bytes()

    whole = run(name="whole.raw")
    assert len(whole) == n * (4 * H) * (4 * W) * 2 * 3 // 2  # YUV420P10: 2 bytes a sample, 1.5 samples a pixel
    # Pieces at restart points (0-3, 4-7) and across them (8-10 and 11-13 split the restart at 12).
    pieces = [run("-s", str(a), "-e", str(b), name=f"{a}-{b}.raw") for a, b in ((0, 3), (4, 7), (8, 10), (11, 13))]
    assert b"".join(pieces) == whole


# ---------------------------------------------------------------------------------------------- chunks without Ray


@pytest.mark.parametrize(("codec", "ext"), [("ffv1", "mkv"), ("hevc", "mp4"), ("h264", "mkv")])
def test_chunks_in_this_process_join_like_one_run(clip, tmp_path, codec, ext):
    """``workers=0`` runs the same chunks in this process (no Ray). Lossless: bit for bit. Lossy codecs: every
    segment is its own encode, so pictures differ within coding noise, but frame count, timestamps and the audio
    are those of one run, and the joined file decodes cleanly (no timestamp errors across segment boundaries)."""
    one = tmp_path / f"one.{ext}"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        from vsanimesr.engine import AnimeSR
        from vsanimesr.video import transcode_video

        transcode_video(clip, one, AnimeSR(OPTS).stream, encoding=Encoding(codec))
        summary = upscale_video(clip, tmp_path / f"chunked.{ext}", OPTS, workers=0, threads=1, chunk_frames=CHUNK,
                                encoding=Encoding(codec))
    finally:
        torch.set_num_threads(threads)
    assert summary["chunks"] == 5 and summary["frames"] == N
    assert not list(tmp_path.glob(".*chunks"))  # the default work dir goes away after success
    if codec == "ffv1":
        assert_same_video(tmp_path / f"chunked.{ext}", one)
        return
    t_got, f_got, a_got = decode(tmp_path / f"chunked.{ext}")
    t_want, f_want, a_want = decode(one)
    assert t_got == t_want and a_got == a_want > 0
    err = (f_got.astype(np.float64) - f_want) / 1023
    assert 10 * np.log10(1 / np.mean(err**2)) > 35

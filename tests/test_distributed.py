"""Chunked upscaling on Ray (vsanimesr/distributed.py) and chunked vspipe runs: frame-exact with one linear run.

The clip is real frames drawn procedurally (two cartoons, so there is a scene cut at frame CUT), 32x24, H.264 with
B-frames and a keyframe every 10 frames (so chunks really seek), with an AAC track. Restarts every 4 frames and
chunks of 8 frames give 5 chunks with a periodic restart inside each. Every output is FFV1 (lossless), so "the same
result" is checked bit for bit on the decoded frames, with their count and timestamps.

Ray runs on this machine on the loopback interface only: a local instance that ``animesr upscale --workers 2`` starts
and stops, and a cluster this module starts with ``ray start`` (its own port and token) for ``--address`` runs. No Ray
driver runs inside the pytest process; every Ray run is the ``animesr`` command in a process of its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
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
from conftest import write_h264_aac

from vsanimesr.distributed import index_video, plan_chunks, upscale_video
from vsanimesr.options import Options
from vsanimesr.video import Encoding, FrameRange

REPO = Path(__file__).resolve().parents[1]
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
    write_h264_aac(path, lr, options={"crf": "12", "x264-params": "keyint=10:min-keyint=10:bframes=2:scenecut=0:"
                                                               "log-level=error"})


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
def cluster(tmp_path_factory):
    """A running Ray cluster for ``--address`` (``ray start --head --block``, this module's own): loopback only, a
    token of its own, stopped at the end. Yields the address and the environment its clients need. No Ray driver
    ever runs inside the pytest process: every run here is the ``animesr`` command in a process of its own."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # Ray's single-machine switch: node address 127.0.0.1
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    head = subprocess.Popen(
        [str(Path(sys.executable).with_name("ray")), "start", "--head", f"--port={port}", "--num-cpus=2",
         "--object-store-memory=100000000", "--include-dashboard=false", "--disable-usage-stats", "--block"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines = []
    try:
        for line in head.stdout:  # bounded by the test timeout
            lines.append(line)
            if "Ray runtime started" in line:
                break
        else:
            pytest.fail("ray start did not start:\n" + "".join(lines[-20:]))
        threading.Thread(target=head.stdout.read, daemon=True).start()  # keep its pipe drained
        yield f"127.0.0.1:{port}", env
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # the group this fixture started: ray start, GCS, raylet, workers
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()


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


ENGINE_FLAGS = ["--warmup", "2", "--device", "cpu", "--threads", "1", "--codec", "ffv1", "--reset-interval", "4"]


def animesr(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``animesr upscale ARGS`` in a process of its own."""
    return subprocess.run([sys.executable, "-m", "vsanimesr.cli", "upscale", *args], capture_output=True, text=True,
                          env=env or {**os.environ, "PYTHONPATH": str(REPO)}, timeout=600)


@pytest.mark.slow
def test_killed_worker_is_retried_and_the_output_is_unchanged(clip, reference, cluster, tmp_path):
    """Kill the worker that holds a chunk, by its pid, while it writes its segment; Ray retries the chunk."""
    address, env = cluster
    work = tmp_path / "work"
    # Chunks of 16 frames (3 chunks) leave time to catch one in the middle.
    cmd = [str(clip), str(tmp_path / "out.mkv"), *ENGINE_FLAGS, "--address", address, "--chunk-frames", "16",
           "--work-dir", str(work), "-q"]
    proc = subprocess.Popen([sys.executable, "-m", "vsanimesr.cli", "upscale", *cmd], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    killed: list[tuple[str, int]] = []
    while not killed and proc.poll() is None:
        for pid_file in (work / "running").glob("chunk_*.pid"):
            name = pid_file.stem
            with contextlib.suppress(OSError, ValueError):  # files come and go while we look
                if any((work / "segments").glob(f".{name}.*.partial.*")):
                    pid = int(pid_file.read_text())  # mid-chunk: its segment is being written
                    os.kill(pid, signal.SIGKILL)
                    killed.append((name, pid))
                    break
        time.sleep(0.005)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert killed, "no worker was caught mid-chunk"
    done = json.loads((work / "manifest.json").read_text())["done"]
    result = done[str(int(killed[0][0].removeprefix("chunk_")))]
    assert result["attempts"] == 2 and result["pid"] != killed[0][1]
    assert sorted(done) == ["0", "1", "2"]
    assert_same_video(tmp_path / "out.mkv", reference)


@pytest.mark.slow
def test_failing_chunk_names_its_frames_keeps_the_others_and_resumes(clip, cluster, tmp_path):
    """A chunk that fails on every attempt fails the run with one line naming its frames; the finished chunks stay,
    and the same command afterwards redoes only that chunk. With a frame range (``--frames 3:37``)."""
    address, env = cluster
    frames = FrameRange(3, 37)  # 34 frames: chunks 0-7, 8-15, 16-23, 24-31, 32-33 of the range
    want = single_process(clip, tmp_path / "ref.mkv", frames=frames)
    work = tmp_path / "work"
    blocker = work / "segments" / "chunk_00002.nut"
    blocker.mkdir(parents=True)  # the segment cannot be renamed into place: every attempt fails
    cmd = [str(clip), str(tmp_path / "out.mkv"), *ENGINE_FLAGS, "--address", address, "--chunk-frames", str(CHUNK),
           "--work-dir", str(work), "--frames", "3:37"]
    run = animesr(*cmd, "--retries", "1", env=env)
    assert run.returncode == 1
    msg = run.stderr.strip().splitlines()[-1]
    assert msg.startswith("animesr upscale: error: frames 16-23 failed after 2 attempts: "), run.stderr
    assert "Is a directory" in msg and "4 of 5 chunks are finished and kept" in msg, msg
    assert not (tmp_path / "out.mkv").exists()
    kept = {p.name: p.stat().st_mtime_ns for p in (work / "segments").glob("chunk_*.nut") if p.is_file()}
    assert len(kept) == 4
    blocker.rmdir()
    run = animesr(*cmd, env=env)
    assert run.returncode == 0, run.stderr
    assert {p: (work / "segments" / p).stat().st_mtime_ns for p in kept} == kept  # only chunk 2 was redone
    assert_same_video(tmp_path / "out.mkv", want)


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
def test_cli_ctrl_c_keeps_chunks_resume_skips_them(clip, reference, cluster, tmp_path):
    """On a running cluster (``--address``): Ctrl-C after some chunks exits 130 and keeps them; other settings or
    another input in that work dir are refused before any work; the same command then redoes only the rest
    (finished segments untouched) and gives one run's output."""
    address, env = cluster
    work = tmp_path / "work"
    # Chunks of one period (10 chunks): the run is far from done when the first one is.
    cmd = [str(clip), str(tmp_path / "out.mkv"), *ENGINE_FLAGS, "--address", address, "--chunk-frames", "4",
           "--work-dir", str(work)]
    proc = subprocess.Popen([sys.executable, "-m", "vsanimesr.cli", "upscale", *cmd], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    done: dict = {}
    while time.monotonic() < deadline and proc.poll() is None:
        if (work / "manifest.json").exists():
            with contextlib.suppress(ValueError):
                done = json.loads((work / "manifest.json").read_text())["done"]
            if done:
                break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    kept = json.loads((work / "manifest.json").read_text())["done"]
    assert 1 <= len(kept) < 10, err
    assert f"interrupted: {len(kept)} of 10 chunks are finished and kept in {work}" in err
    assert not (tmp_path / "out.mkv").exists()
    # The recorded chunks (a segment finished after the driver's last record is not trusted and is redone).
    stamps = {p.name: p.stat().st_mtime_ns for p in (work / "segments").glob("chunk_*")
              if str(int(p.stem.removeprefix("chunk_"))) in kept}
    assert len(stamps) == len(kept)

    other = animesr(*cmd, "--reset-interval", "8", env=env)  # the last one given counts
    assert other.returncode == 1
    assert other.stderr.strip().splitlines()[-1].startswith(
        f"animesr upscale: error: work dir {str(work)!r} holds another job (differs in: option.reset_interval 4 -> 8")
    moved = tmp_path / "moved.mp4"
    write_clip(moved, n=N - 1)
    other = animesr(str(moved), *cmd[1:], env=env)
    assert other.returncode == 1 and "differs in: input path" in other.stderr, other.stderr

    again = animesr(*cmd, env=env)
    assert again.returncode == 0, again.stderr
    assert {p: (work / "segments" / p).stat().st_mtime_ns for p in stamps} == stamps
    assert len(json.loads((work / "manifest.json").read_text())["done"]) == 10
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


# ---------------------------------------------------------------------------------------------- GPU workers


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cli_gpu_workers_give_the_single_process_output(clip, tmp_path):
    """Two Ray workers sharing each GPU (``gpus_per_worker=0.5``, from Python) and one worker per GPU (the CLI)
    against the single-process command on the same GPU, lossless: the same frames bit for bit (same GPU model,
    same kernels; fp32 on CUDA is IEEE fp32 unless --tf32)."""
    gpu = ["--warmup", "2", "--device", "cuda", "--codec", "ffv1", "--reset-interval", "4"]
    one = animesr(str(clip), str(tmp_path / "one.mkv"), *gpu)
    assert one.returncode == 0, one.stderr
    two = animesr(str(clip), str(tmp_path / "two.mkv"), *gpu, "--workers", "2", "--chunk-frames", str(CHUNK))
    assert two.returncode == 0, two.stderr
    assert_same_video(tmp_path / "two.mkv", tmp_path / "one.mkv")
    summary = upscale_video(clip, tmp_path / "half.mkv", OPTS.replace(device="cuda"), workers=2, gpus_per_worker=0.5,
                            chunk_frames=CHUNK, encoding=Encoding("ffv1"))
    assert summary["chunks"] == 5
    assert_same_video(tmp_path / "half.mkv", tmp_path / "one.mkv")

"""Chunked upscaling on a Ray cluster: frame-exact, resumable and fault-tolerant (``animesr upscale --workers N``).

Why chunks can be exact: the engine defines output frame ``n`` as a function of the input frames
:meth:`Options.window` ``(n)`` alone (chains restart every ``reset_interval`` frames, led in by ``warmup`` steps,
and at scene cuts). A chunk of whole restart periods ``[start, end)`` therefore reads only the input frames
``window(start)[0] .. window(end - 1)[1]`` (the lead-in of its first restart and one frame of look-ahead), and its
output equals those frames of one linear run over the whole video. Each chunk is one Ray task: it seeks to a keyframe,
decodes its range by exact frame number (presentation timestamps from an index of the input's packets), upscales, and
encodes a *segment* with the single-process CLI's encoder settings; the driver joins the segments into the output
without re-encoding, with the input's other streams as :func:`vsanimesr.video.transcode_video` lays them out.

The work directory keeps the finished segments and a manifest (input identity, settings, chunk plan, segment
checksums): rerunning the same command skips finished chunks and redoes missing or damaged ones; different settings
or a different input are refused. Ray retries a chunk whose worker dies or fails (``retries``); a chunk that keeps
failing fails the run with a one-line message naming its frames, after the other chunks have finished and been kept.

Work directory layout::

    manifest.json   what the directory is for and which chunks are done (rewritten atomically by the driver)
    index.json      presentation timestamps and keyframes of the input's frames
    segments/       chunk_00000.mov (or .nut for intra-only codecs), ...
    running/        chunk_00003.pid while a worker holds chunk 3; chunk_00003.attempts counts its attempts
    lock            held by the driver: one run per directory
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from vsanimesr.options import Options
from vsanimesr.video import (
    Crop,
    Encoding,
    FrameRange,
    Tracks,
    VideoEncoder,
    VideoError,
    _frame_rgb,
    _main_video,
    _open_encoder,
    _open_input,
    _source_matrix,
    join_segments,
    plan_video,
)

__all__ = [
    "DEFAULT_CHUNK_FRAMES",
    "DEFAULT_RETRIES",
    "Chunk",
    "ChunkError",
    "VideoIndex",
    "WorkDirError",
    "index_video",
    "plan_chunks",
    "upscale_video",
]

log = logging.getLogger("vsanimesr.distributed")

DEFAULT_CHUNK_FRAMES = 480
"""Frames per chunk before rounding to whole restart periods: 20 s at 24 fps, 72 chunks for a 24-minute episode.
A chunk costs one keyframe seek and ``warmup + 1`` extra decoded frames; fewer, longer chunks balance worse."""
DEFAULT_RETRIES = 2
"""Extra attempts per chunk after a failure (a killed worker or an exception) before the run gives up on it."""

_FORMAT_VERSION = 1  # of manifest.json and index.json
_INTRA_ONLY = {"ffv1"}  # encoders whose segments can live in NUT (no reordering: dts = pts)


class WorkDirError(VideoError):
    """The work directory belongs to another input or other settings, or another run holds it."""


class ChunkError(VideoError):
    """One or more chunks failed on every attempt; the others are finished and kept in the work directory."""


# --------------------------------------------------------------------------------------------------------------
# The plan: chunks of whole restart periods


@dataclass(frozen=True)
class Chunk:
    """Output frames ``start`` to ``end - 1`` and the input frames ``first`` to ``last`` they read (inclusive).

    Frame numbers count from the first selected frame (as the engine sees the clip).
    """

    index: int
    start: int
    end: int
    first: int
    last: int

    def __len__(self) -> int:
        return self.end - self.start

    def __str__(self) -> str:
        return f"frames {self.start}-{self.end - 1}"


def plan_chunks(num_frames: int, options: Options, chunk_frames: int = DEFAULT_CHUNK_FRAMES) -> list[Chunk]:
    """Cut ``num_frames`` into chunks of whole restart periods, about ``chunk_frames`` long (rounded to periods).

    Each chunk starts at a periodic restart, so its output depends only on its own frames plus the lead-in that
    :meth:`Options.window` names. Without periodic restarts (``reset_interval=0``) every frame may depend on all
    earlier ones, so the whole clip is one chunk.
    """
    if not isinstance(num_frames, int) or isinstance(num_frames, bool) or num_frames < 1:
        raise ValueError(f"plan_chunks: num_frames must be a positive integer, got {num_frames!r}")
    if not isinstance(chunk_frames, int) or isinstance(chunk_frames, bool) or chunk_frames < 1:
        raise ValueError(f"plan_chunks: chunk_frames must be a positive integer, got {chunk_frames!r}")
    period = options.reset_interval
    if period == 0:
        log.warning("reset_interval=0: every frame depends on all earlier ones, so the clip is one chunk")
        size = num_frames
    else:
        size = max(1, round(chunk_frames / period)) * period
    chunks = []
    for i, start in enumerate(range(0, num_frames, size)):
        end = min(start + size, num_frames)
        first = options.window(start, num_frames)[0]
        last = options.window(end - 1, num_frames)[1]
        chunks.append(Chunk(i, start, end, first, last))
    return chunks


# --------------------------------------------------------------------------------------------------------------
# The input: an index of its frames, and its identity


@dataclass(frozen=True)
class VideoIndex:
    """Every frame of a video stream in presentation order: timestamps, and the frames decoding may start at.

    ``seekable`` is false when the packets lack timestamps or repeat them; frames are then found by counting from
    the start of the file (exact, but every chunk decodes everything before it).
    """

    width: int
    height: int
    time_base: Fraction
    rate: Fraction
    pts: tuple[int, ...]
    keyframes: tuple[int, ...]
    seekable: bool

    def __len__(self) -> int:
        return len(self.pts)

    def to_json(self) -> dict[str, Any]:
        return {"version": _FORMAT_VERSION, "width": self.width, "height": self.height,
                "time_base": str(self.time_base), "rate": str(self.rate), "pts": list(self.pts),
                "keyframes": list(self.keyframes), "seekable": self.seekable}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> VideoIndex:
        if d.get("version") != _FORMAT_VERSION:
            raise ValueError(f"index version {d.get('version')!r}")
        return cls(int(d["width"]), int(d["height"]), Fraction(d["time_base"]), Fraction(d["rate"]),
                   tuple(d["pts"]), tuple(d["keyframes"]), bool(d["seekable"]))

    def seek_points(self, frame: int) -> list[int | None]:
        """Timestamps to seek to for decoding from ``frame``: the nearest keyframes at or before it, then the start
        of the file (None), for demuxers that land after the asked time."""
        if not self.seekable:
            return [None]
        before = [k for k in self.keyframes if k <= frame]
        return [self.pts[k] for k in reversed(before[-2:])] + [None]


def _rate(stream: Any) -> Fraction:
    return stream.average_rate or stream.guessed_rate or Fraction(24000, 1001)


def index_video(src: str | os.PathLike[str]) -> VideoIndex:
    """Index ``src``'s video from its packets (nothing is decoded, so it runs at disk speed).

    When packets lack timestamps the frames are decoded once and numbered as the CLI numbers them.

    Raises:
        VideoError: missing, unreadable or video-less input.
    """
    import av

    src = Path(src)
    with contextlib.closing(_open_input(src)) as c:
        v = _main_video(c, src)
        tb, rate = v.time_base, _rate(v)
        width, height = v.codec_context.width, v.codec_context.height
        pts: list[int | None] = []
        keys: list[int | None] = []
        try:
            for p in c.demux(v):
                if p.size == 0:  # the demuxer's flush packet
                    continue
                pts.append(p.pts)
                if p.is_keyframe:
                    keys.append(p.pts)
        except av.FFmpegError as e:
            raise VideoError(f"cannot read {str(src)!r} (corrupt or truncated?): {e}") from e
    if pts and None not in pts and len(set(pts)) == len(pts):
        order = sorted(pts)  # type: ignore[type-var]
        where = {p: i for i, p in enumerate(order)}
        keyframes = sorted(where[k] for k in keys if k is not None)
        if not keyframes or keyframes[0] != 0:
            keyframes.insert(0, 0)  # decoding from the start always works
        return VideoIndex(width, height, tb, rate, tuple(order), tuple(keyframes), True)
    log.warning("%s: packets without unique timestamps; decoding once to count frames (chunks will not seek)",
                src.name)
    return VideoIndex(width, height, tb, rate, tuple(_decoded_pts(src)), (0,), False)


def _decoded_pts(src: Path) -> list[int]:
    """Timestamps of every decoded frame, missing ones continued at the nominal rate (as the CLI does)."""
    import av

    out: list[int] = []
    with contextlib.closing(_open_input(src)) as c:
        v = _main_video(c, src)
        v.thread_type = "AUTO"
        ticks = 1 / (_rate(v) * v.time_base)
        try:
            for fr in c.decode(v):
                out.append(fr.pts if fr.pts is not None else (round(out[-1] + ticks) if out else 0))
        except av.FFmpegError as e:
            raise VideoError(f"cannot decode {str(src)!r} (corrupt or truncated?): {e}") from e
    return out


def input_identity(src: Path) -> dict[str, Any]:
    """Size, modification time and a hash of the first and last MiB: cheap, and different for a different file."""
    st = os.stat(src)
    h = hashlib.sha256()
    with open(src, "rb") as f:
        h.update(f.read(1 << 20))
        if st.st_size > 2 << 20:
            f.seek(-(1 << 20), os.SEEK_END)
        h.update(f.read(1 << 20))
    return {"path": str(Path(src).resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "head_tail_sha256": h.hexdigest()}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------------------------------------------
# One chunk, in a Ray worker


@dataclass(frozen=True)
class _ChunkJob:
    """Everything a worker needs for one chunk (pickled into the Ray task)."""

    chunk: Chunk
    src: str
    work_dir: str
    options: Options
    encoding: Encoding
    box: tuple[int, int, int, int] | None  # crop (x, y, w, h) in input pixels
    size: tuple[int, int]  # output (height, width)
    num_frames: int  # frames in the selected range (what the engine's window is clipped to)
    time_base: Fraction
    rate: Fraction
    pts: tuple[int, ...]  # of input frames chunk.first .. chunk.last
    skip: int  # frames before chunk.first when counting from the start of the file (unseekable input)
    seek_points: tuple[int | None, ...]
    threads: int

    @property
    def segment(self) -> Path:
        return _segment_path(Path(self.work_dir), self.chunk.index, self.encoding)


def _segment_path(work_dir: Path, index: int, encoding: Encoding) -> Path:
    ext = "nut" if encoding.spec.encoder in _INTRA_ONLY else "mov"  # both keep the input's exact timestamps
    return work_dir / "segments" / f"chunk_{index:05d}.{ext}"


_ENGINES: dict[Options, Any] = {}  # per worker process: Ray reuses workers, so the model loads once per worker


def _engine(options: Options) -> Any:
    from vsanimesr.engine import AnimeSR

    sr = _ENGINES.get(options)
    if sr is None:
        _ENGINES.clear()
        sr = _ENGINES[options] = AnimeSR(options)
    return sr


def _chunk_task(job: _ChunkJob, board: Any = None, *, report: Callable[[int, int], Any] | None = None
                ) -> dict[str, Any]:
    """Ray task body: upscale one chunk into its segment file; returns what the manifest records.

    Progress (chunk index, frames done) goes to ``board`` (a :class:`_ProgressBoard` actor) or to ``report``.
    """
    started = time.time()
    work = Path(job.work_dir)
    if not Path(job.src).is_file() or not work.is_dir():
        raise VideoError(f"{socket.gethostname()}: cannot see {job.src!r} or {job.work_dir!r}; with a cluster, "
                         "the input and the work directory must be at the same path on every node")
    name = f"chunk_{job.chunk.index:05d}"
    pid_file = work / "running" / f"{name}.pid"
    with open(work / "running" / f"{name}.attempts", "a") as f:
        f.write(f"{socket.gethostname()} {os.getpid()} {started:.3f}\n")
    pid_file.write_text(f"{os.getpid()}\n")
    if board is not None:
        report = board.report.remote
    try:
        with _torch_threads(job.threads):
            result = _render_chunk(job, report)
    finally:
        pid_file.unlink(missing_ok=True)
    attempts = (work / "running" / f"{name}.attempts").read_text().count("\n")
    return {**result, "attempts": attempts, "host": socket.gethostname(), "pid": os.getpid(),
            "started": started, "finished": time.time()}


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """torch's CPU threads set to ``n`` (0: unchanged) for a block; the caller's count comes back after (a chunk run
    in the caller's own process must not change it)."""
    import torch

    before = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _render_chunk(job: _ChunkJob, report: Callable[[int, int], Any] | None) -> dict[str, Any]:
    import av

    chunk = job.chunk
    t0 = time.perf_counter()
    sr = _engine(job.options)
    t_engine = time.perf_counter() - t0
    reader = _ChunkReader(job)
    session = sr.open(reader.get, job.num_frames)
    keep = job.options.restart_span + 1  # input frames a restart re-reads, plus the frame being stepped
    seg = job.segment
    seg.parent.mkdir(exist_ok=True)
    tmp = seg.with_name(f".{seg.stem}.{os.getpid()}.partial{seg.suffix}")
    t_up = t_enc = 0.0
    last_report = time.perf_counter()
    try:
        with contextlib.closing(av.open(str(tmp), "w")) as out:
            writer = _SegmentWriter(out, job)
            for n in range(chunk.start, chunk.end):
                t1 = time.perf_counter()
                y = session.tensor(n)  # on the engine's device: the encoder's planes are made there
                t2 = time.perf_counter()
                writer.write(y, job.pts[n - chunk.first])
                t3 = time.perf_counter()
                t_up += t2 - t1
                t_enc += t3 - t2
                reader.release_before(n + 1 - keep)
                if report is not None and t3 - last_report > 0.5:
                    report(chunk.index, n + 1 - chunk.start)
                    last_report = t3
            t1 = time.perf_counter()
            written = writer.finish()
            t_enc += time.perf_counter() - t1
        if written != len(chunk):
            raise VideoError(f"{chunk}: wrote {written} frames instead of {len(chunk)}")
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, seg)
    finally:
        tmp.unlink(missing_ok=True)
    if report is not None:
        report(chunk.index, len(chunk))
    upscale = t_up - reader.decode_s  # the session decodes the frames it asks for; count that as decoding
    return {"file": seg.name, "sha256": _sha256(seg), "frames": written, "steps": session.steps,
            "seconds": {"engine": t_engine, "decode": reader.decode_s, "lead_in": reader.lead_in_s, "upscale": upscale,
                        "encode": t_enc}}


class _ChunkReader:
    """The chunk's input frames by frame number, decoded in order on demand; frames already used are released."""

    def __init__(self, job: _ChunkJob) -> None:
        self.job = job
        self.buf: dict[int, np.ndarray] = {}
        self.next = job.chunk.first
        self.frames = _decode_range(job)
        self.decode_s = 0.0
        self.lead_in_s = 0.0  # decoding up to the chunk's first output frame: the seek's pre-roll and the lead-in

    def get(self, k: int) -> np.ndarray:
        while self.next <= k:
            t = time.perf_counter()
            self.buf[self.next] = next(self.frames)
            dt = time.perf_counter() - t
            self.decode_s += dt
            if self.next < self.job.chunk.start:
                self.lead_in_s += dt
            self.next += 1
        try:
            return self.buf[k]
        except KeyError:
            raise RuntimeError(f"{self.job.chunk}: input frame {k} was asked for after it was released") from None

    def release_before(self, k: int) -> None:
        for old in [j for j in self.buf if j < k]:
            del self.buf[old]


def _decode_range(job: _ChunkJob) -> Iterator[np.ndarray]:
    """RGB frames ``chunk.first .. chunk.last`` of the input, found by timestamp after a seek to a keyframe."""
    want = job.pts
    for seek in job.seek_points:
        with contextlib.closing(_open_input(Path(job.src))) as c:
            v = _main_video(c, Path(job.src))
            v.thread_type = "AUTO"
            matrix = _source_matrix(v)
            if seek is not None:
                c.seek(seek, stream=v, backward=True, any_frame=False)
            frames = _decoded(c, v, job.src)
            if job.seek_points == (None,):  # no usable timestamps: count frames from the start, as the CLI does
                for _ in range(job.skip):
                    next(frames, None)
                for k in range(len(want)):
                    fr = next(frames, None)
                    if fr is None:
                        raise VideoError(f"{job.src!r} ended before frame {job.skip + k} (truncated?)")
                    yield _frame_rgb(fr, matrix, job.box)
                return
            fr = next((f for f in frames if f.pts is not None and f.pts >= want[0]), None)
            if fr is None or fr.pts != want[0]:
                log.debug("%s: seek to %s landed after frame %d; trying an earlier point", job.chunk, seek,
                          job.chunk.first)
                continue
            yield _frame_rgb(fr, matrix, job.box)
            for k, expected in enumerate(want[1:], start=1):
                fr = next(frames, None)
                if fr is None or fr.pts != expected:
                    got = "the end of the stream" if fr is None else f"timestamp {fr.pts}"
                    raise VideoError(f"{job.src!r}: frame {job.chunk.first + k} should have timestamp {expected} "
                                     f"but decoding gave {got} (damaged input?)")
                yield _frame_rgb(fr, matrix, job.box)
            return
    raise VideoError(f"{job.src!r}: cannot find the frame with timestamp {want[0]} (frame {job.chunk.first}) "
                     "by seeking or decoding from the start")


def _decoded(c: Any, v: Any, src: str) -> Iterator[Any]:
    import av

    for packet in c.demux(v):
        try:
            yield from packet.decode()
        except av.FFmpegError as e:
            raise VideoError(f"cannot decode {src!r} (corrupt or truncated?): {e}") from e


class _SegmentWriter:
    """Encodes upscaled frames with the input's timestamps, exactly as the CLI's encoder does (same functions)."""

    def __init__(self, out: Any, job: _ChunkJob) -> None:
        self.out, self.job = out, job
        stream = _open_encoder(out, job.encoding, rate=job.rate, time_base=job.time_base, size=job.size)
        self.encoder = VideoEncoder(stream, job.encoding.spec, job.size, rate=job.rate, time_base=job.time_base)
        self.written = 0

    def write(self, y: Any, pts: int) -> None:
        self.out.mux(self.encoder.encode(y, pts))
        self.written += 1

    def finish(self) -> int:
        self.out.mux(self.encoder.flush())
        return self.written


# --------------------------------------------------------------------------------------------------------------
# The driver


class _WorkDir:
    """The work directory: lock, manifest, index, segments."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        (path / "segments").mkdir(exist_ok=True)
        (path / "running").mkdir(exist_ok=True)
        self._lock = open(path / "lock", "a+")  # noqa: SIM115 - held until close()
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            raise WorkDirError(f"work dir {str(path)!r} is in use by another run") from None
        self.manifest: dict[str, Any] = {}

    def close(self) -> None:
        self._lock.close()

    def _read_json(self, name: str) -> dict[str, Any] | None:
        p = self.path / name
        if not p.exists():
            return None
        try:
            return json.loads(p.read_text())
        except (OSError, ValueError) as e:
            raise WorkDirError(f"work dir {str(self.path)!r}: {name} is unreadable ({e}); delete the directory "
                               "to start over") from e

    def _write_json(self, name: str, data: dict[str, Any]) -> None:
        tmp = self.path / f".{name}.tmp"
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, self.path / name)

    def index(self, src: Path, identity: dict[str, Any]) -> VideoIndex:
        """The input's index: read back when this directory already indexed the same input, else made now."""
        old = self._read_json("index.json")
        if old is not None and old.get("input") == identity:
            with contextlib.suppress(KeyError, ValueError, TypeError):
                return VideoIndex.from_json(old["index"])
        t0 = time.perf_counter()
        index = index_video(src)
        log.info("indexed %d frames of %s in %.1f s", len(index), src.name, time.perf_counter() - t0)
        self._write_json("index.json", {"input": identity, "index": index.to_json()})
        return index

    def open_manifest(self, identity: dict[str, Any], settings: dict[str, Any], chunks: list[Chunk]) -> None:
        """Start or resume: the manifest must describe the same input, settings and chunk plan."""
        plan = [[c.start, c.end] for c in chunks]
        old = self._read_json("manifest.json")
        if old is not None:
            if old.get("version") != _FORMAT_VERSION:
                raise WorkDirError(f"work dir {str(self.path)!r} was made by another version (manifest version "
                                   f"{old.get('version')!r}); use another --work-dir or delete it")
            what = []
            if old.get("input") != identity:
                what += [f"input {k} {old.get('input', {}).get(k)!r} -> {v!r}" for k, v in identity.items()
                         if old.get("input", {}).get(k) != v]
            old_settings = old.get("settings", {})
            what += [f"{k} {old_settings.get(k)!r} -> {v!r}" for k, v in settings.items() if old_settings.get(k) != v]
            what += [f"{k} {v!r} -> (unset)" for k, v in old_settings.items() if k not in settings]
            if not what and old.get("chunks") != plan:
                what.append("chunk plan")
            if what:
                raise WorkDirError(f"work dir {str(self.path)!r} holds another job (differs in: {'; '.join(what)}); "
                                   "use another --work-dir or delete it")
            self.manifest = old
        else:
            self.manifest = {"version": _FORMAT_VERSION, "input": identity, "settings": settings, "chunks": plan,
                             "done": {}}
            self._write_json("manifest.json", self.manifest)

    def finished(self, chunks: list[Chunk], encoding: Encoding) -> set[int]:
        """Chunks whose segment is present with its recorded checksum; the others' records are dropped."""
        done: dict[str, Any] = self.manifest["done"]
        good = set()
        for c in chunks:
            rec = done.get(str(c.index))
            if rec is None:
                continue
            seg = _segment_path(self.path, c.index, encoding)
            if seg.is_file() and _sha256(seg) == rec.get("sha256"):
                good.add(c.index)
            else:
                log.warning("%s: segment %s is %s; redoing it", c, seg.name, "damaged" if seg.exists() else "missing")
                del done[str(c.index)]
        self._write_json("manifest.json", self.manifest)
        # Leftovers of interrupted attempts (the driver holds the lock, so no worker of this directory is alive).
        keep = {_segment_path(self.path, i, encoding).name for i in good}
        for p in (self.path / "segments").iterdir():
            if p.name not in keep and p.is_file():
                p.unlink(missing_ok=True)
        self.tidy()
        return good

    def tidy(self) -> None:
        """Remove what failed or killed attempts left behind (partial segments, pid files)."""
        for p in (self.path / "segments").glob(".*.partial.*"):
            p.unlink(missing_ok=True)
        for p in (self.path / "running").glob("*.pid"):
            p.unlink(missing_ok=True)

    def record(self, chunk: Chunk, result: dict[str, Any]) -> None:
        self.manifest["done"][str(chunk.index)] = result
        self._write_json("manifest.json", self.manifest)


def _settings(options: Options, *, encoding: Encoding, frames: FrameRange, box: tuple[int, int, int, int] | None,
              model_sha256: str) -> dict[str, Any]:
    """What makes a segment what it is. Resources (workers, threads, cluster) do not belong here, nor do the audio and
    subtitle tracks (only the join uses them)."""
    return {**{f"option.{k}": v for k, v in options.as_dict().items()}, "model_sha256": model_sha256,
            **{f"encoding.{k}": v for k, v in dataclasses.asdict(encoding).items()},
            "frames": [frames.start, frames.end], "crop": None if box is None else list(box)}


class _ProgressBoard:
    """A Ray actor where tasks post how many frames of their chunk are done, for the driver's one progress bar."""

    def __init__(self) -> None:
        self.done: dict[int, int] = {}

    def report(self, chunk: int, frames: int) -> None:
        self.done[chunk] = max(self.done.get(chunk, 0), frames)  # a retried chunk does not move the bar back

    def snapshot(self) -> dict[int, int]:
        return dict(self.done)


def upscale_video(
    src: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    options: Options | None = None,
    *,
    workers: int | None = None,
    address: str | None = None,
    threads: int | None = None,
    chunk_frames: int = DEFAULT_CHUNK_FRAMES,
    work_dir: str | os.PathLike[str] | None = None,
    encoding: Encoding | None = None,
    frames: FrameRange | None = None,
    crop: Crop | None = None,
    tracks: Tracks | None = None,
    retries: int = DEFAULT_RETRIES,
    gpus_per_worker: float = 1.0,
    overwrite: bool = False,
    progress: Callable[[int | None], Callable[[], None]] | None = None,
) -> dict[str, Any]:
    """Upscale the video ``src`` into ``dest`` in chunks on Ray: identical to one linear run, resumable.

    ``workers`` local Ray workers are started (and stopped) for the run, each with ``threads`` torch threads on the
    CPU (default: the cores shared out) or ``gpus_per_worker`` of a GPU; ``address`` (``"auto"`` or
    ``"HOST:PORT"``) uses a running Ray cluster instead, whose nodes must see ``src`` and ``work_dir`` at the same
    paths and have this package installed; a Ray connection the caller already made (``ray.init`` in a notebook) is
    used as it is. A local instance listens on the loopback interface only. Neither (or ``workers=0``): the chunks
    run one after another in this process, without Ray, still resumable.

    Chunks are ``chunk_frames`` long, rounded to whole restart periods (:func:`plan_chunks`). Finished segments and
    the manifest stay in ``work_dir`` (default: a hidden folder beside ``dest``, removed after success), so the same
    call after an interruption or a failure redoes only what is missing. ``encoding``, ``frames``, ``crop``,
    ``tracks`` and ``options.outscale`` mean what they mean for :func:`vsanimesr.video.transcode_video` (everything
    it checks is checked here before any work); ``progress(total)`` returns a callback called once per frame.

    Returns a summary: frames, chunks, chunks reused from the work directory, attempts, seconds per stage.

    Raises:
        VideoError: unreadable input, unwritable output, a work directory that belongs to another job
            (:class:`WorkDirError`), chunks that failed on every attempt (:class:`ChunkError`).
        ValueError: a bad argument (the message names it).
        KeyboardInterrupt: finished chunks are kept in the work directory.
    """
    func = "upscale_video"
    options = Options() if options is None else options
    frames = FrameRange() if frames is None else frames
    encoding = Encoding() if encoding is None else encoding
    tracks = Tracks() if tracks is None else tracks
    if not isinstance(options, Options):
        raise ValueError(f"{func}: options must be a vsanimesr.options.Options, got {type(options).__name__}")
    for name, value, low in (("workers", workers, 0), ("threads", threads, 1), ("chunk_frames", chunk_frames, 1),
                             ("retries", retries, 0)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < low):
            raise ValueError(f"{func}: {name} must be an integer >= {low}, got {value!r}")
    if address is not None and (not isinstance(address, str) or not address):
        raise ValueError(f"{func}: address must be 'auto' or 'HOST:PORT', got {address!r}")
    if not (isinstance(gpus_per_worker, (int, float)) and 0 < gpus_per_worker <= 1
            or isinstance(gpus_per_worker, int) and gpus_per_worker >= 1):
        raise ValueError(f"{func}: gpus_per_worker must be a fraction in (0, 1] or a whole number, "
                         f"got {gpus_per_worker!r}")
    src, dest = Path(src), Path(dest)
    # Input, range, crop, tracks, encoder settings, output path: checked as one run checks them, before any work.
    plan_video(src, dest, encoding=encoding, frames=frames, crop=crop, tracks=tracks, overwrite=overwrite)
    own_work = work_dir is None
    work = (dest.parent / f".{dest.name}.chunks" if own_work else Path(work_dir)).resolve()  # type: ignore[arg-type]
    t_start = time.perf_counter()
    wd = _WorkDir(work)
    try:
        summary = _run(wd, src, dest, options, workers=workers, address=address, threads=threads,
                       chunk_frames=chunk_frames, encoding=encoding, frames=frames, crop=crop, tracks=tracks,
                       retries=retries, gpus_per_worker=gpus_per_worker, overwrite=overwrite, progress=progress)
        wd.tidy()
    except KeyboardInterrupt:
        done = len(wd.manifest.get("done", {}))
        log.warning("interrupted: %d of %d chunks are finished and kept in %s; run the same command again to resume",
                    done, len(wd.manifest.get("chunks", [])), wd.path)
        raise
    finally:
        wd.close()
    if own_work:
        shutil.rmtree(work, ignore_errors=True)
    summary["seconds"]["total"] = time.perf_counter() - t_start
    return summary


def _run(wd: _WorkDir, src: Path, dest: Path, options: Options, *, workers: int | None, address: str | None,
         threads: int | None, chunk_frames: int, encoding: Encoding, frames: FrameRange, crop: Crop | None,
         tracks: Tracks, retries: int, gpus_per_worker: float, overwrite: bool,
         progress: Callable[[int | None], Callable[[], None]] | None) -> dict[str, Any]:
    t0 = time.perf_counter()
    weights, scale = _model(options)
    plan = plan_video(src, dest, encoding=encoding, frames=frames, crop=crop, outscale=options.outscale, scale=scale,
                      tracks=tracks, overwrite=overwrite)
    frames, box, size = plan.frames, plan.crop, plan.size
    identity = input_identity(src)
    index = wd.index(src, identity)
    end = len(index) if frames.end is None else min(frames.end, len(index))
    if frames.start >= end:
        raise VideoError(f"frames {frames} start past the end of {str(src)!r}, which has {len(index)} frames "
                         f"(0 to {len(index) - 1})")
    num_frames = end - frames.start
    chunks = plan_chunks(num_frames, options, chunk_frames)

    with contextlib.closing(_Cluster(address, workers, gpus_per_worker)) as cluster:
        gpu = cluster.wants_gpu(options.device)
        if threads is None:  # CPU workers share the cores; a GPU worker's CPU only feeds the GPU and the encoder
            threads = 1 if gpu or address is not None else max(1, (os.cpu_count() or 1) // (workers or 1))
        worker_options = options.replace(device="cuda" if gpu else "cpu")
        settings = _settings(worker_options, encoding=encoding, frames=FrameRange(frames.start, end), box=box,
                             model_sha256=_sha256(weights))
        wd.open_manifest(identity, settings, chunks)
        done = wd.finished(chunks, encoding)
        todo = [c for c in chunks if c.index not in done]
        log.info("%d frames in %d chunks (%d finished before, %d to do)", num_frames, len(chunks), len(done),
                 len(todo))
        tick = progress(num_frames) if progress else None
        shown = 0

        def show(total: int) -> None:
            nonlocal shown
            if tick is not None:
                for _ in range(total - shown):
                    tick()
            shown = max(shown, total)

        reused = sum(len(c) for c in chunks if c.index in done)
        show(reused)
        seconds: dict[str, float] = {"prepare": time.perf_counter() - t0}
        results: dict[int, dict[str, Any]] = {}
        if todo:
            g0 = frames.start  # frame numbers in the file = the engine's frame numbers + the range's start

            def job(c: Chunk) -> _ChunkJob:
                return _ChunkJob(
                    chunk=c, src=str(src.resolve()), work_dir=str(wd.path), options=worker_options,
                    encoding=encoding, box=box, size=size, num_frames=num_frames, time_base=index.time_base,
                    rate=index.rate, pts=index.pts[g0 + c.first : g0 + c.last + 1], skip=g0 + c.first,
                    seek_points=tuple(index.seek_points(g0 + c.first)), threads=threads,
                )

            t1 = time.perf_counter()
            results, failures = cluster.run([job(c) for c in todo], wd, gpu=gpu, threads=threads, retries=retries,
                                            show=lambda n: show(reused + n))
            seconds["tasks"] = time.perf_counter() - t1
            seconds["ray_start"] = cluster.start_seconds
            if failures:
                finished = len(chunks) - len(failures)
                what = "; ".join(f"{c} failed after {retries + 1} attempts: {why}" for c, why in failures)
                raise ChunkError(f"{what} ({finished} of {len(chunks)} chunks are finished and kept in "
                                 f"{str(wd.path)!r}; run again to retry)")
    t2 = time.perf_counter()
    segments = [_segment_path(wd.path, c.index, encoding) for c in chunks]
    joined = join_segments(src, segments, dest, frames=frames, tracks=tracks, overwrite=overwrite)
    seconds["join"] = time.perf_counter() - t2
    if joined["frames"] != num_frames:
        raise VideoError(f"joined {joined['frames']} frames instead of {num_frames} (damaged segments in "
                         f"{str(wd.path)!r}?)")
    return {**joined, "chunks": len(chunks), "reused": len(done), "results": results, "seconds": seconds,
            "work_dir": str(wd.path)}


def _model(options: Options) -> tuple[Path, int]:
    """The weight file and the model's scale, read in the driver so that a bad model fails before Ray starts."""
    from vsanimesr.loader import WeightsError, load_state_dict, model_info
    from vsanimesr.options import OptionError
    from vsanimesr.weights import resolve

    try:
        path = resolve(options.model)
        return path, model_info(load_state_dict(path), source=str(path)).scale
    except (ValueError, WeightsError) as e:  # WeightsError is a ValueError; both name the file and the problem
        raise OptionError("model", options.model, str(e)).prefixed("upscale_video") from e


class _Cluster:
    """The Ray side of a run, connected on first use: a local instance started (and stopped) for the run, or a
    running cluster at ``address``. Chunks go out at most ``workers`` at a time (on a cluster without ``workers``:
    as many as its resources hold)."""

    def __init__(self, address: str | None, workers: int | None, gpus_per_worker: float) -> None:
        self.address, self.workers, self.gpus_per_worker = address, workers, gpus_per_worker
        self.ray: Any = None
        self.started_here = False
        self.start_seconds = 0.0
        self._local_gpu: bool | None = None

    def wants_gpu(self, device: str) -> bool:
        """Whether chunks run on GPUs: ``cuda`` asks for them, ``auto`` takes them where the cluster has some."""
        if device == "cpu":
            return False
        if device.startswith("cuda"):
            if device != "cuda":
                log.warning("device=%s: each worker uses the GPU Ray assigns to it", device)
            return True
        if self.address is None:
            import torch

            return torch.cuda.is_available()
        return self._connect(gpu=False, threads=1).cluster_resources().get("GPU", 0) > 0

    def _connect(self, *, gpu: bool, threads: int) -> Any:
        if self.ray is not None:
            return self.ray
        import sys

        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        if self.address is None and "ray" not in sys.modules:
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # Ray's switch: node address 127.0.0.1
        try:
            import ray
        except ImportError:
            raise VideoError("workers/address need Ray: pip install 'vapoursynth-animesr[distributed]'") from None
        self.ray = ray
        if ray.is_initialized():  # the caller's own connection (a notebook): use it, leave it open
            return ray
        t0 = time.perf_counter()
        # ray.init installs a SIGTERM handler that exits at once; keep the caller's (the CLI turns SIGTERM into
        # Ctrl-C, which cancels the tasks and keeps finished chunks).
        main_thread = threading.current_thread() is threading.main_thread()
        before = signal.getsignal(signal.SIGTERM) if main_thread else None
        quiet = {"log_to_driver": log.isEnabledFor(logging.DEBUG), "logging_level": logging.ERROR}
        try:
            if self.address is None:
                import torch

                # "local": always a new instance of our own (without it ray.init joins a cluster that `ray start`
                # left on this machine, or the one RAY_ADDRESS names).
                ray.init(address="local", num_cpus=self.workers * (1 if gpu else threads),  # type: ignore[operator]
                         num_gpus=torch.cuda.device_count() if gpu else 0, include_dashboard=False,
                         object_store_memory=_OBJECT_STORE, **quiet)
            else:
                ray.init(address=self.address, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as e:
            where = "start a local Ray instance" if self.address is None else f"reach Ray at {self.address!r}"
            raise VideoError(f"cannot {where}: {' '.join(str(e).split())}") from e
        finally:
            if main_thread:
                signal.signal(signal.SIGTERM, before)
        self.started_here = True
        self.start_seconds = time.perf_counter() - t0
        log.info("Ray ready in %.1f s: %s", self.start_seconds, ray.cluster_resources())
        return ray

    def run(self, jobs: list[_ChunkJob], wd: _WorkDir, *, gpu: bool, threads: int, retries: int,
            show: Callable[[int], None]) -> tuple[dict[int, dict[str, Any]], list[tuple[Chunk, str]]]:
        """Run the jobs; each finished chunk is recorded in the manifest at once. Returns results and failures."""
        if self.address is None and self.workers == 0:
            return self._run_here(jobs, wd, retries=retries, show=show)
        ray = self._connect(gpu=gpu, threads=threads)
        workers = self.workers
        if workers is None:
            res = ray.cluster_resources()
            workers = max(1, int(res.get("GPU", 0) / self.gpus_per_worker) if gpu
                          else int(res.get("CPU", 1)) // threads)
        task = ray.remote(_chunk_task).options(
            num_cpus=1 if gpu else threads, num_gpus=self.gpus_per_worker if gpu else 0, max_retries=retries,
            retry_exceptions=True,
        )
        board = ray.remote(num_cpus=0)(_ProgressBoard).remote()
        queue = list(jobs)
        running: dict[Any, Chunk] = {}
        submitted: dict[int, float] = {}
        results: dict[int, dict[str, Any]] = {}
        failures: list[tuple[Chunk, str]] = []
        finished_frames = 0
        try:
            while queue or running:
                while queue and len(running) < workers:
                    j = queue.pop(0)
                    submitted[j.chunk.index] = time.time()
                    running[task.remote(j, board)] = j.chunk
                ready, _ = ray.wait(list(running), num_returns=1, timeout=0.5)
                for ref in ready:
                    c = running.pop(ref)
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.RayError as e:
                        failures.append((c, _cause(e)))
                        log.warning("%s failed: %s", c, failures[-1][1])
                        continue
                    result["submitted"] = submitted[c.index]
                    wd.record(c, result)
                    results[c.index] = result
                    finished_frames += len(c)
                    log.info("%s done on %s (attempt %d, %.1f s)", c, result["host"], result["attempts"],
                             result["finished"] - result["started"])
                with contextlib.suppress(ray.exceptions.RayError):
                    snap = ray.get(board.snapshot.remote(), timeout=5)
                    show(finished_frames + sum(snap.get(c.index, 0) for c in running.values()))
        finally:
            # Interrupted: what still runs must stop (finished chunks are recorded already). On our own connection
            # close() disconnects and Ray kills the workers of a driver that is gone; ray.cancel(force=True) here
            # raced Ray's own completion callback and aborted the process now and then ("Tried to complete task that
            # was not pending", ray-project/ray#54846). On the caller's connection (left open) a plain cancel asks.
            if running and not self.started_here:
                for ref in running:
                    with contextlib.suppress(Exception):
                        ray.cancel(ref)
        return results, failures

    def _run_here(self, jobs: list[_ChunkJob], wd: _WorkDir, *, retries: int, show: Callable[[int], None]
                  ) -> tuple[dict[int, dict[str, Any]], list[tuple[Chunk, str]]]:
        """``workers=0``: the chunks one after another in this process, without Ray (still resumable)."""
        results: dict[int, dict[str, Any]] = {}
        failures: list[tuple[Chunk, str]] = []
        finished = 0
        for j in jobs:
            c = j.chunk
            for attempt in range(retries + 1):
                try:
                    t = time.time()
                    result = _chunk_task(j, report=lambda _i, n, base=finished: show(base + n))
                except (VideoError, OSError, RuntimeError, ValueError) as e:
                    why = " ".join((str(e) or type(e).__name__).split())
                    log.warning("%s, attempt %d: %s", c, attempt + 1, why)
                    continue
                result["submitted"] = t
                wd.record(c, result)
                results[c.index] = result
                finished += len(c)
                break
            else:
                failures.append((c, why))
        return results, failures

    def close(self) -> None:
        if self.started_here and self.ray is not None:
            self.ray.shutdown()


_OBJECT_STORE = 100 << 20  # bytes; tasks exchange only small records (segments go through the file system)


def _cause(e: BaseException) -> str:
    """One line saying why a task failed: the task's own exception, or how its worker died."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, BaseException) and not type(cause).__module__.startswith("ray"):
        text = str(cause) or type(cause).__name__
    elif "WorkerCrashed" in type(e).__name__ or "died" in str(e).lower():
        text = "its worker died (killed, crashed or out of memory)"
    else:
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return " ".join(text.split())


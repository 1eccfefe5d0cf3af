"""Video and image-sequence plumbing for the ``animesr`` command: decode, re-encode, remux, write atomically.

Nothing here knows about the network. :func:`transcode_video` and :func:`process_image_dir` take a ``process``
callable that turns an iterator of RGB frames into an iterator of RGB frames (the engine's ``stream``), so the
plumbing is testable with a cheap stand-in and the engine stays free of file formats.

Outputs are written to a hidden temporary file (or folder) next to the destination and renamed into place only
when everything succeeded, so an interrupted or failed run never leaves a half-written file behind. Everything
that can be checked before the first frame (input, range, crop, tracks, encoder settings, output path) is checked
first, so a mistake never shows up after minutes of work.
"""

from __future__ import annotations

import contextlib
import errno
import heapq
import logging
import os
import re
import shutil
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CODECS",
    "Codec",
    "Crop",
    "Encoding",
    "FrameEncoder",
    "VideoEncoder",
    "FrameRange",
    "ImagePlan",
    "Tracks",
    "VideoError",
    "VideoInfo",
    "VideoPlan",
    "atomic_dir",
    "atomic_file",
    "check_frame_range",
    "check_output",
    "describe_os_error",
    "join_segments",
    "list_images",
    "parse_crop",
    "parse_frame_range",
    "parse_tracks",
    "plan_image_dir",
    "plan_video",
    "probe_video",
    "process_image_dir",
    "resize_frame",
    "target_size",
    "to_uint",
    "transcode_video",
]

log = logging.getLogger("vsanimesr.video")

Process = Callable[[Iterable[np.ndarray]], Iterator[Any]]
"""Turns RGB frames (H, W, 3) uint8 into RGB frames in [0, 1] (values outside are clamped): (h, w, 3) arrays, or
(3, h, w) float tensors on the engine's device (:meth:`vsanimesr.engine.AnimeSR.stream_tensors`), which
:class:`FrameEncoder` converts for the encoder where they are."""

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class VideoError(RuntimeError):
    """A failure the user can act on (bad input, unwritable output, full disk); the message is one line."""


@dataclass(frozen=True)
class Codec:
    """An output video codec choice, mapped to the FFmpeg encoder that PyAV ships."""

    encoder: str
    pix_fmt: str
    default_crf: int | None
    """None: a lossless codec (no quality level)."""
    bits: int
    params_option: str | None = None
    """The FFmpeg option that passes the encoder's own ``key=value:...`` list."""
    tunes: tuple[str, ...] = ()
    quiet_params: str = ""
    """Always passed first in ``params_option`` (keeps the encoder's own log off stderr)."""
    fixed: tuple[tuple[str, str], ...] = ()
    """Encoder options always passed."""


CODECS: dict[str, Codec] = {
    "hevc": Codec("libx265", "yuv420p10le", 18, 10, "x265-params",
                  ("animation", "grain", "psnr", "ssim", "fastdecode", "zerolatency"), "log-level=error"),
    "h264": Codec("libx264", "yuv420p", 16, 8, "x264-params",
                  ("animation", "film", "grain", "stillimage", "psnr", "ssim", "fastdecode", "zerolatency")),
    "av1": Codec("libsvtav1", "yuv420p10le", 24, 10, "svtav1-params"),
    # Lossless, every frame a keyframe, checksummed slices: for checks and for encoding later.
    "ffv1": Codec("ffv1", "yuv420p10le", None, 10, fixed=(("g", "1"), ("level", "3"), ("slicecrc", "1"))),
}


@dataclass(frozen=True)
class FrameRange:
    """Frames ``start`` (inclusive) to ``end`` (exclusive, ``None`` = to the end), counted from 0."""

    start: int = 0
    end: int | None = None

    def __len__(self) -> int:  # only meaningful when end is known
        return max(0, (self.end or 0) - self.start)

    def __str__(self) -> str:
        return f"{self.start}:{'' if self.end is None else self.end}"


@dataclass(frozen=True)
class Crop:
    """A ``width`` x ``height`` rectangle with its top-left corner at (``x``, ``y``) in input pixels; without
    ``x``/``y`` it is centred (as FFmpeg's ``crop=w:h``), on even offsets so that 4:2:0 chroma stays aligned.

    The one crop of the project: ``animesr --crop W:H[:X:Y]`` and ``examples/upscale.vpy``'s ``crop=W:H[:X:Y]``.
    """

    width: int
    height: int
    x: int | None = None
    y: int | None = None

    def box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """(x, y, w, h) inside a ``width`` x ``height`` frame; a :class:`VideoError` if it does not fit."""
        x = (width - self.width) // 4 * 2 if self.x is None else self.x
        y = (height - self.height) // 4 * 2 if self.y is None else self.y
        if x < 0 or y < 0 or x + self.width > width or y + self.height > height:
            raise VideoError(f"crop {self} does not fit the {width}x{height} input")
        return x, y, self.width, self.height

    def __str__(self) -> str:
        corner = "" if self.x is None else f":{self.x}:{self.y}"
        return f"{self.width}:{self.height}{corner}"


def parse_frame_range(text: str) -> FrameRange:
    """Parse ``START:END`` (END exclusive; either side may be empty, e.g. ``:48`` or ``100:``)."""
    start_s, sep, end_s = text.partition(":")
    try:
        if not sep:
            raise ValueError
        start = int(start_s) if start_s.strip() else 0
        end = int(end_s) if end_s.strip() else None
    except ValueError:
        raise ValueError(f"parse_frame_range: expected START:END (e.g. 0:48), got {text!r}") from None
    if start < 0 or (end is not None and end <= start):
        raise ValueError(f"parse_frame_range: need 0 <= START < END, got {text!r}")
    return FrameRange(start, end)


def parse_crop(text: str) -> Crop:
    """Parse ``W:H`` (centred) or ``W:H:X:Y`` (top-left corner at X, Y): FFmpeg's crop syntax."""
    parts = text.split(":")
    try:
        if len(parts) not in (2, 4):
            raise ValueError
        nums = [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"parse_crop: expected W:H (centred) or W:H:X:Y (e.g. 160:120:240:180), got {text!r}") \
            from None
    if nums[0] < 1 or nums[1] < 1 or (len(nums) == 4 and min(nums[2:]) < 0):
        raise ValueError(f"parse_crop: width/height must be >= 1 and x/y >= 0, got {text!r}")
    return Crop(*nums)


def target_size(height: int, width: int, outscale: float, *, even: bool = False) -> tuple[int, int]:
    """Output (height, width) for an ``outscale`` relative to the input; ``even`` for 4:2:0 video."""
    if not outscale > 0:
        raise ValueError(f"target_size: outscale must be > 0, got {outscale!r}")
    h, w = max(1, round(height * outscale)), max(1, round(width * outscale))
    if even:
        h, w = max(2, h + (h % 2)), max(2, w + (w % 2))
    return h, w


def resize_frame(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize a float (H, W, 3) frame with Spline36, the kernel ``core.animesr.Upscale(outscale=...)`` uses
    (:mod:`vsanimesr.resample`: zimg's taps, widened when shrinking so downscaling does not alias)."""
    if frame.shape[:2] == (height, width):
        return frame
    import torch

    from vsanimesr.resample import resize

    t = torch.from_numpy(np.ascontiguousarray(frame, dtype=np.float32)).permute(2, 0, 1)
    return resize(t, (height, width)).permute(1, 2, 0).numpy()


def to_uint(frame: np.ndarray, bits: int) -> np.ndarray:
    """Clamp a float frame to [0, 1] and round it to uint8 (``bits=8``) or full-range uint16 (``bits>8``)."""
    if frame.dtype == np.uint8 and bits == 8:
        return frame
    peak = 255.0 if bits == 8 else 65535.0
    f = np.asarray(frame, dtype=np.float32)
    if frame.dtype == np.uint8:
        f = f / 255.0
    out = np.rint(np.clip(f, 0.0, 1.0) * peak)
    return out.astype(np.uint8 if bits == 8 else np.uint16)


def describe_os_error(e: BaseException) -> str:
    """A short reason for an OS/FFmpeg error, naming a full disk explicitly."""
    code = getattr(e, "errno", None)
    if code is not None and code < 0:  # FFmpeg reports AVERROR(e) = -e
        code = -code
    if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return f"disk full or file size limit reached ({os.strerror(code)})"
    return getattr(e, "strerror", None) or str(e) or type(e).__name__


# --------------------------------------------------------------------------------------------------------------
# Atomic outputs


def check_output(dest: Path, *, src: Path | None = None, overwrite: bool = False, folder: bool = False) -> None:
    """Refuse an output that exists (unless ``overwrite``), is the input, or sits in a missing/unwritable folder.

    ``folder``: ``dest`` is a folder to create, which may exist when it is empty.
    """
    dest = Path(dest)
    if src is not None and dest.resolve() == Path(src).resolve():
        raise VideoError(f"output {str(dest)!r} is the input {'folder' if folder else 'file'}")
    if folder:
        if dest.exists() and not dest.is_dir():
            raise VideoError(f"output {str(dest)!r} exists and is not a folder")
        if dest.is_dir() and any(dest.iterdir()) and not overwrite:
            raise VideoError(f"output folder {str(dest)!r} is not empty (pass --overwrite to replace it)")
    else:
        if dest.is_dir():
            raise VideoError(f"output {str(dest)!r} is a directory")
        if dest.exists() and not overwrite:
            raise VideoError(f"output {str(dest)!r} already exists (pass --overwrite to replace it)")
    parent = dest.absolute().parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        reason = "no such folder" if not parent.exists() else "not a folder" if not parent.is_dir() else "no permission"
        raise VideoError(f"cannot write to the output folder {str(parent)!r}: {reason}")


@contextlib.contextmanager
def atomic_file(dest: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``dest`` (same suffix, so the format is inferred); rename it on success.

    Any exception (including KeyboardInterrupt) removes the temporary file and propagates.
    """
    dest = Path(dest)
    check_output(dest, overwrite=overwrite)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.stem}.", suffix=f".partial{dest.suffix}", dir=dest.parent)
    except OSError as e:
        raise VideoError(f"cannot write to the output folder {str(dest.parent)!r}: {describe_os_error(e)}") from e
    os.close(fd)
    tmp = Path(tmp_name)
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o666 & ~mask)  # mkstemp makes it private; the result should look like any other new file
    try:
        yield tmp
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(dest: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``dest``; on success it replaces ``dest`` (which must be absent or empty
    unless ``overwrite``). On failure the temporary folder is removed and ``dest`` is untouched."""
    dest = Path(dest)
    check_output(dest, overwrite=overwrite, folder=True)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent))
    except OSError as e:
        raise VideoError(f"cannot write to the output folder {str(dest.parent)!r}: {describe_os_error(e)}") from e
    try:
        yield tmp
        if dest.is_dir():
            old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
            os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------------------------------------------
# Video: what the input holds, and which of its streams go to the output


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe_video` reads from a container's header, without decoding."""

    width: int
    height: int
    rate: Fraction
    frames: int | None
    """Frame count from the header (MP4) or estimated from the duration (Matroska); None when unknown."""
    exact: bool
    """Whether ``frames`` is the header's count rather than an estimate."""

    def describe_length(self) -> str:
        if self.frames is None:
            return "an unknown number of frames"
        return f"{'' if self.exact else 'about '}{self.frames} frames (0 to {self.frames - 1})"


def _open_input(src: Path) -> Any:
    import av

    src = Path(src)
    if not src.is_file():
        raise VideoError(f"input {str(src)!r} does not exist or is not a file")
    try:
        return av.open(str(src))
    except (av.FFmpegError, OSError) as e:
        reason = describe_os_error(e)
        raise VideoError(f"cannot read {str(src)!r} (corrupt, truncated or not a video?): {reason}") from e


def _main_video(inp: Any, src: Path) -> Any:
    """The first video stream that is not a cover picture."""
    import av

    for s in inp.streams.video:
        if not s.disposition & av.stream.Disposition.attached_pic:
            return s
    raise VideoError(f"{str(src)!r} has no video stream")


def _info(inp: Any, vin: Any) -> VideoInfo:
    rate: Fraction = vin.average_rate or vin.guessed_rate or Fraction(24000, 1001)
    n, exact = int(vin.frames or 0), True
    if n <= 0:
        exact = False
        if vin.duration and vin.time_base:
            seconds = float(vin.duration * vin.time_base)
        elif m := re.fullmatch(r"(\d+):(\d\d):(\d\d(?:\.\d+)?)", vin.metadata.get("DURATION", "")):
            seconds = int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3])  # Matroska's per-track tag (mkvmerge, FFmpeg)
        else:  # the container's duration (microseconds) spans all streams, so it can be a little long
            seconds = (inp.duration or 0) / 1_000_000
        n = round(seconds * float(rate))
    cc = vin.codec_context
    return VideoInfo(cc.width, cc.height, rate, n if n > 0 else None, exact)


def probe_video(src: Path) -> VideoInfo:
    """Size, frame rate and length of ``src``'s video from its header (fast: nothing is decoded).

    Raises:
        VideoError: missing, unreadable or video-less input.
    """
    with contextlib.closing(_open_input(src)) as inp:
        return _info(inp, _main_video(inp, Path(src)))


def check_frame_range(frames: FrameRange, info: VideoInfo, src: Path) -> FrameRange:
    """``frames`` limited to the video's length; an error naming the real length when it starts past the end."""
    n = info.frames
    if n is None:
        return frames
    # An estimated length may be a frame short: only a start clearly past it is refused before decoding.
    if frames.start >= n + (0 if info.exact else 2):
        raise VideoError(
            f"frames {frames.start}:{'' if frames.end is None else frames.end} start past the end of "
            f"{str(src)!r}, which has {info.describe_length()}"
        )
    if info.exact and frames.end is not None and frames.end > n:
        log.warning("frames %d:%d: %s has %s; taking %d:%d", frames.start, frames.end, Path(src).name,
                    info.describe_length(), frames.start, n)
        return FrameRange(frames.start, n)
    return frames


@dataclass(frozen=True)
class Tracks:
    """Which audio and subtitle tracks to keep: ``None`` = all, ``()`` = none, else track numbers (0 = the first
    track of that kind) or language tags (``jpn``), as parsed by :func:`parse_tracks`."""

    audio: tuple[int | str, ...] | None = None
    subtitles: tuple[int | str, ...] | None = None

    def pick(self, inp: Any, src: Path) -> set[int]:
        """Input stream indices to keep; an item that matches no track is an error that lists the tracks."""
        keep: set[int] = set()
        for kind, items in (("audio", self.audio), ("subtitle", self.subtitles)):
            streams = [s for s in inp.streams if s.type == kind]
            if items is None:
                keep.update(s.index for s in streams)
                continue
            for item in items:
                hits = [s for k, s in enumerate(streams)
                        if item == k or (isinstance(item, str) and (s.language or "").lower() == item.lower())]
                if not hits:
                    have = "; ".join(f"{k}: {_describe(s)}" for k, s in enumerate(streams)) or "none"
                    raise VideoError(f"no {kind} track {item!r} in {str(src)!r} ({kind} tracks: {have})")
                keep.update(s.index for s in hits)
        return keep


def parse_tracks(text: str) -> tuple[int | str, ...] | None:
    """Parse a track selection: ``all``, ``none``, or a comma list of track numbers and language tags (``0,eng``)."""
    text = text.strip()
    if text.lower() == "all":
        return None
    if text.lower() == "none":
        return ()
    items: list[int | str] = []
    for part in text.split(","):
        part = part.strip()
        if part.isdigit():
            items.append(int(part))
        elif part.isalpha() and 2 <= len(part) <= 8:
            items.append(part.lower())
        else:
            raise ValueError(f"parse_tracks: expected all, none or a list such as 0,2 or jpn,eng, got {text!r}")
    return tuple(items)


def _describe(s: Any) -> str:
    """``aac, jpn "Japanese 2.0"`` for messages."""
    name = s.codec_context.name if s.codec_context is not None else s.metadata.get("filename", "")
    lang = s.metadata.get("language")
    title = s.metadata.get("title")
    return ", ".join(p for p in (name, lang, f'"{title}"' if title else "") if p) or s.type


# Tags that describe one encode (mkvmerge's/FFmpeg's statistics, the encoder's name): stale after we encode or cut.
_STALE_TAGS = ("duration", "encoder", "number_of_frames", "number_of_bytes", "bps", "_statistics_")


def _fresh_tags(tags: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in tags.items() if not k.lower().startswith(_STALE_TAGS)}


class _Layout:
    """The output container laid out like the input: kept streams in input order with their tags and dispositions,
    attachments, container tags; chapters cut to the range at the end. ``make_video`` creates the new video stream
    in the place of ``vin``. What the output format cannot hold is logged (a warning) and listed in ``dropped``."""

    def __init__(self, out: Any, inp: Any, vin: Any, keep: frozenset[int], make_video: Callable[[], Any], *,
                 video_only: bool = False) -> None:
        import av

        self.out, self.inp = out, inp
        self.copies: dict[int, Any] = {}
        self.dropped: list[str] = []
        fmt = out.format.name
        matroska = "matroska" in fmt
        self.video: Any = None
        if video_only:
            self.video = make_video()
            return
        out.metadata.update(_fresh_tags(dict(inp.metadata)))
        for s in inp.streams:
            what = f"{s.type} stream #{s.index} ({_describe(s)})"
            if s is vin:
                self.video = make_video()
                self.video.metadata.update(_fresh_tags(dict(s.metadata)))
                self.video.disposition = s.disposition
            elif s.discard == av.stream.Discard.all:
                pass  # the demuxer's own bookkeeping (MP4's chapter text track comes back as chapters)
            elif s.type in ("audio", "subtitle"):
                if s.index not in keep:
                    log.info("leaving out %s as asked", what)
                    continue
                try:
                    st = out.add_stream_from_template(s)
                except (av.FFmpegError, ValueError) as e:
                    self._drop(f"{what}: the {fmt.split(',')[0]} format cannot hold it ({e})")
                    continue
                st.metadata.update(_fresh_tags(dict(s.metadata)))
                st.disposition = s.disposition
                self.copies[s.index] = st
            elif s.type == "attachment":
                if not matroska:
                    self._drop(f"{what}: only Matroska (.mkv) holds attachments")
                    continue
                try:
                    out.add_stream_from_template(s)
                except (av.FFmpegError, ValueError) as e:
                    self._drop(f"{what}: {e}")
            else:
                self._drop(f"{what}: {s.type} streams are not copied")

    def _drop(self, text: str) -> None:
        self.dropped.append(text)
        log.warning("not kept: %s", text)

    def chapters(self, t0: float, t1: float, shift: float) -> None:
        """Input chapters that overlap [t0, t1) seconds, cut to it and moved by ``-shift``."""
        kept = []
        for ch in self.inp.chapters():
            tb = ch["time_base"]
            start, end = float(ch["start"] * tb), float(ch["end"] * tb)
            if end <= t0 or start >= t1:
                continue
            kept.append({
                "id": len(kept) + 1,
                "start": round((max(start, t0) - shift) * 1000),
                "end": round((min(end, t1) - shift) * 1000),
                "time_base": Fraction(1, 1000),
                "metadata": dict(ch["metadata"]),
            })
        if kept:
            self.out.set_chapters(kept)


# --------------------------------------------------------------------------------------------------------------
# Video: encoding


@dataclass(frozen=True)
class Encoding:
    """What the video encoder is asked for (FFmpeg's libx265 / libx264 / libsvtav1 options)."""

    codec: str = "hevc"
    crf: int | None = None
    """Constant-quality level; None = the codec's ``default_crf``."""
    preset: str | None = None
    tune: str | None = None
    params: str | None = None
    """The encoder's own ``key=value:key=value`` list (x265-params, x264-params, svtav1-params)."""

    @property
    def spec(self) -> Codec:
        if self.codec not in CODECS:
            raise ValueError(f"Encoding: codec must be one of {', '.join(CODECS)}, got {self.codec!r}")
        return CODECS[self.codec]

    def options(self) -> dict[str, str]:
        spec = self.spec
        opts = dict(spec.fixed)
        if spec.default_crf is not None:
            opts["crf"] = str(spec.default_crf if self.crf is None else self.crf)
        elif self.crf is not None:
            raise ValueError(f"Encoding: crf={self.crf!r}: {spec.encoder} is lossless (it has no quality level)")
        if self.preset:
            opts["preset"] = self.preset
        if self.tune:
            if self.tune not in spec.tunes:
                raise ValueError(f"Encoding: tune={self.tune!r}: not one of {spec.encoder}'s tunes "
                                 f"({', '.join(spec.tunes) or 'it has none'})")
            opts["tune"] = self.tune
        if self.params and spec.params_option is None:
            raise ValueError(f"Encoding: params={self.params!r}: {spec.encoder} takes no parameter list")
        params = ":".join(p for p in (spec.quiet_params, self.params) if p)
        if params:
            opts[spec.params_option] = params
        return opts

    def check(self) -> None:
        """Open the encoder once on a tiny frame, so a bad preset, tune or parameter fails before any work.

        Raises:
            ValueError: ``Encoding: <field>=<value>: <what the encoder said>``, naming the refused field.
        """
        spec = self.spec
        error = _open_error(spec, self.options())
        if error is None:
            return
        for name in ("crf", "preset", "tune", "params"):  # blame the first setting that fails on its own
            value = getattr(self, name)
            if value is not None and (alone := _open_error(spec, Encoding(self.codec, **{name: value}).options())):
                raise ValueError(f"Encoding: {name}={value!r}: {spec.encoder} refused it ({alone})")
        raise ValueError(f"Encoding: {spec.encoder} refused {self.options()} ({error})")


def _open_error(spec: Codec, opts: dict[str, str]) -> str | None:
    """What FFmpeg says when opening ``spec``'s encoder with ``opts`` on a 64x64 frame; None when it is happy."""
    import av
    import av.logging

    cc = av.CodecContext.create(spec.encoder, "w")
    cc.width, cc.height, cc.pix_fmt = 64, 64, spec.pix_fmt
    cc.time_base = Fraction(1, 24)
    cc.options = opts
    level, skip = av.logging.get_level(), av.logging.get_skip_repeated()
    av.logging.set_level(av.logging.WARNING)  # PyAV keeps FFmpeg's log off unless asked; the encoder warns there
    av.logging.set_skip_repeated(False)  # the same complaint twice in a row must be seen twice
    try:
        with av.logging.Capture() as logs:
            cc.open()
    except av.FFmpegError as e:
        return e.strerror or str(e)
    finally:
        av.logging.set_level(level)
        av.logging.set_skip_repeated(skip)
    complaints = [m.strip().rstrip(".") for _lvl, _name, m in logs
                  if re.search(r"unknown option|invalid value|error parsing|unrecogni[sz]ed", m, re.IGNORECASE)]
    return "; ".join(complaints) or None


# The decoder and encoder sides of one frame, shared by transcode_video and the chunks of vsanimesr.distributed
# (whose segments must be encoded exactly as one run encodes).


def _source_matrix(vin: Any) -> str | None:
    """The YUV matrix to read ``vin`` with: untagged HD video is BT.709 by convention (FFmpeg would assume BT.601),
    the same rule as vsanimesr.upscale; None = the stream's own tag."""
    cc = vin.codec_context
    untagged = cc.colorspace == 2 and (cc.pix_fmt or "").startswith(("yuv", "nv", "p0"))  # 2: unspecified
    return "ITU709" if untagged and (cc.width >= 1280 or cc.height >= 720) else None


def _frame_rgb(fr: Any, matrix: str | None, crop: tuple[int, int, int, int] | None) -> np.ndarray:
    """A decoded frame as RGB: uint8, or float32 in [0, 1] for 10/12-bit sources (their precision kept)."""
    if fr.format.components[0].bits > 8:
        rgb = fr.reformat(format="rgb48le", src_colorspace=matrix).to_ndarray()
        rgb = rgb.astype(np.float32) / 65535.0
    else:
        rgb = fr.reformat(format="rgb24", src_colorspace=matrix).to_ndarray()
    if crop is not None:
        x, y, w, h = crop
        rgb = rgb[y : y + h, x : x + w]
    return rgb


def _open_encoder(out: Any, encoding: Encoding, *, rate: Fraction, time_base: Fraction, size: tuple[int, int]) -> Any:
    """The output's video stream: ``encoding``'s encoder at ``size`` (height, width), tagged BT.709 limited range."""
    spec = encoding.spec
    st = out.add_stream(spec.encoder, rate=rate)
    st.height, st.width = size
    st.pix_fmt = spec.pix_fmt
    st.time_base = time_base
    cc = st.codec_context
    cc.color_range = 1  # limited ("tv") range, what players expect
    cc.colorspace = cc.color_primaries = cc.color_trc = 1  # BT.709, the convention for HD output
    if spec.encoder == "libx265" and out.format.name in ("mov,mp4,m4a,3gp,3g2,mj2", "mp4", "mov"):
        cc.codec_tag = "hvc1"  # the tag Apple players require for HEVC in MP4
    st.options = encoding.options()
    return st


_PLANES = {"yuv420p": "YUV420P8", "yuv420p10le": "YUV420P10"}
"""FFmpeg pixel format of an encoder (:data:`CODECS`) -> the planes :mod:`vsanimesr.formats` writes for it."""


class FrameEncoder:
    """Upscaled frames -> the encoder's frames, BT.709 limited range in ``spec``'s pixel format at ``size``.

    The resize (``outscale``), clamp, colour matrix, left-sited chroma subsampling and rounding run where the frame
    is, on the engine's device for its tensors (:mod:`vsanimesr.formats`, the code ``core.animesr.Upscale(format=...)``
    runs, with zimg's arithmetic), and the planes are written straight into the AVFrame (through pinned memory on
    CUDA). Shared by the CLI and :mod:`vsanimesr.distributed`, whose segments must be encoded exactly alike.
    Not reentrant: one per encoder.
    """

    def __init__(self, spec: Codec, size: tuple[int, int]) -> None:
        from vsanimesr.formats import OutputSpec, PixelFormat

        self.pix_fmt, self.size = spec.pix_fmt, (int(size[0]), int(size[1]))
        self.spec = OutputSpec(PixelFormat.parse(_PLANES[spec.pix_fmt]), matrix=1, full_range=False)
        self._writers: dict[tuple[Any, ...], Any] = {}

    def __call__(self, y: Any) -> Any:
        """``y``: an (H, W, 3) array (uint8, or float in [0, 1]) or a (3, H, W) float tensor on any device."""
        import av
        import torch

        from vsanimesr.staging import PlaneWriter

        if isinstance(y, np.ndarray):
            rgb = torch.from_numpy(y).permute(2, 0, 1)
            rgb = rgb.float().div_(255.0) if y.dtype == np.uint8 else rgb
        else:
            rgb = y
        key = (tuple(rgb.shape[1:]), rgb.device)
        writer = self._writers.get(key)
        if writer is None:
            writer = self._writers[key] = PlaneWriter(self.spec, self.size, src_size=key[0], device=rgb.device)
        vf = av.VideoFrame(self.size[1], self.size[0], self.pix_fmt)
        dtype = writer.dtype
        dst = [np.ndarray(shape, dtype, buffer=p, strides=(p.line_size, dtype.itemsize))
               for p, shape in zip(vf.planes, writer.plane_shapes, strict=True)]
        writer.write(rgb, dst)
        return vf


class VideoEncoder:
    """The output's video stream fed with upscaled frames: :class:`FrameEncoder`, then the encoder, whose packets
    leave with usable timestamps. Shared by the CLI and :mod:`vsanimesr.distributed`.

    x265 leaves a packet's decoding timestamp uninitialised when a clip has no more frames than its B-frame delay
    (two frames at preset ultrafast): MP4 then refuses the packet ("pts/dts pair unsupported") or stores nonsense,
    depending on what the memory held. A dts that cannot be right (missing, after its pts, more than
    :attr:`MAX_REORDER` frames before it, or not after the previous one) becomes the previous dts + 1, or the pts for
    the first packet.
    """

    MAX_REORDER = 64
    """Frames a dts may lag its pts (encoders reorder at most about 16)."""

    def __init__(self, stream: Any, spec: Codec, size: tuple[int, int], *, rate: Fraction, time_base: Fraction) -> None:
        self.stream, self.rate, self.time_base = stream, rate, time_base
        self.frame = FrameEncoder(spec, size)
        self._last_dts: int | None = None
        self._warned = False

    def encode(self, y: Any, pts: int) -> list[Any]:
        """Packets for upscaled frame ``y`` (see :class:`FrameEncoder`) shown at ``pts`` (in ``time_base``)."""
        vf = self.frame(y)
        vf.pts = pts
        vf.time_base = self.time_base
        return self._checked(self.stream.encode(vf))

    def flush(self) -> list[Any]:
        """The encoder's remaining packets."""
        return self._checked(self.stream.encode(None))

    def _checked(self, packets: list[Any]) -> list[Any]:
        for p in packets:
            if p.pts is None:
                continue
            frame = 1 / (self.rate * (p.time_base or self.stream.codec_context.time_base))
            last, dts = self._last_dts, p.dts
            if dts is None or dts > p.pts or dts < p.pts - self.MAX_REORDER * frame or (last is not None
                                                                                          and dts <= last):
                p.dts = dts = p.pts if last is None else last + 1
                if not self._warned:
                    self._warned = True
                    log.debug("%s gave a packet an impossible dts; replaced (pts %d, dts %d)",
                              self.stream.codec_context.name, p.pts, dts)  # fmt: skip
            self._last_dts = dts
        return packets


class _Transcoder:
    """One run of :func:`transcode_video`: reads the input's frames, encodes the processed ones, copies the rest.

    The encoder is created with the output's size before any packet is muxed (the container header needs every
    stream); audio/subtitle packets wait in a :class:`_PacketCopier` until their place relative to the selected
    frames is known.
    """

    def __init__(self, inp: Any, vin: Any, src: Path, *, encoding: Encoding, plan: VideoPlan, segment: bool) -> None:
        self.inp, self.vin, self.src = inp, vin, src
        self.encoding, self.spec = encoding, encoding.spec
        self.frames, self.crop, self.expected = plan.frames, plan.crop, plan.expected
        self.height, self.width = plan.size
        self.keep, self.segment = plan.keep, segment
        self.tb: Fraction = vin.time_base
        self.rate: Fraction = vin.average_rate or vin.guessed_rate or Fraction(24000, 1001)
        self.frame_ticks = 1 / (self.rate * self.tb)  # one frame's duration in time-base units, for missing pts
        self.pending_pts: deque[int] = deque()  # pts of frames handed to ``process`` and not yet written
        self.decoded = 0
        self.last_pts: int | None = None
        self.src_matrix = _source_matrix(vin)

    def _open_encoder(self, out: Any) -> Any:
        return _open_encoder(out, self.encoding, rate=self.rate, time_base=self.tb, size=(self.height, self.width))

    def _rgb(self, fr: Any) -> np.ndarray:
        return _frame_rgb(fr, self.src_matrix, self.crop)

    def _frames_in(self, copier: _PacketCopier) -> Iterator[np.ndarray]:
        """The selected frames as RGB arrays; demuxed packets of copied streams go to ``copier`` on the way."""
        import av

        frames, vin = self.frames, self.vin
        for packet in self.inp.demux():
            s = packet.stream
            if s.index in copier.copies:
                copier.add(packet)
                if copier.final and copier.all_past():
                    return
            if s.index != vin.index or copier.final:
                continue
            try:
                decoded = packet.decode()
            except av.FFmpegError as e:
                raise VideoError(f"cannot decode {str(self.src)!r} (corrupt or truncated?): {e}") from e
            for fr in decoded:
                idx = self.decoded
                self.decoded += 1
                if fr.pts is not None:
                    pts = fr.pts
                else:  # no timestamp: continue at the nominal frame rate
                    pts = round(self.last_pts + self.frame_ticks) if self.last_pts is not None else 0
                self.last_pts = pts
                if idx < frames.start:
                    copier.before_range(float(pts * self.tb))
                    continue
                if frames.end is not None and idx >= frames.end:
                    copier.video_done()
                    break
                copier.video_frame(float(pts * self.tb), float((pts + self.frame_ticks) * self.tb))
                self.pending_pts.append(pts)
                yield self._rgb(fr)
        copier.video_done()

    def run(self, tmp: Path, process: Process,
            progress: Callable[[int | None], Callable[[], None]] | None) -> dict[str, object]:
        import av

        out = av.open(str(tmp), "w")
        with contextlib.closing(out):
            layout = _Layout(out, self.inp, self.vin, self.keep, lambda: self._open_encoder(out),
                             video_only=self.segment)
            vout = layout.video
            copier = _PacketCopier(out, layout.copies, self.frames)
            tick = progress(self.expected) if progress else (lambda: None)
            written, shift, t_end = 0, None, 0.0
            encoder = VideoEncoder(vout, self.spec, (self.height, self.width), rate=self.rate, time_base=self.tb)
            for y in process(self._frames_in(copier)):
                pts = self.pending_pts.popleft()
                if shift is None:
                    shift = pts if self.frames.start > 0 and not self.segment else 0
                out.mux(encoder.encode(y, pts - shift))
                written += 1
                t_end = float((pts + self.frame_ticks) * self.tb)
                tick()
            if written == 0:
                raise VideoError(
                    f"frames {self.frames.start}:{'' if self.frames.end is None else self.frames.end} start past "
                    f"the end of {str(self.src)!r}, which has {self.decoded} frames (0 to {self.decoded - 1})"
                )
            out.mux(encoder.flush())
            copied = [s.type for s in layout.copies.values()]
            if not self.segment:
                t0 = copier.t0 if self.frames.start > 0 and copier.t0 is not None else float("-inf")
                layout.chapters(t0, t_end if self.frames.end else float("inf"), float(shift * self.tb))
        if self.expected is not None and written < self.expected:
            raise VideoError(
                f"{str(self.src)!r} ended after {written} of {self.expected} frames (truncated or corrupt input?)"
            )
        return {
            "frames": written,
            "size": (self.width, self.height),
            "codec": self.spec.encoder,
            "copied_streams": copied,
            "dropped": layout.dropped,
        }


def _expected(info: VideoInfo, frames: FrameRange) -> int | None:
    """Frames that will be processed when the header says how many there are (for the progress bar)."""
    if not info.exact or info.frames is None:
        return len(frames) if frames.end is not None else None
    end = info.frames if frames.end is None else min(frames.end, info.frames)
    return max(0, end - frames.start)


@dataclass(frozen=True)
class VideoPlan:
    """A checked :func:`transcode_video` job: what :func:`plan_video` found out before any frame is decoded."""

    info: VideoInfo
    frames: FrameRange
    """The requested range, its end limited to the video's length."""
    crop: tuple[int, int, int, int] | None
    """(x, y, w, h) in input pixels."""
    size: tuple[int, int]
    """Output (height, width)."""
    expected: int | None
    """Frames that will be written, when the header says."""
    keep: frozenset[int]
    """Input stream indices of the audio/subtitle tracks to copy."""


def plan_video(
    src: Path,
    dest: Path,
    *,
    encoding: Encoding = Encoding(),
    frames: FrameRange = FrameRange(),
    crop: Crop | None = None,
    outscale: float | None = None,
    scale: int = 4,
    tracks: Tracks = Tracks(),
    segment: bool = False,
    overwrite: bool = False,
) -> VideoPlan:
    """Check everything about a :func:`transcode_video` job that can be checked without decoding (input, range
    against the real length, crop, tracks, encoder settings, output path); fast, so callers run it first.

    Raises:
        VideoError: with the real bounds (length, size, tracks) in the message.
        ValueError: encoder settings the encoder refuses (``Encoding: <field>=<value>: ...``).
    """
    src, dest = Path(src), Path(dest)
    with contextlib.closing(_open_input(src)) as inp:
        vin = _main_video(inp, src)
        info = _info(inp, vin)
        frames = check_frame_range(frames, info, src)
        box = crop.box(info.width, info.height) if crop is not None else None
        base_h, base_w = (box[3], box[2]) if box else (info.height, info.width)
        size = target_size(base_h, base_w, scale if outscale is None else outscale, even=True)
        keep = frozenset() if segment else frozenset(tracks.pick(inp, src))
    encoding.check()
    check_output(dest, src=src, overwrite=overwrite)
    return VideoPlan(info, frames, box, size, _expected(info, frames), keep)


def transcode_video(
    src: Path,
    dest: Path,
    process: Process,
    *,
    encoding: Encoding = Encoding(),
    frames: FrameRange = FrameRange(),
    crop: Crop | None = None,
    outscale: float | None = None,
    scale: int = 4,
    tracks: Tracks = Tracks(),
    segment: bool = False,
    overwrite: bool = False,
    progress: Callable[[int | None], Callable[[], None]] | None = None,
) -> dict[str, object]:
    """Decode ``src`` with PyAV, run ``process`` over its RGB frames, encode to ``dest``, and copy everything else.

    Frame rate and presentation timestamps are kept. The output keeps the input's stream order, per-stream tags
    (language, title) and dispositions (default, forced), container tags, chapters and attachments where its format
    holds them (Matroska holds all); what it cannot hold is logged as a warning and listed in the summary's
    ``dropped``. ``tracks`` picks audio/subtitle tracks. With a frame range that does not start at 0 every stream
    is shifted so the output starts at 0, and only the packets and chapters inside the range are kept.
    ``process`` must enlarge by ``scale``; ``outscale`` resizes its output to that factor of the (cropped) input.
    ``segment=True`` writes only the video, with the input's own timestamps (not shifted): one part for
    :func:`join_segments`. Everything :func:`plan_video` checks is checked before ``progress(total)`` is called;
    it returns a callback called once per frame.

    Returns a summary: frames written, output size, codec, copied stream types, dropped streams.

    Raises:
        VideoError: unreadable/corrupt input, unwritable output, full disk, bad options.
    """
    import av

    plan = plan_video(src, dest, encoding=encoding, frames=frames, crop=crop, outscale=outscale, scale=scale,
                      tracks=tracks, segment=segment, overwrite=overwrite)
    src, dest = Path(src), Path(dest)
    with contextlib.closing(_open_input(src)) as inp:
        vin = _main_video(inp, src)
        vin.thread_type = "AUTO"
        job = _Transcoder(inp, vin, src, encoding=encoding, plan=plan, segment=segment)
        with atomic_file(dest, overwrite=overwrite) as tmp:
            try:
                return job.run(tmp, process, progress)
            except (av.FFmpegError, OSError) as e:
                raise VideoError(f"failed while writing {str(dest)!r}: {describe_os_error(e)}") from e


def join_segments(
    source: Path,
    segments: Sequence[Path],
    dest: Path,
    *,
    frames: FrameRange = FrameRange(),
    tracks: Tracks = Tracks(),
    overwrite: bool = False,
) -> dict[str, object]:
    """Join video ``segments`` (consecutive parts of ``source``'s ``frames``, encoded alike) into ``dest`` with
    ``source``'s other streams, tags, chapters and attachments laid out as :func:`transcode_video` does.

    Each segment must keep the source's own timestamps (:func:`transcode_video` with ``segment=True``), so joining
    copies packets without re-encoding and the result equals one :func:`transcode_video` run over ``frames``. With
    ``frames.start > 0`` everything is shifted to start at 0, as there. Timestamps are exact when the segments'
    container keeps the source's time base (``.nut``); Matroska rounds them to 1 ms.

    Raises:
        VideoError: a missing or unreadable segment or source, segments that do not follow each other.
    """
    import av

    if not segments:
        raise ValueError("join_segments: segments is empty")
    source, dest = Path(source), Path(dest)
    inp = _open_input(source)
    with contextlib.ExitStack() as stack:
        stack.enter_context(contextlib.closing(inp))
        vin = _main_video(inp, source)
        keep = frozenset(tracks.pick(inp, source))
        parts = [stack.enter_context(contextlib.closing(_open_input(Path(p)))) for p in segments]
        seg_video = [_main_video(p, Path(name)) for p, name in zip(parts, segments, strict=True)]
        check_output(dest, src=source, overwrite=overwrite)
        with atomic_file(dest, overwrite=overwrite) as tmp:
            out = av.open(str(tmp), "w")
            try:
                with contextlib.closing(out):
                    summary = _join(out, inp, vin, parts, seg_video, segments, frames, keep)
            except (av.FFmpegError, OSError) as e:
                raise VideoError(f"failed while writing {str(dest)!r}: {describe_os_error(e)}") from e
    return summary


def _join(out: Any, inp: Any, vin: Any, parts: list[Any], seg_video: list[Any], names: Sequence[Path],
          frames: FrameRange, keep: frozenset[int]) -> dict[str, object]:
    layout = _Layout(out, inp, vin, keep, lambda: out.add_stream_from_template(seg_video[0]))
    vout = layout.video
    first = seg_video[0]
    # Segments may carry finer timestamps than the source (the encoder snaps them to the frame rate); the range's
    # ends are taken in the source's time base, as transcode_video takes them, so audio, subtitles and chapters are
    # cut at the same instants.
    tb_src: Fraction = vin.time_base
    rate = vin.average_rate or vin.guessed_rate or Fraction(24000, 1001)
    frame_ticks = 1 / (rate * tb_src)

    def source_ticks(pts: int, tb: Fraction) -> int:
        return round(Fraction(pts) * tb / tb_src)

    first_pts = min(p.pts for p in parts[0].demux(first) if p.pts is not None)
    parts[0].seek(0)
    start_time = Fraction(first_pts) * first.time_base if frames.start > 0 else Fraction(0)  # the video's shift
    copier = _PacketCopier(out, layout.copies, frames)
    # The range's ends, from the segments' first and last frames (read once, without decoding).
    bounds, prev = [], -1
    for part, v, name in zip(parts, seg_video, names, strict=True):
        ticks = sorted(source_ticks(p.pts, v.time_base) for p in part.demux(v) if p.pts is not None)
        part.seek(0)
        if not ticks:
            raise VideoError(f"segment {str(name)!r} has no video frames")
        if ticks[0] <= prev:
            raise VideoError(f"segment {str(name)!r} starts at {float(ticks[0] * tb_src):.3f} s, not after the "
                             "previous one")
        bounds.append(len(ticks))
        prev = ticks[-1]
    t_first = float(source_ticks(first_pts, first.time_base) * tb_src)
    t_end = float((prev + frame_ticks) * tb_src)
    copier.video_frame(t_first, t_end)
    copier.video_done()

    def video() -> Iterator[tuple[float, int, Any]]:
        for part, v in zip(parts, seg_video, strict=True):
            offset = round(start_time / v.time_base)
            for p in part.demux(v):
                if p.dts is None:
                    continue
                p.pts -= offset
                p.dts -= offset
                yield float(p.dts * v.time_base), 0, p

    def others() -> Iterator[tuple[float, int, Any]]:
        if layout.copies:
            for p in inp.demux(*[inp.streams[i] for i in layout.copies]):
                if p.dts is not None:
                    yield float(p.dts * p.time_base) - float(start_time), 1, p

    # Interleaved by time, as one run writes them (the muxer would otherwise buffer a whole stream).
    for _t, kind, p in heapq.merge(video(), others(), key=lambda item: (item[0], item[1])):
        if kind == 0:
            p.stream = vout
            out.mux(p)
        else:
            copier.add(p)
    written = sum(bounds)
    shift = t_first if frames.start > 0 else 0.0
    layout.chapters(t_first if frames.start > 0 else float("-inf"), t_end if frames.end else float("inf"), shift)
    return {
        "frames": written,
        "size": (first.codec_context.width, first.codec_context.height),
        "codec": first.codec_context.name,
        "copied_streams": [s.type for s in layout.copies.values()],
        "dropped": layout.dropped,
    }


class _PacketCopier:
    """Remuxes audio/subtitle packets whose time lies in the selected frames' range [t0, t1), shifted by t0.

    A subtitle event that starts before the range and is still shown at its start is kept, cut to start at t0.
    The decoder lags the demuxer by a few frames, so the range's ends are only known late: packets wait in
    ``pending`` until they are surely inside (mux) or outside (drop) the range.
    """

    def __init__(self, out: Any, copies: dict[int, Any], frames: FrameRange) -> None:
        self.out, self.copies = out, copies
        self.bounded = frames.end is not None
        self.t0: float | None = None if frames.start > 0 else float("-inf")  # no lower cut from frame 0
        self.t1 = float("-inf") if self.bounded else float("inf")  # end of the last selected frame so far
        self.floor = float("-inf")  # packets before this are surely before the range
        self.final = False
        self.past: set[int] = set()
        self.pending: list[tuple[float, float, Any]] = []  # (start, time that decides "before the range", packet)

    def before_range(self, t: float) -> None:
        self.floor = t
        self._flush()

    def video_frame(self, t: float, t_end: float) -> None:
        if self.t0 is None:
            self.t0 = t
        if self.bounded:
            self.t1 = max(self.t1, t_end)
        self._flush()

    def video_done(self) -> None:
        if not self.final:
            self.final = True
            if self.t0 is None:  # no frame selected at all
                self.t0 = float("inf")
            self._flush()

    def all_past(self) -> bool:
        return self.past >= self.copies.keys()

    def add(self, packet: Any) -> None:
        if packet.dts is None or packet.pts is None:  # the demuxer's flush packet
            return
        t = float(packet.pts * packet.time_base)
        last = t
        if packet.stream.type == "subtitle" and packet.duration:  # shown until its end
            last = float((packet.pts + packet.duration) * packet.time_base) - 2e-3
        self.pending.append((t, last, packet))
        self._flush()

    def _flush(self) -> None:
        keep = []
        for t, last, packet in self.pending:
            if last < self.floor - 1e-3 or (self.t0 is not None and last < self.t0 - 1e-3):
                continue  # before the range
            if self.t0 is not None and t < self.t1:
                self._mux(packet)
            elif self.final:
                self.past.add(packet.stream.index)  # after the range
            else:
                keep.append((t, last, packet))
        self.pending = keep

    def _mux(self, packet: Any) -> None:
        tb = packet.time_base
        shift = round(self.t0 / tb) if self.t0 > float("-inf") else 0
        if packet.pts < shift and packet.stream.type == "subtitle":  # an event already on screen at t0: cut it
            packet.duration -= shift - packet.pts
            packet.pts = packet.dts = shift
        if shift:
            packet.pts -= shift
            packet.dts = max(0, packet.dts - shift)
        packet.stream = self.copies[packet.stream.index]
        self.out.mux(packet)


# --------------------------------------------------------------------------------------------------------------
# Image sequences


def list_images(folder: Path) -> list[Path]:
    """Image files in ``folder``, sorted by name with numbers compared as numbers (``2.png`` before ``10.png``)."""

    def key(p: Path) -> list[object]:
        return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", p.name)]

    return sorted((p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()), key=key)


def _read_image(p: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(p) as im:
            if im.mode not in ("RGB", "L", "P", "RGBA", "LA"):
                log.warning("%s: converting mode %s to 8-bit RGB", p.name, im.mode)
            return np.array(im.convert("RGB"))  # a writable copy (torch warns on read-only arrays)
    except OSError as e:
        raise VideoError(f"cannot read image {str(p)!r}: {e}") from e


@dataclass(frozen=True)
class ImagePlan:
    """A checked :func:`process_image_dir` job."""

    paths: tuple[Path, ...]
    """The selected images, in order."""
    source_size: tuple[int, int]
    """(height, width) of the first image, which every image must have."""
    crop: tuple[int, int, int, int] | None
    size: tuple[int, int]
    """(height, width) of every frame after the crop."""


def plan_image_dir(src: Path, dest: Path, *, frames: FrameRange = FrameRange(), crop: Crop | None = None,
                   overwrite: bool = False) -> ImagePlan:
    """Check the folders, the range (against the real count) and the crop (against the first image).

    Raises:
        VideoError: missing/empty input folder, a range past the end, a crop that does not fit, a bad output.
    """
    src, dest = Path(src), Path(dest)
    if not src.is_dir():
        raise VideoError(f"input folder {str(src)!r} does not exist")
    every = list_images(src)
    if not every:
        raise VideoError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {str(src)!r}")
    paths = every[frames.start : frames.end]
    if not paths:
        raise VideoError(f"frames {frames} start past the end of {str(src)!r}, which has {len(every)} images "
                         f"(0 to {len(every) - 1})")
    check_output(dest, src=src, overwrite=overwrite, folder=True)
    first = _read_image(paths[0])
    box = crop.box(first.shape[1], first.shape[0]) if crop is not None else None
    size = (box[3], box[2]) if box else (first.shape[0], first.shape[1])
    return ImagePlan(tuple(paths), (first.shape[0], first.shape[1]), box, size)


def process_image_dir(
    src: Path,
    dest: Path,
    process: Process,
    *,
    frames: FrameRange = FrameRange(),
    crop: Crop | None = None,
    outscale: float | None = None,
    overwrite: bool = False,
    progress: Callable[[int | None], Callable[[], None]] | None = None,
) -> dict[str, object]:
    """Run ``process`` over the images of ``src`` in name order and write 8-bit RGB PNGs with the same stems.

    Everything :func:`plan_image_dir` checks is checked before ``progress`` is called.

    Raises:
        VideoError: missing/empty input folder, unreadable image, mixed sizes, unwritable output.
    """
    from PIL import Image

    plan = plan_image_dir(src, dest, frames=frames, crop=crop, overwrite=overwrite)
    size, box = plan.size, plan.crop

    def read_all() -> Iterator[np.ndarray]:
        for p in plan.paths:
            rgb = _read_image(p)
            if rgb.shape[:2] != plan.source_size:
                (h0, w0), (h, w) = plan.source_size, rgb.shape[:2]
                raise VideoError(f"{p.name} is {w}x{h}, but the sequence is {w0}x{h0}: all frames must have one size")
            if box is not None:
                x, y, w, h = box
                rgb = rgb[y : y + h, x : x + w]
            yield rgb

    with atomic_dir(dest, overwrite=overwrite) as tmp:
        tick = progress(len(plan.paths)) if progress else (lambda: None)
        n = 0
        try:
            for p, y in zip(plan.paths, process(read_all()), strict=False):
                if outscale is not None:
                    y = resize_frame(y, *target_size(*size, outscale))
                Image.fromarray(to_uint(y, 8)).save(tmp / (p.stem + ".png"))
                n += 1
                tick()
        except OSError as e:
            raise VideoError(f"failed while writing into {str(dest)!r}: {describe_os_error(e)}") from e
    return {"frames": n, "size": None}

"""Video and image-sequence plumbing for the ``animesr`` command: decode, re-encode, remux, write atomically.

Nothing here knows about the network. :func:`transcode_video` and :func:`process_image_dir` take a ``process``
callable that turns an iterator of RGB frames into an iterator of RGB frames (the engine's ``stream``), so the
plumbing is testable with a cheap stand-in and the engine stays free of file formats.

Outputs are written to a hidden temporary file (or folder) next to the destination and renamed into place only
when everything succeeded, so an interrupted or failed run never leaves a half-written file behind.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

__all__ = [
    "CODECS",
    "Codec",
    "Crop",
    "FrameRange",
    "VideoError",
    "atomic_dir",
    "atomic_file",
    "describe_os_error",
    "list_images",
    "parse_crop",
    "parse_frame_range",
    "process_image_dir",
    "resize_frame",
    "target_size",
    "to_uint",
    "transcode_video",
]

log = logging.getLogger("vsanimesr.video")

Process = Callable[[Iterable[np.ndarray]], Iterator[np.ndarray]]
"""Turns RGB frames (H, W, 3) uint8 into RGB frames (h, w, 3) float32 in [0, 1] (values outside are clamped)."""

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
    fixed: tuple[tuple[str, str], ...] = ()
    """Encoder options always passed."""


CODECS: dict[str, Codec] = {
    "hevc": Codec("libx265", "yuv420p10le", 18, 10),
    "h264": Codec("libx264", "yuv420p", 16, 8),
    "av1": Codec("libsvtav1", "yuv420p10le", 24, 10),
    # Lossless, every frame a keyframe, checksummed slices: for checks and for encoding later.
    "ffv1": Codec("ffv1", "yuv420p10le", None, 10, (("g", "1"), ("level", "3"), ("slicecrc", "1"))),
}


@dataclass(frozen=True)
class FrameRange:
    """Frames ``start`` (inclusive) to ``end`` (exclusive, ``None`` = to the end), counted from 0."""

    start: int = 0
    end: int | None = None

    def __len__(self) -> int:  # only meaningful when end is known
        return max(0, (self.end or 0) - self.start)


@dataclass(frozen=True)
class Crop:
    """A ``width`` x ``height`` rectangle whose top-left corner is (``x``, ``y``), in input pixels."""

    width: int
    height: int
    x: int = 0
    y: int = 0

    def apply(self, frame: np.ndarray, *, func: str = "Crop.apply") -> np.ndarray:
        h, w = frame.shape[:2]
        if self.x + self.width > w or self.y + self.height > h:
            raise VideoError(f"{func}: crop {self.width}x{self.height}+{self.x}+{self.y} does not fit a {w}x{h} frame")
        return frame[self.y : self.y + self.height, self.x : self.x + self.width]


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
    """Parse ``W:H`` or ``W:H:X:Y`` (FFmpeg's crop syntax) into a :class:`Crop`."""
    parts = text.split(":")
    try:
        if len(parts) not in (2, 4):
            raise ValueError
        nums = [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"parse_crop: expected W:H or W:H:X:Y (e.g. 160:120:240:180), got {text!r}") from None
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


@contextlib.contextmanager
def atomic_file(dest: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``dest`` (same suffix, so the format is inferred); rename it on success.

    Any exception (including KeyboardInterrupt) removes the temporary file and propagates.
    """
    dest = Path(dest)
    if dest.exists() and not overwrite:
        raise VideoError(f"output {str(dest)!r} already exists (pass --overwrite to replace it)")
    if dest.is_dir():
        raise VideoError(f"output {str(dest)!r} is a directory")
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
    if dest.exists() and not dest.is_dir():
        raise VideoError(f"output {str(dest)!r} exists and is not a folder")
    if dest.is_dir() and any(dest.iterdir()) and not overwrite:
        raise VideoError(f"output folder {str(dest)!r} is not empty (pass --overwrite to replace it)")
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
# Video


def _count_frames(stream: object, frames: FrameRange) -> int | None:
    """Frames that will be processed, if the container says how many there are (for the progress bar)."""
    n = int(getattr(stream, "frames", 0) or 0)
    if n <= 0:
        dur, tb, rate = stream.duration, stream.time_base, stream.average_rate  # type: ignore[attr-defined]
        if dur and tb and rate:
            n = round(float(dur * tb * rate))
    if frames.end is not None:
        return len(frames) if n <= 0 else max(0, min(frames.end, n) - frames.start)
    return max(0, n - frames.start) if n > 0 else None


def transcode_video(
    src: Path,
    dest: Path,
    process: Process,
    *,
    codec: str = "hevc",
    crf: int | None = None,
    preset: str | None = None,
    frames: FrameRange = FrameRange(),
    crop: Crop | None = None,
    outscale: float | None = None,
    scale: int = 4,
    overwrite: bool = False,
    progress: Callable[[int | None], Callable[[], None]] | None = None,
) -> dict[str, object]:
    """Decode ``src`` with PyAV, run ``process`` over its RGB frames, encode to ``dest``, and remux audio/subtitles.

    Frame rate and presentation timestamps are kept. With a frame range that does not start at 0 every stream is
    shifted so the output starts at 0, and only the audio/subtitle packets inside the range are copied.
    ``process`` must enlarge by ``scale``; ``outscale`` resizes its output to that factor of the (cropped) input.
    ``progress(total)`` returns a callback called once per written frame.

    Returns a summary: frames written, output size, codec, copied streams.

    Raises:
        VideoError: unreadable/corrupt input, unwritable output, full disk, bad options.
    """
    import av

    func = "transcode_video"
    if codec not in CODECS:
        raise ValueError(f"{func}: codec must be one of {', '.join(CODECS)}, got {codec!r}")
    spec = CODECS[codec]
    src, dest = Path(src), Path(dest)
    if not src.is_file():
        raise VideoError(f"input {str(src)!r} does not exist or is not a file")
    if dest.resolve() == src.resolve():
        raise VideoError(f"output {str(dest)!r} is the input file")
    try:
        inp = av.open(str(src))
    except (av.FFmpegError, OSError) as e:
        reason = describe_os_error(e)
        raise VideoError(f"cannot read {str(src)!r} (corrupt, truncated or not a video?): {reason}") from e
    with contextlib.closing(inp):
        if not inp.streams.video:
            raise VideoError(f"{str(src)!r} has no video stream")
        vin = inp.streams.video[0]
        vin.thread_type = "AUTO"
        expected = _count_frames(vin, frames)
        with atomic_file(dest, overwrite=overwrite) as tmp:
            try:
                return _transcode(
                    av, inp, vin, src, tmp, process, spec, crf, preset, frames, crop, outscale, scale, expected,
                    progress,
                )
            except (av.FFmpegError, OSError) as e:
                raise VideoError(f"failed while writing {str(dest)!r}: {describe_os_error(e)}") from e


def _transcode(
    av: object,
    inp: object,
    vin: object,
    src: Path,
    tmp: Path,
    process: Process,
    spec: Codec,
    crf: int | None,
    preset: str | None,
    frames: FrameRange,
    crop: Crop | None,
    outscale: float | None,
    scale: int,
    expected: int | None,
    progress: Callable[[int | None], Callable[[], None]] | None,
) -> dict[str, object]:
    tb_in: Fraction = vin.time_base
    rate: Fraction = vin.average_rate or vin.guessed_rate or Fraction(24000, 1001)
    frame_ticks = 1 / (rate * tb_in)  # one frame's duration in time-base units, for missing pts
    pts_queue: deque[int] = deque()  # pts of frames handed to ``process`` and not yet written
    decoded = 0
    last_pts: int | None = None

    out = av.open(str(tmp), "w")
    with contextlib.closing(out):
        copies = {}
        for s in inp.streams:
            if s.type in ("audio", "subtitle"):
                try:
                    copies[s.index] = out.add_stream_from_template(s)
                except (av.FFmpegError, ValueError) as e:
                    log.warning("not copying %s stream #%d (%s): %s", s.type, s.index, s.codec_context.name, e)
            elif s.index != vin.index:
                log.warning("not copying %s stream #%d", s.type, s.index)

        def open_encoder(h: int, w: int) -> object:
            st = out.add_stream(spec.encoder, rate=rate)
            st.width, st.height, st.pix_fmt = w, h, spec.pix_fmt
            st.time_base = tb_in
            cc = st.codec_context
            cc.color_range = 1  # limited ("tv") range, what players expect
            cc.colorspace = cc.color_primaries = cc.color_trc = 1  # BT.709, the convention for HD output
            opts = dict(spec.fixed)
            if spec.default_crf is not None:
                opts["crf"] = str(spec.default_crf if crf is None else crf)
            if preset:
                opts["preset"] = preset
            if spec.encoder == "libx265":
                opts["x265-params"] = "log-level=error"
                if out.format.name in ("mov,mp4,m4a,3gp,3g2,mj2", "mp4", "mov"):
                    cc.codec_tag = "hvc1"  # the tag Apple players require for HEVC in MP4
            st.options = opts
            return st

        copier = _PacketCopier(out, copies, frames)

        def frames_in() -> Iterator[np.ndarray]:
            nonlocal decoded, last_pts
            done_video = False
            for packet in inp.demux():
                s = packet.stream
                if s.index in copies:
                    copier.add(packet)
                    if done_video and copier.all_past():
                        break
                if s.index != vin.index or done_video:
                    continue
                try:
                    decoded_frames = packet.decode()
                except av.FFmpegError as e:
                    raise VideoError(f"cannot decode {str(src)!r} (corrupt or truncated?): {e}") from e
                for fr in decoded_frames:
                    idx = decoded
                    decoded += 1
                    if fr.pts is not None:
                        pts = fr.pts
                    else:  # no timestamp: continue at the nominal frame rate
                        pts = round(last_pts + frame_ticks) if last_pts is not None else 0
                    last_pts = pts
                    if idx < frames.start:
                        copier.before_range(float(pts * tb_in))
                        continue
                    if frames.end is not None and idx >= frames.end:
                        done_video = True
                        copier.video_done()
                        break
                    copier.video_frame(float(pts * tb_in), float((pts + frame_ticks) * tb_in))
                    if fr.format.components[0].bits > 8:  # keep 10/12-bit sources' precision
                        rgb = fr.to_ndarray(format="rgb48le").astype(np.float32) / 65535.0
                    else:
                        rgb = fr.to_ndarray(format="rgb24")
                    if crop is not None:
                        rgb = crop.apply(rgb, func="animesr")
                    pts_queue.append(pts)
                    yield rgb
            copier.video_done()

        # The encoder must exist before the first copied packet is muxed, so its size is computed up front.
        base_h, base_w = (crop.height, crop.width) if crop else (vin.height, vin.width)
        h, w = target_size(base_h, base_w, scale if outscale is None else outscale, even=True)
        size = (w, h)
        vout = open_encoder(h, w)
        tick = progress(expected) if progress else (lambda: None)
        written = 0
        shift = None
        for y in process(frames_in()):
            y = resize_frame(y, h, w)
            arr = to_uint(y, spec.bits)
            vf = av.VideoFrame.from_ndarray(arr, format="rgb24" if spec.bits == 8 else "rgb48le")
            vf = vf.reformat(format=spec.pix_fmt, dst_colorspace="ITU709", dst_color_range="MPEG")
            pts = pts_queue.popleft()
            if shift is None:
                shift = pts if frames.start > 0 else 0
            vf.pts = pts - shift
            vf.time_base = tb_in
            out.mux(vout.encode(vf))
            written += 1
            tick()
        if written == 0:
            raise VideoError(f"no frames decoded from {str(src)!r} in range {frames.start}:{frames.end or ''}")
        out.mux(vout.encode(None))
        copied = [s.type for s in copies.values()]
    if expected is not None and written < expected:
        raise VideoError(
            f"{str(src)!r} ended after {written} of {expected} frames (truncated or corrupt input?)"
        )
    return {
        "frames": written,
        "size": size,
        "codec": spec.encoder,
        "copied_streams": copied,
    }


class _PacketCopier:
    """Remuxes audio/subtitle packets whose time lies in the selected frames' range [t0, t1), shifted by t0.

    The decoder lags the demuxer by a few frames, so the range's ends are only known late: packets wait in
    ``pending`` until they are surely inside (mux) or outside (drop) the range.
    """

    def __init__(self, out: object, copies: dict[int, object], frames: FrameRange) -> None:
        self.out, self.copies = out, copies
        self.bounded = frames.end is not None
        self.t0: float | None = None if frames.start > 0 else float("-inf")  # no lower cut from frame 0
        self.t1 = float("-inf") if self.bounded else float("inf")  # end of the last selected frame so far
        self.floor = float("-inf")  # packets before this are surely before the range
        self.final = False
        self.past: set[int] = set()
        self.pending: list[tuple[float, object]] = []

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

    def add(self, packet: object) -> None:
        if packet.dts is None or packet.pts is None:  # the demuxer's flush packet
            return
        self.pending.append((float(packet.pts * packet.time_base), packet))
        self._flush()

    def _flush(self) -> None:
        keep = []
        for t, packet in self.pending:
            if t < self.floor - 1e-3 or (self.t0 is not None and t < self.t0 - 1e-3):
                continue  # before the range
            if self.t0 is not None and t < self.t1:
                self._mux(packet)
            elif self.final:
                self.past.add(packet.stream.index)  # after the range
            else:
                keep.append((t, packet))
        self.pending = keep

    def _mux(self, packet: object) -> None:
        tb = packet.time_base
        shift = round(self.t0 / tb) if self.t0 > float("-inf") else 0
        if shift:
            packet.pts -= shift
            packet.dts = max(0, packet.dts - shift)
        packet.stream = self.copies[packet.stream.index]
        self.out.mux(packet)


# --------------------------------------------------------------------------------------------------------------
# Image sequences


def list_images(folder: Path) -> list[Path]:
    """Image files in ``folder``, sorted by name with numbers compared as numbers (``2.png`` before ``10.png``)."""
    import re

    def key(p: Path) -> list[object]:
        return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", p.name)]

    return sorted((p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()), key=key)


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

    Raises:
        VideoError: missing/empty input folder, unreadable image, mixed sizes, unwritable output.
    """
    from PIL import Image

    src, dest = Path(src), Path(dest)
    if not src.is_dir():
        raise VideoError(f"input folder {str(src)!r} does not exist")
    paths = list_images(src)[frames.start : frames.end]
    if not paths:
        raise VideoError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {str(src)!r} for range {frames.start}:")
    if dest.resolve() == src.resolve():
        raise VideoError(f"output folder {str(dest)!r} is the input folder")
    first_size: list[tuple[int, int]] = []

    def read_all() -> Iterator[np.ndarray]:
        for p in paths:
            try:
                with Image.open(p) as im:
                    if im.mode not in ("RGB", "L", "P", "RGBA", "LA"):
                        log.warning("%s: converting mode %s to 8-bit RGB", p.name, im.mode)
                    rgb = np.array(im.convert("RGB"))  # a writable copy (torch warns on read-only arrays)
            except OSError as e:
                raise VideoError(f"cannot read image {str(p)!r}: {e}") from e
            if crop is not None:
                rgb = crop.apply(rgb, func="animesr")
            if not first_size:
                first_size.append(rgb.shape[:2])
            elif rgb.shape[:2] != first_size[0]:
                raise VideoError(f"{p.name} is {rgb.shape[1]}x{rgb.shape[0]}, but the sequence is "
                                 f"{first_size[0][1]}x{first_size[0][0]}: all frames must have one size")
            yield rgb

    tick = progress(len(paths)) if progress else (lambda: None)
    with atomic_dir(dest, overwrite=overwrite) as tmp:
        n = 0
        try:
            for p, y in zip(paths, process(read_all()), strict=False):
                if outscale is not None:
                    y = resize_frame(y, *target_size(*first_size[0], outscale))
                Image.fromarray(to_uint(y, 8)).save(tmp / (p.stem + ".png"))
                n += 1
                tick()
        except OSError as e:
            raise VideoError(f"failed while writing into {str(dest)!r}: {describe_os_error(e)}") from e
    return {"frames": n, "size": None}

"""Lossy video codec round trips in-process with PyAV (libx264 by default; libx265 and MPEG-2 optional).

No ffmpeg binary and no pipes: frames are converted to YUV 4:2:0 by libswscale, encoded, and the packets are fed
straight to the matching decoder. The RGB/YUV conversion uses libswscale's defaults in both directions, exactly as
the ``ffmpeg`` command line of the published pipeline does.

Every libav call is single-threaded (``threads=1``): libswscale's automatic thread pool does not survive ``fork``,
so a data-loader worker forked after the parent ran one conversion would hang forever.
"""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np

__all__ = ["CODECS", "X264_LOSSLESS_BELOW", "X264_PROFILES", "codec_roundtrip", "quantize"]

# encoder name -> decoder name
CODECS = {"libx264": "h264", "libx265": "hevc", "mpeg2video": "mpeg2video"}
X264_PROFILES = ("baseline", "main", "high")
X264_LOSSLESS_BELOW = 1.0
"""libx264 encodes CRF values below 1 losslessly, which its baseline, main and high profiles cannot: opening the
encoder fails ("high profile doesn't support lossless")."""


def quantize(x: np.ndarray, *, mode: str = "round") -> np.ndarray:
    """Float RGB in [0,1] to uint8. ``mode='truncate'`` reproduces the published code's ``astype(uint8)``."""
    y = np.clip(x, 0.0, 1.0) * 255.0
    if mode == "round":
        return np.rint(y).astype(np.uint8)
    if mode == "truncate":
        return y.astype(np.uint8)
    raise ValueError(f"quantize: mode must be 'round' or 'truncate', got {mode!r}")


def codec_roundtrip(
    frames: np.ndarray,
    *,
    codec: str = "libx264",
    crf: float | None = 23.0,
    qscale: int | None = None,
    profile: str | None = None,
    preset: str = "medium",
    fps: int = 25,
    threads: int = 1,
    swap_rb: bool = False,
) -> np.ndarray:
    """Encode ``frames`` (T,H,W,3 uint8 RGB) as one clip with ``codec`` and decode it again.

    Args:
        frames: the clip; odd sizes are edge-padded to even for 4:2:0 and cropped back afterwards.
        codec: ``libx264``, ``libx265`` or ``mpeg2video``.
        crf: constant rate factor for libx264/libx265 (higher = worse).
        qscale: constant quantiser (2..31) for mpeg2video (higher = worse).
        profile: libx264 profile (baseline, main, high); None for the encoder default.
        preset: x264/x265 preset.
        fps: frame rate written into the stream (it steers rate control a little).
        threads: encoder threads; 1 keeps data-loader workers from oversubscribing cores.
        swap_rb: hand the encoder B,G,R as if it were R,G,B and swap back after decoding. This reproduces the
            published pipeline's bug (the YUV matrix sees red and blue exchanged); off by default.

    Returns:
        (T,H,W,3) uint8 RGB, the decoded clip.

    Raises:
        ValueError: bad arguments. RuntimeError: the decoder did not return exactly T frames.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(
            f"codec_roundtrip: frames must be (T,H,W,3) uint8, got {frames.shape} {frames.dtype}"
        )
    if codec not in CODECS:
        raise ValueError(f"codec_roundtrip: codec must be one of {sorted(CODECS)}, got {codec!r}")
    if profile is not None and codec == "libx264" and profile not in X264_PROFILES:
        raise ValueError(f"codec_roundtrip: libx264 profile must be one of {X264_PROFILES}, got {profile!r}")
    t, h, w = frames.shape[:3]
    if t == 0:
        raise ValueError("codec_roundtrip: frames is empty")
    ph, pw = h + h % 2, w + w % 2
    if (ph, pw) != (h, w):
        frames = np.pad(frames, ((0, 0), (0, ph - h), (0, pw - w), (0, 0)), mode="edge")
    if swap_rb:
        frames = frames[..., ::-1]

    enc = av.CodecContext.create(codec, "w")
    enc.width, enc.height = pw, ph
    enc.pix_fmt = "yuv420p"
    enc.time_base = Fraction(1, fps)
    enc.framerate = Fraction(fps, 1)
    enc.thread_count = threads
    opts: dict[str, str] = {}
    if codec == "mpeg2video":
        q = 4 if qscale is None else int(qscale)
        if not 1 <= q <= 31:
            raise ValueError(f"codec_roundtrip: qscale must be in 1..31, got {qscale!r}")
        opts.update(qmin=str(q), qmax=str(q))
    else:
        if crf is None or not 0 <= crf <= 51:
            raise ValueError(f"codec_roundtrip: crf must be in [0, 51] for {codec}, got {crf!r}")
        if codec == "libx264" and profile is not None and crf < X264_LOSSLESS_BELOW:
            raise ValueError(f"codec_roundtrip: crf={crf!r} is lossless for libx264, which profile={profile!r} "
                             f"cannot encode; use crf >= {X264_LOSSLESS_BELOW:g} or profile=None")
        opts.update(crf=f"{crf:.4f}", preset=preset)
        if codec == "libx264" and profile is not None:
            opts["profile"] = profile
        if codec == "libx265":
            opts["x265-params"] = f"log-level=none:pools={threads}:frame-threads={threads}"
    enc.options = opts

    packets = []
    for i in range(t):
        rgb = av.VideoFrame.from_ndarray(np.ascontiguousarray(frames[i]), format="rgb24")
        vf = rgb.reformat(format="yuv420p", threads=1)
        vf.pts = i
        packets.extend(enc.encode(vf))
    packets.extend(enc.encode(None))

    dec = av.CodecContext.create(CODECS[codec], "r")
    dec.thread_count = 1
    out = []
    for p in packets:
        out.extend(dec.decode(p))
    out.extend(dec.decode(None))
    if len(out) != t:
        raise RuntimeError(f"codec_roundtrip: {codec} returned {len(out)} frames for {t} (crf={crf}, qscale={qscale})")
    y = np.stack([f.to_ndarray(format="rgb24", threads=1) for f in out])
    if swap_rb:
        y = y[..., ::-1]
    return np.ascontiguousarray(y[:, :h, :w])

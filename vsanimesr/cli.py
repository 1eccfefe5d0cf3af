"""``animesr``: upscale a video file or an image sequence with AnimeSR, without VapourSynth.

    animesr upscale INPUT OUTPUT [options]     video in (anything FFmpeg reads), HEVC 10-bit out by default
    animesr frames IN_DIR OUT_DIR [options]    PNG/JPEG/... sequence in, PNG sequence out

Exit status: 0 success, 1 error (one line on stderr, no partial output), 2 bad usage, 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import FrameType

import numpy as np

from vsanimesr.options import BACKENDS
from vsanimesr.video import CODECS, VideoError, parse_crop, parse_frame_range, process_image_dir, transcode_video

__all__ = ["build_parser", "main"]

log = logging.getLogger("vsanimesr.cli")

_EPILOG = """\
examples:
  animesr upscale episode.mkv episode_x4.mkv
  animesr upscale clip.mp4 out.mp4 --model v1 --codec h264 --crf 16 --outscale 2
  animesr upscale clip.mp4 preview.mp4 --frames 100:148 --crop 320:240:160:120
  animesr frames lr_pngs/ sr_pngs/ --device cuda --fp16
"""


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return v


def _non_negative_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return v


def _arg(parse: Callable[[str], object]) -> Callable[[str], object]:
    """Turn a parser's ValueError into argparse's usage error."""

    def wrapped(text: str) -> object:
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e).split(": ", 1)[-1]) from None

    return wrapped


def _add_common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model and device")
    g.add_argument("--model", default="v2", metavar="v1|v2|PATH",
                   help="published model name (weights are fetched and verified on first use) or a checkpoint file "
                        "(.pth/.safetensors); default: %(default)s")
    g.add_argument("--device", default="auto", metavar="auto|cpu|cuda|cuda:N",
                   help="where the network runs; 'auto' picks CUDA when available; default: %(default)s")
    g.add_argument("--fp16", action="store_true", help="half-precision inference (CUDA only; about 2x faster)")
    g.add_argument("--tf32", action="store_true",
                   help="let fp32 convolutions on CUDA use TF32 (faster, less exact; the default is IEEE fp32)")
    g.add_argument("--bf16", action="store_true",
                   help="bfloat16 convolutions: about 2x on CPUs with AVX512-BF16/AMX-BF16 (output within ~56 dB "
                        "PSNR of fp32 on real frames); other CPUs only emulate bf16, about 10x slower, so there it "
                        "falls back to fp32 with a warning")
    g.add_argument("--backend", choices=BACKENDS, default="torch",
                   help="what runs the network: torch, or openvino on the CPU (extra [openvino]); default: %(default)s")
    g.add_argument("--compile", action="store_true",
                   help="run the network through torch.compile (faster per frame after a 15-90 s first frame)")
    g.add_argument("--tile", type=_non_negative_int, default=0, metavar="N",
                   help="process frames in N x N input tiles to bound memory (0 = whole frame); default: %(default)s")
    g = p.add_argument_group("selection and size")
    g.add_argument("--frames", type=_arg(parse_frame_range), default=None, metavar="START:END",
                   help="only frames START (inclusive) to END (exclusive), counted from 0; either may be omitted")
    g.add_argument("--crop", type=_arg(parse_crop), default=None, metavar="W:H[:X:Y]",
                   help="only this input rectangle (width:height:left:top), e.g. for a quick preview")
    g.add_argument("--outscale", type=_positive_float, default=None, metavar="S",
                   help="final scale relative to the input; the x4 result is resized with Spline36, as in the "
                        "VapourSynth filter (default: 4, no resize)")
    g = p.add_argument_group("output and messages")
    g.add_argument("-y", "--overwrite", action="store_true", help="replace OUTPUT if it already exists")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    g.add_argument("-v", "--verbose", action="store_true", help="log what the library does (to stderr)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="animesr",
        description="AnimeSR x4 anime video super-resolution (PyTorch), for video files and image sequences.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = ap.add_subparsers(dest="command", required=True, metavar="{upscale,frames}")

    up = sub.add_parser(
        "upscale",
        help="upscale a video file",
        description="Upscale a video file. Decodes with PyAV, encodes in-process, copies audio and subtitle streams, "
                    "keeps frame rate and timestamps. Writes a temporary file beside OUTPUT and renames it only on "
                    "success. The container follows OUTPUT's extension (.mkv, .mp4, ...).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    up.add_argument("input", type=Path, metavar="INPUT", help="video file to read")
    up.add_argument("output", type=Path, metavar="OUTPUT", help="video file to write (.mkv or .mp4 recommended)")
    g = up.add_argument_group("encoding")
    g.add_argument("--codec", choices=list(CODECS), default="hevc",
                   help="hevc = libx265 10-bit 4:2:0, h264 = libx264 8-bit 4:2:0, av1 = libsvtav1 10-bit 4:2:0; "
                        "default: %(default)s")
    g.add_argument("--crf", type=_non_negative_int, default=None, metavar="Q",
                   help="constant-quality level, lower is better and bigger (default: "
                        + ", ".join(f"{k} {c.default_crf}" for k, c in CODECS.items()) + ")")
    g.add_argument("--preset", default=None, metavar="NAME",
                   help="encoder speed preset (x264/x265: ultrafast..veryslow; svt-av1: 0..13); default: encoder's")
    _add_common(up)

    fr = sub.add_parser(
        "frames",
        help="upscale an image sequence (folder of frames)",
        description="Upscale the images of IN_DIR in name order (2.png before 10.png) as one continuous shot and "
                    "write 8-bit RGB PNGs with the same names to OUT_DIR (built in a temporary folder, then renamed).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fr.add_argument("input", type=Path, metavar="IN_DIR", help="folder of frames (.png, .jpg, .bmp, .tif, .webp)")
    fr.add_argument("output", type=Path, metavar="OUT_DIR", help="folder to create (must be absent or empty)")
    _add_common(fr)
    return ap


def _lazy_engine(args: argparse.Namespace) -> Callable[[Iterable[np.ndarray]], Iterator[np.ndarray]]:
    """The engine's ``stream``, built only when the first frame is needed (so path errors come first, fast)."""

    def process(frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        from vsanimesr.engine import AnimeSR

        t0 = time.perf_counter()
        sr = AnimeSR(model=args.model, device=args.device, fp16=args.fp16, tile=args.tile, bf16=args.bf16,
                     tf32=args.tf32, compile=args.compile, backend=args.backend)
        log.info("engine ready in %.1f s: %s", time.perf_counter() - t0, sr.describe())
        yield from sr.stream(frames)

    return process


def _progress(quiet: bool) -> Callable[[int | None], Callable[[], None]] | None:
    if quiet:
        return None

    def start(total: int | None) -> Callable[[], None]:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="frame", file=sys.stderr, dynamic_ncols=True, smoothing=0.1, bar_format=_BAR)
        _bars.append(bar)
        return lambda: bar.update(1)

    return start


_bars: list = []
# Always frames/s (tqdm would switch to s/frame below 1 frame/s, which reads oddly for a slow network).
_BAR = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_noinv_fmt}]"


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # same clean-up path as Ctrl-C


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _on_sigterm)
    kwargs = dict(crop=args.crop, outscale=args.outscale, overwrite=args.overwrite, progress=_progress(args.quiet))
    if args.frames is not None:
        kwargs["frames"] = args.frames
    t0 = time.perf_counter()
    try:
        if args.command == "upscale":
            summary = transcode_video(args.input, args.output, _lazy_engine(args), codec=args.codec, crf=args.crf,
                                      preset=args.preset, **kwargs)
        else:
            summary = process_image_dir(args.input, args.output, _lazy_engine(args), **kwargs)
    except KeyboardInterrupt:
        _close_bars()
        print("animesr: interrupted; no output written", file=sys.stderr)  # noqa: T201 - the CLI talks to its user
        return 130
    except (VideoError, ValueError, RuntimeError, OSError) as e:  # WeightsError is a ValueError
        _close_bars()
        if args.verbose:
            log.exception("details")
        print(f"animesr {args.command}: error: {e}", file=sys.stderr)  # noqa: T201 - the CLI talks to its user
        return 1
    _close_bars()
    dt = time.perf_counter() - t0
    n = summary["frames"]
    print(f"animesr: wrote {n} frames to {args.output} in {dt:.1f} s ({n / dt:.2f} frames/s)", file=sys.stderr)  # noqa: T201 - the CLI talks to its user
    return 0


def _close_bars() -> None:
    while _bars:
        _bars.pop().close()


def run() -> None:
    """Console entry point: ``main()``, with an exit status of exactly 130 after Ctrl-C.

    CPython sets a process-wide "unhandled KeyboardInterrupt" flag when the interrupt passes through code run with
    ``PyRun_String`` (as can happen while torch is being imported), does not clear it when we catch the interrupt, and
    at exit kills itself with SIGINT instead of returning our status: a Ctrl-C early in a run exited by signal about
    one time in six. The partial output is already removed when main() returns, so exit directly with the status.
    """
    code = main()
    if code == 130:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    sys.exit(code)


if __name__ == "__main__":
    run()

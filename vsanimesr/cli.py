"""``animesr``: upscale a video file or an image sequence with AnimeSR, without VapourSynth.

    animesr upscale INPUT OUTPUT [options]     video in (anything FFmpeg reads), HEVC 10-bit out by default
    animesr frames IN_DIR OUT_DIR [options]    PNG/JPEG/... sequence in, PNG sequence out

The engine's options (``--model`` ... ``--outscale``) are derived from :class:`vsanimesr.options.Options`: names,
defaults, help and bounds are defined there once. Everything is checked before any work starts, in this order:
arguments, input (length, size, tracks), encoder settings, output path, then the engine (device, weights); only
then the start line and the progress bar.

Exit status: 0 success, 1 error (one line on stderr, no partial output), 2 bad usage, 130 interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np

from vsanimesr.distributed import DEFAULT_CHUNK_FRAMES as _CHUNK_FRAMES
from vsanimesr.distributed import DEFAULT_RETRIES as _RETRIES
from vsanimesr.options import FIELDS, OptionError, Options
from vsanimesr.video import (
    CODECS,
    Encoding,
    Tracks,
    VideoError,
    parse_crop,
    parse_frame_range,
    parse_tracks,
    plan_image_dir,
    plan_video,
    process_image_dir,
    transcode_video,
)

__all__ = ["build_parser", "flag", "main"]

log = logging.getLogger("vsanimesr.cli")

_EPILOG = """\
examples:
  animesr upscale episode.mkv episode_x4.mkv
  animesr upscale episode.mkv episode_x4.mkv --audio jpn --subtitles all --preset slow --tune animation
  animesr upscale clip.mp4 out.mp4 --model v1 --codec h264 --crf 16 --outscale 2
  animesr upscale clip.mp4 preview.mp4 --frames 100:148 --crop 320:240
  animesr frames lr_pngs/ sr_pngs/ --device cuda --fp16
"""

# Where each engine option is listed in --help (the rest go to "model and device").
_RECURRENCE = ("reset_interval", "warmup", "scene_threshold")
_SIZE = ("outscale",)


def flag(name: str) -> str:
    """The command-line flag of an :class:`Options` field (``tile_overlap`` -> ``--tile-overlap``)."""
    return "--" + name.replace("_", "-")


def _number(kind: type) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None

    parse.__name__ = kind.__name__
    return parse


def _arg(parse: Callable[[str], object]) -> Callable[[str], object]:
    """Turn a parser's ValueError into argparse's usage error (without the parser's own name)."""

    def wrapped(text: str) -> object:
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e).split(": ", 1)[-1]) from None

    return wrapped


def _add_option(g: argparse._ArgumentGroup, f: dataclasses.Field[Any]) -> None:
    """One engine option as a flag; its bounds are checked by :class:`Options` (see :func:`_options`)."""
    meta, default = f.metadata, f.default
    text = meta["help"].replace("%", "%%")  # argparse formats help with %
    if isinstance(default, bool) or f.name == "fp16":  # flags: off unless given
        g.add_argument(flag(f.name), dest=f.name, action="store_true", default=None, help=text)
        return
    if default is not None:  # argparse's own default stays None: "not given" leaves the field to Options
        text += f"; default: {default}"
    kind = str if isinstance(default, str) else int if isinstance(default, int) else float
    g.add_argument(flag(f.name), dest=f.name, type=_number(kind) if kind is not str else str, default=None,
                   metavar=meta.get("metavar", "N" if kind is int else "X" if kind is float else "NAME"),
                   choices=meta.get("choices"), help=text)


def _add_common(p: argparse.ArgumentParser) -> None:
    fields = {f.name: f for f in FIELDS}
    g = p.add_argument_group("model and device")
    for f in FIELDS:
        if f.name not in _RECURRENCE + _SIZE:
            _add_option(g, f)
    g.add_argument("--threads", type=_number(int), default=None, metavar="N",
                   help="CPU threads for the network (torch.set_num_threads); default: torch's choice")
    g = p.add_argument_group("recurrence (see the README: what a frame's output depends on)")
    for name in _RECURRENCE:
        _add_option(g, fields[name])
    g = p.add_argument_group("selection and size")
    g.add_argument("--frames", type=_arg(parse_frame_range), default=None, metavar="START:END",
                   help="only frames START (inclusive) to END (exclusive), counted from 0; either may be omitted")
    g.add_argument("--crop", type=_arg(parse_crop), default=None, metavar="W:H[:X:Y]",
                   help="only this input rectangle, W:H centred or W:H:X:Y from its top-left corner (FFmpeg's crop "
                        "syntax; examples/upscale.vpy takes the same)")
    for name in _SIZE:
        _add_option(g, fields[name])
    g = p.add_argument_group("output and messages")
    g.add_argument("-y", "--overwrite", action="store_true", help="replace OUTPUT if it already exists")
    g.add_argument("-q", "--quiet", action="store_true", help="no start line and no progress bar")
    g.add_argument("-v", "--verbose", action="store_true", help="log what the library does (to stderr)")


def _add_chunked(p: argparse.ArgumentParser) -> None:
    """Chunked runs (vsanimesr.distributed): the same output as one run, in chunks on Ray, resumable."""
    g = p.add_argument_group("chunks on Ray (same output as one run; resumable; see vsanimesr.distributed)")
    g.add_argument("--workers", type=_number(int), default=None, metavar="N",
                   help="upscale in chunks on N local Ray workers (a Ray instance on this machine, started and "
                        "stopped by the command; CPU workers get --threads each, default cores/N; GPU workers one GPU "
                        "each); 0: the chunks one after another in this process, without Ray")
    g.add_argument("--address", default=None, metavar="auto|HOST:PORT",
                   help="run the chunks on a running Ray cluster instead; its nodes need this package and must see "
                        "INPUT and --work-dir at the same paths")
    g.add_argument("--chunk-frames", type=_number(int), default=None, metavar="N",
                   help="frames per chunk, rounded to whole restart periods (--reset-interval); default: "
                        f"{_CHUNK_FRAMES}")
    g.add_argument("--work-dir", type=Path, default=None, metavar="DIR",
                   help="keep finished chunks and their manifest here: the same command again skips finished chunks "
                        "(default: a hidden folder beside OUTPUT, removed after success)")
    g.add_argument("--retries", type=_number(int), default=None, metavar="N",
                   help=f"attempts after a chunk fails or its worker dies; default: {_RETRIES}")


def _chunked(args: argparse.Namespace) -> bool:
    return args.command == "upscale" and (args.workers is not None or args.address is not None)


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
        description="Upscale a video file. Decodes with PyAV and encodes in-process; keeps the frame rate, the "
                    "timestamps, the order of the streams, the audio and subtitle tracks with their language, title "
                    "and default/forced flags, chapters and attachments (fonts) where the output format holds them "
                    "(Matroska holds all; what is left out is said on stderr). Writes a temporary file beside OUTPUT "
                    "and renames it only on success. The container follows OUTPUT's extension (.mkv, .mp4, ...).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    up.add_argument("input", type=Path, metavar="INPUT", help="video file to read")
    up.add_argument("output", type=Path, metavar="OUTPUT", help="video file to write (.mkv keeps everything)")
    g = up.add_argument_group("encoding")
    g.add_argument("--codec", choices=list(CODECS), default="hevc",
                   help="hevc = libx265 10-bit 4:2:0, h264 = libx264 8-bit 4:2:0, av1 = libsvtav1 10-bit 4:2:0, "
                        "ffv1 = lossless 10-bit 4:2:0 (for checks or a later encode); default: %(default)s. The "
                        "video is tagged BT.709, limited range")
    g.add_argument("--crf", type=_number(int), default=None, metavar="Q",
                   help="constant-quality level, lower is better and bigger (default: "
                        + ", ".join(f"{k} {c.default_crf}" for k, c in CODECS.items() if c.default_crf is not None)
                        + ")")
    g.add_argument("--preset", default=None, metavar="NAME",
                   help="encoder speed preset (x264/x265: ultrafast..veryslow; svt-av1: 0..13); default: encoder's")
    g.add_argument("--tune", default=None, metavar="NAME",
                   help="encoder tuning, e.g. 'animation' (x264/x265: "
                        + ", ".join(sorted(set(CODECS["hevc"].tunes) | set(CODECS["h264"].tunes))) + ")")
    g.add_argument("--x265-params", dest="params", default=None, metavar="K=V:K=V",
                   help="the encoder's own options, e.g. aq-mode=3:bframes=8, checked before work starts; "
                        "--x264-params and --svtav1-params are the same option for the other codecs")
    for alias in ("--x264-params", "--svtav1-params"):
        g.add_argument(alias, dest="params", default=None, help=argparse.SUPPRESS)
    g = up.add_argument_group("streams")
    g.add_argument("--audio", type=_arg(parse_tracks), default=None, metavar="all|none|LIST",
                   help="audio tracks to keep: all (default), none, or a comma list of track numbers (0 = the first "
                        "audio track) and language tags, e.g. 0,eng")
    g.add_argument("--subtitles", type=_arg(parse_tracks), default=None, metavar="all|none|LIST",
                   help="subtitle tracks to keep, as --audio")
    _add_chunked(up)
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


def _options(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Options:
    """The engine's options from the flags; a bad value is a usage error that names the flag."""
    given = {f.name: getattr(args, f.name) for f in FIELDS if getattr(args, f.name) is not None}
    try:
        return Options(**given)
    except OptionError as e:
        parser.error(f"argument {flag(e.name)}: {e.why}")
        raise  # not reached: parser.error exits


def _describe_error(e: BaseException, args: argparse.Namespace) -> str:
    """One line without library prefixes; an option or encoder error starts with its flag and value."""
    if isinstance(e, OptionError):
        value = "" if isinstance(e.value, bool) else f" {e.value}"
        return f"{flag(e.name)}{value}: {e.why}"
    text = str(e)
    if text.startswith("Encoding: "):  # "Encoding: preset='x': libx265 refused it (...)"
        field, _, rest = text.removeprefix("Encoding: ").partition("=")
        name = (CODECS[args.codec].params_option or "x265-params") if field == "params" else field
        return f"{flag(name)} {rest}"
    return text


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


def _say(args: argparse.Namespace, text: str) -> None:
    print(f"animesr {args.command}: {text}", file=sys.stderr)  # noqa: T201 - the CLI talks to its user


def _run(args: argparse.Namespace, opts: Options) -> dict[str, object]:
    """Check the job, build the engine, say what will happen, then do it."""
    frames = args.frames
    sel = {} if frames is None else {"frames": frames}
    if args.command == "upscale":
        encoding = Encoding(args.codec, args.crf, args.preset, args.tune, args.params)
        tracks = Tracks(args.audio, args.subtitles)
        job = dict(encoding=encoding, crop=args.crop, outscale=opts.outscale, tracks=tracks,
                   overwrite=args.overwrite, **sel)
        plan_video(args.input, args.output, **job)  # the checks, before torch is even imported
    else:
        plan_image_dir(args.input, args.output, crop=args.crop, overwrite=args.overwrite, **sel)

    if _chunked(args):
        return _run_chunked(args, opts, job)
    log.info("checks passed; loading the engine")
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    from vsanimesr.engine import AnimeSR

    t0 = time.perf_counter()
    sr = AnimeSR(opts)
    log.info("engine ready in %.1f s", time.perf_counter() - t0)

    def process(frames_in: Iterable[np.ndarray]) -> Iterator[Any]:
        # Device tensors for the video encoder (converted where they are); host arrays for image files.
        return sr.stream_tensors(frames_in) if args.command == "upscale" else sr.stream(frames_in)

    if args.command == "upscale":
        plan = plan_video(args.input, args.output, scale=sr.scale, **job)
        if not args.quiet:
            n = "?" if plan.expected is None else plan.expected
            h, w = plan.size
            crf = encoding.spec.default_crf if encoding.crf is None else encoding.crf
            quality = "lossless" if crf is None else f"crf {crf}"
            _say(args, f"{n} frames, {plan.info.width}x{plan.info.height} -> {w}x{h} {encoding.codec} ({quality}); "
                       f"{sr.describe()}")
        return transcode_video(args.input, args.output, process, scale=sr.scale, progress=_progress(args.quiet),
                               **job)
    if not args.quiet:
        _say(args, sr.describe())
    return process_image_dir(args.input, args.output, process, crop=args.crop, outscale=opts.outscale,
                             overwrite=args.overwrite, progress=_progress(args.quiet), **sel)


def _run_chunked(args: argparse.Namespace, opts: Options, job: dict[str, Any]) -> dict[str, object]:
    """``--workers`` / ``--address``: the job in chunks (the engines load in the workers)."""
    from vsanimesr.distributed import upscale_video

    job = {k: v for k, v in job.items() if k != "outscale"}  # part of the options here
    where = f"Ray at {args.address}" if args.address else \
        "this process (no Ray)" if args.workers == 0 else f"{args.workers} local Ray workers"
    if not args.quiet:
        _say(args, f"chunks of about {args.chunk_frames or _CHUNK_FRAMES} frames on {where}")
    return upscale_video(args.input, args.output, opts, workers=args.workers, address=args.address,
                         threads=args.threads, chunk_frames=args.chunk_frames or _CHUNK_FRAMES,
                         work_dir=args.work_dir, retries=_RETRIES if args.retries is None else args.retries,
                         progress=_progress(args.quiet), **job)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    sub = parser._subparsers._group_actions[0].choices[args.command]  # type: ignore[union-attr]
    opts = _options(args, sub)
    if args.threads is not None and args.threads < 1:
        sub.error("argument --threads: must be >= 1")
    for name, low in (("workers", 0), ("chunk_frames", 1), ("retries", 0)):
        if getattr(args, name, None) is not None and getattr(args, name) < low:
            sub.error(f"argument --{name.replace('_', '-')}: must be >= {low}")
    # One prefix on every line: "animesr upscale: ..."; -v adds the logger's name.
    fmt = f"animesr {args.command}: " + ("%(name)s: %(message)s" if args.verbose else "%(message)s")
    level = logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format=fmt, force=True)
    logging.getLogger("vsanimesr").setLevel(level)  # the package's own default (INFO) is meant for vspipe's log
    os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints a banner to stderr at its default level
    signal.signal(signal.SIGTERM, _on_sigterm)
    t0 = time.perf_counter()
    try:
        summary = _run(args, opts)
    except KeyboardInterrupt:
        _close_bars()
        _say(args, "interrupted; no output written")
        return 130
    except (VideoError, ValueError, RuntimeError, OSError) as e:  # OptionError and WeightsError are ValueErrors
        _close_bars()
        if args.verbose:
            log.exception("details")
        _say(args, f"error: {_describe_error(e, args)}")
        return 1
    _close_bars()
    dt = time.perf_counter() - t0
    n = summary["frames"]
    _say(args, f"wrote {n} frames to {args.output} in {dt:.1f} s ({n / dt:.2f} frames/s)")
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

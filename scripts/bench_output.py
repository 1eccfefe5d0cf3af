"""Cost of the output path per frame: device-side format conversion, host copies, and VapourSynth's CPU resize.

    python scripts/bench_output.py                                    # 2560x1440, the main formats, cpu (+ cuda)
    python scripts/bench_output.py --size 640x360 --formats YUV420P10 --frames 4 --devices cpu

Rows (per device, output size and format):
    write         vsanimesr.staging.PlaneWriter.write: float RGB (3, H, W) on the device -> the format's planes in
                  host numpy arrays (CPU: direct write; CUDA: packed planes -> pinned buffer -> host planes)
    write-overlap CUDA only: start(frame n + 1) is queued before finish(frame n), as a filter that computes ahead does
    vs-resize     CPU only: core.resize.Spline36(RGBS -> format) in VapourSynth, the conversion the wrapper ran on
                  the host at 4x size before this path existed (core.num_threads = --threads)
    d2h-f32       CUDA only: the old path, a float32 RGB frame copied into pageable host memory (GB/s in the note)
    d2h-pinned    CUDA only: the same bytes into pinned memory (GB/s in the note)

Each row is the best of --rounds rounds of --frames frames: wall ms per frame, frames/s, and the process's CPU time
per frame (steadier on a shared machine; on CUDA, the host's overhead).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

Row = tuple[str, str, str, float, float, str]  # device, format, row, wall s/frame, CPU s/frame, note
DEFAULT_FORMATS = ("YUV420P10", "YUV420P8", "YUV444P16", "RGB48", "RGBH", "GRAY16")


def cpu_flags() -> str:
    """The SIMD flags that matter for these figures, from /proc/cpuinfo."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    keep = [f for f in flags if f.startswith(("avx", "amx")) or f in ("fma", "f16c", "sse4_2")]
    return " ".join(keep) or "none of avx/fma/f16c"


def machine(devices: list[str], threads: int) -> str:
    import torch

    cpu = "unknown CPU"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    parts = [f"CPU: {cpu}, {os.cpu_count()} logical cores, {threads} torch threads, flags: {cpu_flags()}",
             f"torch {torch.__version__}"]
    parts += [f"{d}: {torch.cuda.get_device_name(d)}" for d in devices if d.startswith("cuda")]
    return "; ".join(parts)


def best_time(fn: Callable[[], None], frames: int, rounds: int, sync: Callable[[], None]) -> tuple[float, float]:
    """Best (wall, process CPU) seconds per frame over ``rounds`` runs of ``frames`` calls, after one warm-up call.

    The CPU time is the whole process's (all threads): on a shared machine it is the steadier figure, and on CUDA
    it is the host's overhead per frame."""
    fn()
    sync()
    best, best_cpu = float("inf"), float("inf")
    for _ in range(rounds):
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(frames):
            fn()
        sync()
        best = min(best, (time.perf_counter() - t0) / frames)
        best_cpu = min(best_cpu, (time.process_time() - c0) / frames)
    return best, best_cpu


def _nothing() -> None:
    pass


def _overlapped(writer: object, rgb: object, dst: list, pending: list) -> None:
    """start(frame n + 1) before finish(frame n): the copy of n runs while n + 1 is converted."""
    pending.append(writer.start(rgb))
    if len(pending) > 1:
        writer.finish(pending.pop(0), dst)


def run(size: tuple[int, int], formats: list[str], devices: list[str], frames: int, rounds: int,
        threads: int) -> list[Row]:
    import torch

    from vsanimesr.formats import OutputSpec, PixelFormat
    from vsanimesr.staging import PlaneWriter

    h, w = size
    rng = np.random.default_rng(0)
    rgb_host = torch.from_numpy(rng.random((3, h, w), dtype=np.float32) * 1.2 - 0.1)
    rows = []
    for dev in devices:
        rgb = rgb_host.to(dev)
        cuda = dev.startswith("cuda")
        sync = partial(torch.cuda.synchronize, dev) if cuda else _nothing
        for name in formats:
            spec = OutputSpec(PixelFormat.parse(name))
            writer = PlaneWriter(spec, (h, w), device=dev)
            dst = [np.empty(s, spec.format.numpy_dtype) for s in writer.plane_shapes]
            rows.append((dev, name, "write", *best_time(partial(writer.write, rgb, dst), frames, rounds, sync), ""))
            if cuda:
                pending: list = []
                t = best_time(partial(_overlapped, writer, rgb, dst, pending), frames, rounds, sync)
                while pending:
                    writer.finish(pending.pop(0), dst)
                rows.append((dev, name, "write-overlap", *t, f"{writer.staging.slots_allocated} pinned slots"))
        if cuda:
            nbytes = rgb.numel() * 4
            pageable = torch.from_numpy(np.empty((3, h, w), np.float32))
            t = best_time(partial(pageable.copy_, rgb), frames, rounds, sync)
            rows.append((dev, "RGBS", "d2h-f32", *t, f"{nbytes / t[0] / 1e9:.1f} GB/s pageable"))
            pinned = torch.empty((3, h, w), dtype=torch.float32, pin_memory=True)
            t = best_time(partial(pinned.copy_, rgb, non_blocking=True), frames, rounds, sync)
            rows.append((dev, "RGBS", "d2h-pinned", *t, f"{nbytes / t[0] / 1e9:.1f} GB/s pinned"))
    rows += vs_rows(size, formats, frames, rounds, threads)
    return rows


def vs_rows(size: tuple[int, int], formats: list[str], frames: int, rounds: int,
            threads: int) -> list[Row]:
    try:
        import vapoursynth as vs
    except ImportError:
        return []
    core = vs.core
    core.num_threads = threads
    h, w = size
    src = core.std.BlankClip(width=w, height=h, format=vs.RGBS, length=frames * (rounds + 1) + 1, color=[0.3, 0.5, 0.7],
                             keep=False)
    src = core.std.Expr(src, "x 0 max 1 min")  # the clamp the wrapper needs as well
    rows = []
    for name in formats:
        fmt = core.get_video_format(getattr(vs, name) if hasattr(vs, name) else name.replace("GRAY", "Gray"))
        kwargs = {"matrix": 1} if fmt.color_family != vs.RGB else {}
        out = core.resize.Spline36(src, format=fmt.id, **kwargs)
        counter = iter(range(1 << 30))
        t = best_time(lambda out=out, counter=counter: out.get_frame(next(counter)), frames, rounds, _nothing)
        rows.append(("cpu", name, "vs-resize", *t, f"core.num_threads={threads}"))
    return rows


def format_table(rows: list[Row], size: tuple[int, int]) -> str:
    lines = ["| device | size | format | row | ms/frame | frames/s | CPU ms/frame | note |",
             "|---|---|---|---|---|---|---|---|"]
    for dev, name, row, t, cpu, note in rows:
        lines.append(f"| {dev} | {size[1]}x{size[0]} | {name} | {row} | {t * 1e3:.1f} | {1 / t:.1f} | {cpu * 1e3:.1f} "
                     f"| {note} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="2560x1440", help="output WxH (default 2560x1440: 640x360 upscaled x4)")
    ap.add_argument("--formats", default=",".join(DEFAULT_FORMATS))
    ap.add_argument("--devices", default=None, help="comma-separated (default: cpu, plus cuda when available)")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args(argv)
    try:
        w, h = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        ap.error(f"--size: expected WxH, got {args.size!r}")
    devices = args.devices.split(",") if args.devices else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    torch.set_num_threads(args.threads)
    rows = run((h, w), args.formats.split(","), devices, args.frames, args.rounds, args.threads)
    print(f"machine: {machine(devices, args.threads)}")
    print(format_table(rows, (h, w)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

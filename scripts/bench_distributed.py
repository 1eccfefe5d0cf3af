"""Chunked upscaling on Ray vs one process, and what Ray costs per run and per chunk, in one interleaved run.

    python scripts/bench_distributed.py                                  # 192 frames of 128x72, 2 rounds
    python scripts/bench_distributed.py --size 160x90 --frames 240 --rounds 3 --workers 2 --codec hevc

Both variants upscale the same procedural clip (two cartoon shots, H.264, keyframe every 48 frames) to a file with
the same codec, from Python, timed from the call to the written file:

    single      vsanimesr.video.transcode_video with one engine, --threads (default: all cores) torch threads
    ray         vsanimesr.distributed.upscale_video with --workers local Ray workers of cores/workers threads each,
                chunks of --chunk-frames; a local Ray instance is started and stopped inside the timed call

The rounds alternate the two (a shared machine only ever slows a run down, so "best" is the most repeatable
figure). Printed per variant: frames/s end to end and while frames are being made (single: the frame loop; ray: from
the first task's start to the last task's end). Then, from the ray runs' task records, the overheads:

    ray start         ray.init of the local instance (once per run)
    worker start      submission of a worker's first chunk to that chunk starting (a new process importing torch)
    engine load       AnimeSR(...) in a worker, first chunk only (workers keep their engine)
    scheduling gap    one chunk finishing to the next chunk starting on the same worker (driver loop + Ray)
    lead-in           decoding the frames before a chunk's first output frame (seek pre-roll and warm-up frames)
    task overhead     a task's wall time minus decode, upscale, encode and engine load (files, checksums)
    join              muxing the segments and the input's other streams into the output (once per run)

With --components WxH (an input size, e.g. 640x360) it also times, on this machine, the stages that bound a
cluster apart from the network: decoding the input (H.264 at WxH), indexing it (packets only), encoding the output
(--codec at 4x WxH) and joining (remuxing an encoded file, MB/s). docs/results.md turns these into a calculation.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def cpu_line() -> str:
    """The CPU, its logical cores and the flags that decide CPU convolution speed."""
    name, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and name == "unknown CPU":
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")
    have = " ".join(f for f in wanted if f in flags) or "none of " + ",".join(wanted)
    return f"{name}, {os.cpu_count()} logical cores; flags: {have}; missing: " + \
        (" ".join(f for f in wanted if f not in flags) or "none")


def make_clip(path: Path, *, frames: int, width: int, height: int) -> None:
    """Two procedural cartoon shots (a cut in the middle), drawn at 4x and averaged down; H.264, keyint 48."""
    import av

    sys.path.insert(0, str(REPO))  # training/ is part of the checkout
    from training.synthetic import make_synthetic_cartoon_clip

    half = frames // 2
    hr = np.concatenate([make_synthetic_cartoon_clip(k, 4 * height, 4 * width, rng=np.random.default_rng(seed))
                         for k, seed in ((half, 1), (frames - half, 2))]).astype(np.float32)
    lr = hr.reshape(frames, height, 4, width, 4, 3).mean(axis=(2, 4)).round().astype(np.uint8)
    with av.open(str(path), "w") as out:
        st = out.add_stream("libx264", rate=Fraction(24000, 1001))
        st.width, st.height, st.pix_fmt = width, height, "yuv420p"
        st.options = {"crf": "16", "x264-params": "keyint=48:min-keyint=48:log-level=error"}
        for i, img in enumerate(lr):
            vf = av.VideoFrame.from_ndarray(img, format="rgb24")
            vf.pts = i
            out.mux(st.encode(vf))
        out.mux(st.encode(None))


def run_single(src: Path, dest: Path, *, codec: str, threads: int) -> dict[str, float]:
    import torch

    from vsanimesr.engine import AnimeSR
    from vsanimesr.video import Encoding, transcode_video

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    sr = AnimeSR(device="cpu")
    t_loop: list[float] = []

    def process(frames):  # noqa: ANN001, ANN202 - the engine's stream, timed from its first frame
        for i, y in enumerate(sr.stream(frames)):
            if i == 0:
                t_loop.append(time.perf_counter())
            yield y

    summary = transcode_video(src, dest, process, encoding=Encoding(codec), overwrite=True)
    t1 = time.perf_counter()
    n = summary["frames"]
    # The loop's rate from the first frame's end to the last: (n - 1) frames.
    return {"frames": n, "wall": t1 - t0, "fps": n / (t1 - t0), "fps_busy": (n - 1) / (t1 - t_loop[0])}


def run_ray(src: Path, dest: Path, work: Path, *, codec: str, workers: int, threads: int, chunk_frames: int,
            ) -> tuple[dict[str, float], dict[str, list[float]]]:
    from vsanimesr.distributed import upscale_video
    from vsanimesr.options import Options
    from vsanimesr.video import Encoding

    t0 = time.perf_counter()
    s = upscale_video(src, dest, Options(device="cpu"), workers=workers, threads=threads, chunk_frames=chunk_frames,
                      encoding=Encoding(codec), work_dir=work, overwrite=True)
    wall = time.perf_counter() - t0
    results = list(s["results"].values())
    n = s["frames"]
    busy = max(r["finished"] for r in results) - min(r["started"] for r in results)
    over: dict[str, list[float]] = {k: [] for k in ("ray start", "worker start", "engine load", "scheduling gap",
                                                    "lead-in", "task overhead", "join")}
    over["ray start"].append(s["seconds"]["ray_start"])
    over["join"].append(s["seconds"]["join"])
    by_pid: dict[int, list[dict]] = {}
    for r in results:
        by_pid.setdefault(r["pid"], []).append(r)
    for rs in by_pid.values():
        rs.sort(key=lambda r: r["started"])
        over["worker start"].append(rs[0]["started"] - rs[0]["submitted"])
        over["engine load"].append(rs[0]["seconds"]["engine"])
        over["scheduling gap"] += [b["started"] - a["finished"] for a, b in zip(rs, rs[1:], strict=False)]
    for r in results:
        sec = r["seconds"]
        over["lead-in"].append(sec["lead_in"])
        over["task overhead"].append(r["finished"] - r["started"] - sec["engine"] - sec["decode"] - sec["upscale"]
                                     - sec["encode"])
    return {"frames": n, "wall": wall, "fps": n / wall, "fps_busy": n / busy, "chunks": s["chunks"]}, over


def components(width: int, height: int, *, codec: str, frames: int, tmp: Path) -> list[tuple[str, str]]:
    """Time decode, index, encode and join on their own (see the module docstring)."""
    import av

    from vsanimesr.distributed import index_video
    from vsanimesr.video import CODECS, Encoding, VideoEncoder, _open_encoder

    rows = []
    src = tmp / "components.mp4"
    make_clip(src, frames=frames, width=width, height=height)
    t0 = time.perf_counter()
    with av.open(str(src)) as c:
        c.streams.video[0].thread_type = "AUTO"
        n = sum(1 for _ in c.decode(video=0))
    rows.append((f"decode H.264 {width}x{height}", f"{n / (time.perf_counter() - t0):.0f} frames/s"))
    t0 = time.perf_counter()
    index_video(src)
    rows.append(("index (packets only)", f"{n / (time.perf_counter() - t0):.0f} frames/s"))
    w4, h4 = 4 * width, 4 * height
    rng = np.random.default_rng(0)
    # Smooth content (a real upscale is smooth): a blocky random field, moving.
    base = np.repeat(np.repeat(rng.random((h4 // 16 + 2, w4 // 16 + 2, 3), dtype=np.float32), 16, 0), 16, 1)
    enc_frames = max(4, frames // 4)
    files = {}
    for name in dict.fromkeys((codec, "ffv1")):  # FFV1 (big packets) also gives the file that the join test remuxes
        spec = CODECS[name]
        files[name] = path = tmp / f"components_{name}.{'nut' if name == 'ffv1' else 'mov'}"
        t0 = time.perf_counter()
        with av.open(str(path), "w") as out:  # the CLI's own encoder set-up and frame conversion
            st = _open_encoder(out, Encoding(name), rate=Fraction(24), time_base=Fraction(1, 24), size=(h4, w4))
            encoder = VideoEncoder(st, spec, (h4, w4), rate=Fraction(24), time_base=Fraction(1, 24))
            for i in range(enc_frames):
                out.mux(encoder.encode(base[i % 16 : i % 16 + h4, i % 16 : i % 16 + w4], i))
            out.mux(encoder.flush())
        dt = time.perf_counter() - t0
        rows.append((f"encode {name} {w4}x{h4} (with RGB->YUV)", f"{enc_frames / dt:.2f} frames/s"))
    # The join's cost is per packet as much as per byte: 2000 FFV1 packets (the ones above, repeated), one remux.
    many = tmp / "many.nut"
    with av.open(str(files["ffv1"])) as c:
        packets = [(bytes(p), p.is_keyframe) for p in c.demux(c.streams.video[0]) if p.size]
        with av.open(str(many), "w") as o:
            v = o.add_stream_from_template(c.streams.video[0])
            for i in range(2000):
                data, key = packets[i % len(packets)]
                p = av.Packet(data)
                p.pts = p.dts = i
                p.time_base = Fraction(1, 24)
                p.is_keyframe = key
                p.stream = v
                o.mux(p)
    t0 = time.perf_counter()
    with av.open(str(many)) as c, av.open(str(tmp / "remux.mkv"), "w") as o:
        v = o.add_stream_from_template(c.streams.video[0])
        for p in c.demux(c.streams.video[0]):
            if p.size:
                p.stream = v
                o.mux(p)
    dt = time.perf_counter() - t0
    size = many.stat().st_size
    rows.append((f"join (remux of 2000 packets of {size / 2000 / 1e6:.2f} MB)",
                 f"{2000 / dt:.0f} packets/s, {size / dt / 1e6:.0f} MB/s"))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="128x72", help="input WxH (default: %(default)s)")
    ap.add_argument("--frames", type=int, default=192, help="clip length (default: %(default)s)")
    ap.add_argument("--rounds", type=int, default=2, help="rounds, each running both variants (default: %(default)s)")
    ap.add_argument("--workers", type=int, default=2, help="Ray workers (default: %(default)s)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="torch threads of the single process (default: all cores); each Ray worker gets "
                         "threads // workers")
    ap.add_argument("--chunk-frames", type=int, default=48, help="frames per chunk (default: %(default)s)")
    ap.add_argument("--codec", default="ffv1", help="output codec, as animesr upscale --codec (default: %(default)s)")
    ap.add_argument("--components", default=None, metavar="WxH",
                    help="also time decode, index, encode and join at this input size (e.g. 640x360)")
    args = ap.parse_args(argv)
    w, h = (int(v) for v in args.size.lower().split("x"))
    worker_threads = max(1, args.threads // args.workers)
    print(f"machine: {cpu_line()}")
    print(f"clip: {args.frames} frames of {w}x{h} -> {4 * w}x{4 * h} {args.codec}; single: 1 process x "
          f"{args.threads} threads; ray: {args.workers} workers x {worker_threads} threads, chunks of "
          f"{args.chunk_frames} frames; {args.rounds} rounds")
    t_start = time.perf_counter()
    if args.rounds > 0:
        rows: dict[str, list[dict[str, float]]] = {"single": [], "ray": []}
        over: dict[str, list[float]] = {}
        with tempfile.TemporaryDirectory(prefix="bench_distributed_") as tmp:
            d = Path(tmp)
            src = d / "clip.mp4"
            make_clip(src, frames=args.frames, width=w, height=h)
            ext = "mkv"
            for r in range(args.rounds):
                order = ("single", "ray") if r % 2 == 0 else ("ray", "single")
                for variant in order:
                    if variant == "single":
                        res = run_single(src, d / f"single.{ext}", codec=args.codec, threads=args.threads)
                    else:
                        res, o = run_ray(src, d / f"ray.{ext}", d / f"work{r}", codec=args.codec, workers=args.workers,
                                         threads=worker_threads, chunk_frames=args.chunk_frames)
                        for k, v in o.items():
                            over.setdefault(k, []).extend(v)
                    rows[variant].append(res)
                    load = os.getloadavg()[0]
                    print(f"round {r + 1} {variant}: {res['wall']:.1f} s, {res['fps']:.2f} frames/s end to end, "
                          f"{res['fps_busy']:.2f} while making frames (load average {load:.1f})", flush=True)

        print()
        print("| variant | frames/s end to end (best / median) | frames/s making frames (best / median) "
              "| wall s (best) |")
        print("|---|---|---|---|")
        for name, label in (("single", f"1 process x {args.threads} threads"),
                            ("ray", f"Ray: {args.workers} workers x {worker_threads} thread(s)")):
            rs = rows[name]
            fps, busy = [x["fps"] for x in rs], [x["fps_busy"] for x in rs]
            print(f"| {label} | {max(fps):.2f} / {statistics.median(fps):.2f} | {max(busy):.2f} / "
                  f"{statistics.median(busy):.2f} | {min(x['wall'] for x in rs):.1f} |")
        ratio = [b["fps"] / a["fps"] for a, b in zip(rows["single"], rows["ray"], strict=True)]
        ratio_busy = [b["fps_busy"] / a["fps_busy"] for a, b in zip(rows["single"], rows["ray"], strict=True)]
        print(f"| ratio ray / single (per round, median) | {statistics.median(ratio):.2f} | "
              f"{statistics.median(ratio_busy):.2f} | |")
        print()
        print("| Ray overhead | median s | max s | count |")
        print("|---|---|---|---|")
        for k, v in over.items():
            if v:
                print(f"| {k} | {statistics.median(v):.3f} | {max(v):.3f} | {len(v)} |")
    if args.components:
        cw, ch = (int(v) for v in args.components.lower().split("x"))
        with tempfile.TemporaryDirectory(prefix="bench_distributed_") as tmp:
            rows_c = components(cw, ch, codec=args.codec, frames=96, tmp=Path(tmp))
        print()
        print("| stage (this machine) | rate |")
        print("|---|---|")
        for k, v in rows_c:
            print(f"| {k} | {v} |")
    print(f"total {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

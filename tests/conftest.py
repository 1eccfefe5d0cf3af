"""Shared fixtures: real weights (fetched by the project's own code), the in-repo reference outputs, the read-only
../shared folder, small torch."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from animesr_tools.vsbench import npy_clip

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VSANIMESR_SHARED", REPO.parent / "shared"))
REFERENCE_SET = REPO / "tests" / "data" / "animesr_reference.npz"  # see tests/data/README.md
CONFORMANCE_BOUND = 1e-4  # the README's fidelity claim: max abs difference from the published network, CPU fp32

# Two cores: keep each test process from oversubscribing them.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


# Tiny VapourSynth test clips: 10 frames of 16x24 (small restart settings make every test run in seconds).
N, H, W = 10, 16, 24


def smooth_frames(n: int = N, cut_at: int | None = None, seed: int = 0) -> np.ndarray:
    """(n, 3, H, W) float32 in [0, 1]: a slowly moving pattern (no scene cut unless cut_at is given)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    out = []
    for t in range(n):
        phase = 0.3 * t + (5.0 if cut_at is not None and t >= cut_at else 0.0)
        base = [0.5 + 0.4 * np.sin(xx / (3 + c) + phase) * np.cos(yy / (4 + c) - phase) for c in range(3)]
        if cut_at is not None and t >= cut_at:
            base = [1.0 - b for b in base]
        out.append(np.stack(base) + 0.02 * rng.standard_normal((3, H, W)).astype(np.float32))
    return np.clip(np.stack(out), 0, 1).astype(np.float32)


clip_from = npy_clip  # an RGB clip (RGBS unless ``fmt``) whose frames are ``data`` (N, 3, H, W): the benchmarks' source


def planes(frame) -> np.ndarray:  # noqa: ANN001
    """A VapourSynth RGB frame as a (3, H, W) array."""
    return np.stack([np.asarray(frame[p]) for p in range(3)])


def shared_path(rel: str) -> Path:
    """A file under ../shared, or skip the test with the reason (a user's clone has no ../shared)."""
    p = SHARED / rel
    if not p.exists():
        pytest.skip(f"{p} is absent (../shared is only beside the developers' checkout)")
    return p


def load_script(name: str) -> ModuleType:
    """Import ``scripts/<name>.py`` (scripts are not a package) as module ``<name>_script``."""
    spec = importlib.util.spec_from_file_location(f"{name}_script", REPO / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses in the script look their module up here
    spec.loader.exec_module(mod)
    return mod


def assert_conforms(out: np.ndarray, ref: np.ndarray, what: str) -> float:
    """Every value of ``out`` within CONFORMANCE_BOUND of ``ref``; returns the max abs difference.

    A float16 reference was rounded when stored (by up to half a float16 step: 4.9e-4 for values in [1, 2)), so each
    value may also differ by half the float16 spacing at that value; a float32 reference gets no allowance.
    """
    assert out.shape == ref.shape, f"{what}: shape {out.shape}, reference {ref.shape}"
    diff = np.abs(out.astype(np.float32) - ref.astype(np.float32))
    storage = np.spacing(np.abs(ref)).astype(np.float32) / 2 if ref.dtype == np.float16 else np.float32(0)
    excess = float((diff - storage).max())
    assert excess <= CONFORMANCE_BOUND, (
        f"{what}: max abs difference {float(diff.max()):.3g}, {excess:.3g} beyond the reference's storage rounding "
        f"(bound {CONFORMANCE_BOUND})"
    )
    return float(diff.max())


@pytest.fixture(scope="session")
def reference_set() -> dict[str, np.ndarray]:
    """The in-repo reference (tests/data): ``lr`` as float32 (T, 3, H, W) in [0, 1], the rest as stored."""
    with np.load(REFERENCE_SET) as d:
        data = {k: d[k] for k in d.files}
    data["lr"] = data["lr"].astype(np.float32) / 255
    return data


@pytest.fixture(scope="session")
def conformance() -> dict[str, np.ndarray]:
    """The developers' larger reference on real frames (../shared): extra checks, absent in a clone."""
    with np.load(shared_path("reference/animesr_conformance.npz")) as d:
        return {k: d[k] for k in d.files}


@pytest.fixture(scope="session")
def demo_video() -> Path:
    return shared_path("data/onepiece_demo.mp4")


@pytest.fixture(scope="module")
def core():  # noqa: ANN201 - vapoursynth is imported lazily
    """The VapourSynth core with the installed ``animesr`` plugin; in CI a missing plugin is a failure, not a skip."""
    vs = pytest.importorskip("vapoursynth")
    c = vs.core
    if not hasattr(c, "animesr"):
        msg = "core.animesr is not installed: run `make test` (or `pip install .`) first"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return c


@pytest.fixture(scope="module")
def vs_core():  # noqa: ANN201 - vapoursynth is imported lazily
    """The VapourSynth core, with or without the native plugin (for the pure-Python filter and plain VapourSynth)."""
    return pytest.importorskip("vapoursynth").core


@pytest.fixture(scope="session")
def weights_v1() -> Path:
    from vsanimesr.weights import fetch

    return fetch("v1")


@pytest.fixture(scope="session")
def weights_v2() -> Path:
    from vsanimesr.weights import fetch

    return fetch("v2")


@pytest.fixture()
def pretend_bf16_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let ``bf16=True`` compute in bfloat16 on any CPU (the engine falls back to fp32 on CPUs without bf16
    instructions, where bf16 is emulated, about 10x slower): for tests of bf16's numerics."""
    from vsanimesr.backends import cpu

    monkeypatch.setattr(cpu, "bf16_missing", lambda: None)


SETTINGS = dict(reset_interval=4, warmup=2)  # periodic restarts at 4 and 8, each led in by 2 warm-up steps
"""Filter settings of the VapourSynth tests (tiny clips, so restarts must come often)."""

_VPY = """
import logging, sys
import numpy as np
import torch
import vapoursynth as vs
sys.path.insert(0, {tests!r})
from conftest import clip_from  # (conftest sets its own thread count on import: the line below must follow it)
torch.set_num_threads({threads})  # as in the test process: CPU kernels may sum in another order with another count
logging.basicConfig(filename={log!r}, level=logging.DEBUG, format="%(message)s", force=True)
logging.getLogger("vsanimesr").setLevel(logging.DEBUG)
core = vs.core
core.num_threads = 4
{extra}
data = np.load({npy!r})
from vsanimesr.vs import upscale_rgb  # the native or the pure-Python filter, as VSANIMESR_IMPLEMENTATION says
up = upscale_rgb(clip_from(core, data), model="v2", device="cpu", {args})
order = {order!r}  # output frames in this order (None: as they are)
(core.std.Splice([up[i] for i in order]) if order else up).set_output()
"""


def run_vspipe(
    tmp_path: Path, data: np.ndarray, *args: str, extra: str = "", kwargs: str = "reset_interval=4, warmup=2",
    implementation: str = "native", order: list[int] | None = None,
):
    vspipe = Path(sys.executable).with_name("vspipe")
    if not vspipe.exists():
        vspipe = Path(shutil.which("vspipe") or "vspipe")
    np.save(tmp_path / "clip.npy", data)
    log = tmp_path / "animesr.log"
    script = tmp_path / "clip.vpy"
    script.write_text(
        _VPY.format(
            tests=str(REPO / "tests"), log=str(log), npy=str(tmp_path / "clip.npy"), extra=extra, args=kwargs,
            threads=torch.get_num_threads(), order=order,
        )
    )
    # This checkout first; an existing PYTHONPATH is kept after it (e.g. a development copy of vapoursynth).
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
               OMP_NUM_THREADS="1", VSANIMESR_IMPLEMENTATION=implementation)
    proc = subprocess.run(
        [str(vspipe), *args, str(script), str(tmp_path / "out.raw")], capture_output=True, text=True, env=env,
        timeout=300,
    )
    return proc, tmp_path / "out.raw", log


def make_frame(h: int, w: int, seed: int = 0) -> np.ndarray:
    """(3, h, w) float32 RGB: smooth colour gradients, a hard-edged block, noise and values outside [0, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    x = np.stack([0.5 + 0.65 * np.sin(xx / (3 + 2 * c) + yy / (5 + c) + c) for c in range(3)])
    x[:, h // 4 : h // 2, w // 3 : w // 2] = np.array([0.9, 0.1, 0.3])[:, None, None]
    x += 0.04 * rng.standard_normal(x.shape)
    return x.astype(np.float32)


def write_h264_aac(path: Path, frames, *, options: dict[str, str] | None = None) -> None:  # noqa: ANN001
    """An H.264 + AAC file at 23.976 fps: ``frames`` ((H, W, 3) uint8 RGB) and a 440 Hz stereo tone as long."""
    from fractions import Fraction

    import av

    frames = list(frames)
    height, width = frames[0].shape[:2]
    rate = Fraction(24000, 1001)
    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=rate)
        v.width, v.height, v.pix_fmt = width, height, "yuv420p"
        if options:
            v.options = options
        a = out.add_stream("aac", rate=48000)
        a.layout = "stereo"
        for i, img in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(img, dtype=np.uint8), format="rgb24")
            vf.pts = i
            out.mux(v.encode(vf))
        out.mux(v.encode(None))
        samples = int(48000 * len(frames) / rate)
        tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(samples) / 48000)).astype(np.float32)
        for k in range(0, samples, 1024):
            af = av.AudioFrame.from_ndarray(np.stack([tone[k : k + 1024]] * 2), format="fltp", layout="stereo")
            af.sample_rate, af.pts = 48000, k
            out.mux(a.encode(af))
        out.mux(a.encode(None))

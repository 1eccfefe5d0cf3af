"""Backends: the ONNX export run by onnxruntime, the OpenVINO step in the engine, CPU-dependent precision, caches.

Frames are procedurally drawn cartoons (training.synthetic: flat shapes, outlines, motion), so nothing here needs
../shared. The export and the OpenVINO backend are optional extras that CI installs: a missing package fails in CI.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from animesr_tools.metrics import psnr
from vsanimesr import AnimeSR
from vsanimesr.backends import cpu as cpuinfo
from vsanimesr.options import OptionError

REPO = Path(__file__).resolve().parents[1]


def need(*modules: str) -> None:
    """Skip without an optional package, except in CI, which installs the extras (a missing one is a failure)."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        msg = f"optional package(s) {missing} not installed (extras [onnx] / [openvino])"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)


def cartoon(t: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    from training.synthetic import make_synthetic_cartoon_clip

    return make_synthetic_cartoon_clip(t, h, w, rng=np.random.default_rng(seed))


@pytest.fixture(scope="module")
def onnx_v2(weights_v2: Path) -> Path:
    """The fp32 export of v2 from the per-machine cache (what backend="openvino" reads), exported on first use."""
    need("onnx", "onnxscript")
    from vsanimesr.export import cached_onnx

    return cached_onnx(weights_v2)


def onnx_chain(path: Path, frames: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """Play ``frames`` (T, H, W, 3), uint8 or float in [0, 1], through the exported step with onnxruntime, as one
    chain from zero (edge frames stand in for their missing neighbour, as in the engine)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = frames.transpose(0, 3, 1, 2).astype(np.float32) / (255.0 if frames.dtype == np.uint8 else 1.0)
    t, _, h, w = x.shape
    out, state = np.zeros((1, 3, 4 * h, 4 * w), dtype), np.zeros((1, 64, h, w), dtype)
    outs = []
    for k in range(t):
        f9 = np.concatenate([x[max(k - 1, 0)], x[k], x[min(k + 1, t - 1)]])[None].astype(dtype)
        out, state = sess.run(None, {"frames9": f9, "prev_out": out, "state": state})
        outs.append(out[0].transpose(1, 2, 0).astype(np.float32))
    return np.stack(outs)


ONE_CHAIN = dict(device="cpu", reset_interval=0, scene_threshold=0)


# --------------------------------------------------------------------------- ONNX export


@pytest.mark.slow
def test_onnx_export_signature_and_onnxruntime_chain_match_the_engine(
    onnx_v2: Path, weights_v2: Path, reference_set: dict
) -> None:
    need("onnxruntime")
    import onnx

    from vsanimesr.weights import sha256_of

    path = onnx_v2
    m = onnx.load(path)
    io = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
          for v in [*m.graph.input, *m.graph.output]}  # fmt: skip
    assert [v.name for v in m.graph.input] == ["frames9", "prev_out", "state"]
    assert [v.name for v in m.graph.output] == ["out", "new_state"]
    assert io == {"frames9": [1, 9, "H", "W"], "prev_out": [1, 3, "4H", "4W"], "state": [1, 64, "H", "W"],
                  "out": [1, 3, "4H", "4W"], "new_state": [1, 64, "H", "W"]}  # fmt: skip
    meta = {p.key: p.value for p in m.metadata_props}
    assert meta["vsanimesr.model_sha256"] == sha256_of(weights_v2)
    assert meta["vsanimesr.precision"] == "fp32" and meta["vsanimesr.scale"] == "4"

    clip = cartoon(8, 36, 52)  # dynamic H/W: the export was traced at 64x96
    ref = AnimeSR(model=str(weights_v2), **ONE_CHAIN).upscale(clip)
    got = onnx_chain(path, clip)
    assert got.shape == ref.shape == (8, 144, 208, 3)
    assert np.abs(got - ref).max() < 1e-4  # a real chain: the state fed back 8 times
    # and the published network's own output (tests/data), last frame of a 6-step chain, in float32
    published = onnx_chain(path, reference_set["lr"].transpose(0, 2, 3, 1))[-1].transpose(2, 0, 1)
    assert np.abs(published - reference_set["sr_AnimeSR_v2_last"]).max() < 1e-4


@pytest.mark.slow
def test_onnx_export_cli_fp16(weights_v2: Path, tmp_path: Path) -> None:
    need("onnx", "onnxscript", "onnxruntime")
    out = tmp_path / "sub" / "animesr_v2_fp16.onnx"
    proc = subprocess.run(
        [sys.executable, "-m", "vsanimesr.export", "onnx", "--model", str(weights_v2), "--out", str(out), "--fp16"],
        capture_output=True, text=True, cwd=REPO, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{out}\n"  # stdout carries only the path
    import onnx

    m = onnx.load(out)
    assert {v.type.tensor_type.elem_type for v in [*m.graph.input, *m.graph.output]} == {onnx.TensorProto.FLOAT16}
    clip = cartoon(4, 24, 32, seed=1)
    ref = AnimeSR(model=str(weights_v2), **ONE_CHAIN).upscale(clip)
    got = onnx_chain(out, clip, np.float16)
    assert psnr(np.clip(got, 0, 1), np.clip(ref, 0, 1)) > 40


def test_onnx_export_errors(tmp_path: Path, capsys) -> None:
    from vsanimesr.export import main

    assert main(["onnx", "--model", "v9", "--out", str(tmp_path / "x.onnx")]) == 1
    assert "model" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


# --------------------------------------------------------------------------- OpenVINO backend


@pytest.mark.slow
def test_onnx_cache_exports_once(onnx_v2: Path, weights_v2: Path) -> None:
    from vsanimesr.export import cached_onnx
    from vsanimesr.weights import cache_dir, sha256_of

    assert onnx_v2.parent == cache_dir() / "onnx" and onnx_v2.name.startswith(f"animesr-{sha256_of(weights_v2)[:16]}-")
    stamp = onnx_v2.stat().st_mtime_ns
    t0 = time.perf_counter()
    assert cached_onnx("v2") == onnx_v2
    assert time.perf_counter() - t0 < 5 and onnx_v2.stat().st_mtime_ns == stamp  # found, not exported again


@pytest.fixture()
def ov_engine(onnx_v2: Path, weights_v2: Path):
    need("openvino")

    def make(**kw: object) -> AnimeSR:
        return AnimeSR(model=str(weights_v2), backend="openvino", **{"device": "cpu", **kw})

    return make


@pytest.mark.slow
def test_openvino_backend_matches_torch_over_a_10_frame_chain(ov_engine, weights_v2: Path) -> None:
    clip = cartoon(10, 45, 61, seed=2)  # odd size: padded to 48x64, output cropped to 180x244
    sr = ov_engine(**ONE_CHAIN)
    assert sr.options.backend == "openvino" and sr.precision == "fp32" and not sr.channels_last
    got = sr.upscale(clip)
    ref = AnimeSR(model=str(weights_v2), **ONE_CHAIN).upscale(clip)
    assert got.shape == ref.shape == (10, 180, 244, 3)
    assert np.abs(got - ref).max() < 1e-3
    assert sr._step_fn.sizes == [(48, 64)]  # compiled once for the clip's (padded) size


@pytest.mark.slow
def test_openvino_backend_tiles_and_random_access(ov_engine, weights_v2: Path) -> None:
    """Order-proofness through the engine: any request order gives the sequential result bit for bit."""
    clip = cartoon(9, 28, 40, seed=3)
    kw = dict(reset_interval=4, warmup=1, tile=24, tile_overlap=4)  # two restarts; 2 x 2 tiles of 3 sizes
    sr = ov_engine(**kw)
    ref = sr.upscale(clip)
    torch_ref = AnimeSR(model=str(weights_v2), device="cpu", **kw).upscale(clip)
    assert np.abs(ref - torch_ref).max() < 1e-3
    assert len(sr._step_fn.sizes) > 1  # tiles of several sizes, each compiled once
    order = list(range(len(clip)))
    random.Random(5).shuffle(order)
    session = ov_engine(**kw).open(clip.__getitem__, len(clip))
    for n in order:
        assert np.array_equal(session.frame(n), ref[n]), n


@pytest.mark.slow
def test_openvino_backend_refuses_what_it_cannot_do(ov_engine, onnx_v2: Path) -> None:
    from vsanimesr.backends import make_step
    from vsanimesr.backends.openvino import OpenVINOStep

    with pytest.raises(OptionError, match=r"AnimeSR: compile=True: .*backend 'openvino' compiles by itself"):
        ov_engine(compile=True)
    with pytest.raises(OptionError, match=r"device='cuda': backend 'openvino' runs on the CPU only"):
        make_step("openvino", torch.nn.Identity(), model_path="v2", device=torch.device("cuda"), precision="fp32")
    with pytest.raises(OptionError, match=r"backend='tensorflow': must be one of torch, openvino"):
        AnimeSR(device="cpu", backend="tensorflow")
    with pytest.raises(ValueError, match=r"OpenVINOStep: precision must be one of fp32, bf16, fp16, got 'int4'"):
        OpenVINOStep(onnx_v2, precision="int4")
    import openvino as ov

    caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    if "BF16" not in caps:  # AVX2 CPUs: the plugin has no bf16 kernels, and says so
        with pytest.raises(ValueError, match=r"precision='bf16' is not supported by OpenVINO's CPU plugin here"):
            OpenVINOStep(onnx_v2, precision="bf16")


# --------------------------------------------------------------------------- precision that fits the CPU


@pytest.fixture()
def flags(monkeypatch: pytest.MonkeyPatch):
    """Pretend the CPU has the given /proc/cpuinfo flags (x86); the once-per-process warning starts afresh."""
    import vsanimesr.backends as backends

    monkeypatch.setattr(backends, "_warned", set())
    monkeypatch.setattr(cpuinfo.platform, "machine", lambda: "x86_64")

    def set_flags(*names: str) -> None:
        monkeypatch.setattr(cpuinfo, "cpu_flags", lambda: frozenset(names))

    return set_flags


def test_bf16_falls_back_to_fp32_with_one_warning_without_bf16_instructions(flags, caplog) -> None:
    flags("sse4_2", "avx2", "fma")
    with caplog.at_level(logging.WARNING, logger="vsanimesr"):
        sr = AnimeSR(device="cpu", bf16=True)
        again = AnimeSR(device="cpu", bf16=True)
    assert sr.precision == again.precision == "fp32" and not sr.bf16
    assert "precision=fp32" in sr.describe()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "bf16=True ignored" in warnings[0] and "AVX512-BF16" in warnings[0] and "amx_bf16" in warnings[0]
    clip = cartoon(2, 16, 16)
    assert np.array_equal(sr.upscale(clip), AnimeSR(device="cpu").upscale(clip))  # it really is fp32


@pytest.mark.parametrize("flag", ["avx512_bf16", "amx_bf16"])
def test_bf16_is_used_where_the_cpu_has_bf16_instructions(flags, flag: str, caplog) -> None:
    flags("avx2", "avx512f", flag)
    with caplog.at_level(logging.WARNING, logger="vsanimesr"):
        sr = AnimeSR(device="cpu", bf16=True)
    assert sr.precision == "bf16" and sr.bf16
    assert not caplog.records


def test_cpu_flags_read_from_proc_cpuinfo(monkeypatch: pytest.MonkeyPatch) -> None:
    text = "processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu avx2 avx512_bf16\n"
    monkeypatch.setattr(cpuinfo, "_cpuinfo", lambda: text)
    monkeypatch.setattr(cpuinfo.platform, "machine", lambda: "x86_64")
    assert cpuinfo.cpu_flags() == {"fpu", "avx2", "avx512_bf16"}
    assert cpuinfo.cpu_model() == "Test CPU 9000"
    assert cpuinfo.bf16_missing() is None
    monkeypatch.setattr(cpuinfo, "_cpuinfo", lambda: text.replace(" avx512_bf16", ""))
    assert "Test CPU 9000" in cpuinfo.bf16_missing() and "AVX512-BF16" in cpuinfo.bf16_missing()
    monkeypatch.setattr(cpuinfo, "_cpuinfo", lambda: "")
    assert "could not read the CPU's feature flags" in cpuinfo.bf16_missing()
    monkeypatch.setattr(cpuinfo, "_cpuinfo", lambda: "Features\t: fp asimd bf16\n")
    monkeypatch.setattr(cpuinfo.platform, "machine", lambda: "aarch64")
    assert cpuinfo.bf16_missing() is None


# --------------------------------------------------------------------------- torch.compile cache


def test_compile_cache_goes_to_the_user_cache_unless_chosen(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from vsanimesr.backends import persistent_compile_cache

    monkeypatch.setenv("VSANIMESR_HOME", str(tmp_path))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    assert persistent_compile_cache() == tmp_path / "torchinductor"
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "torchinductor")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert persistent_compile_cache() == tmp_path / "mine"


@pytest.mark.slow
def test_openvino_backend_through_the_vapoursynth_filter(ov_engine, core) -> None:
    """core.animesr.Upscale(backend="openvino") serves frames in any order equal to the engine's sequential pass."""
    import vapoursynth as vs
    from conftest import clip_from, planes, smooth_frames

    data = smooth_frames()
    kw = dict(reset_interval=4, warmup=2)
    ref = ov_engine(**kw).upscale(data.transpose(0, 2, 3, 1))
    up = core.animesr.Upscale(clip_from(core, data, vs.RGBS), model="v2", device="cpu", backend="openvino", **kw)
    for n in [7, 2, 9, 0, 5]:
        assert np.array_equal(planes(up.get_frame(n)), ref[n].transpose(2, 0, 1)), n

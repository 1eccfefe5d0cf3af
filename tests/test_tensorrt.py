"""The TensorRT backend's CPU-checkable parts: the engine cache key (pure) and the ONNX graph it is built from.

Building and running engines needs an NVIDIA GPU: see tests/test_gpu.py (cache reuse and invalidation, fp16 bounds).
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
import torch

from vsanimesr.backends import tensorrt as trt_backend
from vsanimesr.backends.tensorrt import ENGINE_FORMAT, EngineKey, engine_key

SHA = "d0f29c8966b53718828bd424bbdc306e7ff0cbf6350beadaf8b5b2500b108548"
BASE = dict(precision="fp16", hw=(360, 640), gpu="NVIDIA H200", compute_capability="9.0",
            trt_version="10.13.0.35", export_format=1)


def test_equal_settings_give_equal_keys_and_names() -> None:
    a, b = engine_key(SHA, **BASE), engine_key(SHA, **{**BASE, "gpu": " NVIDIA H200 "})
    assert a == b and a.digest == b.digest and a.filename() == b.filename()
    assert a.static and a.engine_format == ENGINE_FORMAT
    assert engine_key(SHA, **{**BASE, "hw": [360, 640]}) == a  # lists and tuples alike


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("model_sha256", "0" * 64),
        ("precision", "fp32"),
        ("precision", "tf32"),
        ("hw", (364, 640)),
        ("hw", (360, 644)),
        ("gpu", "NVIDIA A100-SXM4-80GB"),
        ("compute_capability", "8.0"),
        ("trt_version", "11.4.0.106"),
        ("export_format", 2),
    ],
)
def test_every_setting_changes_the_key_and_the_file(field: str, value) -> None:
    base = engine_key(SHA, **BASE)
    if field == "model_sha256":
        other = engine_key(value, **BASE)
    else:
        other = engine_key(SHA, **{**BASE, field: value})
    assert other != base and other.digest != base.digest and other.filename() != base.filename()


def test_engine_format_and_profile_are_part_of_the_key() -> None:
    base = engine_key(SHA, **BASE)
    assert dataclasses.replace(base, engine_format=ENGINE_FORMAT + 1).digest != base.digest
    static_as_profile = engine_key(SHA, **{**BASE, "hw": None, "profile": ((360, 640),) * 3})
    assert static_as_profile == base  # one size either way: the same engine
    dyn = engine_key(SHA, **{**BASE, "hw": None, "profile": ((64, 64), (360, 640), (720, 1280))})
    assert not dyn.static and dyn.digest != base.digest
    assert "in64x64-640x360-1280x720" in dyn.filename()


def test_file_name_is_readable_and_safe() -> None:
    k = engine_key(SHA, **{**BASE, "gpu": "NVIDIA GeForce RTX 4090 / D (rev. A)"})
    name = k.filename()
    assert re.fullmatch(r"[a-z0-9.x-]+\.engine", name), name
    assert name.startswith(f"animesr-{SHA[:16]}-in640x360-fp16-nvidia-geforce-rtx-4090-d-rev-a-sm90-trt10.13.0.35-")
    assert name.endswith(f"{k.digest[:12]}.engine")
    assert isinstance(k, EngineKey)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(model_sha256="abc"), "model_sha256 must be 64 lowercase hex digits"),
        (dict(precision="int8"), "precision must be one of fp32, tf32, fp16, got 'int8'"),
        (dict(hw=None), "give exactly one of hw and profile"),
        (dict(profile=((64, 64), (64, 64), (64, 64))), "give exactly one of hw and profile"),
        (dict(hw=(360, 642)), "multiples of 4"),
        (dict(hw=(0, 640)), "multiples of 4 and >= 4"),
        (dict(hw=(360,)), r"sizes must be \(height, width\) pairs"),
        (dict(hw=None, profile=((64, 64), (32, 640), (720, 1280))), "min <= opt <= max"),
        (dict(gpu=""), "gpu must be a non-empty string"),
        (dict(trt_version=None), "trt_version must be a non-empty string"),
    ],
)
def test_bad_key_arguments_are_named(kwargs: dict, match: str) -> None:
    args = {**BASE, **kwargs}
    sha = args.pop("model_sha256", SHA)
    with pytest.raises(ValueError, match=match):
        engine_key(sha, **args)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(device=torch.device("cpu")), "device='cpu': backend 'tensorrt' needs a CUDA device"),
        (dict(compile=True), "compile=True: is torch.compile; backend 'tensorrt' builds its own engine"),
        (dict(precision="bf16"), "backend='tensorrt': computes in fp32, tf32, fp16, not bf16"),
    ],
)
def test_make_step_names_the_option_that_cannot_work(weights_v2, kwargs: dict, match: str) -> None:
    from vsanimesr.loader import load_model
    from vsanimesr.options import OptionError

    args = {"model_path": weights_v2, "device": torch.device("cuda"), "precision": "fp16", **kwargs}
    with pytest.raises(OptionError, match=match):
        trt_backend.make_step(load_model(weights_v2), **args)


@pytest.mark.skipif(not trt_backend.missing_packages(), reason="tensorrt is installed here")
def test_make_step_without_tensorrt_names_the_extra(weights_v2) -> None:
    from vsanimesr.loader import load_model
    from vsanimesr.options import OptionError

    with pytest.raises(OptionError, match=r"backend='tensorrt': needs the package\(s\) tensorrt: .*\[trt\]"):
        trt_backend.make_step(load_model(weights_v2), model_path=weights_v2, device=torch.device("cuda"),
                              precision="fp32")


@pytest.mark.skipif(not trt_backend.missing_packages(), reason="tensorrt is installed here")
def test_missing_tensorrt_is_a_clear_error(weights_v2) -> None:
    with pytest.raises(RuntimeError, match=r"TensorRTStep: needs the package\(s\) tensorrt: .*\[trt\]"):
        trt_backend.TensorRTStep(weights_v2, device="cuda")


@pytest.mark.slow  # the export takes 20-45 s on 2 cores
def test_onnx_graph_for_the_engine_matches_the_torch_step(weights_v2, tmp_path, monkeypatch, capfd) -> None:
    """What TensorRT is built from: one step with explicit state, any multiple-of-4 size (checked with ONNX Runtime)."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from vsanimesr.loader import load_model

    monkeypatch.setenv("VSANIMESR_HOME", str(tmp_path))
    path, fmt = trt_backend._onnx_for(weights_v2, fp16=False)
    assert path.is_file() and str(path).startswith(str(tmp_path))
    assert trt_backend._onnx_for(weights_v2, fp16=False)[0] == path  # exported once, then reused
    assert capfd.readouterr().out == ""  # nothing on stdout (vspipe's video stream)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == list(trt_backend.INPUT_NAMES)
    assert [o.name for o in sess.get_outputs()] == list(trt_backend.OUTPUT_NAMES)
    net = load_model(weights_v2).eval()
    rng = np.random.default_rng(0)
    for h, w in ((16, 24), (20, 12)):  # two sizes through one graph: the dynamic axes are real
        frames = torch.from_numpy(rng.random((1, 9, h, w), dtype=np.float32))
        prev, state = net.init_state(frames)
        p_ort, s_ort = prev.numpy(), state.numpy()
        with torch.no_grad():
            for _ in range(2):  # a recurrent step feeding its own outputs back
                prev, state = net(frames, prev, state)
                p_ort, s_ort = sess.run(None, {"frames9": frames.numpy(), "prev_out": p_ort, "state": s_ort})
                np.testing.assert_allclose(p_ort, prev.numpy(), rtol=0, atol=1e-4)
                np.testing.assert_allclose(s_ort, state.numpy(), rtol=0, atol=1e-4)


def test_engine_option_reaches_the_backend(weights_v2) -> None:
    """Options.backend='tensorrt' goes through make_step: on the CPU the engine refuses it with the option named."""
    from vsanimesr.engine import AnimeSR
    from vsanimesr.options import BACKENDS, OptionError

    assert "tensorrt" in BACKENDS
    with pytest.raises(OptionError, match=r"^AnimeSR: device='cpu': backend 'tensorrt' needs a CUDA device"):
        AnimeSR(model=str(weights_v2), device="cpu", backend="tensorrt")

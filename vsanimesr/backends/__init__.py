"""Network-step implementations ("backends") and what the CPU they run on can do fast.

A backend is a callable ``step(frames9, prev_out, state) -> (out, state)`` on NCHW torch tensors, the signature of
:class:`vsanimesr.archs.AnimeSRNet`'s ``forward``; the engine asks :func:`make_step` for the one that
``Options.backend`` names:

* ``torch``: the module itself, or through ``torch.compile`` with its caches kept per machine (see
  :func:`persistent_compile_cache`), optionally replayed as CUDA graphs
  (:class:`vsanimesr.backends.graphs.CUDAGraphStep`);
* ``openvino``: :class:`vsanimesr.backends.openvino.OpenVINOStep`, the ONNX export of the same step compiled by
  OpenVINO once per input size (optional extra ``vapoursynth-animesr[openvino]``; CPU only here);
* ``tensorrt``: :class:`vsanimesr.backends.tensorrt.TensorRTStep`, the same export built into a TensorRT engine per
  input size and cached per model, size, precision, GPU and TensorRT version (``vapoursynth-animesr[trt]``; CUDA).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from vsanimesr.backends import cpu
from vsanimesr.backends.cpu import BF16_FLAGS, bf16_missing, cpu_flags, cpu_model
from vsanimesr.options import OptionError

__all__ = [
    "BF16_FLAGS",
    "StepFn",
    "bf16_missing",
    "cpu_flags",
    "cpu_model",
    "make_step",
    "persistent_compile_cache",
    "use_bf16",
]

log = logging.getLogger("vsanimesr")

StepFn = Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]

_warned: set[str] = set()


def use_bf16(device: torch.device) -> bool:
    """Whether ``bf16=True`` should really compute in bfloat16 on ``device``.

    On a CPU without bfloat16 instructions (:func:`bf16_missing`) the answer is no: oneDNN emulates bf16 there, about
    10-70x slower than fp32 (measured on an AVX2 AMD EPYC), so the engine falls back to fp32 and logs one warning per
    process saying which instruction set is missing. GPUs always answer yes.
    """
    if device.type != "cpu":
        return True
    why = cpu.bf16_missing()  # through the module, so tests can pretend another CPU
    if why is None:
        return True
    if why not in _warned:
        _warned.add(why)
        log.warning("AnimeSR: bf16=True ignored: %s, where bfloat16 is emulated and 10x slower or worse; "
                    "computing in fp32", why)  # fmt: skip
    return False


def persistent_compile_cache() -> Path:
    """Point TorchInductor's on-disk caches at the user cache (``vsanimesr/torchinductor``) unless the user chose.

    Inductor's FX-graph and AOTAutograd caches are on by default but live in ``/tmp/torchinductor_<user>``, which
    is emptied at boot (often a tmpfs); in the user cache the compile is paid once per machine, not once per boot.
    Returns the directory in use. Takes effect only before the process's first compile.
    """
    from vsanimesr.weights import cache_dir

    current = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if current is None:
        current = os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache_dir() / "torchinductor")
    return Path(current)


def make_step(
    backend: str,
    net: nn.Module,
    *,
    model_path: str | os.PathLike[str],
    device: torch.device,
    precision: str,
    compile: bool = False,  # noqa: A002 - the option's name
    cuda_graphs: bool = False,
) -> StepFn:
    """The step callable for ``backend`` (see the module docstring); ``net`` is already on ``device``.

    ``precision`` is the engine's (``fp32``, ``bf16``, ...); the torch backend applies it through the module's dtype
    and autocast, the OpenVINO backend through its inference-precision hint. A combination that cannot work raises
    :class:`~vsanimesr.options.OptionError` naming the option and its value.
    """
    if cuda_graphs and backend != "torch":
        raise OptionError("cuda_graphs", True, f"applies to backend 'torch', not {backend!r}")
    if backend == "torch":
        step: StepFn = net
        if compile:
            cache = persistent_compile_cache()
            log.debug("AnimeSR: torch.compile with its caches in %s", cache)
            step = torch.compile(net, dynamic=False)
        if cuda_graphs:
            if device.type != "cuda":
                raise OptionError("cuda_graphs", True, f"needs a CUDA device, got device={str(device)!r}")
            from vsanimesr.backends.graphs import CUDAGraphStep

            step = CUDAGraphStep(step, device=device)
        return step
    if backend == "openvino":
        from vsanimesr.backends import openvino

        if device.type != "cpu":
            raise OptionError("device", str(device), "backend 'openvino' runs on the CPU only")
        if compile:
            raise OptionError("compile", True, "is torch.compile; backend 'openvino' compiles by itself")
        missing = openvino.missing_packages()
        if missing:
            raise OptionError("backend", backend, f"needs the package(s) {', '.join(missing)}: "
                                                  "pip install 'vapoursynth-animesr[openvino]'")  # fmt: skip
        return openvino.OpenVINOStep.for_model(model_path, device="CPU", precision=precision,
                                               threads=torch.get_num_threads())  # fmt: skip
    if backend == "tensorrt":
        from vsanimesr.backends import tensorrt

        return tensorrt.make_step(net, model_path=model_path, device=device, precision=precision, compile=compile)
    raise OptionError("backend", backend, "must be one of torch, openvino, tensorrt")

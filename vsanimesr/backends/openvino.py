"""The network step through OpenVINO: the ONNX export compiled once per input size, called with torch tensors.

:class:`OpenVINOStep` is a drop-in for ``AnimeSRNet.forward`` in the engine: ``step(frames9, prev_out, state) ->
(out, new_state)`` on float32 NCHW CPU tensors. The graph is read from :func:`vsanimesr.export.cached_onnx` (exported
once per weight file and machine), reshaped to each input size it meets and compiled for that size (static shapes
let OpenVINO pick its fastest kernels; compiling v2 takes a fraction of a second). The inputs and outputs stay
float32 whatever the compute precision, so the recurrent state is carried in fp32.

Precision is explicit: ``fp32`` sets OpenVINO's inference precision to f32 (its CPU plugin would otherwise pick bf16
by itself on CPUs with AVX512-BF16/AMX, silently); ``bf16`` and ``fp16`` need the device to list them in its
``OPTIMIZATION_CAPABILITIES``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
from collections import OrderedDict
from typing import Any

import torch
from torch import Tensor

__all__ = ["OpenVINOStep", "missing_packages"]

log = logging.getLogger("vsanimesr.openvino")

_HINTS = {"fp32": ("f32", None), "bf16": ("bf16", "BF16"), "fp16": ("f16", "FP16")}
"""Our precision name -> (OpenVINO inference precision hint, the capability the device must list)."""
_MAX_SIZES = 16  # compiled models kept (an engine meets one size per clip, a few more with tiles)


def missing_packages() -> list[str]:
    """What the backend needs and this Python lacks: openvino, plus onnx and onnxscript for the first export."""
    return [m for m in ("openvino", "onnx", "onnxscript") if importlib.util.find_spec(m) is None]


def _import_openvino() -> Any:
    try:
        import openvino
    except ImportError as e:
        raise RuntimeError(
            "OpenVINOStep: backend 'openvino' needs the openvino package: pip install 'vapoursynth-animesr[openvino]'"
        ) from e
    return openvino


class OpenVINOStep:
    """One AnimeSR step on an OpenVINO device, compiled per input size; called like the torch module.

    Args:
        model: the exported step (:func:`vsanimesr.export.cached_onnx` or ``python -m vsanimesr.export``), or an
            ``openvino.Model`` of it (e.g. from ``openvino.convert_model``).
        device: OpenVINO device name: ``CPU`` (default), ``GPU`` (its Intel GPU plugin) ...
        precision: ``fp32``, ``bf16`` or ``fp16`` compute; inputs, outputs and the state stay float32.
        threads: inference threads on the CPU (None: OpenVINO's default, one per physical core).
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | Any,
        *,
        device: str = "CPU",
        precision: str = "fp32",
        threads: int | None = None,
    ) -> None:
        ov = _import_openvino()
        if precision not in _HINTS:
            raise ValueError(f"OpenVINOStep: precision must be one of {', '.join(_HINTS)}, got {precision!r}")
        if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
            raise ValueError(f"OpenVINOStep: threads must be a positive integer or None, got {threads!r}")
        self._core = ov.Core()
        if device.split(".")[0] not in {d.split(".")[0] for d in self._core.available_devices}:
            raise ValueError(
                f"OpenVINOStep: device={device!r} is not available (OpenVINO sees {self._core.available_devices})"
            )
        hint, capability = _HINTS[precision]
        if capability is not None:
            caps = list(self._core.get_property(device, "OPTIMIZATION_CAPABILITIES"))
            if capability not in caps:
                raise ValueError(f"OpenVINOStep: precision={precision!r} is not supported by OpenVINO's {device} "
                                 f"plugin here (it offers {', '.join(caps)})")  # fmt: skip
        self.device = device
        self.precision = precision
        self._config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"}
        if threads is not None and device.startswith("CPU"):
            self._config["INFERENCE_NUM_THREADS"] = threads
        if isinstance(model, (str, os.PathLike)):
            self._model = self._core.read_model(os.fspath(model))
            names = [p.get_any_name() for p in self._model.inputs]
            if names != ["frames9", "prev_out", "state"]:
                raise ValueError(f"OpenVINOStep: {os.fspath(model)!r} is not an AnimeSR step export (inputs {names})")
        elif isinstance(model, ov.Model) and len(model.inputs) == 3 and len(model.outputs) == 2:
            self._model = model
        else:
            raise ValueError(f"OpenVINOStep: model must be the path of an AnimeSR step export or an openvino.Model "
                             f"with 3 inputs and 2 outputs, got {model!r}")  # fmt: skip
        self._compiled: OrderedDict[tuple[int, int], Any] = OrderedDict()  # (h, w) -> InferRequest
        self._lock = threading.Lock()  # an infer request runs one inference at a time; sessions may share a step

    @classmethod
    def for_model(cls, model: str | os.PathLike[str], **kwargs: Any) -> OpenVINOStep:
        """The step for a model name or weight file, through the per-machine ONNX cache."""
        from vsanimesr.export import cached_onnx

        return cls(cached_onnx(model), **kwargs)

    @property
    def sizes(self) -> list[tuple[int, int]]:
        """Input sizes (h, w) compiled so far, oldest first."""
        return list(self._compiled)

    def __call__(self, frames9: Tensor, prev_out: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        h, w = frames9.shape[-2:]
        inputs = [t.detach().to("cpu", torch.float32).contiguous().numpy() for t in (frames9, prev_out, state)]
        with self._lock:
            request = self._request(int(h), int(w), [a.shape for a in inputs])
            result = request.infer(inputs, share_inputs=True, share_outputs=False)  # outputs copied: ours to keep
        out, new_state = (torch.from_numpy(result[i]) for i in range(2))
        return out, new_state

    def _request(self, h: int, w: int, shapes: list[tuple[int, ...]]) -> Any:
        request = self._compiled.get((h, w))
        if request is not None:
            self._compiled.move_to_end((h, w))
            return request
        model = self._model.clone()
        model.reshape({p: list(s) for p, s in zip(model.inputs, shapes, strict=True)})
        compiled = self._core.compile_model(model, self.device, self._config)
        log.debug("OpenVINO: compiled for %dx%d on %s (%s)", w, h, self.device, self.precision)
        request = self._compiled[(h, w)] = compiled.create_infer_request()
        while len(self._compiled) > _MAX_SIZES:
            self._compiled.popitem(last=False)
        return request

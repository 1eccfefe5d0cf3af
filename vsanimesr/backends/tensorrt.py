"""TensorRT backend: one AnimeSR step as a TensorRT engine, built from the ONNX export and cached on disk.

``TensorRTStep(...)`` is a callable ``step(frames9, prev_out, state) -> (out, new_state)`` on CUDA tensors, the
signature of :class:`vsanimesr.archs.AnimeSRNet`'s ``forward``, with the recurrent state as explicit inputs and
outputs (see :mod:`vsanimesr.export`). It runs on torch's current CUDA stream, so it orders with the engine's other
work and needs no synchronisation.

* Precision: ``fp32`` (IEEE: TensorRT's default TF32 is switched off, as the torch backend does), ``tf32`` or
  ``fp16``. Networks are *strongly typed* (TensorRT 11 has nothing else; 10.x gets the flag): fp16 comes from the
  fp16 ONNX export (float16 weights, inputs and outputs), not from a builder flag.
* Shapes: one engine per input size (the clip's padded size, or each distinct tile size), built on first use; or
  one engine for a range of sizes with ``profile=(min_hw, opt_hw, max_hw)``.
* Cache: ``$VSANIMESR_HOME/tensorrt`` (else the platform cache's ``vsanimesr/tensorrt``). A file is keyed by
  :class:`EngineKey` (model file SHA-256, shapes, precision, GPU name and compute capability, TensorRT version,
  export format); any change builds a new engine, an unreadable file is rebuilt. The first build of a key takes
  from seconds to minutes and is logged once at INFO.

Needs the optional extra ``vapoursynth-animesr[trt]`` (``tensorrt-cu13``, matching PyPI's CUDA 13 torch builds;
with a CUDA 12 torch install ``tensorrt-cu12``) and an NVIDIA GPU. ``tensorrt`` is imported only when a step is made.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import logging
import os
import re
import tempfile
import threading
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = ["ENGINE_FORMAT", "PRECISIONS", "EngineKey", "TensorRTStep", "engine_key", "make_step", "missing_packages"]

log = logging.getLogger("vsanimesr")

ENGINE_FORMAT = 1
"""Version of how this module builds engines (flags, I/O conventions); part of every key, bump it on changes."""

PRECISIONS = ("fp32", "tf32", "fp16")

INPUT_NAMES = ("frames9", "prev_out", "state")
OUTPUT_NAMES = ("out", "new_state")
# The same names as vsanimesr.export.INPUT_NAMES / OUTPUT_NAMES (the exported graph's signature).

HW = tuple[int, int]


def missing_packages() -> list[str]:
    """The Python packages this backend needs that are not installed (empty when it can run)."""
    return [m for m in ("tensorrt",) if importlib.util.find_spec(m) is None]


@dataclass(frozen=True)
class EngineKey:
    """Everything a built engine depends on; equal keys may share an engine file, different ones never do."""

    model_sha256: str
    precision: str
    min_hw: HW  # input (low-resolution, padded) height and width: the optimisation profile's range
    opt_hw: HW
    max_hw: HW
    gpu: str  # device name, e.g. "NVIDIA H200"
    compute_capability: str  # e.g. "9.0": engines are specific to the architecture
    trt_version: str
    export_format: int  # the ONNX signature's version (vsanimesr.export.EXPORT_FORMAT)
    engine_format: int = ENGINE_FORMAT

    @property
    def digest(self) -> str:
        """SHA-256 over every field (the part of the file name that guarantees uniqueness)."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()

    @property
    def static(self) -> bool:
        return self.min_hw == self.opt_hw == self.max_hw

    def filename(self) -> str:
        """A readable, filesystem-safe name: model, input size(s), precision, GPU, TensorRT version, digest."""
        def wh(hw: HW) -> str:
            return f"{hw[1]}x{hw[0]}"

        shape = wh(self.opt_hw) if self.static else f"{wh(self.min_hw)}-{wh(self.opt_hw)}-{wh(self.max_hw)}"
        gpu = re.sub(r"[^a-z0-9]+", "-", self.gpu.lower()).strip("-") or "gpu"
        cc = re.sub(r"[^0-9]", "", self.compute_capability)
        trt = re.sub(r"[^0-9.]", "", self.trt_version)
        return (f"animesr-{self.model_sha256[:16]}-in{shape}-{self.precision}-{gpu}-sm{cc}-trt{trt}"
                f"-{self.digest[:12]}.engine")


def engine_key(
    model_sha256: str,
    *,
    precision: str,
    hw: HW | None = None,
    profile: tuple[HW, HW, HW] | None = None,
    gpu: str,
    compute_capability: str,
    trt_version: str,
    export_format: int,
) -> EngineKey:
    """The cache key for an engine of one input size ``hw`` or a ``profile`` = (min, opt, max) of sizes.

    Pure (no GPU, no TensorRT needed): validates and normalises the fields so that equal settings give equal keys.
    """
    if not re.fullmatch(r"[0-9a-f]{64}", str(model_sha256)):
        raise ValueError(f"engine_key: model_sha256 must be 64 lowercase hex digits, got {model_sha256!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"engine_key: precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if (hw is None) == (profile is None):
        raise ValueError(f"engine_key: give exactly one of hw and profile, got hw={hw!r}, profile={profile!r}")
    shapes = (hw, hw, hw) if hw is not None else profile
    try:
        lo, opt, hi = (tuple(int(v) for v in s) for s in shapes)  # type: ignore[union-attr]
        ok = all(len(s) == 2 for s in (lo, opt, hi))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"engine_key: sizes must be (height, width) pairs, got hw={hw!r}, profile={profile!r}")
    for s in (lo, opt, hi):
        if s[0] < 4 or s[1] < 4 or s[0] % 4 or s[1] % 4:
            raise ValueError(f"engine_key: sizes must be multiples of 4 and >= 4 (the network's grid), got {s}")
    if not (lo[0] <= opt[0] <= hi[0] and lo[1] <= opt[1] <= hi[1]):
        raise ValueError(f"engine_key: profile must satisfy min <= opt <= max per axis, got {(lo, opt, hi)}")
    for name, value in (("gpu", gpu), ("compute_capability", compute_capability), ("trt_version", trt_version)):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"engine_key: {name} must be a non-empty string, got {value!r}")
    return EngineKey(
        model_sha256=model_sha256, precision=precision, min_hw=lo, opt_hw=opt, max_hw=hi, gpu=gpu.strip(),
        compute_capability=compute_capability.strip(), trt_version=trt_version.strip(), export_format=export_format,
    )  # fmt: skip


def make_step(
    net: Any,
    *,
    model_path: str | os.PathLike[str],
    device: torch.device,
    precision: str,
    compile: bool = False,  # noqa: A002 - the option's name
) -> TensorRTStep:
    """``Options.backend == "tensorrt"``: the engine's step for ``net`` (its scale and state channels) on ``device``,
    with the engine's ``precision``. Combinations that cannot work raise :class:`~vsanimesr.options.OptionError`
    naming the option and its value (the caller adds its prefix)."""
    from vsanimesr.options import OptionError

    if device.type != "cuda":
        raise OptionError("device", str(device), "backend 'tensorrt' needs a CUDA device")
    if compile:
        raise OptionError("compile", True, "is torch.compile; backend 'tensorrt' builds its own engine")
    if precision not in PRECISIONS:
        raise OptionError("backend", "tensorrt", f"computes in {', '.join(PRECISIONS)}, not {precision} "
                          "(bf16 is not offered: use fp16)")
    missing = missing_packages()
    if missing:
        raise OptionError("backend", "tensorrt", f"needs the package(s) {', '.join(missing)}: "
                          "pip install 'vapoursynth-animesr[trt]'")
    return TensorRTStep(model_path, device=device, precision=precision, scale=net.scale, channels=net.num_feat)


def engine_cache_dir() -> Path:
    from vsanimesr.weights import cache_dir

    return cache_dir() / "tensorrt"


# ----------------------------------------------------------------------------------------------- GPU side


def _trt() -> Any:
    import tensorrt

    return tensorrt


class _Logger:
    """TensorRT's messages into ``logging`` (never stdout: it belongs to vspipe); its INFO is our DEBUG."""

    _instance: Any = None

    @classmethod
    def get(cls) -> Any:
        if cls._instance is None:
            trt = _trt()

            class Logger(trt.ILogger):
                def __init__(self) -> None:
                    trt.ILogger.__init__(self)

                def log(self, severity: Any, msg: str) -> None:
                    sev = trt.ILogger.Severity
                    level = {sev.INTERNAL_ERROR: logging.ERROR, sev.ERROR: logging.ERROR,
                             sev.WARNING: logging.WARNING}.get(severity, logging.DEBUG)  # fmt: skip
                    log.log(level, "TensorRT: %s", msg)

            cls._instance = Logger()
        return cls._instance


def _onnx_for(model_path: Path, fp16: bool) -> tuple[Path, int]:
    """The ONNX export of one step (the ``backends`` branch's :func:`vsanimesr.export.cached_onnx`) and its format.

    Until vsanimesr/export.py is merged, a minimal export of the same signature is written here.
    """
    try:
        from vsanimesr import export
    except ImportError:
        return _export_fallback(model_path, fp16), 0
    return export.cached_onnx(model_path, fp16=fp16), export.EXPORT_FORMAT


def _export_fallback(model_path: Path, fp16: bool) -> Path:
    """Stand-in for ``vsanimesr.export.cached_onnx``: one step, dynamic H and W, the same input/output names."""
    from vsanimesr.loader import load_model
    from vsanimesr.weights import sha256_of

    dest = engine_cache_dir() / "onnx" / f"animesr-{sha256_of(model_path)[:16]}-{'fp16' if fp16 else 'fp32'}.onnx"
    if dest.exists():
        return dest
    dtype = torch.float16 if fp16 else torch.float32
    net = load_model(model_path).to("cpu", dtype).eval()
    s = net.scale
    frames9 = torch.zeros(1, 9, 64, 96, dtype=dtype)
    prev_out, state = net.init_state(frames9)
    h4, w4 = torch.export.Dim("h4", min=1, max=8192), torch.export.Dim("w4", min=1, max=8192)
    h, w = 4 * h4, 4 * w4
    dynamic = {"frames": {2: h, 3: w}, "prev_out": {2: s * h, 3: s * w}, "state": {2: h, 3: w}}
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=dest.name + ".", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    try:
        # The exporter reports progress on stdout, which belongs to vspipe: keep it, and its warnings, in the log.
        printed = io.StringIO()
        with torch.no_grad(), contextlib.redirect_stdout(printed), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(net, (frames9, prev_out, state), dynamo=True, input_names=list(INPUT_NAMES),
                                        output_names=list(OUTPUT_NAMES), dynamic_shapes=dynamic, verbose=False)
        log.debug("torch.onnx.export: %s", printed.getvalue().strip())
        program.save(tmp, external_data=False)
        os.replace(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return dest


def build_engine(onnx_path: Path, key: EngineKey, *, scale: int, channels: int) -> bytes:
    """Build and serialise a TensorRT engine for ``key`` from the ONNX graph at ``onnx_path``."""
    trt = _trt()
    logger = _Logger.get()
    builder = trt.Builder(logger)
    flags = 0
    strongly = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if strongly is not None:  # TensorRT 10.x: opt in; 11.x: always strongly typed (flag accepted)
        flags |= 1 << int(strongly)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT: cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    tf32 = getattr(trt.BuilderFlag, "TF32", None)
    if tf32 is not None:
        if key.precision == "tf32":
            config.set_flag(tf32)
        else:
            config.clear_flag(tf32)  # on by default in TensorRT: fp32 here means IEEE fp32, like the torch backend
    profile = builder.create_optimization_profile()
    for name, (c, f) in {"frames9": (9, 1), "prev_out": (3, scale), "state": (channels, 1)}.items():
        shapes = [(1, c, f * hw[0], f * hw[1]) for hw in (key.min_hw, key.opt_hw, key.max_hw)]
        profile.set_shape(name, *shapes)
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT: building the engine {key.filename()} failed (see the TensorRT log above)")
    return bytes(memoryview(serialized))


_DTYPES: dict[str, torch.dtype] = {"FLOAT": torch.float32, "HALF": torch.float16}


class _Runner:
    """One deserialised engine with its execution context."""

    def __init__(self, data: bytes, device: torch.device) -> None:
        trt = _trt()
        self.runtime = trt.Runtime(_Logger.get())
        self.engine = self.runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            raise RuntimeError("TensorRT: the engine file could not be deserialised")
        self.context = self.engine.create_execution_context()
        self.device = device
        self.dtypes = {}
        for name in (*INPUT_NAMES, *OUTPUT_NAMES):
            dt = self.engine.get_tensor_dtype(name)
            if dt.name not in _DTYPES:
                raise RuntimeError(f"TensorRT: tensor {name!r} has type {dt.name}, expected FLOAT or HALF")
            self.dtypes[name] = _DTYPES[dt.name]

    def __call__(self, frames9: Tensor, prev_out: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        ctx = self.context
        keep = []
        for name, t in zip(INPUT_NAMES, (frames9, prev_out, state), strict=True):
            # Plain NCHW in the engine's type (channels_last tensors are reordered; others are used as they are).
            t = t.to(self.device, self.dtypes[name]).contiguous()
            keep.append(t)
            ctx.set_input_shape(name, tuple(t.shape))
            ctx.set_tensor_address(name, t.data_ptr())
        outs = []
        for name in OUTPUT_NAMES:
            o = torch.empty(tuple(ctx.get_tensor_shape(name)), dtype=self.dtypes[name], device=self.device)
            ctx.set_tensor_address(name, o.data_ptr())
            outs.append(o)
        if not ctx.execute_async_v3(torch.cuda.current_stream(self.device).cuda_stream):
            raise RuntimeError("TensorRT: enqueueing the step failed (see the TensorRT log)")
        # ``keep`` (the converted inputs) may be freed now: the caching allocator reuses their memory only for
        # work queued later on this stream, i.e. after this step.
        return outs[0], outs[1]


class TensorRTStep:
    """The network step through TensorRT on ``device`` (see the module docstring).

    Args:
        model_path: the weight file (its SHA-256 keys the cache).
        device: a CUDA device.
        precision: ``fp32``, ``tf32`` or ``fp16`` (the engine's I/O is float16 for fp16, else float32).
        scale, channels: the model's scale and state channels (``net.scale``, ``net.num_feat``).
        profile: (min, opt, max) input (height, width) for one dynamic engine; None = one static engine per size.
        cache: the engine directory (default :func:`engine_cache_dir`).
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        device: str | torch.device = "cuda",
        precision: str = "fp32",
        scale: int = 4,
        channels: int = 64,
        profile: tuple[HW, HW, HW] | None = None,
        cache: str | os.PathLike[str] | None = None,
    ) -> None:
        missing = missing_packages()
        if missing:
            raise RuntimeError(f"TensorRTStep: needs the package(s) {', '.join(missing)}: "
                               "pip install 'vapoursynth-animesr[trt]'")
        self.device = torch.device(device)
        if self.device.type != "cuda" or not torch.cuda.is_available():
            raise ValueError(f"TensorRTStep: needs a CUDA device, got device={str(device)!r}")
        if self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        if precision not in PRECISIONS:
            raise ValueError(f"TensorRTStep: precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        from vsanimesr.weights import sha256_of

        self.model_path = Path(model_path)
        self.model_sha256 = sha256_of(self.model_path)
        self.precision = precision
        self.scale, self.channels = scale, channels
        self.profile = profile
        self.cache = Path(cache) if cache is not None else engine_cache_dir()
        props = torch.cuda.get_device_properties(self.device)
        self.gpu, self.compute_capability = props.name, f"{props.major}.{props.minor}"
        self.trt_version = str(_trt().__version__)
        self.builds = 0
        """Engines built (not loaded from the cache) by this instance."""
        self._runners: dict[HW, _Runner] = {}
        self._dynamic: _Runner | None = None
        self._lock = threading.Lock()
        self._onnx: tuple[Path, int] | None = None

    def key(self, hw: HW) -> EngineKey:
        """The cache key of the engine that runs inputs of size ``hw`` (pure given this instance's settings)."""
        return engine_key(
            self.model_sha256, precision=self.precision, hw=None if self.profile else hw, profile=self.profile,
            gpu=self.gpu, compute_capability=self.compute_capability, trt_version=self.trt_version,
            export_format=self._onnx[1] if self._onnx else _export_format(),
        )  # fmt: skip

    def __call__(self, frames9: Tensor, prev_out: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        hw = (int(frames9.shape[-2]), int(frames9.shape[-1]))
        with self._lock:  # an execution context runs one step at a time
            runner = self._runner(hw)
            with torch.cuda.device(self.device):
                return runner(frames9, prev_out, state)

    def _runner(self, hw: HW) -> _Runner:
        if self.profile is not None:
            lo, _, hi = self.profile
            if not (lo[0] <= hw[0] <= hi[0] and lo[1] <= hw[1] <= hi[1]):
                raise ValueError(f"TensorRTStep: input {hw[1]}x{hw[0]} is outside the engine's profile "
                                 f"{lo[1]}x{lo[0]}..{hi[1]}x{hi[0]}")
            if self._dynamic is None:
                self._dynamic = self._load(hw)
            return self._dynamic
        runner = self._runners.get(hw)
        if runner is None:
            runner = self._runners[hw] = self._load(hw)
        return runner

    def _load(self, hw: HW) -> _Runner:
        key = self.key(hw)
        path = self.cache / key.filename()
        with torch.cuda.device(self.device):
            if path.exists():
                try:
                    runner = _Runner(path.read_bytes(), self.device)
                    log.debug("TensorRT: loaded %s", path)
                    return runner
                except (RuntimeError, OSError) as e:
                    log.warning("TensorRT: cached engine %s is unusable (%s); rebuilding it", path, e)
            if self._onnx is None:
                self._onnx = _onnx_for(self.model_path, self.precision == "fp16")
            log.info("TensorRT: building the %s engine for %s input %s on %s (once per model, size, precision, GPU "
                     "and TensorRT version; this can take minutes) -> %s", self.precision, self.model_path.name,
                     f"{hw[1]}x{hw[0]}" if key.static else "sizes", self.gpu, path)  # fmt: skip
            data = build_engine(self._onnx[0], key, scale=self.scale, channels=self.channels)
            self.builds += 1
            _write_atomic(path, data)
            return _Runner(data, self.device)


def _export_format() -> int:
    try:
        from vsanimesr import export
    except ImportError:
        return 0
    return int(export.EXPORT_FORMAT)


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

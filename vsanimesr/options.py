"""The engine's options, defined once: names, types, defaults, bounds, help and the recurrence's window arithmetic.

``core.animesr.Upscale``, :func:`vsanimesr.upscale`, the ``animesr`` CLI and :class:`vsanimesr.AnimeSR` all take these
options; each derives its own argument list, help and error prefix from :data:`FIELDS` instead of repeating them.
The C filter's argument string is generated from this module when the package is built (setup.py), so this
module imports nothing but the standard library.

Errors are :class:`OptionError` (a ``ValueError``) carrying the option's name and value; callers add their own
prefix (``animesr.Upscale:``, ``vsanimesr.upscale:``, ``--tile``).
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BACKENDS",
    "DEFAULT_RESET_INTERVAL",
    "DEFAULT_SCENE_THRESHOLD",
    "DEFAULT_WARMUP",
    "FIELDS",
    "OUTPUT_FIELDS",
    "OptionError",
    "Options",
    "OutputArgs",
    "vs_signature",
]

DEFAULT_RESET_INTERVAL = 48
"""Frames between periodic chain restarts (bounds the cost of a seek to ``reset_interval + warmup`` steps)."""
DEFAULT_WARMUP = 4
"""Discarded lead-in steps before each periodic restart (the output settles in about 5 frames from zero)."""
DEFAULT_SCENE_THRESHOLD = 0.15
"""Cut when the histogram distance of consecutive low-resolution frames exceeds this (see engine.scene_metric)."""

BACKENDS = ("torch", "openvino", "tensorrt")
"""Network-step implementations the engine can use (see vsanimesr/backends/): PyTorch, OpenVINO on the CPU
(optional extra ``vapoursynth-animesr[openvino]``), TensorRT on NVIDIA GPUs (``vapoursynth-animesr[trt]``)."""


class OptionError(ValueError):
    """A bad option value; ``name`` and ``value`` say which, the message says why (without a caller prefix)."""

    def __init__(self, name: str, value: Any, why: str, *, prefix: str = "") -> None:
        super().__init__(f"{prefix + ': ' if prefix else ''}{name}={value!r}: {why}")
        self.name, self.value, self.why = name, value, why

    def prefixed(self, prefix: str) -> OptionError:
        """The same error with the caller's name in front (``AnimeSR: tile=-1: must be >= 0``)."""
        return OptionError(self.name, self.value, self.why, prefix=prefix)


def _opt(default: Any, help: str, **meta: Any) -> Any:  # noqa: A002 - the usual name
    return field(default=default, metadata={"help": help, **meta})


@dataclass(frozen=True, kw_only=True)
class Options:
    """Everything that is fixed for one engine (one model on one device), validated on construction.

    Per-clip state (recurrent chains, caches, frame size, cuts) lives in :class:`vsanimesr.engine.Session`.
    """

    model: str = _opt("v2", "'v1', 'v2' or the path of a weight file (.pth/.safetensors)", metavar="v1|v2|PATH")
    device: str = _opt("auto", "'auto' (CUDA when available), 'cpu', 'cuda' or 'cuda:N'", metavar="auto|cpu|cuda[:N]")
    backend: str = _opt("torch", "network-step implementation: " + ", ".join(BACKENDS), choices=BACKENDS)
    fp16: bool | None = _opt(None, "half-precision compute (CUDA only); unset: on for RGBH input on CUDA")
    bf16: bool = _opt(False, "bfloat16 convolutions (GPUs, and CPUs with AVX512-BF16/AMX-BF16; other CPUs emulate "
                             "bf16 10x slower or worse, so there it falls back to fp32 with a warning)")
    tf32: bool = _opt(False, "let fp32 convolutions on CUDA use TF32 tensor cores (faster, less exact)")
    compile: bool = _opt(False, "run the network through torch.compile (faster after a slow first call)")
    cuda_graphs: bool = _opt(False, "replay the network step as CUDA graphs, one per input size (CUDA and backend "
                                    "torch; less CPU time per frame)")
    tile: int = _opt(0, "tile size in input pixels (0 = whole frame); each tile keeps its own recurrent state",
                     minimum=0)
    tile_overlap: int = _opt(16, "context added on each side of a tile, in input pixels", minimum=0)
    reset_interval: int = _opt(DEFAULT_RESET_INTERVAL, "frames between periodic recurrence restarts (0 = never)",
                               minimum=0)
    warmup: int = _opt(DEFAULT_WARMUP, "discarded lead-in steps before each periodic restart", minimum=0)
    scene_threshold: float = _opt(DEFAULT_SCENE_THRESHOLD, "scene-cut detector threshold (0 disables it)",
                                  minimum=0.0)
    outscale: float | None = _opt(None, "output size factor; unset: the model's own scale (4); other values resize "
                                        "the model's output with Spline36", positive=True)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _check(f, getattr(self, f.name)))

    # ------------------------------------------------------------ construction from other layers

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> Options:
        """Options from loosely typed arguments (VapourSynth ints for flags, ints for floats, None for the default);
        unknown names fail."""
        args = {k: v for k, v in args.items() if v is not None}
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(args) - names)
        if unknown:
            raise OptionError(unknown[0], args[unknown[0]], f"unknown option (known: {', '.join(sorted(names))})")
        return cls(**args)

    def replace(self, **changes: Any) -> Options:
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    # ------------------------------------------------------------ the recurrence's window arithmetic

    def period(self, n: int) -> int:
        """The periodic restart point at or before frame ``n`` (0 when ``reset_interval`` is 0)."""
        return (n // self.reset_interval) * self.reset_interval if self.reset_interval else 0

    def window(self, n: int, num_frames: int) -> tuple[int, int]:
        """Inclusive range of input frames that output frame ``n`` may depend on.

        A chain restarting at the period ``P`` is led in by ``warmup`` steps from ``P - warmup``, whose previous
        neighbour is ``P - warmup - 1``; frame ``n`` reads its next neighbour ``n + 1``.
        """
        if not isinstance(num_frames, int) or isinstance(num_frames, bool) or num_frames < 1:
            raise OptionError("num_frames", num_frames, "must be a positive integer")
        if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n < num_frames:
            raise OptionError("n", n, f"must be a frame number in [0, {num_frames - 1}]")
        return max(0, self.period(n) - self.warmup - 1), min(num_frames - 1, n + 1)

    @property
    def restart_span(self) -> int:
        """Frames a periodic restart at ``P`` reads (``P - warmup - 1 .. P + 1``): what a stream must keep."""
        return self.warmup + 3

    @property
    def window_span(self) -> int:
        """The most frames one :meth:`window` holds (the whole last period, its lead-in and the next neighbour);
        without periodic restarts windows are unbounded and :attr:`restart_span` is what is worth holding."""
        return self.reset_interval + self.warmup + 2 if self.reset_interval else self.restart_span


def _check(f: dataclasses.Field[Any], value: Any) -> Any:
    """Validate and normalise one field (0/1 ints become bools, ints become floats, paths become strings)."""
    name, meta, default = f.name, f.metadata, f.default
    if value is None and default is None:
        return None
    if isinstance(default, bool) or name == "fp16":
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise OptionError(name, value, "must be true or false (0 or 1)")
    if isinstance(default, str):
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if not isinstance(value, str) or not value:
            raise OptionError(name, value, "must be a non-empty string")
        choices = meta.get("choices")
        if choices and value not in choices:
            raise OptionError(name, value, f"must be one of {', '.join(choices)}")
        return value
    if isinstance(default, int):
        if not isinstance(value, int) or isinstance(value, bool):
            raise OptionError(name, value, "must be an integer")
        if value < meta.get("minimum", -math.inf):
            raise OptionError(name, value, f"must be >= {meta['minimum']}")
        return value
    # float options (scene_threshold, outscale)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise OptionError(name, value, "must be a finite number")
    if value < meta.get("minimum", -math.inf):
        raise OptionError(name, value, f"must be >= {meta['minimum']}")
    if meta.get("positive") and value <= 0:
        raise OptionError(name, value, "must be > 0")
    return float(value)


FIELDS: tuple[dataclasses.Field[Any], ...] = dataclasses.fields(Options)
"""The options in declaration order, each with ``metadata['help']`` (and ``choices``/``minimum``/``metavar``)."""


@dataclass(frozen=True, kw_only=True)
class OutputArgs:
    """``core.animesr.Upscale``'s output arguments: what the planes it writes hold and how they are tagged.

    They belong to the VapourSynth layer (the bridge validates them with VapourSynth's own constants and maps them to
    :class:`vsanimesr.formats.OutputSpec`), not to the engine, so they are declared here only for the filter's
    generated argument list. Unset means: the input's format (RGBS/RGBH), BT.709, limited range for YUV/GRAY (full for
    RGB; float samples are normalised in either range, which is then only the ``_Range`` tag, as vsjetpack reads it),
    and the source frame's own ``_Transfer``/``_Primaries``.
    """

    format: int | None = _opt(None, "VapourSynth format id of the output, e.g. vs.YUV420P10 (RGB, YUV 4:4:4/4:2:2/"
                                    "4:2:0 or GRAY; 8-16-bit integer, half or float)", vs_type="int")
    matrix: int | None = _opt(None, "H.273 matrix (_Matrix) for YUV and GRAY output: 1 BT.709 (default), 4 FCC, "
                                    "5/6 BT.601, 7 SMPTE 240M, 9 BT.2020 NCL", vs_type="int")
    range: int | None = _opt(None, "vs.RANGE_LIMITED or vs.RANGE_FULL (the _Range values); default limited for "
                                   "YUV/GRAY, full for RGB; float output stays normalised and is only tagged",
                             vs_type="int")
    transfer: int | None = _opt(None, "H.273 transfer characteristics to tag (_Transfer); default: the source's",
                                vs_type="int")
    primaries: int | None = _opt(None, "H.273 colour primaries to tag (_Primaries); default: the source's",
                                 vs_type="int")


OUTPUT_FIELDS: tuple[dataclasses.Field[Any], ...] = dataclasses.fields(OutputArgs)
"""The filter's output arguments (after :data:`FIELDS` in its signature); passed to the bridge as ``output``."""


def vs_type(f: dataclasses.Field[Any]) -> str:
    """The VapourSynth argument type of an option: ``data`` for strings, ``int`` for flags and integers, ``float``."""
    if "vs_type" in f.metadata:
        return f.metadata["vs_type"]
    default = f.default
    if isinstance(default, str):
        return "data"
    if isinstance(default, bool) or f.name == "fp16" or isinstance(default, int):
        return "int"
    return "float"


def vs_signature() -> str:
    """``core.animesr.Upscale``'s argument string after ``clip:vnode;``: the options, then the output arguments
    (every one optional)."""
    return "".join(f"{f.name}:{vs_type(f)}:opt;" for f in (*FIELDS, *OUTPUT_FIELDS))


def c_header() -> str:
    """The C filter's view of the options (written to ``animesr_options.h`` by setup.py when the plugin is built).

    ``output`` is 1 for the output arguments (:data:`OUTPUT_FIELDS`), which the filter passes to the bridge in a
    separate ``output`` dict (``format`` there is the output's; the clip's own format is passed as ``format``)."""
    rows = "".join(
        f'    {{"{f.name}", \'{vs_type(f)[0].replace("d", "s")}\', {int(f in OUTPUT_FIELDS)}}},\n'
        for f in (*FIELDS, *OUTPUT_FIELDS)
    )
    return (
        "/* Generated from vsanimesr/options.py by setup.py: do not edit. */\n"
        f'#define ANIMESR_OPTIONS_SIGNATURE "{vs_signature()}"\n'
        "static const struct {\n    const char *name;\n    char type; /* 's' data, 'i' int, 'f' float */\n"
        "    int output; /* 1: an output argument (the bridge's output dict) */\n"
        "} animesr_options[] = {\n" + rows + "};\n"
    )

"""Encoder-ready output computed where the network ran: clamp, colour matrix, chroma subsampling and rounding.

The engine produces float RGB (3, H, W) on its device (GPU or CPU). Converting that at 4x size on the host costs
more than the network on a GPU, so this module turns it into the planes of the target format *on the device*; only
the final integer (or half/float) planes travel to the host (see :mod:`vsanimesr.staging`).

The arithmetic is VapourSynth's (zimg's), so output matches ``core.resize`` on the clamped float RGB:

* YUV: Y = Kr R + Kg G + Kb B, U = (B - Y) / (2 (1 - Kb)), V = (R - Y) / (2 (1 - Kr)) with the H.273 constants of
  ``matrix`` (:data:`MATRICES`); float32 throughout.
* GRAY is the same Y (so GRAY output equals the luma of YUV output with that matrix; this is also what
  ``core.resize`` does for RGB -> GRAY). On grey content (R = G = B) it is the grey value for every matrix.
* Integers: limited range scales luma/RGB to 16..235 and chroma to 16..240 around 128 (times 2^(bits-8)); full range
  uses 0..2^bits-1, chroma centred on 2^(bits-1). Rounding is to nearest (ties to even), then clamped to the code range.
* Float samples are normalised whatever the range (Y/RGB 0..1, chroma centred on 0: what ``core.resize`` reads and
  writes); for them ``full_range`` is only the tag of the range to restore when the clip goes back to integers (how
  vsjetpack reads ``_Range`` on float clips). Half floats round to nearest even.
* Chroma subsampling resamples U and V with Spline36 (:mod:`vsanimesr.resample`, the same kernel as
  ``core.resize.Spline36``) at *left* siting: chroma samples sit on the even luma columns and halfway between luma
  rows (H.273 chroma location type 0, VapourSynth's ``_ChromaLocation = 0``, the MPEG-2/H.264/HEVC default).

Range and siting are plain values here (``full_range: bool``); VapourSynth's own constants are mapped in the
VapourSynth layer only (in R81 ``vs.RANGE_LIMITED == 0`` and ``vs.RANGE_FULL == 1``).

Usage::

    spec = OutputSpec(PixelFormat.parse("YUV420P10"), matrix=1)          # BT.709, limited range
    conv = Converter(spec, size=(1440, 2560), device="cuda")
    y, u, v = conv(rgb)                                                   # uint16 device planes
    conv(rgb, out=[torch.from_numpy(p) for p in host_planes])            # or straight into (strided) host planes
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
import torch
from torch import Tensor

from vsanimesr.resample import Resampler

__all__ = ["FORMATS", "MATRICES", "Converter", "Family", "OutputSpec", "PixelFormat"]


class Family(StrEnum):
    """Colour family; the values are VapourSynth's ``vs.ColorFamily`` names (``vs.YUV.name == "YUV"``)."""

    RGB = "RGB"
    YUV = "YUV"
    GRAY = "GRAY"


MATRICES: dict[int, tuple[float, float]] = {
    1: (0.2126, 0.0722),  # BT.709
    4: (0.30, 0.11),  # FCC
    5: (0.299, 0.114),  # BT.470BG (BT.601 625)
    6: (0.299, 0.114),  # SMPTE 170M (BT.601 525)
    7: (0.212, 0.087),  # SMPTE 240M
    9: (0.2627, 0.0593),  # BT.2020 non-constant luminance
}
"""(Kr, Kb) by H.273 ``MatrixCoefficients`` code (the ``_Matrix`` frame property)."""


@dataclass(frozen=True)
class PixelFormat:
    """What a plane holds: the fields VapourSynth's ``VideoFormat`` has, so the VapourSynth layer maps in one line.

    Args:
        family: RGB, YUV or GRAY.
        bits: 8..16 for integers; 16 (half) or 32 for float.
        is_float: float samples.
        ss_w, ss_h: log2 chroma subsampling (YUV only): (1, 1) is 4:2:0, (1, 0) 4:2:2, (0, 0) 4:4:4.
    """

    family: Family
    bits: int
    is_float: bool = False
    ss_w: int = 0
    ss_h: int = 0

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "family", Family(self.family))
        except ValueError:
            raise ValueError(f"PixelFormat: family must be RGB, YUV or GRAY, got {self.family!r}") from None
        ok_bits = (16, 32) if self.is_float else tuple(range(8, 17))
        if self.bits not in ok_bits:
            kind = "float" if self.is_float else "integer"
            raise ValueError(f"PixelFormat: {kind} samples need bits in {list(ok_bits)}, got {self.bits!r}")
        if (self.ss_w, self.ss_h) != (0, 0) and self.family != Family.YUV:
            raise ValueError(f"PixelFormat: only YUV can be subsampled, got {self.family} ss={self.ss_w},{self.ss_h}")
        if self.ss_w not in (0, 1) or self.ss_h not in (0, 1):
            raise ValueError(f"PixelFormat: subsampling must be 0 or 1 per axis, got {self.ss_w},{self.ss_h}")

    @property
    def name(self) -> str:
        """VapourSynth's name of the format, e.g. ``YUV420P10``, ``RGB30``, ``GRAYS``."""
        depth = ("S" if self.bits == 32 else "H") if self.is_float else str(self.bits)
        if self.family == Family.RGB:
            return f"RGB{depth}" if self.is_float else f"RGB{3 * self.bits}"
        if self.family == Family.GRAY:
            return f"GRAY{depth}"
        sub = {(0, 0): "444", (1, 0): "422", (1, 1): "420", (0, 1): "440"}[(self.ss_w, self.ss_h)]
        return f"YUV{sub}P{depth}"

    @classmethod
    def parse(cls, name: str) -> PixelFormat:
        """The inverse of :attr:`name` (case-insensitive), e.g. ``PixelFormat.parse("yuv420p10")``."""
        text = str(name).upper()
        m = re.fullmatch(r"RGB(S|H|\d+)|GRAY(S|H|\d+)|YUV(444|422|420|440)P(S|H|\d+)", text)
        if m is None:
            raise ValueError(f"PixelFormat.parse: not a format name like YUV420P10, RGB24 or GRAYS: {name!r}")
        rgb, gray, sub, yuv = m.groups()
        depth = rgb or gray or yuv
        is_float = depth in ("S", "H")
        bits = {"S": 32, "H": 16}[depth] if is_float else int(depth)
        if rgb is not None:
            if not is_float and bits % 3:
                raise ValueError(f"PixelFormat.parse: RGB bits must be 3 x bits per plane, got {name!r}")
            return cls(Family.RGB, bits if is_float else bits // 3, is_float)
        if gray is not None:
            return cls(Family.GRAY, bits, is_float)
        ss = {"444": (0, 0), "422": (1, 0), "420": (1, 1), "440": (0, 1)}[sub]
        return cls(Family.YUV, bits, is_float, *ss)

    @property
    def num_planes(self) -> int:
        return 1 if self.family == Family.GRAY else 3

    def plane_shapes(self, height: int, width: int) -> tuple[tuple[int, int], ...]:
        """(rows, columns) of each plane of a ``width`` x ``height`` frame."""
        if height % (1 << self.ss_h) or width % (1 << self.ss_w):
            raise ValueError(
                f"PixelFormat: {self.name} needs a size divisible by its subsampling, got {width}x{height}"
            )
        chroma = (height >> self.ss_h, width >> self.ss_w)
        return ((height, width),) if self.num_planes == 1 else ((height, width), chroma, chroma)

    @property
    def dtype(self) -> torch.dtype:
        """The torch sample type: uint8, uint16, float16 or float32."""
        if self.is_float:
            return torch.float16 if self.bits == 16 else torch.float32
        return torch.uint8 if self.bits == 8 else torch.uint16

    @property
    def numpy_dtype(self) -> np.dtype:
        return np.dtype({torch.uint8: np.uint8, torch.uint16: np.uint16, torch.float16: np.float16,
                         torch.float32: np.float32}[self.dtype])


FORMATS: dict[str, PixelFormat] = {
    f.name: f
    for f in (
        PixelFormat(Family.RGB, 32, True),
        PixelFormat(Family.RGB, 16, True),
        PixelFormat(Family.RGB, 8),
        PixelFormat(Family.RGB, 10),
        PixelFormat(Family.RGB, 16),
        PixelFormat(Family.YUV, 10, False, 0, 0),
        PixelFormat(Family.YUV, 16, False, 0, 0),
        PixelFormat(Family.YUV, 10, False, 1, 1),
        PixelFormat(Family.YUV, 8, False, 1, 1),
        PixelFormat(Family.GRAY, 8),
        PixelFormat(Family.GRAY, 10),
        PixelFormat(Family.GRAY, 16),
        PixelFormat(Family.GRAY, 16, True),
        PixelFormat(Family.GRAY, 32, True),
    )
}
"""The formats the project names and tests (others that :class:`PixelFormat` accepts work the same way)."""


@dataclass(frozen=True)
class OutputSpec:
    """A target: format plus how to get there. None fields resolve to their defaults on construction.

    Args:
        format: the :class:`PixelFormat` to write.
        matrix: H.273 matrix code for YUV and GRAY (:data:`MATRICES`); default 1 (BT.709). Ignored for RGB.
        full_range: None = limited for YUV/GRAY, full for RGB. For float formats it changes no sample, only the
            range the output is tagged with (the range to restore on the way back to integers).
        clamp: clamp RGB to [0, 1] before converting. None = on for integer formats (required), off for float
            formats (the float output stays the network's unclamped values, as RGBS/RGBH did before).
    """

    format: PixelFormat
    matrix: int = 1
    full_range: bool | None = None
    clamp: bool | None = None
    _coeffs: tuple[tuple[float, float, float], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        fmt = self.format
        if not isinstance(fmt, PixelFormat):
            raise ValueError(f"OutputSpec: format must be a PixelFormat, got {fmt!r}")
        if not isinstance(self.matrix, int) or isinstance(self.matrix, bool) or self.matrix not in MATRICES:
            raise ValueError(f"OutputSpec: matrix must be one of {sorted(MATRICES)} (H.273 codes), got {self.matrix!r}")
        full = fmt.family == Family.RGB if self.full_range is None else self.full_range
        object.__setattr__(self, "full_range", bool(full))
        object.__setattr__(self, "clamp", (not fmt.is_float) if self.clamp is None else bool(self.clamp))
        kr, kb = MATRICES[self.matrix]
        kg = 1.0 - kr - kb
        us, vs = 1.0 / (2.0 - 2.0 * kb), 1.0 / (2.0 - 2.0 * kr)
        rows = ((kr, kg, kb), (-kr * us, -kg * us, (1.0 - kb) * us), ((1.0 - kr) * vs, -kg * vs, -kb * vs))
        # float32 coefficients, as zimg applies them.
        object.__setattr__(self, "_coeffs", tuple(tuple(float(np.float32(c)) for c in r) for r in rows))

    @property
    def matrix_prop(self) -> int:
        """The ``_Matrix`` value that describes the written planes (0 = RGB)."""
        return 0 if self.format.family == Family.RGB else self.matrix

    @property
    def chroma_left(self) -> bool:
        """True when chroma is subsampled (then sited left: write ``_ChromaLocation = 0``)."""
        return self.format.family == Family.YUV and (self.format.ss_w or self.format.ss_h) > 0

    def _levels(self, chroma: bool) -> tuple[float, float]:
        """(scale, offset) from normalised values (Y/RGB in [0, 1], chroma in [-0.5, 0.5]) to code values."""
        bits = self.format.bits
        if self.format.is_float:
            return 1.0, 0.0
        if self.full_range:
            return float((1 << bits) - 1), float(1 << (bits - 1)) if chroma else 0.0
        return float((224 if chroma else 219) << (bits - 8)), float((128 if chroma else 16) << (bits - 8))


class Converter:
    """Float RGB (3, H, W) on a device -> the planes of ``spec`` at ``size``, computed on that device.

    ``src_size`` (the engine's output size, default ``size``) different from ``size`` resizes the RGB first with
    Spline36 (``outscale``), before the clamp. Weights, constants and working buffers are prepared once per
    instance (fresh multi-megabyte allocations cost more than the arithmetic on a CPU), so an instance is not
    reentrant: use one per thread, or a lock. The input is never modified.
    """

    def __init__(
        self,
        spec: OutputSpec,
        size: tuple[int, int],
        *,
        src_size: tuple[int, int] | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        self.spec = spec
        self.size = (int(size[0]), int(size[1]))
        self.src_size = self.size if src_size is None else (int(src_size[0]), int(src_size[1]))
        if min(self.size) < 1 or min(self.src_size) < 1:
            raise ValueError(f"Converter: sizes must be >= 1, got size={size!r} src_size={src_size!r}")
        self.device = torch.device(device)
        self.plane_shapes = spec.format.plane_shapes(*self.size)
        self._resize = (
            Resampler(self.src_size, self.size, device=self.device) if self.src_size != self.size else None
        )
        fmt = spec.format
        self._chroma = None
        if fmt.family == Family.YUV and (fmt.ss_w or fmt.ss_h):
            # zimg's shift for left siting: -0.5 input samples horizontally (centre of the even column), 0 vertically.
            shift = (0.0, -0.5 if fmt.ss_w else 0.0)
            self._chroma = Resampler(self.size, self.plane_shapes[1], shift=shift, device=self.device)
        self._bufs: dict[str, Tensor] = {}

    def _buf(self, name: str, shape: tuple[int, ...]) -> Tensor:
        buf = self._bufs.get(name)
        if buf is None:
            buf = self._bufs[name] = torch.empty(shape, dtype=torch.float32, device=self.device)
        return buf

    def __call__(self, rgb: Tensor, out: Sequence[Tensor] | None = None) -> list[Tensor]:
        """Convert ``rgb`` (any float dtype, on :attr:`device`); write into ``out`` (tensors of the plane shapes,
        any device, dtype and strides, e.g. ``torch.from_numpy`` of a VapourSynth plane) or return new planes."""
        if rgb.ndim != 3 or rgb.shape[0] != 3 or tuple(rgb.shape[1:]) != self.src_size:
            raise ValueError(f"Converter: rgb must be (3, {self.src_size[0]}, {self.src_size[1]}), "
                             f"got {tuple(rgb.shape)}")
        if out is not None and [tuple(o.shape) for o in out] != list(self.plane_shapes):
            raise ValueError(f"Converter: out must be planes of shapes {list(self.plane_shapes)}, "
                             f"got {[tuple(o.shape) for o in out]}")
        spec, fmt = self.spec, self.spec.format
        h, w = self.size
        x = rgb.float()
        owned = x is not rgb  # a converted copy may be modified in place; the caller's tensor never is
        if self._resize is not None:
            x = self._resize(x, out=self._buf("rgb", (3, h, w)))
            owned = True
        if spec.clamp:
            x = x.clamp_(0.0, 1.0) if owned else torch.clamp(x, 0.0, 1.0, out=self._buf("rgb", (3, h, w)))
            owned = True
        if fmt.family == Family.RGB:
            planes = [x[0], x[1], x[2]]
            if not owned and not fmt.is_float:
                planes = [self._buf("yuv", (3, h, w))[i].copy_(p) for i, p in enumerate(planes)]
        else:
            n = 3 if fmt.family == Family.YUV else 1
            yuv = self._buf("yuv", (n, h, w))
            for i, (c0, c1, c2) in enumerate(spec._coeffs[:n]):
                torch.mul(x[0], c0, out=yuv[i]).add_(x[1], alpha=c1).add_(x[2], alpha=c2)
            planes = list(yuv)
            if self._chroma is not None:
                uv = self._chroma(yuv[1:], out=self._buf("uv", (2, *self.plane_shapes[1])))
                planes[1:] = [uv[0], uv[1]]
        result = []
        for i, p in enumerate(planes):
            q = self._quantize(p, chroma=fmt.family == Family.YUV and i > 0)
            if out is None:
                result.append(q.to(fmt.dtype, copy=True))
            else:
                out[i].copy_(q)  # one pass: cast, device transfer and (row-strided) write
                result.append(out[i])
        return result

    def _quantize(self, p: Tensor, chroma: bool) -> Tensor:
        """Scale to code values, round and clamp, in place (``p`` is a working buffer here)."""
        fmt = self.spec.format
        if fmt.is_float:
            return p
        scale, offset = self.spec._levels(chroma)
        return p.mul_(scale).add_(offset).round_().clamp_(0.0, float((1 << fmt.bits) - 1))

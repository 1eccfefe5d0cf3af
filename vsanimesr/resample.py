"""Separable resampling in torch, on any device: the kernel that the filter, the CLI and the output formats share.

The taps follow zimg (VapourSynth's ``core.resize``) exactly: the same kernels (Spline36 by default), the kernel
widened by the scale factor when shrinking (so downscaling does not alias), the same sample positions
(``pos = (i + 0.5) * src / dst + shift`` on an edge-aligned grid) and the same symmetric mirroring at the borders.
What differs is only float32 summation order, so results agree with ``core.resize.Spline36`` to about 1e-6 (a test
holds the bound).

Two paths, chosen once per axis: when every output has the same weights at a fixed integer stride (integer
downscales such as 4:2:0 chroma or ``outscale=2`` from the x4 result) each tap is a strided view added with a
scalar weight; otherwise each tap gathers its input column/row and multiplies by per-output weights. Both run in
float32 without TF32 (no convolution or matrix product is involved), so GPU and CPU agree to rounding.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["FILTERS", "Resampler", "Taps", "resize", "taps"]


def _spline36(x: float) -> float:
    x = abs(x)
    if x < 1.0:
        return 1.0 - 3.0 / 209.0 * x - 453.0 / 209.0 * x * x + 13.0 / 11.0 * x**3
    if x < 2.0:
        x -= 1.0
        return -156.0 / 209.0 * x + 270.0 / 209.0 * x * x - 6.0 / 11.0 * x**3
    if x < 3.0:
        x -= 2.0
        return 26.0 / 209.0 * x - 45.0 / 209.0 * x * x + 1.0 / 11.0 * x**3
    return 0.0


def _bicubic(b: float, c: float) -> Callable[[float], float]:
    p0, p2, p3 = (6 - 2 * b) / 6, (-18 + 12 * b + 6 * c) / 6, (12 - 9 * b - 6 * c) / 6
    q0, q1, q2, q3 = (8 * b + 24 * c) / 6, (-12 * b - 48 * c) / 6, (6 * b + 30 * c) / 6, (-b - 6 * c) / 6

    def f(x: float) -> float:
        x = abs(x)
        if x < 1.0:
            return p0 + p2 * x * x + p3 * x**3
        if x < 2.0:
            return q0 + q1 * x + q2 * x * x + q3 * x**3
        return 0.0

    return f


def _bilinear(x: float) -> float:
    return max(1.0 - abs(x), 0.0)


@dataclass(frozen=True)
class _Kernel:
    support: int
    fn: Callable[[float], float]


FILTERS: dict[str, _Kernel] = {
    "spline36": _Kernel(3, _spline36),
    "bicubic": _Kernel(2, _bicubic(0.0, 0.5)),  # zimg's and core.resize.Bicubic's default b=0, c=0.5
    "bilinear": _Kernel(1, _bilinear),
}
"""Kernels by name, each as ``core.resize.<Name>`` defines it (Spline36 is the project's resize kernel)."""


@dataclass(frozen=True)
class Taps:
    """One axis: output ``i`` = sum over ``k`` of ``weights[i, k] * padded[index[i, k]]``.

    ``padded`` is the input mirrored by ``pad`` samples on each side, so every index is in range. ``stride`` is set
    when all rows share ``weights[0]`` and ``index[i, 0] == index[0, 0] + stride * i`` (the strided-view path).
    """

    src: int
    dst: int
    pad: int
    index: np.ndarray  # (dst, K) int64, into the padded axis
    weights: np.ndarray  # (dst, K) float64, each row sums to 1
    stride: int | None


def taps(src: int, dst: int, filter: str = "spline36", shift: float = 0.0) -> Taps:  # noqa: A002 - resize's name
    """The taps of one axis resampled from ``src`` to ``dst`` samples, ``shift`` in input samples (zimg's rules)."""
    if filter not in FILTERS:
        raise ValueError(f"resample.taps: filter must be one of {sorted(FILTERS)}, got {filter!r}")
    if not (isinstance(src, int) and isinstance(dst, int) and src >= 1 and dst >= 1):
        raise ValueError(f"resample.taps: src and dst must be integers >= 1, got {src!r}, {dst!r}")
    kernel = FILTERS[filter]
    scale = dst / src
    step = min(scale, 1.0)
    support = kernel.support / step
    size = max(math.ceil(support) * 2, 1)
    pos = (np.arange(dst) + 0.5) / scale + shift
    # The first tap. zimg rounds half away from zero here; rounding half up instead only ever differs by swapping a
    # zero-weight tap at one end of the window for one at the other (the window is wider than the kernel's support),
    # and it keeps the windows of an integer downscale on a regular stride.
    begin = np.floor(pos - size / 2.0 + 0.5) + 0.5
    xpos = begin[:, None] + np.arange(size)[None, :]
    w = np.vectorize(kernel.fn, otypes=[np.float64])((xpos - pos[:, None]) * step)
    w /= w.sum(axis=1, keepdims=True)
    first = np.floor(xpos).astype(np.int64)  # unmirrored input sample of each tap
    pad = int(max(0, -first.min(), first.max() - (src - 1)))
    index = first + pad
    stride = None
    if dst > 1 and np.allclose(w, w[0], rtol=0, atol=1e-12):
        d = index[1, 0] - index[0, 0]
        if d >= 1 and np.array_equal(index[:, 0], index[0, 0] + d * np.arange(dst)):
            stride = int(d)
    elif dst == 1:
        stride = 1
    return Taps(src=src, dst=dst, pad=pad, index=index, weights=w, stride=stride)


def _mirror(n: int, pad: int) -> np.ndarray:
    """Indices of an axis of ``n`` samples extended by ``pad`` on each side with symmetric (edge-repeating)
    mirroring, as zimg folds taps beyond the border: -1 -> 0, -2 -> 1, n -> n - 1."""
    i = np.arange(-pad, n + pad) % (2 * n)
    return np.where(i >= n, 2 * n - 1 - i, i)


@dataclass
class _Axis:
    dim: int  # -2 (rows) or -1 (columns)
    taps: Taps
    mirror: Tensor  # padded position -> input index
    weights: Tensor  # (dst, K) float32
    index: Tensor  # (dst, K) into the padded axis
    w0: list[float]  # weights[0] as Python floats (strided path)


class Resampler:
    """Resize (..., H, W) float tensors from ``src`` = (H, W) to ``dst`` = (h, w) on one device.

    Weights and indices are computed once and kept on ``device``; intermediate buffers are allocated on the first
    call for a given leading shape and reused (large fresh CPU allocations cost more than the arithmetic), so an
    instance is not reentrant: use one per thread. ``shift`` = (dy, dx) moves the sampling grid in input pixels
    (chroma siting); ``filter`` names a kernel in :data:`FILTERS`.
    """

    def __init__(
        self,
        src: tuple[int, int],
        dst: tuple[int, int],
        *,
        filter: str = "spline36",  # noqa: A002
        shift: tuple[float, float] = (0.0, 0.0),
        device: str | torch.device = "cpu",
    ) -> None:
        self.src, self.dst = (int(src[0]), int(src[1])), (int(dst[0]), int(dst[1]))
        self.device = torch.device(device)
        self._axes: list[_Axis] = []
        self._scratch: dict[tuple, Tensor] = {}
        # The axis that shrinks more goes first, so the second pass runs on fewer samples; columns first on a tie
        # (the row pass is the cheaper one on a CPU, so it should see the smaller image).
        for dim, i in sorted([(-1, 1), (-2, 0)], key=lambda a: self.dst[a[1]] / self.src[a[1]]):
            if self.src[i] == self.dst[i] and shift[i] == 0.0:
                continue
            t = taps(self.src[i], self.dst[i], filter, shift[i])
            w = torch.as_tensor(t.weights, dtype=torch.float32)
            self._axes.append(_Axis(
                dim=dim,
                taps=t,
                mirror=torch.as_tensor(_mirror(self.src[i], t.pad), device=self.device),
                weights=w.to(self.device),
                index=torch.as_tensor(t.index, device=self.device),
                w0=[float(v) for v in w[0]],
            ))

    def __call__(self, x: Tensor, out: Tensor | None = None) -> Tensor:
        """Resample ``x`` (..., H, W); the result goes into ``out`` when given (same leading shape, float32)."""
        if tuple(x.shape[-2:]) != self.src:
            raise ValueError(f"Resampler: input must be (..., {self.src[0]}, {self.src[1]}), got {tuple(x.shape)}")
        x = x.float()
        if not self._axes:
            return x.clone() if out is None else out.copy_(x)
        for n, axis in enumerate(self._axes):
            last = n == len(self._axes) - 1
            x = self._apply(x, axis, out if last else None, n)
        return x

    def _buf(self, key: tuple, shape: tuple[int, ...]) -> Tensor:
        buf = self._scratch.get(key)
        if buf is None or tuple(buf.shape) != shape:
            buf = self._scratch[key] = torch.empty(shape, dtype=torch.float32, device=self.device)
        return buf

    def _pad(self, x: Tensor, axis: _Axis, n: int) -> Tensor:
        """``x`` mirrored by ``pad`` samples on both ends of the axis (slices and a concatenation: a gather along
        columns is several times slower on a CPU)."""
        t, dim = axis.taps, axis.dim
        if not t.pad:
            return x
        size = x.shape[dim]
        shape = list(x.shape)
        shape[dim] += 2 * t.pad
        buf = self._buf(("pad", n), tuple(shape))
        if t.pad > size:  # tiny input: the mirror folds more than once
            return torch.index_select(x, dim, axis.mirror, out=buf)
        left = x.narrow(dim, 0, t.pad).flip(dim)
        right = x.narrow(dim, size - t.pad, t.pad).flip(dim)
        return torch.cat([left, x, right], dim=dim, out=buf)

    def _apply(self, x: Tensor, axis: _Axis, out: Tensor | None, n: int) -> Tensor:
        t, dim = axis.taps, axis.dim
        xp = self._pad(x, axis, n)
        shape = list(x.shape)
        shape[dim] = t.dst
        if out is None:
            out = torch.empty(shape, dtype=torch.float32, device=x.device) if n == len(self._axes) - 1 \
                else self._buf(("out", n), tuple(shape))
        k_taps = t.weights.shape[1]
        if t.stride is not None and dim == -1 and x.device.type == "cpu" and t.stride > 1:
            # Columns on a CPU: every-r-th-column views do not vectorise, so split the padded rows into their r
            # phases once (one copy) and add contiguous slices of the phases instead.
            r, s0 = t.stride, int(t.index[0, 0])
            m = t.dst + (k_taps - 1) // r
            span = xp.narrow(-1, s0, min(m * r, xp.shape[-1] - s0))
            if span.shape[-1] < m * r:  # the last phase is one short: extend by a copy of the last column
                span = torch.cat([span, span[..., -1:].expand(*span.shape[:-1], m * r - span.shape[-1])], -1)
            phases = self._buf(("phases", n), (r, *span.shape[:-1], m))
            phases.copy_(span.unflatten(-1, (m, r)).movedim(-1, 0))
            for k, wk in enumerate(axis.w0):
                view = phases[k % r].narrow(-1, k // r, t.dst)
                if k == 0:
                    torch.mul(view, wk, out=out)
                else:
                    out.add_(view, alpha=wk)
            return out
        if t.stride is not None:
            for k, wk in enumerate(axis.w0):
                view = xp.narrow(dim, int(t.index[0, k]), (t.dst - 1) * t.stride + 1)
                view = view[..., :: t.stride, :] if dim == -2 else view[..., :: t.stride]
                if k == 0:
                    torch.mul(view, wk, out=out)
                else:
                    out.add_(view, alpha=wk)
            return out
        # Irregular taps: gather whole rows per tap (fast); columns via a transposed copy.
        rows = xp if dim == -2 else xp.transpose(-1, -2).contiguous()
        tshape = list(rows.shape)
        tshape[-2] = t.dst
        acc = out if dim == -2 else self._buf(("acc", n), tuple(tshape))
        tmp = self._buf(("tap", n), tuple(tshape))
        for k in range(k_taps):
            torch.index_select(rows, -2, axis.index[:, k], out=tmp)
            wk = axis.weights[:, k, None]
            if k == 0:
                torch.mul(tmp, wk, out=acc)
            else:
                acc.addcmul_(tmp, wk)
        return acc if dim == -2 else out.copy_(acc.transpose(-1, -2))


def resize(x: Tensor, size: tuple[int, int], filter: str = "spline36") -> Tensor:  # noqa: A002
    """One-off resize of a (..., H, W) tensor to ``size`` = (h, w) (build a :class:`Resampler` to reuse taps).

    Returns float32; at the same size that is ``x`` itself when it already is float32."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x.float()
    return Resampler(tuple(x.shape[-2:]), size, filter=filter, device=x.device)(x)

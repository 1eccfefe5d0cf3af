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


class Resampler:
    """Resize (..., H, W) float tensors from ``src`` = (H, W) to ``dst`` = (h, w) on one device.

    Weights and indices are computed once and kept on ``device``; calling it allocates only the outputs. ``shift``
    = (dy, dx) moves the sampling grid in input pixels (chroma siting); ``filter`` names a kernel in
    :data:`FILTERS`.
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
        self._axes = []
        # The axis that shrinks more goes first, so the second pass runs on fewer samples.
        axes = [(-2, 0), (-1, 1)]
        axes.sort(key=lambda a: self.dst[a[1]] / self.src[a[1]])
        for dim, i in axes:
            if self.src[i] == self.dst[i] and shift[i] == 0.0:
                continue
            t = taps(self.src[i], self.dst[i], filter, shift[i])
            mirror = torch.as_tensor(_mirror(self.src[i], t.pad), device=self.device)
            w = torch.as_tensor(t.weights, dtype=torch.float32, device=self.device)
            idx = torch.as_tensor(t.index, device=self.device)
            self._axes.append((dim, t, mirror, w, idx, [float(v) for v in w[0].cpu()]))

    def __call__(self, x: Tensor) -> Tensor:
        if tuple(x.shape[-2:]) != self.src:
            raise ValueError(f"Resampler: input must be (..., {self.src[0]}, {self.src[1]}), got {tuple(x.shape)}")
        x = x.float()
        for dim, t, mirror, w, idx, w0 in self._axes:
            x = _apply(x, dim, t, mirror, w, idx, w0)
        return x


def _apply(x: Tensor, dim: int, t: Taps, mirror: Tensor, w: Tensor, idx: Tensor, w0: list[float]) -> Tensor:
    xp = x.index_select(dim, mirror) if t.pad else x
    k_taps = t.weights.shape[1]
    if t.stride is not None:
        out = None
        for k in range(k_taps):
            start = int(t.index[0, k])
            view = xp.narrow(dim, start, (t.dst - 1) * t.stride + 1)
            view = view[..., :: t.stride, :] if dim == -2 else view[..., :: t.stride]
            out = view * w0[k] if out is None else out.add_(view, alpha=w0[k])
        assert out is not None
        return out
    shape = [1] * x.ndim
    shape[dim] = t.dst
    out = None
    for k in range(k_taps):
        term = xp.index_select(dim, idx[:, k]) * w[:, k].reshape(shape)
        out = term if out is None else out.add_(term)
    assert out is not None
    return out


def resize(x: Tensor, size: tuple[int, int], filter: str = "spline36") -> Tensor:  # noqa: A002
    """One-off resize of a (..., H, W) tensor to ``size`` = (h, w) (build a :class:`Resampler` to reuse taps).

    Returns float32; at the same size that is ``x`` itself when it already is float32."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x.float()
    return Resampler(tuple(x.shape[-2:]), size, filter=filter, device=x.device)(x)

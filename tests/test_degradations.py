"""Degradation functions and the pipeline: statistics, sizes, codec behaviour, colour order, determinism."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from training.degradations import (
    ConfigError,
    DegradationConfig,
    add_gaussian_noise,
    apply_kernel,
    apply_tensor_steps,
    codec_roundtrip,
    degrade_clip,
    draw_degradation,
    gaussian_kernel,
    quantize,
    resize,
)
from training.degradations.batched import DegradedStream
from training.lbo_arch import LBONet, load_lbo
from training.synthetic import make_synthetic_cartoon_clip
from vsanimesr.loader import WeightsError

REPO = Path(__file__).resolve().parents[1]


def _moments(k: torch.Tensor) -> np.ndarray:
    """Covariance matrix [[xx, xy], [xy, yy]] of a kernel seen as a distribution."""
    k = k.double().numpy()
    r = np.arange(k.shape[0]) - k.shape[0] // 2
    yy, xx = np.meshgrid(r, r, indexing="ij")
    return np.array([[(k * xx * xx).sum(), (k * xx * yy).sum()], [(k * xx * yy).sum(), (k * yy * yy).sum()]])


@pytest.mark.parametrize("sigma", [1.0, 1.5, 3.0])
def test_isotropic_kernel_sums_to_one_and_spread_is_sigma(sigma):
    k = gaussian_kernel(size=21, sigma_x=sigma, sigma_y=sigma)
    assert k.shape == (21, 21)
    assert abs(float(k.double().sum()) - 1) < 1e-6
    cov = _moments(k)
    assert cov[0, 0] == pytest.approx(sigma**2, rel=0.02)
    assert cov[1, 1] == pytest.approx(sigma**2, rel=0.02)
    assert abs(cov[0, 1]) < 1e-6


def test_anisotropic_kernel_covariance_follows_sigmas_and_rotation():
    sx, sy, theta = 2.5, 1.0, math.pi / 6
    k = gaussian_kernel(size=21, sigma_x=sx, sigma_y=sy, theta=theta)
    assert abs(float(k.double().sum()) - 1) < 1e-6
    c, s = math.cos(theta), math.sin(theta)
    rot = np.array([[c, -s], [s, c]])
    want = rot @ np.diag([sx**2, sy**2]) @ rot.T
    np.testing.assert_allclose(_moments(k), want, atol=0.05)


def test_gaussian_kernel_rejects_even_size():
    with pytest.raises(ValueError, match="gaussian_kernel: size"):
        gaussian_kernel(size=20, sigma_x=1, sigma_y=1)


def test_fft_blur_equals_direct_reflect_convolution():
    torch.manual_seed(0)
    clip = torch.rand(2, 3, 40, 36)
    k = gaussian_kernel(size=21, sigma_x=2.0, sigma_y=0.9, theta=0.7)
    want = F.conv2d(F.pad(clip, (10, 10, 10, 10), mode="reflect").view(-1, 1, 60, 56), k.view(1, 1, 21, 21))
    got = apply_kernel(clip, k)
    assert got.shape == clip.shape
    torch.testing.assert_close(got, want.view(2, 3, 40, 36), atol=1e-5, rtol=0)


def test_noise_std_matches_sigma_and_gray_is_equal_across_channels():
    clip = torch.full((2, 3, 128, 128), 0.5)
    sig = [8 / 255, 3 / 255]
    out = add_gaussian_noise(clip, sigmas=sig, gray=[True, False], seed=1)
    noise = out - clip
    for t in range(2):
        assert float(noise[t].std()) == pytest.approx(sig[t], rel=0.03)
    assert torch.equal(noise[0, 0], noise[0, 1]) and torch.equal(noise[0, 0], noise[0, 2])
    assert not torch.equal(noise[1, 0], noise[1, 1])
    assert float(noise[1].abs().mean()) > 0


def test_noise_same_seed_same_field():
    clip = torch.full((1, 3, 16, 16), 0.5)
    a = add_gaussian_noise(clip, sigmas=[0.02], gray=[False], seed=7)
    b = add_gaussian_noise(clip, sigmas=[0.02], gray=[False], seed=7)
    c = add_gaussian_noise(clip, sigmas=[0.02], gray=[False], seed=8)
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("mode", ["area", "bilinear", "bicubic"])
@pytest.mark.parametrize("factor", [0.5, 0.25])
def test_resize_output_sizes(mode, factor):
    out = resize(torch.rand(3, 3, 32, 48), factor=factor, mode=mode)
    assert out.shape == (3, 3, int(32 * factor), int(48 * factor))


def test_resize_area_half_is_2x2_mean_and_bad_args_raise():
    x = torch.rand(1, 3, 8, 8)
    torch.testing.assert_close(resize(x, factor=0.5, mode="area"), F.avg_pool2d(x, 2))
    with pytest.raises(ValueError, match="resize: mode"):
        resize(x, factor=0.5, mode="lanczos")
    with pytest.raises(ValueError, match="not whole"):
        resize(torch.rand(1, 3, 9, 8), factor=0.5, mode="area")


def test_quantize_rounds_by_default_and_truncates_on_request():
    x = np.array([0.9 / 255, 254.6 / 255, 1.2, -0.1])
    assert quantize(x).tolist() == [1, 255, 255, 0]
    assert quantize(x, mode="truncate").tolist() == [0, 254, 255, 0]


def _textured_clip(t: int = 15, size: int = 64) -> np.ndarray:
    clip = make_synthetic_cartoon_clip(t, size, size, rng=np.random.default_rng(0)).astype(np.float32)
    clip += np.random.default_rng(1).normal(0, 6, clip.shape)
    return np.clip(clip, 0, 255).round().astype(np.uint8)


def test_codec_roundtrip_keeps_shape_and_crf35_loses_more_than_crf18():
    clip = _textured_clip()
    hi = codec_roundtrip(clip, crf=18, profile="high")
    lo = codec_roundtrip(clip, crf=35, profile="baseline")
    assert hi.shape == lo.shape == clip.shape and hi.dtype == np.uint8
    err18 = np.abs(hi.astype(int) - clip).mean()
    err35 = np.abs(lo.astype(int) - clip).mean()
    assert 0 < err18 < err35


@pytest.mark.parametrize(("codec", "kw"), [("libx264", {"crf": 30}), ("libx265", {"crf": 30}),
                                           ("mpeg2video", {"qscale": 8})])
def test_codec_pure_red_stays_red_and_odd_sizes_survive(codec, kw):
    red = np.zeros((4, 17, 23, 3), np.uint8)
    red[..., 0] = 255
    out = codec_roundtrip(red, codec=codec, **kw)
    assert out.shape == red.shape
    r, g, b = out[..., 0].mean(), out[..., 1].mean(), out[..., 2].mean()
    assert r > 240 and g < 15 and b < 15, (codec, r, g, b)


def test_codec_swap_rb_reproduces_the_published_bug_only_when_asked():
    clip = _textured_clip(t=4, size=32)
    normal = codec_roundtrip(clip, crf=30)
    assert not np.array_equal(normal, codec_roundtrip(clip, crf=30, swap_rb=True))
    assert np.array_equal(normal, codec_roundtrip(clip, crf=30))


def test_codec_rejects_float_input():
    with pytest.raises(ValueError, match="codec_roundtrip: frames"):
        codec_roundtrip(np.zeros((2, 8, 8, 3), np.float32))


def _hr(seed: int = 0, t: int = 6, size: int = 64) -> torch.Tensor:
    clip = make_synthetic_cartoon_clip(t, size, size, rng=np.random.default_rng(seed))
    return torch.from_numpy(clip).permute(0, 3, 1, 2).float() / 255


def test_degrade_clip_shape_range_params_and_determinism():
    cfg = DegradationConfig.from_yaml(REPO / "training/configs/degradations.yml")
    hr = _hr()
    lr1, p1 = degrade_clip(hr, cfg, rng=np.random.default_rng(5))
    lr2, p2 = degrade_clip(hr, cfg, rng=np.random.default_rng(5))
    lr3, p3 = degrade_clip(hr, cfg, rng=np.random.default_rng(6))
    assert lr1.shape == (6, 3, 16, 16) and lr1.dtype == torch.float32
    assert float(lr1.min()) >= 0 and float(lr1.max()) <= 1
    assert torch.equal(lr1, lr2) and p1 == p2
    assert not torch.equal(lr1, lr3) and p1 != p3
    assert set(p1) == {"blur", "noise", "resize", "codec"}
    json.dumps(p1)
    # Output is 8-bit decoded video.
    assert torch.allclose((lr1 * 255).round(), lr1 * 255, atol=1e-3)


def test_degrade_clip_other_codecs_and_optional_steps():
    cfg = DegradationConfig.from_dict(
        {"order": ["resize", "codec"], "codec": {"codecs": {"libx265": 1, "mpeg2video": 1}, "crf": [30, 30]}}
    )
    seen = set()
    for s in range(6):
        lr, p = degrade_clip(_hr(t=3), cfg, rng=np.random.default_rng(s))
        assert lr.shape == (3, 3, 16, 16) and "blur" not in p
        seen.add(p["codec"]["codec"])
    assert seen == {"libx265", "mpeg2video"}


def test_degrade_clip_with_lbo_pool():
    torch.manual_seed(0)
    pool = [LBONet(num_feat=8).eval(), LBONet(num_feat=8).eval()]
    cfg = DegradationConfig.from_dict({"resize": {"lbo_prob": 1.0}, "codec": {"prob": 0.0}})
    lr, p = degrade_clip(_hr(t=3), cfg, rng=np.random.default_rng(0), lbo_pool=pool)
    assert lr.shape == (3, 3, 16, 16)
    assert all(step.startswith("lbo") for step in p["resize"])
    with pytest.raises(ValueError, match="degrade_clip: .*lbo_pool"):
        degrade_clip(_hr(t=3), cfg, rng=np.random.default_rng(0))


def test_degrade_clip_rejects_bad_input():
    cfg = DegradationConfig()
    with pytest.raises(ValueError, match="degrade_clip: hr"):
        degrade_clip(torch.rand(3, 64, 64), cfg, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="divisible by scale=4"):
        degrade_clip(torch.rand(2, 3, 62, 64), cfg, rng=np.random.default_rng(0))


def test_config_rejects_unknown_keys_naming_key_and_file(tmp_path):
    p = tmp_path / "bad.yml"
    p.write_text("blur:\n  sigma: [1, 2]\n")
    with pytest.raises(ConfigError, match=r"bad\.yml.*'blur\.sigma'"):
        DegradationConfig.from_yaml(p)
    with pytest.raises(ConfigError, match="multiply to"):
        DegradationConfig.from_dict({"resize": {"factors": [0.5]}})
    with pytest.raises(ConfigError, match="noise.gray_prob"):
        DegradationConfig.from_dict({"noise": {"gray_prob": 1.5}})
    with pytest.raises(ConfigError, match="unknown choice 'h264'"):
        DegradationConfig.from_dict({"codec": {"codecs": {"h264": 1}}})


def test_example_configs_round_trip():
    for name in ("degradations.yml", "degradations_lbo.yml"):
        cfg = DegradationConfig.from_yaml(REPO / "training/configs" / name)
        assert DegradationConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.resize.lbo_prob == 0.5


def test_lbonet_shapes_and_load_lbo_wrappers(tmp_path):
    torch.manual_seed(0)
    net = LBONet(num_feat=16).eval()
    x = torch.rand(2, 3, 16, 24)
    y = net(x)
    assert y.shape == (2, 3, 8, 12)
    assert sum(p.numel() for p in LBONet().parameters()) == 45_635
    torch.save(net.state_dict(), tmp_path / "bare.pth")
    torch.save({"params": net.state_dict()}, tmp_path / "wrapped.pth")
    for f in ("bare.pth", "wrapped.pth"):
        loaded = load_lbo(tmp_path / f)
        assert loaded.num_feat == 16 and loaded.downscale == 2
        torch.testing.assert_close(loaded(x), y)
    torch.save({"other.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(WeightsError, match="load_lbo"):
        load_lbo(tmp_path / "bad.pth")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_degrade_clip_on_cuda_matches_shapes_and_is_deterministic():
    cfg = DegradationConfig.from_yaml(REPO / "training/configs/degradations_lbo.yml")
    pool = [LBONet(num_feat=8).eval().cuda()]
    hr = _hr().cuda()
    a, pa = degrade_clip(hr, cfg, rng=np.random.default_rng(3), lbo_pool=pool)
    b, pb = degrade_clip(hr, cfg, rng=np.random.default_rng(3), lbo_pool=pool)
    assert a.is_cuda and a.shape == (6, 3, 16, 16) and pa == pb
    torch.testing.assert_close(a, b, atol=1 / 255, rtol=0)


# --------------------------------------------------------------------------------------------------- on the device


def _hr_batch(n: int = 4, t: int = 5, size: int = 64) -> torch.Tensor:
    return torch.stack([_hr(seed, t=t, size=size) for seed in range(n)])


def _lbo_pool() -> list[LBONet]:
    torch.manual_seed(0)
    return [LBONet(num_feat=8).eval(), LBONet(num_feat=8).eval()]


def test_batched_tensor_steps_do_not_depend_on_the_batch():
    """A clip's degradation is a function of its own seed: the same alone, in any batch, in any position."""
    cfg = DegradationConfig.from_yaml(REPO / "training/configs/degradations_lbo.yml")
    pool = _lbo_pool()
    hr = _hr_batch()
    draws = [draw_degradation(cfg, np.random.default_rng(100 + i), num_frames=5, num_lbos=2) for i in range(4)]
    assert len({d.resize for d in draws}) > 1  # the batch mixes operators (interpolations and LBOs)
    together = apply_tensor_steps(hr, draws, cfg, pool)
    assert together.shape == (4, 5, 3, 16, 16)
    for i in range(4):
        assert torch.equal(apply_tensor_steps(hr[i : i + 1], draws[i : i + 1], cfg, pool)[0], together[i])
    order = [2, 0, 3, 1]
    assert torch.equal(apply_tensor_steps(hr[order], [draws[i] for i in order], cfg, pool), together[order])


def test_degraded_stream_equals_degrade_clip_per_item():
    """The training path (batched on the device, codec per clip) gives exactly what degrade_clip gives."""
    cfg = DegradationConfig.from_yaml(REPO / "training/configs/degradations_lbo.yml")
    pool = _lbo_pool()
    hr = (_hr_batch() * 255).round().to(torch.uint8)
    seeds = torch.tensor([7, 8, 9, 10])
    stream = DegradedStream(iter([{"gt": hr, "seed": seeds}] * 3), cfg, device=torch.device("cpu"), lbo_pool=pool)
    gt, lq = next(stream)
    assert torch.equal(gt, hr.float() / 255)
    for i in range(4):
        ref, params = degrade_clip(hr[i].float() / 255, cfg, rng=np.random.default_rng(int(seeds[i])), lbo_pool=pool)
        assert torch.equal(lq[i], ref), i
        assert "fallback" not in params["codec"]
    assert stream.fallbacks == 0 and stream.clips == 4


def test_codec_worker_processes_give_the_same_clips():
    cfg = DegradationConfig.from_dict({"blur": {"kernel_size": 7}})
    hr = (_hr_batch(n=2, t=4, size=32) * 255).round().to(torch.uint8)
    batches = [{"gt": hr, "seed": torch.tensor([1, 2]), "key": ["a", "b"]}] * 3
    inline = DegradedStream(iter(batches), cfg, device=torch.device("cpu"), codec_workers=0)
    pooled = DegradedStream(iter(batches), cfg, device=torch.device("cpu"), codec_workers=1)
    try:
        for _ in range(2):
            assert torch.equal(next(inline)[1], next(pooled)[1])
    finally:
        pooled.close()
    assert pooled.fallbacks == 0


def test_codec_failure_keeps_the_clip_uncompressed_and_is_counted(caplog):
    """x265 cannot open frames under 16 pixels: the clip stays uncompressed (as the published code did)."""
    cfg = DegradationConfig.from_dict({"order": ["resize", "codec"], "codec": {"codecs": {"libx265": 1}}})
    hr = _hr(t=3, size=32)  # LR 8x8
    lr, params = degrade_clip(hr, cfg, rng=np.random.default_rng(0))
    assert "ArgumentError" in params["codec"]["fallback"]
    plain = apply_tensor_steps(hr[None], [draw_degradation(cfg, np.random.default_rng(0), num_frames=3)], cfg)[0]
    assert torch.equal(lr, torch.round(plain.clamp(0, 1) * 255) / 255)  # quantised, not encoded
    batch = {"gt": hr[None].repeat(2, 1, 1, 1, 1), "seed": torch.tensor([3, 4]), "key": ["x/0", "y/5"]}
    stream = DegradedStream(iter([batch]), cfg, device=torch.device("cpu"))
    with caplog.at_level("WARNING", logger="training.degradations"):
        next(stream)
    assert stream.fallbacks == 2 and "clip y/5 failed" in caplog.text and "uncompressed" in caplog.text


def test_crf_values_x264_cannot_open_are_rejected():
    with pytest.raises(ConfigError, match=r"codec\.crf \[0\.5, 30\.0\].*losslessly"):
        DegradationConfig.from_dict({"codec": {"crf": [0.5, 30]}})
    DegradationConfig.from_dict({"codec": {"codecs": {"libx265": 1}, "crf": [0, 30]}})  # x265 has no such limit
    clip = _textured_clip(t=2, size=16)
    with pytest.raises(ValueError, match="codec_roundtrip: crf=0.5 is lossless"):
        codec_roundtrip(clip, crf=0.5, profile="high")
    assert codec_roundtrip(clip, crf=1, profile="baseline").shape == clip.shape  # the lowest value that opens
    with pytest.raises(ConfigError, match="'codec' must be the last step"):
        DegradationConfig.from_dict({"order": ["codec", "resize"]})


def test_one_config_loader_rules():
    """Degradation configs follow the training configs' rules: YAML 1.1 '1e-4' strings are numbers, true is not."""
    cfg = DegradationConfig.from_dict({"noise": {"sigma": ["1e0", 5]}, "resize": {"factors": 0.25}})
    assert cfg.noise.sigma == (1.0, 5.0) and cfg.resize.factors == (0.25,)
    with pytest.raises(ConfigError, match="'blur.kernel_size' must be an integer, got 7.0"):
        DegradationConfig.from_dict({"blur": {"kernel_size": 7.0}})
    with pytest.raises(ConfigError, match="'noise.prob' must be a number, got True"):
        DegradationConfig.from_dict({"noise": {"prob": True}})


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_degraded_stream_on_cuda_is_reproducible_and_matches_degrade_clip():
    cfg = DegradationConfig.from_yaml(REPO / "training/configs/degradations_lbo.yml")
    pool = [n.cuda() for n in _lbo_pool()]
    hr = (_hr_batch() * 255).round().to(torch.uint8)
    batch = {"gt": hr, "seed": torch.tensor([7, 8, 9, 10])}
    a = DegradedStream(iter([batch]), cfg, device=torch.device("cuda"), lbo_pool=pool, codec_workers=1)
    b = DegradedStream(iter([batch]), cfg, device=torch.device("cuda"), lbo_pool=pool)
    try:
        (_, la), (_, lb) = next(a), next(b)
    finally:
        a.close()
    assert la.is_cuda and torch.equal(la, lb)
    ref, _ = degrade_clip(hr[0].cuda().float() / 255, cfg, rng=np.random.default_rng(7), lbo_pool=pool)
    torch.testing.assert_close(la[0], ref, atol=2 / 255, rtol=0)

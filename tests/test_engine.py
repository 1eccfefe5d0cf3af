"""The network, the loader and the engine: conformance with the published model, determinism, sizes, errors."""

from __future__ import annotations

import random
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_conforms

from animesr_tools.metrics import psnr
from vsanimesr import AnimeSR, AnimeSRNet, WeightsError, load_model
from vsanimesr.engine import scene_metric


def _smooth_clip(t: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """A slowly moving colour field: consecutive frames are alike, so the cut detector sees no cut."""
    rng = np.random.default_rng(seed)
    base = rng.random((h + t, w + t, 3)).astype(np.float32)
    return np.stack([base[i : i + h, i : i + w] * 0.5 + 0.25 for i in range(t)])


# --------------------------------------------------------------------------- published-model conformance


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_conformance_with_published_outputs(version: str, reference_set: dict, request: pytest.FixtureRequest) -> None:
    """One published chain through the engine reproduces the in-repo reference (another implementation's outputs)."""
    path = request.getfixturevalue(f"weights_{version}")
    from vsanimesr.weights import MODELS, sha256_of

    assert sha256_of(path) == MODELS[version].sha256 == str(reference_set[f"sha256_AnimeSR_{version}"])
    lr = reference_set["lr"].transpose(0, 2, 3, 1)
    sr = AnimeSR(model=version, device="cpu", reset_interval=0, scene_threshold=0)
    out = sr.upscale(lr).transpose(0, 3, 1, 2)
    assert_conforms(out, reference_set[f"sr_AnimeSR_{version}"], f"engine {version}, every frame (float16 reference)")
    assert_conforms(out[-1], reference_set[f"sr_AnimeSR_{version}_last"], f"engine {version}, last frame (float32)")
    assert sr.steps == len(lr)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_conformance_on_real_frames(version: str, conformance: dict) -> None:
    """Extra check where ../shared exists: the same on six frames of a real clip, float32 reference."""
    from vsanimesr.weights import MODELS

    assert MODELS[version].sha256 == str(conformance[f"sha256_AnimeSR_{version}"])
    lr = conformance["lr"].transpose(0, 2, 3, 1)
    out = AnimeSR(model=version, device="cpu", reset_interval=0, scene_threshold=0).upscale(lr)
    assert_conforms(out.transpose(0, 3, 1, 2), conformance[f"sr_AnimeSR_{version}"], f"engine {version}, real frames")


def test_network_matches_published_in_plain_eager_nchw(reference_set: dict, weights_v2: Path) -> None:
    """The bare module (no engine) reproduces the reference; only summation order (threads) may differ."""
    net = load_model(weights_v2)
    with torch.inference_mode():
        out = net.forward_sequence(torch.from_numpy(reference_set["lr"])[None])[0].numpy()
    assert np.abs(out[-1] - reference_set["sr_AnimeSR_v2_last"]).max() <= 1e-5
    assert_conforms(out, reference_set["sr_AnimeSR_v2"], "bare network v2, every frame (float16 reference)")


def test_network_has_published_layout(weights_v2: Path) -> None:
    net = load_model(weights_v2)
    state = net.state_dict()
    assert len(state) == 50
    assert sum(v.numel() for v in state.values()) == 1_495_376
    assert state["recurrent_cell.conv_s1_first.0.weight"].shape == (64, 121, 3, 3)
    assert state["recurrent_cell.fusion.0.weight"].shape == (224, 192, 3, 3)


# --------------------------------------------------------------------------- determinism


def test_random_access_in_any_order_equals_upscale_with_defaults() -> None:
    clip = _smooth_clip(60, 4, 8)  # crosses the default restart at 48
    sr = AnimeSR(device="cpu")
    assert sr.reset_interval > 0 and sr.warmup > 0 and sr.scene_threshold > 0
    ref = sr.upscale(clip)
    rev = AnimeSR(device="cpu")
    for n in reversed(range(len(clip))):
        assert np.array_equal(rev.frame(n, clip.__getitem__, len(clip)), ref[n]), n
    order = list(range(len(clip)))
    random.Random(7).shuffle(order)
    order = order[:20] + [47, 48, 49, 0]  # enough for any order-dependence to show, cheap on 2 cores
    shuf = AnimeSR(device="cpu")
    for n in order:
        assert np.array_equal(shuf.frame(n, clip.__getitem__, len(clip)), ref[n]), n
    assert [np.array_equal(a, b) for a, b in zip(sr.stream(iter(clip)), ref, strict=True)] == [True] * len(clip)
    tensors = [t.permute(1, 2, 0).numpy() for t in sr.stream_tensors(iter(clip))]
    assert [np.array_equal(a, b) for a, b in zip(tensors, ref, strict=True)] == [True] * len(clip)


def test_sequential_cost_is_one_step_per_frame_plus_warmup() -> None:
    clip = _smooth_clip(23, 8, 8)
    sr = AnimeSR(device="cpu", reset_interval=5, warmup=2, scene_threshold=0)
    sr.upscale(clip)
    restarts = len(range(5, 23, 5))
    assert sr.steps == 23 + 2 * restarts


def test_restarts_and_cuts_match_their_definition() -> None:
    """Each frame equals a chain built by hand from the rules: warm-up before restarts, fresh chains at cuts."""
    clip = _smooth_clip(14, 8, 8)
    clip[9:] *= 0.3  # a hard cut before frame 9: a darker picture
    hwc = [torch.from_numpy(f).permute(2, 0, 1) for f in clip]
    assert scene_metric(hwc[8], hwc[9]) > 0.15 > max(scene_metric(hwc[k - 1], hwc[k]) for k in range(1, 14) if k != 9)
    sr = AnimeSR(device="cpu", reset_interval=6, warmup=2)
    out = sr.upscale(clip)
    assert sr.window(8, 14) == (3, 9)

    def plain(**kw: int) -> AnimeSR:
        return AnimeSR(device="cpu", scene_threshold=0, **kw)

    # 6, 7: chain led in at 4 (previous neighbour 3).
    assert np.array_equal(out[6:8], plain(reset_interval=4, warmup=0).upscale(clip[:9])[6:8])
    # 9..11: a chain from zero at the cut, no warm-up, previous neighbour of 9 is itself.
    assert np.array_equal(out[9:12], plain(reset_interval=0).upscale(clip[9:])[:3])
    # 12, 13: restart at 12 led in at 10 (previous neighbour 9, same shot).
    assert np.array_equal(out[12:], plain(reset_interval=10, warmup=0).upscale(clip)[12:])
    # 0..5: one chain from frame 0.
    assert np.array_equal(out[:6], plain(reset_interval=0).upscale(clip[:7])[:6])


def test_slightly_out_of_order_requests_cost_no_extra_steps() -> None:
    """Requests up to ``output_cache`` frames ahead compute the frames between once and serve them from the cache."""
    clip = _smooth_clip(12, 8, 8)
    sr = AnimeSR(device="cpu", reset_interval=0, scene_threshold=0, output_cache=4)
    ref = AnimeSR(device="cpu", reset_interval=0, scene_threshold=0).upscale(clip)
    for n in (0, 3, 1, 2, 7, 5, 4, 6, 11, 8, 10, 9):
        assert np.array_equal(sr.frame(n, clip.__getitem__, 12), ref[n]), n
    assert sr.steps == 12
    with pytest.raises(ValueError, match="AnimeSR: output_cache=0: must be an integer >= 1"):
        AnimeSR(device="cpu", output_cache=0)


def test_requests_across_a_restart_point_resume_their_own_chain() -> None:
    """VapourSynth may start frame 4 (a restart) before 0-3: both chains live on, so no step is done twice."""
    clip = _smooth_clip(10, 8, 8)
    kw = dict(device="cpu", reset_interval=4, warmup=2, scene_threshold=0)
    ref = AnimeSR(**kw).upscale(clip)
    sr = AnimeSR(**kw)
    for n in (4, 0, 1, 2, 3, 5, 6, 7, 8, 9):
        assert np.array_equal(sr.frame(n, clip.__getitem__, 10), ref[n]), n
    assert sr.steps == 10 + 2 * 2  # every frame once, plus the warm-up before the restarts at 4 and 8


def test_reset_interval_zero_is_one_linear_chain() -> None:
    clip = _smooth_clip(10, 8, 8)
    net = AnimeSR(device="cpu", reset_interval=0, scene_threshold=0, channels_last=False)
    out = net.upscale(clip)
    with torch.inference_mode():
        ref = net.net.forward_sequence(torch.from_numpy(clip).permute(0, 3, 1, 2)[None])[0]
    np.testing.assert_allclose(out, ref.permute(0, 2, 3, 1).numpy(), atol=1e-6)


def test_same_engine_never_serves_one_clips_frames_for_another() -> None:
    """Issue 11: frame(3, clip_a) then frame(3, clip_b) on one engine returned clip A's frame for clip B."""
    clip_a, clip_b = _smooth_clip(6, 8, 8, seed=1), _smooth_clip(6, 8, 8, seed=2)
    ref_a = AnimeSR(device="cpu").upscale(clip_a)
    ref_b = AnimeSR(device="cpu").upscale(clip_b)
    sr = AnimeSR(device="cpu")
    assert np.array_equal(sr.frame(3, clip_a.__getitem__, 6), ref_a[3])
    assert np.array_equal(sr.frame(3, clip_b.__getitem__, 6), ref_b[3])
    assert np.array_equal(sr.frame(3, clip_a.__getitem__, 6), ref_a[3])


def test_sessions_and_whole_clip_calls_interleave_without_corrupting_each_other() -> None:
    clip_a, clip_b = _smooth_clip(7, 8, 8, seed=3), _smooth_clip(7, 8, 8, seed=4)
    ref_a = AnimeSR(device="cpu", reset_interval=4, warmup=1).upscale(clip_a)
    ref_b = AnimeSR(device="cpu", reset_interval=4, warmup=1).upscale(clip_b)
    sr = AnimeSR(device="cpu", reset_interval=4, warmup=1)
    a, b = sr.open(clip_a.__getitem__, 7), sr.open(clip_b.__getitem__, 7)
    stream_b = sr.stream(iter(clip_b))
    for n in range(7):
        assert np.array_equal(a.frame(n), ref_a[n]), n
        assert np.array_equal(next(stream_b), ref_b[n]), n
        if n == 3:  # a whole-clip call in the middle of both
            assert np.array_equal(sr.upscale(clip_b), ref_b)
        assert np.array_equal(b.frame(6 - n), ref_b[6 - n]), n
    assert a.steps == 7 + 1  # one step per frame plus one warm-up step before the restart at 4


def test_window_is_defined_once_by_the_options() -> None:
    from vsanimesr.options import Options

    o = Options(reset_interval=6, warmup=2)
    assert o.window(8, 14) == (3, 9) and o.window(0, 14) == (0, 1) and o.window(13, 14) == (9, 13)
    assert o.window_span == 6 + 2 + 2 == max(hi - lo + 1 for lo, hi in (o.window(n, 100) for n in range(100)))
    assert o.restart_span == 2 + 3
    assert Options(reset_interval=0).window(50, 60) == (0, 51)
    sr = AnimeSR(o, device="cpu")
    assert sr.window(8, 14) == o.window(8, 14) and sr.open(np.zeros((14, 4, 4, 3)).__getitem__, 14).window(8) == (3, 9)


def test_models_of_another_scale_work_end_to_end(tmp_path: Path) -> None:
    """A x2 checkpoint (training.train can export one) upscales x2; nothing downstream assumes 4."""
    net = AnimeSRNet(num_feat=8, num_blocks=(1, 1, 1), scale=2)
    path = tmp_path / "x2.pth"
    torch.save(net.state_dict(), path)
    sr = AnimeSR(model=str(path), device="cpu")
    assert sr.scale == 2
    clip = _smooth_clip(3, 6, 10)
    assert sr.upscale(clip).shape == (3, 12, 20, 3)


# --------------------------------------------------------------------------- sizes and tiling


@pytest.mark.parametrize("hw", [(1, 1), (5, 7), (63, 97)])
@pytest.mark.parametrize("t", [1, 2])
def test_any_size_gives_exactly_4x(hw: tuple[int, int], t: int) -> None:
    frames = np.random.default_rng(0).integers(0, 256, (t, *hw, 3), dtype=np.uint8)
    out = AnimeSR(device="cpu").upscale(frames)
    assert out.shape == (t, 4 * hw[0], 4 * hw[1], 3)
    assert out.dtype == np.float32 and np.isfinite(out).all()


def test_returned_frames_do_not_alias_the_engine_cache() -> None:
    clip = _smooth_clip(3, 8, 8)
    sr = AnimeSR(device="cpu")
    first = sr.frame(1, clip.__getitem__, 3)
    keep = first.copy()
    first[:] = 0  # the caller owns the array
    assert np.array_equal(sr.frame(1, clip.__getitem__, 3), keep)


def test_frame_planar_writes_into_strided_planes_and_half() -> None:
    """The VapourSynth path: the engine fills the caller's (padded-row) planes in place, in fp32 or fp16."""
    clip = _smooth_clip(3, 8, 12)
    sr = AnimeSR(device="cpu")
    ref = sr.frame(1, clip.__getitem__, 3)  # (32, 48, 3)
    for dtype in (np.float32, np.float16):
        buf = np.full((3, 32, 64), -1, dtype)  # rows of 64 samples, 48 used
        planes = [buf[p, :, :48] for p in range(3)]
        assert sr.frame_planar(1, clip.__getitem__, 3, out=planes) is None
        np.testing.assert_array_equal(buf[..., :48], ref.transpose(2, 0, 1).astype(dtype))
        assert (buf[..., 48:] == -1).all()  # nothing written past the row's end
    whole = sr.frame_planar(1, clip.__getitem__, 3, out_dtype=np.float16)
    assert whole.dtype == np.float16 and whole.flags.c_contiguous and whole.shape == (3, 32, 48)
    with pytest.raises(ValueError, match=r"AnimeSR.frame_planar: out_dtype/out must be float32 or float16, got uint8"):
        sr.frame_planar(1, clip.__getitem__, 3, out_dtype=np.uint8)
    with pytest.raises(ValueError, match=r"AnimeSR.frame_planar: out must be three \(32, 48\) planes, got shapes"):
        sr.frame_planar(1, clip.__getitem__, 3, out=[np.empty((32, 40), np.float32)] * 3)


def test_uint8_and_float_inputs_agree() -> None:
    frames = np.random.default_rng(1).integers(0, 256, (3, 12, 12, 3), dtype=np.uint8)
    a = AnimeSR(device="cpu").upscale(frames)
    b = AnimeSR(device="cpu").upscale(frames.astype(np.float32) / 255)
    assert np.array_equal(a, b)


def test_planar_input_equals_interleaved() -> None:
    clip = _smooth_clip(4, 12, 16)
    sr = AnimeSR(device="cpu")
    ref = sr.upscale(clip)
    planes = [[np.ascontiguousarray(f[..., c]) for c in range(3)] for f in clip]
    sr2 = AnimeSR(device="cpu")
    for n in range(4):
        assert np.array_equal(sr2.frame_planar(n, planes.__getitem__, 4), ref[n].transpose(2, 0, 1))


def test_tiled_output_stays_close_to_untiled(conformance: dict) -> None:
    """Documented bound: tile 32, overlap 16 on real frames: PSNR >= 50 dB, max abs error < 0.05."""
    lr = conformance["lr"].transpose(0, 2, 3, 1)
    whole = AnimeSR(device="cpu", reset_interval=0, scene_threshold=0).upscale(lr)
    tiled = AnimeSR(device="cpu", tile=32, tile_overlap=16, reset_interval=0, scene_threshold=0).upscale(lr)
    assert not np.array_equal(whole, tiled)  # the tiles really ran separately
    assert np.abs(whole - tiled).max() < 0.05
    assert psnr(np.clip(whole, 0, 1), np.clip(tiled, 0, 1)) >= 50


def test_bf16_stays_close_to_fp32_and_keeps_the_state_in_fp32(conformance: dict, pretend_bf16_cpu: None) -> None:
    lr = conformance["lr"].transpose(0, 2, 3, 1)
    kw = dict(device="cpu", reset_interval=0, scene_threshold=0)
    ref = AnimeSR(**kw).upscale(lr)
    sr = AnimeSR(bf16=True, **kw)
    out = sr.upscale(lr)
    assert not np.array_equal(out, ref)  # it really ran in reduced precision
    assert psnr(np.clip(out, 0, 1), np.clip(ref, 0, 1)) > 50
    clip = _smooth_clip(3, 8, 8)
    sr.frame(2, clip.__getitem__, 3)
    chain = next(reversed(sr._default._chains.values()))
    assert all(t.dtype == torch.float32 for t in chain.states + chain.outs)
    with pytest.raises(ValueError, match="AnimeSR: bf16=True: fp16 and bf16 exclude each other"):
        AnimeSR(device="cpu", fp16=True, bf16=True)


# --------------------------------------------------------------------------- errors


def test_bad_arguments_name_argument_and_value() -> None:
    with pytest.raises(ValueError, match=r"AnimeSR: model='nope': must be 'v1', 'v2' or the path of a weight file"):
        AnimeSR(model="nope")
    with pytest.raises(ValueError, match=r"^AnimeSR: tile=-1: must be >= 0$"):
        AnimeSR(tile=-1)
    with pytest.raises(ValueError, match=r"AnimeSR: fp16=True: needs a CUDA device, got device='cpu'"):
        AnimeSR(device="cpu", fp16=True)
    with pytest.raises(ValueError, match=r"AnimeSR: device='tpu': must be 'auto', 'cpu', 'cuda' or 'cuda:N'"):
        AnimeSR(device="tpu")
    with pytest.raises(ValueError, match=r"^AnimeSR: cuda_graphs=True: needs a CUDA device, got device='cpu'$"):
        AnimeSR(device="cpu", cuda_graphs=True)
    with pytest.raises(ValueError, match=r"^AnimeSR: cuda_graphs=True: applies to backend 'torch', not 'tensorrt'$"):
        AnimeSR(device="cpu", backend="tensorrt", cuda_graphs=True)
    from vsanimesr.backends.graphs import CUDAGraphStep

    with pytest.raises(ValueError, match=r"^CUDAGraphStep: device must be a CUDA device, got cpu$"):
        CUDAGraphStep(torch.nn.Identity(), device=torch.device("cpu"))
    with pytest.raises(ValueError, match=r"AnimeSR: scene_threshold=-1: must be >= 0"):
        AnimeSR(scene_threshold=-1)
    with pytest.raises(ValueError, match=r"n=3: must be a frame number in \[0, 2\]"):
        AnimeSR(device="cpu").frame(3, lambda k: np.zeros((4, 4, 3), np.float32), 3)
    with pytest.raises(ValueError, match=r"frames must have shape"):
        AnimeSR(device="cpu").upscale(np.zeros((2, 4, 4), np.float32))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"^AnimeSR: device='cuda': CUDA is not available"):
        AnimeSR(device="cuda")


def test_bad_weight_files(tmp_path: Path, weights_v2: Path) -> None:
    with pytest.raises(WeightsError, match="does not exist"):
        load_model(tmp_path / "missing.pth")
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(WeightsError, match="is empty"):
        load_model(empty)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(weights_v2.read_bytes()[:100_000])
    with pytest.raises(WeightsError, match=r"truncated\.pth.*(truncated|corrupt)"):
        load_model(truncated)
    text = tmp_path / "notes.pth"
    text.write_text("this is not a checkpoint\n" * 100)
    with pytest.raises(WeightsError, match=r"notes\.pth"):
        load_model(text)
    other = tmp_path / "other.pth"
    torch.save({"body.0.weight": torch.zeros(64, 3, 3, 3), "body.0.bias": torch.zeros(64)}, other)
    with pytest.raises(WeightsError, match=r"not an AnimeSR checkpoint.*body\.0\.bias"):
        load_model(other)
    partial = tmp_path / "partial.pth"
    state = torch.load(weights_v2, weights_only=True)
    del state["recurrent_cell.fusion.0.bias"]
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, partial)
    with pytest.raises(WeightsError, match=r"missing keys \[recurrent_cell\.fusion\.0\.bias\].*unexpected keys \[ex"):
        load_model(partial)
    ext = tmp_path / "weights.onnx"
    ext.write_bytes(b"x" * 10)
    with pytest.raises(WeightsError, match=r"unknown extension '\.onnx'"):
        load_model(ext)
    assert zipfile.is_zipfile(weights_v2)  # the published files are torch zip checkpoints


def test_wrapped_prefixed_and_safetensors_checkpoints_load(tmp_path: Path, weights_v2: Path) -> None:
    from safetensors.torch import save_file

    state = torch.load(weights_v2, weights_only=True)
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"params_ema": {"module." + k: v for k, v in state.items()}, "iter": 5}, wrapped)
    st = tmp_path / "w.safetensors"
    save_file(state, st)
    ref = load_model(weights_v2).state_dict()
    for path in (wrapped, st):
        got = load_model(path).state_dict()
        assert all(torch.equal(got[k], ref[k]) for k in ref)


def test_architecture_round_trip() -> None:
    net = AnimeSRNet(num_feat=16, num_blocks=(3, 2, 1))
    again = load_model(net.state_dict())
    assert (again.num_feat, again.recurrent_cell.num_blocks) == (16, (3, 2, 1))
    x = torch.rand(1, 9, 8, 8)
    o, s = net.init_state(x)
    with torch.inference_mode():
        assert torch.equal(net(x, o, s)[0], again(x, o, s)[0])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_fp32_and_fp16_match_cpu(conformance: dict) -> None:
    lr = conformance["lr"].transpose(0, 2, 3, 1)
    ref = conformance["sr_AnimeSR_v2"].transpose(0, 2, 3, 1)
    out32 = AnimeSR(device="cuda", reset_interval=0, scene_threshold=0).upscale(lr)
    assert np.abs(out32 - ref).max() < 1e-3
    out16 = AnimeSR(device="cuda", fp16=True, reset_interval=0, scene_threshold=0).upscale(lr)
    assert psnr(np.clip(out16, 0, 1), np.clip(ref, 0, 1)) > 40

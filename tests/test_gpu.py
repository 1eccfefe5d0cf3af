"""The CUDA paths end to end: engine, native filter (RGBS and RGBH), vspipe, the CLI, training and torchrun/NCCL.

Skipped where torch sees no CUDA device (CI has none): run them on a GPU machine with ``pytest -m gpu``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import clip_from, make_frame, planes, smooth_frames

from animesr_tools.metrics import psnr
from vsanimesr.engine import AnimeSR

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

REPO = Path(__file__).resolve().parents[1]
NOCUT = dict(reset_interval=0, scene_threshold=0)


def _frames(n: int = 8, h: int = 32, w: int = 48, seed: int = 0) -> np.ndarray:
    """(n, h, w, 3) float32: a moving pattern with a little noise, no scene cut."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = [
        np.stack([0.5 + 0.4 * np.sin(xx / (3 + c) + 0.3 * t) * np.cos(yy / (4 + c) - 0.3 * t) for c in range(3)], -1)
        + 0.02 * rng.standard_normal((h, w, 3))
        for t in range(n)
    ]
    return np.clip(np.stack(out), 0, 1).astype(np.float32)


def test_engine_cuda_matches_cpu_for_both_models_and_precisions(conformance: dict) -> None:
    lr = np.ascontiguousarray(conformance["lr"].transpose(0, 2, 3, 1))
    for model in ("v1", "v2"):
        cpu = AnimeSR(model=model, device="cpu", **NOCUT).upscale(lr)
        gpu = AnimeSR(model=model, device="cuda", **NOCUT).upscale(lr)
        assert np.abs(gpu - cpu).max() < 1e-3, model
        fp16 = AnimeSR(model=model, device="cuda", fp16=True, **NOCUT).upscale(lr)
        bf16 = AnimeSR(model=model, device="cuda", bf16=True, **NOCUT).upscale(lr)
        assert fp16.dtype == bf16.dtype == np.float32
        assert psnr(np.clip(fp16, 0, 1), np.clip(cpu, 0, 1)) > 40, model
        assert psnr(np.clip(bf16, 0, 1), np.clip(cpu, 0, 1)) > 30, model
        tf32 = AnimeSR(model=model, device="cuda", tf32=True, **NOCUT).upscale(lr)
        assert not np.array_equal(tf32, gpu)  # TF32 is opt-in: the default above really was IEEE fp32
        assert psnr(np.clip(tf32, 0, 1), np.clip(cpu, 0, 1)) > 30, model
        assert torch.backends.cudnn.allow_tf32  # the process-wide switch is restored after each step


def test_cuda_uint8_input_odd_size_and_tiling() -> None:
    frames = _frames(5, 30, 46)
    u8 = np.round(frames * 255).astype(np.uint8)
    sr = AnimeSR(device="cuda", **NOCUT)
    a, b = sr.upscale(u8), sr.upscale(u8.astype(np.float32) / 255)
    assert a.shape == (5, 120, 184, 3)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)  # torch divides by 255 as a multiply on the GPU: 1 ulp
    tiled = AnimeSR(device="cuda", tile=16, tile_overlap=8, **NOCUT).upscale(u8)
    assert psnr(np.clip(tiled, 0, 1), np.clip(a, 0, 1)) > 45


def test_cuda_random_access_is_bitwise_equal_to_sequential() -> None:
    """The engine's determinism promise on the GPU: any frame order gives the frames of one sequential pass."""
    frames = _frames(12)
    ref = AnimeSR(device="cuda", reset_interval=4, warmup=2).upscale(frames)
    sr = AnimeSR(device="cuda", reset_interval=4, warmup=2)
    order = list(range(12))
    random.Random(1).shuffle(order)
    for n in order:
        np.testing.assert_array_equal(sr.frame(n, frames.__getitem__, len(frames)), ref[n], err_msg=f"frame {n}")


# ------------------------------------------------------------------------------------------ VapourSynth filter


@pytest.fixture(scope="module")
def cuda_reference() -> dict[str, np.ndarray]:
    """Planar (N, 3, H, W) test frames of test_vs_plugin and the CUDA engine's output for them."""
    lr = smooth_frames()
    sr = AnimeSR(device="cuda", reset_interval=4, warmup=2).upscale(lr.transpose(0, 2, 3, 1))
    return {"lr": lr, "sr": sr.transpose(0, 3, 1, 2)}


def test_filter_on_cuda_any_order_equals_engine(core, cuda_reference) -> None:  # noqa: ANN001
    vs = pytest.importorskip("vapoursynth")
    core.num_threads = 4
    lr, ref = cuda_reference["lr"], cuda_reference["sr"]
    up = core.animesr.Upscale(clip_from(core, lr, vs.RGBS), device="cuda", reset_interval=4, warmup=2)
    order = list(range(len(lr)))
    random.Random(5).shuffle(order)
    for n in order:
        np.testing.assert_array_equal(planes(up.get_frame(n)), ref[n], err_msg=f"frame {n}")


def test_filter_rgbh_computes_in_fp16_on_cuda(core, cuda_reference) -> None:  # noqa: ANN001
    vs = pytest.importorskip("vapoursynth")
    lr, ref = cuda_reference["lr"], cuda_reference["sr"]
    up = core.animesr.Upscale(clip_from(core, lr, vs.RGBH), device="cuda", reset_interval=4, warmup=2)
    assert up.format.id == vs.RGBH
    out = np.stack([planes(up.get_frame(n)).astype(np.float32) for n in range(len(lr))])
    assert psnr(np.clip(out, 0, 1), np.clip(ref, 0, 1)) > 38
    both = core.animesr.Upscale(clip_from(core, lr, vs.RGBS), device="cuda", fp16=1, reset_interval=4, warmup=2)
    out16 = np.stack([planes(both.get_frame(n)) for n in range(len(lr))])
    assert psnr(np.clip(out16, 0, 1), np.clip(ref, 0, 1)) > 40


def test_vspipe_on_cuda(core, cuda_reference, tmp_path: Path) -> None:  # noqa: ANN001
    """A real vspipe process renders on the GPU: frames equal the in-process engine's (same device, same kernels)."""
    vspipe = Path(sys.executable).with_name("vspipe")
    if not vspipe.exists():
        vspipe = Path(shutil.which("vspipe") or "vspipe")
    np.save(tmp_path / "lr.npy", cuda_reference["lr"])
    script = tmp_path / "gpu.vpy"
    script.write_text(
        "import sys\nimport numpy as np\nimport vapoursynth as vs\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\nfrom conftest import clip_from\n"
        f"core = vs.core\ncore.num_threads = 4\ndata = np.load({str(tmp_path / 'lr.npy')!r})\n"
        "core.animesr.Upscale(clip_from(core, data), device='cuda', reset_interval=4, warmup=2).set_output()\n"
    )
    out = tmp_path / "out.raw"
    proc = subprocess.run([str(vspipe), str(script), str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ref = cuda_reference["sr"]
    got = np.fromfile(out, dtype=np.float32).reshape(ref.shape)[:, [2, 0, 1]]  # vspipe writes planes G, B, R
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------------------------------- the CLI


def test_cli_on_cuda_fp16(tmp_path: Path) -> None:
    av = pytest.importorskip("av")
    src, dst = tmp_path / "in.mp4", tmp_path / "out.mp4"
    with av.open(str(src), "w") as out:
        s = out.add_stream("libx264", rate=24)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for i, img in enumerate(_frames(12, 48, 64)):
            vf = av.VideoFrame.from_ndarray((img * 255).astype(np.uint8), format="rgb24")
            vf.pts = i
            out.mux(s.encode(vf))
        out.mux(s.encode(None))
    r = subprocess.run([sys.executable, "-m", "vsanimesr.cli", "upscale", str(src), str(dst), "--device", "cuda",
                        "--fp16", "-q"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    with av.open(str(dst)) as c:
        st = c.streams.video[0]
        frames = list(c.decode(st))
    assert (len(frames), frames[0].width, frames[0].height) == (12, 256, 192)


# --------------------------------------------------------------------------------------------------- training


def _train(cmd: list[str], out_dir: Path) -> list[dict]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    sets = ["data.gt_size=32", "data.clip_len=3", "data.num_clips=6", "disc.num_scales=1", "disc.num_feat=8",
            "train.iters=3", "log.log_every=1", "log.val_every=100", "log.save_every=100", "data.batch_size=2",
            "run.device=cuda", f"run.out_dir={out_dir}"]
    r = subprocess.run([*cmd, "-m", "training.train", str(REPO / "examples/configs/train_tiny_vsr_gan.yml"),
                        *[a for s in sets for a in ("--set", s)]],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return [json.loads(line) for line in (out_dir / "log.jsonl").read_text().splitlines()]


def test_gan_stage_on_cuda_single_process_and_torchrun_nccl(tmp_path: Path) -> None:
    """The GAN stage trains on the GPU; torchrun with one NCCL process logs the same losses as a plain run."""
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip(f"{torchrun} is absent")
    one = _train([sys.executable], tmp_path / "one")
    ddp = _train([str(torchrun), "--standalone", "--nproc_per_node=1"], tmp_path / "ddp")
    assert [r["iter"] for r in one] == [r["iter"] for r in ddp]
    for ra, rb in zip(one, ddp, strict=True):
        for k, v in ra.items():
            if isinstance(v, float) and k != "lr_g":
                assert np.isfinite(v) and abs(v - rb[k]) <= 1e-3 * max(1.0, abs(v)), (k, v, rb[k])


# ------------------------------------------------------------------------ output formats and copies on the device


def test_device_formats_match_the_cpu_for_every_format() -> None:
    """The conversion is the same arithmetic on the GPU: integers within 1 LSB (FMA contraction may move a tie),
    all but a few in a thousand identical; half and float to rounding."""
    from vsanimesr.formats import FORMATS, Converter, OutputSpec

    h, w = 92, 124
    data = torch.from_numpy(make_frame(h, w))
    for name, fmt in FORMATS.items():
        for size in ((h, w), (70, 94)):  # plain, and with the outscale resize on the device
            spec = OutputSpec(fmt)
            cpu = Converter(spec, size, src_size=(h, w))(data)
            gpu = Converter(spec, size, src_size=(h, w), device="cuda")(data.cuda())
            for i, (c, g) in enumerate(zip(cpu, gpu, strict=True)):
                assert g.device.type == "cuda" and g.dtype == fmt.dtype, name
                diff = (c.double() - g.cpu().double()).abs()
                tol = 1.0 if not fmt.is_float else (2.0**-10 if fmt.bits == 16 else 1e-5)
                assert float(diff.max()) <= tol, (name, size, i)
                if not fmt.is_float:
                    assert float((diff == 0).double().mean()) > 0.999, (name, size, i)


def test_pinned_writer_overlaps_copies_without_per_frame_allocation(core) -> None:  # noqa: ANN001
    """start(n + 1) is queued before finish(n), into strided VapourSynth planes: every frame arrives intact, through
    two pinned slots that are reused (no allocation per frame)."""
    vs = pytest.importorskip("vapoursynth")
    from vsanimesr.formats import FORMATS, OutputSpec
    from vsanimesr.staging import PlaneWriter

    h, w = 92, 124
    for name in ("YUV420P10", "RGB24", "GRAY16", "RGBH"):
        spec = OutputSpec(FORMATS[name])
        frames = [torch.from_numpy(make_frame(h, w, seed=i)) for i in range(7)]
        cpu = PlaneWriter(spec, (h, w))
        gpu = PlaneWriter(spec, (h, w), device="cuda")
        assert gpu.staging is not None
        vs_fmt = getattr(vs, name)
        outs = [core.std.BlankClip(width=w, height=h, format=vs_fmt).get_frame(0).copy() for _ in frames]
        dsts = [[np.asarray(f[p]) for p in range(f.format.num_planes)] for f in outs]
        pending = None
        for f, dst in zip(frames, dsts, strict=True):
            # Delay the conversion on the compute stream: a copy that did not wait for it would read stale planes.
            torch.cuda._sleep(2_000_000)
            ticket = gpu.start(f.cuda())
            if pending is not None:
                gpu.finish(*pending)
            pending = (ticket, dst)
        gpu.finish(*pending)
        assert gpu.staging.slots_allocated == 2, name
        assert all(slot.host_buf.is_pinned() for slot in gpu.staging._free)
        for f, dst in zip(frames, dsts, strict=True):
            expect = [np.empty(s, spec.format.numpy_dtype) for s in cpu.plane_shapes]
            cpu.write(f, expect)
            for d, e in zip(dst, expect, strict=True):
                assert np.abs(d.astype(np.float64) - e).max() <= (1 if not spec.format.is_float else 2.0**-10), name


def test_pinned_copies_beat_the_old_float_copy(capsys) -> None:
    """Prints the copy rates; the encoder-ready path costs less per 2560x1440 frame than the old float32 copy."""
    import time

    from vsanimesr.formats import FORMATS, OutputSpec
    from vsanimesr.staging import PlaneWriter

    h, w = 1440, 2560
    rgb = torch.rand(3, h, w, device="cuda")
    pageable = torch.from_numpy(np.empty((3, h, w), np.float32))
    pinned = torch.empty((3, h, w), dtype=torch.float32, pin_memory=True)
    writer = PlaneWriter(OutputSpec(FORMATS["YUV420P10"]), (h, w), device="cuda")
    dst = [np.empty(s, np.uint16) for s in writer.plane_shapes]

    def best(fn) -> float:  # noqa: ANN001
        fn()
        torch.cuda.synchronize()
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        return min(times)

    old = best(lambda: pageable.copy_(rgb))
    pin = best(lambda: pinned.copy_(rgb, non_blocking=True))
    new = best(lambda: writer.write(rgb, dst))
    nbytes = rgb.numel() * 4
    with capsys.disabled():
        print(f"\nD2H float32 2560x1440: pageable {nbytes / old / 1e9:.1f} GB/s, pinned {nbytes / pin / 1e9:.1f} GB/s;"
              f" YUV420P10 write {new * 1e3:.2f} ms vs old float copy {old * 1e3:.2f} ms")
    assert nbytes / pin > 5e9
    assert new < old


# ------------------------------------------------------------------------------------------------ TensorRT


def _trt_or_skip() -> None:
    from vsanimesr.backends.tensorrt import missing_packages

    if missing_packages():
        pytest.skip("needs tensorrt: pip install 'vapoursynth-animesr[trt]'")


def _chain(step, frames: torch.Tensor, dtype: torch.dtype) -> list[torch.Tensor]:  # noqa: ANN001
    """Run ``step`` over (T, 3, H, W) frames from a zero state, as the engine does (edge frames repeat)."""
    t, _, h, w = frames.shape
    prev = torch.zeros(1, 3, 4 * h, 4 * w, device=frames.device, dtype=dtype)
    state = torch.zeros(1, 64, h, w, device=frames.device, dtype=dtype)
    outs = []
    with torch.inference_mode():
        for i in range(t):
            f9 = torch.cat([frames[max(i - 1, 0)], frames[i], frames[min(i + 1, t - 1)]])[None].to(dtype)
            prev, state = step(f9, prev, state)
            outs.append(prev.float().clone())
    return outs


def test_tensorrt_matches_torch_within_the_precision_bounds(weights_v2, tmp_path: Path) -> None:
    """fp32 engines are IEEE fp32 (TF32 off) like the torch backend; fp16 stays within the torch fp16 bound."""
    _trt_or_skip()
    from vsanimesr.backends.tensorrt import TensorRTStep
    from vsanimesr.engine import _cudnn_tf32
    from vsanimesr.loader import load_model

    frames = torch.from_numpy(_frames(6, 32, 48)).permute(0, 3, 1, 2).cuda()
    net = load_model(weights_v2).cuda().eval()
    with _cudnn_tf32(False):
        ref = _chain(net, frames, torch.float32)
    fp32 = TensorRTStep(weights_v2, precision="fp32", cache=tmp_path)
    got = _chain(fp32, frames, torch.float32)
    assert fp32.builds == 1
    for r, g in zip(ref, got, strict=True):
        assert float((r - g).abs().max()) < 1e-3
    fp16 = TensorRTStep(weights_v2, precision="fp16", cache=tmp_path)
    got16 = _chain(fp16, frames, torch.float16)
    ref16 = _chain(net.half(), frames, torch.float16)
    for r, g, r16 in zip(ref, got16, ref16, strict=True):
        rr, gg = r.clamp(0, 1).cpu().numpy(), g.clamp(0, 1).cpu().numpy()
        assert psnr(gg, rr) > 40  # the torch fp16 backend's bound against fp32 (test_engine_cuda_matches_cpu...)
        assert psnr(gg, r16.clamp(0, 1).cpu().numpy()) > 40
    assert got16[0].dtype == torch.float32  # (the chain helper casts; the engine's own I/O is float16)


def test_tensorrt_cache_reuse_and_invalidation(weights_v2, tmp_path: Path, caplog) -> None:  # noqa: ANN001
    import logging

    _trt_or_skip()
    from vsanimesr.backends.tensorrt import TensorRTStep
    from vsanimesr.loader import load_model

    caplog.set_level(logging.INFO, logger="vsanimesr")
    frames = torch.from_numpy(_frames(3, 32, 48)).permute(0, 3, 1, 2).cuda()

    def building() -> int:
        return sum("building the" in r.getMessage() for r in caplog.records if r.levelno == logging.INFO)

    a = TensorRTStep(weights_v2, precision="fp32", cache=tmp_path)
    out_a = _chain(a, frames, torch.float32)
    assert a.builds == 1 and building() == 1  # logged once, at INFO
    (engine,) = tmp_path.glob("*.engine")
    stamp = engine.stat().st_mtime_ns
    _chain(a, frames, torch.float32)
    assert a.builds == 1 and building() == 1  # in-process reuse

    b = TensorRTStep(weights_v2, precision="fp32", cache=tmp_path)  # a new instance (a new process, say)
    out_b = _chain(b, frames, torch.float32)
    assert b.builds == 0 and building() == 1 and engine.stat().st_mtime_ns == stamp
    for x, y in zip(out_a, out_b, strict=True):
        assert float((x - y).abs().max()) < 1e-5

    # Invalidation: another size, another precision, another weight file each build their own engine.
    _chain(b, torch.from_numpy(_frames(2, 24, 40)).permute(0, 3, 1, 2).cuda(), torch.float32)
    assert b.builds == 1
    c = TensorRTStep(weights_v2, precision="fp16", cache=tmp_path)
    _chain(c, frames, torch.float16)
    assert c.builds == 1
    sd = load_model(weights_v2).state_dict()
    first = next(iter(sd))
    sd[first] = sd[first] + 0.01
    other = tmp_path / "v2_modified.pth"
    torch.save(sd, other)
    d = TensorRTStep(other, precision="fp32", cache=tmp_path)
    out_d = _chain(d, frames, torch.float32)
    assert d.builds == 1 and float((out_d[-1] - out_a[-1]).abs().max()) > 1e-3
    assert len(list(tmp_path.glob("*.engine"))) == 4

    # A damaged file is rebuilt, with a warning.
    engine.write_bytes(b"not an engine")
    e = TensorRTStep(weights_v2, precision="fp32", cache=tmp_path)
    out_e = _chain(e, frames, torch.float32)
    assert e.builds == 1 and any("unusable" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    for x, y in zip(out_a, out_e, strict=True):
        assert float((x - y).abs().max()) < 1e-3


def test_filter_yuv420p10_on_cuda_any_order_and_vspipe(core, cuda_reference, tmp_path: Path) -> None:  # noqa: ANN001
    """The whole encoder path on the GPU: converted on the device, pinned copies, shuffled requests and vspipe -r 8
    bitwise equal to a sequential pass, and within 1 LSB of the CPU conversion of the CUDA engine's RGBS output."""
    vs = pytest.importorskip("vapoursynth")
    from vsanimesr.formats import Converter, OutputSpec, PixelFormat

    core.num_threads = 4
    lr, ref = cuda_reference["lr"], cuda_reference["sr"]
    kw = dict(device="cuda", reset_interval=4, warmup=2, format=vs.YUV420P10)
    seq_clip = core.animesr.Upscale(clip_from(core, lr, vs.RGBS), **kw)
    seq = [[np.array(f[p]) for p in range(3)] for f in (seq_clip.get_frame(n) for n in range(len(lr)))]
    up = core.animesr.Upscale(clip_from(core, lr, vs.RGBS), **kw)
    order = list(range(len(lr)))
    random.Random(11).shuffle(order)
    spec = OutputSpec(PixelFormat.parse("YUV420P10"))
    conv = Converter(spec, ref.shape[-2:])
    for n in order:
        got = [np.array(up.get_frame(n)[p]) for p in range(3)]
        for g, s, c in zip(got, seq[n], conv(torch.from_numpy(ref[n])), strict=True):
            np.testing.assert_array_equal(g, s, err_msg=f"frame {n}")
            assert np.abs(g.astype(int) - c.numpy().astype(int)).max() <= 1
    vspipe = Path(sys.executable).with_name("vspipe")
    if not vspipe.exists():
        vspipe = Path(shutil.which("vspipe") or "vspipe")
    np.save(tmp_path / "lr.npy", lr)
    script = tmp_path / "yuv.vpy"
    script.write_text(
        "import sys\nimport numpy as np\nimport vapoursynth as vs\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\nfrom conftest import clip_from\n"
        f"core = vs.core\ncore.num_threads = 4\ndata = np.load({str(tmp_path / 'lr.npy')!r})\n"
        "core.animesr.Upscale(clip_from(core, data), device='cuda', reset_interval=4, warmup=2,"
        " format=vs.YUV420P10).set_output()\n"
    )
    raw = tmp_path / "out.yuv"
    proc = subprocess.run([str(vspipe), "-r", "8", str(script), str(raw)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    flat = np.fromfile(raw, dtype="<u2").reshape(len(lr), -1)
    for n in range(len(lr)):
        np.testing.assert_array_equal(flat[n], np.concatenate([p.ravel() for p in seq[n]]), err_msg=f"frame {n}")


@pytest.mark.parametrize("fmt", ["RGBS", "YUV420P10"])
def test_pure_python_filter_on_cuda_equals_the_native_one(core, cuda_reference, fmt) -> None:  # noqa: ANN001
    """The pure-Python filter (std.ModifyFrame) on CUDA: the native filter's frames bit for bit, in shuffled order,
    with the device-side output conversion (the pinned copies then run without overlap: ModifyFrame serialises)."""
    vs = pytest.importorskip("vapoursynth")
    from vsanimesr.vs import upscale_rgb

    core.num_threads = 4
    lr = cuda_reference["lr"]
    kw = dict(device="cuda", reset_interval=4, warmup=2, format=getattr(vs, fmt))
    native = upscale_rgb(clip_from(core, lr, vs.RGBS), implementation="native", **kw)
    python = upscale_rgb(clip_from(core, lr, vs.RGBS), implementation="python", **kw)
    order = list(range(len(lr)))
    random.Random(13).shuffle(order)
    for n in order:
        a, b = python.get_frame(n), native.get_frame(n)
        for p in range(a.format.num_planes):
            np.testing.assert_array_equal(np.array(a[p]), np.array(b[p]), err_msg=f"frame {n} plane {p}")
        assert dict(a.props) == dict(b.props)


def test_engine_and_filter_on_the_tensorrt_backend(core) -> None:  # noqa: ANN001
    """backend="tensorrt" end to end: within the fp16 bound of the torch backend, order-proof in the filter."""
    _trt_or_skip()
    from vsanimesr.options import BACKENDS

    if "tensorrt" not in BACKENDS:
        pytest.fail("backend 'tensorrt' is not wired into Options/make_step (vsanimesr.backends.tensorrt.make_step)")
    vs = pytest.importorskip("vapoursynth")
    frames = _frames(8, 32, 48)
    torch16 = AnimeSR(device="cuda", fp16=True, reset_interval=4, warmup=2).upscale(frames)
    trt = AnimeSR(device="cuda", fp16=True, backend="tensorrt", reset_interval=4, warmup=2)
    out = trt.upscale(frames)
    assert psnr(np.clip(out, 0, 1), np.clip(torch16, 0, 1)) > 40
    order = list(range(len(frames)))
    random.Random(2).shuffle(order)
    for n in order:
        np.testing.assert_array_equal(trt.frame(n, frames.__getitem__, len(frames)), out[n], err_msg=f"frame {n}")
    lr = np.ascontiguousarray(frames.transpose(0, 3, 1, 2))
    kw = dict(device="cuda", fp16=1, backend="tensorrt", reset_interval=4, warmup=2, format=vs.YUV420P10)
    seq_clip = core.animesr.Upscale(clip_from(core, lr), **kw)
    seq = [[np.array(f[p]) for p in range(3)] for f in (seq_clip.get_frame(n) for n in range(len(lr)))]
    up = core.animesr.Upscale(clip_from(core, lr), **kw)
    for n in reversed(range(len(lr))):
        for a, b in zip([np.array(up.get_frame(n)[p]) for p in range(3)], seq[n], strict=True):
            np.testing.assert_array_equal(a, b, err_msg=f"frame {n}")


def test_cuda_graphs_match_eager_and_stay_order_proof(core) -> None:  # noqa: ANN001
    """cuda_graphs=True: the same numbers as the eager step (fp32 and fp16, whole frames and tiles), one capture per
    input size, any request order bitwise equal to a sequential pass, and the filter takes the option."""
    from vsanimesr.backends.graphs import CUDAGraphStep

    vs = pytest.importorskip("vapoursynth")
    frames = _frames(10, 32, 48)
    kw = dict(device="cuda", reset_interval=4, warmup=2)
    for extra in ({}, {"fp16": True}, {"tile": 16, "tile_overlap": 8}):
        eager = AnimeSR(**kw, **extra).upscale(frames)
        sr = AnimeSR(**kw, **extra, cuda_graphs=True)
        assert isinstance(sr._step_fn, CUDAGraphStep)
        graphed = sr.upscale(frames)
        assert psnr(np.clip(graphed, 0, 1), np.clip(eager, 0, 1)) > (60 if extra.get("fp16") else 80), extra
        sizes = {tuple(t[:4]) for t in sr._tiles(32, 48)}
        assert sr._step_fn.captures == len({(y1 - y0, x1 - x0) for y0, y1, x0, x1 in sizes}), extra
        order = list(range(len(frames)))
        random.Random(7).shuffle(order)
        for n in order:
            np.testing.assert_array_equal(sr.frame(n, frames.__getitem__, len(frames)), graphed[n], err_msg=str(n))
    lr = np.ascontiguousarray(frames.transpose(0, 3, 1, 2))
    ref = AnimeSR(**kw, cuda_graphs=True).upscale(frames).transpose(0, 3, 1, 2)
    up = core.animesr.Upscale(clip_from(core, lr, vs.RGBS), cuda_graphs=1, **kw)
    for n in reversed(range(len(lr))):
        np.testing.assert_array_equal(planes(up.get_frame(n)), ref[n], err_msg=f"frame {n}")

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
from conftest import clip_from, planes, smooth_frames

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

"""scripts/evaluate.py and animesr_tools.evaluation: metric plumbing with known answers, tables, plots and crops."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import load_script
from PIL import Image

from animesr_tools.evaluation import (
    Clip,
    bicubic_upscale,
    clip_metrics,
    format_markdown,
    make_upscaler,
    nearest_upscale,
    restart_visibility,
    save_crops,
)

REPO = Path(__file__).resolve().parents[1]


def _clip(t: int = 3, h: int = 24, w: int = 32, *, hr: bool = True, seed: int = 0) -> Clip:
    rng = np.random.default_rng(seed)
    big = rng.integers(60, 190, size=(t, 4 * h, 4 * w, 3), dtype=np.uint8)
    lr = big.reshape(t, h, 4, w, 4, 3).mean(axis=(2, 4)).round().astype(np.uint8)
    return Clip(name="c", lr=lr, hr=big if hr else None)


def test_ground_truth_scores_perfectly() -> None:
    clip = _clip()
    m = clip_metrics(clip, clip.hr / 255.0)  # float64: the same values the metrics compute from uint8
    assert m["psnr_y"] == math.inf and m["ssim_y"] == 1.0 and m["flicker_vs_gt"] == pytest.approx(1.0)
    assert all(p == math.inf for p in m["psnr_y_frames"]) and len(m["psnr_y_frames"]) == 3
    assert math.isnan(m["niqe"])  # 96x128 outputs are too small for NIQE's 96-px patches


def test_known_offset_gives_known_psnr_on_y() -> None:
    # +c on R, G and B moves studio-swing Y by c * 219/255 everywhere, so PSNR = -20 log10(c * 219/255).
    clip, c = _clip(), 0.01
    m = clip_metrics(clip, clip.hr / 255.0 + c, crop_border=0)
    assert m["psnr_y"] == pytest.approx(-20 * math.log10(c * 219 / 255), abs=1e-3)
    assert m["ssim_y"] < 1.0


def test_nearest_upscale_has_the_inputs_flicker() -> None:
    clip = _clip(hr=False)
    m = clip_metrics(clip, nearest_upscale(clip.lr))
    assert m["flicker_ratio"] == pytest.approx(1.0, rel=1e-5)
    assert math.isnan(m["psnr_y"]) and m["psnr_y_frames"] == []


def test_bicubic_keeps_a_flat_clip_flat() -> None:
    lr = np.full((2, 6, 8, 3), 77, np.uint8)
    out = bicubic_upscale(lr)
    assert out.shape == (2, 24, 32, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, 77 / 255, atol=1e-6)


def test_clip_and_metrics_reject_bad_shapes() -> None:
    lr = np.zeros((2, 6, 8, 3), np.uint8)
    with pytest.raises(ValueError, match=r"Clip: hr must be"):
        Clip(name="x", lr=lr, hr=np.zeros((2, 12, 16, 3), np.uint8))
    with pytest.raises(ValueError, match=r"clip_metrics: output must be"):
        clip_metrics(Clip(name="x", lr=lr), np.zeros((2, 12, 16, 3), np.float32))


def test_make_upscaler_rejects_unknown_model() -> None:
    with pytest.raises(ValueError, match="AnimeSR: model=.no/such/file.pth.: must be"):
        make_upscaler("no/such/file.pth")


def test_restart_visibility_counts_steps_and_boundaries(weights_v2: Path) -> None:
    lr = _clip(t=5, h=12, w=16, hr=False).lr
    rv = restart_visibility(lr, model=str(weights_v2), interval=2, warmup=1)
    assert rv.boundaries == (2, 4)
    assert rv.per_frame[0] == rv.per_frame[1] == math.inf  # before the first restart: the same chain
    assert all(math.isfinite(p) and p > 10 for p in rv.psnr_at)
    assert rv.steps_per_frame == pytest.approx(7 / 5)  # 5 frames + 1 warm-up step per restart
    assert restart_visibility(lr, model=str(weights_v2), interval=2, warmup=0).steps_per_frame == 1.0


def test_save_crops_layout(tmp_path: Path) -> None:
    clip = _clip()
    out = {"bicubic": bicubic_upscale(clip.lr)}
    p = save_crops(clip, out, tmp_path / "c.png", size=16)
    with Image.open(p) as im:
        assert im.size == (3 * 64 + 2 * 4, 64 + 14)  # input, bicubic, ground truth; 16 LR px shown 4x


def test_markdown_leaves_out_empty_columns() -> None:
    md = format_markdown([{"clip": "a", "kind": "real", "model": "m", "frames": 2, "lr_size": "8x6", "niqe": 5.0}])
    assert md.splitlines()[0] == "| clip | kind | model | frames | lr_size | niqe |"
    assert "| 5.000 |" in md


def test_evaluate_script_end_to_end(tmp_path: Path, weights_v2: Path) -> None:
    from training.synthetic import make_synthetic_cartoon_clip, write_clip_folder

    real = write_clip_folder(make_synthetic_cartoon_clip(3, 24, 32, rng=np.random.default_rng(5)), tmp_path / "real")
    out = tmp_path / "out"
    ev = load_script("evaluate")
    rc = ev.main(["--clips", str(real), "--synthetic", "1", "--synthetic-size", "32x24", "--synthetic-frames", "3",
                  "--models", "bicubic,v2", "--reset-interval", "2", "--warmup", "1", "--out", str(out)])  # fmt: skip
    assert rc == 0
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [(r["clip"], r["model"]) for r in rows] == [
        ("real", "bicubic"), ("real", "v2"), ("cartoon0", "bicubic"), ("cartoon0", "v2"), ("cartoon0", "ground truth")
    ]  # fmt: skip
    by = {(r["clip"], r["model"]): r for r in rows}
    assert by[("real", "v2")]["psnr_y"] == "" and by[("real", "v2")]["flicker_ratio"] != ""
    # AnimeSR restores the degraded cartoon better than bicubic does.
    assert float(by[("cartoon0", "v2")]["psnr_y"]) > float(by[("cartoon0", "bicubic")]["psnr_y"])
    assert by[("cartoon0", "v2")]["restart_psnr_mean"] != "" and by[("cartoon0", "bicubic")]["restart_psnr_mean"] == ""
    assert "| cartoon0 | synthetic | v2 |" in (out / "results.md").read_text()
    for name in ("metrics.png", "crops_real.png", "crops_cartoon0.png"):
        with Image.open(out / name) as im:
            assert im.size[0] > 100
    assert len(list(out.glob("frames_*.png"))) == 3  # PSNR vs ground truth; restarts on both clips


def test_realesrgan_peer_keeps_a_flat_frame(tmp_path: Path) -> None:
    """The docs' Real-ESRGAN rows: `make test` installs the optional peer (scripts/bootstrap.sh --test-deps), so in
    CI this must run, not skip."""
    from animesr_tools.peers import PeerUnavailable, load_peer

    try:
        peer = load_peer("realesrgan-animevideov3")
    except PeerUnavailable as e:
        if os.environ.get("CI"):
            pytest.fail(f"{e} (`make test` installs it: scripts/bootstrap.sh --test-deps)")
        pytest.skip(str(e))
    out = peer.upscale(np.full((1, 12, 16, 3), 128, np.uint8))
    assert out.shape == (1, 48, 64, 3)
    assert abs(float(out.mean()) - 128 / 255) < 0.02


def test_hr_clip_folder_becomes_a_synthetic_pair(tmp_path: Path) -> None:
    from training.synthetic import make_synthetic_cartoon_clip, write_clip_folder

    hr = write_clip_folder(make_synthetic_cartoon_clip(3, 100, 130, rng=np.random.default_rng(1)), tmp_path / "hr")
    ev = load_script("evaluate")
    args = ev.build_parser().parse_args(["--hr-clips", str(hr), "--crop", "30x24", "--frames", "1:3"])
    (clip,) = ev.build_clips(args)
    assert clip.kind == "synthetic" and clip.lr.shape == (2, 24, 30, 3) and clip.hr.shape == (2, 96, 120, 3)


def test_read_clip_orders_frames_naturally(tmp_path: Path) -> None:
    for i in (1, 2, 10):
        Image.fromarray(np.full((4, 4, 3), i, np.uint8)).save(tmp_path / f"{i}.png")
    frames = load_script("evaluate").read_clip(tmp_path, (0, None))
    assert frames[:, 0, 0, 0].tolist() == [1, 2, 10]

"""The AVC-style dataset builder (issue 7) on synthetic videos made here with PyAV.

The test video (224x208, 24 fps, 150 frames) has, in order:
    0..49    a static stretch (a still reddish texture),
    50..119  a moving stretch (a bluish texture panning 3 px/frame): known cut at 50,
    120..149 a black stretch: a second cut at 120.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")
cv2 = pytest.importorskip("cv2")

from conftest import load_script, shared_path  # noqa: E402

from training import build_dataset as bd  # noqa: E402
from training import clipselect as cs  # noqa: E402
from training.configio import ConfigError  # noqa: E402
from training.scoring import NiqeScorer, SharpnessScorer, make_scorer  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
W, H, FPS = 224, 208, 24
STATIC, MOVING, BLACK = range(0, 50), range(50, 120), range(120, 150)
CUTS = (50, 120)
CLIP_LEN = 30


def _texture(rng: np.random.Generator, h: int, w: int, tint: tuple[float, float, float]) -> np.ndarray:
    noise = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), 2.5)
    noise = (noise - noise.min()) / (noise.max() - noise.min())
    return np.clip(noise[..., None] * np.array(tint) * 255 + 20, 0, 255).astype(np.uint8)


def _frames() -> np.ndarray:
    rng = np.random.default_rng(7)
    still = _texture(rng, H, W, (1.0, 0.45, 0.3))
    canvas = _texture(rng, H, W + 3 * len(MOVING), (0.3, 0.6, 1.0))
    frames = np.zeros((len(STATIC) + len(MOVING) + len(BLACK), H, W, 3), np.uint8)
    frames[STATIC.start : STATIC.stop] = still
    for i, t in enumerate(MOVING):
        frames[t] = canvas[:, 3 * i : 3 * i + W]
    return frames  # BLACK stays 0


def _write_video(path: Path, frames: np.ndarray) -> None:
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=FPS)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        s.options = {"crf": "12", "preset": "ultrafast"}
        for f in frames:
            for pkt in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)


@pytest.fixture(scope="module")
def video_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("videos")
    _write_video(d / "episode.mp4", _frames())
    (d / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)  # not a decodable video
    (d / "notes.txt").write_text("not a video, ignored")
    return d


@pytest.fixture(scope="module")
def stats(video_dir: Path) -> cs.FrameStats:
    cfg = cs.SelectConfig(clip_len=CLIP_LEN, score_every=5)
    return cs.analyze_video(video_dir / "episode.mp4", cfg, [NiqeScorer(), SharpnessScorer()])


# ------------------------------------------------------------------------------------------ measures
def test_flat_fraction_and_content_distance():
    black = np.zeros((20, 30), np.uint8)
    assert cs.flat_fraction(black) == 1.0
    rng = np.random.default_rng(0)
    noisy_black = (rng.integers(0, 3, (20, 30))).astype(np.uint8)  # 0..2: within tolerance 2 of the mode
    assert cs.flat_fraction(noisy_black, tolerance=2) == 1.0
    assert cs.flat_fraction(rng.integers(0, 256, (20, 30)).astype(np.uint8)) < 0.1
    hsv = rng.integers(0, 180, (8, 8, 3)).astype(np.int16)
    assert cs.content_distance(hsv, hsv) == 0.0
    a, b = np.zeros((4, 4, 3), np.int16), np.zeros((4, 4, 3), np.int16)
    a[..., 0], b[..., 0] = 2, 178  # hue 2 vs 178 is 4 steps apart on the circle, not 176
    assert cs.content_distance(a, b) == pytest.approx(4 * 255 / 90 / 3)


def test_detect_cuts_threshold_and_min_shot_len():
    d = np.zeros(40)
    d[[10, 12, 30]] = 50.0
    assert cs.detect_cuts(d, threshold=30, min_shot_len=5) == [10, 30]
    assert cs.detect_cuts(d, threshold=30, min_shot_len=1) == [10, 12, 30]
    assert cs.detect_cuts(d, threshold=60, min_shot_len=1) == []
    palette = np.zeros(40)
    palette[[12, 30]] = 0.5  # frame 10 changes the picture but not the colours: a new drawing, not a cut
    assert cs.detect_cuts(d, palette, threshold=30, palette_threshold=0.15, min_shot_len=1) == [12, 30]


def test_select_windows_on_handmade_stats():
    n = 60
    motion = np.full(n, 2.0)
    motion[0] = math.nan
    motion[:20] = 0.0  # static
    flat = np.zeros(n)
    flat[45:50] = 1.0  # black frames
    q = np.full(n, math.nan)
    q[::2] = np.linspace(10, 0, n)[::2]  # NIQE-like, lower is better: later frames are better
    stats = cs.FrameStats(
        W,
        H,
        24.0,
        content=np.zeros(n),
        palette=np.zeros(n),
        motion=motion,
        flat=flat,
        quality={"niqe": q},
        higher_is_better={"niqe": False},
    )
    cfg = cs.SelectConfig(clip_len=10, clips_per_video=2, score_every=2)
    got = cs.select_windows(stats, [], cfg)
    assert [(w.start, w.end) for w in got] == [(50, 60), (35, 45)]  # best quality first, no flat, no overlap
    assert all(w.motion == pytest.approx(2.0) for w in got)
    # a cut at 40: the in-shot clip stays, and one clip crossing the cut (3+ frames each side) comes second
    cfg = cs.SelectConfig(clip_len=10, clips_per_video=1, cut_clips=1, min_cut_side=3, score_every=2)
    got = cs.select_windows(stats, [40], cfg)
    assert [(w.start, w.end, w.cuts) for w in got] == [(50, 60, ()), (35, 45, (40,))]
    assert cs.select_windows(stats, [], cs.SelectConfig(clip_len=10, min_motion=5.0, score_every=2)) == []
    with pytest.raises(ConfigError, match="SelectConfig: score_every must be <= clip_len"):
        cs.SelectConfig(clip_len=10, score_every=20)


def test_quality_gate_is_absolute_and_lower_is_better_aware():
    """Ranking is within a video; the gate is not: a video whose every window is poor yields no clip."""
    n = 40
    q = np.full(n, math.nan)
    q[::2] = np.linspace(9.0, 7.0, n)[::2]  # NIQE-like (lower is better): 9 -> 7
    motion = np.r_[math.nan, np.full(n - 1, 2.0)]
    stats = cs.FrameStats(W, H, 24.0, content=np.zeros(n), palette=np.zeros(n), motion=motion, flat=np.zeros(n),
                          quality={"niqe": q}, higher_is_better={"niqe": False})
    base = dict(clip_len=10, score_every=2)
    best = cs.select_windows(stats, [], cs.SelectConfig(**base, quality_gate=()))
    assert len(best) == 1 and best[0].start >= 29  # without a gate the best (latest) window always wins
    assert cs.select_windows(stats, [], cs.SelectConfig(**base, quality_gate=(("niqe", 7.0),))) == []
    gated = cs.select_windows(stats, [], cs.SelectConfig(**base, quality_gate=(("niqe", 8.0),)))
    assert gated and all(w.quality["niqe"] <= 8.0 for w in gated)
    report = cs.gate_report(stats, [], cs.SelectConfig(**base, quality_gate=(("niqe", 7.0),)))
    assert report["eligible"] == 31 and report["rejected"] == 31
    assert report["best"]["niqe"] == pytest.approx(best[0].quality["niqe"])
    # a gate on a scorer that is not in use is ignored (the default gates sharpness, absent here)
    assert cs.select_windows(stats, [], cs.SelectConfig(**base)) == best


def test_make_scorer_plugins():
    assert make_scorer("niqe").name == "niqe" and not make_scorer("niqe").higher_is_better
    assert make_scorer("sharpness").higher_is_better
    with pytest.raises(ValueError, match="make_scorer: spec must be one of"):
        make_scorer("hyperiqa")
    with pytest.raises(ValueError, match="make_scorer: cannot load"):
        make_scorer("no_such_module_xyz:make")
    with pytest.raises(ValueError, match="lacks name"):
        make_scorer("builtins:object")


# ------------------------------------------------------------------------------------------ synthetic video
def test_analysis_finds_cut_static_black_and_motion(stats: cs.FrameStats):
    assert stats.n_frames == 150 and (stats.width, stats.height) == (W, H)
    cuts = cs.detect_cuts(stats.content, stats.palette, threshold=30.0, palette_threshold=0.15, min_shot_len=8)
    assert len(cuts) == len(CUTS) and all(abs(c - k) <= 1 for c, k in zip(cuts, CUTS, strict=True))
    assert np.all(stats.flat[BLACK.start :] >= 0.9) and np.all(stats.flat[: BLACK.start] < 0.9)
    assert np.nanmax(stats.motion[1 : STATIC.stop]) < 0.2
    assert np.median(stats.motion[MOVING.start + 1 : MOVING.stop]) == pytest.approx(3.0, rel=0.2)
    scored = np.isfinite(stats.quality["niqe"])
    assert scored.sum() == 30 and np.all(scored[::5])


def test_cut_clip_crosses_the_known_cut(stats: cs.FrameStats):
    cuts = cs.detect_cuts(stats.content, stats.palette, threshold=30.0, palette_threshold=0.15, min_shot_len=8)
    cfg = cs.SelectConfig(clip_len=CLIP_LEN, clips_per_video=0, cut_clips=1, score_every=5, quality_gate=())
    (crossing,) = cs.select_windows(stats, cuts, cfg)
    assert len(crossing.cuts) == 1 and abs(crossing.cuts[0] - 50) <= 1  # never the cut into the black stretch
    assert crossing.cuts[0] - crossing.start >= 10 and crossing.end - crossing.cuts[0] >= 10


def test_build_dataset_end_to_end_resume_and_corrupt(video_dir: Path, tmp_path: Path, caplog):
    script = load_script("build_dataset")  # the checkout's script: a thin wrapper around training.build_dataset
    out = tmp_path / "clips"
    argv = [
        "--quality-gate",
        "sharpness=0.0001",  # the test textures are soft (sharpness 0.00027): see the next test for the default
        "--videos",
        str(video_dir),
        "--out",
        str(out),
        "--clip-len",
        str(CLIP_LEN),
        "--score-every",
        "5",
        "--no-progress",
    ]
    assert script.main(argv) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    entries = {Path(k).name: v for k, v in manifest["videos"].items()}
    assert set(entries) == {"episode.mp4", "broken.mp4"}
    assert entries["broken.mp4"]["status"] == "failed" and entries["broken.mp4"]["error"]
    ep = entries["episode.mp4"]
    assert ep["status"] == "done" and ep["frames"] == 150
    assert all(abs(c - k) <= 1 for c, k in zip(ep["cuts"], CUTS, strict=True))
    (clip,) = ep["clips"]
    assert MOVING.start <= clip["start"] and clip["end"] <= MOVING.stop and clip["end"] - clip["start"] == CLIP_LEN
    assert set(clip["quality"]) == {"niqe", "sharpness"}
    assert ep["quality_gate"]["rejected"] == 0 and manifest["config"]["select"]["quality_gate"] == {"sharpness": 1e-4}

    folder = out / clip["folder"]
    pngs = sorted(p.name for p in folder.iterdir())
    assert pngs == [f"{i:08d}.png" for i in range(CLIP_LEN)]
    # lossless: the PNG is the decoded frame, bit for bit
    with av.open(str(video_dir / "episode.mp4")) as c:
        decoded = [
            f.to_ndarray(format="rgb24") for _, f in zip(range(clip["start"] + 1), c.decode(video=0), strict=False)
        ][-1]
    png = cv2.cvtColor(cv2.imread(str(folder / "00000000.png")), cv2.COLOR_BGR2RGB)
    assert np.array_equal(png, decoded)

    rows = list(csv.DictReader((out / "clips.csv").open()))
    assert len(rows) == 1 and rows[0]["folder"] == clip["folder"] and int(rows[0]["frames"]) == CLIP_LEN

    # re-run: the finished video is skipped (its folder untouched), the broken one is tried again and still fails
    mtime = folder.stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="build_dataset"):
        assert bd.main(argv) == 0
    assert "episode.mp4: already done, skipped" in caplog.text
    assert folder.stat().st_mtime_ns == mtime
    again = json.loads((out / "manifest.json").read_text())
    assert {Path(k).name: v["status"] for k, v in again["videos"].items()} == {
        "episode.mp4": "done",
        "broken.mp4": "failed",
    }
    assert not list(out.glob("*.partial"))


def test_demo_clip_cut_and_static_first_shot():
    """The real demo clip: one cut at frame 100; its first shot is nearly still, so clips come from the second."""
    video = shared_path("data/onepiece_demo.mp4")
    cfg = cs.SelectConfig(clip_len=50, clips_per_video=2, score_every=10)
    stats = cs.analyze_video(video, cfg, [])
    cuts = cs.detect_cuts(stats.content, stats.palette, threshold=30.0, palette_threshold=0.15, min_shot_len=8)
    assert cuts == [100]
    assert [(w.start >= 100, w.end - w.start) for w in cs.select_windows(stats, cuts, cfg)] == [(True, 50)]


def test_default_quality_gate_rejects_a_soft_video_and_says_so(video_dir: Path, tmp_path: Path, capsys):
    out = tmp_path / "clips"
    argv = ["--videos", str(video_dir / "episode.mp4"), "--out", str(out), "--clip-len", str(CLIP_LEN),
            "--score-every", "5", "--no-progress", "--scorer", "sharpness"]
    assert bd.main(argv) == 0
    (ep,) = json.loads((out / "manifest.json").read_text())["videos"].values()
    assert ep["status"] == "no_clips" and ep["clips"] == []
    gate = ep["quality_gate"]
    assert gate["eligible"] > 0 and gate["rejected"] == gate["eligible"] and gate["best"]["sharpness"] < 0.001
    assert "fail the quality gate" in ep["reason"]
    assert "1 below the quality gate" in capsys.readouterr().out
    assert bd.main([*argv, "--force", "--no-quality-gate"]) == 0
    (ep,) = json.loads((out / "manifest.json").read_text())["videos"].values()
    assert ep["status"] == "done" and len(ep["clips"]) == 1
    assert bd.main([*argv, "--quality-gate", "niqe=5"]) == 2  # a gate on a scorer that is not in use
    assert "not in use" in capsys.readouterr().err


def test_yaml_config_defaults_flags_win_and_unknown_keys(tmp_path: Path, capsys):
    cfg_file = tmp_path / "select.yaml"
    cfg_file.write_text("clip_len: 40\nmin_motion: 1\nscorers: [sharpness]\nscorer_weights: {sharpness: 2}\n"
                        "quality_gate: {sharpness: 0.002}\n")
    args = bd.parse_args(["--config", str(cfg_file), "--videos", "x", "--out", "y", "--clip-len", "20"])
    cfg = bd.config_from_args(args)
    assert (cfg.clip_len, cfg.min_motion, cfg.weight_of("sharpness")) == (20, 1.0, 2.0)
    assert cfg.scorers == ("sharpness",) and cfg.quality_gate == (("sharpness", 0.002),)
    cfg_file.write_text("clip_len: 40\nclip_length: 3\n")
    assert bd.main(["--config", str(cfg_file), "--videos", "x", "--out", "y"]) == 2
    assert "select.yaml: unknown key 'clip_length'" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="key 'clip_len' must be an integer"):
        cs.SelectConfig.from_mapping({"clip_len": 2.5})

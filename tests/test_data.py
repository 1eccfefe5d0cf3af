"""ClipDataset sampling rules, determinism across workers/ranks, video input, and the synthetic cartoon clips."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from training.data import ClipDataset, find_clips
from training.degradations import DegradationConfig
from training.synthetic import make_synthetic_cartoon_clip, write_clip_folder

CFG = DegradationConfig.from_dict({"blur": {"kernel_size": 7}})


def _write_video(path: Path, frames: np.ndarray, *, gop: int = 12) -> Path:
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=Fraction(25, 1))
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        s.codec_context.gop_size = gop
        s.options = {"crf": "10"}
        for f in frames:
            for pkt in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode(None):
            c.mux(pkt)
    return path


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    r = tmp_path_factory.mktemp("clips")
    for i in range(2):
        write_clip_folder(make_synthetic_cartoon_clip(12, 40, 48, rng=np.random.default_rng(i)), r / f"clip{i}")
    # A clip whose frame t is the constant value 10*t: the sampled window can be read back from the pixels.
    ramp = np.repeat(np.arange(0, 200, 10, dtype=np.uint8)[:, None, None, None], 3, axis=3)
    write_clip_folder(np.broadcast_to(ramp, (20, 36, 36, 3)).copy(), r / "ramp" / "ramp")
    _write_video(r / "vid.mp4", make_synthetic_cartoon_clip(10, 32, 32, rng=np.random.default_rng(9)))
    return r


def test_find_clips_reads_folders_and_videos(root):
    clips = {c.key: c for c in find_clips(root)}
    assert set(clips) == {"clip0", "clip1", "vid"}
    assert clips["clip0"].num_frames == 12 and clips["vid"].num_frames == 10
    assert clips["vid"].read([3, 1]).shape == (2, 32, 32, 3)
    assert [c.key for c in find_clips(root / "ramp" / "ramp")] == ["ramp"]
    with pytest.raises(FileNotFoundError, match="find_clips"):
        find_clips(root / "nope")


def test_items_have_the_documented_shapes_and_fields(root):
    ds = ClipDataset(root, clip_len=5, gt_size=32, degradation=CFG, repeat=2)
    assert len(ds) == 6
    item = ds[0]
    assert item["gt"].shape == (5, 3, 32, 32) and item["lq"].shape == (5, 3, 8, 8)
    assert item["gt"].dtype == item["lq"].dtype == torch.float32
    assert 0 <= float(item["gt"].min()) and float(item["gt"].max()) <= 1
    assert item["key"].startswith("clip0/")
    assert set(json.loads(item["params"])) == {"blur", "noise", "resize", "codec"}


def test_window_follows_interval_and_reversal(root):
    ds = ClipDataset(root / "ramp" / "ramp", clip_len=5, gt_size=32, intervals=(2, 3), repeat=40)
    steps, reversed_seen = set(), set()
    for i in range(len(ds)):
        vals = (ds[i]["gt"][:, 0, 0, 0] * 255).round().numpy() / 10
        d = np.diff(vals)
        assert len(set(d.tolist())) == 1, vals  # evenly spaced
        steps.add(abs(d[0]))
        reversed_seen.add(bool(d[0] < 0))
        assert ds[i]["key"] == f"ramp/{int(vals[0]):06d}"
    assert steps == {2, 3} and reversed_seen == {True, False}


def test_intervals_that_do_not_fit_are_skipped_and_short_clips_rejected(root):
    ds = ClipDataset(root / "ramp" / "ramp", clip_len=8, gt_size=32, intervals=(1, 3), repeat=10, reverse_prob=0)
    for i in range(len(ds)):
        vals = (ds[i]["gt"][:, 0, 0, 0] * 255).round().numpy() / 10
        assert np.all(np.diff(vals) == 1)  # 7*3+1 = 22 > 20 frames: only interval 1 fits
    with pytest.raises(ValueError, match="shorter than clip_len=30"):
        ClipDataset(root / "ramp" / "ramp", clip_len=30, gt_size=32)
    with pytest.raises(ValueError, match="smaller than gt_size=64"):
        ClipDataset(root / "ramp" / "ramp", clip_len=3, gt_size=64)[0]


def test_crop_and_flips_are_shared_by_all_frames(tmp_path):
    still = make_synthetic_cartoon_clip(1, 40, 40, rng=np.random.default_rng(3))
    write_clip_folder(np.repeat(still, 6, axis=0), tmp_path / "still")
    ds = ClipDataset(tmp_path / "still", clip_len=4, gt_size=24, repeat=8)
    crops = set()
    for i in range(len(ds)):
        gt = ds[i]["gt"]
        assert all(torch.equal(gt[0], gt[t]) for t in range(1, 4))
        crops.add(gt[0].numpy().tobytes())
    assert len(crops) > 1


def test_deterministic_per_seed_index_epoch(root):
    a = ClipDataset(root, clip_len=5, gt_size=32, degradation=CFG, seed=1)
    b = ClipDataset(root, clip_len=5, gt_size=32, degradation=CFG, seed=1)
    c = ClipDataset(root, clip_len=5, gt_size=32, degradation=CFG, seed=2)
    x, y, z = a[1], b[1], c[1]
    assert torch.equal(x["lq"], y["lq"]) and torch.equal(x["gt"], y["gt"]) and x["key"] == y["key"]
    assert not torch.equal(x["lq"], z["lq"])
    b.set_epoch(1)
    assert not torch.equal(b[1]["lq"], x["lq"])
    b.set_epoch(0)
    assert torch.equal(b[1]["lq"], x["lq"])


def test_dataloader_workers_and_distributed_sampler_match_direct_indexing(root):
    # The parent decodes and encodes video before forking: this caught a hang in libswscale's thread pool.
    ds = ClipDataset(root, clip_len=4, gt_size=32, degradation=CFG, repeat=2)
    direct = [ds[i]["lq"] for i in range(len(ds))]
    loader = DataLoader(ds, batch_size=2, num_workers=2, shuffle=False, timeout=60)
    batched = torch.cat([b["lq"] for b in loader])
    assert torch.equal(batched, torch.stack(direct))
    seen = []
    for rank in range(2):
        sampler = DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=0)
        for idx in sampler:
            assert torch.equal(ds[idx]["lq"], direct[idx])
            seen.append(idx)
    assert sorted(seen) == list(range(len(ds)))


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_video_frames_are_found_by_seeking(tmp_path, suffix):
    ramp = np.repeat(np.arange(0, 240, 8, dtype=np.uint8)[:, None, None, None], 3, axis=3)  # frame t = 8*t
    path = _write_video(tmp_path / f"ramp{suffix}", np.broadcast_to(ramp, (30, 16, 16, 3)).copy(), gop=4)
    (clip,) = find_clips(path)
    assert clip.num_frames == 30 and len(clip.keyframes) >= 7  # indexed: reads start at a keyframe
    idx = [27, 21, 24, 9]
    got = clip.read(idx)[:, 8, 8, 0].astype(int)
    assert np.all(np.abs(got - 8 * np.array(idx)) <= 2), got
    with pytest.raises(IndexError, match="ClipSource.read"):
        clip.read([30])


def test_video_clip_items(root):
    ds = ClipDataset(root / "vid.mp4", clip_len=4, gt_size=32, intervals=(1, 2, 3), augment=False, reverse_prob=0)
    item = ds[0]
    assert item["gt"].shape == (4, 3, 32, 32) and "lq" not in item and isinstance(item["seed"], int)
    assert item["key"].startswith("vid/")


def test_synthetic_cartoon_clip_is_deterministic_and_cartoon_like():
    a = make_synthetic_cartoon_clip(4, 48, 64, rng=np.random.default_rng(0))
    b = make_synthetic_cartoon_clip(4, 48, 64, rng=np.random.default_rng(0))
    c = make_synthetic_cartoon_clip(4, 48, 64, rng=np.random.default_rng(1))
    assert a.shape == (4, 48, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert not np.array_equal(a[0], a[3])  # shapes move
    assert int(a[0].min()) < 60  # dark outlines present
    with pytest.raises(ValueError, match="make_synthetic_cartoon_clip: num_frames"):
        make_synthetic_cartoon_clip(0, 48, 64, rng=np.random.default_rng(0))


def test_preview_degradations_writes_a_contact_sheet(root, tmp_path):
    import cv2

    from training.preview_degradations import main

    out = tmp_path / "sheet.png"
    cfg = Path(__file__).resolve().parents[1] / "examples/configs/degradations.yml"
    main(["--config", str(cfg), "--input", str(root / "clip0"), "--out", str(out), "--seed", "3",
          "--draws", "2", "--clip-len", "4", "--gt-size", "32"])
    sheet = cv2.imread(str(out))
    assert sheet is not None and sheet.shape[1] == 3 * 32 + 2 * 4 and sheet.shape[0] > 32

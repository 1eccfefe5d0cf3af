"""Training as separate processes: torchrun (DDP, gloo on CPU) vs one process, and a real SIGKILL + resume."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "training" / "configs"


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def _sets(*items: str) -> list[str]:
    return [a for s in items for a in ("--set", s)]


TINY_GAN = ("data.gt_size=32", "data.clip_len=3", "data.num_clips=6", "disc.num_scales=1", "disc.num_feat=8",
            "train.iters=3", "log.log_every=1", "log.val_every=100", "log.save_every=100")


@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None, reason="no torchrun")
@pytest.mark.slow
def test_torchrun_two_processes_equal_one_process(tmp_path: Path) -> None:
    """GAN stage (G and D both under DDP, EMA), global batch 2: 2 processes x 1 clip with gloo == 1 process x 2 clips,
    to float32 rounding. A global batch the processes cannot share evenly is a one-line config error."""
    cfg = str(CONFIGS / "train_tiny_vsr_gan.yml")
    torchrun = str(Path(sys.executable).parent / "torchrun")
    two = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node=2", "-m", "training.train", cfg,
         *_sets(*TINY_GAN, "data.batch_size=2", f"run.out_dir={tmp_path / 'ddp'}")],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    assert "global batch 2 = 2 process(es) x 1" in two.stderr
    one = subprocess.run(
        [sys.executable, "-m", "training.train", cfg,
         *_sets(*TINY_GAN, "data.batch_size=2", f"run.out_dir={tmp_path / 'single'}")],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    a, b = _log(tmp_path / "single"), _log(tmp_path / "ddp")
    assert [r["iter"] for r in a] == [r["iter"] for r in b] == [0, 1, 2, 3, 3]
    for ra, rb in zip(a, b, strict=True):
        assert ra.keys() == rb.keys()
        for k in ra:  # gradients are averaged in a different order: allow float32 rounding, nothing more
            assert rb[k] == pytest.approx(ra[k], rel=1e-5, abs=1e-7), (ra["iter"], k)
    odd = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node=2", "-m", "training.train", cfg,
         *_sets(*TINY_GAN, "data.batch_size=3", f"run.out_dir={tmp_path / 'odd'}")],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300,
    )
    assert odd.returncode != 0
    assert "error: data.batch_size=3 is the global batch and must be divisible by the number of processes (2)" \
        in odd.stderr


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_continues_exactly(tmp_path: Path) -> None:
    cfg = str(CONFIGS / "train_tiny_vsr_l1.yml")
    sets = _sets("data.gt_size=32", "data.clip_len=3", "train.iters=24", "log.log_every=1", "log.save_every=3",
                 "log.val_every=12")
    out = ["--set", f"run.out_dir={tmp_path / 'ref'}"]
    ref = subprocess.run([sys.executable, "-m", "training.train", cfg, *sets, *out],
                         cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr[-3000:]

    run = tmp_path / "killed"
    cmd = [sys.executable, "-m", "training.train", cfg, *sets, "--set", f"run.out_dir={run}"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:  # kill it somewhere after the second checkpoint, before the end
        if (run / "log.jsonl").exists() and any(r.get("iter", 0) >= 7 for r in _log_safe(run)):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = max(r["iter"] for r in _log_safe(run))
    assert killed_at < 24, "the run finished before it could be killed"
    res = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert _log(run) == _log(tmp_path / "ref")  # bitwise-equal curve, validation included
    assert (run / "animesr.pth").read_bytes() != b"" and not list(run.rglob("*.tmp"))


def _log_safe(run: Path) -> list[dict]:
    """The log as far as it is complete (a line may be half-written while we poll)."""
    out = []
    try:
        text = (run / "log.jsonl").read_text()
    except FileNotFoundError:
        return out
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return out

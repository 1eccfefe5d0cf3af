"""The whole training chain as one command: ``training.recipe --tiny`` end to end on the CPU, reruns, config errors."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from training.paired_data import read_rgb
from training.recipe import main, make_tiny_data

REPO = Path(__file__).resolve().parents[1]
STAGES = ["vsr_l1", "pseudo_hr_1", "lbo_1", "lbo_gan_1", "pseudo_hr_2", "lbo_2", "lbo_gan_2", "vsr_l1_lbo", "vsr_gan",
          "export"]


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def _recipe(ws: Path, *args: str) -> subprocess.CompletedProcess:
    """``python -m training.recipe ...`` as a user runs it (the codec workers are real spawned processes)."""
    return subprocess.run([sys.executable, "-m", "training.recipe", *args], cwd=ws, env=_env(), capture_output=True,
                          text=True, timeout=900)


def readme_training_commands() -> list[tuple[str, bool]]:
    """(command, needs the user's data) for every line of the ``sh`` blocks of the README's Training section."""
    text = (REPO / "README.md").read_text()
    start = text.index("\n## Training\n")
    section = text[start : text.index("\n## ", start + 5)]
    out = []
    for block in re.findall(r"```sh\n(.*?)```", section, re.S):
        user_data = False
        for line in block.splitlines():
            if line.startswith("#"):
                user_data = "with your data" in line
            elif line.strip():
                out.append((line.strip(), user_data))
    return out


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[str, subprocess.CompletedProcess]]]:
    """The README's training commands, as written, in a folder laid out like a checkout with its ``.venv``.

    Commands for the user's own data get stand-ins: a small video for the dataset builder, and the full recipe
    runs with ``--dry-run`` (every stage's config is checked and its command printed; it would need GPUs and days).
    """
    ws = tmp_path_factory.mktemp("checkout")
    (ws / ".venv").symlink_to(Path(sys.prefix))
    for name in ("training", "examples", "scripts"):
        (ws / name).symlink_to(REPO / name)
    (ws / "videos").mkdir()
    make_tiny_data(ws / "stand-in")  # small LQ videos: stand-ins for the user's videos
    shutil.copy(ws / "stand-in" / "lq1.mp4", ws / "videos" / "episode.mp4")
    for i in (1, 2, 3):
        shutil.copy(ws / "stand-in" / "lq1.mp4", ws / f"real{i}.mp4")
    results = []
    for command, user_data in readme_training_commands():
        run = command + (" --dry-run" if user_data and "animesr-recipe" in command else "")
        results.append((command, subprocess.run(["bash", "-o", "pipefail", "-c", run], cwd=ws, env=_env(),
                                                capture_output=True, text=True, timeout=900)))
    return ws, results


@pytest.mark.slow
def test_readme_training_commands_run_as_written(readme_run) -> None:
    ws, results = readme_run
    commands = [c for c, _ in results]
    assert any("animesr-recipe --tiny" in c for c in commands) and any("--lq-videos" in c for c in commands)
    for command, r in results:
        assert r.returncode == 0, f"{command}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    assert (ws / "sheet.png").stat().st_size > 0 and (ws / "runs" / "tiny_vsr_gan" / "animesr.pth").is_file()
    assert (ws / "datasets" / "mine" / "manifest.json").is_file()


@pytest.mark.slow
def test_tiny_recipe_runs_every_stage_end_to_end(readme_run) -> None:
    """Every stage of the published chain runs on generated data with the shipped configs; paths are wired."""
    ws, results = readme_run
    r = next(r for c, r in results if "animesr-recipe --tiny" in c)
    out = ws / "runs" / "tiny-recipe"
    assert r.returncode == 0, r.stderr[-4000:]
    started = [ln.split("]")[0][1:] for ln in r.stdout.splitlines() if ln.startswith("[") and "finished" in ln]
    assert started == STAGES  # measured: about 30 s on 2 busy cores

    # stage 1 -> pseudo-HR pairs: 2x the LQ frame, one pair per frame after the recurrence warm-up
    hr = sorted((out / "pseudo_hr_1" / "hr").iterdir())
    assert len(hr) == 5 and read_rgb(hr[0]).shape == (96, 96, 3)
    assert read_rgb(out / "pseudo_hr_1" / "lq" / hr[0].name).shape == (48, 48, 3)
    # the LBO GAN exports form the pool of both later stages; the GAN stage starts from the L1 stage with LBOs
    rel = Path("runs/tiny-recipe")  # as given on the command line
    for name in ("vsr_l1_lbo", "vsr_gan"):
        cfg = yaml.safe_load((out / "configs" / f"{name}.yml").read_text())
        assert cfg["data"]["lbo_pool"] == [str(rel / f"lbo_gan_{i}" / "lbo.pth") for i in (1, 2)]
        assert cfg["data"]["degradation"].endswith("training/configs/degradations_lbo.yml")
        assert cfg["data"]["paths"] == [str(rel / "data" / "hr" / f"clip{i}") for i in range(4)]
    gan = yaml.safe_load((out / "configs" / "vsr_gan.yml").read_text())
    assert gan["model"]["pretrained"] == str(rel / "vsr_l1_lbo" / "animesr.pth") and gan["data"]["codec_workers"] == 1
    lbo_gan = yaml.safe_load((out / "configs" / "lbo_gan_2.yml").read_text())
    assert lbo_gan["model"]["pretrained"] == str(rel / "lbo_2" / "lbo.pth")
    log = [json.loads(ln) for ln in (out / "vsr_gan" / "log.jsonl").read_text().splitlines()]
    assert {"l1", "percep", "gan_g", "d_real", "d_fake"} <= set(log[1]) and "codec_fallbacks" not in log[1]
    assert all(np.isfinite(v) for rec in log for v in rec.values())

    # the export loads as the engine loads weights, and is the GAN stage's EMA generator
    from vsanimesr.loader import load_model

    net = load_model(out / "animesr.pth")
    assert net.scale == 4 and net.forward_sequence(torch.rand(1, 2, 3, 8, 8)).shape == (1, 2, 3, 32, 32)
    assert (out / "animesr.pth").read_bytes() == (out / "vsr_gan" / "animesr.pth").read_bytes()

    # a rerun skips every finished stage; a changed setting reruns that stage and everything after it
    again = _recipe(ws, "--tiny", "--out", "runs/tiny-recipe", "--set", "vsr_gan:train.lr_g=5e-5", "--dry-run")
    assert again.returncode == 0, again.stderr[-2000:]
    redo = [ln.split("]")[0][1:] for ln in again.stdout.splitlines() if "would skip" not in ln]
    assert redo == ["vsr_gan", "export"]
    again = _recipe(ws, "--tiny", "--out", "runs/tiny-recipe")
    assert again.returncode == 0 and again.stdout.count("done earlier, skipped") == len(STAGES), again.stdout


def test_recipe_plan_official_chain_and_config_errors(tmp_path: Path, capsys) -> None:
    """--dry-run checks every stage's config and prints the commands; mistakes are one-line errors."""
    out = tmp_path / "r"
    clips, video = tmp_path / "clips", tmp_path / "lq.mp4"
    clips.mkdir()
    video.write_bytes(b"")
    assert main(["--out", str(out), "--clips", str(clips), "--lq-videos", f"{video}:0.35", "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split("]")[0][1:] for ln in lines] == ["vsr_l1", "pseudo_hr_1", "lbo_1", "lbo_gan_1", "vsr_l1_lbo",
                                                      "vsr_gan", "export"]
    assert "--scales 0.35" in lines[1] and f"--model {out / 'vsr_l1' / 'animesr.pth'}" in lines[1]
    assert not out.exists()  # a dry run writes nothing

    assert main(["--out", str(out), "--clips", str(clips), "--lq-videos", str(video), "--official", "--dry-run",
                 "--gpus", "4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "vsr_l1_lbo" not in "".join(lines) and "--nproc_per_node=4" in lines[0]

    def error(*args: str) -> str:
        assert main(["--out", str(out), "--dry-run", *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ")
        return err[0]

    base = ["--clips", str(clips), "--lq-videos", str(video)]
    assert "unknown key 'train.lr_gg'" in error(*base, "--set", "vsr_gan:train.lr_gg=1")
    assert "unknown stage 'vsr_gam'" in error(*base, "--set", "vsr_gam:train.iters=1")
    assert "'data.batch_size' must be an integer" in error(*base, "--set", "data.batch_size=four")
    assert "--clips and --lq-videos are required" in error("--clips", str(clips))
    assert "does not exist" in error("--clips", str(clips), "--lq-videos", str(tmp_path / "nope.mp4"))
    assert "scale must be in [0.1, 1.0]" in error("--clips", str(clips), "--lq-videos", f"{video}:2")
    assert "--stop-after 'lbo'" in error(*base, "--stop-after", "lbo")

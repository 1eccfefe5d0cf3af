"""scripts/bootstrap.sh's interpreter finder: it must pick a Python >= 3.12 by itself and refuse older ones.

Fake interpreters (tiny shell scripts that run this Python with a pretended ``sys.version_info``) make every case
reproducible on any machine; one test runs the finder on the real machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "bootstrap.sh"
BASH = shutil.which("bash") or "/bin/bash"


def _fake_python(path: Path, version: tuple[int, int, int]) -> Path:
    """An executable that behaves like ``python -c CODE`` but reports ``version`` as sys.version_info."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "#!/bin/sh\n"
        f'[ "$1" = "-c" ] || exit 2\n'
        f'exec "{sys.executable}" -c "import sys; sys.version_info = {version!r}; exec(sys.argv[1])" "$2"\n'
    )
    path.chmod(0o755)
    return path


def _find(tmp_path: Path, *, path_pythons: dict[str, tuple[int, int, int]] = {},  # noqa: B006 - read only
          pyenv: dict[str, tuple[int, int, int]] = {}, python: str | None = None) -> subprocess.CompletedProcess:  # noqa: B006
    """Run ``bootstrap.sh --print-python`` with only the given fakes on PATH and under PYENV_ROOT."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in ("dirname",):  # the only outside command the finder needs
        if not (bin_dir / tool).exists():
            (bin_dir / tool).symlink_to(shutil.which(tool))
    for name, v in path_pythons.items():
        _fake_python(bin_dir / name, v)
    root = tmp_path / "pyenv"
    for name, v in pyenv.items():
        _fake_python(root / "versions" / name / "bin" / "python", v)
    env = {"PATH": str(bin_dir), "PYENV_ROOT": str(root), "HOME": str(tmp_path)}
    if python is not None:
        env["PYTHON"] = python
    return subprocess.run([BASH, str(SCRIPT), "--print-python"], env=env, capture_output=True, text=True, timeout=60)


def test_prefers_python312_on_path(tmp_path):
    r = _find(tmp_path, path_pythons={"python3.12": (3, 12, 4), "python3.13": (3, 13, 0), "python3": (3, 11, 2)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(tmp_path / "bin" / "python3.12")


def test_skips_a_python312_that_is_really_older(tmp_path):
    # e.g. a pyenv shim named python3.12 that runs another version, or an old alias
    r = _find(tmp_path, path_pythons={"python3.12": (3, 11, 9), "python3.13": (3, 13, 1)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(tmp_path / "bin" / "python3.13")


def test_falls_back_to_pyenv_versions(tmp_path):
    r = _find(tmp_path, path_pythons={"python3": (3, 11, 2)},
              pyenv={"3.10.13": (3, 10, 13), "3.11.7": (3, 11, 7), "3.12.1": (3, 12, 1), "3.13.0": (3, 13, 0)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(tmp_path / "pyenv" / "versions" / "3.12.1" / "bin" / "python")


def test_rejects_when_only_old_pythons_exist(tmp_path):
    r = _find(tmp_path, path_pythons={"python3": (3, 11, 2)}, pyenv={"3.9.18": (3, 9, 18), "3.11.7": (3, 11, 7)})
    assert r.returncode == 1
    assert r.stdout == ""
    assert "no Python >= 3.12" in r.stderr


def test_explicit_python_variable(tmp_path):
    old = _fake_python(tmp_path / "old" / "python", (3, 11, 0))
    new = _fake_python(tmp_path / "new" / "python", (3, 14, 0))
    r = _find(tmp_path, path_pythons={"python3.12": (3, 12, 0)}, python=str(new))
    assert r.returncode == 0 and r.stdout.strip() == str(new)
    r = _find(tmp_path, path_pythons={"python3.12": (3, 12, 0)}, python=str(old))
    assert r.returncode == 1 and "PYTHON=" in r.stderr  # an explicit choice is never silently overridden


def test_finds_a_real_interpreter_here():
    r = subprocess.run([BASH, str(SCRIPT), "--print-python"], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHON": ""})
    if r.returncode != 0:
        pytest.skip(f"no Python >= 3.12 on this machine: {r.stderr.strip()}")
    py = r.stdout.strip()
    v = subprocess.run([py, "-c", "import sys; print(sys.version_info[:2] >= (3, 12))"], capture_output=True,
                       text=True, timeout=60)
    assert v.stdout.strip() == "True"


def _fake_venv(tmp_path: Path, pip_status: int) -> Path:
    """A venv whose python is this one, except that ``-m pip`` prints 300 lines (and a warning) and exits with
    ``pip_status``, and other ``-m`` modules (the weight fetcher) do nothing."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    py = venv / "bin" / "python"
    py.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then\n'
        '  i=0; while [ $i -lt 300 ]; do echo "Collecting package-$i"; i=$((i+1)); done\n'
        '  echo "WARNING: something pip wants said" >&2\n'
        f"  exit {pip_status}\n"
        "fi\n"
        '[ "$1" = "-m" ] && exit 0\n'
        f'exec "{sys.executable}" "$@"\n'
    )
    py.chmod(0o755)
    return venv


@pytest.mark.parametrize("pip_status", [0, 1])
def test_install_prints_a_summary_and_logs_pip_to_a_file(tmp_path, pip_status):
    venv = _fake_venv(tmp_path, pip_status)
    env = {**os.environ, "VENV": str(venv), "PIP_ARGS": ""}
    r = subprocess.run([BASH, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=120)
    log = venv / "install.log"
    assert len(log.read_text().splitlines()) == 301  # everything pip said
    assert f"pip's full output goes to {log}" in r.stderr
    assert "Collecting package-0" not in r.stderr
    if pip_status == 0:
        assert r.returncode == 0, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) <= 6, lines
        assert "bootstrap: pip: WARNING: something pip wants said" in lines
        assert any(line.startswith("bootstrap: installed in ") and "torch " in line for line in lines), lines
        assert (venv / ".stamp-install").exists()
    else:
        assert r.returncode == 1
        assert "Collecting package-299" in r.stderr  # the end of the log, where pip says what went wrong
        assert f"installing the project failed (full log: {log})" in r.stderr
        assert not (venv / ".stamp-install").exists()

"""The animesr plugin in a VapourSynth host without Python: the core must load it, and Upscale must say it needs Python.

The plugin does not link libpython; it resolves ``Py*`` functions from its host and checks for an interpreter
with ``dlsym(RTLD_DEFAULT, "Py_IsInitialized")`` before touching any of them. To test that, a tiny C host
(tests/data/nopython_host.c) is compiled at test time against the headers of the ``vapoursynth`` wheel. It dlopens
the wheel's ``libvapoursynth.so.4``, creates a core, makes sure ``animesr`` is loaded, calls ``animesr.Upscale`` on
a ``std.BlankClip`` RGBS clip and prints what happened as ``key=value`` lines.

Measured with the R81 wheel: the core itself autoloads ``vapoursynth/plugins/`` (next to the library), so no
Python is needed for the namespace to appear; with autoloading off, ``std.LoadPlugin`` loads it just as well.
A libpython that is mapped in (LD_PRELOAD) but never initialised also counts as "no Python".
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

vs = pytest.importorskip("vapoursynth")

HOST_SOURCE = Path(__file__).resolve().parent / "data" / "nopython_host.c"
VS_DIR = Path(vs.__file__).resolve().parent
CORE_LIB = VS_DIR / "libvapoursynth.so.4"
NEEDS_PYTHON = "animesr.Upscale: needs Python"


def installed_plugin() -> Path:
    """The plugin that ``pip install .`` put next to the wheel's other plugins (skip when there is none)."""
    found = sorted((VS_DIR / "plugins").glob("libanimesr*.so"))
    if not found:
        pytest.skip(f"the animesr plugin is not installed in {VS_DIR / 'plugins'}: run `pip install .` first")
    return found[0]


@pytest.fixture(scope="module")
def host(tmp_path_factory) -> Path:
    """nopython_host compiled with cc, linked against libc and libdl only (never libpython)."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        pytest.skip("no C compiler (cc, gcc or clang) to build the Python-free VapourSynth host")
    if not CORE_LIB.is_file():
        pytest.skip(f"this vapoursynth install has no {CORE_LIB.name} next to its module ({VS_DIR})")
    exe = tmp_path_factory.mktemp("nopython") / "nopython_host"
    cmd = [cc, "-std=c99", "-Wall", "-Wextra", "-Werror", "-D_GNU_SOURCE",
           f"-I{vs.get_include()}", str(HOST_SOURCE), "-o", str(exe), "-ldl"]
    built = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert built.returncode == 0, f"compiling the host failed:\n{' '.join(cmd)}\n{built.stderr}"
    return exe


def clean_env() -> dict[str, str]:
    """The caller's environment minus what would change what the host loads.

    VAPOURSYNTH_EXTRA_PLUGIN_PATH could add a second animesr copy ("already loaded"), LD_PRELOAD could inject
    libpython, and LD_BIND_NOW would make the dynamic loader demand every Py* symbol at load time (the plugin's
    unresolved Py* functions are only safe with lazy binding, which is the default).
    """
    env = dict(os.environ)
    for key in ("VAPOURSYNTH_EXTRA_PLUGIN_PATH", "LD_PRELOAD", "LD_BIND_NOW"):
        env.pop(key, None)
    return env


def run_host(host: Path, *extra: str, preload: Path | None = None) -> tuple[subprocess.CompletedProcess, dict]:
    """Run the host on the installed plugin; returns the process and its ``key=value`` report."""
    env = clean_env()
    if preload is not None:
        env["LD_PRELOAD"] = str(preload)
    proc = subprocess.run([str(host), str(CORE_LIB), str(installed_plugin()), *extra],
                          capture_output=True, text=True, timeout=30, env=env)
    report = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    return proc, report


def linked_libraries(path: Path) -> str:
    ldd = shutil.which("ldd")
    if not ldd:
        pytest.skip("no ldd to list linked libraries")
    return subprocess.run([ldd, str(path)], capture_output=True, text=True, timeout=30).stdout


def test_host_and_plugin_do_not_link_libpython(host):
    assert "libpython" not in linked_libraries(host)
    assert "libpython" not in linked_libraries(installed_plugin())
    proc, report = run_host(host, "explicit")
    assert report.get("python_symbol") == "absent", proc.stdout + proc.stderr


@pytest.mark.parametrize("mode", ["autoload", "explicit"])
def test_upscale_reports_it_needs_python(host, mode):
    proc, report = run_host(host, *([] if mode == "autoload" else ["explicit"]))
    output = f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 0, output
    assert report.get("done") == "1", output
    if mode == "autoload":
        assert report.get("autoloaded") == "1", output  # the core autoloads plugins/ without Python
    else:
        assert report.get("autoloaded") == "0" and report.get("loadplugin_error") == "", output
    assert report.get("namespace") == "animesr", output
    assert Path(report["plugin_path"]).resolve() == installed_plugin().resolve(), output
    assert report.get("upscale_error", "").startswith(NEEDS_PYTHON), output


def test_upscale_needs_an_initialised_interpreter(host):
    """libpython mapped into the host but never initialised (Py_IsInitialized() == 0) is still "no Python"."""
    libdir, name = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("LDLIBRARY")
    libpython = Path(libdir or "") / (name or "")
    if not name or ".so" not in name or not libpython.is_file():
        pytest.skip(f"this Python has no shared libpython to preload (LDLIBRARY={name!r})")
    proc, report = run_host(host, "explicit", preload=libpython)
    output = f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 0, output
    assert report.get("python_symbol") == "present", output
    assert report.get("namespace") == "animesr", output
    assert report.get("upscale_error", "").startswith(NEEDS_PYTHON), output

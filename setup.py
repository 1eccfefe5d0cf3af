"""Builds the native VapourSynth plugin (core.animesr) next to the package.

Everything else lives in pyproject.toml. The extension's dotted name puts the shared library into
``site-packages/vapoursynth/plugins/``, the directory the PyPI ``vapoursynth`` wheel autoloads plugins from, so
``core.animesr.Upscale`` exists after ``pip install .`` with no environment variables or ``LoadPlugin``.
It uses the stable ABI (one ``cp312-abi3`` wheel for every CPython >= 3.12) and does not link libpython: the
Py* functions come from the host (``python`` or ``vspipe``).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from setuptools import Extension, setup

HERE = Path(__file__).resolve().parent
GENERATED = HERE / "build" / "generated"


def _vapoursynth_include() -> list[str]:
    # The VapourSynth headers ship inside the vapoursynth wheel (a build requirement in pyproject.toml).
    try:
        import vapoursynth
    except ImportError as e:  # pragma: no cover - only without the build requirement
        raise SystemExit(f"setup.py: building the animesr plugin needs the vapoursynth package ({e})") from e
    return [vapoursynth.get_include()]


def _options_header() -> str:
    """Write animesr_options.h from vsanimesr/options.py (stdlib only, loaded by path: torch need not be installed)."""
    spec = importlib.util.spec_from_file_location("_animesr_options", HERE / "vsanimesr" / "options.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    GENERATED.mkdir(parents=True, exist_ok=True)
    (GENERATED / "animesr_options.h").write_text(mod.c_header())
    return str(GENERATED)


# Warnings are errors where it matters (CI sets CI=true; VSANIMESR_STRICT_BUILD=1 anywhere else).
STRICT = ["-Werror"] if os.environ.get("CI") or os.environ.get("VSANIMESR_STRICT_BUILD") == "1" else []

setup(
    ext_modules=[
        Extension(
            "vapoursynth.plugins.libanimesr",
            sources=["vsanimesr/_plugin/animesr.c"],
            include_dirs=[*_vapoursynth_include(), _options_header()],
            define_macros=[("Py_LIMITED_API", "0x030C0000")],
            py_limited_api=True,
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", *STRICT],
            libraries=["dl", "pthread"],
        )
    ],
    options={"bdist_wheel": {"py_limited_api": "cp312"}},
)

"""Builds the native VapourSynth plugin (core.animesr) next to the package.

Everything else lives in pyproject.toml. The extension's dotted name puts the shared library into
``site-packages/vapoursynth/plugins/``, the directory the PyPI ``vapoursynth`` wheel autoloads plugins from, so
``core.animesr.Upscale`` exists after ``pip install .`` with no environment variables or ``LoadPlugin``.
It uses the stable ABI (one ``cp312-abi3`` wheel for every CPython >= 3.12) and does not link libpython: the
Py* functions come from the host (``python`` or ``vspipe``).
"""

from __future__ import annotations

from setuptools import Extension, setup


def _vapoursynth_include() -> list[str]:
    # The VapourSynth headers ship inside the vapoursynth wheel (a build requirement in pyproject.toml).
    try:
        import vapoursynth
    except ImportError as e:  # pragma: no cover - only without the build requirement
        raise SystemExit(f"setup.py: building the animesr plugin needs the vapoursynth package ({e})") from e
    return [vapoursynth.get_include()]


setup(
    ext_modules=[
        Extension(
            "vapoursynth.plugins.libanimesr",
            sources=["vsanimesr/_plugin/animesr.c"],
            include_dirs=_vapoursynth_include(),
            define_macros=[("Py_LIMITED_API", "0x030C0000")],
            py_limited_api=True,
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
            libraries=["dl", "pthread"],
        )
    ],
    options={"bdist_wheel": {"py_limited_api": "cp312"}},
)

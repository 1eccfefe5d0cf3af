"""Builds the optional native VapourSynth plugin (core.animesr) next to the package.

Everything else lives in pyproject.toml. The extension's dotted name puts the shared library into
``site-packages/vapoursynth/plugins/``, the directory the PyPI ``vapoursynth`` wheel autoloads plugins from, so
``core.animesr.Upscale`` exists after ``pip install .`` with no environment variables or ``LoadPlugin``.
It uses the stable ABI (one ``cp312-abi3`` wheel for every CPython >= 3.12) and does not link libpython: the
Py* functions come from the host (``python`` or ``vspipe``).

The plugin is optional: without it ``vsanimesr.upscale`` and ``vsanimesr.vs.upscale_rgb`` run the same engine through
a pure-Python filter (same frames). ``VSANIMESR_BUILD_PLUGIN`` decides:

* ``auto`` (default): build it where it can be built; on Windows (it uses ``dlsym`` and pthreads), or when the
  compiler is missing or fails, skip it with a one-line note on stderr (``pip install -v`` shows it);
* ``0``: never build it (a pure ``py3-none-any`` wheel);
* ``1``: build it or fail.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
GENERATED = HERE / "build" / "generated"
MODE_ENV = "VSANIMESR_BUILD_PLUGIN"


def _mode() -> str:
    mode = os.environ.get(MODE_ENV, "auto").strip().lower() or "auto"
    if mode not in ("auto", "0", "1"):
        raise SystemExit(f"setup.py: {MODE_ENV}={mode!r}: must be auto, 0 or 1")
    return mode


def _note(why: str) -> None:  # setup.py talks to the person installing: stderr is its interface
    print(f"vsanimesr: native VapourSynth plugin not built ({why}); the pure-Python filter will be used",  # noqa: T201
          file=sys.stderr)


def _vapoursynth_include() -> str:
    # The VapourSynth headers ship inside the vapoursynth wheel (a build requirement in pyproject.toml).
    import vapoursynth

    return vapoursynth.get_include()


def _options_header() -> str:
    """Write animesr_options.h from vsanimesr/options.py (stdlib only, loaded by path: torch need not be installed)."""
    spec = importlib.util.spec_from_file_location("_animesr_options", HERE / "vsanimesr" / "options.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    GENERATED.mkdir(parents=True, exist_ok=True)
    (GENERATED / "animesr_options.h").write_text(mod.c_header())
    return str(GENERATED)


class OptionalBuildExt(build_ext):
    """build_ext that fills in the include paths when it runs and, unless the build is required, turns a failed
    build into a note instead of a failed install."""

    def run(self) -> None:
        try:
            for ext in self.extensions:
                ext.include_dirs[:0] = [_vapoursynth_include(), _options_header()]
            super().run()
        except Exception as e:  # a missing vapoursynth (the headers) or compiler, a compile or link error
            if _mode() == "1":
                raise
            _note(self._why(e))

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as e:
            if _mode() == "1":
                raise
            _note(self._why(e))

    def _why(self, e: Exception) -> str:
        if isinstance(e, ImportError):
            return f"its headers come from the vapoursynth package: {e}"
        cc = getattr(self.compiler, "compiler_so", None) or ["cc"]
        return f"{type(e).__name__} from the C compiler {cc[0]!r}; {MODE_ENV}=1 makes this an error"


def _extensions() -> list[Extension]:
    mode = _mode()
    if mode == "0":
        _note(f"{MODE_ENV}=0")
        return []
    if os.name == "nt" and mode != "1":
        _note("Windows: it needs dlsym and pthreads")
        return []
    # Warnings are errors where it matters (CI sets CI=true; VSANIMESR_STRICT_BUILD=1 anywhere else).
    strict = ["-Werror"] if os.environ.get("CI") or os.environ.get("VSANIMESR_STRICT_BUILD") == "1" else []
    return [
        Extension(
            "vapoursynth.plugins.libanimesr",
            sources=["vsanimesr/_plugin/animesr.c"],
            depends=["vsanimesr/options.py"],  # the generated header's source: a changed option rebuilds the plugin
            include_dirs=[],  # the VapourSynth headers and the generated options header: added by OptionalBuildExt
            define_macros=[("Py_LIMITED_API", "0x030C0000")],
            py_limited_api=True,
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", *strict],
            libraries=["dl", "pthread"],
        )
    ]


EXTENSIONS = _extensions()
setup(
    ext_modules=EXTENSIONS,
    cmdclass={"build_ext": OptionalBuildExt},
    options={"bdist_wheel": {"py_limited_api": "cp312"}} if EXTENSIONS else {},
)

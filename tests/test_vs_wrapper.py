"""vsanimesr.upscale() and the choice between the native and the pure-Python filter; installing without a compiler.

Levels and tags through vsjetpack chains are in tests/test_vsjetpack.py; the filters' frames, order-proofness and
errors on both implementations in tests/test_vs_plugin.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

vs = pytest.importorskip("vapoursynth")

REPO = Path(__file__).resolve().parents[1]
KW = dict(device="cpu", reset_interval=2, warmup=1)
IMPLEMENTATIONS = ("native", "python")


@pytest.fixture(params=IMPLEMENTATIONS)
def implementation(request) -> str:
    if request.param == "native":
        request.getfixturevalue("core")  # the plugin must be installed (a failure in CI)
    return request.param


@pytest.mark.parametrize(
    ("fmt", "color"),
    [(vs.YUV420P8, [100, 120, 140]), (vs.YUV420P10, [400, 480, 560]), (vs.GRAY8, [100]), (vs.RGB24, [90, 120, 200])],
)
def test_formats_round_trip_flat_colour(vs_core, implementation, fmt, color):
    from vsanimesr import upscale

    clip = vs_core.std.BlankClip(width=24, height=16, format=fmt, length=3, color=color)
    up = upscale(clip, implementation=implementation, **KW)
    assert (up.format.id, up.width, up.height, up.num_frames) == (fmt, 96, 64, 3)
    f = up.get_frame(1)
    for p, c in enumerate(color):
        # A flat picture stays (almost) flat and keeps its level through the colour conversions.
        assert abs(float(np.asarray(f[p]).mean()) - c) < 0.03 * max(c, 40), (p, np.asarray(f[p]).mean(), c)


def test_both_implementations_give_the_same_yuv_frames(core):
    from vsanimesr import upscale

    clip = core.std.BlankClip(width=24, height=16, format=vs.YUV420P10, length=4, color=[400, 480, 560])
    clip = core.std.AddBorders(core.std.Crop(clip, left=8), left=8, color=[100, 600, 300])  # some structure
    a, b = (upscale(clip, implementation=impl, **KW) for impl in IMPLEMENTATIONS)
    for n in (3, 0, 2, 1):
        fa, fb = a.get_frame(n), b.get_frame(n)
        for p in range(3):
            np.testing.assert_array_equal(np.asarray(fa[p]), np.asarray(fb[p]))
        assert dict(fa.props) == dict(fb.props)


def test_clip_properties_are_used_and_written(vs_core):
    from vsanimesr import upscale

    clip = vs_core.std.BlankClip(width=24, height=16, format=vs.YUV420P8, length=2, color=[16, 128, 128])
    full = vs_core.std.SetFrameProps(clip, _Matrix=1, _Transfer=1, _Primaries=1, _Range=vs.RANGE_FULL)  # 16 is grey
    limited = vs_core.std.SetFrameProps(clip, _Matrix=1, _Range=vs.RANGE_LIMITED)  # limited range: 16 is black
    a = upscale(full, format=vs.RGBS, **KW).get_frame(0)
    b = upscale(limited, format=vs.RGBS, **KW).get_frame(0)
    assert np.asarray(a[0]).mean() > 0.04 > abs(np.asarray(b[0]).mean())
    props = upscale(full, **KW).get_frame(0).props
    assert (props["_Matrix"], props["_Transfer"], props["_Primaries"], props["_Range"]) == (1, 1, 1, vs.RANGE_FULL)


@pytest.mark.parametrize("src_range", [vs.RANGE_LIMITED, vs.RANGE_FULL])
def test_float_output_keeps_the_input_range_and_chroma_location(vs_core, src_range):
    """A float YUV output is normalised and tagged with the input's range and chroma location, so a plain
    core.resize back to the input's format (which reads the tags) restores the direct integer path's levels."""
    from vsanimesr import upscale

    core = vs_core
    clip = core.std.BlankClip(width=24, height=16, format=vs.YUV420P8, length=2, color=[60, 100, 160])
    clip = core.std.SetFrameProps(clip, _Range=src_range, _ChromaLocation=vs.CHROMA_TOP_LEFT, _Matrix=1)
    direct = upscale(clip, **KW)
    fl = upscale(core.resize.Point(clip, format=vs.YUV420PS), **KW)  # core.resize keeps the tags on float
    props = fl.get_frame(0).props
    assert fl.format.id == vs.YUV420PS
    assert (props["_Range"], props["_ChromaLocation"], props["_Matrix"]) == (src_range, vs.CHROMA_TOP_LEFT, 1)
    back = core.resize.Point(fl, format=vs.YUV420P8)
    d, b = direct.get_frame(1), back.get_frame(1)
    for p in range(3):
        assert np.abs(np.asarray(d[p]).astype(int) - np.asarray(b[p])).max() <= 1
    assert dict(b.props)["_ChromaLocation"] == vs.CHROMA_TOP_LEFT == dict(d.props)["_ChromaLocation"]


def test_range_conventions_use_vapoursynth_constants(vs_core):
    """_Range counts limited as 0 and full as 1 (vs.RANGE_LIMITED / vs.RANGE_FULL); the older _ColorRange counts
    the other way round. Both read the same here."""
    from vsanimesr.vs import _range_prop

    assert (vs.RANGE_LIMITED, vs.RANGE_FULL) == (0, 1)
    assert _range_prop({"_Range": vs.RANGE_FULL}) == vs.RANGE_FULL == _range_prop({"_ColorRange": 0})
    assert _range_prop({"_Range": vs.RANGE_LIMITED}) == vs.RANGE_LIMITED == _range_prop({"_ColorRange": 1})
    assert _range_prop({}) is None


def test_output_format_and_outscale(vs_core):
    from vsanimesr import upscale

    clip = vs_core.std.BlankClip(width=24, height=16, format=vs.YUV420P8, length=2)
    up = upscale(clip, format=vs.YUV420P10, outscale=2.0, **KW)
    assert (up.format.id, up.width, up.height) == (vs.YUV420P10, 48, 32)


def structured_yuv(core, fmt: int, **props):  # noqa: ANN001, ANN201
    """A small YUV clip with edges and colour, tagged as a decoder tags it."""
    from conftest import clip_from, smooth_frames

    rgb = clip_from(core, smooth_frames(4))
    yuv = core.resize.Bicubic(rgb, format=fmt, matrix=1, range=vs.RANGE_LIMITED)
    return core.std.SetFrameProps(yuv, **{"_Matrix": 1, "_Range": vs.RANGE_LIMITED, **props})


@pytest.mark.parametrize("fmt", [vs.YUV420P10, vs.YUV420P8, vs.GRAY16, vs.RGB30, vs.YUV444PS])
def test_output_conversion_runs_in_the_filter(vs_core, monkeypatch, fmt):
    """The wrapper hands format/matrix/range to the filter (the conversion runs on the engine's device, only the
    final planes reach the host) and its planes match core.resize on the x4 RGBS: Y within 1 LSB."""
    import vsanimesr.vs as vsmod

    calls = []
    real = vsmod.upscale_rgb

    def spy(clip, **kwargs):  # noqa: ANN001, ANN003, ANN202
        calls.append(kwargs)
        return real(clip, **kwargs)

    monkeypatch.setattr(vsmod, "upscale_rgb", spy)
    src = structured_yuv(vs_core, vs.YUV420P10, _ChromaLocation=vs.CHROMA_LEFT)
    up = vsmod.upscale(src, format=fmt, **KW)
    assert calls[-1]["format"] == fmt and calls[-1]["range"] == (vs.RANGE_FULL if fmt == vs.RGB30
                                                                 else vs.RANGE_LIMITED)
    rgbs = vsmod.upscale(src, format=vs.RGBS, **KW)
    clamped = vs_core.std.Expr(rgbs, "x 0 max 1 min")
    out_fmt = vs_core.get_video_format(fmt)
    rgb_out = out_fmt.color_family == vs.RGB
    levels = {"range": vs.RANGE_FULL} if rgb_out else {"matrix": 1, "range": vs.RANGE_LIMITED}
    ref = vs_core.resize.Point(clamped if out_fmt.sample_type == vs.INTEGER else rgbs, format=fmt, **levels)
    for n in (0, 3):
        a, b = up.get_frame(n), ref.get_frame(n)
        y, ry = np.asarray(a[0]).astype(np.float64), np.asarray(b[0]).astype(np.float64)
        assert np.abs(y - ry).max() <= (1 if out_fmt.sample_type == vs.INTEGER else 1e-5), n
        assert a.props["_Matrix"] == (0 if rgb_out else 1)
        assert a.props["_Range"] == (vs.RANGE_FULL if rgb_out else vs.RANGE_LIMITED)
        if out_fmt.subsampling_w:
            assert a.props["_ChromaLocation"] == vs.CHROMA_LEFT


def test_output_conversion_falls_back_to_core_resize(vs_core, monkeypatch):
    """Top-left chroma (the filter sites it left) and an explicit dither_type convert with core.resize."""
    import vsanimesr.vs as vsmod

    calls = []
    real = vsmod.upscale_rgb
    monkeypatch.setattr(vsmod, "upscale_rgb", lambda clip, **kw: calls.append(kw) or real(clip, **kw))
    top_left = structured_yuv(vs_core, vs.YUV420P10, _ChromaLocation=vs.CHROMA_TOP_LEFT)
    up = vsmod.upscale(top_left, **KW)
    assert "format" not in calls[-1] and up.get_frame(1).props["_ChromaLocation"] == vs.CHROMA_TOP_LEFT
    left = structured_yuv(vs_core, vs.YUV420P8, _ChromaLocation=vs.CHROMA_LEFT)
    dithered = vsmod.upscale(left, dither_type="error_diffusion", **KW)
    assert "format" not in calls[-1]
    rounded = vsmod.upscale(left, **KW)
    assert calls[-1]["format"] == vs.YUV420P8
    a, b = (np.asarray(c.get_frame(2)[0]).astype(int) for c in (dithered, rounded))
    assert np.abs(a - b).max() <= 1 and (a != b).any()  # error diffusion moves some codes by one


def test_wrapper_errors(vs_core):
    from vsanimesr import upscale

    with pytest.raises(vs.Error, match="vsanimesr.upscale: clip must be a vapoursynth.VideoNode"):
        upscale("clip.mkv")  # type: ignore[arg-type]
    with pytest.raises(vs.Error, match="range='tv' must be 'full' or 'limited'"):
        upscale(vs_core.std.BlankClip(format=vs.YUV420P8, length=1), range="tv", **KW)
    with pytest.raises(vs.Error, match=r"^vsanimesr\.upscale: tile=-1: must be >= 0$"):
        upscale(vs_core.std.BlankClip(format=vs.YUV420P8, length=1), tile=-1, device="cpu")
    with pytest.raises(vs.Error, match=r"^vsanimesr\.upscale: implementation='c': must be one of auto, native, py"):
        upscale(vs_core.std.BlankClip(format=vs.YUV420P8, length=1), implementation="c", **KW)


# ------------------------------------------------------------------------------------------ choosing the filter


def test_implementation_argument_environment_and_default(vs_core, monkeypatch):
    import vsanimesr.vs as v

    monkeypatch.delenv(v.IMPLEMENTATION_ENV, raising=False)
    monkeypatch.setattr(v, "native_available", lambda: True)
    assert v.resolve_implementation() == "native" == v.resolve_implementation("auto")
    assert v.resolve_implementation("python") == "python"
    monkeypatch.setenv(v.IMPLEMENTATION_ENV, "python")
    assert v.resolve_implementation() == "python"
    assert v.resolve_implementation("native") == "native"  # the argument wins over the environment
    monkeypatch.setenv(v.IMPLEMENTATION_ENV, "fast")
    with pytest.raises(vs.Error, match=r"^vsanimesr\.upscale_rgb: VSANIMESR_IMPLEMENTATION='fast': must be one of"):
        v.resolve_implementation()
    monkeypatch.delenv(v.IMPLEMENTATION_ENV)
    monkeypatch.setattr(v, "native_available", lambda: False)
    assert v.resolve_implementation() == "python"
    with pytest.raises(vs.Error, match=r"implementation='native': the native plugin core\.animesr is not loaded"):
        v.resolve_implementation("native")


@pytest.mark.parametrize(("reset_interval", "warmup"), [(48, 4), (4, 2), (1, 0), (2, 10), (7, 3), (0, 4), (0, 0)])
def test_window_offsets_cover_every_window(reset_interval, warmup):
    """The shifted clips of the pure-Python filter hold every frame each window asks for (bounded windows), and
    exactly as many clips as Options.window_span says; unbounded windows get Options.restart_span of them."""
    from vsanimesr.options import Options
    from vsanimesr.vs import window_offsets

    opts = Options(reset_interval=reset_interval, warmup=warmup)
    first, last, bounded = window_offsets(opts)
    assert bounded == (reset_interval > 0)
    assert last - first + 1 == (opts.window_span if bounded else opts.restart_span)
    for num_frames in (1, 2, 3, 5 * opts.window_span + 3):
        for n in range(num_frames):
            lo, hi = opts.window(n, num_frames)
            assert hi <= n + last
            if bounded:
                assert lo >= n + first, (n, num_frames, lo, first)


def _policy_prelude(target: Path | None) -> str:
    """Python that imports vsanimesr from ``target`` and gives VapourSynth a core that autoloads no plugin, as on a
    machine where the native filter was never installed."""
    return (
        "import sys, logging\n"
        + (f"sys.path.insert(0, {str(target)!r})\n" if target else "")
        + "import numpy as np, torch, vapoursynth as vs\n"
        "torch.set_num_threads(1)\n"
        "class NoAutoload(vs.EnvironmentPolicy):\n"
        "    def on_policy_registered(self, api):\n"
        "        self.api, self.env = api, api.create_environment(vs.DISABLE_AUTO_LOADING)\n"
        "    def on_policy_cleared(self):\n"
        "        self.api.destroy_environment(self.env)\n"
        "    def get_current_environment(self):\n"
        "        return self.env\n"
        "    def set_environment(self, environment):\n"
        "        old, self.env = self.env, environment\n"
        "        return old\n"
        "    def is_alive(self, environment):\n"
        "        return environment is self.env\n"
        "vs.register_policy(NoAutoload())\n"
        "logging.basicConfig(level=logging.INFO, format='LOG %(message)s', stream=sys.stdout)\n"
    )


_FALLBACK = """
import vsanimesr, vsanimesr.vs
print("FROM", vsanimesr.__file__)
core = vs.core
print("PLUGIN", hasattr(core, "animesr"))
clip = core.std.BlankClip(format=vs.YUV420P8, width=16, height=12, length=3, color=[100, 120, 140])
up = vsanimesr.upscale(clip, device="cpu", reset_interval=2, warmup=1)
print("OUT", up.format.name, up.width, up.height, round(float(np.asarray(up.get_frame(2)[0]).mean())))
try:
    vsanimesr.vs.upscale_rgb(core.resize.Point(clip, format=vs.RGBS, matrix_in=6), implementation="native")
except vs.Error as e:
    print("NATIVE", e)
"""


def _source_tree(dst: Path) -> Path:
    """What an sdist holds (pyproject, setup.py, README, the packages), without build outputs of earlier builds."""
    dst.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(REPO / name, dst / name)
    for package in ("vsanimesr", "animesr_tools", "training"):
        shutil.copytree(REPO / package, dst / package, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    return dst


def _pip(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=600)


def _build_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VSANIMESR_BUILD_PLUGIN", "CC")}
    return dict(env, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1", **extra)


def test_install_without_a_compiler_uses_the_pure_python_filter(tmp_path):
    """`pip` builds a wheel where the C compiler fails (CC=/bin/false): one note, no plugin in the wheel; installed
    on its own (``--target``) into a VapourSynth without the plugin, vsanimesr.upscale runs the pure-Python filter and
    says so in its start line."""
    src = _source_tree(tmp_path / "src")
    env = _build_env(CC="/bin/false")
    built = _pip("wheel", "-v", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), ".", env=env,
                 cwd=src)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    notes = [line.strip() for line in (built.stdout + built.stderr).splitlines()
             if "vsanimesr: native VapourSynth plugin not built" in line]
    assert notes and "CompileError from the C compiler '/bin/false'" in notes[0], notes
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert not [n for n in names if n.endswith((".so", ".pyd", ".dylib"))], names
    assert "vsanimesr/vs.py" in names and "vsanimesr/_vsbridge.py" in names

    target = tmp_path / "site"
    installed = _pip("install", "--no-deps", "--target", str(target), str(wheel), env=env, cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr[-3000:]
    run_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VSANIMESR_IMPLEMENTATION")}
    proc = subprocess.run([sys.executable, "-c", _policy_prelude(target) + _FALLBACK], capture_output=True,
                          text=True, env=run_env, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert f"FROM {target}" in out, out
    assert "PLUGIN False" in out and "OUT YUV420P8 64 48 " in out, out
    assert abs(int(out.split("OUT YUV420P8 64 48 ")[1].split()[0]) - 100) <= 3, out  # a flat grey stays grey
    assert "; pure-Python filter (std.ModifyFrame); model=v2" in out, out
    assert "NATIVE vsanimesr.upscale_rgb: implementation='native': the native plugin core.animesr is not loaded" in out


def test_build_switch(tmp_path):
    """VSANIMESR_BUILD_PLUGIN=0 makes a pure py3-none-any wheel; =1 makes a failed plugin build fail the install."""
    src = _source_tree(tmp_path / "src")
    off = _pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "off"), ".",
               env=_build_env(VSANIMESR_BUILD_PLUGIN="0"), cwd=src)
    assert off.returncode == 0, off.stderr[-3000:]
    assert [p.name for p in (tmp_path / "off").glob("*.whl")] == ["vapoursynth_animesr-0.1.0-py3-none-any.whl"]
    shutil.rmtree(src / "build", ignore_errors=True)
    required = _pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "req"), ".",
                    env=_build_env(VSANIMESR_BUILD_PLUGIN="1", CC="/bin/false"), cwd=src)
    assert required.returncode != 0
    assert not list((tmp_path / "req").glob("*.whl"))


def test_to_rgb_reads_the_clip_as_upscale_does(vs_core):
    """upscale_rgb(to_rgb(clip), format=...) is upscale(clip, format=...) for a script that picks the output colour."""
    from vsanimesr import to_rgb, upscale, upscale_rgb

    src = structured_yuv(vs_core, vs.YUV420P10, _ChromaLocation=vs.CHROMA_LEFT)
    a = upscale(src, format=vs.YUV420P10, **KW)
    b = upscale_rgb(to_rgb(src), format=vs.YUV420P10, matrix=1, range=vs.RANGE_LIMITED, **KW)
    for n in (0, 3):
        for p in range(3):
            np.testing.assert_array_equal(np.asarray(a.get_frame(n)[p]), np.asarray(b.get_frame(n)[p]))
    assert to_rgb(src, fp16=True).format.id == vs.RGBH
    with pytest.raises(vs.Error, match=r"^vsanimesr\.to_rgb: range='tv' must be 'full' or 'limited'"):
        to_rgb(src, range="tv")
    with pytest.raises(vs.Error, match=r"^vsanimesr\.to_rgb: clip must be a vapoursynth.VideoNode, got str"):
        to_rgb("clip.mkv")  # type: ignore[arg-type]

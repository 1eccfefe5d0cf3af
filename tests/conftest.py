"""Shared fixtures: real weights (fetched by the project's own code), the read-only ../shared folder, small torch."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VSANIMESR_SHARED", REPO.parent / "shared"))

# Two cores: keep each test process from oversubscribing them.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def shared_path(rel: str) -> Path:
    """A file under ../shared, or skip the test with the reason (a user's clone has no ../shared)."""
    p = SHARED / rel
    if not p.exists():
        pytest.skip(f"{p} is absent (../shared is only beside the developers' checkout)")
    return p


def load_script(name: str) -> ModuleType:
    """Import ``scripts/<name>.py`` (scripts are not a package) as module ``<name>_script``."""
    spec = importlib.util.spec_from_file_location(f"{name}_script", REPO / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses in the script look their module up here
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def conformance() -> dict[str, np.ndarray]:
    with np.load(shared_path("reference/animesr_conformance.npz")) as d:
        return {k: d[k] for k in d.files}


@pytest.fixture(scope="session")
def demo_video() -> Path:
    return shared_path("data/onepiece_demo.mp4")


@pytest.fixture(scope="module")
def core():  # noqa: ANN201 - vapoursynth is imported lazily
    """The VapourSynth core with the installed ``animesr`` plugin; in CI a missing plugin is a failure, not a skip."""
    vs = pytest.importorskip("vapoursynth")
    c = vs.core
    if not hasattr(c, "animesr"):
        msg = "core.animesr is not installed: run `make test` (or `pip install .`) first"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return c


@pytest.fixture(scope="session")
def weights_v1() -> Path:
    from vsanimesr.weights import fetch

    return fetch("v1")


@pytest.fixture(scope="session")
def weights_v2() -> Path:
    from vsanimesr.weights import fetch

    return fetch("v2")

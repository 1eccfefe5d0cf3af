"""What the CPU can compute fast: its feature flags and whether bfloat16 pays off on it.

bfloat16 convolutions are only fast where the CPU has bfloat16 instructions (x86: AVX512-BF16 or AMX-BF16; Arm:
the ``bf16`` extension). Elsewhere oneDNN emulates them: on an AVX2-only AMD EPYC (Zen 3), AnimeSR v2 in bfloat16
ran 10x (320x240) to 67x (160x96) *slower* than in fp32 (see docs/results.md), so the engine does not use bf16 there.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

__all__ = ["BF16_FLAGS", "bf16_missing", "cpu_flags", "cpu_model"]

BF16_FLAGS = ("avx512_bf16", "amx_bf16")
"""x86 flags (as /proc/cpuinfo spells them) of which one makes bfloat16 convolutions fast; Arm's is ``bf16``."""


@functools.cache
def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _first(key: str) -> str | None:
    for line in _cpuinfo().splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip() == key:
            return value.strip()
    return None


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo: x86 ``flags``, Arm ``Features``); empty where unknown."""
    text = _first("flags") or _first("Features") or ""
    return frozenset(text.split())


def cpu_model() -> str:
    """The CPU's model name (``AMD EPYC 7B13``), or the platform's processor string where /proc is absent."""
    return _first("model name") or platform.processor() or platform.machine() or "unknown CPU"


def bf16_missing() -> str | None:
    """None when this CPU has bfloat16 instructions, else why not (naming the missing instruction sets)."""
    flags = cpu_flags()
    if not flags:
        return f"could not read the CPU's feature flags on {platform.system()}, so bfloat16 support is unknown"
    if platform.machine().lower() in ("aarch64", "arm64"):
        return None if "bf16" in flags else f"this CPU ({cpu_model()}) lacks the Arm bf16 extension"
    if any(f in flags for f in BF16_FLAGS):
        return None
    return f"this CPU ({cpu_model()}) has neither AVX512-BF16 nor AMX-BF16 ({' / '.join(BF16_FLAGS)})"

"""Run the test suite one module per pytest process, then print one summary line for all of them.

Why: the suite loads several native runtimes into the test process (PyTorch/OpenMP, OpenVINO/TBB, ONNX Runtime, Ray,
VapourSynth). Run together in one process for 20 minutes, a later test that forks a child (ruff, vspipe, Ray) twice
died of SIGSEGV although every module passes on its own. One process per module keeps each module's state to itself;
it costs a few seconds of imports per module.

    python scripts/run_tests.py [pytest arguments...]     (what `make test` runs; PYTEST_ARGS land here)
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COUNT = re.compile(r"(\d+) (passed|failed|skipped|errors?|deselected|xfailed|xpassed)")


def main(argv: list[str]) -> int:
    modules = sorted((REPO / "tests").glob("test_*.py"))
    totals: dict[str, int] = {}
    failed: list[str] = []
    t0 = time.monotonic()
    for module in modules:
        rel = str(module.relative_to(REPO))
        proc = subprocess.run([sys.executable, "-m", "pytest", rel, *argv], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
        sys.stdout.write(proc.stdout)
        sys.stdout.flush()
        tail = proc.stdout.strip().splitlines()[-1:] or [""]
        for n, kind in COUNT.findall(tail[0]):
            key = "errors" if kind.startswith("error") else kind
            totals[key] = totals.get(key, 0) + int(n)
        if proc.returncode not in (0, 5):  # 5: the arguments selected no test in this module
            failed.append(f"{rel} (exit {proc.returncode})")
    minutes = (time.monotonic() - t0) / 60
    if failed:
        print("modules that failed: " + ", ".join(failed))
    totals.setdefault("failed", 0)
    totals["failed"] += sum(1 for f in failed if "exit 1)" not in f)  # a crash counts even without a summary line
    others = ", ".join(f"{totals[k]} {k}" for k in ("errors", "deselected") if totals.get(k)) or "no errors"
    print(f"{len(modules)} modules in {minutes:.1f} min; {others}")
    skipped = f", {totals['skipped']} skipped" if totals.get("skipped") else ""
    print(f"summary: {totals.get('passed', 0)} passed, {totals['failed'] + totals.get('errors', 0)} failed{skipped}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

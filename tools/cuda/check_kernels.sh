#!/usr/bin/env bash
# Compiles every kernels/cuda/*.cu to PTX for each architecture in CUDA_CHECK_CAPS (default:
# sm_80 and sm_90) with the flags build.rs uses, treating every warning as an error. Needs
# nvcc on PATH (e.g. after `. "$(tools/cuda/setup.sh)"`); no GPU.
set -euo pipefail
cd "$(dirname "$0")/../.."

NVCC="${NVCC:-nvcc}"
read -r -a caps <<<"${CUDA_CHECK_CAPS:-80 90}"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

status=0
for cap in "${caps[@]}"; do
  for src in kernels/cuda/*.cu; do
    name="$(basename "$src" .cu)"
    # Same flags as build.rs, plus warnings as errors.
    if log="$("$NVCC" --ptx -O3 -std=c++17 -lineinfo "-arch=sm_$cap" -Ikernels/cuda \
      -Werror all-warnings -o "$out/$name.sm_$cap.ptx" "$src" 2>&1)" && [ -z "$log" ]; then
      echo "ok   sm_$cap $src"
    else
      echo "FAIL sm_$cap $src"
      [ -z "$log" ] || printf '%s\n' "$log"
      status=1
    fi
  done
done
exit "$status"

#!/usr/bin/env bash
# Installs a CUDA 13.0 toolkit (nvcc, headers, cuBLAS, cuRAND, NVRTC, runtime) from PyPI into a
# cache folder, plus a libcuda.so taken from Debian's non-free `libcuda1` package, so that
# `cargo build --features cuda` can compile and link on a machine without a CUDA install or a
# GPU (CI). Nothing here can *run* CUDA code: the libcuda.so is only for the linker.
#
# Usage:
#   tools/cuda/setup.sh            # install (idempotent), write <cache>/env.sh, print its path
#   eval "$(tools/cuda/setup.sh --env)"   # install, then print the exports on stdout
#
# Environment:
#   UNIRES_CUDA_CACHE  cache folder (default: $HOME/.cache/unires-cuda)
#   CUDA_COMPUTE_CAP   default architecture written to the env file (default: 90); a value
#                      set when the env file is sourced wins
#   PYTHON             Python used for the venv (default: python3)
#
# A second run reuses the cache and downloads nothing. Progress goes to stderr, so stdout
# carries only the path of the env file (or, with --env, the exports).
set -euo pipefail

CACHE="${UNIRES_CUDA_CACHE:-$HOME/.cache/unires-cuda}"
VENV="$CACHE/venv"
LIBCUDA_DIR="$CACHE/libcuda"
ENV_FILE="$CACHE/env.sh"
CAP="${CUDA_COMPUTE_CAP:-90}"
PYTHON="${PYTHON:-python3}"

# All pinned to CUDA 13.0. nvvm and crt must be pinned too: unpinned, pip takes the newest,
# whose PTX version the 13.0 ptxas refuses. cuRAND has its own numbering (10.4.0 = CUDA 13.0).
PACKAGES=(
  "nvidia-cuda-nvcc==13.0.*"
  "nvidia-cuda-runtime==13.0.*"
  "nvidia-cuda-cccl==13.0.*"
  "nvidia-cublas==13.0.*"
  "nvidia-curand==10.4.0.*"
  "nvidia-cuda-nvrtc==13.0.*"
  "nvidia-nvvm==13.0.*"
  "nvidia-cuda-crt==13.0.*"
)
# Libraries the link step asks for by their unversioned names.
LINK_LIBS=(cublas cublasLt cudart nvrtc curand)

mode="file"
case "${1:-}" in
  --env) mode="env" ;;
  "") ;;
  -h | --help)
    sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
  *)
    echo "usage: $0 [--env]" >&2
    exit 2
    ;;
esac

log() { echo "setup.sh: $*" >&2; }
die() {
  echo "setup.sh: error: $*" >&2
  exit 1
}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    die "need root (or sudo) to run: $*"
  fi
}

mkdir -p "$CACHE"

# --- 1. Toolkit from PyPI --------------------------------------------------------------------
stamp="$CACHE/.pip-installed"
want="${PACKAGES[*]}"
if [ -x "$VENV/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  log "toolkit already installed in $VENV"
else
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating venv $VENV"
    "$PYTHON" -m venv "$VENV"
  fi
  log "installing ${PACKAGES[*]}"
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q "${PACKAGES[@]}" >&2
  printf '%s' "$want" >"$stamp"
fi

CUDA_ROOT="$("$VENV/bin/python" -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')"
[ -x "$CUDA_ROOT/bin/nvcc" ] || die "no nvcc under $CUDA_ROOT"

# Unversioned names for the linker: libfoo.so -> libfoo.so.<major> (the wheels ship only the
# versioned files).
for name in "${LINK_LIBS[@]}"; do
  link="$CUDA_ROOT/lib/lib$name.so"
  [ -e "$link" ] && continue
  target=""
  for f in "$CUDA_ROOT/lib/lib$name.so."*; do
    [ -e "$f" ] || continue
    # Shortest name wins: libfoo.so.13 rather than libfoo.so.13.0.1.
    if [ -z "$target" ] || [ "${#f}" -lt "${#target}" ]; then target="$f"; fi
  done
  [ -n "$target" ] || die "no lib$name.so.* in $CUDA_ROOT/lib"
  ln -sfn "$(basename "$target")" "$link"
  log "linked lib$name.so -> $(basename "$target")"
done

# --- 2. libcuda.so (link only) from Debian's non-free libcuda1 --------------------------------
have_libcuda() { [ -e "$LIBCUDA_DIR/libcuda.so" ] && [ -e "$LIBCUDA_DIR/libcuda.so.1" ]; }

# Adds contrib/non-free/non-free-firmware to every Debian source that lacks them (deb822
# .sources files and one-line sources.list). Leaves everything else as it is.
enable_nonfree() {
  local f comp
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    grep -q 'debian' "$f" || continue
    for comp in contrib non-free non-free-firmware; do
      as_root sed -i -E "/^Components:/{/[[:space:]]$comp([[:space:]]|\$)/!s/\$/ $comp/}" "$f"
    done
  done
  if [ -f /etc/apt/sources.list ]; then
    for comp in contrib non-free non-free-firmware; do
      as_root sed -i -E "/^deb(-src)?[[:space:]].*debian/{/[[:space:]]$comp([[:space:]]|\$)/!s/\$/ $comp/}" /etc/apt/sources.list
    done
  fi
}

if have_libcuda; then
  log "libcuda.so already in $LIBCUDA_DIR"
else
  command -v apt-get >/dev/null 2>&1 || die "no libcuda.so in $LIBCUDA_DIR and no apt-get to fetch one; copy a libcuda.so there"
  if ! apt-cache policy libcuda1 2>/dev/null | grep -q 'Candidate: [0-9]'; then
    log "enabling contrib/non-free in the Debian apt sources"
    enable_nonfree
    as_root apt-get update -qq >&2
  fi
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  # apt downloads as its _apt user when it can; let it write there (else it warns).
  if [ "$(id -u)" -eq 0 ] && id _apt >/dev/null 2>&1; then chown _apt "$tmp"; fi
  log "downloading libcuda1"
  (cd "$tmp" && apt-get download -qq libcuda1 >&2) || die "apt-get download libcuda1 failed"
  dpkg -x "$tmp"/libcuda1_*.deb "$tmp/x"
  mkdir -p "$LIBCUDA_DIR"
  found=0
  while IFS= read -r f; do
    cp -P "$f" "$LIBCUDA_DIR/"
    found=1
  done < <(find "$tmp/x" -name 'libcuda.so*' \( -type f -o -type l \))
  [ "$found" = 1 ] || die "no libcuda.so* in the libcuda1 package"
  # The package's links point at one versioned file; make sure both names exist.
  real="$(find "$LIBCUDA_DIR" -name 'libcuda.so.*.*' -type f | head -n1)"
  [ -n "$real" ] || die "no versioned libcuda.so in $LIBCUDA_DIR"
  [ -e "$LIBCUDA_DIR/libcuda.so.1" ] || ln -sfn "$(basename "$real")" "$LIBCUDA_DIR/libcuda.so.1"
  [ -e "$LIBCUDA_DIR/libcuda.so" ] || ln -sfn libcuda.so.1 "$LIBCUDA_DIR/libcuda.so"
  have_libcuda || die "libcuda.so setup failed in $LIBCUDA_DIR"
  log "libcuda.so in $LIBCUDA_DIR (link only; it cannot run anything without a GPU driver)"
fi

# --- 3. Environment ----------------------------------------------------------------------------
q() { printf '%q' "$1"; }
{
  echo "# Written by tools/cuda/setup.sh: the CUDA 13.0 toolkit from PyPI (for building only)."
  echo "export CUDA_ROOT=$(q "$CUDA_ROOT")"
  echo "export CUDA_PATH=\"\$CUDA_ROOT\""
  echo "export PATH=\"\$CUDA_ROOT/bin:\$PATH\""
  echo "export LIBRARY_PATH=\"\$CUDA_ROOT/lib:\"$(q "$LIBCUDA_DIR")\"\${LIBRARY_PATH:+:\$LIBRARY_PATH}\""
  # Not the libcuda folder: at run time the GPU's own driver must provide libcuda.so.1
  # (cudarc loads it by name); Debian's copy would shadow it and mismatch the kernel module.
  echo "export LD_LIBRARY_PATH=\"\$CUDA_ROOT/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}\""
  # A value already set when the file is sourced wins.
  echo "export CUDA_COMPUTE_CAP=\"\${CUDA_COMPUTE_CAP:-$CAP}\""
} >"$ENV_FILE"

if [ "$mode" = env ]; then
  cat "$ENV_FILE"
else
  log "done; to use it: . $ENV_FILE"
  echo "$ENV_FILE"
fi

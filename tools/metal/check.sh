#!/usr/bin/env bash
# Checks the Metal backend on a Mac: builds with `--features metal`, runs the parity suite
# and the op tests on the GPU (UNIRES_DEVICE=metal), then `unires segment` on the embedded
# model on the GPU and on the CPU, and prints a summary table. The Metal kernels
# (kernels/metal) have never been run by this project; this is the script that runs them.
#
# Usage (from anywhere, on macOS with a Rust toolchain and Xcode's command-line tools):
#   tools/metal/check.sh            # build, tests, segment; summary at the end
#   tools/metal/check.sh --bench    # also `cargo bench --bench ops` on the GPU
#
# Logs go to target/metal-check/ (the summary too: summary.md). Exit status 0 when every
# step passed. The parity suite runs in f32 and bf16 (the CPU's policy) and f16; Metal has
# no ROI Align backward kernel, which the op tests report as skipped.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2

if [ "$(uname -s)" != Darwin ]; then
  echo "tools/metal/check.sh: Metal needs macOS (this is $(uname -s))" >&2
  exit 2
fi
bench=0
[ "${1:-}" = --bench ] && bench=1

LOGS="target/metal-check"
mkdir -p "$LOGS"
SUMMARY="$LOGS/summary.md"
ROWS=()
failed=0

row() {
  ROWS+=("| $1 | $2 | $3 |")
  [ "$2" = pass ] || failed=$((failed + 1))
  echo "-- $1: $2 ($3)"
}

result_line() { grep -E '^test result:' "$1" | tail -n1 | sed 's/^test result: //; s/; 0 ignored.*//'; }

echo "== cargo build --release --features metal (library, CLI, tests)"
if ! cargo build --release --features metal --bin unires --test parity --test ops_device \
  --test ops_attention --test ops_dwconv --test ops_roi_align --test ops_upsample \
  >"$LOGS/build.log" 2>&1; then
  tail -n 30 "$LOGS/build.log"
  row build fail "see $LOGS/build.log"
  printf '%s\n' "| step | result | numbers |" "|---|---|---|" "${ROWS[@]}" | tee "$SUMMARY"
  exit 1
fi
row build pass "cargo build --release --features metal"

export UNIRES_DEVICE=metal

echo "== parity suite on metal (f32, bf16, f16)"
UNIRES_PARITY_DTYPES=f32,bf16,f16 cargo test --release --features metal --test parity \
  >"$LOGS/parity.log" 2>&1
status=$?
tail -n 3 "$LOGS/parity.log"
runs="$(grep -E '^parity: [0-9]+ passed' "$LOGS/parity.log" | tail -n1)"
if [ "$status" -eq 0 ]; then
  row "parity (f32, bf16, f16)" pass "${runs#parity: } runs"
else
  bad="$(awk '$1 == "parity" && $NF == "FAIL" { sub(/:$/, "", $2); printf " %s", $2 }' "$LOGS/parity.log")"
  row "parity (f32, bf16, f16)" fail "${runs#parity: } runs; failed:${bad:- see log}"
fi

for t in ops_device ops_attention ops_dwconv ops_roi_align ops_upsample; do
  echo "== $t on metal"
  cargo test --release --features metal --test "$t" -- --test-threads=1 --nocapture \
    >"$LOGS/$t.log" 2>&1
  status=$?
  res="$(result_line "$LOGS/$t.log")"
  skips="$(grep -c 'SKIP' "$LOGS/$t.log")"
  if [ "$status" -eq 0 ]; then
    row "$t" pass "${res:-?}; $skips skipped checks"
  else
    row "$t" fail "${res:-no result line}; see $LOGS/$t.log"
  fi
done

echo "== unires segment on metal and on the CPU"
bin="target/release/unires"
seg_ok=1
for dev in cpu metal; do
  start="$(date +%s)"
  if "$bin" segment --image examples/scenes/tall.png --boxes examples/scenes/tall.json \
    --expression "the two cars" --device "$dev" --out "$LOGS/segment-$dev.png" \
    --json "$LOGS/segment-$dev.json" >"$LOGS/segment-$dev.log" 2>&1; then
    echo "$dev: $(($(date +%s) - start)) s"
  else
    seg_ok=0
    tail -n 5 "$LOGS/segment-$dev.log"
  fi
done
if [ "$seg_ok" = 1 ]; then
  same="different RLE"
  if cmp -s <(grep -v '"score"' "$LOGS/segment-cpu.json") <(grep -v '"score"' "$LOGS/segment-metal.json"); then
    same="same mask and granularity as the CPU"
  fi
  score_cpu="$(sed -n 's/.*"score": *\([0-9.e-]*\).*/\1/p' "$LOGS/segment-cpu.json" | head -n1)"
  score_gpu="$(sed -n 's/.*"score": *\([0-9.e-]*\).*/\1/p' "$LOGS/segment-metal.json" | head -n1)"
  row "segment \"the two cars\"" pass "$same; score metal $score_gpu, cpu $score_cpu"
else
  row "segment \"the two cars\"" fail "see $LOGS/segment-*.log"
fi

if [ "$bench" = 1 ]; then
  echo "== cargo bench --bench ops on metal"
  if cargo bench --features metal --bench ops >"$LOGS/bench.log" 2>&1; then
    row "ops bench" pass "table in $LOGS/bench.log"
  else
    row "ops bench" fail "see $LOGS/bench.log"
  fi
fi

echo
{
  echo "# unires Metal check ($(sw_vers -productName 2>/dev/null) $(sw_vers -productVersion 2>/dev/null), $(sysctl -n machdep.cpu.brand_string 2>/dev/null))"
  echo
  echo "| step | result | numbers |"
  echo "|---|---|---|"
  printf '%s\n' "${ROWS[@]}"
} | tee "$SUMMARY"
[ "$failed" -eq 0 ]

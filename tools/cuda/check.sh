#!/usr/bin/env bash
# Runs the CUDA kit (made by tools/cuda/package.sh) on a GPU machine and writes one markdown
# report, $OUT/gpu-report.md. Needs no cargo and no network: nvidia-smi, and Python with torch
# and torchvision (whose nvidia-* wheels provide the CUDA libraries the binaries link to).
#
# Usage, from anywhere:   bash dist/cuda-kit/check.sh
#
# Steps (each continues after a failure of the one before, so one call gives everything):
#   0. environment: nvidia-smi, torch / torch.version.cuda, LD_LIBRARY_PATH to torch's
#      nvidia wheels, unpacking kit.tar.xz, the binaries' shared libraries;
#   a. the parity suite on the GPU in f32, bf16 and f16 (tolerances as on the CPU; f16 under
#      the bf16 ones);
#   b. the custom ops on the GPU against the CPU (ops_device), the op and convolution tests,
#      and the embedded model's prefix-cache and quantised-LLM tests on the GPU;
#   c. `unires segment` end to end on the embedded model (GPU vs CPU masks, wall times), then
#      the ops bench against PyTorch on the same GPU;
#   d. the report: one table (step, result, numbers), the bench table, failure excerpts.
# Logs of every step: $OUT/logs/. The report is rewritten after each step, so a run cut short
# still leaves one.
#
# Environment:
#   OUT                 report folder (default: <kit>/out)
#   PYTHON              Python with torch + torchvision (default: python3)
#   UNIRES_KIT_DEVICE   device to check (default: cuda; cuda:N for another GPU)
#   UNIRES_KIT_BUDGET   seconds for the whole run (default: 540); steps that would start
#                       after it are reported as not run
#   UNIRES_KIT_WORK     where to unpack (default: $TMPDIR or /tmp, /unires-kit)
set -uo pipefail

KIT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="${OUT:-$KIT/out}"
PYTHON="${PYTHON:-python3}"
DEVICE="${UNIRES_KIT_DEVICE:-cuda}"
BUDGET="${UNIRES_KIT_BUDGET:-540}"
WORK="${UNIRES_KIT_WORK:-${TMPDIR:-/tmp}/unires-kit}"
LOGS="$OUT/logs"
REPORT="$OUT/gpu-report.md"
mkdir -p "$LOGS"
START=$SECONDS
# Panic messages without frames (the binaries are stripped).
export RUST_BACKTRACE=0

ROWS=()
FAILED=0
SECTIONS="$LOGS/report-sections.md"
: >"$SECTIONS"
HEADER=""

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

write_report() {
  {
    echo "# unires GPU check"
    echo
    printf '%s\n' "$HEADER"
    echo
    echo "| step | result | numbers |"
    echo "|---|---|---|"
    printf '%s\n' "${ROWS[@]}"
    echo
    echo "Total: $((SECONDS - START)) s."
    echo
    cat "$SECTIONS"
  } >"$REPORT"
}

# row STEP RESULT NUMBERS: one line of the table; RESULT other than pass counts as a failure.
row() {
  ROWS+=("| $1 | $2 | $3 |")
  [ "$2" = pass ] || FAILED=$((FAILED + 1))
  echo "-- $1: $2 ($3)"
  write_report
}

# excerpt TITLE LOG: the last lines of a log under the table.
excerpt() {
  {
    echo "### $1"
    echo
    echo '```'
    tail -n 40 "$2"
    echo '```'
    echo
  } >>"$SECTIONS"
}

# step LIMIT LOG CMD...: runs CMD with a time limit (cut to what is left of the budget),
# stdout and stderr into LOG. Returns its status; 124 after a timeout, 125 when not run.
step() {
  local limit=$1 logf=$2
  shift 2
  local left=$((BUDGET - (SECONDS - START)))
  if [ "$left" -lt 20 ]; then
    echo "not run: time budget ($BUDGET s) spent" >"$logf"
    return 125
  fi
  [ "$limit" -le "$left" ] || limit=$left
  timeout -k 10 "$limit" "$@" >"$logf" 2>&1
}

# verdict STATUS: pass, fail, timeout or "not run".
verdict() {
  case "$1" in
    0) echo pass ;;
    124 | 137) echo timeout ;;
    125) echo "not run" ;;
    *) echo fail ;;
  esac
}

# --- 0. Environment ----------------------------------------------------------------------------
echo "== nvidia-smi"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi 2>&1 | tee "$LOGS/nvidia-smi.log"
  gpu="$(nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv,noheader 2>/dev/null | head -n1)"
  cuda_driver="$(nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9.]*\).*/\1/p' | head -n1)"
else
  echo "no nvidia-smi" | tee "$LOGS/nvidia-smi.log"
  gpu="(no nvidia-smi)"
  cuda_driver="?"
fi

echo "== torch"
"$PYTHON" - >"$LOGS/torch.log" 2>&1 <<'EOF'
import torch
print("torch", torch.__version__)
print("torch.version.cuda", torch.version.cuda)
print("cuda available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0))
try:
    import torchvision
    print("torchvision", torchvision.__version__)
except ImportError as e:
    print("torchvision missing:", e)
EOF
cat "$LOGS/torch.log"
torch_line="$(sed -n 's/^torch \(.*\)/\1/p' "$LOGS/torch.log")"
torch_cuda="$(sed -n 's/^torch.version.cuda \(.*\)/\1/p' "$LOGS/torch.log")"

# torch's nvidia-* wheels hold the CUDA libraries (cuBLAS, cuRAND, NVRTC, runtime).
nvlibs="$("$PYTHON" - 2>/dev/null <<'EOF'
import glob, os
dirs = []
try:
    import nvidia
    for root in list(nvidia.__path__):
        for f in sorted(glob.glob(os.path.join(root, "**", "lib*.so*"), recursive=True)):
            d = os.path.dirname(f)
            if d not in dirs:
                dirs.append(d)
except ImportError:
    pass
print(":".join(dirs))
EOF
)"
export LD_LIBRARY_PATH="${nvlibs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"

manifest="$(sed -n 's/^commit: //p' "$KIT/MANIFEST" 2>/dev/null)"
kit_cap="$(sed -n 's/^compute_cap: //p' "$KIT/MANIFEST" 2>/dev/null)"
kit_nvcc="$(sed -n 's/^nvcc: //p' "$KIT/MANIFEST" 2>/dev/null)"
HEADER="$(
  echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ); device under test: \`$DEVICE\`"
  echo "- GPU: $gpu; driver CUDA $cuda_driver"
  echo "- torch $torch_line, torch.version.cuda $torch_cuda"
  echo "- kit: commit $manifest, PTX for sm_$kit_cap by nvcc $kit_nvcc"
)"
write_report

echo "== unpacking the kit into $WORK"
t0="$(now)"
(
  if command -v sha256sum >/dev/null 2>&1 && [ -f "$KIT/SHA256SUMS" ]; then
    cd "$KIT" && sha256sum -c SHA256SUMS || exit 1
  fi
  rm -rf "$WORK" && mkdir -p "$WORK" || exit 1
  if command -v xz >/dev/null 2>&1; then
    tar -C "$WORK" -xJf "$KIT/kit.tar.xz"
  else
    "$PYTHON" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' \
      "$KIT/kit.tar.xz" "$WORK"
  fi
) >"$LOGS/unpack.log" 2>&1
status=$?
if [ "$status" -ne 0 ] || [ ! -x "$WORK/bin/unires" ]; then
  row "unpack kit.tar.xz" fail "see logs/unpack.log"
  excerpt "unpack" "$LOGS/unpack.log"
  echo "cannot continue without the binaries"
  exit 1
fi
row "unpack kit.tar.xz" pass "$(since "$t0") s, $(du -sm "$WORK" | cut -f1) MiB"

missing="$(ldd "$WORK/bin/unires" 2>&1 | grep 'not found' | awk '{ print $1 }' | tr '\n' ' ')"
ldd "$WORK/bin/unires" >"$LOGS/ldd.log" 2>&1
if [ -z "$missing" ]; then
  libs="$(grep -oE 'lib(cuda|cublas|cublasLt|curand|nvrtc|cudart)\.so[.0-9]*' "$LOGS/ldd.log" | sort -u | tr '\n' ' ')"
  row "shared libraries" pass "$libs"
else
  row "shared libraries" fail "not found: $missing(see logs/ldd.log)"
fi
if [ -n "$kit_cap" ] && [[ "$gpu" =~ ,\ ([0-9]+)\.([0-9]+), ]]; then
  gpu_cap="${BASH_REMATCH[1]}${BASH_REMATCH[2]}"
  if [ "$gpu_cap" -lt "$kit_cap" ]; then
    row "architecture" fail "GPU is sm_$gpu_cap, the kit's PTX is for sm_$kit_cap: rebuild with CUDA_COMPUTE_CAP=$gpu_cap"
  fi
fi

export UNIRES_FIXTURES="$WORK/fixtures"

# --- a. Parity suite ---------------------------------------------------------------------------
echo "== parity suite on $DEVICE (f32, bf16, f16)"
t0="$(now)"
step 300 "$LOGS/parity.log" env UNIRES_DEVICE="$DEVICE" UNIRES_PARITY_DTYPES=f32,bf16,f16 \
  "$WORK/bin/parity"
status=$?
secs="$(since "$t0")"
tail -n 3 "$LOGS/parity.log"
# Per run: "parity <case>[<dtype>]: ... ok|FAIL" lines.
for dt in f32 bf16 f16; do
  counts="$(awk -v dt="$dt" '
    $1 == "parity" && $2 ~ /:$/ && ($NF == "ok" || $NF == "FAIL") {
      label = substr($2, 1, length($2) - 1)
      d = "f32"
      if (label ~ /\[bf16\]$/) d = "bf16"
      else if (label ~ /\[f16\]$/) d = "f16"
      if (d != dt) next
      n++
      if ($NF == "ok") ok++
      else { sub(/\[[a-z0-9]+\]$/, "", label); bad = bad " " label }
    }
    END { printf "%d %d%s", ok, n, bad }' "$LOGS/parity.log")"
  read -r ok n bad <<<"$counts"
  note=""
  [ "$dt" = f16 ] && note=" (f16 under the bf16 tolerances)"
  if [ "$status" -eq 124 ] || [ "$status" -eq 137 ] || [ "$status" -eq 125 ]; then
    row "parity $dt" "$(verdict "$status")" "$ok of $n runs ok before the stop; $secs s"
  elif [ "$n" -gt 0 ] && [ "$ok" -eq "$n" ]; then
    row "parity $dt" pass "$ok of $n cases$note; $secs s for all runs"
  else
    row "parity $dt" fail "$ok of $n cases ok$note; failed:${bad:- (no case lines, see log)}"
  fi
done
halfline="$(grep -E '^parity [a-z0-9+]+: [0-9]+ outputs compared' "$LOGS/parity.log" | head -n1)"
[ -z "$halfline" ] || echo "Parity low-precision outputs: ${halfline#parity }." >>"$SECTIONS"
[ "$status" -eq 0 ] || excerpt "parity (exit $status)" "$LOGS/parity.log"

# --- b. Custom ops against the CPU, and the op tests -------------------------------------------
for t in ops_device ops_attention ops_dwconv ops_roi_align ops_upsample conv ops_bias_act prefix_cache quantize; do
  echo "== $t on $DEVICE"
  t0="$(now)"
  step 150 "$LOGS/$t.log" env UNIRES_DEVICE="$DEVICE" "$WORK/bin/$t" --test-threads=1 --nocapture
  status=$?
  secs="$(since "$t0")"
  tail -n 2 "$LOGS/$t.log"
  result="$(grep -E '^test result:' "$LOGS/$t.log" | tail -n1 | sed 's/^test result: //; s/; 0 ignored.*//')"
  numbers="${result:-no result line}; $secs s"
  if [ "$t" = ops_device ]; then
    # Per test: comparisons made and the largest error as a share of its tolerance.
    detail="$(awk '
      / comparisons, [0-9]+ failed$/ { sub(/:$/, "", $1); cmp[$1] = $2; order[++k] = $1 }
      /worst \|Δ\|\/tol = / {
        for (i = 1; i <= NF; i++) if ($i == "=" && $(i - 1) == "|Δ|/tol") v = $(i + 1)
        sub(/,$/, "", v); cur = last
        if (v + 0 > worst[cur]) worst[cur] = v + 0
      }
      /: (device .* against the CPU|the test device is the CPU)/ {
        # "[test <name> ... ]<name>: device cuda against the CPU, ..." (or on the CPU:
        # "<name>: the test device is the CPU ...")
        for (i = 1; i < NF; i++) {
          if ($i ~ /^[a-z_]+:$/ && ($(i + 1) == "device" || $(i + 1) == "the")) {
            last = $i
            sub(/:$/, "", last)
          }
        }
      }
      / SKIP: / { skips++ }
      END {
        for (j = 1; j <= k; j++) {
          n = order[j]
          printf "%s%s %s cmp, worst %.2f of tol", (j > 1 ? "; " : ""), n, cmp[n], worst[n]
        }
        if (skips) printf "; %d skipped", skips
      }' "$LOGS/$t.log")"
    [ -z "$detail" ] || numbers="$numbers; $detail"
  fi
  row "$t" "$(verdict "$status")" "$numbers"
  [ "$status" -eq 0 ] || excerpt "$t (exit $status)" "$LOGS/$t.log"
done

# --- c1. End to end: unires segment on the embedded model ------------------------------------
echo "== unires segment (embedded model) on $DEVICE and on the CPU"
# seg TAG DEVICE EXPRESSION [ARGS...]: one run; prints its wall time in seconds.
seg() {
  local tag=$1 dev=$2 expr=$3
  shift 3
  local t0
  t0="$(now)"
  if step 120 "$LOGS/segment-$tag.log" "$WORK/bin/unires" segment \
    --image "$WORK/scenes/tall.png" --boxes "$WORK/scenes/tall.json" \
    --expression "$expr" --device "$dev" "$@" \
    --out "$OUT/segment-$tag.png" --json "$OUT/segment-$tag.json"; then
    since "$t0"
  else
    echo "FAILED"
  fi
}

# compare A B: mask IoU, granularity and score of two segment runs (JSON + PNG).
compare_seg() {
  "$PYTHON" - "$OUT/segment-$1" "$OUT/segment-$2" 2>&1 <<'EOF'
import json, sys
a, b = sys.argv[1], sys.argv[2]
ja, jb = json.load(open(a + ".json")), json.load(open(b + ".json"))
note = ""
try:
    from PIL import Image
    import numpy as np
    ma = np.asarray(Image.open(a + ".png")) > 0
    mb = np.asarray(Image.open(b + ".png")) > 0
    union = (ma | mb).sum()
    iou = 1.0 if union == 0 else (ma & mb).sum() / union
except Exception as e:  # no PIL: equal RLE strings or nothing
    iou = 1.0 if ja.get("rle") == jb.get("rle") else float("nan")
    note = f", RLE compared (no PIL: {e})"
print(f"IoU {iou:.4f}, granularity {ja['granularity']}/{jb['granularity']}, "
      f"score {ja['score']:.4f}/{jb['score']:.4f}{note}")
EOF
}

# seg_row NAME TAG REF SECONDS MIN_IOU: a table row for run TAG against run REF.
seg_row() {
  local name=$1 tag=$2 ref=$3 secs=$4 min_iou=$5
  if [ "$secs" = FAILED ]; then
    row "$name" fail "see logs/segment-$tag.log"
    excerpt "$name" "$LOGS/segment-$tag.log"
    return
  fi
  local cmp result=fail
  cmp="$(compare_seg "$tag" "$ref")"
  if awk -v c="$cmp" -v m="$min_iou" 'BEGIN {
      split(c, w, " "); iou = w[2]; sub(/,$/, "", iou); g = w[4]; sub(/,$/, "", g)
      split(g, gg, "/"); exit !(iou + 0 >= m && gg[1] == gg[2]) }'; then
    result=pass
  fi
  row "$name" "$result" "$secs s wall (process start, model load, run); vs CPU f32: $cmp; pass: IoU ≥ $min_iou, same granularity"
}

e1="the two cars"
e2="the handle of the mug"
s_cpu1="$(seg cpu1 cpu "$e1")"
s_gpu1="$(seg gpu1 "$DEVICE" "$e1")"
s_gpu1w="$(seg gpu1w "$DEVICE" "$e1")"
s_gpu1h="$(seg gpu1h "$DEVICE" "$e1" --dtype f16)"
s_gpu1b="$(seg gpu1b "$DEVICE" "$e1" --dtype bf16)"
s_cpu2="$(seg cpu2 cpu "$e2")"
s_gpu2="$(seg gpu2 "$DEVICE" "$e2")"
if [ "$s_cpu1" = FAILED ] || [ "$s_cpu2" = FAILED ]; then
  row "segment on the CPU (reference)" fail "see logs/segment-cpu*.log"
  excerpt "segment cpu" "$LOGS/segment-cpu1.log"
else
  row "segment on the CPU (reference)" pass "\"$e1\" $s_cpu1 s, \"$e2\" $s_cpu2 s wall"
  seg_row "segment \"$e1\" $DEVICE f32, first run" gpu1 cpu1 "$s_gpu1" 0.99
  seg_row "segment \"$e1\" $DEVICE f32, second run" gpu1w cpu1 "$s_gpu1w" 0.99
  seg_row "segment \"$e1\" $DEVICE f16" gpu1h cpu1 "$s_gpu1h" 0.95
  seg_row "segment \"$e1\" $DEVICE bf16" gpu1b cpu1 "$s_gpu1b" 0.95
  seg_row "segment \"$e2\" $DEVICE f32" gpu2 cpu2 "$s_gpu2" 0.99
fi

# --- c2. Ops bench against PyTorch on the same GPU -------------------------------------------
echo "== ops bench on $DEVICE (and PyTorch)"
t0="$(now)"
step 300 "$LOGS/bench.log" env UNIRES_DEVICE="$DEVICE" UNIRES_BENCH_PYTHON="$PYTHON" \
  UNIRES_BENCH_SCRIPT="$WORK/tools/bench_torch.py" "$WORK/bin/ops"
status=$?
with="with PyTorch"
if [ "$status" -ne 0 ] && [ "$status" -ne 124 ] && [ "$status" -ne 137 ] && [ "$status" -ne 125 ]; then
  # PyTorch's side may be what failed: once more without it.
  cp "$LOGS/bench.log" "$LOGS/bench-with-torch.log"
  excerpt "ops bench with PyTorch (exit $status)" "$LOGS/bench-with-torch.log"
  step 240 "$LOGS/bench.log" env UNIRES_DEVICE="$DEVICE" "$WORK/bin/ops"
  status=$?
  with="without PyTorch (its run failed, see logs/bench-with-torch.log)"
fi
secs="$(since "$t0")"
nrows="$(grep -c '^| [a-z]' "$LOGS/bench.log")"
row "ops bench $with" "$(verdict "$status")" "$((nrows - 1)) rows; $secs s"
{
  echo "## Op timings on $DEVICE"
  echo
  echo "Fastest of 3 to 30 calls (2 s), each ending with a device synchronisation; f32;"
  echo "ratio = their time / ours (> 1: unires faster). PyTorch with TF32 off."
  echo
  grep -E '^(device|PyTorch)' "$LOGS/bench.log" | sed 's/^/    /'
  echo
  grep -E '^\|' "$LOGS/bench.log"
  echo
} >>"$SECTIONS"
[ "$status" -eq 0 ] || excerpt "ops bench (exit $status)" "$LOGS/bench.log"

# --- d. Report ---------------------------------------------------------------------------------
write_report
echo
echo "== report: $REPORT ($FAILED failed or not run)"
cat "$REPORT"
[ "$FAILED" -eq 0 ]

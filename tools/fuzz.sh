#!/usr/bin/env bash
# Runs the fuzz targets of fuzz/ (cargo-fuzz, libFuzzer, nightly toolchain with sanitizers).
# Usage: tools/fuzz.sh [SECONDS_PER_TARGET] [TARGET ...]   (default: 1200 s, every target)
# Each target stops after 1 000 000 executions or SECONDS_PER_TARGET, whichever comes first.
# Seeds are in fuzz/corpus/<target> (committed); what the fuzzer finds goes to fuzz/work/<target>
# and crashes to fuzz/artifacts/<target> (both git-ignored). A crash makes the script exit 1;
# turn it into a regression test before fixing it.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-1200}
shift || true
if ! rustup toolchain list | grep -q '^nightly'; then
  rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cd fuzz && cargo +nightly fuzz list)
fi
status=0
for t in "${targets[@]}"; do
  mkdir -p "fuzz/work/$t"
  echo "== $t (at most ${secs} s or 1e6 runs)"
  if ! (cd fuzz && cargo +nightly fuzz run --release "$t" "work/$t" "corpus/$t" -- \
      -runs=1000000 -max_total_time="$secs" -rss_limit_mb=4096 -print_final_stats=1 \
      2>&1 | grep -E 'stat::number_of_executed_units|stat::peak_rss_mb|Done|ERROR|SUMMARY|panicked'); then
    status=1
  fi
  if compgen -G "fuzz/artifacts/$t/crash-*" >/dev/null; then
    echo "!! $t: crashes in fuzz/artifacts/$t"
    status=1
  fi
done
exit $status

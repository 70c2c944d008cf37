#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS each (default 50) without sanitizers, starting
# from the committed seed corpus and the regression inputs, and prints the executions per
# target. Exits non-zero on the first crash, leak of time (per-input timeout) or memory
# (rss limit); the failing input is left in fuzz/artifacts/<target>/.
#
#   fuzz/run.sh [SECONDS] [TARGET...]
#
# New inputs found go to a scratch corpus (the committed one is not touched). Works on a
# stable toolchain: cargo-fuzz passes -Z flags, which RUSTC_BOOTSTRAP=1 allows.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
secs=${1:-50}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(wire server relay_udp relay_ipv6 client nat)
fi
export RUSTC_BOOTSTRAP=1
unset CARGO_TARGET_DIR
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --version 0.13.1 --locked
fi
cargo fuzz build -s none
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
summary=()
for t in "${targets[@]}"; do
  mkdir -p "$scratch/$t" "regressions/$t"
  log="$scratch/$t.log"
  if ! cargo fuzz run "$t" -s none "$scratch/$t" "corpus/$t" "regressions/$t" -- \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    >"$log" 2>&1; then
    grep -A 4 -m 1 'panicked at' "$log" || true
    tail -n 25 "$log"
    echo "fuzz target $t FAILED (input in fuzz/artifacts/$t/)"
    exit 1
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1)
  summary+=("$(printf '%-11s %10s executions in %ss (%s/s), %s' "$t" "$execs" "$secs" "$rate" "$cov")")
done
printf '%s\n' "${summary[@]}"
echo "fuzz: ${#targets[@]} passed, 0 failed"

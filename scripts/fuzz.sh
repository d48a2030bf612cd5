#!/usr/bin/env bash
# Coverage-guided fuzzing of the code that reads untrusted bytes (issue 16; RELIABILITY.md).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]    each target for SECONDS (default 45), all by default
#
# Installs what it needs when missing: a nightly toolchain (cargo-fuzz builds with its
# sanitizer-coverage flags) and cargo-fuzz. The gateway is built without its `plugins` feature,
# so wasmtime is not compiled again. Runs without AddressSanitizer (`--sanitizer none`): the
# gateway has no unsafe code, so the coverage-guided search is what finds panics and broken
# invariants, and it gets more inputs through without ASan's instrumentation.
#
# Each target starts from its corpus (fuzz/corpus/TARGET, kept between runs, not committed) and
# the committed seeds (fuzz/seeds/TARGET: real messages from the test suite; the config target
# also reads config/*.yaml). A finding stops the run with the input saved under
# fuzz/artifacts/TARGET/ and the command that replays it; each one fixed becomes a regression
# test next to the code it broke. A summary table goes to stdout and fuzz/last-run.md.
#
# MCPGATE_FUZZ_SEED fixes libFuzzer's random seed: scripts/test.sh sets it, so a CI smoke walks a
# prefix of the same search that a longer run with that seed has walked (a clean clone starts
# from the seeds alone), instead of a new one each time.
set -euo pipefail
cd "$(dirname "$0")/.."
# scripts/test.sh lints through the pinned toolchain's clippy-driver as a workspace wrapper; a
# nightly build must not go through it.
unset RUSTC_WORKSPACE_WRAPPER CLIPPY_ARGS
seconds=${1:-45}
shift || true
all=(envelope headers sse sealed_ids config policy_uri response_ids json_check)
targets=("${@:-${all[@]}}")

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "==> fuzz: installing the nightly toolchain (minimal profile)"
  rustup toolchain install nightly --profile minimal
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "==> fuzz: installing cargo-fuzz"
  cargo install cargo-fuzz --locked --version 0.13.2
fi

echo "==> fuzz: build the targets (nightly, coverage instrumentation)"
cargo +nightly fuzz build --sanitizer none

report=fuzz/last-run.md
{
  echo "| target | seconds | executions | exec/s | coverage (edges) | features | corpus | result |"
  echo "|---|---:|---:|---:|---:|---:|---:|---|"
} > "$report"
failed=0
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t" "fuzz/seeds/$t"
  extra=()
  [[ $t == config ]] && extra+=(config)
  log=$(mktemp)
  echo "==> fuzz: $t for ${seconds}s"
  seed=()
  [[ -n ${MCPGATE_FUZZ_SEED:-} ]] && seed=(-seed="$MCPGATE_FUZZ_SEED")
  set +e
  cargo +nightly fuzz run --sanitizer none "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" "${extra[@]}" -- \
    -max_total_time="$seconds" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 -max_len=65536 "${seed[@]}" \
    >"$log" 2>&1
  rc=$?
  set -e
  runs=$(awk '/stat::number_of_executed_units/ { print $2 }' "$log" | tail -1 || true)
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | awk '{ print $2 }' || true)
  ft=$(grep -oE 'ft: [0-9]+' "$log" | tail -1 | awk '{ print $2 }' || true)
  corp=$(grep -oE 'corp: [0-9]+' "$log" | tail -1 | awk '{ print $2 }' || true)
  rate=$(( ${runs:-0} / (seconds > 0 ? seconds : 1) ))
  if [[ $rc -eq 0 ]]; then result=ok; else result="FAILED"; failed=1; fi
  echo "| $t | $seconds | ${runs:-?} | $rate | ${cov:-?} | ${ft:-?} | ${corp:-?} | $result |" >> "$report"
  if [[ $rc -ne 0 ]]; then
    grep -E "panicked|assert|SUMMARY|Test unit written|cargo fuzz run" "$log" | head -20 || true
  fi
  rm -f "$log"
done
cat "$report"
exit $failed

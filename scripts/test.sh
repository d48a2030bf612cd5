#!/usr/bin/env bash
# The whole test suite, from a fresh checkout: installs the SDK peers, builds the WebAssembly
# plugins, checks formatting and lints, then runs unit, integration and end-to-end tests (real
# MCP SDK clients and servers and real plugins through the real gateway binary), a fuzz smoke run
# and a smoke run of the demo.
#
#   scripts/test.sh           everything (what .ci/run runs)
#   scripts/test.sh --quick   the edit-compile-test loop: lints, unit and in-process tests
#                             (host/tests/, the plugins' native tests); no SDK peers, no
#                             end-to-end tests, no fuzzing, no demo
set -euo pipefail
cd "$(dirname "$0")/.."
quick=false
case "${1:-}" in
  --quick) quick=true ;;
  "") ;;
  *) echo "usage: scripts/test.sh [--quick]" >&2; exit 2 ;;
esac
$quick || scripts/setup.sh
results=$(mktemp)
log=$(mktemp)
trap 'rm -f "$results" "$log"' EXIT

# Lints are part of the real builds: cargo runs clippy-driver, a drop-in rustc that also lints,
# for the workspace's own crates (RUSTC_WORKSPACE_WRAPPER, as `cargo clippy` does), so
# dependencies such as wasmtime are compiled once instead of twice (build + check). Warnings are
# errors: a build step fails when cargo reported one (cargo replays a cached crate's warnings,
# so a rebuild-free run checks them too). This is `cargo clippy --workspace --all-targets -- -D
# warnings` without clippy's internal CLIPPY_ARGS encoding.
export RUSTC_WORKSPACE_WRAPPER="$(rustup which clippy-driver)"
denying_warnings() {
  "$@" 2>&1 | tee "$log"
  if grep -qE '^(warning|error)(\[|:)' "$log"; then
    echo "==> warnings are errors in the test suite (see above): $*" >&2
    exit 1
  fi
}

echo "==> cargo fmt --check"
cargo fmt --all -- --check
(cd plugins && cargo fmt --all -- --check)

echo "==> plugins: build for wasm32-wasip2"
scripts/build-plugins.sh

echo "==> plugins: lint and unit tests (native)"
(cd plugins && denying_warnings cargo test --workspace --all-targets --quiet)
cat "$log" >> "$results"

echo "==> gateway: build with clippy lints"
denying_warnings cargo build --workspace --all-targets --quiet

if $quick; then
  echo "==> cargo test (unit and in-process)"
  cargo test --workspace --exclude mcpgate-e2e --no-fail-fast 2>&1 | tee -a "$results"
else
  echo "==> cargo test"
  # The end-to-end tests run the mcpgate binary that this build produced.
  cargo test --workspace --no-fail-fast 2>&1 | tee -a "$results"

  echo "==> fuzz smoke run (each target briefly; \`just fuzz\` runs them for longer)"
  MCPGATE_FUZZ_SEED=${MCPGATE_FUZZ_SEED:-1} scripts/fuzz.sh "${MCPGATE_FUZZ_SECONDS:-25}"

  echo "==> demo smoke run"
  MCPGATE_DEMO_PREBUILT=1 scripts/demo.sh --once
fi
# One closing line for the whole suite (cargo prints one per test binary).
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$results"

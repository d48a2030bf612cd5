#!/usr/bin/env bash
# The whole test suite, from a fresh checkout: installs the SDK peers, builds the WebAssembly
# plugins, checks formatting and lints, then runs unit, integration and end-to-end tests (real
# MCP SDK clients and servers and real plugins through the real gateway binary) and a smoke run
# of the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
results=$(mktemp)
trap 'rm -f "$results"' EXIT

echo "==> cargo fmt --check"
cargo fmt --all -- --check
(cd plugins && cargo fmt --all -- --check)

echo "==> plugins: build for wasm32-wasip2"
scripts/build-plugins.sh

# Lints: exactly what `cargo clippy --workspace --all-targets -- -D warnings` checks, but as part
# of the real builds: clippy-driver compiles the workspace crates (cargo clippy sets the same two
# variables), so dependencies such as wasmtime are compiled once instead of twice (build + check).
export RUSTC_WORKSPACE_WRAPPER="$(rustup which clippy-driver)"
export CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"

echo "==> plugins: lint and unit tests (native)"
(cd plugins && cargo test --workspace --all-targets --quiet 2>&1) | tee -a "$results"

echo "==> gateway: build with clippy lints"
cargo build --workspace --all-targets --quiet

echo "==> cargo test"
# The end-to-end tests run the mcpgate binary that this build produced.
cargo test --workspace --no-fail-fast 2>&1 | tee -a "$results"

echo "==> fuzz smoke run (each target briefly; \`just fuzz\` runs them for longer)"
MCPGATE_FUZZ_SEED=${MCPGATE_FUZZ_SEED:-1} scripts/fuzz.sh "${MCPGATE_FUZZ_SECONDS:-25}"

echo "==> demo smoke run"
MCPGATE_DEMO_PREBUILT=1 scripts/demo.sh --once
# One closing line for the whole suite (cargo prints one per test binary).
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$results"

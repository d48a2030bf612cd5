#!/usr/bin/env bash
# The whole test suite, from a fresh checkout: installs the SDK peers, checks formatting and
# lints, then runs unit, integration and end-to-end tests (real MCP SDK clients and servers
# through the real gateway binary) and a smoke run of the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "==> cargo test"
# The end-to-end tests run the mcpgate binary that this build produces.
cargo build --workspace --quiet
results=$(mktemp)
trap 'rm -f "$results"' EXIT
cargo test --workspace --no-fail-fast 2>&1 | tee "$results"
echo "==> demo smoke run"
scripts/demo.sh --once
# One closing line for the whole suite (cargo prints one per test binary).
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$results"

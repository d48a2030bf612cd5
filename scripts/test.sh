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
cargo test --workspace --no-fail-fast
echo "==> demo smoke run"
scripts/demo.sh --once

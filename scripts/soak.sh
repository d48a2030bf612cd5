#!/usr/bin/env bash
# The soak (RELIABILITY.md): a release mcpgate under mixed load in both eras against real peers
# (the Python SDK server, the Rust benchmark upstream, the redact plugin), sampled every minute.
#
#   scripts/soak.sh [--minutes M] [--sample-secs S] [--workers N] [--out DIR]   (default 10 min)
#
# Fails on a 5xx, an unexpected answer, RSS or fd growth, or tasks/fds that do not come back
# after the load. Writes target/soak/{soak.md,soak.csv,rss.svg}.
set -euo pipefail
cd "$(dirname "$0")/.."
unset RUSTC_WORKSPACE_WRAPPER CLIPPY_ARGS
scripts/setup.sh --python >/dev/null
scripts/build-plugins.sh >/dev/null
echo "==> soak: release build"
cargo build --release --quiet -p mcpgate -p mcpgate-bench
exec target/release/mcpgate-soak "$@"

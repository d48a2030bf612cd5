#!/usr/bin/env bash
# The benchmark suite (BENCHMARKS.md): release builds of mcpgate and the bench harness, the
# example plugins, wrk and redis-server from the system's packages, then
#   1. the load benchmark (target/release/mcpgate-bench): direct vs floor proxy vs mcpgate
#      configurations, both eras, JSON and SSE, c=1 and c=32, SSE event delay, memory, start-up;
#   2. the criterion micro-benchmarks of the hot pieces (cargo bench -p mcpgate).
#
#   scripts/bench.sh                 # everything (~25 minutes on 2 cores after the first build)
#   scripts/bench.sh --quick         # one short round of the load benchmark, no criterion
#   scripts/bench.sh --load-only [mcpgate-bench options]
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

need=()
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]} (system packages)"
  if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

say "building plugins and release binaries"
scripts/build-plugins.sh >/dev/null
cargo build --release --quiet -p mcpgate -p mcpgate-bench

mode=${1:-}
case "$mode" in
  --quick)
    say "load benchmark (quick)"
    target/release/mcpgate-bench --quick
    ;;
  --load-only)
    shift
    say "load benchmark"
    target/release/mcpgate-bench "$@"
    ;;
  *)
    say "load benchmark"
    # The pictures BENCHMARKS.md shows are drawn by the run itself, into bench/plots/.
    target/release/mcpgate-bench --out target/bench-results.md --plots bench/plots
    say "criterion micro-benchmarks"
    cargo bench -p mcpgate --bench stages --bench plugins --bench observability --bench redis
    ;;
esac

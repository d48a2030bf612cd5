#!/usr/bin/env bash
# The demo: mcpgate in front of a small MCP server (examples/demo_server.py), then a real MCP
# client lists and calls its tools through the gateway. Stays up until Ctrl-C so you can try the
# printed curl line; `--once` exits after the client run (used by the test suite).
#
#   scripts/demo.sh [--once] [--config FILE]     MCPGATE_PORT=8080 by default
#
# --config FILE runs the gateway with another config built on config/demo.yaml (the upstream
# `demo` at DEMO_UPSTREAM_URL), such as the one scripts/new-plugin.sh writes for a new plugin.
set -euo pipefail
cd "$(dirname "$0")/.."
once=
config=config/demo.yaml
while [ $# -gt 0 ]; do
  case "$1" in
    --once) once=--once ;;
    --config) config=${2:?--config needs a file}; shift ;;
    *) echo "usage: scripts/demo.sh [--once] [--config FILE]" >&2; exit 2 ;;
  esac
  shift
done
[ -f "$config" ] || { echo "no such config: $config" >&2; exit 2; }
port=${MCPGATE_PORT:-8080}
[ "$once" = "--once" ] && port=0

scripts/setup.sh --python
# The test suite has just built target/debug/mcpgate with the whole workspace (a different
# feature set than `-p mcpgate` alone, which would recompile dependencies): it skips this build.
if [ -z "${MCPGATE_DEMO_PREBUILT:-}" ]; then
  echo "==> building mcpgate"
  cargo build --quiet -p mcpgate
fi
py=tests/e2e/.venv/bin/python

log=$(mktemp -d)
cleanup() { kill "${gw_pid:-}" "${server_pid:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$log"; }
trap cleanup EXIT INT TERM

wait_for() { # file pattern
  for _ in $(seq 1 300); do
    if grep -q "$2" "$1" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "timed out waiting for '$2' in $1:"; cat "$1"; exit 1
}

PYTHONUNBUFFERED=1 "$py" examples/demo_server.py > "$log/server.out" 2>&1 &
server_pid=$!
wait_for "$log/server.out" '^PORT '
upstream_port=$(sed -n 's/^PORT //p' "$log/server.out")

DEMO_UPSTREAM_URL="http://127.0.0.1:$upstream_port/mcp" MCPGATE_PORT=$port \
  target/debug/mcpgate start --config "$config" > "$log/gateway.out" 2>&1 &
gw_pid=$!
wait_for "$log/gateway.out" 'mcpgate listening on '
base=$(sed -n 's/^mcpgate listening on //p' "$log/gateway.out")
url="$base/servers/demo/mcp"

echo
echo "mcpgate is serving the demo MCP server at $url"
echo
echo "==> a real MCP client (Python SDK) lists and calls the tools through the gateway:"
"$py" - "$url" <<'PY'
import asyncio, sys
from mcp import Client

async def main(url):
    async with Client(url, mode="legacy") as c:
        tools = await c.list_tools()
        print("   tools:", ", ".join(t.name for t in tools.tools))
        r = await c.call_tool("add", {"a": 2, "b": 40})
        print("   add(2, 40) =", r.content[0].text)
        async def progress(p, total, message):
            print(f"   progress {p:.0f}/{total:.0f}")
        r = await c.call_tool("slow_count", {"steps": 3, "delay_ms": 200}, progress_callback=progress)
        print("   slow_count:", r.content[0].text)
        import json
        seen = json.loads((await c.call_tool("whoami", {})).content[0].text)
        print("   whoami (headers the server got):", json.dumps({k: v for k, v in seen.items() if v}))

asyncio.run(main(sys.argv[1]))
PY

body='{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}'
echo
echo "==> or with curl (the stateless 2026-07-28 revision needs no session):"
echo "curl -s $url \\"
echo "  -H 'content-type: application/json' -H 'accept: application/json, text/event-stream' \\"
echo "  -H 'mcp-protocol-version: 2026-07-28' -H 'mcp-method: tools/call' -H 'mcp-name: echo' \\"
echo "  -d '$body'"

echo
echo "==> what the gateway counted (Prometheus metrics):"
echo "curl -s $base/metrics | grep '^mcpgate_'"

if [ "$once" = "--once" ]; then
  # Prove the curl lines work, too.
  answer=$(curl -sS "$url" -H 'content-type: application/json' -H 'accept: application/json, text/event-stream' \
    -H 'mcp-protocol-version: 2026-07-28' -H 'mcp-method: tools/call' -H 'mcp-name: echo' -d "$body")
  echo "$answer"
  echo "$answer" | grep -q '"text":"hi"' || { echo "curl through the gateway failed"; cat "$log/gateway.out"; exit 1; }
  counted=$(curl -sS "$base/metrics" | grep '^mcpgate_tool_calls_total' || true)
  echo "$counted"
  echo "$counted" | grep -q 'tool="echo"} 1' || { echo "metrics did not count the call"; exit 1; }
  echo
  echo "demo OK"
  exit 0
fi
echo
echo "Press Ctrl-C to stop."
wait "$gw_pid"

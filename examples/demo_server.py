"""A small MCP server for mcpgate's demo and end-to-end tests.

Built on the official Python SDK (`mcp` 2.x). It serves Streamable HTTP at /mcp and speaks both
protocol eras on that one endpoint: the session-based revisions (initialize, Mcp-Session-Id) and
the stateless 2026-07-28 revision.

    python examples/demo_server.py [--port N]     # N=0 (default) picks a free port
    python examples/demo_server.py --stdio        # MCP over stdin/stdout instead (a stdio route)

Over HTTP it prints `PORT <n>` on stdout once it is listening, so scripts can find it.

Tools:
  echo(text)           returns the text
  add(a, b)            returns a + b
  slow_count(steps, delay_ms)
                       reports progress after each step, then returns "counted to <steps>"
  whoami()             returns the headers the server saw that matter to a gateway
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys

import uvicorn
from mcp.server.mcpserver import Context, MCPServer

mcp = MCPServer("mcpgate-demo", instructions="A demo server behind mcpgate.")


@mcp.tool()
def echo(text: str) -> str:
    """Echo the text back."""
    return text


@mcp.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@mcp.tool()
async def slow_count(steps: int, delay_ms: int, ctx: Context) -> str:
    """Count to `steps`, waiting `delay_ms` between steps and reporting progress after each."""
    for i in range(1, steps + 1):
        await asyncio.sleep(delay_ms / 1000)
        # On stderr, so a test can see how far a cancelled call got (a gateway logs it).
        print(f"slow_count step {i}/{steps}", file=sys.stderr, flush=True)
        await ctx.report_progress(i, steps, f"step {i}")
    return f"counted to {steps}"


@mcp.tool()
def whoami(ctx: Context) -> str:
    """The request headers a gateway rewrites or injects, as JSON."""
    request = ctx.request_context.request
    headers = dict(request.headers) if request is not None else {}
    # x-greeting: what the plugin template (scripts/new-plugin.sh) adds to every tool call.
    keep = ("host", "authorization", "x-forwarded-for", "x-forwarded-host", "x-api-key", "mcp-session-id", "x-greeting")
    return json.dumps({k: headers.get(k) for k in keep})


async def serve(server: MCPServer, port: int = 0, app_options: dict | None = None) -> None:
    """Serve `server` over Streamable HTTP at /mcp on 127.0.0.1:`port` (0: a free port), printing
    `PORT <n>` once it listens. `app_options` go to the SDK's `streamable_http_app`."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    # Listen before announcing the port: connections made before uvicorn is up wait in the
    # backlog instead of being refused.
    sock.listen(128)
    app = server.streamable_http_app(host="127.0.0.1", **(app_options or {}))
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    await uvicorn.Server(config).serve(sockets=[sock])


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--stdio", action="store_true", help="speak MCP over stdin/stdout")
    args = parser.parse_args()
    if args.stdio:
        await mcp.run_stdio_async()
    else:
        await serve(mcp, args.port)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)

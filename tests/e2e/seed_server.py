"""An MCP server standing in for an upstream of MCPGate's README example (`github`, `postgres`).

    seed_server.py <name>

Built on the official Python SDK, served like the demo server (both protocol eras at /mcp,
`PORT <n>` printed once it listens). Its tools carry the names the README's policy rules match:

  search_issues(query)   "<name>: results for <query>"
  get_issue(number)      "<name>: issue <number>"
  create_issue(title)    "<name>: created <title>"
  whoami()               the credentials the server received, as JSON: what the gateway injected
                         (Authorization, X-DB-Key) and what it must not forward (X-API-Key)
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "examples"))

from demo_server import serve  # noqa: E402
from mcp.server.mcpserver import Context, MCPServer  # noqa: E402


def build(name: str) -> MCPServer:
    server = MCPServer(f"seed-{name}")

    @server.tool()
    def search_issues(query: str) -> str:
        """Search."""
        return f"{name}: results for {query}"

    @server.tool()
    def get_issue(number: int) -> str:
        """Read one."""
        return f"{name}: issue {number}"

    @server.tool()
    def create_issue(title: str) -> str:
        """Write one."""
        return f"{name}: created {title}"

    @server.tool()
    def whoami(ctx: Context) -> str:
        """The credential headers this server received."""
        request = ctx.request_context.request
        headers = dict(request.headers) if request is not None else {}
        return json.dumps({k: headers.get(k) for k in ("authorization", "x-db-key", "x-api-key")})

    return server


if __name__ == "__main__":
    try:
        asyncio.run(serve(build(sys.argv[1])))
    except KeyboardInterrupt:
        sys.exit(0)

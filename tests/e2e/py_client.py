"""Drive an MCP server through mcpgate with the official Python SDK client; print what happened.

    py_client.py <url> <mode> [prefix]     mode: legacy | auto | 2026-07-28

With a prefix (a federated route), every tool it calls is named with it (`beta_echo`).

Prints one JSON object: the negotiated protocol version, the tool names, an echo result, and the
timestamps of a slow tool's progress notifications and of its result.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from mcp import Client


async def main(url: str, mode: str, prefix: str = "") -> None:
    out: dict = {"mode": mode}
    async with Client(url, mode=mode) as client:
        out["protocol_version"] = client.protocol_version
        tools = await client.list_tools()
        out["tools"] = sorted(t.name for t in tools.tools)
        echo = await client.call_tool(prefix + "echo", {"text": "héllo through the gateway"})
        out["echo"] = echo.content[0].text
        added = await client.call_tool(prefix + "add", {"a": 2, "b": 40})
        out["add"] = added.content[0].text

        progress: list[dict] = []

        async def on_progress(p: float, total: float | None, message: str | None) -> None:
            progress.append({"progress": p, "total": total, "at": time.monotonic()})

        started = time.monotonic()
        slow = await client.call_tool(prefix + "slow_count", {"steps": 3, "delay_ms": 300}, progress_callback=on_progress)
        out["slow"] = {
            "text": slow.content[0].text,
            "started": started,
            "result_at": time.monotonic(),
            "progress": progress,
        }
        bad = await client.call_tool(prefix + "no_such_tool", {})
        out["unknown_tool_is_error"] = bool(bad.is_error)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))

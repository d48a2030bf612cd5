"""Drive the demo server through mcpgate's built-in stages with the Python SDK client.

    py_stages_client.py <url> <mode> <header> <value>

Sends the credential in <header>; prints one JSON object: the tools listed (filtered by policy),
an allowed call, what a denied call raised, what a burst ran into, and what an unauthenticated
client ran into.
"""

from __future__ import annotations

import asyncio
import json
import sys

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from sdk_calls import describe


async def main(url: str, mode: str, header: str, value: str) -> None:
    out: dict = {"mode": mode}
    http = httpx2.AsyncClient(headers={header: value}, timeout=httpx2.Timeout(30, read=120))
    async with Client(streamable_http_client(url, http_client=http), mode=mode) as client:
        out["protocol_version"] = client.protocol_version
        out["tools"] = sorted(t.name for t in (await client.list_tools()).tools)
        out["echo"] = (await client.call_tool("echo", {"text": "allowed"})).content[0].text
        try:
            await client.call_tool("add", {"a": 1, "b": 2})
            out["denied"] = None
        except Exception as e:  # the SDK raises the JSON-RPC error to its caller
            out["denied"] = describe(e)
        out["burst"] = []
        for i in range(6):
            try:
                await client.call_tool("echo", {"text": f"burst {i}"})
                out["burst"].append("ok")
            except Exception as e:
                out["burst"].append(describe(e))
                break
    try:
        async with Client(url, mode=mode) as anonymous:
            await anonymous.list_tools()
        out["anonymous"] = "connected"
    except BaseException as e:  # noqa: BLE001 (task groups raise BaseExceptionGroup)
        out["anonymous"] = describe(e)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))

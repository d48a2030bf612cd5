"""Drive the MCPGate README config through mcpgate with the Python SDK client, as its two callers.

    py_migration_client.py <gateway-base-url> <engineering-key> <contractors-key>

Each caller sends its key in X-API-Key (the README's `auth.header`) and, on each of the two routes,
lists the tools, calls some and asks the server which credentials reached it. Then a wrong key and
no key. Prints one JSON object: per "<caller>/<route>", the protocol era, the tools listed, each
call's text (`raised ...` when the SDK raised a JSON-RPC error) and the server's `whoami`.
"""

from __future__ import annotations

import asyncio
import json
import sys

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from sdk_calls import attempt, describe

# (caller, route, protocol era, calls)
PLAN = [
    ("engineering", "github", "legacy", [("search_issues", {"query": "gateway"})]),
    ("engineering", "postgres", "2026-07-28", [("create_issue", {"title": "index"})]),
    (
        "contractors",
        "github",
        "2026-07-28",
        [("search_issues", {"query": "bug"}), ("get_issue", {"number": 7})],
    ),
    ("contractors", "postgres", "legacy", [("search_issues", {"query": "users"})]),
]


async def session(url: str, mode: str, key: str | None, calls) -> dict:
    headers = {"X-API-Key": key} if key is not None else {}
    http = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=120))
    async with Client(streamable_http_client(url, http_client=http), mode=mode) as client:
        out = {"mode": client.protocol_version}
        out["tools"] = sorted(t.name for t in (await client.list_tools()).tools)
        out["calls"] = {tool: await attempt(client, tool, args) for tool, args in calls}
        whoami = await attempt(client, "whoami", {})
        out["whoami"] = json.loads(whoami) if whoami.startswith("{") else whoami
        return out


async def refused(url: str, key: str | None) -> str:
    try:
        await session(url, "legacy", key, [])
        return "connected"
    except BaseException as e:  # noqa: BLE001 (task groups raise BaseExceptionGroup)
        return describe(e)


async def main(base: str, engineering: str, contractors: str) -> None:
    keys = {"engineering": engineering, "contractors": contractors}
    out: dict = {}
    for caller, route, mode, calls in PLAN:
        url = f"{base}/servers/{route}/mcp"
        out[f"{caller}/{route}"] = await session(url, mode, keys[caller], calls)
    github = f"{base}/servers/github/mcp"
    out["wrong_key"] = await refused(github, "not-a-key")
    out["no_key"] = await refused(github, None)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))

"""Drive two mcpgate replicas that share Redis with the Python SDK client.

    py_replicas_client.py burst <header> <key> <url-a> <url-b> <calls>
        Fires <calls> concurrent `echo` calls, half through each replica (2026-07-28 era), then
        `add` calls alternating between the replicas (the quota plugin counts them in kv).
    py_replicas_client.py session <header> <key> <url> <go-file>
        One legacy session through <url> (a load balancer spreading requests over the replicas):
        calls, a progress stream, prints `PHASE1 DONE`, waits until <go-file> exists (the test
        restarts a replica meanwhile), calls again, and closes the session (DELETE).

Prints one JSON object with what each call returned or raised.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from sdk_calls import attempt


def connect(url: str, header: str, key: str, mode: str) -> Client:
    http = httpx2.AsyncClient(headers={header: key}, timeout=httpx2.Timeout(30, read=120))
    return Client(streamable_http_client(url, http_client=http), mode=mode)


async def burst(header: str, key: str, url_a: str, url_b: str, calls: int) -> dict:
    out: dict = {}
    mode = "2026-07-28"
    async with connect(url_a, header, key, mode) as a, connect(url_b, header, key, mode) as b:
        clients = [a, b]
        results = await asyncio.gather(
            *(attempt(clients[i % 2], "echo", {"text": f"burst {i}"}) for i in range(calls))
        )
        out["burst"] = [{"replica": "ab"[i % 2], "result": r} for i, r in enumerate(results)]
        out["quota"] = [
            {"replica": "ab"[i % 2], "result": await attempt(clients[i % 2], "add", {"a": i, "b": 1})}
            for i in range(6)
        ]
    return out


async def session(header: str, key: str, url: str, go_file: str) -> dict:
    out: dict = {}

    async def phase(client: Client, tag: str, steps: int) -> None:
        """Four calls, then one whose progress streams back as SSE events."""
        progress: list[float] = []

        async def on_progress(p: float, total: float | None, message: str | None) -> None:
            progress.append(p)

        calls = [await attempt(client, "echo", {"text": f"{tag} {i}"}) for i in range(4)]
        streamed = await client.call_tool(
            "slow_count", {"steps": steps, "delay_ms": 20}, progress_callback=on_progress
        )
        out[tag] = calls + [streamed.content[0].text]
        out[f"progress_{tag}"] = progress

    async with connect(url, header, key, "legacy") as client:
        out["protocol_version"] = client.protocol_version
        out["tools"] = sorted(t.name for t in (await client.list_tools()).tools)
        await phase(client, "before", 3)
        print("PHASE1 DONE", flush=True)
        while not os.path.exists(go_file):
            await asyncio.sleep(0.05)
        await phase(client, "after", 2)
    return out


async def main(argv: list[str]) -> None:
    if argv[0] == "burst":
        out = await burst(argv[1], argv[2], argv[3], argv[4], int(argv[5]))
    else:
        out = await session(argv[1], argv[2], argv[3], argv[4])
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))

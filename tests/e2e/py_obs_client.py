"""Drive the demo server through mcpgate with the Python SDK client, for the observability tests.

    py_obs_client.py <url> <mode> <api-key> <traceparent>

Every request carries the API key (X-API-Key) and the W3C `traceparent`. The calls, in order:
list tools, two allowed echoes, a policy-denied `add`, an echo the arg-guard plugin rejects (its
text also carries the API key, which the audit log must never show), one more allowed echo, then
one that runs into the rate limit; finally a client without a key. Prints one JSON object with
what each call returned or raised.
"""

from __future__ import annotations

import asyncio
import json
import sys

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from sdk_calls import attempt, describe


async def main(url: str, mode: str, key: str, traceparent: str) -> None:
    out: dict = {"mode": mode}
    headers = {"X-API-Key": key, "traceparent": traceparent}
    http = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=120))
    async with Client(streamable_http_client(url, http_client=http), mode=mode) as client:
        out["tools"] = sorted(t.name for t in (await client.list_tools()).tools)
        out["allowed"] = [await attempt(client, "echo", {"text": t}) for t in ("one", "two")]
        out["denied"] = await attempt(client, "add", {"a": 1, "b": 2})
        out["plugin_rejected"] = await attempt(client, "echo", {"text": f"{key} " + "x" * 60})
        out["allowed"].append(await attempt(client, "echo", {"text": "three"}))
        out["limited"] = await attempt(client, "echo", {"text": "four"})
    try:
        async with Client(url, mode=mode) as anonymous:
            await anonymous.list_tools()
        out["anonymous"] = "connected"
    except BaseException as e:  # noqa: BLE001 (task groups raise BaseExceptionGroup)
        out["anonymous"] = describe(e)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))

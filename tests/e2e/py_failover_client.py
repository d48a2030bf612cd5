"""Call a long tool through a balancer in front of two mcpgate replicas, resuming if cut off.

    py_failover_client.py <url>

Legacy era (2025-11-25): when the stream breaks (the test kills the replica carrying it), the
SDK client resumes with GET + Last-Event-ID, which the balancer sends to the other replica.
Prints `STARTED` once the first progress arrives, then one JSON object: the progress steps seen
and the tool's answer.
"""

from __future__ import annotations

import asyncio
import json
import sys

from mcp import Client

from sdk_calls import attempt


async def main(url: str) -> None:
    seen: list[float] = []

    async def progress(p, total, message):
        if not seen:
            print("STARTED", flush=True)
        seen.append(p)

    async with Client(url, mode="legacy") as client:
        result = await asyncio.wait_for(
            client.call_tool("count", {"steps": 30, "delay_ms": 100}, progress_callback=progress), 60
        )
        text = " ".join(getattr(c, "text", "") for c in result.content)
    print(json.dumps({"progress": seen, "result": text}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))

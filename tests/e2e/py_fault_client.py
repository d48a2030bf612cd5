"""Call each fault of raw_upstream.py through mcpgate with the Python SDK client.

    py_fault_client.py <url> <fault>...

Legacy era, one session per fault (a broken answer may take its session down with it, inside
the SDK). Each call gets 20 s; prints one JSON object: per fault, what the SDK returned or
raised (`timed out` would mean the gateway left the client hanging), then the prompts a last
session lists (the gateway serves on).
"""

from __future__ import annotations

import asyncio
import json
import sys

from mcp import Client

from sdk_calls import attempt, describe


async def one(url: str, fault: str) -> str:
    try:
        async with Client(url, mode="legacy") as client:
            return await asyncio.wait_for(attempt(client, fault, {}), 20)
    except asyncio.TimeoutError:
        return "timed out"
    except BaseException as e:  # noqa: BLE001 (task groups raise BaseExceptionGroup)
        return "raised " + describe(e)


async def main(url: str, faults: list[str]) -> None:
    out: dict = {"calls": {}}
    for fault in faults:
        out["calls"][fault] = await one(url, fault)
    async with Client(url, mode="legacy") as client:
        out["prompts"] = sorted(p.name for p in (await client.list_prompts()).prompts)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2:]))

"""Drive the demo server through mcpgate's WebAssembly plugins with the Python SDK client.

    py_plugins_client.py <base-url> <mode>

Routes (see tests/tests/plugins_e2e.rs): `guarded` runs arg-guard, redact (arguments only), quota and
the misbehaving fixture (fail_closed); `scrubbed` redacts results only; `lenient` runs the
misbehaving fixture with fail_open; `contract01` runs a plugin built for contract 0.1. Prints one JSON object with what each call returned or raised.
"""

from __future__ import annotations

import asyncio
import json
import sys

from mcp import Client

from sdk_calls import attempt, describe


async def main(base: str, mode: str) -> None:
    out: dict = {"mode": mode}
    guarded = f"{base}/servers/guarded/mcp"
    async with Client(guarded, mode=mode) as client, Client(guarded, mode=mode) as other:
        out["rejected"] = await attempt(client, "add", {"a": 1000, "b": 1})
        out["rewritten"] = await attempt(client, "echo", {"text": "mail alice@example.com now"})
        out["quota"] = [await attempt(client, "slow_count", {"steps": 1, "delay_ms": 1}) for _ in range(3)]
        out["failures"] = {}
        for tool in ("spin", "sleep", "oom", "panic", "huge_header"):
            bad = asyncio.create_task(attempt(client, tool, {}))
            await asyncio.sleep(0.05)  # let the bad call reach the plugin first
            # Another client keeps working while the plugin misbehaves on the first one's call.
            served = [await attempt(other, "echo", {"text": f"still here {i}"}) for i in range(3)]
            out["failures"][tool] = {
                "concurrent": served,
                "bad_still_running": not bad.done(),
                "bad": await bad,
            }
        out["after"] = await attempt(client, "echo", {"text": "after the failures"})
    async with Client(f"{base}/servers/scrubbed/mcp", mode=mode) as client:
        out["scrubbed"] = await attempt(client, "echo", {"text": "token ghp_abcdefghijklmnopqrstuvwxyz0123456789"})
    async with Client(f"{base}/servers/lenient/mcp", mode=mode) as client:
        out["fail_open"] = await attempt(client, "spin", {})
    async with Client(f"{base}/servers/contract01/mcp", mode=mode) as client:
        out["contract01"] = {
            "echo": await attempt(client, "echo", {"text": "old plugin"}),
            "forbidden": await attempt(client, "forbidden", {}),
        }
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:3]))

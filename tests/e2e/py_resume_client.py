"""Call tools through mcpgate with the Python SDK client, letting it resume closed streams.

    py_resume_client.py <url>

Legacy era (2025-11-25, the first revision where a server may close a stream and have the client
resume it with GET + Last-Event-ID). Prints one JSON object: the tools listed and the text of
`leak` (answered on its POST stream) and `leak_later` (answered on the resumed stream).
"""

from __future__ import annotations

import asyncio
import json
import sys

from mcp import Client

from sdk_calls import attempt


async def main(url: str) -> None:
    out: dict = {}
    async with Client(url, mode="legacy") as client:
        out["protocol_version"] = client.protocol_version
        out["tools"] = sorted(t.name for t in (await client.list_tools()).tools)
        out["leak"] = await attempt(client, "leak", {})
        out["leak_later"] = await asyncio.wait_for(attempt(client, "leak_later", {}), 60)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))

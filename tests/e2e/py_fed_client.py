"""Drive a federated route of `fed_member.py` servers with the official Python SDK client.

    py_fed_client.py <url> <mode> <member>=<prefix>...     mode: legacy | 2026-07-28

For each member prefix: a confirm call answered through the client's elicitation callback (a
server request in the session-based era, an input_required round trip in 2026-07-28), the
member's resource read, its prompt got, a completion, and a failing call. Prints one JSON
object keyed by member.
"""

from __future__ import annotations

import asyncio
import json
import sys

from mcp import Client
from mcp.types import ElicitResult, PromptReference


async def main(url: str, mode: str, *members: str) -> None:
    asked: list[str] = []

    async def on_elicit(_context, params) -> ElicitResult:
        asked.append(params.message)
        return ElicitResult(action="accept", content={"ok": True})

    out: dict = {"mode": mode}
    async with Client(url, mode=mode, elicitation_callback=on_elicit) as client:
        out["protocol_version"] = client.protocol_version
        resources = await client.list_resources()
        out["resources"] = sorted(str(r.uri) for r in resources.resources)
        prompts = await client.list_prompts()
        out["prompts"] = sorted(p.name for p in prompts.prompts)
        for pair in members:
            member, prefix = pair.split("=", 1)
            got: dict = {}
            r = await client.call_tool(prefix + "confirm", {"question": "ship it?"})
            got["confirm"] = r.content[0].text
            read = await client.read_resource(f"note://{member}/readme")
            got["note"] = read.contents[0].text
            prompt = await client.get_prompt(prefix + "greet", {"person": "ada"})
            got["greet"] = prompt.messages[0].content.text
            done = await client.complete(PromptReference(type="ref/prompt", name=prefix + "greet"), {"name": "person", "value": "a"})
            got["completion"] = done.completion.values
            failed = await client.call_tool(prefix + "fail", {})
            got["fail"] = {"is_error": bool(failed.is_error), "text": failed.content[0].text}
            out[member] = got
    out["asked"] = asked
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))

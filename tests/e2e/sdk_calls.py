"""What the end-to-end client scripts share: turning SDK outcomes into comparable text."""

from __future__ import annotations

from mcp import Client


def describe(e: BaseException) -> str:
    """An exception and, for exception groups, everything inside it, on one line."""
    parts = [f"{type(e).__name__}: {e}"]
    for sub in getattr(e, "exceptions", []) or []:
        parts.append(describe(sub))
    return " | ".join(parts)


async def attempt(client: Client, tool: str, args: dict) -> str:
    """A tool call's text, `error result ...` for a tool error, `raised ...` for a JSON-RPC error."""
    try:
        result = await client.call_tool(tool, args)
    except Exception as e:  # the SDK raises a JSON-RPC error to its caller
        return "raised " + describe(e)
    text = " ".join(getattr(c, "text", "") for c in result.content)
    return ("error result " if result.is_error else "") + text

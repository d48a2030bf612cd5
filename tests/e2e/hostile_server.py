"""An MCP server (Python SDK) for mcpgate's hostile-input tests: the behaviours a gateway must not
be fooled by, on demand.

    hostile_server.py [--json] [--resumable]

Served like the demo server (both protocol eras at /mcp, `PORT <n>` printed once it listens).
  --json        answer POSTs with JSON bodies instead of SSE streams
  --resumable   keep every event in memory (an event store) with `retry: 50`, so a client can
                resume a stream with GET + Last-Event-ID, as 2025-11-25 servers may ask it to

Tools:
  echo(text)          returns the text
  add(a, b)           returns a + b (the tests' policy denies it, and hides it from lists)
  leak()              returns text holding an e-mail address (the redact plugin must hide it)
  leak_later()        closes its POST stream first (with --resumable), then returns the same
                      text: the answer reaches the client only on the resumed GET stream
  count(steps, delay_ms)
                      reports progress after each step, then returns "counted to <steps>"
  request_query()     the query string of the HTTP request that carried the call
  big(mib)            returns `mib` MiB of text
  forwarded()         the X-Forwarded-For/Host/Proto and Forwarded headers the server received,
                      as JSON
  numbers(text, big, huge)
                      returns "<text>|<big>|<huge>" as the server read them (Python keeps big
                      integers exact; 1e400 reads as inf)

Resources: file:///docs/readme.md ("the docs") and file:///etc/passwd ("root:x:0:0"); the tests'
policy allows only the first.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "examples"))

from demo_server import serve  # noqa: E402
from mcp.server.mcpserver import Context, MCPServer  # noqa: E402
from mcp.server.streamable_http import EventMessage, EventStore  # noqa: E402

SECRET = "mail alice@example.com for the key"


class MemoryEventStore(EventStore):
    """Every event of every stream, in order, for replays after a Last-Event-ID."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, object]] = []
        self.ids = itertools.count(1)

    async def store_event(self, stream_id, message):
        event_id = str(next(self.ids))
        self.events.append((event_id, stream_id, message))
        return event_id

    async def replay_events_after(self, last_event_id, send_callback):
        stream = next((s for e, s, _ in self.events if e == last_event_id), None)
        if stream is None:
            return None
        after = False
        for event_id, stream_id, message in self.events:
            if after and stream_id == stream and message is not None:
                await send_callback(EventMessage(message, event_id))
            after = after or event_id == last_event_id
        return stream


def build() -> MCPServer:
    server = MCPServer("hostile")

    @server.tool()
    def echo(text: str) -> str:
        """Echo the text back."""
        return text

    @server.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @server.tool()
    def leak() -> str:
        """Text with an e-mail address in it."""
        return SECRET

    @server.tool()
    async def leak_later(ctx: Context) -> str:
        """Close this call's stream, then answer (the client resumes to get the answer)."""
        await ctx.close_sse_stream()
        await asyncio.sleep(0.3)
        return SECRET

    @server.tool()
    def forwarded(ctx: Context) -> str:
        """The forwarding headers this call arrived with."""
        request = ctx.request_context.request
        headers = dict(request.headers) if request is not None else {}
        names = ("x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "forwarded")
        return json.dumps({k: headers.get(k) for k in names})

    @server.tool()
    def numbers(text: str, big: int, huge: float) -> str:
        """What the server read."""
        return f"{text}|{big}|{huge}"

    @server.tool()
    def big(mib: int) -> str:
        """A large result."""
        return "x" * (mib * 1024 * 1024)

    @server.resource("file:///docs/readme.md")
    def readme() -> str:
        """Public docs."""
        return "the docs"

    @server.resource("file:///etc/passwd")
    def passwd() -> str:
        """Not for clients."""
        return "root:x:0:0"

    @server.tool()
    async def count(steps: int, delay_ms: int, ctx: Context) -> str:
        """Count to `steps`, reporting progress after each step."""
        for i in range(1, steps + 1):
            await asyncio.sleep(delay_ms / 1000)
            await ctx.report_progress(i, steps, f"step {i}")
        return f"counted to {steps}"

    @server.tool()
    def request_query(ctx: Context) -> str:
        """The query string this call arrived with."""
        request = ctx.request_context.request
        return request.url.query if request is not None else ""

    return server


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--resumable", action="store_true")
    args = parser.parse_args()
    options = {"json_response": args.json}
    if args.resumable:
        options.update(event_store=MemoryEventStore(), retry_interval=50)
    await serve(build(), app_options=options)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)

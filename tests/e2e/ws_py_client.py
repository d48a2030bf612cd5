"""Drive an MCP route through mcpgate over a WebSocket with the official Python SDK's 1.x
WebSocket client (`mcp.client.websocket.websocket_client`, subprotocol `mcp`); print what
happened as one JSON object. Runs from tests/e2e/.venv-mcp1 (the 2.x SDK has no WebSocket client).

    python ws_py_client.py <ws-url> everything   # server-everything: tools, progress, a denied
                                                 # call, a 429, sampling
    python ws_py_client.py <ws-url> demo         # the demo server: tools, echo, progress
"""

import json
import sys
import time
import warnings

import anyio
import mcp.types as types
from mcp import ClientSession
from mcp.shared.exceptions import McpError

warnings.simplefilter("ignore", DeprecationWarning)
from mcp.client.websocket import websocket_client  # noqa: E402

SAMPLED = 0


async def sampling(_context, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
    global SAMPLED
    SAMPLED += 1
    text = params.messages[0].content.text
    return types.CreateMessageResult(
        role="assistant",
        content=types.TextContent(type="text", text=f"sampled #{SAMPLED}: {text}"),
        model="e2e-model",
    )


async def refused(session: ClientSession, name: str, arguments: dict) -> dict:
    try:
        result = await session.call_tool(name, arguments)
        return {"ok": result.content[0].text, "isError": result.isError}
    except McpError as e:
        return {"code": e.error.code, "message": e.error.message}


async def main(url: str, mode: str) -> None:
    out: dict = {}
    async with websocket_client(url) as (read, write):
        async with ClientSession(read, write, sampling_callback=sampling) as session:
            init = await session.initialize()
            out["protocolVersion"] = init.protocolVersion
            out["serverName"] = init.serverInfo.name
            tools = await session.list_tools()
            out["tools"] = sorted(t.name for t in tools.tools)
            progress: list = []

            async def on_progress(p: float, total: float | None, _message: str | None) -> None:
                progress.append({"progress": p, "total": total, "at": time.monotonic()})

            if mode == "everything":
                echo = await session.call_tool("echo", {"message": "hello from Python"})
                out["echo"] = echo.content[0].text
                slow = await session.call_tool(
                    "trigger-long-running-operation",
                    {"duration": 1.2, "steps": 4},
                    progress_callback=on_progress,
                )
                out["slow"] = {"text": slow.content[0].text, "resultAt": time.monotonic(), "progress": progress}
                out["denied"] = await refused(session, "get-env", {})
                out["limited"] = [await refused(session, "get-sum", {"a": i, "b": 1}) for i in range(2)]
                sampled = await session.call_tool("trigger-sampling-request", {"prompt": "py", "maxTokens": 5})
                out["sampling"] = sampled.content[0].text
                out["samplingRequests"] = SAMPLED
            else:
                echo = await session.call_tool("echo", {"text": "hello from Python"})
                out["echo"] = echo.content[0].text
                slow = await session.call_tool(
                    "slow_count", {"steps": 3, "delay_ms": 200}, progress_callback=on_progress
                )
                out["slow"] = {"text": slow.content[0].text, "resultAt": time.monotonic(), "progress": progress}
    print(json.dumps(out))


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2])

"""A member for federated routes' tests: a Python SDK server (`mcp` 2.x) whose every answer names
it, so a test can tell which member served a request.

    fed_member.py --name NAME [--stdio]

Over HTTP it prints `PORT <n>` once it listens on 127.0.0.1 (Streamable HTTP at /mcp, both
protocol eras). Serves:
  tool confirm(question)   asks the client (elicitation: a request to the client in the
                           session-based era, an `input_required` result in 2026-07-28) and
                           answers "<NAME>: <question> -> yes|no"
  tool announce()          sends notifications/tools/list_changed and resources/updated (for
                           note://<NAME>/readme) on the session's GET stream (session-based
                           era), then answers "announced"
  tool fail()              fails with "fail refused by <NAME>" (an error naming the tool)
  resource note://<NAME>/readme    "the note of <NAME>"
  prompt greet(person)     "<NAME> greets <person>"; completion of `person` answers
                           "<NAME>-ada", "<NAME>-alan" filtered by the typed prefix
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel

from mcp.server.mcpserver import Context, Elicit, MCPServer, Resolve
from mcp.types import Completion, PromptReference

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
from demo_server import serve  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--name", required=True)
parser.add_argument("--stdio", action="store_true")
ARGS = parser.parse_args()
NAME = ARGS.name

mcp = MCPServer(f"fed-member-{NAME}")


class Answer(BaseModel):
    ok: bool


def ask(question: str) -> Elicit[Answer]:
    return Elicit(f"{NAME} asks: {question}", Answer)


@mcp.tool()
def confirm(question: str, answer: Annotated[Answer, Resolve(ask)]) -> str:
    """Ask the user to confirm `question`."""
    return f"{NAME}: {question} -> {'yes' if answer.ok else 'no'}"


@mcp.tool()
async def announce(ctx: Context) -> str:
    """Tell the session that the tool list and the note changed."""
    session = ctx.request_context.session
    await session.send_tool_list_changed()
    await session.send_resource_updated(f"note://{NAME}/readme")
    return "announced"


@mcp.tool()
def fail() -> str:
    """Always fails, naming itself."""
    raise ValueError(f"fail refused by {NAME}")


@mcp.resource(f"note://{NAME}/readme")
def readme() -> str:
    return f"the note of {NAME}"


@mcp.prompt()
def greet(person: str) -> str:
    """A greeting."""
    return f"{NAME} greets {person}"


@mcp.completion()
async def complete(ref, argument, context):
    if isinstance(ref, PromptReference) and ref.name == "greet" and argument.name == "person":
        values = [f"{NAME}-{v}" for v in ("ada", "alan", "grace") if v.startswith(argument.value)]
        return Completion(values=values)
    return None


if __name__ == "__main__":
    if ARGS.stdio:
        mcp.run("stdio")
    else:
        asyncio.run(serve(mcp))

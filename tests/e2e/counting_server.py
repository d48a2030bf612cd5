"""A small MCP server that counts the lists it serves, for the federated routes' catalog cache.

    counting_server.py [--ttl MS] [--scope public|private]

Prints `PORT <n>` once it listens on 127.0.0.1. Speaks Streamable HTTP in both eras, enough for
a gateway: `initialize` (a session id), notifications (202), `tools/list` (two tools; with
`ttlMs`/`cacheScope` from the flags when the request is a 2026-07-28 one), and two tools:
`count` answers how many `tools/list` requests it has served; `touch` answers on an SSE stream
that first carries `notifications/tools/list_changed`.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LISTS = 0
LOCK = threading.Lock()
ARGS = argparse.Namespace()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *_args) -> None:
        pass

    def reply(self, status: int, body: bytes = b"", content_type: str = "application/json", headers=()) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.reply(405)

    def do_DELETE(self) -> None:
        self.reply(200)

    def do_POST(self) -> None:
        global LISTS
        length = int(self.headers.get("content-length", "0"))
        msg = json.loads(self.rfile.read(length))
        method = msg.get("method")
        if "id" not in msg or method is None:
            self.reply(202)
            return
        modern = "io.modelcontextprotocol/protocolVersion" in msg.get("params", {}).get("_meta", {})

        def answer(result: dict) -> bytes:
            if modern:
                result.setdefault("resultType", "complete")
            return json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}).encode()

        if method == "initialize":
            version = msg["params"].get("protocolVersion", "2025-11-25")
            body = answer({"protocolVersion": version, "capabilities": {"tools": {"listChanged": True}},
                           "serverInfo": {"name": "counting", "version": "1"}})
            self.reply(200, body, headers=[("mcp-session-id", "counting-session")])
        elif method == "server/discover":
            self.reply(200, answer({"supportedVersions": ["2026-07-28"], "capabilities": {"tools": {}},
                                    "ttlMs": 0, "cacheScope": "public"}))
        elif method == "tools/list":
            with LOCK:
                LISTS += 1
            schema = {"type": "object", "properties": {}}
            result = {"tools": [{"name": "count", "inputSchema": schema}, {"name": "touch", "inputSchema": schema}]}
            if modern:
                result.update({"ttlMs": ARGS.ttl, "cacheScope": ARGS.scope})
            self.reply(200, answer(result))
        elif method == "tools/call" and msg["params"]["name"] == "count":
            with LOCK:
                n = LISTS
            self.reply(200, answer({"content": [{"type": "text", "text": str(n)}]}))
        elif method == "tools/call" and msg["params"]["name"] == "touch":
            note = {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}
            done = json.loads(answer({"content": [{"type": "text", "text": "touched"}]}))
            body = "".join(f"event: message\ndata: {json.dumps(m)}\n\n" for m in (note, done)).encode()
            self.reply(200, body, content_type="text/event-stream")
        else:
            self.reply(200, json.dumps({"jsonrpc": "2.0", "id": msg["id"],
                                        "error": {"code": -32601, "message": f"no {method}"}}).encode())


def main() -> None:
    global ARGS
    parser = argparse.ArgumentParser()
    parser.add_argument("--ttl", type=int, default=60000)
    parser.add_argument("--scope", default="public")
    ARGS = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(f"PORT {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())

"""A hostile MCP upstream that speaks raw HTTP, for what no SDK server would send.

    raw_upstream.py [--require-token TOKEN]

Prints `PORT <n>` once it listens on 127.0.0.1. With --require-token, a POST without
`Authorization: Bearer TOKEN` is answered 401 with a `WWW-Authenticate` challenge pointing at
this server's own (made-up) authorization metadata, as an MCP server with OAuth does. Otherwise
it answers POSTs by JSON-RPC method (and tool name):

  tools/list          an SSE event that never ends: `data: {...` and then 1 KiB of list items
                      every 10 ms, with no blank line, until the client goes away
  resources/list      a JSON answer of 1 MiB
  prompts/list        a small, ordinary JSON answer
  tools/call big_event
                      one complete SSE event of 1 MiB (then the stream ends)
  anything else       a small JSON result
"""

from __future__ import annotations

import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", "0"))
        request = json.loads(self.rfile.read(length) or b"{}")
        if REQUIRED_TOKEN and self.headers.get("authorization") != f"Bearer {REQUIRED_TOKEN}":
            body = b'{"error":"invalid_token"}'
            self.send_response(401)
            self.send_header("www-authenticate", 'Bearer resource_metadata="http://upstream.example/.well-known/oauth-protected-resource"')
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        method = request.get("method")
        rid = json.dumps(request.get("id"))
        name = (request.get("params") or {}).get("name")
        if method == "tools/list":
            self.sse_head()
            try:
                self.wfile.write(f'data: {{"jsonrpc":"2.0","id":{rid},"result":{{"tools":['.encode())
                item = b'{"name":"t","description":"' + b"x" * 990 + b'"},'
                while True:
                    self.wfile.write(item)
                    self.wfile.flush()
                    time.sleep(0.01)
            except (BrokenPipeError, ConnectionResetError):
                return
        if method == "resources/list":
            resources = [{"uri": f"file:///r/{i}", "name": "r" + "x" * 1000} for i in range(1024)]
            return self.json({"jsonrpc": "2.0", "id": request.get("id"), "result": {"resources": resources}})
        if method == "tools/call" and name == "big_event":
            self.sse_head()
            text = "y" * (1024 * 1024)
            body = json.dumps({"jsonrpc": "2.0", "id": request.get("id"),
                               "result": {"content": [{"type": "text", "text": text}]}})
            self.wfile.write(f"data: {body}\n\n".encode())
            self.wfile.flush()
            self.close_connection = True
            return
        if method == "prompts/list":
            return self.json({"jsonrpc": "2.0", "id": request.get("id"), "result": {"prompts": [{"name": "p"}]}})
        return self.json({"jsonrpc": "2.0", "id": request.get("id"), "result": {}})

    def sse_head(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("connection", "close")
        self.end_headers()

    def json(self, message) -> None:
        body = json.dumps(message).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


REQUIRED_TOKEN: str | None = None


def main() -> None:
    global REQUIRED_TOKEN
    if len(sys.argv) == 3 and sys.argv[1] == "--require-token":
        REQUIRED_TOKEN = sys.argv[2]
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(f"PORT {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)

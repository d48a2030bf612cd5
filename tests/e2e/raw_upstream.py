"""A hostile MCP upstream that speaks raw HTTP, for what no SDK server would send.

    raw_upstream.py [--require-token TOKEN] [--tools-list FAULT]

Prints `PORT <n>` once it listens on 127.0.0.1. With --require-token, a POST without
`Authorization: Bearer TOKEN` is answered 401 with a `WWW-Authenticate` challenge pointing at
this server's own (made-up) authorization metadata, as an MCP server with OAuth does. Otherwise
it answers POSTs by JSON-RPC method (and tool name):

  tools/list          an SSE event that never ends: `data: {...` and then 1 KiB of list items
                      every 10 ms, with no blank line, until the client goes away
  tools/list with cursor `respelled`
                      a JSON list whose `tools` member comes three times, once spelled
                      `t\u006fols`, each copy holding `add` (spelled `add`, `\u0061dd`,
                      `a\u0064d`; a name key spelled `n\u0061me`) beside `echo`
  tools/list with cursor `malformed`, `id_twice` or `deep`
                      a list holding `add` that is not JSON deep inside an entry (a bad escape
                      in its schema), whose `id` member comes again after the result, or with a
                      schema nested 200 levels deep (past the 127 a hooked message may nest);
                      with --tools-list FAULT, every tools/list is answered as cursor FAULT
  resources/list      a JSON answer of 1 MiB
  prompts/list        a small, ordinary JSON answer
  resources/templates/list
                      a JSON answer of 17 MiB (past what a federated route reads whole)
  tools/call big_event
                      one complete SSE event of 1 MiB (then the stream ends)
  tools/call huge_json a JSON answer of 17 MiB, a failed tool result naming `huge_json`
  tools/call with a fault's name (the faults a gateway must survive):
    reset_before_headers  the connection is reset before any response
    reset_mid_sse         an SSE stream with one progress event, then a reset
    reset_mid_json        a JSON answer announcing 1000 bytes, 10 sent, then a reset
    stall_after_headers   SSE headers, then nothing for 30 s
    malformed_sse         an event whose data is not JSON, then the result
    invalid_json          `{oops` as application/json
    wrong_content_type    an HTML page with status 200
    slow_answer           a JSON result after 1 s
    quiet_stream          a progress event, 0.8 s of quiet, half the result's event, 0.8 s of
                          quiet inside it, then the rest (keep-alive comments go between events)
    firehose              SSE events of 64 KiB as fast as the reader takes them, up to 1 GiB;
                          prints `FIREHOSE <bytes written>` when it ends or its reader is gone
    slow_stream           a progress event every 50 ms for 10 s, then the result; prints
                          `STREAM_END <id> completed` or `STREAM_END <id> cancelled` (when the
                          gateway stops reading, as it must once its client went away)
  anything else       a small JSON result
"""

from __future__ import annotations

import json
import socket
import struct
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
            challenge = 'Bearer resource_metadata="http://upstream.example/.well-known/oauth-protected-resource"'
            return self.send_body(401, "application/json", b'{"error":"invalid_token"}',
                                  {"www-authenticate": challenge})
        method = request.get("method")
        rid = json.dumps(request.get("id"))
        if "id" not in request:  # notifications and responses: accepted, nothing to answer
            return self.send_body(202)
        if method == "initialize":
            return self.json({"jsonrpc": "2.0", "id": request.get("id"), "result": {
                "protocolVersion": "2025-11-25", "capabilities": {"tools": {}, "prompts": {}},
                "serverInfo": {"name": "raw-upstream", "version": "1"}}})
        name = (request.get("params") or {}).get("name")
        if method == "tools/list" and (request.get("params") or {}).get("cursor") == "respelled":
            body = (
                '{"jsonrpc":"2.0","id":' + rid + ',"result":{'
                '"tools":[{"name":"add","inputSchema":{}},{"name":"echo","inputSchema":{}}],'
                '"t\\u006fols":[{"n\\u0061me":"\\u0061dd"},{"name":"echo"}],'
                '"tools":[{"name":"echo"},{"name":"a\\u0064d","inputSchema":{}}]}}'
            )
            return self.send_body(200, "application/json", body.encode())
        cursor = (request.get("params") or {}).get("cursor") or LIST_FAULT
        if method == "tools/list" and cursor in ("malformed", "id_twice", "deep"):
            tools = '[{"name":"echo","inputSchema":{"type":"object"}},{"name":"add","inputSchema":{}}]'
            if cursor == "malformed":
                tools = '[{"name":"echo","inputSchema":{"type":"obj\\q"}},{"name":"add"}]'
            if cursor == "deep":
                tools = '[{"name":"echo","inputSchema":' + "[" * 200 + "]" * 200 + '},{"name":"add"}]'
            body = '{"jsonrpc":"2.0","id":' + rid + ',"result":{"tools":' + tools + '}'
            if cursor == "id_twice":
                body += ',"id":' + rid
            return self.send_body(200, "application/json", (body + "}").encode())
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
        if method == "resources/templates/list" or (method == "tools/call" and name == "huge_json"):
            filler = "z" * (17 * 1024 * 1024)
            return self.json({"jsonrpc": "2.0", "id": request.get("id"), "result": {
                "isError": True, "content": [{"type": "text", "text": f"huge_json failed: {filler}"}]}})
        if method == "tools/call" and name in FAULTS:
            return FAULTS[name](self, request.get("id"))
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

    def do_GET(self) -> None:  # no server-initiated stream
        self.send_body(405)

    def do_DELETE(self) -> None:
        self.send_body(200)

    def send_body(self, status: int, content_type: str | None = None, body: bytes = b"",
                  headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        if content_type:
            self.send_header("content-type", content_type)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def sse_head(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("connection", "close")
        self.end_headers()

    def json(self, message) -> None:
        self.send_body(200, "application/json", json.dumps(message).encode())


def reset(handler) -> None:
    """Closes the connection with a TCP reset (no FIN): the peer sees it broken."""
    handler.wfile.flush()
    handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    handler.connection.close()
    handler.close_connection = True


def reset_before_headers(h, rid) -> None:
    reset(h)


def reset_mid_sse(h, rid) -> None:
    h.sse_head()
    progress = {"jsonrpc": "2.0", "method": "notifications/progress",
                "params": {"progressToken": 1, "progress": 1, "total": 2}}
    h.wfile.write(f"data: {json.dumps(progress)}\n\n".encode())
    h.wfile.flush()
    time.sleep(0.2)
    reset(h)


def reset_mid_json(h, rid) -> None:
    h.send_response(200)
    h.send_header("content-type", "application/json")
    h.send_header("content-length", "1000")
    h.end_headers()
    h.wfile.write(b'{"jsonrpc"')
    h.wfile.flush()
    time.sleep(0.2)
    reset(h)


def stall_after_headers(h, rid) -> None:
    h.sse_head()
    h.wfile.flush()
    time.sleep(30)


def malformed_sse(h, rid) -> None:
    h.sse_head()
    result = {"jsonrpc": "2.0", "id": rid, "result": {"content": [{"type": "text", "text": "after"}]}}
    h.wfile.write(b"data: {not json\n\n")
    h.wfile.write(f"data: {json.dumps(result)}\n\n".encode())
    h.wfile.flush()
    h.close_connection = True


def invalid_json(h, rid) -> None:
    h.send_body(200, "application/json", b"{oops")


def wrong_content_type(h, rid) -> None:
    h.send_body(200, "text/html", b"<html><body>not MCP</body></html>")


def slow_stream(h, rid) -> None:
    h.sse_head()
    try:
        for i in range(200):
            progress = {"jsonrpc": "2.0", "method": "notifications/progress",
                        "params": {"progressToken": 1, "progress": i, "total": 200}}
            h.wfile.write(f"data: {json.dumps(progress)}\n\n".encode())
            h.wfile.flush()
            time.sleep(0.05)
        result = {"jsonrpc": "2.0", "id": rid, "result": {"content": [{"type": "text", "text": "done"}]}}
        h.wfile.write(f"data: {json.dumps(result)}\n\n".encode())
        h.wfile.flush()
        print(f"STREAM_END {rid} completed", flush=True)
    except (BrokenPipeError, ConnectionResetError):
        print(f"STREAM_END {rid} cancelled", flush=True)


def slow_answer(h, rid) -> None:
    time.sleep(1)
    h.json({"jsonrpc": "2.0", "id": rid, "result": {"content": [{"type": "text", "text": "slow"}]}})


def firehose(h, rid) -> None:
    h.sse_head()
    progress = {"jsonrpc": "2.0", "method": "notifications/message",
                "params": {"level": "info", "data": "x" * (64 * 1024 - 100)}}
    event = f"data: {json.dumps(progress)}\n\n".encode()
    written = 0
    try:
        while written < (1 << 30):
            h.wfile.write(event)
            written += len(event)
        h.wfile.flush()
    except (BrokenPipeError, ConnectionResetError):
        pass
    print(f"FIREHOSE {written}", flush=True)


def quiet_stream(h, rid) -> None:
    """A progress event, 0.8 s of quiet, half of the result's event, 0.8 s of quiet inside it,
    then the rest: what a gateway's keep-alive comments may go between, and what they must not
    split."""
    h.sse_head()
    progress = {"jsonrpc": "2.0", "method": "notifications/progress",
                "params": {"progressToken": 1, "progress": 1}}
    h.wfile.write(f"data: {json.dumps(progress)}\n\n".encode())
    h.wfile.flush()
    time.sleep(0.8)
    result = json.dumps({"jsonrpc": "2.0", "id": rid,
                         "result": {"content": [{"type": "text", "text": "done"}]}})
    half = len(result) // 2
    h.wfile.write(f"data: {result[:half]}".encode())
    h.wfile.flush()
    time.sleep(0.8)
    h.wfile.write(f"{result[half:]}\n\n".encode())
    h.wfile.flush()
    h.close_connection = True


FAULTS = {f.__name__: f for f in (reset_before_headers, reset_mid_sse, reset_mid_json,
                                  stall_after_headers, malformed_sse, invalid_json,
                                  wrong_content_type, slow_stream, firehose, slow_answer,
                                  quiet_stream)}

REQUIRED_TOKEN: str | None = None
LIST_FAULT: str | None = None


def main() -> None:
    global REQUIRED_TOKEN, LIST_FAULT
    args = sys.argv[1:]
    while len(args) >= 2:
        flag, value, args = args[0], args[1], args[2:]
        if flag == "--require-token":
            REQUIRED_TOKEN = value
        elif flag == "--tools-list":
            LIST_FAULT = value
        else:
            sys.exit(f"unknown flag {flag}")
    if args:
        sys.exit(f"{args[0]} needs a value")
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(f"PORT {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)

"""POST a JSON-RPC request larger than the gateway's body limit with plain HTTP clients.

    py_big_body.py <url> <bytes>

Sends one `tools/call` whose arguments make the body about <bytes> long, once with Python's
urllib and once with httpx, and prints one JSON object: for each client the HTTP status and
body it read, or the exception it raised instead (a client that is still sending when the server
closes sees a broken pipe or a reset, not the answer).
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request

import httpx2


def body(size: int) -> bytes:
    padding = "x" * max(0, size - 120)
    return json.dumps({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                       "params": {"name": "echo", "arguments": {"text": padding}}}).encode()


HEADERS = {"content-type": "application/json", "accept": "application/json, text/event-stream",
           "mcp-protocol-version": "2025-11-25"}


def with_urllib(url: str, data: bytes) -> dict:
    request = urllib.request.Request(url, data=data, headers=HEADERS, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return {"status": r.status, "body": r.read().decode()}
    except urllib.error.HTTPError as e:
        return {"status": e.code, "body": e.read().decode()}
    except Exception as e:  # noqa: BLE001
        return {"raised": f"{type(e).__name__}: {e}"}


def with_httpx(url: str, data: bytes) -> dict:
    try:
        r = httpx2.post(url, content=data, headers=HEADERS, timeout=60)
        return {"status": r.status_code, "body": r.text}
    except Exception as e:  # noqa: BLE001
        return {"raised": f"{type(e).__name__}: {e}"}


def main(url: str, size: str) -> None:
    data = body(int(size))
    print(json.dumps({"urllib": with_urllib(url, data), "httpx": with_httpx(url, data)}), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:3])

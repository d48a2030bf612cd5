"""A minimal OpenID provider for the end-to-end tests: an ES256 key, its JWKS, discovery
metadata (OpenID and OAuth), and tokens signed with the key.

    idp.py --audience AUD [--scope "a b"] SUBJECT...

Prints `PORT <n>`, then `TOKEN <subject> <jwt>` per subject, then serves until killed.
"""

from __future__ import annotations

import argparse
import base64
import json
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
from cryptography.hazmat.primitives.asymmetric import ec


def b64(n: int) -> str:
    return base64.urlsafe_b64encode(n.to_bytes(32, "big")).rstrip(b"=").decode()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--audience", required=True)
    parser.add_argument("--scope", default="mcp:tools")
    parser.add_argument("subjects", nargs="+")
    args = parser.parse_args()

    key = ec.generate_private_key(ec.SECP256R1())
    numbers = key.public_key().public_numbers()
    jwk = {"kty": "EC", "crv": "P-256", "x": b64(numbers.x), "y": b64(numbers.y), "kid": "e2e-1", "use": "sig", "alg": "ES256"}
    documents: dict[str, dict] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            doc = documents.get(self.path)
            body = json.dumps(doc if doc is not None else {"error": "not found"}).encode()
            self.send_response(200 if doc is not None else 404)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    issuer = f"http://127.0.0.1:{server.server_address[1]}"
    metadata = {
        "issuer": issuer,
        "jwks_uri": f"{issuer}/jwks",
        "authorization_endpoint": f"{issuer}/authorize",
        "token_endpoint": f"{issuer}/token",
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code", "client_credentials"],
        "code_challenge_methods_supported": ["S256"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
    }
    documents["/jwks"] = {"keys": [jwk]}
    documents["/.well-known/openid-configuration"] = metadata
    documents["/.well-known/oauth-authorization-server"] = metadata

    print(f"PORT {server.server_address[1]}", flush=True)
    now = int(time.time())
    for sub in args.subjects:
        claims = {"iss": issuer, "aud": args.audience, "sub": sub, "iat": now, "exp": now + 3600, "scope": args.scope}
        token = jwt.encode(claims, key, algorithm="ES256", headers={"kid": "e2e-1"})
        print(f"TOKEN {sub} {token}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()

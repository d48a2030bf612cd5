#!/usr/bin/env bash
# Installs what the tests and the demo need, into ignored folders of this checkout. Idempotent and
# quick when everything is already there.
#
#   scripts/setup.sh            everything (Rust target, redis-server and openssl, Python SDK
#                               venv, npm SDK packages)
#   scripts/setup.sh --python   only what the demo needs (the Python SDK venv)
set -euo pipefail
cd "$(dirname "$0")/.."
only_python=${1:-}

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

if [ "$only_python" != "--python" ]; then
  # rust-toolchain.toml pins the compiler; with RUSTUP_AUTO_INSTALL=0 nothing is added implicitly.
  toolchain=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)
  if ! rustup run "$toolchain" rustc --version >/dev/null 2>&1; then
    say "installing Rust $toolchain"
    rustup toolchain install "$toolchain" --profile minimal -c rustfmt -c clippy
  fi
  if ! rustup target list --installed --toolchain "$toolchain" | grep -qx wasm32-wasip2; then
    say "adding the wasm32-wasip2 target (for WebAssembly plugins)"
    rustup target add --toolchain "$toolchain" wasm32-wasip2
  fi
fi

# System packages the tests use: a real Redis server for the multi-replica tests (Debian's
# package is enough; no service is started: the tests start their own on free loopback ports),
# and openssl, with which the TLS tests make their certificates.
missing=()
if [ "$only_python" != "--python" ]; then
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  command -v openssl >/dev/null 2>&1 || missing+=(openssl)
  # The admin dashboard's test drives a real headless browser (Debian's chromium).
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
fi
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]} (system packages)"
  if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Python: the official `mcp` SDK (client and server) in tests/e2e/.venv.
venv=tests/e2e/.venv
stamp="$venv/.installed-$(sha256sum tests/e2e/requirements.txt | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  say "installing the Python MCP SDK into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/e2e/requirements.txt
  rm -f "$venv"/.installed-* && touch "$stamp"
fi

if [ "$only_python" != "--python" ]; then
  # The Python SDK's 1.x line in a venv of its own: its WebSocket client is gone from 2.x.
  venv1=tests/e2e/.venv-mcp1
  stamp1="$venv1/.installed-$(sha256sum tests/e2e/requirements-mcp1.txt | cut -c1-16)"
  if [ ! -f "$stamp1" ]; then
    say "installing the Python MCP SDK 1.x (WebSocket client) into $venv1"
    python3 -m venv "$venv1"
    "$venv1/bin/pip" install --quiet --disable-pip-version-check -r tests/e2e/requirements-mcp1.txt
    rm -f "$venv1"/.installed-* && touch "$stamp1"
  fi
fi

if [ "$only_python" != "--python" ]; then
  # Node: the TypeScript SDK and server-everything, exactly as locked.
  lock_stamp="tests/e2e/node_modules/.installed-$(sha256sum tests/e2e/package-lock.json | cut -c1-16)"
  if [ ! -f "$lock_stamp" ]; then
    say "installing the TypeScript MCP SDK and server-everything (npm ci)"
    (cd tests/e2e && npm ci --no-audit --no-fund --loglevel=error)
    touch "$lock_stamp"
  fi
fi

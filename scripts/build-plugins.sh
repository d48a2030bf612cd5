#!/usr/bin/env bash
# Builds the example plugins (plugins/*) and the test fixtures (tests/plugins/*) as WebAssembly
# components and drops each .wasm into plugins/, where `file: <name>.wasm` finds it.
#   scripts/build-plugins.sh            # all of them
#   scripts/build-plugins.sh quota      # one (the crate name)
set -euo pipefail
cd "$(dirname "$0")/../plugins"
rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
if [ $# -gt 0 ]; then
  packages=()
  for p in "$@"; do packages+=(-p "$p"); done
  cargo build --quiet --target wasm32-wasip2 --release "${packages[@]}"
else
  cargo build --quiet --target wasm32-wasip2 --release --workspace
fi
out=../target/wasm32-wasip2/release
for crate in $(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(" ".join(p["name"] for p in json.load(sys.stdin)["packages"]))'); do
  file="${crate//-/_}.wasm"
  if [ -f "$out/$file" ] && { [ $# -eq 0 ] || [[ " $* " == *" $crate "* ]]; }; then
    cp "$out/$file" "./$file"
    echo "plugins/$file ($(wc -c < "./$file") bytes)"
  fi
done

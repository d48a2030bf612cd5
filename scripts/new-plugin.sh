#!/usr/bin/env bash
# Starts a new mcpgate plugin from plugins/template.
#
#   scripts/new-plugin.sh NAME          a new member of the plugins/ workspace, plugins/NAME
#   scripts/new-plugin.sh NAME DIR      a standalone crate in DIR (your own repository)
#
# It prints the two commands that follow: build the plugin, then run the demo (the example MCP
# server behind mcpgate, a real MCP client calling through it) with the plugin in the pipeline,
# from the config it writes next to the crate (NAME/mcpgate.yaml).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
name=${1:?usage: scripts/new-plugin.sh NAME [DIR]}
if ! [[ "$name" =~ ^[a-z][a-z0-9_]*$ ]]; then
  echo "plugin names are lower-case letters, digits and _ (they become <name>.wasm)" >&2
  exit 2
fi
dest=${2:-$repo/plugins/$name}
if [ -e "$dest/Cargo.toml" ]; then
  echo "$dest already holds a crate" >&2
  exit 1
fi
mkdir -p "$dest/src" "$dest/.cargo"
cat "$repo/plugins/template/src/lib.rs" \
  | sed -e "s/Template/Plugin_/g; s/template\.wasm/$name.wasm/; s/^\/\/!   template:/\/\/!   $name:/; s/pipeline: \[template\]/pipeline: [$name]/" \
  > "$dest/src/lib.rs"
sed -i "s/Plugin_/$(echo "$name" | sed -r 's/(^|_)([a-z])/\U\2/g')/g" "$dest/src/lib.rs"

if [ $# -ge 2 ]; then
  # Standalone: its own workspace, the SDK by path, the same build settings as plugins/.
  cat > "$dest/Cargo.toml" <<TOML
[package]
name = "$name"
version = "0.1.0"
edition = "2024"

[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
mcpgate-plugin-sdk = { path = "$repo/plugin-sdk" }
serde = { version = "1", features = ["derive"] }

[workspace]

[profile.release]
opt-level = 3
lto = true
codegen-units = 1
strip = true
panic = "abort"
TOML
  sed -n '/^\[target.wasm32-wasip2\]/,$p' "$repo/plugins/.cargo/config.toml" > "$dest/.cargo/config.toml"
  # Where cargo puts it: CARGO_TARGET_DIR when set, as cargo itself reads it.
  wasm="${CARGO_TARGET_DIR:-$dest/target}/wasm32-wasip2/release/$name.wasm"
  build="(cd $dest && cargo build --target wasm32-wasip2 --release)"
else
  rmdir "$dest/.cargo"
  sed -e "s/^name = \"template\"/name = \"$name\"/; s/^description = .*/description = \"An mcpgate plugin\"/" \
    "$repo/plugins/template/Cargo.toml" > "$dest/Cargo.toml"
  # Add it to the plugins workspace.
  sed -i "s|^members = \[|members = [\"$name\", |" "$repo/plugins/Cargo.toml"
  wasm="$name.wasm"
  build="scripts/build-plugins.sh $name"
fi

# A gateway config to try it with: the demo's (config/demo.yaml), the plugin in the pipeline.
sed -e '/^# /d' "$repo/config/demo.yaml" > "$dest/mcpgate.yaml"
cat >> "$dest/mcpgate.yaml" <<YAML
plugins:
  $name:
    file: $wasm
    config: {greeting: hello}
pipeline: [$name]
YAML
config=$dest/mcpgate.yaml
[ $# -ge 2 ] || config=plugins/$name/mcpgate.yaml

cat <<MSG
Created $dest (unit tests: cargo test, natively).
Build it, then watch it answer a real MCP client's requests in the demo (from $repo):
  \$ $build
  \$ scripts/demo.sh --config $config
To use it in your own gateway config:

plugins:
  $name:
    file: $wasm
    config: {greeting: hello}
pipeline: [$name]
MSG

# mcpgate tasks. Each recipe is a thin alias for a script, so nothing here needs `just` to work.

# Start the demo: mcpgate in front of the example MCP server (Ctrl-C to stop).
demo:
    scripts/demo.sh

# The whole test suite (installs the SDK peers first).
test:
    scripts/test.sh

# The edit-compile-test loop: lints, unit and in-process tests (no SDK peers, no end-to-end).
quick:
    scripts/test.sh --quick

# Install the SDK peers and the wasm32-wasip2 target.
setup:
    scripts/setup.sh

# The benchmark suite (BENCHMARKS.md): load benchmark against the floor, then micro-benchmarks.
bench *args:
    scripts/bench.sh {{args}}

# Coverage-guided fuzzing: every target for SECONDS each (RELIABILITY.md; CI runs a short smoke).
fuzz seconds="600" *targets:
    scripts/fuzz.sh {{seconds}} {{targets}}

# Soak: mixed load in both eras against real peers for MINUTES; fails on growth or a stray 5xx.
soak minutes="10" *args:
    scripts/soak.sh --minutes {{minutes}} {{args}}

# Check a config file.
validate config="config/mcpgate.example.yaml":
    cargo run -q -p mcpgate -- validate --config {{config}}

# Format and lint.
lint:
    cargo fmt --all
    cargo clippy --workspace --all-targets -- -D warnings

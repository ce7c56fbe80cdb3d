#!/usr/bin/env bash
# The whole test suite, as CI runs it: setup, formatting, lints, the fuzz
# targets' build, and every test of the workspace. Tests that need root or
# kernel features print SKIPPED loudly when they cannot run.
set -euo pipefail
cd "$(dirname "$0")/../.."
./packaging/dev/setup.sh
export DS_DENO="$PWD/.ds-tools/bin/deno"

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The fuzz crate is its own workspace; build it into the same target dir so
# shared dependencies are not compiled twice.
cargo build --manifest-path fuzz/Cargo.toml --target-dir target --locked
# The end-to-end tests run the workspace's binaries (ds-sandbox, the
# example apps) next to ds-host.
cargo build --workspace --bins --locked
# The sandbox suite and the end-to-end tests use the static ds-sandbox
# that run.sh ships (one more link, no recompilation).
DS_SANDBOX="$(./packaging/dev/static-sandbox.sh)"
export DS_SANDBOX
cargo test --workspace --locked

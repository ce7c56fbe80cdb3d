#!/usr/bin/env bash
# The main job: install what is missing, build, and start the development
# host on its embedded defaults (state under ./.ds-dev).
set -euo pipefail
cd "$(dirname "$0")/../.."
./packaging/dev/setup.sh
export DS_DENO="$PWD/.ds-tools/bin/deno"
cargo build --release --locked --workspace
exec ./target/release/ds-host --dev "$@"

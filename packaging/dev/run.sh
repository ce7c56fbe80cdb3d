#!/usr/bin/env bash
# The main job: install what is missing, build, and start the development
# host on its embedded defaults (state under ./.ds-dev).
set -euo pipefail
cd "$(dirname "$0")/../.."
./packaging/dev/setup.sh
export DS_DENO="$PWD/.ds-tools/bin/deno"
cargo build --release --locked --workspace
# The sandbox ships as a static executable (faster to start).
DS_SANDBOX="$(./packaging/dev/static-sandbox.sh --release)"
export DS_SANDBOX
exec ./target/release/ds-host --dev "$@"

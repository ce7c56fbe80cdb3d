#!/usr/bin/env bash
# Runs every benchmark in one go and rewrites their sections of
# docs/performance.md: the channel (ds-proto), sandbox start (ds-sandbox
# exec vs bwrap), the host (cold start, throughput vs nginx, memory,
# density), egress (proxy vs direct) and backups (restic vs tar | zstd,
# growth of hourly backups). Installs the reference tools the
# host benchmark needs (wrk, nginx) first. Run as root.
set -euo pipefail
cd "$(dirname "$0")/../.."
./packaging/dev/setup.sh

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
missing=()
for p in wrk nginx-light zstd; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "bench: installing ${missing[*]}"
    as_root apt-get update -q
    # The benchmark starts its own nginx; keep the package's from starting.
    printf '#!/bin/sh\nexit 101\n' | as_root tee /usr/sbin/policy-rc.d >/dev/null
    as_root chmod +x /usr/sbin/policy-rc.d
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" || {
        as_root rm -f /usr/sbin/policy-rc.d
        exit 1
    }
    as_root rm -f /usr/sbin/policy-rc.d
fi

export DS_DENO="$PWD/.ds-tools/bin/deno"
cargo build --release --locked --workspace --bins
# Measure the sandbox as it ships: the static build.
DS_SANDBOX="$(./packaging/dev/static-sandbox.sh --release)"
export DS_SANDBOX
cargo bench --locked -p ds-proto --bench channel
cargo bench --locked -p ds-sandbox --bench exec
cargo bench --locked -p ds-host --bench host
cargo bench --locked -p ds-host --bench backup
cargo bench --locked -p ds-cli --bench egress

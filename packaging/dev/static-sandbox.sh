#!/usr/bin/env bash
# Builds ds-sandbox as a static-pie executable and prints where it is:
#   packaging/dev/static-sandbox.sh [--release]
#   -> target/{debug,release}/static/ds-sandbox
#
# Why: every sandbox start execs ds-sandbox twice (the launcher, then the
# agent inside the new root), and the dynamic loader's work (mapping libc,
# libm, libgcc_s and binding their symbols) is about 0.9 ms of each exec
# (docs/performance.md). A static binary also needs no system library
# inside the sandbox for the agent. ds-sandbox resolves no names and uses no
# NSS, so static glibc is safe for it.
#
# How: `cargo rustc` passes `crt-static` to the final link of this one
# binary only (as RUSTFLAGS it would reach proc-macros and build scripts,
# which cannot be static); dependencies are the ones `cargo build` made, so
# this costs one relink. The result is copied out of Cargo's way because
# the next `cargo build` relinks target/*/ds-sandbox the usual way.
set -euo pipefail
cd "$(dirname "$0")/../.."

profile=debug
args=()
case "${1:-}" in
    --release) profile=release; args=(--release) ;;
    "") ;;
    *) echo "usage: $0 [--release]" >&2; exit 2 ;;
esac

cargo rustc --locked "${args[@]}" -p ds-sandbox --bin ds-sandbox -- -C target-feature=+crt-static >&2
mkdir -p "target/$profile/static"
out="target/$profile/static/ds-sandbox"
cp "target/$profile/ds-sandbox" "$out.new"
if readelf -l "$out.new" | grep -q "Requesting program interpreter"; then
    echo "static-sandbox: $out.new is still dynamically linked" >&2
    exit 1
fi
mv "$out.new" "$out"
echo "$PWD/$out"

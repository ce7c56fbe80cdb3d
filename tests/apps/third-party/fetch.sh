#!/usr/bin/env bash
# Fetches and builds the third-party apps the real-app tests run
# (ds-cli/tests/dsctl/real_apps.rs); none of their code is in this
# repository. Each is built once per target directory, so once per CI run:
#   dufs/bin/dufs         dufs, a file server, from crates.io (cargo install)
#   npm/express/          Express 4 and its dependencies, from npm
#   npm/ws/               ws (WebSockets for Node), from npm
# Versions are pinned (dufs with its own Cargo.lock) so that a release
# upstream cannot change what the tests run. Prints the directory.
set -euo pipefail
root="$(cd "$(dirname "$0")/../../.." && pwd)"
out="${DS_THIRD_PARTY:-$root/target/third-party}"
DUFS=0.47.0
EXPRESS=4.21.2
WS=8.18.0
mkdir -p "$out"
# Two test binaries may ask at once; one builds, the other waits.
exec 9>"$out/.lock"
flock 9

if [ ! -x "$out/dufs/bin/dufs" ] || [ "$("$out/dufs/bin/dufs" --version)" != "dufs $DUFS" ]; then
    echo "third-party: building dufs $DUFS from crates.io" >&2
    # A debug build: a third of the release build's time, fast enough for
    # the tests. Without TLS (the host terminates it).
    cargo install --quiet --locked --debug --no-default-features --force \
        --root "$out/dufs" --target-dir "$out/build" "dufs@$DUFS" >&2
    rm -rf "$out/build"
fi

# npm NAME DIR SPEC...: installs SPEC into DIR/node_modules (with its
# package.json and lock file), unless that exact set is already there.
npm_app() {
    local dir="$out/npm/$1"
    shift
    if [ "$(cat "$dir/.specs" 2>/dev/null)" = "$*" ]; then
        return
    fi
    echo "third-party: fetching $* from npm" >&2
    rm -rf "$dir"
    mkdir -p "$dir"
    printf '{ "name": "ds-third-party", "private": true, "type": "module" }\n' > "$dir/package.json"
    (cd "$dir" && npm install --silent --no-audit --no-fund --omit=dev --save-exact "$@" >&2)
    printf '%s' "$*" > "$dir/.specs"
}
npm_app express "express@$EXPRESS"
npm_app ws "ws@$WS"
echo "$out"

#!/usr/bin/env bash
# Builds the Debian package with cargo-deb and prints its path:
#   packaging/deb/build.sh [--version DEBIAN_VERSION] [--out DIR]
# Release binaries (ds-host, dsctl, the static ds-sandbox), man pages and
# shell completions generated from the binaries' clap definitions
# (packaging/docgen), the conffile, the unit and the maintainer scripts.
set -euo pipefail
cd "$(dirname "$0")/../.."

version=""
out="target/debian"
while [ $# -gt 0 ]; do
    case "$1" in
    --version) version="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    *) echo "usage: $0 [--version DEBIAN_VERSION] [--out DIR]" >&2; exit 2 ;;
    esac
done

# cargo-deb from the crate registry, pinned; installed once per machine.
cargo_deb_version=3.8.0
if ! cargo deb --version 2>/dev/null | grep -q "$cargo_deb_version"; then
    echo "deb: installing cargo-deb $cargo_deb_version" >&2
    cargo install --locked --quiet cargo-deb --version "$cargo_deb_version" >&2
fi

cargo build --release --locked -p ds-host -p ds-cli >&2
./packaging/dev/static-sandbox.sh --release >/dev/null
# The generator needs no optimisation: the test build's profile.
rm -rf target/docgen
cargo run --locked --quiet -p ds-docgen -- target/docgen >&2
gzip -9n target/docgen/man/*.8
# The package's changelog names the version being built (cargo-deb
# compresses it into changelog.Debian.gz).
deb_version="${version:-$(cargo metadata --format-version 1 --no-deps \
    | sed -n 's/.*"name":"ds-host","version":"\([^"]*\)".*/\1/p')-1}"
cat > target/docgen/changelog <<CHANGES
ds ($deb_version) unstable; urgency=medium

  * Built from this checkout; see /usr/share/doc/ds/README.md.

 -- ds developers <ds@example.invalid>  $(date -R)
CHANGES

mkdir -p "$out"
args=(--no-build --strip --locked -p ds-host --output "$out")
if [ -n "$version" ]; then
    args+=(--deb-version "$version")
fi
cargo deb "${args[@]}" | tail -1

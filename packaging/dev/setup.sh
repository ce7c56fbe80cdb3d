#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine with only Rust lacks to build and
# test ds. Idempotent: every step checks first. Tools that are not Debian
# packages (Deno) go under .ds-tools/ in the checkout.
set -euo pipefail
cd "$(dirname "$0")/../.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# C toolchain and libraries: libseccomp for the sandbox's filter, static
# glibc for the hostile-app suite's test programs, bubblewrap as the
# benchmark's reference sandbox, util-linux for unshare/ipcmk in the suite,
# curl as the stock native client the egress suite runs inside a sandbox,
# restic as the backup engine (and the suite checks its repositories with it),
# sqlite3 for the suite's integrity checks of databases restored from backups.
packages=(gcc libc6-dev pkg-config libseccomp-dev bubblewrap util-linux procps curl restic sqlite3)
# The Debian package and its VM suite (tests/vm/run.sh): lintian checks
# the .deb; mmdebstrap builds a Debian 12 root, e2fsprogs makes it a disk
# image and reads results back, qemu boots it.
packages+=(lintian mmdebstrap e2fsprogs qemu-system-x86)
# npm fetches Deno; a machine with Node.js from elsewhere already has it
# (and Debian's npm would conflict with that Node.js).
command -v npm >/dev/null 2>&1 || packages+=(npm)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    as_root apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The SFTP backup target's test starts its own sshd on loopback; the
# package's service is not wanted on a build machine, so it is installed
# with service starts refused (policy-rc.d, which invoke-rc.d and
# deb-systemd-invoke honour) and left disabled under systemd.
if ! dpkg-query -W -f='${Status}' openssh-server 2>/dev/null | grep -q "install ok installed"; then
    echo "setup: installing openssh-server (its service not started)"
    policy=/usr/sbin/policy-rc.d
    made_policy=
    if [ ! -e "$policy" ]; then
        as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy"
        made_policy=1
        trap 'as_root rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    as_root apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends openssh-server
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        as_root systemctl disable --now ssh.service ssh.socket >/dev/null 2>&1 || true
    fi
    if [ -n "$made_policy" ]; then as_root rm -f "$policy"; trap - EXIT; fi
fi

# Rust components the checks need.
for c in clippy rustfmt; do
    rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c"
done
# Static musl Rust programs are one of the sandbox's functional tests; when
# the target cannot be fetched those tests say so and count as skipped.
rustup target list --installed 2>/dev/null | grep -q x86_64-unknown-linux-musl \
    || rustup target add x86_64-unknown-linux-musl \
    || echo "setup: WARNING: could not add the x86_64-unknown-linux-musl target; musl tests will be skipped"

# Deno, from the npm package the Deno project publishes.
deno=.ds-tools/deno/node_modules/@deno/linux-x64-glibc/deno
if [ ! -x "$deno" ]; then
    echo "setup: fetching Deno from npm (@deno/linux-x64-glibc)"
    mkdir -p .ds-tools/deno
    npm install --silent --no-audit --no-fund --prefix .ds-tools/deno @deno/linux-x64-glibc@2
fi
mkdir -p .ds-tools/bin
ln -sf "../deno/node_modules/@deno/linux-x64-glibc/deno" .ds-tools/bin/deno
.ds-tools/bin/deno --version | head -1

#!/usr/bin/env bash
# The Debian 12 VM suite: builds a Debian 12 root from the Debian archive
# (mmdebstrap: Debian's own kernel, systemd, cgroup v2), puts the .deb
# packages (this version and a lower one built here), a test app, the
# sandbox suite and guest.sh in it, turns it into a disk image (mke2fs -d,
# no mount), and boots it twice with qemu and no network device: guest.sh
# runs at boot, reboots once, and leaves its results on the disk, read
# back with debugfs. KVM is used only if a quick probe boots; otherwise
# software emulation (TCG). Nothing is cached between runs.
#
#   tests/vm/run.sh          (root; packaging/dev/test.sh runs it)
#
# Without its tools it prints SKIPPED and fails unless DS_ALLOW_SKIPS=1.
set -euo pipefail
cd "$(dirname "$0")/../.."
start=$(date +%s)

skip() {
    echo "SKIPPED vm_suite: $1"
    if [ "${DS_ALLOW_SKIPS:-}" = 1 ]; then exit 0; fi
    echo "vm: FAILED: the VM suite did not run (set DS_ALLOW_SKIPS=1 only where it cannot)"
    exit 1
}
[ "$(id -u)" = 0 ] || skip "needs root (mmdebstrap, a root file system with root-owned files)"
for tool in mmdebstrap qemu-system-x86_64 mke2fs debugfs; do
    command -v "$tool" >/dev/null || skip "$tool is not installed (run packaging/dev/setup.sh)"
done

work=target/vm
rm -rf "$work"
mkdir -p "$work/payload/debs" "$work/payload/programs" "$work/payload/hello-native"
payload="$work/payload"

echo "vm: building the packages and the payload"
cp "$(packaging/deb/build.sh)" "$payload/debs/new.deb"
cp "$(packaging/deb/build.sh --version 0.0.9-1 --out "$work/old")" "$payload/debs/old.deb"
# lintian: no errors (warnings we accept are overridden in the package).
lintian --fail-on error "$payload/debs/new.deb"
cargo build --release --locked -p hello-native
cp packaging/examples/hello-native/ds-app.toml target/release/hello-native "$payload/hello-native/"
# Two bombs, to see the cgroup v2 limits hold inside the service's subtree.
for bomb in membomb forkbomb; do
    mkdir -p "$payload/$bomb"
    gcc -O2 -static -DDEFAULT_MODE="\"$bomb\"" -o "$payload/$bomb/$bomb" tests/hostile/workload.c
    printf 'name = "%s"\nversion = "1.0.0"\nruntime = "native"\nentrypoint = "%s"\n' "$bomb" "$bomb" \
        > "$payload/$bomb/ds-app.toml"
done
suite=$(cargo test --locked -p ds-sandbox --test sandbox_suite --no-run --message-format=json \
    | sed -n 's/.*"executable":"\([^"]*sandbox_suite[^"]*\)".*/\1/p' | tail -1)
[ -x "$suite" ] || { echo "vm: no sandbox suite binary"; exit 1; }
cp "$suite" "$payload/sandbox_suite"
gcc -O2 -static -pthread -o "$payload/programs/hostile" tests/hostile/hostile.c
gcc -O2 -static -pthread -o "$payload/programs/workload" tests/hostile/workload.c
gcc -O2 -pthread -o "$payload/programs/workload-dynamic" tests/hostile/workload.c
rustc --edition 2021 -O --target x86_64-unknown-linux-musl -o "$payload/programs/musl-app" tests/hostile/musl_app.rs
cp -L .ds-tools/bin/deno "$payload/deno"
cp tests/vm/guest.sh "$payload/guest.sh"

echo "vm: building the Debian 12 root (mmdebstrap)"
root="$work/root"
mmdebstrap --quiet --variant=minbase \
    --include=systemd,systemd-sysv,udev,dbus,linux-image-amd64,adduser,procps,curl,ca-certificates,kmod,restic,e2fsprogs,mount \
    bookworm "$root"
cp -a "$payload" "$root/vm"
echo ds-vm > "$root/etc/hostname"
# A getty on the serial console would hang up the test's console output.
ln -sf /dev/null "$root/etc/systemd/system/serial-getty@ttyS0.service"
cat > "$root/etc/systemd/system/ds-vm-test.service" <<'UNIT'
[Unit]
Description=ds VM suite (tests/vm/guest.sh)
After=basic.target
[Service]
Type=oneshot
ExecStart=/vm/guest.sh
StandardOutput=journal+console
StandardError=journal+console
TimeoutStartSec=infinity
[Install]
WantedBy=multi-user.target
UNIT
ln -sf /etc/systemd/system/ds-vm-test.service "$root/etc/systemd/system/multi-user.target.wants/ds-vm-test.service"
kernel=$(ls "$root"/boot/vmlinuz-* | head -1)
initrd=$(ls "$root"/boot/initrd.img-* | head -1)
cp "$kernel" "$work/vmlinuz"
cp "$initrd" "$work/initrd.img"
image="$work/disk.img"
size_mb=$(( $(du -sm "$root" | cut -f1) + 1536 ))
mke2fs -q -t ext4 -L ds-vm -d "$root" "$image" "${size_mb}M"
rm -rf "$root"

qemu=(qemu-system-x86_64 -m 3072 -smp 2 -nographic -no-reboot -nic none
    -kernel "$work/vmlinuz" -initrd "$work/initrd.img"
    -drive "file=$image,if=virtio,format=raw")
accel=tcg
if [ -w /dev/kvm ]; then
    # A nested KVM guest can hang at boot: use KVM only if a kernel boots
    # to its init (which exits at once: a panic, and -no-reboot ends it).
    if timeout 30 "${qemu[@]}" -accel kvm -snapshot \
        -append "root=/dev/vda ro console=ttyS0 init=/bin/true panic=-1" \
        > "$work/kvm-probe.log" 2>&1 && grep -aq "Attempted to kill init" "$work/kvm-probe.log"; then
        accel=kvm
    fi
fi
echo "vm: booting with $accel"
for boot in 1 2; do
    timeout 2400 "${qemu[@]}" -accel "$accel" \
        -append "root=/dev/vda rw console=ttyS0 quiet systemd.show_status=0" \
        > "$work/console-$boot.log" 2>&1 || true
    grep -a -E '(PASS|FAIL|INFO|VM) ' "$work/console-$boot.log" | sed 's/^.*\]: //' || true
done

results="$work/results.log"
debugfs -R "cat /vm/results/log" "$image" > "$results" 2>/dev/null || true
for f in security.txt sandbox-suite.txt cgls.txt journal-sample.json; do
    debugfs -R "cat /vm/results/$f" "$image" > "$work/$f" 2>/dev/null || true
done
elapsed=$(( $(date +%s) - start ))
passes=$(grep -c '^PASS' "$results" || true)
fails=$(grep -c '^FAIL' "$results" || true)
echo "vm: $passes passed, $fails failed, in ${elapsed}s ($accel); details in $work/"
if [ "$fails" != 0 ] || ! grep -q '^VM SUITE DONE' "$results"; then
    grep '^FAIL' "$results" || echo "vm: the suite did not finish (see $work/console-*.log)"
    exit 1
fi

#!/bin/bash
# Runs inside the Debian 12 test VM at boot (ds-vm-test.service), as root,
# on Debian's own kernel, systemd and cgroup v2. Phase 1 (first boot):
# install the older package, upgrade, serve, limits, kill -9, the sandbox
# suite under the unit's own hardening, the journal, systemd-analyze,
# remove and reinstall; then reboot. Phase 2: everything came back; purge.
# Every check writes "PASS name" or "FAIL name: why" to /vm/results/log
# (read back by tests/vm/run.sh with debugfs) and to the console.
set -u
R=/vm/results
mkdir -p "$R"
phase=$(cat "$R/phase" 2>/dev/null || echo 1)
export PATH=/usr/sbin:/usr/bin:/sbin:/bin

say() { echo "$*" | tee -a "$R/log" > /dev/console; }
pass() { say "PASS $1"; }
fail() {
    say "FAIL $1: $2"
    # The host's side of it, once per failure.
    { systemctl status --no-pager ds-host; journalctl -u ds-host -n 30 --no-pager;
      tail -n 15 /var/lib/ds/appspaces/*/log/app.log; } 2>&1 \
        | sed 's/^/  | /' | tee -a "$R/log" > /dev/console
}
# check NAME COMMAND...: PASS if it succeeds, else FAIL with its output's tail.
check() {
    local name=$1 out
    shift
    if out=$("$@" 2>&1); then pass "$name"; else fail "$name" "$(printf '%s' "$out" | tail -n 8 | tr '\n' ' ')"; fi
}
# Waits up to $1 seconds for COMMAND... to succeed.
wait_for() {
    local secs=$1
    shift
    for _ in $(seq $((secs * 5))); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    "$@"
}

HOST=hello.localhost
get() { curl -sS -k --max-time 60 --resolve "$HOST:443:127.0.0.1" "https://$HOST$1"; }
serving() { [ "$(get /hello)" = hello ]; }
# The appspace's data is in its disk image (appspaces/NAME/disk/data),
# mounted in the service's own mount namespace (the unit's ProtectSystem
# gives it one): read there while the host runs, else from the old place.
visits() {
    { nsenter -t "$(main_pid)" -m sh -c 'cat /var/lib/ds/appspaces/*/disk/data/visits' \
        || cat /var/lib/ds/appspaces/*/data/visits; } 2>/dev/null | head -1 | grep . || echo 0
}
main_pid() { systemctl show -p MainPID --value ds-host; }
active() { systemctl is-active --quiet ds-host; }

phase1() {
    say "VM phase 1: $(uname -r), systemd $(systemctl --version | head -1 | cut -d' ' -f2), cgroup $(stat -fc %T /sys/fs/cgroup)"
    check install-older-package dpkg -i /vm/debs/old.deb
    check started-by-postinst wait_for 60 active
    check dsctl-status dsctl status
    check app-install dsctl app install /vm/hello-native
    check appspace-create dsctl appspace create --app hello-native --domain "$HOST"
    check limits-set dsctl appspace limits "$HOST" --memory 96M --pids 64 --cpu 0.5
    check serves-https wait_for 120 serving
    get / >/dev/null
    check cgroup-in-service-subtree cgroup_in_subtree
    check cgroup-v2-limits cgroup_limits
    check supervisor-leaf grep -q 'ds-host.service/supervisor' "/proc/$(main_pid)/cgroup"
    systemd-cgls --no-pager -u ds-host.service > "$R/cgls.txt" 2>&1
    check cgls-shows-the-sandbox grep -q 'as-' "$R/cgls.txt"
    check front-door-user getent passwd ds-front
    check front-door-confined front_door_confined
    check status-shows-both-processes sh -c "dsctl status | grep -q 'front door: *pid [0-9]*, uid $(id -u ds-front),.*Landlock ABI [0-9].*seccomp phase 2' && dsctl status | grep -q 'supervisor: *pid $(main_pid), uid 0'"
    check front-door-restart-keeps-appspaces front_door_restart
    check backup-freezes-on-cgroup-v2 backup_frozen_and_restored
    check disk-limits-by-image sh -c "dsctl status | grep -q 'disk limits: *disk image' && dsctl appspace show '$HOST' | grep -q 'disk image'"
    check disk-image-limit-holds-under-the-unit disk_image_limit
    check disk-project-quota-holds project_quota_limit
    check memory-limit-holds bomb membomb --memory 48M "out of memory (the sandbox's limit is 48 MiB"
    check pids-limit-holds bomb forkbomb --pids 16 "forks="
    check pids-limit-bounds-forks sh -c "grep -ho 'forks=[0-9]*' /var/lib/ds/appspaces/forkbomb/log/app.log | head -1 | awk -F= '\$2 < 16 { ok = 1 } END { exit !ok }'"

    local before conf_sum
    before=$(visits)
    conf_sum=$(md5sum < /etc/ds/ds-host.toml)
    check upgrade dpkg -i /vm/debs/new.deb
    check upgraded-version sh -c 'dpkg-query -W -f="\${Version}" ds | grep -qx "0.1.0-1"'
    check active-after-upgrade wait_for 60 active
    check conffile-kept sh -c "[ \"\$(md5sum < /etc/ds/ds-host.toml)\" = '$conf_sum' ]"
    check appspace-kept-after-upgrade sh -c "dsctl appspace list | grep -q '$HOST'"
    check serves-after-upgrade wait_for 120 serving
    get / >/dev/null
    check data-kept-after-upgrade test "$(visits)" -gt "$before"

    before=$(visits)
    local pid
    pid=$(main_pid)
    kill -9 "$pid"
    check restarted-after-kill-9 wait_for 60 sh -c "[ \"\$(systemctl show -p MainPID --value ds-host)\" != '$pid' ] && systemctl is-active --quiet ds-host"
    check serves-after-kill-9 wait_for 120 serving
    check nothing-lost-after-kill-9 test "$(visits)" -ge "$before"
    check audit-kept-after-kill-9 sh -c 'dsctl audit | grep -q app'

    check journal-structured-fields sh -c "journalctl -u ds-host -o json --no-pager | grep -q '\"APPSPACE\":\"'"
    journalctl -u ds-host -o json --no-pager | grep '"APPSPACE"' | head -3 > "$R/journal-sample.json"
    systemd-analyze security --no-pager ds-host > "$R/security.txt" 2>&1
    say "INFO systemd-analyze security ds-host: $(tail -1 "$R/security.txt")"

    check sandbox-suite-under-the-unit sandbox_suite_under_unit

    check remove dpkg -r ds
    check state-kept-after-remove test -f /var/lib/ds/state.db
    check conffile-kept-after-remove test -f /etc/ds/ds-host.toml
    check service-gone-after-remove sh -c '! systemctl is-active --quiet ds-host'
    check reinstall dpkg -i /vm/debs/new.deb
    check appspace-back-after-reinstall wait_for 60 sh -c "dsctl appspace list | grep -q '$HOST'"
    check serves-after-reinstall wait_for 120 serving
    visits > "$R/visits-before-reboot"
    echo 2 > "$R/phase"
    say "VM phase 1 done"
    sync
    systemctl reboot
}

phase2() {
    say "VM phase 2 (after a reboot)"
    check active-after-reboot wait_for 120 active
    check serves-after-reboot wait_for 120 serving
    check data-kept-after-reboot test "$(visits)" -ge "$(cat "$R/visits-before-reboot")"
    check purge dpkg -P ds
    check state-gone-after-purge test ! -e /var/lib/ds
    check config-gone-after-purge test ! -e /etc/ds
    check front-door-user-gone-after-purge sh -c '! getent passwd ds-front' 
    echo done > "$R/phase"
    say "VM SUITE DONE"
    sync
    systemctl poweroff
}

# bomb NAME LIMIT-FLAG VALUE NEEDLE: an appspace whose app exhausts a
# resource at once; its log must show the limit stopped it.
bomb() {
    local name=$1 flag=$2 value=$3 needle=$4
    dsctl app install "/vm/$name" && dsctl appspace create --app "$name" --domain "$name.localhost" \
        && dsctl appspace limits "$name.localhost" "$flag" "$value" || return 1
    curl -sk --max-time 60 --resolve "$name.localhost:443:127.0.0.1" "https://$name.localhost/" >/dev/null
    wait_for 60 grep -qF "$needle" "/var/lib/ds/appspaces/$name/log/app.log"
    local rc=$?
    grep -F "$needle" "/var/lib/ds/appspaces/$name/log/app.log" | head -2
    dsctl appspace stop "$name.localhost" >/dev/null 2>&1
    return $rc
}

# The front door: the supervisor's child that runs __front-door.
front_pid() {
    local p
    for p in $(pgrep -P "$(main_pid)"); do
        tr '\0' ' ' < "/proc/$p/cmdline" | grep -q __front-door && { echo "$p"; return 0; }
    done
    return 1
}

# The front door's view from the kernel: its own uid, no capability in
# any set, no_new_privs, seccomp, and no descriptor of the state database.
front_door_confined() {
    local p uid
    p=$(front_pid) || { echo "no front door process"; return 1; }
    uid=$(id -u ds-front)
    grep -E '^(Uid|Gid|Groups|Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs|Seccomp):' "/proc/$p/status"
    grep -qE "^Uid:\s+$uid\s+$uid\s+$uid\s+$uid$" "/proc/$p/status" || return 1
    for set in CapInh CapPrm CapEff CapBnd CapAmb; do
        grep -qE "^$set:\s+0000000000000000$" "/proc/$p/status" || { echo "$set not empty"; return 1; }
    done
    grep -qE '^NoNewPrivs:\s+1$' "/proc/$p/status" && grep -qE '^Seccomp:\s+2$' "/proc/$p/status" || return 1
    if ls -l "/proc/$p/fd" | grep -q 'state.db'; then echo "it holds the state database"; return 1; fi
}

# A backup of the running appspace freezes it (cgroup v2) rather than
# stopping it, a restore puts the data back, and the backups verify.
backup_frozen_and_restored() {
    local taken id before
    get / >/dev/null
    before=$(visits)
    taken=$(dsctl --json backup create "$HOST") || return 1
    echo "$taken"
    echo "$taken" | grep -q '"held": *"frozen"' || return 1
    id=$(echo "$taken" | sed -n 's/.*"id": *"\([0-9a-f]*\)".*/\1/p' | head -1)
    [ -n "$id" ] || return 1
    serving || { echo "not serving after the backup"; return 1; }
    get / >/dev/null
    dsctl backup restore "$HOST" "$id" || return 1
    [ "$(visits)" = "$before" ] || { echo "restored $(visits) visits, backed up $before"; return 1; }
    wait_for 60 serving || return 1
    dsctl backup verify
}

# write_on DOMAIN NAME MIB: what `GET /write/NAME/MIB` answered (https,
# through the unit's host).
write_on() { curl -sS -k --max-time 120 --resolve "$1:443:127.0.0.1" "https://$1/write/$2/$3"; }

# The packaged host on Debian's ext4 root (no prjquota): each appspace has
# a disk image. One shrunk to 64M fills it and gets ENOSPC while the other
# writes on; grown online (CAP_SYS_RESOURCE under the unit) it writes on;
# deleted, its image is unmounted and gone.
disk_image_limit() {
    local d=filler.localhost said
    dsctl appspace create --app hello-native --domain "$d" || return 1
    dsctl appspace limits "$d" --disk 64M || return 1
    said=$(write_on "$d" big 200); echo "filler: $said"
    case "$said" in *"refused: No space left on device"*) ;; *) return 1 ;; esac
    said=$(write_on "$HOST" other 8); echo "$HOST: $said"
    [ "$said" = "wrote 8 MiB" ] || return 1
    dsctl appspace show "$d" | grep disk
    # Only what growing logs counts: setting 64M above shrank the image,
    # which is done unmounted and logged the same way.
    local lines
    lines=$(wc -l < /var/lib/ds/appspaces/filler/log/app.log)
    dsctl appspace limits "$d" --disk 128M || return 1
    if tail -n +$((lines + 1)) /var/lib/ds/appspaces/filler/log/app.log | grep 'out of service: resizing'; then
        echo "grown offline; the host's capabilities and the kernel's last ext4 lines:"
        grep Cap /proc/"$(main_pid)"/status
        dmesg | grep -i 'ext4\|loop' | tail -n 5
        return 1
    fi
    said=$(write_on "$d" more 24); echo "filler after growing: $said"
    [ "$said" = "wrote 24 MiB" ] || return 1
    dsctl appspace delete "$d" --purge --yes || return 1
    ! grep -q filler /proc/"$(main_pid)"/mountinfo || { echo "still mounted"; return 1; }
}

# Project quotas on an ext4 made with them and mounted with prjquota (the
# kernel of the build machine has no quota support; Debian's has): a dev
# host with its state there, two appspaces, one filled to EDQUOT while the
# other writes on, the limit raised and lowered at once.
project_quota_limit() {
    local img=/var/tmp/prj.img mnt=/mnt/prj sock=/mnt/prj/state/admin.sock pid rc=1 said
    truncate -s 512M "$img" && mkfs.ext4 -q -F -O quota,project -E quotatype=prjquota "$img" || return 1
    mkdir -p "$mnt" && mount -o loop,prjquota "$img" "$mnt" || return 1
    DS_SANDBOX=/usr/lib/ds/ds-sandbox ds-host --dev --state-dir "$mnt/state" --port 18080 --tls-port 18443 \
        --disk-quota project --disk-limit 48M > /var/tmp/prj-host.log 2>&1 &
    pid=$!
    dq() { dsctl --socket "$sock" "$@"; }
    w() { curl -sS --max-time 120 -H "Host: $1" "http://127.0.0.1:18080/write/$2/$3"; }
    (
        set -e
        wait_for 30 dq status >/dev/null
        dq status | grep 'disk limits'
        dq status | grep -q 'disk limits: *project quota'
        dq app install /vm/hello-native >/dev/null
        dq appspace create --app hello-native --domain a.localhost >/dev/null
        dq appspace create --app hello-native --domain b.localhost >/dev/null
        said=$(w a.localhost big 100); echo "a: $said"
        case "$said" in *"Disk quota exceeded"*) ;; *) exit 1 ;; esac
        said=$(w b.localhost small 8); echo "b: $said"; [ "$said" = "wrote 8 MiB" ]
        dq appspace show a.localhost | grep disk
        dq appspace show a.localhost | grep -q 'used of 48 MiB (project quota)'
        ! dq appspace limits a.localhost --disk 16M
        dq appspace limits a.localhost --disk 96M >/dev/null
        said=$(w a.localhost more 24); echo "a after raising: $said"; [ "$said" = "wrote 24 MiB" ]
        dq appspace limits a.localhost --disk 80M >/dev/null
        said=$(w a.localhost last 100); echo "a after lowering: $said"
        case "$said" in *"Disk quota exceeded"*) ;; *) exit 1 ;; esac
    )
    rc=$?
    kill "$pid"; wait "$pid"
    [ $rc = 0 ] || tail -n 20 /var/tmp/prj-host.log
    umount "$mnt"; rm -f "$img"
    return $rc
}

# A front door killed is restarted; the running sandbox is not touched.
front_door_restart() {
    local old sandbox
    old=$(front_pid) || return 1
    sandbox=$(pgrep -f 'ds-sandbox' | head -1)
    [ -n "$sandbox" ] || { echo "no sandbox running"; return 1; }
    kill -9 "$old"
    wait_for 30 sh -c "p=\$(pgrep -P $(main_pid) -f __front-door); [ -n \"\$p\" ] && [ \"\$p\" != $old ]" || { echo "no new front door"; return 1; }
    wait_for 30 serving || { echo "not serving after the restart"; return 1; }
    kill -0 "$sandbox" || { echo "the sandbox did not survive"; return 1; }
    dsctl status | grep 'front door'
    dsctl status | grep -q 'front door:.*(1 restarts)'
}

cgroup_in_subtree() {
    local dir
    dir=$(find /sys/fs/cgroup -type d -name 'as-*' | head -1)
    echo "sandbox cgroup: $dir"
    case "$dir" in
    /sys/fs/cgroup/system.slice/ds-host.service/appspaces/as-*) ;;
    *) return 1 ;;
    esac
}

cgroup_limits() {
    local dir
    dir=$(find /sys/fs/cgroup/system.slice/ds-host.service/appspaces -maxdepth 1 -type d -name 'as-*' | head -1)
    [ -n "$dir" ] || { echo "no sandbox cgroup"; return 1; }
    echo "memory.max $(cat "$dir/memory.max") pids.max $(cat "$dir/pids.max") cpu.max $(cat "$dir/cpu.max")"
    [ "$(cat "$dir/memory.max")" = $((96 << 20)) ] && [ "$(cat "$dir/pids.max")" = 64 ] \
        && [ "$(cat "$dir/cpu.max")" = "50000 100000" ]
}

# The sandbox suite (hostile app, bombs, functional programs) run with the
# packaged ds-sandbox, under the very hardening directives of the installed
# unit, in a transient service with a delegated cgroup like the host's.
sandbox_suite_under_unit() {
    local unit=/usr/lib/systemd/system/ds-host.service props=()
    while IFS= read -r line; do
        case "$line" in
        ''|'#'*|'['*) continue ;;
        Type=*|NotifyAccess=*|ExecStart=*|WatchdogSec=*|KillMode=*|TimeoutStopSec=*|Restart=*|RestartSec=*) continue ;;
        RuntimeDirectory*|StateDirectory*|ConfigurationDirectory*|ReadWritePaths=*) continue ;;
        esac
        props+=(-p "$line")
    done < <(sed -n '/^\[Service\]/,/^\[/p' "$unit")
    echo "properties: ${props[*]}"
    # The hostile app looks for a canary in the hostname: the machine's is
    # made one here (the suite cannot make a uts namespace under the unit).
    local canary old_hostname
    canary="ds-canary-$RANDOM$RANDOM"
    old_hostname=$(hostname)
    hostname "$canary"
    systemd-run --quiet --wait --pipe --collect --unit=ds-vm-sandbox-suite \
        "${props[@]}" \
        --setenv=DS_SANDBOX=/usr/lib/ds/ds-sandbox --setenv=DS_DENO=/vm/deno \
        --setenv=DS_SUITE_PREBUILT=/vm/programs --setenv=DS_SUITE_SCRATCH=/var/tmp \
        --setenv=DS_SUITE_HOSTNAME_IS_CANARY="$canary" \
        /vm/sandbox_suite > "$R/sandbox-suite.txt" 2>&1
    local rc=$?
    hostname "$old_hostname"
    grep -E '^test |^test result|SKIPPED|ESCAPED' "$R/sandbox-suite.txt"
    [ $rc = 0 ] && ! grep -q '^SKIPPED' "$R/sandbox-suite.txt"
}

case "$phase" in
1) phase1 ;;
2) phase2 ;;
*) say "VM: nothing to do (phase $phase)"; systemctl poweroff ;;
esac

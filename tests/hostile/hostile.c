/*
 * hostile: attacks its own sandbox from inside `ds-sandbox exec` and
 * reports each outcome, one line per attack:
 *
 *   BLOCKED <name>: <how>      the sandbox stopped it
 *   ESCAPED <name>: <what>     the attack worked (a sandbox bug)
 *
 * and a final "SUMMARY attacks=N escaped=M". Exit status 0 only if nothing
 * escaped. Statically linked so that it needs nothing from the runtime.
 *
 * Arguments (planted by the test harness on the host):
 *   hostile <secret-file> <other-appspace-file> <canary> <tcp-port>
 *           <unix-socket-path> <abstract-name> <shm-key> <host-pid>
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <stddef.h>
#include <sys/sysmacros.h>
#include <sys/time.h>
#include <time.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/netlink.h>
#include <net/if.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/shm.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

static int attacks, escaped;
static const char *secret_file, *other_file, *canary, *unix_path, *abstract_name;
static int tcp_port, shm_key, host_pid;

static void blocked(const char *name, const char *how) {
    attacks++;
    printf("BLOCKED %s: %s\n", name, how);
}
static void escape(const char *name, const char *what) {
    attacks++;
    escaped++;
    printf("ESCAPED %s: %s\n", name, what);
}
/* A call that must fail: report by its return value and errno. */
static void expect_fail(const char *name, long rc) {
    int e = errno;
    if (rc == -1)
        blocked(name, strerror(e));
    else {
        char buf[64];
        snprintf(buf, sizeof buf, "returned %ld", rc);
        escape(name, buf);
    }
}
/* A call the seccomp filter must deny with exactly `want`. */
static void expect_errno(const char *name, long rc, int want) {
    int e = errno;
    char buf[128];
    if (rc == -1 && e == want)
        blocked(name, strerror(e));
    else if (rc == -1) {
        snprintf(buf, sizeof buf, "failed with %s, not the filter's %s", strerror(e), strerror(want));
        escape(name, buf);
    } else {
        snprintf(buf, sizeof buf, "returned %ld", rc);
        escape(name, buf);
    }
}
/* Runs `fn` in a child; the attack is blocked if the child dies of SIGSYS. */
static void expect_killed(const char *name, void (*fn)(void)) {
    fflush(stdout);
    pid_t p = fork();
    if (p == 0) {
        fn();
        _exit(0);
    }
    int st;
    waitpid(p, &st, 0);
    char buf[64];
    if (WIFSIGNALED(st) && WTERMSIG(st) == SIGSYS)
        blocked(name, "killed by SIGSYS");
    else {
        snprintf(buf, sizeof buf, "child survived (status %d)", st);
        escape(name, buf);
    }
}
/* Reading `path` must fail, or at least not reveal the canary. */
static void expect_unreadable(const char *name, const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        blocked(name, strerror(errno));
        return;
    }
    char buf[4096];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n > 0) {
        buf[n] = 0;
        if (memmem(buf, n, canary, strlen(canary))) {
            escape(name, "read the canary");
            return;
        }
    }
    escape(name, "opened it");
}
static void expect_absent(const char *name, const char *path) {
    struct stat st;
    if (lstat(path, &st) == -1 && errno == ENOENT)
        blocked(name, "does not exist");
    else
        escape(name, "exists");
}

static long ptrace_attach_1(void) { return syscall(SYS_ptrace, 16 /* PTRACE_ATTACH */, 1, 0, 0); }

static void x32_getpid(void) { syscall(0x40000000 | SYS_getpid); }
static void int80_getpid(void) {
    long ret;
    __asm__ volatile("int $0x80" : "=a"(ret) : "a"(20) : "memory");
    (void)ret;
}

static int copy_self(const char *dst) {
    int in = open("/app/hostile", O_RDONLY);
    int out = open(dst, O_WRONLY | O_CREAT | O_TRUNC, 0755);
    if (in < 0 || out < 0) return -1;
    char buf[65536];
    ssize_t n;
    while ((n = read(in, buf, sizeof buf)) > 0)
        if (write(out, buf, n) != n) return -1;
    close(in);
    close(out);
    chmod(dst, 0755);
    return 0;
}
static void expect_no_exec(const char *name, const char *path) {
    if (copy_self(path) != 0) {
        blocked(name, "could not even write the copy");
        return;
    }
    pid_t p = fork();
    if (p == 0) {
        char *argv[] = {(char *)path, "--exit-42", NULL};
        execv(path, argv);
        _exit(errno == EACCES ? 100 : 101);
    }
    int st;
    waitpid(p, &st, 0);
    if (WIFEXITED(st) && WEXITSTATUS(st) == 42)
        escape(name, "executed");
    else
        blocked(name, "exec refused");
    unlink(path);
}

static int tcp_connect(uint32_t addr, int port) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = addr};
    int rc = connect(s, (struct sockaddr *)&sa, sizeof sa);
    int e = errno;
    close(s);
    errno = e;
    return rc;
}

static void check_status(void) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) {
        escape("proc-self-status", "cannot read /proc/self/status to verify");
        return;
    }
    char line[256];
    int nnp = 0, sec = 0, caps_zero = 1, caps_seen = 0;
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, "NoNewPrivs:", 11)) nnp = atoi(line + 11) == 1;
        if (!strncmp(line, "Seccomp:", 8)) sec = atoi(line + 8) == 2;
        if (!strncmp(line, "Cap", 3)) {
            caps_seen++;
            if (!strstr(line, "0000000000000000")) caps_zero = 0;
        }
    }
    fclose(f);
    nnp ? blocked("no-new-privs", "NoNewPrivs 1") : escape("no-new-privs", "NoNewPrivs is not 1");
    sec ? blocked("seccomp-mode", "Seccomp 2") : escape("seccomp-mode", "Seccomp is not 2");
    (caps_zero && caps_seen == 5) ? blocked("capabilities", "all five sets empty")
                                  : escape("capabilities", "a capability set is not empty");
}

/* --- binding anything but $PORT --- */

/* The port a racing thread keeps flipping between $PORT and another one
 * while the main thread binds: a check that reads the address and then
 * lets the kernel read it again would bind the other port sometimes. */
static struct sockaddr_in race_addr;
static int race_stop, race_flips;
static uint16_t race_ports[2];

static void *flip_port(void *unused) {
    (void)unused;
    for (unsigned i = 0; !__atomic_load_n(&race_stop, __ATOMIC_RELAXED); i++) {
        __atomic_store_n(&race_addr.sin_port, race_ports[i & 1], __ATOMIC_RELAXED);
        if (i < 16) __atomic_add_fetch(&race_flips, 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

static int bound_port(int s) {
    struct sockaddr_in got;
    socklen_t len = sizeof got;
    if (getsockname(s, (struct sockaddr *)&got, &len)) return -1;
    return ntohs(got.sin_port);
}

static void binding_attacks(void) {
    const char *env = getenv("PORT");
    int port = env ? atoi(env) : 0;
    if (port <= 0) {
        escape("bind-race", "no $PORT to test against");
        return;
    }
    {
        int s = socket(AF_INET6, SOCK_STREAM, 0);
        struct sockaddr_in6 sa = {.sin6_family = AF_INET6, .sin6_port = htons(9997), .sin6_addr = IN6ADDR_LOOPBACK_INIT};
        expect_fail("bind-other-port-v6", bind(s, (struct sockaddr *)&sa, sizeof sa));
        close(s);
    }
    {
        /* listen() on an unbound socket binds a port of the kernel's choosing. */
        int s = socket(AF_INET, SOCK_STREAM, 0);
        if (listen(s, 1) == 0) {
            char buf[64];
            snprintf(buf, sizeof buf, "listening on port %d", bound_port(s));
            escape("listen-unbound", buf);
        } else
            blocked("listen-unbound", strerror(errno));
        close(s);
    }
    race_addr.sin_family = AF_INET;
    race_addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    race_ports[0] = htons(port);
    race_ports[1] = htons(port == 9998 ? 9996 : 9998);
    race_addr.sin_port = race_ports[0];
    pthread_t flipper;
    if (pthread_create(&flipper, NULL, flip_port, NULL)) {
        escape("bind-race", "cannot start the racing thread");
        return;
    }
    /* The race starts once the other thread is flipping. */
    while (__atomic_load_n(&race_flips, __ATOMIC_RELAXED) < 16)
        sched_yield();
    int on_port = 0, elsewhere = 0, other = -1;
    for (int i = 0; i < 2000 && !elsewhere; i++) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        int one = 1;
        setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(s, (struct sockaddr *)&race_addr, sizeof race_addr) == 0) {
            int got = bound_port(s);
            if (got == port)
                on_port++;
            else {
                elsewhere++;
                other = got;
            }
        }
        close(s);
    }
    __atomic_store_n(&race_stop, 1, __ATOMIC_RELAXED);
    pthread_join(flipper, NULL);
    char buf[96];
    if (elsewhere) {
        snprintf(buf, sizeof buf, "bound port %d while the address flipped", other);
        escape("bind-race", buf);
    } else if (!on_port)
        /* Not an escape, but the race never ran: the test proves nothing. */
        escape("bind-race", "no bind of $PORT succeeded, so nothing was raced");
    else {
        snprintf(buf, sizeof buf, "%d binds of $PORT, none of another port", on_port);
        blocked("bind-race", buf);
    }
    {
        /* What the app is allowed must still work: $PORT, bound and listening. */
        int s = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_ANY)};
        int one = 1;
        setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(s, (struct sockaddr *)&sa, sizeof sa) || listen(s, 4))
            escape("bind-port-works", strerror(errno));
        else
            blocked("bind-port-works", "$PORT still binds and listens (not an attack: a canary)");
        close(s);
    }
}

int main(int argc, char **argv) {
    if (argc == 2 && !strcmp(argv[1], "--exit-42")) return 42;
    if (argc != 9) {
        fprintf(stderr, "usage: hostile secret other canary port unix abstract shmkey hostpid\n");
        return 2;
    }
    secret_file = argv[1];
    other_file = argv[2];
    canary = argv[3];
    tcp_port = atoi(argv[4]);
    unix_path = argv[5];
    abstract_name = argv[6];
    shm_key = atoi(argv[7]);
    host_pid = atoi(argv[8]);
    setvbuf(stdout, NULL, _IOLBF, 0);

    /* --- host files, other appspaces, /proc escapes --- */
    expect_unreadable("read-host-secret", secret_file);
    expect_unreadable("read-other-appspace", other_file);
    char path[4096];
    snprintf(path, sizeof path, "/proc/1/root%s", secret_file);
    expect_unreadable("proc-1-root-secret", path);
    expect_unreadable("proc-1-root-shadow", "/proc/1/root/etc/shadow");
    expect_unreadable("proc-1-environ", "/proc/1/environ");
    expect_unreadable("proc-1-mem", "/proc/1/mem");
    {
        DIR *d = opendir("/proc/1/fd");
        if (!d)
            blocked("proc-1-fd-list", strerror(errno));
        else {
            closedir(d);
            escape("proc-1-fd-list", "listed the agent's descriptors");
        }
    }
    expect_unreadable("host-shadow", "/etc/shadow");
    expect_fail("write-proc-self-exe", open("/proc/self/exe", O_WRONLY));
    expect_fail("write-app", open("/app/planted", O_WRONLY | O_CREAT, 0644));
    expect_fail("write-etc-passwd", open("/etc/passwd", O_WRONLY | O_APPEND));
    expect_fail("write-root", open("/planted", O_WRONLY | O_CREAT, 0644));
    expect_fail("write-core-pattern", open("/proc/sys/kernel/core_pattern", O_WRONLY));
    expect_fail("write-sysrq", open("/proc/sysrq-trigger", O_WRONLY));
    {
        int leaked = 0;
        char what[64] = "";
        for (int fd = 3; fd < 1024; fd++)
            if (fcntl(fd, F_GETFD) != -1) {
                leaked++;
                snprintf(what, sizeof what, "fd %d is open", fd);
            }
        leaked ? escape("leaked-fds", what) : blocked("leaked-fds", "only stdio is open");
    }
    expect_absent("no-sys", "/sys/kernel");
    expect_absent("no-home", "/home");
    expect_absent("no-root-home", "/root");
    expect_absent("no-var", "/var");
    expect_absent("no-run", "/run");
    expect_absent("no-dev-mem", "/dev/mem");
    expect_absent("no-dev-kmsg", "/dev/kmsg");
    expect_absent("no-dev-tty", "/dev/tty");
    expect_no_exec("exec-from-data", "/data/copied");
    expect_no_exec("exec-from-tmp", "/tmp/copied");
    expect_fail("mknod-char", mknod("/data/devnull", S_IFCHR | 0666, makedev(1, 3)));
    expect_fail("mknod-block", mknod("/tmp/sda", S_IFBLK | 0666, makedev(8, 0)));

    /* --- mounts and root changes --- */
    expect_errno("mount-tmpfs", mount("none", "/tmp", "tmpfs", 0, NULL), EPERM);
    expect_errno("mount-bind", mount("/data", "/app", NULL, MS_BIND, NULL), EPERM);
    expect_errno("fsopen", syscall(SYS_fsopen, "tmpfs", 0), EPERM);
    expect_errno("open-tree", syscall(SYS_open_tree, AT_FDCWD, "/data", 1 /* OPEN_TREE_CLONE */), EPERM);
    expect_errno("move-mount", syscall(SYS_move_mount, -1, "", AT_FDCWD, "/app", 0), EPERM);
    expect_errno("mount-setattr", syscall(SYS_mount_setattr, AT_FDCWD, "/app", 0, NULL, 0), EPERM);
    expect_errno("umount", umount2("/app", MNT_DETACH), EPERM);
    expect_errno("pivot-root", syscall(SYS_pivot_root, "/tmp", "/tmp"), EPERM);
    expect_errno("chroot", chroot("/tmp"), EPERM);
    {
        char fh[128] = {0};
        *(unsigned *)fh = 8;
        expect_errno("open-by-handle-at", syscall(SYS_open_by_handle_at, AT_FDCWD, fh, O_RDONLY), EPERM);
        int mnt;
        expect_errno("name-to-handle-at", syscall(SYS_name_to_handle_at, AT_FDCWD, "/app", fh, &mnt, 0), EPERM);
    }

    /* --- namespaces --- */
    expect_errno("unshare-user", unshare(CLONE_NEWUSER), EPERM);
    expect_errno("unshare-net", unshare(CLONE_NEWNET), EPERM);
    expect_errno("clone-newuser", syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0), EPERM);
    expect_errno("clone-newns", syscall(SYS_clone, CLONE_NEWNS | SIGCHLD, 0, 0, 0, 0), EPERM);
    {
        uint64_t args[11] = {0};
        args[0] = CLONE_NEWUSER;
        args[4] = SIGCHLD;
        expect_errno("clone3-newuser", syscall(SYS_clone3, args, sizeof args), ENOSYS);
    }
    {
        /* The filter answers before the kernel looks at the descriptor. */
        int fd = open("/proc/self/ns/net", O_RDONLY);
        expect_errno("setns", setns(fd, 0), EPERM);
    }

    /* --- other processes --- */
    expect_errno("ptrace-attach-agent", ptrace_attach_1(), EPERM);
    {
        char local[8], remote[8];
        struct iovec l = {local, 8}, r = {remote, 8};
        expect_errno("process-vm-readv", syscall(SYS_process_vm_readv, 1, &l, 1, &r, 1, 0), EPERM);
        expect_errno("process-vm-writev", syscall(SYS_process_vm_writev, 1, &l, 1, &r, 1, 0), EPERM);
    }
    {
        long pfd = syscall(SYS_pidfd_open, 1, 0);
        expect_fail("pidfd-getfd-agent", pfd < 0 ? -1 : syscall(SYS_pidfd_getfd, pfd, 3, 0));
    }
    expect_fail("signal-agent", kill(1, SIGKILL));
    /* Signals the agent handles (it forwards them) get through where
     * only the kernel's init protection stands: refused by seccomp. */
    expect_errno("signal-agent-term", kill(1, SIGTERM), EPERM);
    expect_errno("signal-agent-tgkill", syscall(SYS_tgkill, 1, 1, SIGUSR1), EPERM);
    expect_fail("signal-host-process", kill(host_pid, SIGKILL));

    /* --- kernel surface --- */
    /* Calls newer than the policy (this kernel has them): closed with
     * ENOSYS, so that libraries fall back as on an older kernel. */
    expect_errno("newer-call-cachestat", syscall(451, -1, NULL, NULL, 0), ENOSYS);
    expect_errno("newer-call-fchmodat2", syscall(452, AT_FDCWD, "/data", 0700, 0), ENOSYS);
    expect_errno("newer-call-mseal", syscall(462, NULL, 0, 0), ENOSYS);
    expect_errno("keyctl", syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3, 0), EPERM);
    expect_errno("add-key", syscall(SYS_add_key, "user", "x", "y", 1, -3), EPERM);
    expect_errno("request-key", syscall(SYS_request_key, "user", "x", NULL, 0), EPERM);
    expect_errno("bpf", syscall(SYS_bpf, 0, NULL, 0), EPERM);
    expect_errno("perf-event-open", syscall(SYS_perf_event_open, NULL, 0, -1, -1, 0), EPERM);
    expect_errno("userfaultfd", syscall(SYS_userfaultfd, O_CLOEXEC), EPERM);
    expect_errno("userfaultfd-user-mode", syscall(SYS_userfaultfd, O_CLOEXEC | 1 /* UFFD_USER_MODE_ONLY */), EPERM);
    expect_fail("userfaultfd-dev", open("/dev/userfaultfd", O_RDWR));
    expect_errno("io-uring-setup", syscall(SYS_io_uring_setup, 8, calloc(1, 256)), ENOSYS);
    expect_errno("kexec-load", syscall(SYS_kexec_load, 0, 0, NULL, 0), EPERM);
    expect_errno("kexec-file-load", syscall(SYS_kexec_file_load, -1, -1, 0, "", 0), EPERM);
    expect_errno("init-module", syscall(SYS_init_module, NULL, 0, ""), EPERM);
    expect_errno("finit-module", syscall(SYS_finit_module, -1, "", 0), EPERM);
    expect_errno("delete-module", syscall(SYS_delete_module, "ext4", 0), EPERM);
    expect_errno("reboot", syscall(SYS_reboot, 0xfee1dead, 672274793, 0x4321fedc, NULL), EPERM);
    expect_errno("swapon", syscall(SYS_swapon, "/data/swap", 0), EPERM);
    {
        struct timeval tv = {0, 0};
        expect_errno("settimeofday", syscall(SYS_settimeofday, &tv, NULL), EPERM);
        struct timespec ts = {0, 0};
        expect_errno("clock-settime", syscall(SYS_clock_settime, CLOCK_REALTIME, &ts), EPERM);
    }
    expect_errno("sethostname", sethostname("pwned", 5), EPERM);
    expect_errno("acct", syscall(SYS_acct, "/data/acct"), EPERM);
    expect_errno("syslog-read", syscall(SYS_syslog, 3 /* READ_ALL */, calloc(1, 4096), 4096), EPERM);
    expect_errno("personality-read-implies-exec", personality(READ_IMPLIES_EXEC), EPERM);
    expect_errno("personality-no-randomize", personality(ADDR_NO_RANDOMIZE), EPERM);
    {
        char c = 'x';
        expect_errno("tiocsti", syscall(SYS_ioctl, 0, TIOCSTI, &c), EPERM);
        expect_errno("tiocsti-high-bits", syscall(SYS_ioctl, 0, 0x100000000UL | TIOCSTI, &c), EPERM);
        char sub = 12;
        expect_errno("tioclinux", syscall(SYS_ioctl, 0, TIOCLINUX, &sub), EPERM);
    }
    expect_killed("x32-syscall", x32_getpid);
    expect_killed("int80-syscall", int80_getpid);
    expect_fail("setuid-root", setuid(0));

    /* --- network --- */
    expect_errno("socket-packet", socket(AF_PACKET, SOCK_RAW, htons(3)), EAFNOSUPPORT);
    expect_fail("socket-raw-inet", socket(AF_INET, SOCK_RAW, IPPROTO_ICMP));
    {
        int opened = -1;
        for (int proto = 0; proto < 32; proto++) {
            int s = socket(AF_NETLINK, SOCK_RAW, proto);
            if (s >= 0) { opened = proto; close(s); }
        }
        if (opened >= 0) {
            char buf[64];
            snprintf(buf, sizeof buf, "netlink protocol %d opened", opened);
            escape("socket-netlink-all", buf);
        } else
            blocked("socket-netlink-all", "all 32 netlink protocols refused");
    }
    expect_errno("socket-vsock", socket(40 /* AF_VSOCK */, SOCK_STREAM, 0), EAFNOSUPPORT);
    expect_errno("socket-alg", socket(38 /* AF_ALG */, SOCK_SEQPACKET, 0), EAFNOSUPPORT);
    expect_errno("socket-key", socket(15 /* AF_KEY */, SOCK_RAW, 2), EAFNOSUPPORT);
    expect_errno("socket-family-high-bits", syscall(SYS_socket, 0x100000000UL | AF_INET, SOCK_STREAM, 0), EAFNOSUPPORT);
    expect_fail("tcp-outside", tcp_connect(htonl(0x01010101), 80));
    expect_fail("tcp-host-loopback-service", tcp_connect(htonl(INADDR_LOOPBACK), tcp_port));
    {
        int s = socket(AF_INET, SOCK_DGRAM, 0);
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(53), .sin_addr.s_addr = htonl(0x08080808)};
        expect_fail("udp-outside", sendto(s, "x", 1, 0, (struct sockaddr *)&sa, sizeof sa));
        close(s);
    }
    {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(9999), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        expect_fail("bind-other-port", bind(s, (struct sockaddr *)&sa, sizeof sa));
        close(s);
    }
    {
        int s = socket(AF_UNIX, SOCK_STREAM, 0);
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        strncpy(sa.sun_path, unix_path, sizeof sa.sun_path - 1);
        expect_fail("unix-path-host-socket", connect(s, (struct sockaddr *)&sa, sizeof sa));
        close(s);
    }
    {
        int s = socket(AF_UNIX, SOCK_STREAM, 0);
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        size_t n = strlen(abstract_name);
        memcpy(sa.sun_path + 1, abstract_name, n);
        expect_fail("unix-abstract-host-socket", connect(s, (struct sockaddr *)&sa, offsetof(struct sockaddr_un, sun_path) + 1 + n));
        close(s);
    }
    expect_fail("sysv-shm-host", shmget(shm_key, 0, 0));
    {
        struct ifreq ifr = {0};
        strcpy(ifr.ifr_name, "eth0");
        int s = socket(AF_INET, SOCK_DGRAM, 0);
        expect_fail("host-interface-eth0", ioctl(s, SIOCGIFFLAGS, &ifr));
        close(s);
    }

    binding_attacks();

    /* --- canaries --- */
    {
        extern char **environ;
        int found = 0;
        for (char **e = environ; *e; e++)
            if (strstr(*e, canary)) found = 1;
        found ? escape("env-canary", "canary in the environment") : blocked("env-canary", "not in the environment");
        struct utsname u;
        uname(&u);
        if (strstr(u.nodename, canary) || strstr(u.domainname, canary))
            escape("hostname-canary", u.nodename);
        else if (strcmp(u.nodename, "appspace"))
            escape("hostname-canary", "hostname is not the neutral one");
        else
            blocked("hostname-canary", "hostname is appspace");
    }
    check_status();

    printf("SUMMARY attacks=%d escaped=%d\n", attacks, escaped);
    return escaped ? 1 : 0;
}

/*
 * workload: well-behaved and resource-hungry programs for the sandbox
 * suite. `workload MODE [ARGS]`:
 *
 *   functional       read /app, write and reread /data, bind $PORT, look at
 *                    /etc and /proc; prints "OK <check>" or "FAIL <check>"
 *   persist-write S  write S to /data/persist; persist-read prints it
 *   exit N           exit with status N
 *   signal N         kill itself with signal N
 *   forkbomb         fork until refused; prints "forks=N"
 *   membomb          allocate and touch memory until killed
 *   spin SECONDS     two threads spin for SECONDS of wall time
 *   http             serve HTTP/1.1 on $PORT: GET / says "hello from the
 *                    sandbox", GET /big/N streams N bytes, POST counts the
 *                    body's bytes and answers "got N bytes", and a request
 *                    with "Upgrade: echo" switches to echoing raw bytes;
 *                    GET /slow/N answers after N seconds, GET /stall sends
 *                    10 of 1000 promised bytes and goes quiet; GET /mount
 *                    tries mount(2) and answers "mount: RC ERROR";
 *                    egress through $HTTP_PROXY: GET /egress/get?url=U (an
 *                    absolute-form request), /egress/connect?to=H:P&path=X
 *                    (a CONNECT tunnel, then GET X), /egress/flood?to=H:P&n=N
 *                    (N tunnels at once: "accepted=A refused=R") and
 *                    /egress/direct?to=IP:P (a connection around the proxy),
 *                    /egress/curl?url=U (runs /app/curl, which finds the proxy
 *                    in its environment like any client);
 *                    for the benchmark, /egress/download?to=IP:P&bytes=N&via=
 *                    proxy|direct ("bytes=B secs=S") and /egress/connrate?
 *                    to=IP:P&n=N&via=proxy|direct ("n=N secs=S")
 *   crash            say so on stderr and exit 3 at once
 *   never-ready      never listen
 *   slow-start       wait 8 s (an app loading a large state), then serve http
 *   flood            serve http, and print without end on stdout
 *
 * Built with -DDEFAULT_MODE='"..."', the mode applies when none is given.
 */
#ifndef DEFAULT_MODE
#define DEFAULT_MODE ""
#endif
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <sys/resource.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int failures;
static void check(const char *name, int ok) {
    printf("%s %s\n", ok ? "OK" : "FAIL", name);
    if (!ok) failures++;
}

static int file_contains(const char *path, const char *needle) {
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char buf[8192];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    return strstr(buf, needle) != NULL;
}

static int functional(void) {
    check("read-app", file_contains("/app/app-file.txt", "hello from the app"));
    FILE *f = fopen("/data/note.txt", "w");
    check("write-data", f && fputs("written in the sandbox\n", f) >= 0 && fclose(f) == 0);
    check("reread-data", file_contains("/data/note.txt", "written in the sandbox"));
    f = fopen("/tmp/scratch", "w");
    check("write-tmp", f && fputs("x", f) >= 0 && fclose(f) == 0);
    const char *port = getenv("PORT");
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port ? atoi(port) : 0),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    check("bind-port", port && bind(s, (struct sockaddr *)&sa, sizeof sa) == 0 && listen(s, 8) == 0);
    /* The proxy port is the one we may connect to; nobody listens in this
     * test, so "refused" proves lo is up and the port is allowed. */
    const char *proxy = getenv("HTTP_PROXY");
    const char *colon = proxy ? strrchr(proxy, ':') : NULL;
    struct sockaddr_in pa = {.sin_family = AF_INET, .sin_port = htons(colon ? atoi(colon + 1) : 0),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int c = socket(AF_INET, SOCK_STREAM, 0);
    check("loopback-up", colon && connect(c, (struct sockaddr *)&pa, sizeof pa) == -1 && errno == ECONNREFUSED);
    /* Loopback TCP is not paced (the sandbox sets reno, whatever the host's default). */
    char cc[16] = "";
    socklen_t cc_len = sizeof cc - 1;
    check("loopback-reno", getsockopt(c, IPPROTO_TCP, TCP_CONGESTION, cc, &cc_len) == 0 && !strcmp(cc, "reno"));
    /* Started by a host thread at nice -5: the app still runs at the default. */
    errno = 0;
    int nice_value = getpriority(PRIO_PROCESS, 0);
    check("nice-0", nice_value == 0 && errno == 0);
    check("etc-passwd", file_contains("/etc/passwd", "app:x:1000:1000"));
    check("etc-hosts", file_contains("/etc/hosts", "localhost"));
    check("proc-self", file_contains("/proc/self/status", "Name:"));
    check("proc-pid-1", access("/proc/1", F_OK) == 0 && access("/proc/2", F_OK) == 0);
    check("home-is-data", getenv("HOME") && !strcmp(getenv("HOME"), "/data"));
    check("uid-1000", getuid() == 1000 && geteuid() == 1000 && getgid() == 1000);
    check("dev-null", file_contains("/dev/null", "") || access("/dev/null", W_OK) == 0);
    check("dev-urandom", ({ int fd = open("/dev/urandom", O_RDONLY); char b[8]; int ok = fd >= 0 && read(fd, b, 8) == 8; ok; }));
    return failures ? 1 : 0;
}

static void *spin_thread(void *arg) {
    double secs = *(double *)arg;
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    volatile unsigned long x = 0;
    do {
        for (int i = 0; i < 100000; i++) x++;
        clock_gettime(CLOCK_MONOTONIC, &now);
    } while ((now.tv_sec - start.tv_sec) + (now.tv_nsec - start.tv_nsec) / 1e9 < secs);
    return NULL;
}

static void reply(int c, const char *status, const char *body) {
    char head[256];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
                     status, strlen(body));
    if (write(c, head, n) != n || write(c, body, strlen(body)) < 0) perror("workload http: write");
}

/* The value of query parameter `name` in the request line, or "". */
static void param(const char *req, const char *name, char *out, size_t size) {
    out[0] = 0;
    const char *line_end = strstr(req, " HTTP/");
    const char *q = strchr(req, '?');
    if (!q || !line_end || q > line_end) return;
    size_t nl = strlen(name);
    for (const char *p = q + 1; p && p < line_end; p = strchr(p, '&'), p = p ? p + 1 : NULL) {
        if (!strncmp(p, name, nl) && p[nl] == '=') {
            const char *v = p + nl + 1;
            size_t n = strcspn(v, "& ");
            if (n >= size) n = size - 1;
            memcpy(out, v, n);
            out[n] = 0;
            return;
        }
    }
}

/* A connection to the proxy named by $HTTP_PROXY (http://127.0.0.1:PORT). */
static int proxy_conn(void) {
    const char *proxy = getenv("HTTP_PROXY");
    const char *colon = proxy ? strrchr(proxy, ':') : NULL;
    if (!colon) return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(colon + 1))};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof a) < 0) {
        if (s >= 0) close(s);
        return -1;
    }
    return s;
}

static void write_all(int fd, const char *buf, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, buf, n);
        if (w <= 0) return;
        buf += w;
        n -= w;
    }
}

/* Reads until EOF (or `size` - 1 bytes) into out. */
static size_t read_all(int fd, char *out, size_t size) {
    size_t got = 0;
    ssize_t r;
    while (got < size - 1 && (r = read(fd, out + got, size - 1 - got)) > 0) got += r;
    out[got] = 0;
    return got;
}

/* Reads a response head (up to the blank line) into out. */
static void read_head_only(int fd, char *out, size_t size) {
    size_t got = 0;
    out[0] = 0;
    while (got < size - 1 && !strstr(out, "\r\n\r\n")) {
        ssize_t r = read(fd, out + got, 1);
        if (r <= 0) break;
        out[++got] = 0;
    }
}

static double now_secs(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

/* A connection to `to` (IP:PORT): a CONNECT tunnel through the proxy, or
 * a direct connection. */
static int open_to(const char *to, int via_proxy) {
    if (via_proxy) {
        int s = proxy_conn();
        if (s < 0) return -1;
        char line[600], head[1024];
        int len = snprintf(line, sizeof line, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", to, to);
        write_all(s, line, len);
        read_head_only(s, head, sizeof head);
        if (strncmp(head, "HTTP/1.1 200", 12)) { close(s); return -1; }
        return s;
    }
    char host[512];
    snprintf(host, sizeof host, "%s", to);
    char *colon = strrchr(host, ':');
    if (!colon) return -1;
    *colon = 0;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(colon + 1))};
    inet_pton(AF_INET, host, &a.sin_addr);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof a) < 0) {
        if (s >= 0) close(s);
        return -1;
    }
    return s;
}

/* GET path on an open connection; reads and discards the whole answer.
 * Returns the bytes read. */
static unsigned long long fetch_discard(int s, const char *to, const char *path) {
    char line[700];
    int len = snprintf(line, sizeof line, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", path, to);
    write_all(s, line, len);
    static __thread char buf[1 << 18];
    unsigned long long total = 0;
    ssize_t r;
    while ((r = read(s, buf, sizeof buf)) > 0) total += r;
    return total;
}

static __thread char out_buf_for_curl[1 << 15];

static void egress(int c, const char *req) {
    static __thread char out[1 << 16], to[512], path[512], url[1024], n_text[16];
    char msg[1024];
    if (!strncmp(req, "GET /egress/curl?", 17)) {
        param(req, "url", url, sizeof url);
        int out[2];
        if (pipe(out) < 0) { reply(c, "500 Internal Server Error", "pipe"); return; }
        pid_t pid = fork();
        if (pid == 0) {
            dup2(out[1], 1);
            dup2(out[1], 2);
            close(out[0]);
            char *argv[] = {"curl", "-sS", "--max-time", "10", url, NULL};
            extern char **environ;
            execve("/app/curl", argv, environ);
            _exit(127);
        }
        close(out[1]);
        size_t got = pid > 0 ? read_all(out[0], out_buf_for_curl, sizeof out_buf_for_curl) : 0;
        (void)got;
        close(out[0]);
        int status = 0;
        if (pid > 0) waitpid(pid, &status, 0);
        snprintf(msg, sizeof msg, "curl exit %d\n", WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
        static __thread char combined[1 << 16];
        snprintf(combined, sizeof combined, "%s%s", msg, out_buf_for_curl);
        reply(c, "200 OK", combined);
        return;
    }
    if (!strncmp(req, "GET /egress/direct?", 19)) {
        param(req, "to", to, sizeof to);
        char *colon = strrchr(to, ':');
        struct sockaddr_in a = {.sin_family = AF_INET};
        if (!colon) { reply(c, "400 Bad Request", "to=IP:PORT"); return; }
        *colon = 0;
        a.sin_port = htons(atoi(colon + 1));
        inet_pton(AF_INET, to, &a.sin_addr);
        int s = socket(AF_INET, SOCK_STREAM, 0);
        if (s >= 0 && connect(s, (struct sockaddr *)&a, sizeof a) == 0)
            reply(c, "200 OK", "direct: connected");
        else {
            snprintf(msg, sizeof msg, "direct: failed: %s", strerror(errno));
            reply(c, "200 OK", msg);
        }
        if (s >= 0) close(s);
        return;
    }
    if (!strncmp(req, "GET /egress/download?", 21) || !strncmp(req, "GET /egress/connrate?", 21)) {
        char via[16], bytes[32];
        param(req, "to", to, sizeof to);
        param(req, "via", via, sizeof via);
        int proxy = strcmp(via, "direct") != 0;
        double t0 = now_secs();
        if (!strncmp(req + 12, "download", 8)) {
            param(req, "bytes", bytes, sizeof bytes);
            snprintf(path, sizeof path, "/big/%s", bytes);
            int s = open_to(to, proxy);
            if (s < 0) { reply(c, "502 Bad Gateway", "cannot connect"); return; }
            unsigned long long got = fetch_discard(s, to, path);
            close(s);
            snprintf(msg, sizeof msg, "bytes=%llu secs=%.6f", got, now_secs() - t0);
        } else {
            param(req, "n", n_text, sizeof n_text);
            int n = atoi(n_text), ok = 0;
            for (int i = 0; i < n; i++) {
                int s = open_to(to, proxy);
                if (s < 0) continue;
                if (fetch_discard(s, to, "/hello") > 0) ok++;
                close(s);
            }
            snprintf(msg, sizeof msg, "n=%d secs=%.6f", ok, now_secs() - t0);
        }
        reply(c, "200 OK", msg);
        return;
    }
    if (!strncmp(req, "GET /egress/flood?", 18)) {
        param(req, "to", to, sizeof to);
        param(req, "n", n_text, sizeof n_text);
        int n = atoi(n_text), accepted = 0, refused = 0, other = 0;
        if (n <= 0 || n > 512) n = 64;
        int socks[512];
        char line[1024];
        int len = snprintf(line, sizeof line, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", to, to);
        for (int i = 0; i < n; i++) {
            socks[i] = proxy_conn();
            if (socks[i] >= 0) write_all(socks[i], line, len);
        }
        for (int i = 0; i < n; i++) {
            if (socks[i] < 0) { other++; continue; }
            read_head_only(socks[i], out, sizeof out);
            if (!strncmp(out, "HTTP/1.1 200", 12)) accepted++;
            else if (!strncmp(out, "HTTP/1.1 403", 12)) refused++;
            else other++;
        }
        for (int i = 0; i < n; i++) if (socks[i] >= 0) close(socks[i]);
        snprintf(msg, sizeof msg, "accepted=%d refused=%d other=%d", accepted, refused, other);
        reply(c, "200 OK", msg);
        return;
    }
    int s = proxy_conn();
    if (s < 0) { reply(c, "502 Bad Gateway", "no proxy"); return; }
    if (!strncmp(req, "GET /egress/get?", 16)) {
        param(req, "url", url, sizeof url);
        char line[1200];
        int len = snprintf(line, sizeof line, "GET %s HTTP/1.1\r\nAccept: */*\r\n\r\n", url);
        write_all(s, line, len);
        read_all(s, out, sizeof out);
    } else if (!strncmp(req, "GET /egress/connect?", 20)) {
        param(req, "to", to, sizeof to);
        param(req, "path", path, sizeof path);
        char line[1200];
        int len = snprintf(line, sizeof line, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", to, to);
        write_all(s, line, len);
        read_head_only(s, out, sizeof out);
        if (!strncmp(out, "HTTP/1.1 200", 12)) {
            size_t head = strlen(out);
            len = snprintf(line, sizeof line, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n",
                           path[0] ? path : "/", to);
            write_all(s, line, len);
            read_all(s, out + head, sizeof out - head);
        } else {
            size_t head = strlen(out);
            read_all(s, out + head, sizeof out - head);
        }
    } else {
        reply(c, "404 Not Found", "unknown egress test");
        close(s);
        return;
    }
    close(s);
    reply(c, "200 OK", out);
}

static void *serve_conn(void *arg) {
    int c = (int)(long)arg;
    char req[8192];
    size_t got = 0;
    ssize_t r;
    char *end = NULL;
    while (got < sizeof req - 1 && (r = read(c, req + got, sizeof req - 1 - got)) > 0) {
        got += r;
        req[got] = 0;
        if ((end = strstr(req, "\r\n\r\n"))) break;
    }
    if (!end) { close(c); return NULL; }
    size_t head_len = end + 4 - req;
    if (strcasestr(req, "\r\nupgrade: echo")) {
        /* A protocol upgrade: after the 101, echo raw bytes until EOF. */
        static const char sw[] = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n";
        if (write(c, sw, sizeof sw - 1) == (ssize_t)(sizeof sw - 1)) {
            if (got > head_len && write(c, req + head_len, got - head_len) < 0) perror("echo");
            char buf[4096];
            while ((r = read(c, buf, sizeof buf)) > 0)
                if (write(c, buf, r) != r) break;
        }
    } else if (!strncmp(req, "POST ", 5)) {
        char *cl = strcasestr(req, "content-length:");
        unsigned long long want = cl ? strtoull(cl + 15, NULL, 10) : 0, have = got - head_len;
        static __thread char buf[1 << 16];
        while (have < want && (r = read(c, buf, sizeof buf)) > 0) have += r;
        char msg[64];
        snprintf(msg, sizeof msg, "got %llu bytes", have);
        reply(c, "200 OK", msg);
    } else if (!strncmp(req, "GET /slow/", 10)) {
        sleep(atoi(req + 10));
        reply(c, "200 OK", "slow answer");
    } else if (!strncmp(req, "GET /stall", 10)) {
        /* Promise 1000 bytes, send 10, then go quiet. */
        static const char part[] = "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789";
        write_all(c, part, sizeof part - 1);
        sleep(30);
    } else if (!strncmp(req, "GET /egress/", 12)) {
        egress(c, req);
    } else if (!strncmp(req, "GET /mount", 10)) {
        /* A call seccomp refuses (and the agent counts). */
        char msg[96];
        int rc = mount("none", "/tmp", "tmpfs", 0, NULL);
        snprintf(msg, sizeof msg, "mount: %d %s", rc, rc ? strerror(errno) : "mounted");
        reply(c, "200 OK", msg);
    } else if (!strncmp(req, "GET /big/", 9)) {
        unsigned long long n = strtoull(req + 9, NULL, 10), sent = 0;
        char head[160];
        int hn = snprintf(head, sizeof head, "HTTP/1.1 200 OK\r\nContent-Length: %llu\r\nConnection: close\r\n\r\n", n);
        if (write(c, head, hn) == hn) {
            static __thread char buf[1 << 16];
            memset(buf, 'z', sizeof buf);
            while (sent < n) {
                size_t k = n - sent < sizeof buf ? n - sent : sizeof buf;
                ssize_t w = write(c, buf, k);
                if (w <= 0) break;
                sent += w;
            }
        }
    } else {
        reply(c, "200 OK", "hello from the sandbox");
    }
    close(c);
    return NULL;
}

static void *flood(void *arg) {
    (void)arg;
    for (unsigned long i = 0;; i++) printf("flood line %lu: the quick brown fox jumps over the lazy dog\n", i);
    return NULL;
}

static int serve_http(int with_flood) {
    const char *port = getenv("PORT");
    int s = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port ? atoi(port) : 0),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(s, (struct sockaddr *)&sa, sizeof sa) || listen(s, 64)) {
        perror("workload http: bind/listen");
        return 1;
    }
    if (with_flood) {
        pthread_t t;
        setvbuf(stdout, NULL, _IOFBF, 1 << 16);
        pthread_create(&t, NULL, flood, NULL);
    }
    for (;;) {
        int c = accept(s, NULL, NULL);
        if (c < 0) continue;
        pthread_t t;
        if (pthread_create(&t, NULL, serve_conn, (void *)(long)c) == 0) pthread_detach(t);
        else close(c);
    }
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *mode = argc > 1 ? argv[1] : DEFAULT_MODE;
    if (!strcmp(mode, "functional")) return functional();
    if (!strcmp(mode, "http")) return serve_http(0);
    if (!strcmp(mode, "flood")) return serve_http(1);
    if (!strcmp(mode, "crash")) { fprintf(stderr, "crashing on purpose\n"); return 3; }
    if (!strcmp(mode, "never-ready")) { for (;;) pause(); }
    if (!strcmp(mode, "slow-start")) { sleep(8); return serve_http(0); }
    if (!strcmp(mode, "persist-write") && argc > 2) {
        FILE *f = fopen("/data/persist", "w");
        return !(f && fputs(argv[2], f) >= 0 && fclose(f) == 0);
    }
    if (!strcmp(mode, "persist-read")) {
        char buf[256] = {0};
        FILE *f = fopen("/data/persist", "r");
        if (!f || !fgets(buf, sizeof buf, f)) return 1;
        printf("%s\n", buf);
        return 0;
    }
    if (!strcmp(mode, "exit") && argc > 2) return atoi(argv[2]);
    if (!strcmp(mode, "signal") && argc > 2) { kill(getpid(), atoi(argv[2])); pause(); }
    if (!strcmp(mode, "forkbomb")) {
        int forks = 0;
        for (;;) {
            pid_t p = fork();
            if (p == 0) { pause(); _exit(0); }
            if (p < 0) break;
            forks++;
        }
        printf("forks=%d errno=%s\n", forks, strerror(errno));
        kill(0, SIGKILL); /* our whole process group, ourselves included */
    }
    if (!strcmp(mode, "membomb")) {
        for (size_t total = 0;; total += 1 << 20) {
            char *p = malloc(1 << 20);
            if (!p) { printf("malloc failed at %zu MiB\n", total >> 20); return 3; }
            memset(p, 1, 1 << 20);
        }
    }
    if (!strcmp(mode, "spin") && argc > 2) {
        double secs = atof(argv[2]);
        pthread_t a, b;
        pthread_create(&a, NULL, spin_thread, &secs);
        pthread_create(&b, NULL, spin_thread, &secs);
        pthread_join(a, NULL);
        pthread_join(b, NULL);
        return 0;
    }
    fprintf(stderr, "workload: unknown mode %s\n", mode);
    return 2;
}

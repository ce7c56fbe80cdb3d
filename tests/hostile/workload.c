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
 *   http             serve "hello from the sandbox" over HTTP/1.1 on $PORT
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
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

static int serve_http(void) {
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
    static const char body[] = "hello from the sandbox";
    char reply[256];
    int n = snprintf(reply, sizeof reply,
                     "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
                     sizeof body - 1, body);
    for (;;) {
        int c = accept(s, NULL, NULL);
        if (c < 0) continue;
        char req[4096];
        size_t got = 0;
        ssize_t r;
        while (got < sizeof req - 1 && (r = read(c, req + got, sizeof req - 1 - got)) > 0) {
            got += r;
            req[got] = 0;
            if (strstr(req, "\r\n\r\n")) break;
        }
        if (write(c, reply, n) != n) perror("workload http: write");
        close(c);
    }
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *mode = argc > 1 ? argv[1] : "";
    if (!strcmp(mode, "functional")) return functional();
    if (!strcmp(mode, "http")) return serve_http();
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

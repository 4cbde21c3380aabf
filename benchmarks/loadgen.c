/*
 * loadgen.c: EGD load generator for the prngd benchmark suite.
 *
 * Built at run time by benchmarks/loadgen.py (cc -O2 -pthread) into
 * benchmarks/build/.  Each thread runs its own epoll loop over its share of
 * the connections; every connection has exactly one request in flight (a
 * client sends, waits for the whole reply, sends again), so the offered load
 * is "N clients as fast as the server answers".
 *
 *   loadgen (--unix PATH | --tcp HOST:PORT) --request HEX [--conns N]
 *           [--duration S] [--mode persistent|newconn] [--threads T]
 *           [--spread-src N]
 *   loadgen (--unix PATH | --tcp HOST:PORT) --idle N
 *
 * --request is the request in hex ("02ff", "01ff", "0120", "0230", "00").
 * The reply length follows from it: 00 -> 4 bytes; 02 N -> N bytes;
 * 01 N and 04 -> a count byte, then that many bytes.  A 01 reply whose count
 * byte is below N is "short" (and "zero" if it is 0); a connection that closes
 * or fails before its reply is complete is "short" too; bytes beyond the
 * expected reply are "overlong".
 *
 * persistent: each connection is opened before the clock starts and reused.
 * newconn: every request opens a new connection (connect, send, read, close),
 * and its latency includes the connect, as OpenSSL's and OpenSSH's do.
 * --spread-src N binds new TCP connections to N loopback source addresses
 * (127.0.0.2 ...) so that ports left in TIME_WAIT do not run out.
 *
 * Output: one JSON object on stdout with counts, rates and latency
 * percentiles (all latencies are recorded and sorted; none is sampled).
 *
 * --idle N opens N connections, sends 00 on each and reads the answer (so the
 * server has accepted every one), prints {"open": N, ...}, then holds them
 * until stdin reaches EOF.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_REQ 8
#define RBUF 1024

static struct sockaddr_storage g_addr;
static socklen_t g_addrlen;
static int g_family;
static unsigned char g_req[MAX_REQ];
static int g_reqlen;
static int g_fixed_reply;       /* reply length, or -1 when a count byte says */
static int g_want;              /* N of a 01 request (for short replies) */
static int g_newconn;
static double g_duration = 5.0;
static uint64_t g_t_start, g_t_end;
static int g_spread_src;        /* TCP: bind new connections to 127.0.0.2 .. 2+N-1 */

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *msg) {
    fprintf(stderr, "loadgen: %s: %s\n", msg, strerror(errno));
    exit(2);
}

enum { ST_CONNECTING, ST_WAITING };

struct conn {
    int fd;
    int state;
    int got;            /* reply bytes received so far */
    int expect;         /* total reply bytes, -1 until the count byte is read */
    uint64_t t_sent;    /* when the request (or its connect) started */
    int retry;          /* needs a new connection at the next loop turn */
    int backlog;        /* ... because the listener's backlog was full */
};

struct worker {
    pthread_t tid;
    int ep;
    struct conn *conns;
    int nconns;
    /* results */
    uint32_t *lat;      /* latencies in ns, capped at 4.29 s */
    size_t nlat, caplat;
    uint64_t bytes, shortr, zero, eof, overlong, errors, conn_errors, conn_retries;
    uint64_t inflight_end, stalled_end;
    int need_retry;     /* some connection has retry set */
    unsigned src_next;
};

static int set_nonblock(int fd) {
    int fl = fcntl(fd, F_GETFL);
    return fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static void record(struct worker *w, uint64_t dt) {
    if (w->nlat == w->caplat) {
        w->caplat = w->caplat ? w->caplat * 2 : 65536;
        w->lat = realloc(w->lat, w->caplat * sizeof(uint32_t));
        if (!w->lat) die("realloc");
    }
    w->lat[w->nlat++] = dt > 0xffffffffull ? 0xffffffffu : (uint32_t)dt;
}

/* Start a new connection for c; returns 0 or -1 (then c->retry is set). */
static int open_conn(struct worker *w, struct conn *c) {
    int fd = socket(g_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) { w->conn_errors++; c->retry = 1; w->need_retry = 1; return -1; }
    if (g_family == AF_INET) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (g_spread_src > 0) {
            /* Thousands of new connections a second leave their ports in
             * TIME_WAIT; one source address runs out of ephemeral ports at
             * ~14k connections/s here, which would measure the kernel's port
             * search, not the server.  Spread them over 127.0.0.2.. instead. */
            struct sockaddr_in src = {.sin_family = AF_INET};
            src.sin_addr.s_addr = htonl(0x7f000002u + (uint32_t)(w->src_next++ % (unsigned)g_spread_src));
            setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
            bind(fd, (struct sockaddr *)&src, sizeof src);
        }
    }
    c->fd = fd;
    c->got = 0;
    c->expect = g_fixed_reply;
    c->retry = 0;
    c->backlog = 0;
    if (connect(fd, (struct sockaddr *)&g_addr, g_addrlen) == 0) {
        c->state = ST_WAITING;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(w->ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
        return 0;
    }
    if (errno == EINPROGRESS) {
        c->state = ST_CONNECTING;
        struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
        if (epoll_ctl(w->ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
        return 0;
    }
    /* EAGAIN: a Unix listener's backlog is full; anything else is an error. */
    if (errno == EAGAIN) { w->conn_retries++; c->backlog = 1; } else w->conn_errors++;
    close(fd);
    c->fd = -1;
    c->retry = 1;
    w->need_retry = 1;
    return -1;
}

static void close_conn(struct conn *c) {
    if (c->fd >= 0) close(c->fd);  /* also leaves the epoll set */
    c->fd = -1;
}

/* Drop c's connection; a new one is made at the next loop turn. */
static void fail(struct worker *w, struct conn *c) {
    close_conn(c);
    c->retry = 1;
    w->need_retry = 1;
}

static int send_req(struct worker *w, struct conn *c) {
    ssize_t n = send(c->fd, g_req, g_reqlen, MSG_NOSIGNAL);
    if (n != g_reqlen) { w->errors++; return -1; }
    c->got = 0;
    c->expect = g_fixed_reply;
    return 0;
}

/* Begin the next request on c (after a completed one, or at the start).
 * A retry (after a full backlog) keeps the request's start time. */
static void next_request(struct worker *w, struct conn *c, int retry) {
    if (!retry) c->t_sent = now_ns();
    if (g_newconn || c->fd < 0) {
        close_conn(c);
        if (open_conn(w, c) == 0 && c->state == ST_WAITING && send_req(w, c) < 0) fail(w, c);
        return;
    }
    if (send_req(w, c) < 0) fail(w, c);
}

static void handle(struct worker *w, struct conn *c) {
    if (c->state == ST_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) { w->conn_errors++; fail(w, c); return; }
        c->state = ST_WAITING;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(w->ep, EPOLL_CTL_MOD, c->fd, &ev);
        if (send_req(w, c) < 0) fail(w, c);
        return;
    }
    unsigned char buf[RBUF];
    for (;;) {
        ssize_t n = recv(c->fd, buf, sizeof buf, 0);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) return;
            /* A reset or error before the reply was complete. */
            w->shortr++;
            w->errors++;
            fail(w, c);
            return;
        }
        if (n == 0) {
            w->eof++;
            w->shortr++;
            fail(w, c);
            return;
        }
        if (c->expect < 0 && c->got == 0) {
            int count = buf[0];
            c->expect = 1 + count;
            if (g_want >= 0 && count < g_want) {
                w->shortr++;
                if (count == 0) w->zero++;
            }
        }
        c->got += (int)n;
        if (c->got < c->expect) continue;
        uint64_t t = now_ns();
        if (c->got > c->expect) w->overlong++;
        if (t <= g_t_end) {
            record(w, t - c->t_sent);
            w->bytes += (uint64_t)(c->expect - (g_fixed_reply < 0 ? 1 : 0));
        }
        if (t >= g_t_end) {
            /* Time is up: this connection stays idle. */
            c->got = 0;
            c->expect = -2;
            return;
        }
        next_request(w, c, 0);
        return;
    }
}

static void *worker_main(void *arg) {
    struct worker *w = arg;
    struct epoll_event evs[256];
    for (int i = 0; i < w->nconns; i++) next_request(w, &w->conns[i], 0);
    for (;;) {
        uint64_t t = now_ns();
        if (t >= g_t_end) break;
        if (w->need_retry) {
            /* A failed request (counted above) is replaced by a new one on a
             * new connection; a connect refused for a full backlog is retried
             * and keeps its start time. */
            w->need_retry = 0;
            for (int i = 0; i < w->nconns; i++) {
                struct conn *c = &w->conns[i];
                if (c->retry) next_request(w, c, c->backlog);
            }
        }
        int left_ms = (int)((g_t_end - t) / 1000000ull) + 1;
        int timeout = w->need_retry ? 1 : (left_ms < 50 ? left_ms : 50);
        int n = epoll_wait(w->ep, evs, 256, timeout);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) handle(w, evs[i].data.ptr);
    }
    uint64_t t = now_ns();
    for (int i = 0; i < w->nconns; i++) {
        struct conn *c = &w->conns[i];
        if (c->fd >= 0 && c->expect != -2) {
            w->inflight_end++;
            if (t - c->t_sent > 1000000000ull) w->stalled_end++;
        }
    }
    return NULL;
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static double pct(const uint32_t *v, size_t n, double p) {
    if (!n) return 0.0;
    size_t k = (size_t)(p * (double)n);  /* nearest rank, 0-based */
    if (k >= n) k = n - 1;
    return v[k] / 1000.0;
}

static void raise_nofile(int need) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)need) {
        rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > (rlim_t)need ? (rlim_t)need : rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static int parse_hex(const char *s) {
    int n = 0;
    size_t len = strlen(s);
    if (len % 2 || len / 2 > MAX_REQ || len == 0) return -1;
    for (size_t i = 0; i < len; i += 2) {
        unsigned v;
        if (sscanf(s + i, "%2x", &v) != 1) return -1;
        g_req[n++] = (unsigned char)v;
    }
    return n;
}

static int blocking_connect(void) {
    int fd = socket(g_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    for (int tries = 0; tries < 2000; tries++) {
        if (connect(fd, (struct sockaddr *)&g_addr, g_addrlen) == 0) return fd;
        if (errno != EAGAIN && errno != EINTR) break;
        usleep(1000);
    }
    close(fd);
    return -1;
}

static int idle_mode(int n) {
    raise_nofile(n + 64);
    int *fds = calloc(n, sizeof(int));
    int open_ok = 0, failed = 0;
    unsigned char buf[8];
    for (int i = 0; i < n; i++) {
        int fd = blocking_connect();
        fds[i] = fd;
        if (fd < 0) { failed++; continue; }
        int ok = send(fd, "\x00", 1, MSG_NOSIGNAL) == 1;
        int got = 0;
        while (ok && got < 4) {
            ssize_t r = recv(fd, buf + got, 4 - got, 0);
            if (r <= 0) ok = 0; else got += (int)r;
        }
        if (ok) open_ok++; else failed++;
    }
    printf("{\"open\": %d, \"failed\": %d}\n", open_ok, failed);
    fflush(stdout);
    char c;
    while (read(0, &c, 1) > 0) {}
    for (int i = 0; i < n; i++) if (fds[i] >= 0) close(fds[i]);
    return failed ? 1 : 0;
}

static void usage(void) {
    fprintf(stderr,
            "usage: loadgen (--unix PATH | --tcp HOST:PORT) --request HEX [--conns N]\n"
            "               [--duration S] [--mode persistent|newconn] [--threads T]\n"
            "               [--spread-src N]  (TCP: source addresses 127.0.0.2 .. 127.0.0.N+1)\n"
            "       loadgen (--unix PATH | --tcp HOST:PORT) --idle N\n");
    exit(2);
}

int main(int argc, char **argv) {
    const char *unix_path = NULL, *tcp = NULL, *req = NULL;
    int conns = 1, threads = 1, idle = -1;
    signal(SIGPIPE, SIG_IGN);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) usage();
        if (!strcmp(a, "--unix")) unix_path = v;
        else if (!strcmp(a, "--tcp")) tcp = v;
        else if (!strcmp(a, "--request")) req = v;
        else if (!strcmp(a, "--conns")) conns = atoi(v);
        else if (!strcmp(a, "--threads")) threads = atoi(v);
        else if (!strcmp(a, "--duration")) g_duration = atof(v);
        else if (!strcmp(a, "--idle")) idle = atoi(v);
        else if (!strcmp(a, "--spread-src")) g_spread_src = atoi(v);
        else if (!strcmp(a, "--mode")) {
            if (!strcmp(v, "newconn")) g_newconn = 1;
            else if (strcmp(v, "persistent")) usage();
        } else usage();
        i++;
    }
    memset(&g_addr, 0, sizeof g_addr);
    if (unix_path) {
        struct sockaddr_un *su = (struct sockaddr_un *)&g_addr;
        if (strlen(unix_path) >= sizeof su->sun_path) { fprintf(stderr, "loadgen: path too long\n"); return 2; }
        su->sun_family = AF_UNIX;
        strcpy(su->sun_path, unix_path);
        g_addrlen = sizeof *su;
        g_family = AF_UNIX;
    } else if (tcp) {
        char host[256];
        const char *colon = strrchr(tcp, ':');
        if (!colon || colon - tcp >= (long)sizeof host) usage();
        memcpy(host, tcp, colon - tcp);
        host[colon - tcp] = 0;
        struct sockaddr_in *si = (struct sockaddr_in *)&g_addr;
        si->sin_family = AF_INET;
        si->sin_port = htons((uint16_t)atoi(colon + 1));
        if (inet_pton(AF_INET, host, &si->sin_addr) != 1) { fprintf(stderr, "loadgen: bad IPv4 address\n"); return 2; }
        g_addrlen = sizeof *si;
        g_family = AF_INET;
    } else usage();

    if (idle >= 0) return idle_mode(idle);
    if (!req || conns < 1 || threads < 1) usage();
    g_reqlen = parse_hex(req);
    if (g_reqlen < 0) usage();
    g_want = -1;
    switch (g_req[0]) {
    case 0x00: g_fixed_reply = 4; break;
    case 0x01: if (g_reqlen < 2) usage(); g_fixed_reply = -1; g_want = g_req[1]; break;
    case 0x02: if (g_reqlen < 2) usage(); g_fixed_reply = g_req[1]; break;
    case 0x04: g_fixed_reply = -1; break;
    default: fprintf(stderr, "loadgen: request must be 00, 01 N, 02 N or 04\n"); return 2;
    }
    if (threads > conns) threads = conns;
    raise_nofile(conns * 2 + 64);

    struct conn *all = calloc(conns, sizeof *all);
    struct worker *ws = calloc(threads, sizeof *ws);
    for (int i = 0; i < conns; i++) { all[i].fd = -1; all[i].expect = g_fixed_reply; }
    int per = conns / threads, extra = conns % threads, at = 0;
    for (int t = 0; t < threads; t++) {
        ws[t].ep = epoll_create1(EPOLL_CLOEXEC);
        if (ws[t].ep < 0) die("epoll_create1");
        ws[t].conns = all + at;
        ws[t].nconns = per + (t < extra);
        at += ws[t].nconns;
    }
    /* Persistent connections are opened before the clock starts. */
    if (!g_newconn) {
        for (int t = 0; t < threads; t++) {
            for (int i = 0; i < ws[t].nconns; i++) {
                struct conn *c = &ws[t].conns[i];
                int fd = blocking_connect();
                if (fd < 0) die("connect");
                set_nonblock(fd);
                if (g_family == AF_INET) {
                    int one = 1;
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                }
                c->fd = fd;
                c->state = ST_WAITING;
                struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
                if (epoll_ctl(ws[t].ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
            }
        }
    }
    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    g_t_start = now_ns();
    g_t_end = g_t_start + (uint64_t)(g_duration * 1e9);
    for (int t = 0; t < threads; t++)
        if (pthread_create(&ws[t].tid, NULL, worker_main, &ws[t])) die("pthread_create");
    for (int t = 0; t < threads; t++) pthread_join(ws[t].tid, NULL);
    uint64_t t_stop = now_ns();
    getrusage(RUSAGE_SELF, &ru1);

    size_t total = 0;
    struct worker sum = {0};
    for (int t = 0; t < threads; t++) {
        total += ws[t].nlat;
        sum.bytes += ws[t].bytes; sum.shortr += ws[t].shortr; sum.zero += ws[t].zero;
        sum.eof += ws[t].eof; sum.overlong += ws[t].overlong; sum.errors += ws[t].errors;
        sum.conn_errors += ws[t].conn_errors; sum.conn_retries += ws[t].conn_retries;
        sum.inflight_end += ws[t].inflight_end; sum.stalled_end += ws[t].stalled_end;
    }
    uint32_t *lat = malloc((total ? total : 1) * sizeof(uint32_t));
    size_t k = 0;
    double mean = 0.0;
    for (int t = 0; t < threads; t++) {
        memcpy(lat + k, ws[t].lat, ws[t].nlat * sizeof(uint32_t));
        k += ws[t].nlat;
    }
    for (size_t i = 0; i < total; i++) mean += lat[i];
    if (total) mean /= (double)total;
    qsort(lat, total, sizeof(uint32_t), cmp_u32);
    double dur = g_duration;
    double cpu_u = (ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) + (ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec) / 1e6;
    double cpu_s = (ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) + (ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) / 1e6;
    printf("{\"generator\": \"c\", \"request\": \"%s\", \"mode\": \"%s\", \"conns\": %d, \"threads\": %d, "
           "\"duration_s\": %.6f, \"wall_s\": %.6f, \"requests\": %zu, \"rps\": %.1f, \"bytes\": %llu, "
           "\"mbps\": %.3f, \"short\": %llu, \"zero\": %llu, \"eof\": %llu, \"overlong\": %llu, "
           "\"errors\": %llu, \"connect_errors\": %llu, \"connect_retries\": %llu, "
           "\"inflight_at_end\": %llu, \"stalled_at_end\": %llu, "
           "\"mean_us\": %.2f, \"p50_us\": %.2f, \"p90_us\": %.2f, \"p99_us\": %.2f, \"p999_us\": %.2f, "
           "\"max_us\": %.2f, \"cpu_user_s\": %.4f, \"cpu_sys_s\": %.4f}\n",
           req, g_newconn ? "newconn" : "persistent", conns, threads, dur, (t_stop - g_t_start) / 1e9,
           total, total / dur, (unsigned long long)sum.bytes, sum.bytes / dur / 1e6,
           (unsigned long long)sum.shortr, (unsigned long long)sum.zero, (unsigned long long)sum.eof,
           (unsigned long long)sum.overlong, (unsigned long long)sum.errors,
           (unsigned long long)sum.conn_errors, (unsigned long long)sum.conn_retries,
           (unsigned long long)sum.inflight_end, (unsigned long long)sum.stalled_end,
           mean / 1000.0, pct(lat, total, 0.50), pct(lat, total, 0.90), pct(lat, total, 0.99),
           pct(lat, total, 0.999), total ? lat[total - 1] / 1000.0 : 0.0, cpu_u, cpu_s);
    return 0;
}

/*
 * cserver.c: a single-threaded C epoll EGD server answering from a static
 * buffer.  It is not a baseline for prngd: it measures the load generator's
 * ceiling (the socket round-trip limit of this machine), to show that the
 * load generator is not what limits the Python servers.
 *
 *   cserver UNIX_PATH [127.0.0.1:PORT]
 *
 * Answers 00 / 01 N / 02 N (pipelined requests too; any other byte closes
 * the connection); prints "serving on ..." on stderr once it listens.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

struct peer {
    int fd;
    int listener;       /* 1 for a listening socket */
    int tcp;
    int npend;          /* bytes of an incomplete request */
    unsigned char pend[2];
};

static unsigned char BUF[256];

static int listen_on(const char *addr, int *tcp) {
    int fd;
    if (addr[0] == '/') {
        struct sockaddr_un su = {.sun_family = AF_UNIX};
        strncpy(su.sun_path, addr, sizeof su.sun_path - 1);
        unlink(addr);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
        if (fd < 0 || bind(fd, (struct sockaddr *)&su, sizeof su) < 0) return -1;
        *tcp = 0;
    } else {
        char host[64];
        const char *colon = strrchr(addr, ':');
        if (!colon || colon - addr >= (long)sizeof host) return -1;
        memcpy(host, addr, colon - addr);
        host[colon - addr] = 0;
        struct sockaddr_in si = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(colon + 1))};
        if (inet_pton(AF_INET, host, &si.sin_addr) != 1) return -1;
        fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (fd < 0 || bind(fd, (struct sockaddr *)&si, sizeof si) < 0) return -1;
        *tcp = 1;
    }
    if (listen(fd, 4096) < 0) return -1;
    return fd;
}

static void drop(struct peer *p) {
    close(p->fd);
    free(p);
}

/* 4098 request bytes ask for at most 2049 x 256 reply bytes. */
static unsigned char in[4096 + 2], out[2049 * 256];

static void serve(struct peer *p) {
    for (;;) {
        memcpy(in, p->pend, p->npend);
        ssize_t n = recv(p->fd, in + p->npend, 4096, 0);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
        if (n <= 0) { drop(p); return; }
        size_t end = (size_t)n + p->npend, i = 0, o = 0;
        p->npend = 0;
        while (i < end) {
            unsigned c = in[i];
            if (c == 0) {
                static const unsigned char level[4] = {0, 0, 16, 0};
                memcpy(out + o, level, 4);
                o += 4;
                i += 1;
            } else if (c == 1 || c == 2) {
                if (i + 1 >= end) { p->pend[0] = in[i]; p->npend = 1; break; }
                unsigned m = in[i + 1];
                if (c == 1) out[o++] = (unsigned char)m;
                memcpy(out + o, BUF, m);
                o += m;
                i += 2;
            } else { drop(p); return; }
        }
        size_t sent = 0;
        while (sent < o) {
            ssize_t s = send(p->fd, out + sent, o - sent, MSG_NOSIGNAL);
            if (s < 0 && errno == EINTR) continue;
            /* A send that would block is not waited for: a client with one
             * request in flight never fills the socket buffer. */
            if (s < 0) { drop(p); return; }
            sent += (size_t)s;
        }
    }
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: cserver UNIX_PATH [127.0.0.1:PORT]\n"); return 2; }
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) { rl.rlim_cur = rl.rlim_max; setrlimit(RLIMIT_NOFILE, &rl); }
    for (int i = 0; i < 256; i++) BUF[i] = (unsigned char)i;
    int ep = epoll_create1(0);
    for (int a = 1; a < argc; a++) {
        struct peer *l = calloc(1, sizeof *l);
        l->fd = listen_on(argv[a], &l->tcp);
        if (l->fd < 0) { perror(argv[a]); return 1; }
        l->listener = 1;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = l};
        epoll_ctl(ep, EPOLL_CTL_ADD, l->fd, &ev);
    }
    fprintf(stderr, "cserver serving on");
    for (int a = 1; a < argc; a++) fprintf(stderr, " %s", argv[a]);
    fprintf(stderr, "\n");
    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            struct peer *p = evs[i].data.ptr;
            if (!p->listener) { serve(p); continue; }
            for (;;) {
                int fd = accept4(p->fd, NULL, NULL, SOCK_NONBLOCK);
                if (fd < 0) break;
                if (p->tcp) { int one = 1; setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); }
                struct peer *c = calloc(1, sizeof *c);
                c->fd = fd;
                struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
                epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
            }
        }
    }
}

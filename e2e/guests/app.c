/* A long-running WASIX app for the e2e tests: an HTTP/1.0-style server on $PORT (one request
 * per connection).
 *   GET  /health  200 "ok"
 *   GET  /hello   200 "hello from $FISO_APP_NAME v$VERSION"
 *   POST /echo    200, the request body
 *   POST /process 200 {"enrichedby":"$FISO_APP_NAME"}: as a flow's `wasmer-app` interceptor,
 *                 adds that CloudEvents extension to every event
 *   GET  /db      connects to 127.0.0.1:$UPSTREAM_PORT, sends "ping\n", answers what came back
 *   GET  /exit    answers 200, then exits with code 3
 *   GET  /grow    grows its linear memory until that fails (the memory limit stops it)
 * It listens on 0.0.0.0: Fiso binds that to the app's listenHost. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "wasix.h"

#ifndef VERSION
#define VERSION "1"
#endif

static char req[65536];

static void reply(int fd, int status, const char *body, size_t len) {
    char head[256];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d X\r\nContent-Length: %zu\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n",
                     status, len);
    write(fd, head, (size_t)n);
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, body + off, len - off);
        if (w <= 0) break;
        off += (size_t)w;
    }
}

static size_t read_request(int fd, char **body, size_t *body_len) {
    size_t have = 0;
    char *end = NULL;
    while (have < sizeof req - 1) {
        ssize_t r = read(fd, req + have, sizeof req - 1 - have);
        if (r <= 0) break;
        have += (size_t)r;
        req[have] = 0;
        end = strstr(req, "\r\n\r\n");
        if (end) break;
    }
    if (!end) return 0;
    size_t want = 0;
    char *cl = strstr(req, "content-length:");
    if (!cl) cl = strstr(req, "Content-Length:");
    if (cl && cl < end) want = (size_t)strtoul(cl + 15, NULL, 10);
    *body = end + 4;
    while ((size_t)(req + have - *body) < want && have < sizeof req - 1) {
        ssize_t r = read(fd, req + have, sizeof req - 1 - have);
        if (r <= 0) break;
        have += (size_t)r;
    }
    *body_len = (size_t)(req + have - *body);
    if (*body_len > want) *body_len = want;
    return have;
}

static void db(int fd) {
    const char *p = getenv("UPSTREAM_PORT");
    int32_t s;
    if (!p || wasix_sock_open(WASIX_INET4, WASIX_STREAM, WASIX_TCP, &s) != 0) {
        reply(fd, 500, "no socket", 9);
        return;
    }
    wasix_addr_port to = wasix_inet4(127, 0, 0, 1, (uint16_t)atoi(p));
    int32_t err = wasix_sock_connect(s, &to);
    if (err != 0) {
        char msg[64];
        int n = snprintf(msg, sizeof msg, "connect failed: errno %d", err);
        reply(fd, 502, msg, (size_t)n);
        close(s);
        return;
    }
    write(s, "ping\n", 5);
    char buf[256];
    ssize_t n = read(s, buf, sizeof buf);
    close(s);
    reply(fd, 200, buf, n > 0 ? (size_t)n : 0);
}

int main(void) {
    const char *port = getenv("PORT");
    const char *name = getenv("FISO_APP_NAME");
    int32_t ls;
    if (!port || wasix_sock_open(WASIX_INET4, WASIX_STREAM, WASIX_TCP, &ls) != 0) {
        fprintf(stderr, "cannot open a socket\n");
        return 1;
    }
    wasix_addr_port any = wasix_inet4(0, 0, 0, 0, (uint16_t)atoi(port));
    int32_t err = wasix_sock_bind(ls, &any);
    if (err != 0 || wasix_sock_listen(ls, 64) != 0) {
        fprintf(stderr, "cannot listen on port %s: errno %d\n", port, err);
        return 1;
    }
    printf("listening on port %s\n", port);
    fflush(stdout);
    for (;;) {
        int32_t fd;
        wasix_addr_port peer;
        if (wasix_sock_accept(ls, 0, &fd, &peer) != 0) continue;
        char *body = NULL;
        size_t body_len = 0;
        if (read_request(fd, &body, &body_len) == 0) {
            close(fd);
            continue;
        }
        if (strncmp(req, "GET /health ", 12) == 0) {
            reply(fd, 200, "ok", 2);
        } else if (strncmp(req, "GET /hello ", 11) == 0) {
            char msg[128];
            int n = snprintf(msg, sizeof msg, "hello from %s v%s", name ? name : "?", VERSION);
            reply(fd, 200, msg, (size_t)n);
        } else if (strncmp(req, "POST /echo ", 11) == 0) {
            reply(fd, 200, body, body_len);
        } else if (strncmp(req, "POST /process ", 14) == 0) {
            char msg[128];
            int n = snprintf(msg, sizeof msg, "{\"enrichedby\":\"%s\"}", name ? name : "?");
            reply(fd, 200, msg, (size_t)n);
        } else if (strncmp(req, "GET /db ", 8) == 0) {
            db(fd);
        } else if (strncmp(req, "GET /exit ", 10) == 0) {
            reply(fd, 200, "bye", 3);
            close(fd);
            fprintf(stderr, "exiting on request\n");
            exit(3);
        } else if (strncmp(req, "GET /grow ", 10) == 0) {
            /* 1 MiB at a time, straight from memory.grow (what an allocator does underneath). */
            while (__builtin_wasm_memory_grow(0, 16) != (size_t)-1) {
            }
            reply(fd, 500, "still here", 10);
        } else {
            reply(fd, 404, "not found", 9);
        }
        close(fd);
    }
}

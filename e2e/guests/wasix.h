/* WASIX socket calls (module `wasix_32v1`), declared by hand: Debian's wasi-libc has WASI
 * preview 1 only. Signatures and layouts as wasmer-wasix 0.601 implements them. */
#ifndef FISO_WASIX_H
#define FISO_WASIX_H
#include <stdint.h>

#define WASIX_IMPORT(name) __attribute__((import_module("wasix_32v1"), import_name(name)))

/* __wasi_addr_port_t: family, padding, then the port (little-endian u16) and the address. */
typedef struct {
    uint8_t family; /* 1 = inet4, 2 = inet6 */
    uint8_t padding;
    uint8_t octs[18];
} wasix_addr_port;

enum { WASIX_INET4 = 1, WASIX_STREAM = 1, WASIX_TCP = 6 };

WASIX_IMPORT("sock_open") int32_t wasix_sock_open(int32_t af, int32_t ty, int32_t proto, int32_t *fd);
WASIX_IMPORT("sock_bind") int32_t wasix_sock_bind(int32_t fd, const wasix_addr_port *addr);
WASIX_IMPORT("sock_listen") int32_t wasix_sock_listen(int32_t fd, int32_t backlog);
WASIX_IMPORT("sock_accept_v2") int32_t wasix_sock_accept(int32_t fd, int32_t flags, int32_t *conn, wasix_addr_port *peer);
WASIX_IMPORT("sock_connect") int32_t wasix_sock_connect(int32_t fd, const wasix_addr_port *addr);

static inline wasix_addr_port wasix_inet4(uint8_t a, uint8_t b, uint8_t c, uint8_t d, uint16_t port) {
    wasix_addr_port addr = {0};
    addr.family = WASIX_INET4;
    addr.octs[0] = (uint8_t)(port & 0xff);
    addr.octs[1] = (uint8_t)(port >> 8);
    addr.octs[2] = a;
    addr.octs[3] = b;
    addr.octs[4] = c;
    addr.octs[5] = d;
    return addr;
}
#endif

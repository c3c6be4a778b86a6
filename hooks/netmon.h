/*
 * netmon.h - what netmon.c (the fd table, counting, socket hooks) and
 * dns.c (host names) share. Internal to the library.
 */
#ifndef AEGIS_NETMON_H
#define AEGIS_NETMON_H

#include <stdint.h>
#include <sys/socket.h>

#include "aegis_hooks.h"

#define NM_HOST_MAX 256

/* What a line needs to know about a connection. */
struct peer {
    int fd;
    uint8_t family;
    uint8_t socktype;
    uint16_t rport;
    uint16_t lport;
    uint8_t raddr[16];
};

/* netmon on and the library started */
AEGIS_HIDDEN int nm_active(void);

/* Fills p from an INET/INET6 sockaddr of len bytes; 0 if it is not one. */
AEGIS_HIDDEN int nm_peer_from_sockaddr(const struct sockaddr *sa, socklen_t len, struct peer *p);

/* "fd", "family", "proto", "remote_addr", "remote_port", "local_port",
 * and "host" when a name for the address is known. */
AEGIS_HIDDEN void nm_add_peer(struct jbuf *j, const struct peer *p);
AEGIS_HIDDEN void nm_add_addr(struct jbuf *j, const char *key, int family, const void *addr);

/* dns.c: the address -> name cache, and a UDP port 53 packet seen. */
AEGIS_HIDDEN void nm_host_remember(int family, const void *addr, const char *name);
AEGIS_HIDDEN int nm_host_lookup(int family, const uint8_t *addr, char *out /* NM_HOST_MAX */);
AEGIS_HIDDEN void nm_dns_seen(const struct peer *p, const void *buf, size_t len);
AEGIS_HIDDEN void aegis_dns_preresolve(void);

/* f = REAL(name), or fail the call with ENOSYS if libc has no such thing */
#define GET_REAL(f, name, fail)      \
    __typeof__(&name) f = REAL(name); \
    if (f == NULL) {                  \
        errno = ENOSYS;               \
        return fail;                  \
    }

/* Runs body with errno saved, when netmon is on. */
#define NETMON_AFTER(cond, body)                 \
    do {                                          \
        if ((cond) && nm_active()) {          \
            int aegis_saved_ = errno;             \
            body;                                 \
            errno = aegis_saved_;                 \
        }                                         \
    } while (0)

#endif

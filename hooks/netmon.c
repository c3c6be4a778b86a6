/*
 * netmon.c - AEGIS_NETMON_LOG: which INET sockets a process uses, with
 * byte counts, written as JSON lines (source "preload").
 *
 * An fd table, filled at connect() and accept() time for AF_INET/AF_INET6
 * sockets only, holds the peer and two pairs of counters (bytes since the
 * last line, bytes in total) per fd. The I/O hooks add to the counters in
 * memory; nothing is written per call (DESIGN.md fact 11). Lines:
 *
 *   connect  written at once, with "result" (0, also for EINPROGRESS) and
 *   accept   written at once
 *   send     bytes sent since the previous send line of that fd: written
 *   recv     at the first bytes each way, when the fd is closed, at exit,
 *            when 1 MiB has gathered, and by a sweep at most once a second
 *            (from any hooked call)
 *   close    after the fd's last send/recv lines: "bytes" 0, lifetime
 *            totals in "bytes_sent" / "bytes_recv"
 *   dns      a query or answer seen on UDP port 53, or a getaddrinfo()
 *            result; its addresses name the peers of later lines ("host")
 *
 * Summing "bytes" over all lines of a process gives its traffic: only the
 * send/recv lines carry a non-zero "bytes".
 *
 * Counted calls: send, sendto, sendmsg, sendmmsg, sendfile, write, writev,
 * recv, recvfrom, recvmsg, recvmmsg, read, readv (and the fortified
 * variants), on tracked fds only. close, fclose, close_range, closefrom
 * end a connection; socket, pipe, dup*, accept and the open family drop a
 * stale entry whose socket was closed where we could not see it. After
 * fork() the child starts from zero and stays quiet about sockets it
 * inherited but did not use; a vfork() child (same memory, other pid)
 * never touches the table.
 *
 * Limits: calls that do not go through libc's exported symbols are not
 * seen (raw syscalls, glibc's own resolver), nor sockets inherited across
 * exec, nor the counts of a process that leaves with _exit().
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#include "aegis_hooks.h"
#include "netmon.h"

/* The fortified entry points (_FORTIFY_SOURCE). */
ssize_t __read_chk(int fd, void *buf, size_t nbytes, size_t buflen);
ssize_t __recv_chk(int fd, void *buf, size_t len, size_t buflen, int flags);
ssize_t __recvfrom_chk(int fd, void *buf, size_t len, size_t buflen, int flags,
                       struct sockaddr *addr, socklen_t *addrlen);

#define FLUSH_BYTES (1u << 20) /* a line once this much has gathered */
#define SWEEP_NS 1000000000ull /* pending counts written at least this often */

enum { DIR_SEND = 0, DIR_RECV = 1 };

/* ---- the fd table ----------------------------------------------------- */

struct conn {
    uint32_t state; /* 0 free, 1 tracked; written last on fill, first on take */
    uint8_t family;
    uint8_t socktype;
    uint8_t inherited; /* copied by fork(): only lines for bytes moved here */
    uint8_t dns;       /* UDP peer port 53: parse what goes through */
    uint16_t rport;
    uint16_t lport;
    uint8_t raddr[16];
    uint64_t pending[2]; /* since the last send/recv line */
    uint64_t total[2];   /* since connect/accept */
    uint64_t start_ns;
};

#define CHUNK_BITS 8
#define CHUNK_SIZE (1u << CHUNK_BITS)
#define NCHUNKS 4096u /* fds below 1,048,576 */

static struct conn *chunks[NCHUNKS];

static struct conn *lookup(int fd)
{
    if (fd < 0 || (unsigned)fd >= NCHUNKS * CHUNK_SIZE) return NULL;
    struct conn *c = __atomic_load_n(&chunks[(unsigned)fd >> CHUNK_BITS], __ATOMIC_ACQUIRE);
    return c != NULL ? &c[(unsigned)fd & (CHUNK_SIZE - 1)] : NULL;
}

static struct conn *lookup_create(int fd)
{
    if (fd < 0 || (unsigned)fd >= NCHUNKS * CHUNK_SIZE) return NULL;
    struct conn **slot = &chunks[(unsigned)fd >> CHUNK_BITS];
    struct conn *c = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
    if (c == NULL) {
        size_t size = CHUNK_SIZE * sizeof(struct conn);
        void *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED) return NULL;
        struct conn *expected = NULL;
        if (__atomic_compare_exchange_n(slot, &expected, (struct conn *)m, 0, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE)) {
            c = (struct conn *)m;
        } else {
            munmap(m, size);
            c = expected;
        }
    }
    return &c[(unsigned)fd & (CHUNK_SIZE - 1)];
}

static int is_tracked(const struct conn *e)
{
    return e != NULL && __atomic_load_n(&e->state, __ATOMIC_ACQUIRE) == 1;
}

struct snap {
    struct peer p;
    uint8_t inherited;
    uint64_t pending[2];
    uint64_t total[2];
    uint64_t start_ns;
};

static void peer_of(const struct conn *e, int fd, struct peer *p)
{
    p->fd = fd;
    p->family = e->family;
    p->socktype = e->socktype;
    p->rport = e->rport;
    p->lport = e->lport;
    memcpy(p->raddr, e->raddr, sizeof p->raddr);
}

/* Removes fd from the table; returns 1 with its last state if it was
 * tracked. Called BEFORE the fd is really closed, so that no other thread
 * can have reused the number yet. */
static int take(struct conn *e, int fd, struct snap *s)
{
    if (e == NULL || __atomic_exchange_n(&e->state, 0, __ATOMIC_ACQ_REL) != 1) return 0;
    peer_of(e, fd, &s->p);
    s->inherited = e->inherited;
    s->start_ns = e->start_ns;
    for (int d = 0; d < 2; d++) {
        s->pending[d] = __atomic_exchange_n(&e->pending[d], 0, __ATOMIC_ACQ_REL);
        s->total[d] = __atomic_exchange_n(&e->total[d], 0, __ATOMIC_ACQ_REL);
    }
    return 1;
}

/* The table belongs to aegis_pid: a vfork() child (same memory, another
 * pid) must leave it alone. */
static int table_is_ours(void) { return (int)getpid() == aegis_pid; }

/* take() for fd, if it is tracked and the table is ours (is_tracked()
 * first: the cheap test spares untracked fds the getpid()). */
static int untrack(int fd, struct snap *s)
{
    struct conn *e = lookup(fd);
    return is_tracked(e) && table_is_ours() && take(e, fd, s);
}

/* ---- lines ------------------------------------------------------------ */

static const char *family_name(int family) { return family == AF_INET ? "inet" : "inet6"; }

static const char *proto_name(int socktype)
{
    switch (socktype) {
    case SOCK_STREAM:
        return "tcp";
    case SOCK_DGRAM:
        return "udp";
    default:
        return "other";
    }
}

void nm_add_addr(struct jbuf *j, const char *key, int family, const void *addr)
{
    char text[INET6_ADDRSTRLEN];
    if (inet_ntop(family, addr, text, sizeof text) == NULL) text[0] = '\0';
    jb_str(j, key, text);
}

void nm_add_peer(struct jbuf *j, const struct peer *p)
{
    char host[NM_HOST_MAX];
    jb_i64(j, "fd", p->fd);
    jb_str(j, "family", family_name(p->family));
    jb_str(j, "proto", proto_name(p->socktype));
    nm_add_addr(j, "remote_addr", p->family, p->raddr);
    jb_u64(j, "remote_port", p->rport);
    if (p->lport != 0) jb_u64(j, "local_port", p->lport);
    if (nm_host_lookup(p->family, p->raddr, host)) jb_str(j, "host", host);
}

/* One send or recv line, built in j (callers reuse one buffer: these
 * paths can run inside a signal handler on a small stack). Opens the log
 * itself when l is NULL. */
static void line_bytes(struct jlog *l, struct jbuf *j, const struct peer *p, int dir,
                       uint64_t bytes, const char *reason)
{
    jb_begin(j, dir == DIR_SEND ? "send" : "recv");
    nm_add_peer(j, p);
    jb_u64(j, "bytes", bytes);
    jb_str(j, "reason", reason);
    jb_end(j);
    if (l != NULL)
        jlog_write(l, j);
    else
        jlog_append(j);
}

/* The last lines of a connection that left the table. */
static void lines_closed(const struct snap *s, const char *reason)
{
    /* a socket fork() copied into this process and not used here */
    if (s->inherited && s->total[DIR_SEND] == 0 && s->total[DIR_RECV] == 0) return;
    struct jlog l;
    struct jbuf j;
    jlog_open(&l);
    for (int d = 0; d < 2; d++)
        if (s->pending[d] != 0) line_bytes(&l, &j, &s->p, d, s->pending[d], reason);
    jb_begin(&j, "close");
    nm_add_peer(&j, &s->p);
    jb_u64(&j, "bytes", 0);
    jb_u64(&j, "bytes_sent", s->total[DIR_SEND]);
    jb_u64(&j, "bytes_recv", s->total[DIR_RECV]);
    uint64_t now = aegis_mono_ns();
    if (s->start_ns != 0 && now >= s->start_ns)
        jb_u64(&j, "duration_ms", (now - s->start_ns) / 1000000u);
    jb_str(&j, "reason", reason);
    jb_end(&j);
    jlog_write(&l, &j);
    jlog_close(&l);
}

/* ---- counting --------------------------------------------------------- */

static uint64_t next_sweep_ns;

/* Writes the pending counts of every tracked fd (interval or exit). */
static void sweep(void)
{
    struct jlog l = {-1};
    struct jbuf j;
    int opened = 0;
    for (unsigned c = 0; c < NCHUNKS; c++) {
        struct conn *chunk = __atomic_load_n(&chunks[c], __ATOMIC_ACQUIRE);
        if (chunk == NULL) continue;
        for (unsigned i = 0; i < CHUNK_SIZE; i++) {
            struct conn *e = &chunk[i];
            if (!is_tracked(e)) continue;
            for (int d = 0; d < 2; d++) {
                if (__atomic_load_n(&e->pending[d], __ATOMIC_RELAXED) == 0) continue;
                uint64_t n = __atomic_exchange_n(&e->pending[d], 0, __ATOMIC_ACQ_REL);
                if (n == 0) continue;
                if (!opened) {
                    jlog_open(&l);
                    opened = 1;
                }
                struct peer p;
                peer_of(e, (int)(c * CHUNK_SIZE + i), &p);
                line_bytes(&l, &j, &p, d, n, "interval");
            }
        }
    }
    if (opened) jlog_close(&l);
}

/* Called from every hooked I/O call: a sweep at most once a second, so
 * that a long-lived connection shows its traffic while it lives. */
static void tick(void)
{
    uint64_t now = aegis_mono_ns();
    uint64_t due = __atomic_load_n(&next_sweep_ns, __ATOMIC_RELAXED);
    if (now < due) return;
    if (!__atomic_compare_exchange_n(&next_sweep_ns, &due, now + SWEEP_NS, 0, __ATOMIC_ACQ_REL,
                                     __ATOMIC_RELAXED))
        return;
    if (table_is_ours()) sweep();
}

static void count(int fd, int dir, uint64_t n)
{
    struct conn *e = lookup(fd);
    if (is_tracked(e)) {
        uint64_t before = __atomic_fetch_add(&e->total[dir], n, __ATOMIC_RELAXED);
        uint64_t p = __atomic_add_fetch(&e->pending[dir], n, __ATOMIC_ACQ_REL);
        /* The first bytes each way are written at once: a connection whose
         * socket moved data with no line of ours went around the hooks. */
        if (p >= FLUSH_BYTES || before == 0) {
            uint64_t x = __atomic_exchange_n(&e->pending[dir], 0, __ATOMIC_ACQ_REL);
            if (x != 0) {
                struct peer pe;
                struct jbuf j;
                peer_of(e, fd, &pe);
                line_bytes(NULL, &j, &pe, dir, x, before == 0 ? "first" : "threshold");
            }
        }
    }
    tick();
}

int nm_active(void) { return aegis_ready() && aegis_netmon_on; }

/* Fills p from an INET/INET6 sockaddr of len bytes; 0 if it is not one. */
int nm_peer_from_sockaddr(const struct sockaddr *sa, socklen_t len, struct peer *p)
{
    if (sa == NULL) return 0;
    memset(p, 0, sizeof *p);
    if (len >= (socklen_t)sizeof(struct sockaddr_in) && sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        p->family = AF_INET;
        p->rport = ntohs(in->sin_port);
        memcpy(p->raddr, &in->sin_addr, 4);
        return 1;
    }
    /* 24: the RFC 2133 size, without sin6_scope_id; the kernel takes it */
    if (len >= 24 && sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        p->family = AF_INET6;
        p->rport = ntohs(in6->sin6_port);
        memcpy(p->raddr, &in6->sin6_addr, 16);
        return 1;
    }
    return 0;
}

static int sock_type(int fd)
{
    int type = 0;
    socklen_t tl = sizeof type;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) != 0) return 0;
    return type;
}

/* A datagram sent to or received from addr (alen bytes) on fd: DNS if
 * addr is port 53 and fd a UDP socket. Returns 1 if it was. */
static int dns_by_addr(int fd, const void *buf, size_t len, const struct sockaddr *addr,
                       socklen_t alen)
{
    struct peer p;
    if (!nm_peer_from_sockaddr(addr, alen, &p) || p.rport != 53 || sock_type(fd) != SOCK_DGRAM)
        return 0;
    p.fd = fd;
    p.socktype = SOCK_DGRAM;
    nm_dns_seen(&p, buf, len);
    return 1;
}

/* Data on fd without an address: DNS if fd is a tracked UDP socket
 * connected to port 53. */
static void dns_by_conn(int fd, const void *buf, size_t len)
{
    struct conn *e = lookup(fd);
    if (is_tracked(e) && e->dns) {
        struct peer p;
        peer_of(e, fd, &p);
        nm_dns_seen(&p, buf, len);
    }
}

/* After a send: a DNS query? An explicit destination decides alone. */
static void maybe_dns(int fd, const void *buf, size_t len, const struct sockaddr *dest,
                      socklen_t destlen)
{
    if (dest != NULL)
        (void)dns_by_addr(fd, buf, len, dest, destlen);
    else
        dns_by_conn(fd, buf, len);
}

/* After a receive from src (or on a tracked UDP socket to port 53): a DNS
 * answer? cap is the size of the caller's address buffer. */
static void maybe_dns_answer(int fd, const void *buf, size_t len, const struct sockaddr *src,
                             socklen_t srclen, socklen_t cap)
{
    if (src != NULL && cap > 0 && dns_by_addr(fd, buf, len, src, srclen < cap ? srclen : cap))
        return;
    dns_by_conn(fd, buf, len);
}

/* ---- table changes ---------------------------------------------------- */

void aegis_netmon_fd_opened(int fd)
{
    struct snap s;
    if (untrack(fd, &s)) lines_closed(&s, "reused");
}

static void track(int fd, const struct peer *p)
{
    struct conn *e = lookup_create(fd);
    if (e == NULL) return;
    struct snap old;
    if (take(e, fd, &old)) lines_closed(&old, "reconnect");
    e->family = p->family;
    e->socktype = p->socktype;
    e->rport = p->rport;
    e->lport = p->lport;
    memcpy(e->raddr, p->raddr, sizeof e->raddr);
    e->inherited = 0;
    e->dns = p->socktype == SOCK_DGRAM && p->rport == 53;
    e->start_ns = aegis_mono_ns();
    for (int d = 0; d < 2; d++) {
        __atomic_store_n(&e->pending[d], 0, __ATOMIC_RELAXED);
        __atomic_store_n(&e->total[d], 0, __ATOMIC_RELAXED);
    }
    __atomic_store_n(&e->state, 1, __ATOMIC_RELEASE);
}

static void fill_local(int fd, struct peer *p)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0) return;
    if (ss.ss_family == AF_INET && sl >= sizeof(struct sockaddr_in))
        p->lport = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    else if (ss.ss_family == AF_INET6 && sl >= sizeof(struct sockaddr_in6))
        p->lport = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
}

static void on_connect(int fd, const struct sockaddr *addr, socklen_t len, int ret, int err)
{
    if (addr == NULL || len < (socklen_t)sizeof(sa_family_t)) return;
    if (addr->sa_family == AF_UNSPEC) {
        /* a UDP socket dissolving its association */
        struct snap s;
        if (ret == 0 && untrack(fd, &s)) lines_closed(&s, "disconnect");
        return;
    }
    struct peer p;
    if (!nm_peer_from_sockaddr(addr, len, &p)) return;
    /* a non-blocking connect polled again: already logged */
    if (ret != 0 && (err == EALREADY || err == EISCONN)) return;
    p.fd = fd;
    p.socktype = (uint8_t)sock_type(fd);
    int ok = ret == 0 || err == EINPROGRESS || err == EINTR;
    if (ok) {
        fill_local(fd, &p);
        if (table_is_ours()) track(fd, &p);
    }
    struct jbuf j;
    jb_begin(&j, "connect");
    nm_add_peer(&j, &p);
    jb_u64(&j, "bytes", 0);
    if (ret == 0 || err == EINPROGRESS) {
        jb_i64(&j, "result", 0);
        if (ret != 0) jb_bool(&j, "in_progress", 1);
    } else {
        const char *name = aegis_errno_name(err);
        if (name != NULL)
            jb_str(&j, "result", name);
        else
            jb_i64(&j, "result", err);
        jb_i64(&j, "errno", err);
    }
    jb_end(&j);
    jlog_append(&j);
}

static void on_accept(int fd)
{
    aegis_netmon_fd_opened(fd);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    struct peer p;
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) != 0) return;
    if (!nm_peer_from_sockaddr((struct sockaddr *)&ss, sl, &p)) return;
    p.fd = fd;
    p.socktype = (uint8_t)sock_type(fd);
    fill_local(fd, &p);
    if (table_is_ours()) track(fd, &p);
    struct jbuf j;
    jb_begin(&j, "accept");
    nm_add_peer(&j, &p);
    jb_u64(&j, "bytes", 0);
    jb_end(&j);
    jlog_append(&j);
}

/* Everything still tracked, at exit (the destructor). */
void aegis_netmon_at_exit(void)
{
    for (unsigned c = 0; c < NCHUNKS; c++) {
        struct conn *chunk = __atomic_load_n(&chunks[c], __ATOMIC_ACQUIRE);
        if (chunk == NULL) continue;
        for (unsigned i = 0; i < CHUNK_SIZE; i++) {
            struct snap s;
            if (is_tracked(&chunk[i]) && take(&chunk[i], (int)(c * CHUNK_SIZE + i), &s))
                lines_closed(&s, "exit");
        }
    }
}

/* In the child of fork(): the sockets are shared, the counts are the
 * parent's. Start from zero and stay quiet about sockets not used here. */
void aegis_netmon_after_fork_child(void)
{
    for (unsigned c = 0; c < NCHUNKS; c++) {
        struct conn *chunk = chunks[c];
        if (chunk == NULL) continue;
        for (unsigned i = 0; i < CHUNK_SIZE; i++) {
            struct conn *e = &chunk[i];
            if (e->state != 1) continue;
            e->inherited = 1;
            e->pending[0] = e->pending[1] = 0;
            e->total[0] = e->total[1] = 0;
        }
    }
    next_sweep_ns = aegis_mono_ns() + SWEEP_NS;
}

void aegis_netmon_init(void) { next_sweep_ns = aegis_mono_ns() + SWEEP_NS; }

/* Closes in [first, last] (close_range, closefrom). */
static void closing_range(unsigned first, unsigned last)
{
    if (!table_is_ours()) return;
    for (unsigned c = first >> CHUNK_BITS; c < NCHUNKS && c <= (last >> CHUNK_BITS); c++) {
        struct conn *chunk = __atomic_load_n(&chunks[c], __ATOMIC_ACQUIRE);
        if (chunk == NULL) continue;
        for (unsigned i = 0; i < CHUNK_SIZE; i++) {
            unsigned fd = c * CHUNK_SIZE + i;
            struct snap s;
            if (fd < first || fd > last || !is_tracked(&chunk[i])) continue;
            if (take(&chunk[i], (int)fd, &s)) lines_closed(&s, "close");
        }
    }
}

/* ---- the hooks -------------------------------------------------------- */

/* Every real function the hooks below call, X(name) each. */
#define NETMON_REAL(X)                                                                      \
    X(connect) X(accept) X(accept4) X(socket) X(dup) X(dup2) X(dup3) X(close) X(fclose)     \
    X(pipe) X(pipe2) X(socketpair) X(send) X(sendto) X(sendmsg) X(sendmmsg) X(write)        \
    X(writev) X(sendfile) X(sendfile64) X(recv) X(__recv_chk) X(recvfrom) X(__recvfrom_chk) \
    X(recvmsg) X(recvmmsg) X(read) X(__read_chk) X(readv)

NETMON_REAL(AEGIS_SLOT_ITEM)
#if __GLIBC_PREREQ(2, 34)
AEGIS_SLOT(close_range);
AEGIS_SLOT(closefrom);
#endif

void aegis_netmon_preresolve(void)
{
    NETMON_REAL(AEGIS_RESOLVE_ITEM)
    aegis_dns_preresolve();
#if __GLIBC_PREREQ(2, 34)
    (void)REAL(close_range);
    (void)REAL(closefrom);
#endif
}

/* What the hooks do after the real call (NETMON_AFTER: netmon on, errno
 * saved). */

static void fds_opened(const int fds[2])
{
    aegis_netmon_fd_opened(fds[0]);
    aegis_netmon_fd_opened(fds[1]);
}

/* r > 0 bytes sent from buf (to dest if not NULL) */
static void on_sent(int fd, const void *buf, ssize_t r, const struct sockaddr *dest,
                    socklen_t destlen)
{
    count(fd, DIR_SEND, (uint64_t)r);
    maybe_dns(fd, buf, (size_t)r, dest, destlen);
}

/* r > 0 bytes received into buf of len bytes (from src, see
 * maybe_dns_answer) */
static void on_received(int fd, const void *buf, size_t len, ssize_t r,
                        const struct sockaddr *src, socklen_t srclen, socklen_t cap)
{
    count(fd, DIR_RECV, (uint64_t)r);
    /* with MSG_TRUNC, r can be the datagram's size, beyond len */
    maybe_dns_answer(fd, buf, (size_t)r < len ? (size_t)r : len, src, srclen, cap);
}

/* r > 0 messages of vec moved (sendmmsg, recvmmsg) */
static void on_mmsg(int fd, int dir, const struct mmsghdr *vec, int r)
{
    uint64_t total = 0;
    for (int i = 0; i < r; i++) total += vec[i].msg_len;
    if (total > 0) count(fd, dir, total);
}

AEGIS_EXPORT int connect(int fd, const struct sockaddr *addr, socklen_t len)
{
    GET_REAL(f, connect, -1);
    int r = f(fd, addr, len);
    int err = errno;
    NETMON_AFTER(1, on_connect(fd, addr, len, r, r == 0 ? 0 : err));
    return r;
}

AEGIS_EXPORT int accept(int fd, struct sockaddr *addr, socklen_t *len)
{
    GET_REAL(f, accept, -1);
    int r = f(fd, addr, len);
    NETMON_AFTER(r >= 0, on_accept(r));
    return r;
}

AEGIS_EXPORT int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
    GET_REAL(f, accept4, -1);
    int r = f(fd, addr, len, flags);
    NETMON_AFTER(r >= 0, on_accept(r));
    return r;
}

AEGIS_EXPORT int socket(int domain, int type, int protocol)
{
    GET_REAL(f, socket, -1);
    int r = f(domain, type, protocol);
    NETMON_AFTER(r >= 0, aegis_netmon_fd_opened(r));
    return r;
}

AEGIS_EXPORT int dup(int fd)
{
    GET_REAL(f, dup, -1);
    int r = f(fd);
    NETMON_AFTER(r >= 0, aegis_netmon_fd_opened(r));
    return r;
}

AEGIS_EXPORT int dup2(int oldfd, int newfd)
{
    GET_REAL(f, dup2, -1);
    int r = f(oldfd, newfd);
    NETMON_AFTER(r >= 0 && oldfd != newfd, aegis_netmon_fd_opened(r));
    return r;
}

AEGIS_EXPORT int dup3(int oldfd, int newfd, int flags)
{
    GET_REAL(f, dup3, -1);
    int r = f(oldfd, newfd, flags);
    NETMON_AFTER(r >= 0, aegis_netmon_fd_opened(r));
    return r;
}

AEGIS_EXPORT int close(int fd)
{
    GET_REAL(f, close, -1);
    struct snap s;
    int have = nm_active() && untrack(fd, &s); /* leaves errno alone */
    int r = f(fd);
    NETMON_AFTER(have, lines_closed(&s, "close"));
    return r;
}

/* A socket wrapped in a FILE (fdopen) is closed by fclose(), inside libc. */
AEGIS_EXPORT int fclose(FILE *fp)
{
    GET_REAL(f, fclose, EOF);
    struct snap s;
    int have = 0;
    if (fp != NULL && nm_active()) {
        int saved = errno;
        have = untrack(fileno(fp), &s);
        errno = saved;
    }
    int r = f(fp);
    NETMON_AFTER(have, lines_closed(&s, "close"));
    return r;
}

/* New fds from calls that do not go through our open/socket hooks: if
 * a tracked socket was closed where we could not see it, its number must
 * not carry its counts over to a pipe. */
AEGIS_EXPORT int pipe(int fds[2])
{
    GET_REAL(f, pipe, -1);
    int r = f(fds);
    NETMON_AFTER(r == 0, fds_opened(fds));
    return r;
}

AEGIS_EXPORT int pipe2(int fds[2], int flags)
{
    GET_REAL(f, pipe2, -1);
    int r = f(fds, flags);
    NETMON_AFTER(r == 0, fds_opened(fds));
    return r;
}

AEGIS_EXPORT int socketpair(int domain, int type, int protocol, int fds[2])
{
    GET_REAL(f, socketpair, -1);
    int r = f(domain, type, protocol, fds);
    NETMON_AFTER(r == 0, fds_opened(fds));
    return r;
}

#if __GLIBC_PREREQ(2, 34)
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

AEGIS_EXPORT int close_range(unsigned int first, unsigned int last, int flags)
{
    GET_REAL(f, close_range, -1);
    NETMON_AFTER(first <= last && !(flags & CLOSE_RANGE_CLOEXEC), closing_range(first, last));
    return f(first, last, flags);
}

AEGIS_EXPORT void closefrom(int lowfd)
{
    __typeof__(&closefrom) f = REAL(closefrom);
    if (f == NULL) return;
    NETMON_AFTER(lowfd >= 0, closing_range((unsigned)lowfd, ~0u));
    f(lowfd);
}
#endif

/* ---- sending ---------------------------------------------------------- */

AEGIS_EXPORT ssize_t send(int fd, const void *buf, size_t len, int flags)
{
    GET_REAL(f, send, -1);
    ssize_t r = f(fd, buf, len, flags);
    NETMON_AFTER(r > 0, on_sent(fd, buf, r, NULL, 0));
    return r;
}

AEGIS_EXPORT ssize_t sendto(int fd, const void *buf, size_t len, int flags,
                            const struct sockaddr *dest, socklen_t destlen)
{
    GET_REAL(f, sendto, -1);
    ssize_t r = f(fd, buf, len, flags, dest, destlen);
    NETMON_AFTER(r > 0, on_sent(fd, buf, r, dest, destlen));
    return r;
}

AEGIS_EXPORT ssize_t sendmsg(int fd, const struct msghdr *msg, int flags)
{
    GET_REAL(f, sendmsg, -1);
    ssize_t r = f(fd, msg, flags);
    NETMON_AFTER(r > 0, {
        count(fd, DIR_SEND, (uint64_t)r);
        if (msg->msg_iovlen > 0 && msg->msg_iov != NULL) {
            size_t n = msg->msg_iov[0].iov_len < (size_t)r ? msg->msg_iov[0].iov_len : (size_t)r;
            maybe_dns(fd, msg->msg_iov[0].iov_base, n, (const struct sockaddr *)msg->msg_name,
                      msg->msg_name != NULL ? msg->msg_namelen : 0);
        }
    });
    return r;
}

AEGIS_EXPORT int sendmmsg(int fd, struct mmsghdr *vec, unsigned int vlen, int flags)
{
    GET_REAL(f, sendmmsg, -1);
    int r = f(fd, vec, vlen, flags);
    NETMON_AFTER(r > 0, on_mmsg(fd, DIR_SEND, vec, r));
    return r;
}

AEGIS_EXPORT ssize_t write(int fd, const void *buf, size_t len)
{
    GET_REAL(f, write, -1);
    ssize_t r = f(fd, buf, len);
    NETMON_AFTER(r > 0, on_sent(fd, buf, r, NULL, 0));
    return r;
}

AEGIS_EXPORT ssize_t writev(int fd, const struct iovec *iov, int iovcnt)
{
    GET_REAL(f, writev, -1);
    ssize_t r = f(fd, iov, iovcnt);
    NETMON_AFTER(r > 0, count(fd, DIR_SEND, (uint64_t)r));
    return r;
}

AEGIS_EXPORT ssize_t sendfile(int out_fd, int in_fd, off_t *offset, size_t n)
{
    GET_REAL(f, sendfile, -1);
    ssize_t r = f(out_fd, in_fd, offset, n);
    NETMON_AFTER(r > 0, count(out_fd, DIR_SEND, (uint64_t)r));
    return r;
}

AEGIS_EXPORT ssize_t sendfile64(int out_fd, int in_fd, off64_t *offset, size_t n)
{
    GET_REAL(f, sendfile64, -1);
    ssize_t r = f(out_fd, in_fd, offset, n);
    NETMON_AFTER(r > 0, count(out_fd, DIR_SEND, (uint64_t)r));
    return r;
}

/* ---- receiving -------------------------------------------------------- */

AEGIS_EXPORT ssize_t recv(int fd, void *buf, size_t len, int flags)
{
    GET_REAL(f, recv, -1);
    ssize_t r = f(fd, buf, len, flags);
    NETMON_AFTER(r > 0 && !(flags & MSG_PEEK), on_received(fd, buf, len, r, NULL, 0, 0));
    return r;
}

AEGIS_EXPORT ssize_t __recv_chk(int fd, void *buf, size_t len, size_t buflen, int flags)
{
    GET_REAL(f, __recv_chk, -1);
    ssize_t r = f(fd, buf, len, buflen, flags);
    NETMON_AFTER(r > 0 && !(flags & MSG_PEEK), on_received(fd, buf, len, r, NULL, 0, 0));
    return r;
}

AEGIS_EXPORT ssize_t recvfrom(int fd, void *buf, size_t len, int flags, struct sockaddr *src,
                              socklen_t *srclen)
{
    GET_REAL(f, recvfrom, -1);
    socklen_t cap = src != NULL && srclen != NULL ? *srclen : 0;
    ssize_t r = f(fd, buf, len, flags, src, srclen);
    NETMON_AFTER(r > 0 && !(flags & MSG_PEEK),
                 on_received(fd, buf, len, r, src, cap > 0 ? *srclen : 0, cap));
    return r;
}

AEGIS_EXPORT ssize_t __recvfrom_chk(int fd, void *buf, size_t len, size_t buflen, int flags,
                                    struct sockaddr *src, socklen_t *srclen)
{
    GET_REAL(f, __recvfrom_chk, -1);
    socklen_t cap = src != NULL && srclen != NULL ? *srclen : 0;
    ssize_t r = f(fd, buf, len, buflen, flags, src, srclen);
    NETMON_AFTER(r > 0 && !(flags & MSG_PEEK),
                 on_received(fd, buf, len, r, src, cap > 0 ? *srclen : 0, cap));
    return r;
}

AEGIS_EXPORT ssize_t recvmsg(int fd, struct msghdr *msg, int flags)
{
    GET_REAL(f, recvmsg, -1);
    socklen_t cap = msg != NULL && msg->msg_name != NULL ? msg->msg_namelen : 0;
    ssize_t r = f(fd, msg, flags);
    NETMON_AFTER(r > 0 && !(flags & MSG_PEEK), {
        count(fd, DIR_RECV, (uint64_t)r);
        if (msg->msg_iovlen > 0 && msg->msg_iov != NULL) {
            size_t n = msg->msg_iov[0].iov_len < (size_t)r ? msg->msg_iov[0].iov_len : (size_t)r;
            maybe_dns_answer(fd, msg->msg_iov[0].iov_base, n, (struct sockaddr *)msg->msg_name,
                             msg->msg_namelen, cap);
        }
    });
    return r;
}

AEGIS_EXPORT int recvmmsg(int fd, struct mmsghdr *vec, unsigned int vlen, int flags,
                          struct timespec *timeout)
{
    GET_REAL(f, recvmmsg, -1);
    int r = f(fd, vec, vlen, flags, timeout);
    NETMON_AFTER(r > 0 && !(flags & MSG_PEEK), on_mmsg(fd, DIR_RECV, vec, r));
    return r;
}

AEGIS_EXPORT ssize_t read(int fd, void *buf, size_t len)
{
    GET_REAL(f, read, -1);
    ssize_t r = f(fd, buf, len);
    NETMON_AFTER(r > 0, on_received(fd, buf, len, r, NULL, 0, 0));
    return r;
}

AEGIS_EXPORT ssize_t __read_chk(int fd, void *buf, size_t len, size_t buflen)
{
    GET_REAL(f, __read_chk, -1);
    ssize_t r = f(fd, buf, len, buflen);
    NETMON_AFTER(r > 0, on_received(fd, buf, len, r, NULL, 0, 0));
    return r;
}

AEGIS_EXPORT ssize_t readv(int fd, const struct iovec *iov, int iovcnt)
{
    GET_REAL(f, readv, -1);
    ssize_t r = f(fd, iov, iovcnt);
    NETMON_AFTER(r > 0, count(fd, DIR_RECV, (uint64_t)r));
    return r;
}

/*
 * dns.c - host names for netmon: DNS queries and answers seen on UDP port
 * 53 (parsed here, without libc's resolver), getaddrinfo() results, and
 * the small address -> name cache that puts "host" on later lines.
 *
 * glibc's own resolver (inside getaddrinfo) talks to the DNS server
 * through internal calls we cannot see; that is why getaddrinfo() itself
 * is hooked. Programs with their own resolver (c-ares, ...) send through
 * the exported functions, and their packets are parsed.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#include "aegis_hooks.h"
#include "netmon.h"

AEGIS_SLOT(getaddrinfo);

void aegis_dns_preresolve(void) { (void)REAL(getaddrinfo); }

/* ---- host names ------------------------------------------------------- */

/* Addresses learnt from DNS answers and getaddrinfo(), newest first: a
 * small ring of seqlocked slots, so readers never block writers. */
#define HCACHE_SLOTS 64

struct hslot {
    uint32_t seq; /* odd while being written */
    uint8_t family;
    uint8_t addr[16];
    char name[NM_HOST_MAX];
};

static struct hslot hcache[HCACHE_SLOTS];
static uint32_t hcache_next;

void nm_host_remember(int family, const void *addr, const char *name)
{
    if (name == NULL || name[0] == '\0') return;
    size_t alen = family == AF_INET ? 4 : 16;
    /* already the newest entry for this address? */
    uint32_t n = __atomic_load_n(&hcache_next, __ATOMIC_ACQUIRE);
    for (uint32_t i = 0; i < HCACHE_SLOTS && i < n; i++) {
        struct hslot *h = &hcache[(n - 1 - i) % HCACHE_SLOTS];
        uint32_t s1 = __atomic_load_n(&h->seq, __ATOMIC_ACQUIRE);
        if ((s1 & 1) || h->family != family || memcmp(h->addr, addr, alen) != 0) continue;
        int same = strncmp(h->name, name, NM_HOST_MAX) == 0;
        if (__atomic_load_n(&h->seq, __ATOMIC_ACQUIRE) == s1 && same) return;
        break;
    }
    uint32_t i = __atomic_fetch_add(&hcache_next, 1, __ATOMIC_ACQ_REL) % HCACHE_SLOTS;
    struct hslot *h = &hcache[i];
    __atomic_fetch_add(&h->seq, 1, __ATOMIC_ACQ_REL);
    h->family = (uint8_t)family;
    memset(h->addr, 0, sizeof h->addr);
    memcpy(h->addr, addr, alen);
    size_t len = strlen(name);
    if (len >= NM_HOST_MAX) len = NM_HOST_MAX - 1;
    memcpy(h->name, name, len);
    h->name[len] = '\0';
    __atomic_fetch_add(&h->seq, 1, __ATOMIC_ACQ_REL);
}

int nm_host_lookup(int family, const uint8_t *addr, char *out)
{
    static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (family == AF_INET6 && memcmp(addr, v4mapped, 12) == 0) {
        family = AF_INET;
        addr += 12;
    }
    size_t alen = family == AF_INET ? 4 : 16;
    uint32_t n = __atomic_load_n(&hcache_next, __ATOMIC_ACQUIRE);
    for (uint32_t i = 0; i < HCACHE_SLOTS && i < n; i++) {
        struct hslot *h = &hcache[(n - 1 - i) % HCACHE_SLOTS];
        uint32_t s1 = __atomic_load_n(&h->seq, __ATOMIC_ACQUIRE);
        if (s1 & 1) continue;
        if (h->family != family || memcmp(h->addr, addr, alen) != 0) continue;
        memcpy(out, h->name, NM_HOST_MAX);
        out[NM_HOST_MAX - 1] = '\0';
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (__atomic_load_n(&h->seq, __ATOMIC_RELAXED) == s1) return 1;
    }
    return 0;
}

/* ---- DNS ---------------------------------------------------------------- */

#define DNS_MAX_ANSWERS 8

struct dns_addr {
    uint8_t family;
    uint8_t addr[16];
};

struct dns_msg {
    int response;
    int rcode;
    unsigned qtype;
    char name[NM_HOST_MAX];
    int nanswers;
    struct dns_addr answers[DNS_MAX_ANSWERS];
};

static unsigned get16(const uint8_t *p) { return (unsigned)p[0] << 8 | p[1]; }

/* Reads the name at *off (following compression pointers) into out as
 * dotted text, and moves *off past it. Returns 0 on success. */
static int dns_name(const uint8_t *m, size_t n, size_t *off, char *out, size_t cap)
{
    size_t pos = *off, len = 0, after = 0;
    int jumps = 0;
    for (;;) {
        if (pos >= n) return -1;
        unsigned c = m[pos];
        if ((c & 0xc0) == 0xc0) {
            if (pos + 1 >= n || ++jumps > 16) return -1;
            if (after == 0) after = pos + 2;
            pos = ((c & 0x3f) << 8) | m[pos + 1];
            continue;
        }
        if (c & 0xc0) return -1;
        pos++;
        if (c == 0) break;
        if (pos + c > n) return -1;
        if (out != NULL) {
            if (len + c + 2 > cap) return -1;
            if (len > 0) out[len++] = '.';
            for (unsigned i = 0; i < c; i++) {
                char ch = (char)m[pos + i];
                int ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                         (ch >= '0' && ch <= '9') || ch == '-' || ch == '_' || ch == '*';
                out[len++] = ok ? ch : '?';
            }
        }
        pos += c;
    }
    if (out != NULL) out[len] = '\0';
    *off = after != 0 ? after : pos;
    return 0;
}

static int dns_parse(const uint8_t *m, size_t n, struct dns_msg *d)
{
    if (m == NULL || n < 12) return -1;
    unsigned flags = get16(m + 2), qd = get16(m + 4), an = get16(m + 6);
    if (qd < 1) return -1;
    d->response = (flags >> 15) & 1;
    d->rcode = (int)(flags & 0xf);
    d->nanswers = 0;
    size_t off = 12;
    if (dns_name(m, n, &off, d->name, sizeof d->name) != 0 || off + 4 > n) return -1;
    d->qtype = get16(m + off);
    off += 4;
    if (!d->response) return 0;
    for (unsigned q = 1; q < qd; q++) {
        if (dns_name(m, n, &off, NULL, 0) != 0 || off + 4 > n) return 0;
        off += 4;
    }
    for (unsigned a = 0; a < an && d->nanswers < DNS_MAX_ANSWERS; a++) {
        if (dns_name(m, n, &off, NULL, 0) != 0 || off + 10 > n) break;
        unsigned type = get16(m + off), rdlen = get16(m + off + 8);
        off += 10;
        if (off + rdlen > n) break;
        if ((type == 1 && rdlen == 4) || (type == 28 && rdlen == 16)) {
            d->answers[d->nanswers].family = type == 1 ? AF_INET : AF_INET6;
            memset(d->answers[d->nanswers].addr, 0, 16);
            memcpy(d->answers[d->nanswers].addr, m + off, rdlen);
            d->nanswers++;
        }
        off += rdlen;
    }
    return 0;
}

static void add_qtype(struct jbuf *j, unsigned qtype)
{
    const char *name = NULL;
    switch (qtype) {
    case 1: name = "A"; break;
    case 2: name = "NS"; break;
    case 5: name = "CNAME"; break;
    case 6: name = "SOA"; break;
    case 12: name = "PTR"; break;
    case 15: name = "MX"; break;
    case 16: name = "TXT"; break;
    case 28: name = "AAAA"; break;
    case 33: name = "SRV"; break;
    case 64: name = "SVCB"; break;
    case 65: name = "HTTPS"; break;
    default: break;
    }
    if (name != NULL) {
        jb_str(j, "qtype", name);
    } else {
        char text[16] = "TYPE";
        size_t k = 4;
        char digits[8];
        int nd = 0;
        do {
            digits[nd++] = (char)('0' + qtype % 10);
            qtype /= 10;
        } while (qtype != 0 && nd < 7);
        while (nd > 0) text[k++] = digits[--nd];
        text[k] = '\0';
        jb_str(j, "qtype", text);
    }
}

/* "answers":[...] with the n addresses as text. */
static void add_answers(struct jbuf *j, const struct dns_addr *a, int n)
{
    jb_list_begin(j, "answers");
    for (int i = 0; i < n; i++) {
        char text[INET6_ADDRSTRLEN];
        if (inet_ntop(a[i].family, a[i].addr, text, sizeof text) != NULL) jb_item_str(j, text);
    }
    jb_list_end(j);
}

/* A UDP packet to or from port 53: log what it asks or answers. */
void nm_dns_seen(const struct peer *p, const void *buf, size_t len)
{
    struct dns_msg d;
    if (dns_parse((const uint8_t *)buf, len, &d) != 0) return;
    for (int i = 0; i < d.nanswers; i++)
        nm_host_remember(d.answers[i].family, d.answers[i].addr, d.name);
    struct jbuf j;
    jb_begin(&j, "dns");
    nm_add_peer(&j, p);
    jb_u64(&j, "bytes", 0);
    jb_u64(&j, "size", len);
    jb_str(&j, "kind", d.response ? "answer" : "query");
    jb_str(&j, "host", d.name);
    add_qtype(&j, d.qtype);
    if (d.response) {
        jb_i64(&j, "rcode", d.rcode);
        add_answers(&j, d.answers, d.nanswers);
    }
    jb_end(&j);
    jlog_append(&j);
}

/* ---- name resolution ---------------------------------------------------- */

static const char *gai_error_name(int code)
{
    switch (code) {
    case EAI_AGAIN: return "EAI_AGAIN";
    case EAI_BADFLAGS: return "EAI_BADFLAGS";
    case EAI_FAIL: return "EAI_FAIL";
    case EAI_FAMILY: return "EAI_FAMILY";
    case EAI_MEMORY: return "EAI_MEMORY";
    case EAI_NONAME: return "EAI_NONAME";
    case EAI_SERVICE: return "EAI_SERVICE";
    case EAI_SOCKTYPE: return "EAI_SOCKTYPE";
    case EAI_SYSTEM: return "EAI_SYSTEM";
#ifdef EAI_NODATA
    case EAI_NODATA: return "EAI_NODATA";
#endif
#ifdef EAI_ADDRFAMILY
    case EAI_ADDRFAMILY: return "EAI_ADDRFAMILY";
#endif
    default: return NULL;
    }
}

static int is_numeric_host(const char *node)
{
    unsigned char tmp[16];
    return inet_pton(AF_INET, node, tmp) == 1 || inet_pton(AF_INET6, node, tmp) == 1;
}

static void on_getaddrinfo(const char *node, const struct addrinfo *hints, int ret,
                           const struct addrinfo *res)
{
    if (node == NULL || node[0] == '\0') return;
    if (hints != NULL && (hints->ai_flags & AI_NUMERICHOST)) return;
    if (is_numeric_host(node)) return;
    struct dns_addr seen[DNS_MAX_ANSWERS];
    int nseen = 0;
    for (const struct addrinfo *a = ret == 0 ? res : NULL; a != NULL && nseen < DNS_MAX_ANSWERS;
         a = a->ai_next) {
        struct peer p;
        if (!nm_peer_from_sockaddr(a->ai_addr, a->ai_addrlen, &p)) continue;
        size_t alen = p.family == AF_INET ? 4 : 16;
        int dup = 0;
        for (int i = 0; i < nseen && !dup; i++)
            dup = seen[i].family == p.family && memcmp(seen[i].addr, p.raddr, alen) == 0;
        if (dup) continue;
        seen[nseen].family = p.family;
        memcpy(seen[nseen].addr, p.raddr, 16);
        nseen++;
        nm_host_remember(p.family, p.raddr, node);
    }
    struct jbuf j;
    jb_begin(&j, "dns");
    jb_str(&j, "kind", "getaddrinfo");
    jb_str(&j, "host", node);
    jb_u64(&j, "bytes", 0);
    if (ret == 0) {
        jb_i64(&j, "result", 0);
    } else {
        const char *name = gai_error_name(ret);
        if (name != NULL)
            jb_str(&j, "result", name);
        else
            jb_i64(&j, "result", ret);
    }
    add_answers(&j, seen, nseen);
    jb_end(&j);
    jlog_append(&j);
}

AEGIS_EXPORT int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                             struct addrinfo **res)
{
    GET_REAL(f, getaddrinfo, EAI_SYSTEM);
    int r = f(node, service, hints, res);
    NETMON_AFTER(1, on_getaddrinfo(node, hints, r, r == 0 && res != NULL ? *res : NULL));
    return r;
}

/*
 * jsonl.c - builds netmon JSON lines in a fixed buffer (no malloc, no
 * stdio: callable from any hook, including inside a signal handler) and
 * appends them to the AEGIS_NETMON_LOG file.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "aegis_hooks.h"

static void put(struct jbuf *j, const char *s, size_t n)
{
    if (j->full) return;
    /* keep room for the closing "}\n" */
    if (j->len + n + 2 > sizeof j->buf) {
        j->full = 1;
        return;
    }
    memcpy(j->buf + j->len, s, n);
    j->len += n;
}

static void puts_(struct jbuf *j, const char *s) { put(j, s, strlen(s)); }

static void put_u64(struct jbuf *j, uint64_t v)
{
    char tmp[24];
    size_t i = sizeof tmp;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    put(j, tmp + i, sizeof tmp - i);
}

/* A JSON string. Bytes outside printable ASCII become '?' or \u00XX so
 * that a stray byte in a process name can never make the line invalid.
 * Values are cut at 255 bytes (a host name is at most 253): a line must
 * fit its buffer. */
static void put_escaped(struct jbuf *j, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    put(j, "\"", 1);
    const unsigned char *p = (const unsigned char *)s;
    for (const unsigned char *end = p + 255; *p != '\0' && p < end; p++) {
        unsigned char c = *p;
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            put(j, e, 2);
        } else if (c < 0x20) {
            char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            put(j, e, 6);
        } else if (c >= 0x7f) {
            put(j, "?", 1);
        } else {
            put(j, (const char *)p, 1);
        }
    }
    put(j, "\"", 1);
}

static void put_key(struct jbuf *j, const char *key)
{
    put(j, ",\"", 2);
    puts_(j, key);
    put(j, "\":", 2);
}

void jb_begin(struct jbuf *j, const char *event)
{
    j->len = 0;
    j->full = 0;
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0) {
        ts.tv_sec = 0;
        ts.tv_nsec = 0;
    }
    puts_(j, "{\"ts\":");
    put_u64(j, (uint64_t)ts.tv_sec);
    char frac[8];
    long us = ts.tv_nsec / 1000;
    frac[0] = '.';
    for (int i = 6; i >= 1; i--) {
        frac[i] = (char)('0' + us % 10);
        us /= 10;
    }
    put(j, frac, 7);
    jb_u64(j, "pid", (uint64_t)syscall(SYS_getpid));
    jb_u64(j, "ppid", (uint64_t)syscall(SYS_getppid));
    aegis_comm_refresh(0);
    jb_str(j, "comm", aegis_comm());
    jb_str(j, "source", "preload");
    jb_str(j, "event", event);
}

void jb_str(struct jbuf *j, const char *key, const char *val)
{
    put_key(j, key);
    put_escaped(j, val);
}

void jb_u64(struct jbuf *j, const char *key, uint64_t v)
{
    put_key(j, key);
    put_u64(j, v);
}

void jb_i64(struct jbuf *j, const char *key, int64_t v)
{
    put_key(j, key);
    if (v < 0) {
        put(j, "-", 1);
        put_u64(j, (uint64_t)0 - (uint64_t)v);
    } else {
        put_u64(j, (uint64_t)v);
    }
}

void jb_bool(struct jbuf *j, const char *key, int v)
{
    put_key(j, key);
    puts_(j, v ? "true" : "false");
}

void jb_list_begin(struct jbuf *j, const char *key)
{
    put_key(j, key);
    put(j, "[", 1);
}

void jb_item_str(struct jbuf *j, const char *val)
{
    if (j->len > 0 && j->buf[j->len - 1] != '[') put(j, ",", 1);
    put_escaped(j, val);
}

void jb_list_end(struct jbuf *j) { put(j, "]", 1); }

void jb_end(struct jbuf *j)
{
    if (j->full) return;
    /* put() always leaves two bytes free */
    j->buf[j->len++] = '}';
    j->buf[j->len++] = '\n';
}

/* ---- the log file ----------------------------------------------------- */

void jlog_open(struct jlog *l)
{
    l->fd = (int)syscall(SYS_openat, AT_FDCWD, aegis_netmon_path,
                         O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW, 0600);
}

void jlog_write(struct jlog *l, const struct jbuf *j)
{
    if (l->fd < 0 || j->full || j->len == 0) return;
    for (;;) {
        long n = syscall(SYS_write, l->fd, j->buf, j->len);
        if (n < 0 && errno == EINTR) continue;
        /* a short write to a regular file means a full disk: give up */
        return;
    }
}

void jlog_close(struct jlog *l)
{
    if (l->fd >= 0) syscall(SYS_close, l->fd);
    l->fd = -1;
}

void jlog_append(const struct jbuf *j)
{
    struct jlog l;
    jlog_open(&l);
    jlog_write(&l, j);
    jlog_close(&l);
}

/*
 * overlay.c - AEGIS_MCP_OVERLAY: a read-only open of a file whose basename
 * is exactly ".mcp.json" opens the overlay file instead.
 *
 * With AEGIS_MCP_OVERLAY_TARGET=/abs/path, only that one file is redirected
 * (opened by that absolute name): gemini's settings.json, whose copy the
 * runner made with the aegis-mcp server added. access()/faccessat() of the
 * target for reading answer as for the overlay, so a program that checks
 * the file exists before reading it (node's fs.existsSync) reads it even
 * when the user has none.
 *
 * Only reads are redirected (O_RDONLY without O_CREAT/O_TRUNC, fopen mode
 * "r" without '+'): a program that writes its .mcp.json writes the real
 * one. If the overlay cannot be opened the real file is opened, as if we
 * were not there. Only calls that go through libc are seen: a program that
 * makes raw syscalls (Bun, Go) is not redirected (DESIGN.md fact 1).
 *
 * The open family also tells netmon that an fd number is in use again, so
 * that a socket closed behind our back is not confused with the new file.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include "aegis_hooks.h"

/* The fortified entry points (_FORTIFY_SOURCE); glibc declares them only
 * in its fortify headers. */
int __open_2(const char *path, int flags);
int __open64_2(const char *path, int flags);
int __openat_2(int dirfd, const char *path, int flags);
int __openat64_2(int dirfd, const char *path, int flags);

/* Every real function called here, X(name) each. */
#define OVERLAY_REAL(X)                                                             \
    X(open) X(open64) X(openat) X(openat64) X(__open_2) X(__open64_2) X(__openat_2) \
    X(__openat64_2) X(fopen) X(fopen64) X(access) X(faccessat)

OVERLAY_REAL(AEGIS_SLOT_ITEM)

void aegis_overlay_preresolve(void) { OVERLAY_REAL(AEGIS_RESOLVE_ITEM) }

#ifndef O_TMPFILE
#define O_TMPFILE 0
#endif

#define NEEDS_MODE(flags) \
    (((flags) & O_CREAT) != 0 || (O_TMPFILE != 0 && ((flags) & O_TMPFILE) == O_TMPFILE))

static int is_mcp_json(const char *path)
{
    if (path == NULL) return 0;
    if (aegis_overlay_target[0] != '\0') return strcmp(path, aegis_overlay_target) == 0;
    const char *slash = strrchr(path, '/');
    const char *base = slash != NULL ? slash + 1 : path;
    return strcmp(base, ".mcp.json") == 0;
}

static int redirect_open(const char *path, int flags)
{
    if ((flags & O_ACCMODE) != O_RDONLY) return 0;
    if ((flags & (O_CREAT | O_TRUNC)) != 0) return 0;
    if (O_TMPFILE != 0 && (flags & O_TMPFILE) == O_TMPFILE) return 0;
    return is_mcp_json(path);
}

static int redirect_fopen(const char *path, const char *mode)
{
    if (mode == NULL || mode[0] != 'r' || strchr(mode, '+') != NULL) return 0;
    return is_mcp_json(path);
}

enum open_kind { K_OPEN, K_OPEN64, K_OPENAT, K_OPENAT64, K_OPEN2, K_OPEN64_2, K_OPENAT2, K_OPENAT64_2 };

static int nosys(void)
{
    errno = ENOSYS;
    return -1;
}

static int call_open(enum open_kind kind, int dirfd, const char *path, int flags, mode_t mode)
{
    switch (kind) {
    case K_OPEN: {
        __typeof__(&open) f = REAL(open);
        return f ? f(path, flags, mode) : nosys();
    }
    case K_OPEN64: {
        __typeof__(&open64) f = REAL(open64);
        return f ? f(path, flags, mode) : nosys();
    }
    case K_OPENAT: {
        __typeof__(&openat) f = REAL(openat);
        return f ? f(dirfd, path, flags, mode) : nosys();
    }
    case K_OPENAT64: {
        __typeof__(&openat64) f = REAL(openat64);
        return f ? f(dirfd, path, flags, mode) : nosys();
    }
    case K_OPEN2: {
        __typeof__(&__open_2) f = REAL(__open_2);
        return f ? f(path, flags) : nosys();
    }
    case K_OPEN64_2: {
        __typeof__(&__open64_2) f = REAL(__open64_2);
        return f ? f(path, flags) : nosys();
    }
    case K_OPENAT2: {
        __typeof__(&__openat_2) f = REAL(__openat_2);
        return f ? f(dirfd, path, flags) : nosys();
    }
    case K_OPENAT64_2: {
        __typeof__(&__openat64_2) f = REAL(__openat64_2);
        return f ? f(dirfd, path, flags) : nosys();
    }
    }
    return nosys();
}

static int hooked_open(enum open_kind kind, int dirfd, const char *path, int flags, mode_t mode)
{
    int ready = aegis_ready();
    int fd = -1;
    int done = 0;
    if (ready && aegis_overlay_on && redirect_open(path, flags)) {
        int saved = errno;
        fd = call_open(kind, dirfd, aegis_overlay_path, flags, mode);
        if (fd >= 0)
            done = 1;
        else
            errno = saved; /* no overlay after all: behave as without us */
    }
    if (!done) fd = call_open(kind, dirfd, path, flags, mode);
    if (fd >= 0 && ready && aegis_netmon_on) {
        int saved = errno;
        aegis_netmon_fd_opened(fd);
        errno = saved;
    }
    return fd;
}

#define GET_MODE(flags, last)               \
    mode_t mode = 0;                        \
    if (NEEDS_MODE(flags)) {                \
        va_list ap;                         \
        va_start(ap, last);                 \
        mode = (mode_t)va_arg(ap, unsigned); \
        va_end(ap);                         \
    }

AEGIS_EXPORT int open(const char *path, int flags, ...)
{
    GET_MODE(flags, flags);
    return hooked_open(K_OPEN, AT_FDCWD, path, flags, mode);
}

AEGIS_EXPORT int open64(const char *path, int flags, ...)
{
    GET_MODE(flags, flags);
    return hooked_open(K_OPEN64, AT_FDCWD, path, flags, mode);
}

AEGIS_EXPORT int openat(int dirfd, const char *path, int flags, ...)
{
    GET_MODE(flags, flags);
    return hooked_open(K_OPENAT, dirfd, path, flags, mode);
}

AEGIS_EXPORT int openat64(int dirfd, const char *path, int flags, ...)
{
    GET_MODE(flags, flags);
    return hooked_open(K_OPENAT64, dirfd, path, flags, mode);
}

AEGIS_EXPORT int __open_2(const char *path, int flags)
{
    return hooked_open(K_OPEN2, AT_FDCWD, path, flags, 0);
}

AEGIS_EXPORT int __open64_2(const char *path, int flags)
{
    return hooked_open(K_OPEN64_2, AT_FDCWD, path, flags, 0);
}

AEGIS_EXPORT int __openat_2(int dirfd, const char *path, int flags)
{
    return hooked_open(K_OPENAT2, dirfd, path, flags, 0);
}

AEGIS_EXPORT int __openat64_2(int dirfd, const char *path, int flags)
{
    return hooked_open(K_OPENAT64_2, dirfd, path, flags, 0);
}

static FILE *hooked_fopen(int is64, const char *path, const char *mode)
{
    __typeof__(&fopen) f = is64 ? REAL(fopen64) : REAL(fopen);
    if (f == NULL) {
        errno = ENOSYS;
        return NULL;
    }
    int ready = aegis_ready();
    FILE *fp = NULL;
    if (ready && aegis_overlay_on && redirect_fopen(path, mode)) {
        int saved = errno;
        fp = f(aegis_overlay_path, mode);
        if (fp == NULL) errno = saved;
    }
    if (fp == NULL) fp = f(path, mode);
    if (fp != NULL && ready && aegis_netmon_on) {
        int saved = errno;
        aegis_netmon_fd_opened(fileno(fp));
        errno = saved;
    }
    return fp;
}

AEGIS_EXPORT FILE *fopen(const char *path, const char *mode) { return hooked_fopen(0, path, mode); }

AEGIS_EXPORT FILE *fopen64(const char *path, const char *mode) { return hooked_fopen(1, path, mode); }

/* ---- access: the target exists for readers when the overlay does --------- */

static int redirect_access(const char *path, int mode)
{
    return aegis_overlay_target[0] != '\0' && (mode & (W_OK | X_OK)) == 0 && is_mcp_json(path);
}

AEGIS_EXPORT int access(const char *path, int mode)
{
    __typeof__(&access) f = REAL(access);
    if (f == NULL) return nosys();
    if (aegis_ready() && aegis_overlay_on && redirect_access(path, mode)) {
        int saved = errno;
        if (f(aegis_overlay_path, mode) == 0) return 0;
        errno = saved;
    }
    return f(path, mode);
}

AEGIS_EXPORT int faccessat(int dirfd, const char *path, int mode, int flags)
{
    __typeof__(&faccessat) f = REAL(faccessat);
    if (f == NULL) return nosys();
    if (aegis_ready() && aegis_overlay_on && redirect_access(path, mode)) {
        int saved = errno;
        if (f(AT_FDCWD, aegis_overlay_path, mode, flags) == 0) return 0;
        errno = saved;
    }
    return f(dirfd, path, mode, flags);
}

/*
 * aegis_hooks.c - libaegis_hooks.so: version strings, start-up, fork and
 * exit handling, resolution of the real libc functions.
 *
 * Everything is off unless its environment variable is set:
 *   AEGIS_MCP_OVERLAY=/path/overlay.json   (overlay.c)
 *   AEGIS_MCP_OVERLAY_TARGET=/abs/file     (overlay.c: the one file it replaces)
 *   AEGIS_NETMON_LOG=/path/netmon.jsonl    (netmon.c)
 * Both are read once, at start-up, into static buffers.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "aegis_hooks.h"

/* glibc 2.34 moved dlsym() into libc with a new symbol version; binding to
 * the old one keeps the library loadable by older glibc (agent images). */
#if defined(__GLIBC__) && defined(__x86_64__)
__asm__(".symver dlsym,dlsym@GLIBC_2.2.5");
#elif defined(__GLIBC__) && defined(__aarch64__)
__asm__(".symver dlsym,dlsym@GLIBC_2.17");
#endif

/* ---- version ---------------------------------------------------------- */

#ifndef AEGIS_VERSION
#define AEGIS_VERSION "0.0.0"
#endif
#ifndef AEGIS_BUILD_TIME
#define AEGIS_BUILD_TIME "unknown"
#endif
#ifndef AEGIS_GIT_HASH
#define AEGIS_GIT_HASH "unknown"
#endif

/* Read by `aegis-mcp --version` by scanning the file's bytes, without
 * loading the library. This must stay the only occurrence of the prefix.
 * features: what the runner may rely on ("first-bytes": a connection's
 * first bytes each way are logged at once, netmon.c). */
__attribute__((used)) static const char aegis_info_string[] =
    "AEGIS_HOOKS_INFO version=" AEGIS_VERSION ";built=" AEGIS_BUILD_TIME ";git=" AEGIS_GIT_HASH
    ";features=first-bytes";

AEGIS_EXPORT const char *aegis_hooks_version(void) { return AEGIS_VERSION; }
AEGIS_EXPORT const char *aegis_hooks_build_time(void) { return AEGIS_BUILD_TIME; }
AEGIS_EXPORT const char *aegis_hooks_git_hash(void) { return AEGIS_GIT_HASH; }

/* ---- real functions --------------------------------------------------- */

void *aegis_resolve(void **slot, const char *name)
{
    int saved = errno;
    void *p = dlsym(RTLD_NEXT, name);
    if (p != NULL) __atomic_store_n(slot, p, __ATOMIC_RELEASE);
    errno = saved;
    return p;
}

/* ---- settings and start-up -------------------------------------------- */

char aegis_overlay_path[PATH_MAX];
char aegis_overlay_target[PATH_MAX];
char aegis_netmon_path[PATH_MAX];
int aegis_overlay_on;
int aegis_netmon_on;
volatile int aegis_pid;

/* 0 not started, 1 running, 2 done */
static int init_state;

/* Copies the variable into out as an absolute path (relative to the
 * current directory now, so that a later chdir() changes nothing).
 * Returns 1 if set and usable. */
static int read_path_env(const char *var, char *out, size_t cap)
{
    const char *v = getenv(var);
    out[0] = '\0';
    if (v == NULL || v[0] == '\0') return 0;
    size_t n = strlen(v);
    if (v[0] == '/') {
        if (n >= cap) return 0;
        memcpy(out, v, n + 1);
        return 1;
    }
    if (getcwd(out, cap) == NULL) {
        out[0] = '\0';
        return 0;
    }
    size_t d = strlen(out);
    if (d + 1 + n >= cap) {
        out[0] = '\0';
        return 0;
    }
    if (d == 0 || out[d - 1] != '/') out[d++] = '/';
    memcpy(out + d, v, n + 1);
    return 1;
}

static void after_fork_child(void)
{
    int saved = errno;
    aegis_pid = (int)syscall(SYS_getpid);
    if (aegis_netmon_on) {
        aegis_comm_after_fork();
        aegis_comm_refresh(1);
        aegis_netmon_after_fork_child();
    }
    errno = saved;
}

static void do_init(void)
{
    aegis_pid = (int)syscall(SYS_getpid);
    aegis_overlay_preresolve();
    aegis_netmon_preresolve();
    aegis_overlay_on = read_path_env("AEGIS_MCP_OVERLAY", aegis_overlay_path,
                                     sizeof aegis_overlay_path);
    /* Absolute only: a relative target would depend on the directory now. */
    const char *target = getenv("AEGIS_MCP_OVERLAY_TARGET");
    if (aegis_overlay_on && target != NULL && target[0] == '/' &&
        strlen(target) < sizeof aegis_overlay_target)
        memcpy(aegis_overlay_target, target, strlen(target) + 1);
    aegis_netmon_on = read_path_env("AEGIS_NETMON_LOG", aegis_netmon_path,
                                    sizeof aegis_netmon_path);
    if (aegis_netmon_on) {
        aegis_comm_refresh(1);
        aegis_netmon_init();
        pthread_atfork(NULL, NULL, after_fork_child);
    }
}

int aegis_ready(void)
{
    int s = __atomic_load_n(&init_state, __ATOMIC_ACQUIRE);
    if (s == 2) return 1;
    if (s == 0) {
        int expected = 0;
        if (__atomic_compare_exchange_n(&init_state, &expected, 1, 0, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE)) {
            int saved = errno;
            do_init();
            errno = saved;
            __atomic_store_n(&init_state, 2, __ATOMIC_RELEASE);
            return 1;
        }
    }
    return __atomic_load_n(&init_state, __ATOMIC_ACQUIRE) == 2;
}

__attribute__((constructor)) static void aegis_constructor(void) { (void)aegis_ready(); }

__attribute__((destructor)) static void aegis_destructor(void)
{
    int saved = errno;
    if (__atomic_load_n(&init_state, __ATOMIC_ACQUIRE) == 2 && aegis_netmon_on &&
        (int)syscall(SYS_getpid) == aegis_pid)
        aegis_netmon_at_exit();
    errno = saved;
}

/* ---- small utilities -------------------------------------------------- */

uint64_t aegis_mono_ns(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC_COARSE, &ts) != 0) return 0;
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Two buffers and an index: a refresh writes the idle one and then
 * publishes it, so readers never see a half-written name. */
static char comm_buf[2][32];
static int comm_cur;
static int comm_busy;
static uint64_t comm_stamp;

void aegis_comm_refresh(int force)
{
    uint64_t now = aegis_mono_ns();
    uint64_t last = __atomic_load_n(&comm_stamp, __ATOMIC_RELAXED);
    if (!force && last != 0 && now - last < 1000000000u) return;
    if (__atomic_exchange_n(&comm_busy, 1, __ATOMIC_ACQUIRE)) return;
    int next = !__atomic_load_n(&comm_cur, __ATOMIC_RELAXED);
    char *out = comm_buf[next];
    ssize_t n = -1;
    int fd = (int)syscall(SYS_openat, AT_FDCWD, "/proc/self/comm", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        n = syscall(SYS_read, fd, out, sizeof comm_buf[0] - 1);
        syscall(SYS_close, fd);
    }
    if (n > 0) {
        while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == '\0')) n--;
        out[n] = '\0';
    } else {
        /* no /proc: the calling thread's name is the best we have */
        memset(out, 0, sizeof comm_buf[0]);
        if (prctl(PR_GET_NAME, (unsigned long)out, 0, 0, 0) != 0) out[0] = '\0';
    }
    __atomic_store_n(&comm_cur, next, __ATOMIC_RELEASE);
    __atomic_store_n(&comm_stamp, now ? now : 1, __ATOMIC_RELAXED);
    __atomic_store_n(&comm_busy, 0, __ATOMIC_RELEASE);
}

/* Another thread may have been refreshing when fork() copied us. */
void aegis_comm_after_fork(void) { __atomic_store_n(&comm_busy, 0, __ATOMIC_RELEASE); }

const char *aegis_comm(void) { return comm_buf[__atomic_load_n(&comm_cur, __ATOMIC_ACQUIRE)]; }

const char *aegis_errno_name(int err)
{
    switch (err) {
#define E(x) \
    case x:  \
        return #x;
        E(EACCES)
        E(EPERM)
        E(EADDRINUSE)
        E(EADDRNOTAVAIL)
        E(EAFNOSUPPORT)
        E(EAGAIN)
        E(EALREADY)
        E(EBADF)
        E(ECONNREFUSED)
        E(ECONNRESET)
        E(ECONNABORTED)
        E(EFAULT)
        E(EHOSTDOWN)
        E(EHOSTUNREACH)
        E(EINPROGRESS)
        E(EINTR)
        E(EINVAL)
        E(EISCONN)
        E(ENETDOWN)
        E(ENETUNREACH)
        E(ENOBUFS)
        E(ENOENT)
        E(ENOMEM)
        E(ENOTSOCK)
        E(EPROTOTYPE)
        E(ETIMEDOUT)
#undef E
    default:
        return NULL;
    }
}

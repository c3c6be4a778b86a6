/*
 * aegis_hooks.h - internal declarations shared by the parts of
 * libaegis_hooks.so (the LD_PRELOAD library of aegis-mcp).
 *
 * Layout:
 *   aegis_hooks.c  version strings, start-up (constructor), fork handling,
 *                  exit (destructor), resolution of the real libc functions
 *   overlay.c      AEGIS_MCP_OVERLAY: reads of ".mcp.json" (or of the one file
 *                  AEGIS_MCP_OVERLAY_TARGET names) go to the overlay
 *   netmon.c       AEGIS_NETMON_LOG: per-fd table of INET sockets, counting,
 *                  summaries, the socket and I/O hooks (netmon.h)
 *   dns.c          host names: DNS packets on port 53, getaddrinfo(), the
 *                  address -> name cache
 *   jsonl.c        building JSON lines and appending them to the log
 *
 * Rules every hook follows: call the real function first, keep its result
 * and errno, do our own work only when the feature is on, restore errno,
 * return the real result. No malloc, no locks that can block, no
 * thread-local storage (a signal handler or a fork child must never find
 * us holding something).
 */
#ifndef AEGIS_HOOKS_H
#define AEGIS_HOOKS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define AEGIS_EXPORT __attribute__((visibility("default")))
#define AEGIS_HIDDEN __attribute__((visibility("hidden")))

/* ---- start-up state (aegis_hooks.c) ---------------------------------- */

/* Runs the one-time start-up if nobody has yet; returns 1 when it is done.
 * Returns 0 while it is still running (a re-entrant call from inside the
 * start-up, or another thread racing it): callers then pass through. */
AEGIS_HIDDEN int aegis_ready(void);

/* The settings read once from the environment at start-up. Empty string:
 * the feature is off. */
AEGIS_HIDDEN extern char aegis_overlay_path[];
AEGIS_HIDDEN extern char aegis_overlay_target[];
AEGIS_HIDDEN extern char aegis_netmon_path[];
AEGIS_HIDDEN extern int aegis_netmon_on;
AEGIS_HIDDEN extern int aegis_overlay_on;

/* The pid this copy of the library belongs to: set at start-up and in the
 * child after fork(). A vfork() child shares our memory but has another
 * pid; code that changes the fd table checks this first. */
AEGIS_HIDDEN extern volatile int aegis_pid;

/* dlsym(RTLD_NEXT, name), cached in *slot (thread-safe, idempotent). */
AEGIS_HIDDEN void *aegis_resolve(void **slot, const char *name);

/* Each file declares a cache slot per real function it calls, with
 * AEGIS_SLOT(open); REAL(open) then evaluates to the next definition of
 * open() as a pointer of the right type, or NULL if there is none. */
#define AEGIS_SLOT(name) static void *aegis_slot_##name
#define REAL(name)                                                              \
    ((__typeof__(&name))({                                                      \
        void *aegis_p_ = __atomic_load_n(&aegis_slot_##name, __ATOMIC_ACQUIRE); \
        aegis_p_ ? aegis_p_ : aegis_resolve(&aegis_slot_##name, #name);         \
    }))

/* For a list macro LIST(X) that names real functions, X(name) each:
 * LIST(AEGIS_SLOT_ITEM) declares their slots, LIST(AEGIS_RESOLVE_ITEM)
 * resolves them all. */
#define AEGIS_SLOT_ITEM(name) AEGIS_SLOT(name);
#define AEGIS_RESOLVE_ITEM(name) (void)REAL(name);

/* Resolves every real function up front (called from the constructor) so
 * that hooks reached later from signal handlers never call dlsym(). */
AEGIS_HIDDEN void aegis_overlay_preresolve(void);
AEGIS_HIDDEN void aegis_netmon_preresolve(void);

/* ---- netmon (netmon.c) ----------------------------------------------- */

AEGIS_HIDDEN void aegis_netmon_init(void);
AEGIS_HIDDEN void aegis_netmon_after_fork_child(void);
AEGIS_HIDDEN void aegis_netmon_at_exit(void);
/* A call returned a new fd: anything our table still holds for that
 * number is stale (its socket was closed behind our back). */
AEGIS_HIDDEN void aegis_netmon_fd_opened(int fd);

/* Monotonic coarse clock in nanoseconds (cheap: vDSO). */
AEGIS_HIDDEN uint64_t aegis_mono_ns(void);

/* ---- JSON lines (jsonl.c) -------------------------------------------- */

#define AEGIS_LINE_MAX 1536

struct jbuf {
    char buf[AEGIS_LINE_MAX];
    size_t len;
    int full; /* something did not fit: the line is dropped */
};

/* Starts an object with the common fields:
 * {"ts":..,"pid":..,"ppid":..,"comm":"..","source":"preload","event":"EVENT" */
AEGIS_HIDDEN void jb_begin(struct jbuf *j, const char *event);
AEGIS_HIDDEN void jb_str(struct jbuf *j, const char *key, const char *val);
AEGIS_HIDDEN void jb_u64(struct jbuf *j, const char *key, uint64_t v);
AEGIS_HIDDEN void jb_i64(struct jbuf *j, const char *key, int64_t v);
AEGIS_HIDDEN void jb_bool(struct jbuf *j, const char *key, int v);
/* "key":[ then jb_item_str() per item, then jb_list_end() */
AEGIS_HIDDEN void jb_list_begin(struct jbuf *j, const char *key);
AEGIS_HIDDEN void jb_item_str(struct jbuf *j, const char *val);
AEGIS_HIDDEN void jb_list_end(struct jbuf *j);
/* Closes the object and appends the newline. */
AEGIS_HIDDEN void jb_end(struct jbuf *j);

/* Appending to the log: open once per batch of lines, one write() per
 * line (O_APPEND keeps lines of many processes whole), close. No fd stays
 * open in the host program between batches. */
struct jlog {
    int fd;
};
AEGIS_HIDDEN void jlog_open(struct jlog *l);
AEGIS_HIDDEN void jlog_write(struct jlog *l, const struct jbuf *j);
AEGIS_HIDDEN void jlog_close(struct jlog *l);
/* A batch of one line: open, write, close. */
AEGIS_HIDDEN void jlog_append(const struct jbuf *j);

/* "ECONNREFUSED" for the errors a connect() can return, NULL otherwise. */
AEGIS_HIDDEN const char *aegis_errno_name(int err);

/* The cached /proc/self/comm: refreshed at most once a second (programs
 * rename themselves, e.g. node's process.title), forced after fork. */
AEGIS_HIDDEN void aegis_comm_refresh(int force);
AEGIS_HIDDEN const char *aegis_comm(void);
AEGIS_HIDDEN void aegis_comm_after_fork(void);

#endif

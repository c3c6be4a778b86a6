/*
 * connect.c - cgroup/connect4 and cgroup/connect6: every connect() made by
 * a process of the agent's cgroup, whatever the syscall path (libc, raw
 * syscall, Go, Bun), with pid, comm, uid and destination, before the kernel
 * acts on it. Returning 0 makes connect() fail with EPERM: that is how the
 * egress policy refuses a destination (a `blocked` record each time).
 */
#include "aegis_common.h"
#include "policy.h"

/* addr: the destination as 1 (IPv4) or 4 (IPv6) words in network order;
 * the caller reads it, since connect4 may not even look at user_ip6. */
static __always_inline int on_connect(struct bpf_sock_addr *ctx, u16 family, const u32 *addr,
                                      int verdict, u16 port)
{
    u64 cookie = bpf_get_socket_cookie(ctx);
    int blocked = verdict == VERDICT_DENY;
    struct aegis_event *e = aegis_reserve(blocked ? EV_BLOCKED : EV_CONNECT, 1);
    if (e) {
        e->cookie = cookie;
        e->family = family;
        e->proto = ctx->protocol;
        e->rport = port;
        e->value = verdict;
        if (family == AEGIS_AF_INET)
            __builtin_memcpy(e->raddr, addr, 4);
        else
            __builtin_memcpy(e->raddr, addr, 16);
        events.ringbuf_submit(e, 0);
    }
    if (blocked) return 0;
    aegis_track_sock(cookie);
    if (ctx->protocol == IPPROTO_TCP) {
        u32 tid = (u32)bpf_get_current_pid_tgid();
        pending_connect.update(&tid, &cookie);
    }
    return 1;
}

int aegis_connect4(struct bpf_sock_addr *ctx)
{
    u16 port = aegis_ntohs((u16)ctx->user_port);
    u32 a[4] = {};
    a[0] = ctx->user_ip4;
    return on_connect(ctx, AEGIS_AF_INET, a, policy_check4(a[0], port), port);
}

int aegis_connect6(struct bpf_sock_addr *ctx)
{
    u16 port = aegis_ntohs((u16)ctx->user_port);
    u32 a[4];
    aegis_dest6(ctx, a);
    return on_connect(ctx, AEGIS_AF_INET6, a, policy_check6(a, port), port);
}

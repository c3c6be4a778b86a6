/*
 * connect.c - cgroup/connect4 and cgroup/connect6: every connect() made by
 * a process of the agent's cgroup, whatever the syscall path (libc, raw
 * syscall, Go, Bun), with pid, comm, uid and destination, before the kernel
 * acts on it. Returning 0 makes connect() fail with EPERM: that is how the
 * egress policy refuses a destination (a `blocked` record each time).
 */
#include "aegis_common.h"
#include "policy.h"

/* addr: the destination as 4 words in network order (IPv4: the first, zeros
 * after); the caller reads it, since connect4 may not even look at user_ip6. */
static __always_inline int on_connect(struct bpf_sock_addr *ctx, u16 family, const u32 *addr,
                                      int verdict, u16 port)
{
    u64 cookie = bpf_get_socket_cookie(ctx);
    int blocked = verdict == VERDICT_DENY;
    aegis_emit_dest(blocked ? EV_BLOCKED : EV_CONNECT, cookie, family, ctx->protocol, addr, port,
                    verdict);
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

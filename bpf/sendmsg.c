/*
 * sendmsg.c - cgroup/sendmsg4 and cgroup/sendmsg6: UDP datagrams sent with
 * an explicit destination (sendto/sendmsg on an unconnected socket, which
 * is how most resolvers send DNS queries). A record is sent for the first
 * datagram of a socket to each destination only; the bytes themselves are
 * counted by traffic.c. The egress policy applies here too.
 */
#include "aegis_common.h"
#include "policy.h"

/* (socket, destination) pairs already reported. LRU: forgetting an old pair
 * costs one repeated record, never a wrong number. */
BPF_TABLE("lru_hash", struct flow_key, u8, udp_seen, 16384);

static __always_inline int on_sendmsg(struct bpf_sock_addr *ctx, u16 family, const u32 *addr,
                                      int verdict, u16 port)
{
    u64 cookie = bpf_get_socket_cookie(ctx);
    int blocked = verdict == VERDICT_DENY;
    struct flow_key key = {};
    key.cookie = cookie;
    key.rport = port;
    key.family = family;
    __builtin_memcpy(key.raddr, addr, 16);
    if (!blocked) {
        aegis_track_sock(cookie);
        u8 one = 1;
        if (udp_seen.lookup(&key)) return 1;
        udp_seen.update(&key, &one);
    }
    aegis_emit_dest(blocked ? EV_BLOCKED : EV_SENDTO, cookie, family, ctx->protocol, key.raddr,
                    port, verdict);
    return blocked ? 0 : 1;
}

int aegis_sendmsg4(struct bpf_sock_addr *ctx)
{
    u16 port = aegis_ntohs((u16)ctx->user_port);
    u32 a[4] = {};
    a[0] = ctx->user_ip4;
    return on_sendmsg(ctx, AEGIS_AF_INET, a, policy_check4(a[0], port), port);
}

int aegis_sendmsg6(struct bpf_sock_addr *ctx)
{
    u16 port = aegis_ntohs((u16)ctx->user_port);
    u32 a[4];
    aegis_dest6(ctx, a);
    return on_sendmsg(ctx, AEGIS_AF_INET6, a, policy_check6(a, port), port);
}

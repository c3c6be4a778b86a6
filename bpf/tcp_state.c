/*
 * tcp_state.c - tracepoint sock:inet_sock_set_state: the TCP life cycle of
 * the agent's connections (established, closed, with both endpoints), and
 * inbound connections to the agent's listeners.
 *
 * The tracepoint fires for every socket of the machine, often in softirq
 * context where the current task is whoever was interrupted. So the agent's
 * sockets are recognised where the task is known: the transition to
 * SYN_SENT runs inside the agent's connect() (right after connect.c, which
 * left the socket cookie for this thread), and the one to LISTEN inside its
 * listen(); both are checked against the agent's cgroup id. Later
 * transitions are matched by socket address (skaddr) or listening port.
 */
#include "aegis_common.h"

/* Prefixed: the kernel's own names are an enum in net/tcp_states.h, which the
 * kprobe tier includes in the same module. */
#define AEGIS_TCP_ESTABLISHED 1
#define AEGIS_TCP_SYN_SENT 2
#define AEGIS_TCP_SYN_RECV 3
#define AEGIS_TCP_CLOSE 7
#define AEGIS_TCP_LISTEN 10

/* skaddr of the agent's TCP sockets -> socket cookie (0 for accepted ones). */
BPF_HASH(tcp_socks, u64, u64, MAX_SOCKS);
/* Local ports the agent listens on. */
BPF_HASH(listen_ports, u16, u8, 1024);

/* The tracepoint's fields, copied out: BCC declares the tracepoint's own
 * struct right before the probe function, so helpers cannot take it. */
struct tp_state {
    u64 skaddr;
    s32 oldstate;
    s32 newstate;
    u16 family;
    u16 sport;
    u16 dport;
    u16 pad;
    u8 saddr[16];
    u8 daddr[16];
};

static __always_inline void emit_state(const struct tp_state *st, u32 type, u64 cookie)
{
    struct aegis_event *e = aegis_reserve(type, 0);
    if (!e) return;
    e->cookie = cookie;
    e->aux = st->skaddr;
    e->value = st->oldstate;
    e->value2 = st->newstate;
    e->family = st->family;
    e->proto = IPPROTO_TCP;
    e->lport = st->sport;
    e->rport = st->dport;
    __builtin_memcpy(e->laddr, st->saddr, 16);
    __builtin_memcpy(e->raddr, st->daddr, 16);
    events.ringbuf_submit(e, 0);
}

static __always_inline int on_state(struct tp_state *st)
{
    u64 skaddr = st->skaddr;
    u16 sport = st->sport;
    int oldstate = st->oldstate;
    int newstate = st->newstate;

    if (newstate == AEGIS_TCP_SYN_SENT) {
        if (!aegis_in_agent()) return 0;
        u32 tid = (u32)bpf_get_current_pid_tgid();
        u64 cookie = 0;
        u64 *c = pending_connect.lookup(&tid);
        if (c) {
            cookie = *c;
            pending_connect.delete(&tid);
        }
        if (tcp_socks.update(&skaddr, &cookie) != 0) aegis_count(CNT_SOCK_FULL);
        return 0;
    }
    if (newstate == AEGIS_TCP_LISTEN) {
        u8 one = 1;
        if (aegis_in_agent()) listen_ports.update(&sport, &one);
        return 0;
    }
    if (oldstate == AEGIS_TCP_LISTEN) {
        /* only the listener's own close: the port may have been ours */
        if (newstate == AEGIS_TCP_CLOSE && aegis_in_agent()) listen_ports.delete(&sport);
        return 0;
    }
    if (oldstate == AEGIS_TCP_SYN_RECV && newstate == AEGIS_TCP_ESTABLISHED) {
        if (!listen_ports.lookup(&sport)) return 0;
        u64 zero = 0;
        if (tcp_socks.update(&skaddr, &zero) != 0) aegis_count(CNT_SOCK_FULL);
        emit_state(st, EV_ACCEPT, 0);
        return 0;
    }
    u64 *c = tcp_socks.lookup(&skaddr);
    if (!c) return 0;
    u64 cookie = *c;
    if (newstate == AEGIS_TCP_ESTABLISHED) {
        emit_state(st, EV_TCP_STATE, cookie);
    } else if (newstate == AEGIS_TCP_CLOSE) {
        emit_state(st, EV_TCP_STATE, cookie);
        tcp_socks.delete(&skaddr);
    }
    return 0;
}

TRACEPOINT_PROBE(sock, inet_sock_set_state)
{
    if (args->protocol != IPPROTO_TCP) return 0;
    struct tp_state st = {};
    st.skaddr = (u64)args->skaddr;
    st.oldstate = args->oldstate;
    st.newstate = args->newstate;
    st.family = args->family;
    st.sport = args->sport;
    st.dport = args->dport;
    if (args->family == AEGIS_AF_INET) {
        __builtin_memcpy(st.saddr, args->saddr, 4);
        __builtin_memcpy(st.daddr, args->daddr, 4);
    } else {
        __builtin_memcpy(st.saddr, args->saddr_v6, 16);
        __builtin_memcpy(st.daddr, args->daddr_v6, 16);
    }
    return on_state(&st);
}

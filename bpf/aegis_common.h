/*
 * aegis_common.h - what every aegis-mcp BPF program shares: the event
 * record sent to user space, the maps, and small helpers.
 *
 * The programs are compiled together by BCC (one module per agent), each
 * concern in its own file: connect.c, sendmsg.c, traffic.c, tcp_bytes.c, release.c
 * (cgroup tier), tcp_state.c (tracepoint tier), kprobes.c (kprobe tier).
 * The loader (runner/aegis_mcp/netmon/ebpf/programs.py) picks the files of
 * the tiers the kernel offers; this header comes first.
 *
 * Only stable interfaces are read: the UAPI contexts (bpf_sock_addr,
 * __sk_buff, bpf_sock, bpf_sock_ops) and tracepoint fields. BCC may compile against
 * headers of another kernel version (DESIGN.md fact 5), which is harmless
 * for these and would not be for struct sock offsets; only kprobes.c reads
 * kernel structs, and the loader enables it only with matching headers.
 *
 * The record layouts are mirrored in runner/aegis_mcp/netmon/ebpf/events.py:
 * change both together (the size checks below and there catch a mismatch).
 */
#ifndef AEGIS_COMMON_H
#define AEGIS_COMMON_H

#include <uapi/linux/bpf.h>
#include <uapi/linux/in.h>

#define AEGIS_AF_INET 2
#define AEGIS_AF_INET6 10

/* Record types (struct aegis_event.type). */
#define EV_CONNECT 1     /* connect() attempt seen by cgroup/connect4|6 */
#define EV_BLOCKED 2     /* the same, refused by the egress policy */
#define EV_SENDTO 3      /* first UDP datagram of a socket to a destination */
#define EV_RELEASE 4     /* the socket was closed (cgroup/sock_release) */
#define EV_DNS 5         /* a DNS message copied from a packet (struct aegis_dns_event) */
#define EV_TCP_STATE 6   /* TCP established or closed (tracepoint) */
#define EV_ACCEPT 7      /* an inbound TCP connection to a listener of the agent (tracepoint) */
#define EV_KP_CONNECT 8  /* tcp_v4|6_connect() returned (kprobe) */

/* config[] slots, written by user space before anything is attached. */
#define CFG_CGROUP_ID 0     /* the agent cgroup's id, for programs that are not attached to it */
#define CFG_POLICY 1        /* 0: no policy, 1: allow unless denied, 2: deny unless allowed */
#define CFG_SLOTS 4

/* counters[] slots (per CPU, summed by user space): nothing is dropped silently. */
#define CNT_LOST 0          /* records the ring buffer had no room for */
#define CNT_FLOW_FULL 1     /* traffic not counted: the flow table was full */
#define CNT_DNS_TRUNC 2     /* DNS messages longer than DNS_MAX, cut */
#define CNT_SOCK_FULL 3     /* sockets not followed: the socket table was full */
#define CNT_SLOTS 8

/* Policy verdicts stored in the tries. */
#define VERDICT_ALLOW 1
#define VERDICT_DENY 2

#define DNS_MAX 1024
#define MAX_FLOWS 65536
#define MAX_SOCKS 65536

/* One record; every field in host byte order, addresses as network bytes. */
struct aegis_event {
    u64 ts_ns;      /* bpf_ktime_get_ns (CLOCK_MONOTONIC) */
    u64 cookie;     /* socket cookie: the key that joins records of one socket */
    u64 aux;        /* per type: tracepoint skaddr, kprobe sock */
    u32 type;
    u32 pid;        /* tgid; 0 when not in process context */
    u32 tid;
    u32 uid;
    s32 value;      /* per type: verdict, old TCP state, return value */
    s32 value2;     /* per type: new TCP state */
    u16 family;
    u16 proto;      /* IPPROTO_TCP, IPPROTO_UDP */
    u16 rport;
    u16 lport;
    u8 raddr[16];   /* IPv4 in the first 4 bytes */
    u8 laddr[16];
    char comm[16];
};

struct aegis_dns_event {
    struct aegis_event h;
    u32 len;        /* bytes in data (at most DNS_MAX) */
    u32 size;       /* the message's payload size in the packet */
    u8 data[DNS_MAX];
};

_Static_assert(sizeof(struct aegis_event) == 104, "events.py mirrors this layout");
_Static_assert(sizeof(struct aegis_dns_event) == 104 + 8 + DNS_MAX, "events.py mirrors this layout");

/* Bytes per socket and remote endpoint: a UDP socket may talk to many. */
struct flow_key {
    u64 cookie;
    u8 raddr[16];
    u16 rport;
    u16 family;
    u32 pad;
};

struct flow_val {
    u64 bytes_out;  /* payload bytes: IP and TCP/UDP headers excluded */
    u64 bytes_in;
    u64 pkts_out;
    u64 pkts_in;
    u16 lport;
    u16 proto;
    u32 pad;
};

/* Policy keys: port (network order) then address, so that one longest-prefix
 * lookup per port finds the most specific rule. */
struct lpm4_key {
    u32 prefixlen;
    u8 data[6];
};

struct lpm6_key {
    u32 prefixlen;
    u8 data[18];
};

struct policy_val {
    u8 verdict;  /* VERDICT_ALLOW, VERDICT_DENY */
    u8 netbits;  /* the rule's network prefix length: how specific it is */
};

BPF_RINGBUF_OUTPUT(events, 1024); /* 4 MiB: about 37,000 records of slack */
BPF_ARRAY(config, u64, CFG_SLOTS);
BPF_PERCPU_ARRAY(counters, u64, CNT_SLOTS);
BPF_HASH(flows, struct flow_key, struct flow_val, MAX_FLOWS);
/* Sockets that showed activity: release events are sent for these only. */
BPF_HASH(socks, u64, u8, MAX_SOCKS);
/* A thread's TCP connect between the cgroup hook and the tracepoint that
 * follows it in the same syscall: how tcp_state.c learns the cookie. */
BPF_HASH(pending_connect, u32, u64, 16384);
/* Ports whose messages are DNS besides 53, filled from slot 0 (0: no more). An
 * array, not a hash: the verifier inlines array lookups, and this runs per packet
 * (usually one lookup: slot 0 is empty). */
#define DNS_PORT_SLOTS 4
BPF_ARRAY(dns_ports, u16, DNS_PORT_SLOTS);
/* A live TCP connection of the agent, between tcp_bytes.c (which makes it when the
 * connection is established and drops it when closed) and traffic.c (which notes
 * where each FIN ends). */
struct tcp_conn {
    u32 fin_out_end; /* sequence number after our FIN (when fin_out) */
    u32 fin_in_end;  /* sequence number after the peer's FIN (when fin_in) */
    u8 fin_out;
    u8 fin_in;
    u8 active;       /* we sent the SYN: bytes_acked counts it */
    u8 pad;
};

BPF_HASH(tcp_conns, u64, struct tcp_conn, MAX_SOCKS);

BPF_LPM_TRIE(policy4, struct lpm4_key, struct policy_val, 16384);
BPF_LPM_TRIE(policy6, struct lpm6_key, struct policy_val, 16384);

static __always_inline u16 aegis_ntohs(u16 x)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    return __builtin_bswap16(x);
#else
    return x;
#endif
}

/* The destination of a cgroup/connect6 or sendmsg6 call, as four words. */
static __always_inline void aegis_dest6(struct bpf_sock_addr *ctx, u32 a[4])
{
    a[0] = ctx->user_ip6[0];
    a[1] = ctx->user_ip6[1];
    a[2] = ctx->user_ip6[2];
    a[3] = ctx->user_ip6[3];
}

static __always_inline void aegis_count(u32 slot)
{
    u64 *n = counters.lookup(&slot);
    if (n) *n += 1;
}

static __always_inline u64 aegis_config(u32 slot)
{
    u64 *v = config.lookup(&slot);
    return v ? *v : 0;
}

/* Whether the current task is in the agent's cgroup (for programs that are not
 * attached to it: the tracepoint and the kprobes). */
static __always_inline int aegis_in_agent(void)
{
    return bpf_get_current_cgroup_id() == aegis_config(CFG_CGROUP_ID);
}

/* Zero a record (the header of a larger one too) and fill in the time and,
 * with task, the current task. */
static __always_inline void aegis_init_event(struct aegis_event *e, u32 type, int task)
{
    __builtin_memset(e, 0, sizeof(*e));
    e->ts_ns = bpf_ktime_get_ns();
    e->type = type;
    if (task) {
        u64 id = bpf_get_current_pid_tgid();
        e->pid = id >> 32;
        e->tid = (u32)id;
        e->uid = (u32)bpf_get_current_uid_gid();
        bpf_get_current_comm(&e->comm, sizeof(e->comm));
    }
}

/* A zeroed record with the time and the current task filled in, or NULL
 * (and a lost record counted) when the ring buffer is full. */
static __always_inline struct aegis_event *aegis_reserve(u32 type, int task)
{
    struct aegis_event *e = events.ringbuf_reserve(sizeof(struct aegis_event));
    if (!e) {
        aegis_count(CNT_LOST);
        return NULL;
    }
    aegis_init_event(e, type, task);
    return e;
}

/* The record of a cgroup/connect or sendmsg call: the calling task, the socket
 * and the destination (addr: 16 bytes, IPv4 in the first 4 and zeros after). */
static __always_inline void aegis_emit_dest(u32 type, u64 cookie, u16 family, u16 proto,
                                            const void *addr, u16 port, int verdict)
{
    struct aegis_event *e = aegis_reserve(type, 1);
    if (!e) return;
    e->cookie = cookie;
    e->family = family;
    e->proto = proto;
    e->rport = port;
    e->value = verdict;
    __builtin_memcpy(e->raddr, addr, 16);
    events.ringbuf_submit(e, 0);
}

static __always_inline void aegis_track_sock(u64 cookie)
{
    u8 one = 1;
    if (socks.lookup(&cookie)) return;
    if (socks.update(&cookie, &one) != 0) aegis_count(CNT_SOCK_FULL);
}

#endif

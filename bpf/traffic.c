/*
 * traffic.c - cgroup_skb/egress and cgroup_skb/ingress: payload bytes and
 * packets per socket and remote endpoint, for every UDP (and other non-TCP)
 * socket created by a process of the agent's cgroup. TCP bytes are counted by
 * tcp_bytes.c from the socket's own counters: a TCP packet is let through at
 * once here, unless it carries a FIN (whose end tcp_bytes.c needs) or DNS.
 *
 * skb->len counts the IP and TCP/UDP headers and the handshake (DESIGN.md
 * fact 5): the headers are parsed here so that 10,000 bytes written are
 * 10,000 bytes counted. Packets are counted in a map, never sent one by
 * one to user space (DESIGN.md fact 11: that is what keeps the cost out of
 * reach of measurement); user space reads the map and reports the growth.
 * Retransmitted segments are counted again: these are bytes on the wire.
 *
 * DNS messages (to or from a port in dns_ports) are copied to user space,
 * which parses them to name the addresses of later connections.
 *
 * The programs run in softirq context as often as not: no current task
 * here. Flows are joined to their process by the socket cookie.
 */
#include "aegis_common.h"

#define IP_MF_OFFSET 0x3fff /* more-fragments flag and fragment offset */

struct l4_info {
    u32 hdr_len;     /* IP + TCP/UDP headers */
    u32 tcp_seq;     /* TCP: the segment's sequence number (host order) */
    u8 tcp_flags;
    u8 pad[3];
    u16 proto;
    u16 sport;
    u16 dport;
    u16 family;
    u8 saddr[16];
    u8 daddr[16];
};

/* Parse the IP and transport headers with helper calls; 0 on success. Any
 * layout: IPv4 options, headers outside the linear part of the packet. */
static __always_inline int parse_headers_slow(struct __sk_buff *skb, struct l4_info *info)
{
    u8 first;
    if (bpf_skb_load_bytes_relative(skb, 0, &first, 1, BPF_HDR_START_NET)) return -1;
    u32 l4_off;
    u16 frag = 0;
    if ((first >> 4) == 4) {
        u8 ip[20];
        if (bpf_skb_load_bytes_relative(skb, 0, ip, 20, BPF_HDR_START_NET)) return -1;
        l4_off = (ip[0] & 0x0f) * 4;
        info->family = AEGIS_AF_INET;
        info->proto = ip[9];
        frag = ((u16)ip[6] << 8 | ip[7]) & IP_MF_OFFSET;
        __builtin_memcpy(info->saddr, &ip[12], 4);
        __builtin_memcpy(info->daddr, &ip[16], 4);
    } else if ((first >> 4) == 6) {
        u8 ip6[40];
        if (bpf_skb_load_bytes_relative(skb, 0, ip6, 40, BPF_HDR_START_NET)) return -1;
        l4_off = 40;
        info->family = AEGIS_AF_INET6;
        /* Extension headers are rare on a host's own traffic: such packets
         * are counted whole, with the socket's ports. */
        info->proto = ip6[6];
        __builtin_memcpy(info->saddr, &ip6[8], 16);
        __builtin_memcpy(info->daddr, &ip6[24], 16);
    } else {
        return -1;
    }
    info->hdr_len = l4_off;
    if (frag & 0x1fff) return 0; /* a later fragment: all payload, no L4 header */
    if (info->proto == IPPROTO_TCP) {
        u8 tcp[14];
        if (bpf_skb_load_bytes_relative(skb, l4_off, tcp, 14, BPF_HDR_START_NET)) return -1;
        info->sport = (u16)tcp[0] << 8 | tcp[1];
        info->dport = (u16)tcp[2] << 8 | tcp[3];
        info->tcp_seq = (u32)tcp[4] << 24 | (u32)tcp[5] << 16 | (u32)tcp[6] << 8 | tcp[7];
        info->hdr_len += (tcp[12] >> 4) * 4;
        info->tcp_flags = tcp[13];
    } else if (info->proto == IPPROTO_UDP) {
        u8 udp[4];
        if (bpf_skb_load_bytes_relative(skb, l4_off, udp, 4, BPF_HDR_START_NET)) return -1;
        info->sport = (u16)udp[0] << 8 | udp[1];
        info->dport = (u16)udp[2] << 8 | udp[3];
        info->hdr_len += 8;
    }
    return 0;
}

/* The transport header at l4: ports and length (TCP: flags and sequence number too). */
static __always_inline int parse_l4_direct(u8 *l4, void *end, struct l4_info *info)
{
    if (info->proto == IPPROTO_TCP) {
        if ((void *)(l4 + 14) > end) return -1;
        info->sport = (u16)l4[0] << 8 | l4[1];
        info->dport = (u16)l4[2] << 8 | l4[3];
        info->tcp_seq = (u32)l4[4] << 24 | (u32)l4[5] << 16 | (u32)l4[6] << 8 | l4[7];
        info->hdr_len += (l4[12] >> 4) * 4;
        info->tcp_flags = l4[13];
    } else if (info->proto == IPPROTO_UDP) {
        if ((void *)(l4 + 8) > end) return -1;
        info->sport = (u16)l4[0] << 8 | l4[1];
        info->dport = (u16)l4[2] << 8 | l4[3];
        info->hdr_len += 8;
    }
    return 0;
}

/* Parse the IP and transport headers; 0 on success. The common layouts (IPv4
 * without options, IPv6 without extension headers, not a fragment, headers in
 * the linear part) are read in place: a helper call per header would be most
 * of this program's cost on small packets. The rest takes the slow path. */
static __always_inline int parse_headers(struct __sk_buff *skb, struct l4_info *info)
{
    u8 *p = (u8 *)(long)skb->data;
    void *end = (void *)(long)skb->data_end;
    if ((void *)(p + 40) > end) return parse_headers_slow(skb, info);
    if (p[0] == 0x45) {
        if (((u16)p[6] << 8 | p[7]) & IP_MF_OFFSET) return parse_headers_slow(skb, info);
        info->family = AEGIS_AF_INET;
        info->proto = p[9];
        info->hdr_len = 20;
        __builtin_memcpy(info->saddr, p + 12, 4);
        __builtin_memcpy(info->daddr, p + 16, 4);
        if (parse_l4_direct(p + 20, end, info) == 0) return 0;
    } else if ((p[0] >> 4) == 6) {
        info->family = AEGIS_AF_INET6;
        info->proto = p[6];
        info->hdr_len = 40;
        __builtin_memcpy(info->saddr, p + 8, 16);
        __builtin_memcpy(info->daddr, p + 24, 16);
        if (parse_l4_direct(p + 40, end, info) == 0) return 0;
    }
    __builtin_memset(info, 0, sizeof(*info));
    return parse_headers_slow(skb, info);
}

/* Whether a remote port carries DNS: 53, or one user space added (monitor.py fills the
 * slots in order, so the first empty one ends the search). */
static __always_inline int is_dns_port(u16 port)
{
    if (port == 53) return 1;
#pragma unroll
    for (u32 i = 0; i < DNS_PORT_SLOTS; i++) {
        u32 slot = i;
        u16 *p = dns_ports.lookup(&slot);
        if (!p || *p == 0) return 0; /* filled from slot 0 on: the rest is empty too */
        if (*p == port) return 1;
    }
    return 0;
}

static __always_inline void copy_dns(struct __sk_buff *skb, u64 cookie, struct l4_info *info,
                                     u32 payload, int egress)
{
    struct aegis_dns_event *e = events.ringbuf_reserve(sizeof(struct aegis_dns_event));
    if (!e) {
        aegis_count(CNT_LOST);
        return;
    }
    aegis_init_event(&e->h, EV_DNS, 0);
    e->h.cookie = cookie;
    e->h.family = info->family;
    e->h.proto = info->proto;
    e->h.value = egress;
    e->h.rport = egress ? info->dport : info->sport;
    e->h.lport = egress ? info->sport : info->dport;
    __builtin_memcpy(e->h.raddr, egress ? info->daddr : info->saddr, 16);
    __builtin_memcpy(e->h.laddr, egress ? info->saddr : info->daddr, 16);
    if (payload > DNS_MAX) aegis_count(CNT_DNS_TRUNC);
    e->size = payload;
    e->len = 0;
    /* 64 bits and checked again after a barrier: otherwise clang hands the
     * helper a copy of n whose bounds the verifier lost (a 32-bit zero
     * extension, merged range checks) and the load is refused. */
    u64 n = payload > DNS_MAX ? DNS_MAX : payload;
    asm volatile("" : "+r"(n));
    /* n is 1..DNS_MAX already (payload > 0); masked so that even a verifier that
     * learns no lower bound from a test (Linux 6.1) sees 1..DNS_MAX. */
    n = ((n - 1) & (DNS_MAX - 1)) + 1;
    if (n <= DNS_MAX &&
        bpf_skb_load_bytes_relative(skb, info->hdr_len, e->data, n, BPF_HDR_START_NET) == 0)
        e->len = n;
    events.ringbuf_submit(e, 0);
}

#define TCP_FIN 0x01
#define TCP_SYN 0x02

/* Whether the packet is TCP that needs nothing here: no FIN, not to or from a DNS
 * port. Read in place for the common layouts; anything else (IP options, short
 * linear part, IPv6 extension headers) says no and takes the full path. This is
 * what almost every TCP packet costs: keep it short. */
static __always_inline int tcp_passes(struct __sk_buff *skb, int egress)
{
    u8 *p = (u8 *)(long)skb->data;
    void *end = (void *)(long)skb->data_end;
    u8 *tcp;
    if ((void *)(p + 34) > end) return 0;
    if (p[0] == 0x45) {
        if (p[9] != IPPROTO_TCP) return 0;
        tcp = p + 20;
    } else if ((p[0] >> 4) == 6) {
        if ((void *)(p + 54) > end || p[6] != IPPROTO_TCP) return 0;
        tcp = p + 40;
    } else {
        return 0;
    }
    if (tcp[13] & TCP_FIN) return 0;
    u16 rport = egress ? ((u16)tcp[2] << 8 | tcp[3]) : ((u16)tcp[0] << 8 | tcp[1]);
    return !is_dns_port(rport);
}

/* A FIN of one of the agent's connections: where its sequence space ends, for
 * tcp_bytes.c to tell the FIN from the payload in the socket's counters. */
static __always_inline void note_fin(u64 cookie, struct l4_info *info, u32 payload, int egress)
{
    struct tcp_conn *conn = tcp_conns.lookup(&cookie);
    if (!conn) return; /* not established (or not the agent's): nothing counted */
    u32 fin_end = info->tcp_seq + payload + ((info->tcp_flags & TCP_SYN) ? 2 : 1);
    if (egress) {
        conn->fin_out_end = fin_end;
        conn->fin_out = 1;
    } else {
        conn->fin_in_end = fin_end;
        conn->fin_in = 1;
    }
}

static __always_inline int on_skb(struct __sk_buff *skb, int egress)
{
    if (tcp_passes(skb, egress)) return 1;
    struct l4_info info = {};
    if (parse_headers(skb, &info) != 0) return 1;
    u32 payload = skb->len > info.hdr_len ? skb->len - info.hdr_len : 0;
    u64 cookie = bpf_get_socket_cookie(skb);

    if (info.proto == IPPROTO_TCP) {
        if (info.tcp_flags & TCP_FIN) note_fin(cookie, &info, payload, egress);
        u16 rport = egress ? info.dport : info.sport;
        if (payload > 0 && is_dns_port(rport)) copy_dns(skb, cookie, &info, payload, egress);
        return 1;
    }
    if (info.proto != IPPROTO_UDP) {
        /* no transport header found (IPv6 extension headers): TCP by its socket */
        struct bpf_sock *sk = skb->sk;
        if (sk) sk = bpf_sk_fullsock(sk);
        if (sk && sk->protocol == IPPROTO_TCP) return 1;
    }

    struct flow_key key = {};
    key.cookie = cookie;
    key.family = info.family;
    if (info.sport == 0 && info.dport == 0) {
        /* no transport header parsed: the socket knows its peer */
        key.rport = aegis_ntohs((u16)skb->remote_port);
    } else {
        key.rport = egress ? info.dport : info.sport;
    }
    __builtin_memcpy(key.raddr, egress ? info.daddr : info.saddr, 16);

    struct flow_val *v = flows.lookup(&key);
    if (!v) {
        /* pure ACKs and handshakes make no flow of their own */
        if (payload == 0) return 1;
        struct flow_val zero = {};
        zero.proto = info.proto;
        zero.lport = egress ? info.sport : info.dport;
        /* NOEXIST: another CPU may have made it meanwhile; keep its counts */
        flows.insert(&key, &zero);
        v = flows.lookup(&key);
        if (!v) {
            aegis_count(CNT_FLOW_FULL);
            return 1;
        }
        aegis_track_sock(cookie);
    }
    if (egress) {
        __sync_fetch_and_add(&v->bytes_out, payload);
        __sync_fetch_and_add(&v->pkts_out, 1);
    } else {
        __sync_fetch_and_add(&v->bytes_in, payload);
        __sync_fetch_and_add(&v->pkts_in, 1);
    }
    if (payload > 0 && info.proto == IPPROTO_UDP) {
        if (is_dns_port(key.rport)) copy_dns(skb, cookie, &info, payload, egress);
    }
    return 1;
}

int aegis_egress(struct __sk_buff *skb)
{
    return on_skb(skb, 1);
}

int aegis_ingress(struct __sk_buff *skb)
{
    return on_skb(skb, 0);
}

/*
 * tcp_bytes.c - cgroup sock_ops: the payload bytes of every TCP connection of
 * the agent's cgroup, from the kernel's own per-socket counters, read when the
 * connection changes state rather than per packet.
 *
 * A per-packet cgroup_skb program is most of what monitoring costs a chatty
 * TCP connection (issue 14: 100 ns a packet for ours, 39 ns for an empty one);
 * the socket already counts what we want (bytes_acked: sum of snd_una's
 * advances; bytes_received: sum of rcv_nxt's), so traffic.c lets TCP packets
 * through at once and this program copies the counters into the flow table at
 * each state change (established, FIN sent or received, closed). User space
 * reads live connections' counters in between (netmon/ebpf/tcp_diag.py, the
 * same counters through sock_diag).
 *
 * The counters count sequence numbers, so the SYN and the FINs are in them:
 * bytes_acked holds our SYN on a connection we opened, each holds a FIN once
 * it is acked / received. traffic.c notes the sequence number that ends each
 * FIN (tcp_conns); a FIN is taken off once snd_una / rcv_nxt has reached that
 * number, which happens exactly when the counter took it in. Payload bytes,
 * as the per-packet count gave them, retransmissions aside (counted once: the
 * bytes that arrived, not the bytes sent again).
 */
#include "aegis_common.h"

#define AEGIS_TCPS_CLOSE 7

static __always_inline void tcp_bytes_store(struct bpf_sock_ops *skops, u64 cookie,
                                            struct tcp_conn *conn)
{
    u64 sent = skops->bytes_acked;
    u64 received = skops->bytes_received;
    if (conn) {
        if (conn->active && sent > 0) sent -= 1;
        if (conn->fin_out && skops->snd_una == conn->fin_out_end && sent > 0) sent -= 1;
        if (conn->fin_in && skops->rcv_nxt == conn->fin_in_end && received > 0) received -= 1;
    }

    struct flow_key key = {};
    key.cookie = cookie;
    u32 rport = skops->remote_port;
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    rport >>= 16; /* sock_ops puts the port (network order) in the upper half here */
#endif
    key.rport = aegis_ntohs((u16)rport);
    u32 family = skops->family;
    if (family == AEGIS_AF_INET) {
        u32 a = skops->remote_ip4;
        __builtin_memcpy(key.raddr, &a, 4);
    } else {
        u32 a[4];
        a[0] = skops->remote_ip6[0];
        a[1] = skops->remote_ip6[1];
        a[2] = skops->remote_ip6[2];
        a[3] = skops->remote_ip6[3];
        if (a[0] == 0 && a[1] == 0 && a[2] == __builtin_bswap32(0xffff)) {
            /* an IPv4 peer of an IPv6 socket: named as the packets name it */
            family = AEGIS_AF_INET;
            __builtin_memcpy(key.raddr, &a[3], 4);
        } else {
            __builtin_memcpy(key.raddr, a, 16);
        }
    }
    key.family = family;

    struct flow_val *v = flows.lookup(&key);
    if (!v) {
        if (sent == 0 && received == 0) return; /* no payload: no flow */
        struct flow_val zero = {};
        zero.proto = IPPROTO_TCP;
        zero.lport = skops->local_port;
        flows.insert(&key, &zero);
        v = flows.lookup(&key);
        if (!v) {
            aegis_count(CNT_FLOW_FULL);
            return;
        }
        aegis_track_sock(cookie);
    }
    /* Lifetime values, written under the socket's lock: no other writer. */
    v->bytes_out = sent;
    v->bytes_in = received;
    v->pkts_out = skops->data_segs_out;
    v->pkts_in = skops->data_segs_in;
}

int aegis_sockops(struct bpf_sock_ops *skops)
{
    u32 op = skops->op;
    if (op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB || op == BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB) {
        u64 cookie = bpf_get_socket_cookie(skops);
        struct tcp_conn conn = {};
        conn.active = op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB;
        if (tcp_conns.update(&cookie, &conn) != 0) aegis_count(CNT_SOCK_FULL);
        bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
        /* data in the SYN (TCP Fast Open) is counted already */
        tcp_bytes_store(skops, cookie, &conn);
    } else if (op == BPF_SOCK_OPS_STATE_CB) {
        u64 cookie = bpf_get_socket_cookie(skops);
        struct tcp_conn *conn = tcp_conns.lookup(&cookie);
        tcp_bytes_store(skops, cookie, conn);
        if (skops->args[1] == AEGIS_TCPS_CLOSE) tcp_conns.delete(&cookie);
    }
    return 1;
}

/*
 * kprobes.c - the kprobe tier: connect results and application-level bytes
 * per process, from the kernel functions behind the socket calls:
 *
 *   tcp_v4_connect / tcp_v6_connect   (+ return)  connect result (errno)
 *   tcp_sendmsg                        (+ return)  bytes accepted by send()
 *   tcp_cleanup_rbuf                               bytes handed to recv()
 *   udp_sendmsg                        (+ return)  bytes of a datagram
 *
 * All run in the calling process's context, so the pid is the process that
 * made the call (traffic.c can only name the socket's creator), filtered to
 * the agent's cgroup. Bytes gather in kp_bytes per (process, socket); user
 * space reads the growth as it reads the cgroup tier's flows: TCP send/recv
 * lines then come from here, with the caller's pid. UDP keeps the cgroup
 * tier's per-destination counts (an unconnected socket has no one peer to
 * read from struct sock); udp_sendmsg adds the per-process UDP totals.
 *
 * A socket is named by its address AND its cookie (the one the cgroup
 * programs asked for, so user space joins both tiers by it): a struct sock
 * freed and handed to a new socket gets a new cookie, hence a new entry with
 * its own peer. User space deletes an entry once its socket is finished.
 *
 * This file reads struct sock and struct msghdr, whose layout is only right
 * with the running kernel's own headers: the loader attaches it only when
 * the kernel has kprobes AND the headers match (a VM with a stock
 * distribution kernel, see the Vagrantfile). Elsewhere it is compiled, to
 * keep it building, and never loaded. Functions are named without BCC's
 * kprobe__ prefix so that nothing attaches by itself.
 */
#include "aegis_common.h"
#include <net/sock.h>
#include <linux/socket.h>

struct kp_key {
    u64 sk;
    u64 cookie;  /* 0 while no one has asked for the socket's cookie */
    u32 tgid;
    u32 pad;
};

struct kp_val {
    u64 sent;
    u64 received;
    u16 family;
    u16 proto;
    u16 rport;
    u16 lport;
    u8 raddr[16];
    char comm[16];
};

BPF_HASH(kp_connect, u32, u64, 16384);      /* tid -> sock, inside tcp_v*_connect */
BPF_HASH(kp_send, u32, u64, 16384);         /* tid -> sock, inside tcp/udp_sendmsg */
BPF_TABLE("lru_hash", struct kp_key, struct kp_val, kp_bytes, MAX_FLOWS);

/* The socket's own view of its peer. Every field is read with
 * bpf_probe_read_kernel: the return probes get sk back from a map, where BCC
 * does not know it for a kernel pointer and would let a plain load through to
 * the verifier, which refuses it. */
static __always_inline void kp_peer(struct sock *sk, struct kp_val *v)
{
    struct sock_common c = {};
    bpf_probe_read_kernel(&c, sizeof(c), &sk->__sk_common);
    u16 proto = 0;
    bpf_probe_read_kernel(&proto, sizeof(proto), &sk->sk_protocol);
    v->family = c.skc_family;
    v->proto = proto;
    v->rport = aegis_ntohs(c.skc_dport);
    v->lport = c.skc_num;
    if (c.skc_family == AEGIS_AF_INET)
        __builtin_memcpy(v->raddr, &c.skc_daddr, 4);
    else
        __builtin_memcpy(v->raddr, c.skc_v6_daddr.in6_u.u6_addr8, 16);
}

/* The socket's cookie as sock_gen_cookie() left it (0: never asked for). */
static __always_inline u64 kp_cookie(struct sock *sk)
{
    u64 cookie = 0;
    bpf_probe_read_kernel(&cookie, sizeof(cookie), &sk->__sk_common.skc_cookie);
    return cookie;
}

static __always_inline struct kp_val *kp_entry(struct sock *sk, u32 tgid)
{
    struct kp_key key = {};
    key.sk = (u64)sk;
    key.cookie = kp_cookie(sk);
    key.tgid = tgid;
    struct kp_val *v = kp_bytes.lookup(&key);
    if (v) return v;
    struct kp_val zero = {};
    kp_peer(sk, &zero);
    bpf_get_current_comm(&zero.comm, sizeof(zero.comm));
    kp_bytes.insert(&key, &zero);
    v = kp_bytes.lookup(&key);
    if (!v) aegis_count(CNT_FLOW_FULL);
    return v;
}

int aegis_kp_tcp_connect(struct pt_regs *ctx, struct sock *sk)
{
    if (!aegis_in_agent()) return 0;
    u32 tid = (u32)bpf_get_current_pid_tgid();
    u64 s = (u64)sk;
    kp_connect.update(&tid, &s);
    return 0;
}

int aegis_kp_tcp_connect_ret(struct pt_regs *ctx)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    u64 *s = kp_connect.lookup(&tid);
    if (!s) return 0;
    struct sock *sk = (struct sock *)*s;
    kp_connect.delete(&tid);
    struct aegis_event *e = aegis_reserve(EV_KP_CONNECT, 1);
    if (!e) return 0;
    struct kp_val peer = {};
    kp_peer(sk, &peer);
    e->aux = (u64)sk;
    e->cookie = kp_cookie(sk);
    e->value = PT_REGS_RC(ctx);
    e->family = peer.family;
    e->proto = IPPROTO_TCP;
    e->rport = peer.rport;
    e->lport = peer.lport;
    __builtin_memcpy(e->raddr, peer.raddr, 16);
    events.ringbuf_submit(e, 0);
    return 0;
}

int aegis_kp_sendmsg(struct pt_regs *ctx, struct sock *sk)
{
    if (!aegis_in_agent()) return 0;
    u32 tid = (u32)bpf_get_current_pid_tgid();
    u64 s = (u64)sk;
    kp_send.update(&tid, &s);
    return 0;
}

/* tcp_sendmsg and udp_sendmsg return the bytes they took (or -errno). */
int aegis_kp_sendmsg_ret(struct pt_regs *ctx)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 tid = (u32)id;
    u64 *s = kp_send.lookup(&tid);
    if (!s) return 0;
    struct sock *sk = (struct sock *)*s;
    kp_send.delete(&tid);
    int ret = PT_REGS_RC(ctx);
    if (ret <= 0) return 0;
    struct kp_val *v = kp_entry(sk, id >> 32);
    if (v) __sync_fetch_and_add(&v->sent, ret);
    return 0;
}

int aegis_kp_tcp_cleanup_rbuf(struct pt_regs *ctx, struct sock *sk, int copied)
{
    if (copied <= 0 || !aegis_in_agent()) return 0;
    struct kp_val *v = kp_entry(sk, bpf_get_current_pid_tgid() >> 32);
    if (v) __sync_fetch_and_add(&v->received, copied);
    return 0;
}

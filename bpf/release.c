/*
 * release.c - cgroup/sock_release: a socket of the agent's cgroup was
 * closed (its last file reference went away). Sent for sockets that showed
 * activity (connect, sendto, traffic) only, so that the many sockets a
 * program opens and closes without using them cost no record. User space
 * writes the socket's last byte counts and a `close` line from it.
 */
#include "aegis_common.h"

int aegis_release(struct bpf_sock *sk)
{
    u64 cookie = bpf_get_socket_cookie(sk);
    if (!socks.lookup(&cookie)) return 1;
    socks.delete(&cookie);
    struct aegis_event *e = aegis_reserve(EV_RELEASE, 1);
    if (!e) return 1;
    e->cookie = cookie;
    /* A sock_release program may read no more of the socket than this (no
     * addresses, no ports): user space knows them from the socket's earlier
     * records, joined by the cookie. */
    e->family = sk->family;
    e->proto = sk->protocol;
    events.ringbuf_submit(e, 0);
    return 1;
}

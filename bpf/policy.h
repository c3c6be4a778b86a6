/*
 * policy.h - the egress policy as the cgroup hooks apply it (connect.c,
 * sendmsg.c), with the rule of the sandbox's policy (sandbox/policy.py):
 * the most specific matching rule wins - the longer network prefix, then a
 * rule with the port over one without, then deny over allow (user space
 * keeps only the deny of two rules for the same network and port). With no
 * rule the default of config[CFG_POLICY] applies.
 *
 * Two longest-prefix lookups, one with the port and one with port 0 (the
 * rules without a port), each finding its most specific network; the value
 * says how specific, and the longer network wins, the port breaking ties.
 */
#ifndef AEGIS_POLICY_H
#define AEGIS_POLICY_H

#include "aegis_common.h"

static __always_inline int policy_default(u64 mode)
{
    return mode == 2 ? VERDICT_DENY : VERDICT_ALLOW;
}

static __always_inline int policy_pick(struct policy_val *with_port, struct policy_val *any,
                                       u64 mode)
{
    if (with_port && (!any || with_port->netbits >= any->netbits)) return with_port->verdict;
    if (any) return any->verdict;
    return policy_default(mode);
}

/* addr: the 4 address bytes in network order, as in bpf_sock_addr. */
static __always_inline int policy_check4(u32 addr, u16 port)
{
    u64 mode = aegis_config(CFG_POLICY);
    if (mode == 0) return VERDICT_ALLOW;
    struct lpm4_key key = {};
    key.prefixlen = 48;
    key.data[0] = port >> 8;
    key.data[1] = port & 0xff;
    __builtin_memcpy(&key.data[2], &addr, 4);
    struct policy_val *with_port = policy4.lookup(&key);
    key.data[0] = 0;
    key.data[1] = 0;
    struct policy_val *any = policy4.lookup(&key);
    return policy_pick(with_port, any, mode);
}

static __always_inline int policy_check6(const u32 addr[4], u16 port)
{
    u64 mode = aegis_config(CFG_POLICY);
    if (mode == 0) return VERDICT_ALLOW;
    /* ::ffff:a.b.c.d is an IPv4 destination: the IPv4 rules decide. */
    if (addr[0] == 0 && addr[1] == 0 && addr[2] == 0xffff0000) return policy_check4(addr[3], port);
    struct lpm6_key key = {};
    key.prefixlen = 144;
    key.data[0] = port >> 8;
    key.data[1] = port & 0xff;
    __builtin_memcpy(&key.data[2], addr, 16);
    struct policy_val *with_port = policy6.lookup(&key);
    key.data[0] = 0;
    key.data[1] = 0;
    struct policy_val *any = policy6.lookup(&key);
    return policy_pick(with_port, any, mode);
}

#endif

"""Removing what dead runners left, whatever made it: one registry of leftover kinds.

A runner killed with SIGKILL cannot clean up after itself. What it left (network
namespaces with their veths, nft tables, resolv.conf directories and markers;
agent cgroups with their BPF programs; containers, private podman services and
the cgroup v1 directories engines made for them; runtime files; and processes
still inside a namespace or cgroup) is found and removed by :func:`.sweep.sweep`,
which ``aegis-mcp cleanup`` (alias ``aegis-mcp netns cleanup``), every root
runner's start and the ``netmon_namespace_cleanup`` tool all call. Each package
that creates such things contributes a :class:`aegis_mcp.leftovers.LeftoverSource`;
:mod:`.registry` lists them, so a new kind is one entry there, and no source
imports another. Nothing whose owner is alive is ever touched (owners
are checked by pid and start time where it was recorded).
"""

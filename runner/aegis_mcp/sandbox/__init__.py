"""Sandbox backends: where an agent runs and what it may reach.

- :mod:`.policy` — the egress policy (``--allow`` / ``--deny`` specs and the
  ``[policy]`` config section), independent of any backend.
- :mod:`.netns` — a network namespace per agent, built in process through
  netlink (pyroute2's message classes over our own sockets) with one nftables
  table per sandbox; :func:`.netns.create_sandbox` is the entry point.
- :mod:`.dns_proxy` — the small DNS forwarder a netns sandbox resolves
  through, whose answers keep the policy's host-name sets fresh.

Nothing here imports the runner: the supervisor creates a sandbox, passes its
``confine`` steps to the agent's SpawnSpec and tears it down.
"""

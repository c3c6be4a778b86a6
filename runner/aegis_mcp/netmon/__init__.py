"""Network monitoring: what the agent and its children connect to, with bytes and host names.

Data flows one way through the package:

- **sources** turn what they observe into events in the format of DESIGN.md
  (``ts``, ``pid``, ``comm``, ``source``, ``event``, ``remote_addr``, ...).
  :mod:`.preload_log` follows the log written by ``libaegis_hooks.so``
  (``--netmon=preload``); the eBPF and netns tiers feed the same shape.
  Sources know nothing of who reads their events.
- :mod:`.stats` (:class:`~.stats.NetmonStats`) aggregates the events of any
  source: connections, failures, bytes, targets, processes, recent events.
- :mod:`.ops` serves the stats as control operations (``netmon_status``,
  ``netmon_log``), for the runner's socket and the MCP tools. The namespace
  operations that share their ``netmon_`` prefix are the netns sandbox's
  (:mod:`aegis_mcp.sandbox.netns.ops`).

The submodules are imported on demand: nothing here is loaded on an agent
start that does not ask for netmon.
"""

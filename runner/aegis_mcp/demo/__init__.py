"""The bundled stand-in agent: a scripted program that behaves like Claude Code's CLI.

``python -m aegis_mcp.demo [options] [prompt]`` accepts Claude Code's flags, keeps a
per-directory conversation (so ``--continue`` after a hot reload finds it), connects to
the MCP servers it is configured with through the official ``mcp`` client, and runs
scripted scenarios (see :mod:`aegis_mcp.demo.scenario`) that make it hang, spin, grow,
crash, call tools or open connections on demand. The supervisor's tests drive it in place
of a real agent, and users without an agent can try aegis-mcp with it.

Nothing heavy is imported here: the supervisor starts this program on every reload, so
the path without MCP servers uses the standard library only.
"""

"""The container sandbox: each agent start in a fresh container, through the docker SDK.

One module per concern; importing this package imports none of them (the
config file reads :mod:`.settings` on every start, the SDK costs 100 ms):

- :mod:`.settings` — the ``[container]`` config table;
- :mod:`.engine` — finding the engine (Docker Engine, rootless Docker, podman
  rootful or rootless) and its SDK client; :mod:`.service` — a private
  ``podman system service`` for a run where podman has no socket;
- :mod:`.rootless` — what rootless engines need, said exactly where missing;
- :mod:`.image` and :mod:`.build` — the base image and ``aegis-mcp image build``;
- :mod:`.mounts` — what of the host the container sees (the project, the
  agent's CLI, aegis-mcp itself, the runner's socket, ``[container] mounts``);
  :mod:`.volumes` — the agent's home as a named volume per user and agent kind;
- :mod:`.limits` — memory, CPUs, pids, ulimits within the host's hard limits;
- :mod:`.network` — the container's network: an aegis netns sandbox (rootful),
  slirp4netns or none (rootless);
- :mod:`.lifecycle` — one container: create, attach, start, signals, exit, removal;
  :mod:`.relay` — the small program between the runner's PTY and the container;
- :mod:`.sandbox` — :class:`~.sandbox.ContainerSandbox`, one agent's, and
  :mod:`.backend` — what :func:`aegis_mcp.sandbox.get_sandbox` calls;
- :mod:`.leftovers` — the containers of runners that died, found and removed.
"""

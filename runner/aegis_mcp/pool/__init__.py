"""Background agents and the file locks they share.

- ``manager``: ``AgentPool``, the queue and the running agents;
- ``requests``: checking an ``agent_spawn`` request;
- ``records``: what is known about each agent, as plain data;
- ``results``: reading an agent's output for its tail and result;
- ``locks``: ``FileLocks``, advisory locks on paths under the project root;
- ``ops``: the control operations (``agent_*``, ``file_lock_*``) over both;
- ``store``, ``schema``, ``agent_rows``, ``writer``: the SQLite database under
  the state directory that both are written through to, shared by every pool on it;
- ``liveness``: whether a recorded process (pid and start time) still runs;
- ``orphans``: agents whose pool died (orphaned or lost), and stopping them by pid;
- ``worktree``: ``isolation="worktree"``, a git worktree and branch per agent;
- ``sandbox``: the ``sandbox`` option and the hook a host provides sandboxes with.
"""

from __future__ import annotations

from .locks import FileLocks
from .manager import AgentPool
from .ops import pool_ops
from .store import PoolStore

__all__ = ["AgentPool", "FileLocks", "PoolStore", "pool_ops"]

"""Background agents and the file locks they share.

- ``manager``: ``AgentPool``, the queue and the running agents;
- ``records``: what is known about each agent, as plain data;
- ``results``: reading an agent's output for its tail and result;
- ``locks``: ``FileLocks``, advisory locks on paths under the project root;
- ``ops``: the control operations (``agent_*``, ``file_lock_*``) over both.
"""

from __future__ import annotations

from .locks import FileLocks
from .manager import AgentPool
from .ops import pool_ops

__all__ = ["AgentPool", "FileLocks", "pool_ops"]

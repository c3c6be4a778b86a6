"""Who is asking: the run's agent tokens, and how a control request's caller is established.

Every agent of the run (the primary agent, each pool agent) gets a random
token in its environment (``AEGIS_MCP_AGENT_TOKEN``), inherited by its MCP
server, which sends it with each request beside the agent's id. The runner
compares it in constant time with the token it issued for that id: the id
alone is a label anyone can write, the token is the proof. Tokens live in
the runner's memory and in the agents' environments only (``/proc/PID/environ``
is readable by the process's owner and root alone): never in a file, an
argument, an event or a reply.

A request without a token is the user's (``aegis-mcp status``, the dashboard)
unless it comes from a process of the run itself: one that descends from the
runner (every agent's process does: the runner is their subreaper) or that
lives in another pid namespace (a container) is an agent's process that left
its token behind, and is refused.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import secrets
from dataclasses import dataclass

from ..control.authority import POOL, PRIMARY, USER, Caller
from ..control.client import TOKEN_ENV
from ..control.protocol import FORBIDDEN, PRIMARY_AGENT_ID, ControlError, Request

TOKEN_BYTES = 32
_NO_TOKEN = secrets.token_urlsafe(TOKEN_BYTES)
"""Compared against when an id has no token, so that the time taken does not tell."""


class AgentTokens:
    """The tokens issued to the run's agents, by agent id."""

    def __init__(self) -> None:
        self._tokens: dict[str, str] = {}

    def issue(self, agent_id: str) -> str:
        """The token of ``agent_id``: a new one the first time, the same one after (its
        restarts keep their environment)."""
        token = self._tokens.get(agent_id)
        if token is None:
            token = self._tokens[agent_id] = secrets.token_urlsafe(TOKEN_BYTES)
        return token

    def revoke(self, agent_id: str) -> None:
        """``agent_id`` ended: what its processes left behind speaks for nobody."""
        self._tokens.pop(agent_id, None)

    def verify(self, agent_id: str, token: str) -> bool:
        """Whether ``token`` is the one issued to ``agent_id`` (constant time)."""
        expected = self._tokens.get(agent_id, _NO_TOKEN)
        return hmac.compare_digest(expected.encode(), token.encode()) and agent_id in self._tokens

    def into(self, env: dict[str, str], agent_id: str) -> None:
        """Put ``agent_id``'s token in its environment."""
        env[TOKEN_ENV] = self.issue(agent_id)


@dataclass(frozen=True)
class Peer:
    """The process at the other end of a control connection (``SO_PEERCRED``)."""

    pid: int
    uid: int


class Identifier:
    """Establishes the caller of each request of the runner ``runner_pid``."""

    def __init__(self, runner_pid: int, tokens: AgentTokens) -> None:
        self.runner_pid = runner_pid
        self.tokens = tokens
        self._own_pidns = _pid_namespace(runner_pid)

    def claimed(self, request: Request, peer: Peer) -> Caller:
        """The agent a request that names one (``agent``, ``token``) comes from; raises
        FORBIDDEN when the claim is not proven."""
        agent, token = request.agent, request.token
        if token is not None:
            if agent is None:
                raise ControlError(
                    FORBIDDEN,
                    "refused: a request with a token must name its agent ('agent'); the "
                    "aegis-mcp MCP server sends both from AEGIS_MCP_AGENT_ID and "
                    "AEGIS_MCP_AGENT_TOKEN",
                )
            if not self.tokens.verify(agent, token):
                raise ControlError(
                    FORBIDDEN,
                    f"refused: the token does not prove agent {agent!r} (wrong token, or "
                    "that agent has ended): only the runner's own agents, through the "
                    "aegis-mcp MCP server it gave them, act as agents",
                )
            kind = PRIMARY if agent == PRIMARY_AGENT_ID else POOL
            return Caller(kind, agent, peer.uid, peer.pid)
        raise ControlError(
            FORBIDDEN,
            f"refused: the request claims agent {agent!r} without its token: "
            "AEGIS_MCP_AGENT_ID alone is a label, not an identity. Run the tool through "
            "the aegis-mcp MCP server the runner gave the agent (it sends the token), or "
            "as the user, with neither",
        )

    def tokenless(self, peer: Peer) -> Caller | ControlError:
        """Who a connection's requests without a token come from: the user, or (as an
        error to raise) a process of the run's agents that sent no token."""
        if peer.pid > 0 and not self._inside_run(peer):
            return Caller(USER, None, peer.uid, peer.pid)
        return ControlError(
            FORBIDDEN,
            f"refused: pid {peer.pid} is a process of this run's agents (started by the "
            "runner, or in one of its containers) and sent no agent token. Requests from "
            "an agent go through the aegis-mcp MCP server, or `aegis-mcp` in its shell, "
            "which send its AEGIS_MCP_AGENT_TOKEN",
        )

    def _inside_run(self, peer: Peer) -> bool:
        import psutil

        try:
            ancestors = {p.pid for p in psutil.Process(peer.pid).parents()}
        except psutil.Error:
            return True  # gone, or hidden from us: not known to be the user
        if self.runner_pid in ancestors:
            return True
        theirs = _pid_namespace(peer.pid)
        if theirs is None:
            # Root may look at anyone's; only a peer that is root can hide its own.
            return not (peer.uid == 0 and os.geteuid() != 0)
        return theirs != self._own_pidns


def _pid_namespace(pid: int) -> str | None:
    with contextlib.suppress(OSError):
        return os.readlink(f"/proc/{pid}/ns/pid")
    return None

"""The record of who asked the runner for what, and what was refused.

Every control request that names an operation is an event in the run's event
log (``control.request``, or ``control.refused`` at warning level) with who
asked (the caller as established, or the claim that was refused), the
operation and whether it was allowed. The counts and the latest refusals are
part of the state (``authority`` in ``server_status`` and the snapshot), so
that the dashboard and the user see an agent pushing at its limits.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from ..control.authority import Caller
from ..control.protocol import Request
from .identity import Peer

RECENT_REFUSALS = 20
MAX_CALLERS = 256
"""Distinct refused callers counted one by one (a flood of forged ids is one line)."""

Emit = Callable[..., object]


class RequestAudit:
    """Counts requests and refusals, and reports each one as an event."""

    def __init__(self, emit: Emit) -> None:
        self._emit = emit
        self.requests = 0
        self.refused = 0
        self.refused_by: Counter[str] = Counter()
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT_REFUSALS)

    def record(
        self,
        request: Request,
        caller: Caller | None,
        peer: Peer,
        allowed: bool,
        reason: str | None,
    ) -> None:
        """One request: ``caller`` None when its claim to be an agent was refused."""
        self.requests += 1
        who = caller.record() if caller is not None else _claim(request, peer)
        label = caller.label() if caller is not None else _claim_label(who)
        if allowed:
            self._emit(
                "control.request",
                f"{label}: {request.op}",
                "info",
                op=request.op,
                who=who,
                allowed=True,
            )
            return
        self.refused += 1
        key = label if label in self.refused_by or len(self.refused_by) < MAX_CALLERS else "others"
        self.refused_by[key] += 1
        entry = {"ts": time.time(), "who": who, "op": request.op, "reason": reason}
        self.recent.append(entry)
        self._emit(
            "control.refused",
            f"{label}: {request.op} refused: {reason}",
            "warning",
            op=request.op,
            who=who,
            allowed=False,
        )

    def summary(self) -> dict[str, Any]:
        """The ``authority`` part of the state."""
        return {
            "requests": self.requests,
            "refused": self.refused,
            "refused_by": dict(self.refused_by),
            "recent_refusals": list(self.recent),
        }


def _claim(request: Request, peer: Peer) -> dict[str, Any]:
    """Who a refused request said it was (never its token)."""
    return {"kind": "unproven", "claimed": request.agent, "uid": peer.uid, "pid": peer.pid}


def _claim_label(who: dict[str, Any]) -> str:
    claimed = who["claimed"]
    what = f"claiming agent {claimed!r}" if claimed is not None else "without a token"
    return f"pid {who['pid']} (uid {who['uid']}) {what}"

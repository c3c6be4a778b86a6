"""Sandboxes made ahead of time, so that a pool agent's start does not wait for one.

Making a netns sandbox takes tens of milliseconds (namespace, veth, addresses, nftables, DNS
forwarder, monitor), paid at every pool agent start. A :class:`WarmPool` keeps ``size`` of
them ready, made by a background thread, as Kubernetes' agent-sandbox keeps a warm pool of
pods: a start claims one (the sandbox is the run's, with the run's egress policy, and is
marked as the agent's from the claim on) and the thread makes the next. Each sandbox is
given once (a second claim is refused). What was not claimed is torn down with the pool;
what a crashed runner left carries its runner's pid in its name like every other sandbox, and
goes with the next clean-up (the next runner, or ``aegis-mcp netns cleanup``).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import Protocol

WARM_PREFIX = "warm-"
"""The agent part of a warm sandbox's name (``aegis-<pid>-warm-<n>``): pool agents' own ids
are hexadecimal, so the two never meet."""
REFILL_DELAY = 0.5
"""Seconds between a claim and the making of the next sandbox: the claiming agent's start
first (both would share the machine's cores)."""


class Claimable(Protocol):
    """A sandbox that can be made ahead of time."""

    def claim(self, agent_id: str) -> None:
        """Give it to ``agent_id``; raises when it was given already."""

    def teardown(self) -> list[str]:
        """Remove it; what failed."""


class WarmPool:
    """``size`` sandboxes kept ready; ``make(name)`` makes one (in the pool's thread)."""

    def __init__(
        self, make: Callable[[str], Claimable], size: int = 1, refill_delay: float = REFILL_DELAY
    ) -> None:
        self._make = make
        self.size = size
        self.refill_delay = refill_delay
        self._ready: list[Claimable] = []
        self._lock = threading.Lock()
        self._numbers = itertools.count(1)
        self._closed = False
        self._closing = threading.Event()
        self._delay = 0.0
        self._thread: threading.Thread | None = None
        self.failures: list[str] = []
        """Why sandboxes could not be made ahead (the starts then make their own)."""

    @property
    def ready(self) -> int:
        """Sandboxes waiting to be claimed."""
        with self._lock:
            return len(self._ready)

    def fill(self) -> None:
        """Make sandboxes in the background until ``size`` are ready (no wait)."""
        with self._lock:
            if self._closed or self.size <= 0:
                return
            if self._thread is not None and self._thread.is_alive():
                return
            self._thread = threading.Thread(target=self._fill, name="aegis-warm", daemon=True)
            self._thread.start()

    def _fill(self) -> None:
        # After a claim, the agent that claimed is starting: the next sandbox waits for it.
        if self._closing.wait(self._delay):
            return
        while True:
            with self._lock:
                if self._closed or len(self._ready) >= self.size:
                    return
            try:
                sandbox = self._make(f"{WARM_PREFIX}{next(self._numbers)}")
            except Exception as exc:
                self.failures.append(str(exc))
                return
            with self._lock:
                if not self._closed:
                    self._ready.append(sandbox)
                    continue
            sandbox.teardown()  # closed while it was being made
            return

    def claim(self, agent_id: str) -> Claimable | None:
        """A ready sandbox, now ``agent_id``'s, or None when none is ready; the pool starts
        making the next one."""
        with self._lock:
            sandbox = self._ready.pop(0) if self._ready else None
            self._delay = self.refill_delay
        if sandbox is not None:
            sandbox.claim(agent_id)
        self.fill()
        return sandbox

    def close(self) -> list[str]:
        """Stop making sandboxes and tear down those not claimed; what failed."""
        with self._lock:
            self._closed = True
            self._closing.set()
            ready, self._ready = self._ready, []
            thread = self._thread
        if thread is not None:
            thread.join()
        errors: list[str] = []
        for sandbox in ready:
            errors += sandbox.teardown() or []
        return errors

"""The ``none`` backend: the agent runs on the host as it is, with no sandbox."""

from __future__ import annotations

from typing import Any

from ..processes import SpawnSpec
from .base import Sandbox, SandboxRequest


class NoSandbox(Sandbox):
    """Runs the agent's spec unchanged."""

    kind = "none"

    def wrap(self, spec: SpawnSpec) -> SpawnSpec:
        """``spec`` itself."""
        return spec

    def describe(self) -> dict[str, Any]:
        """Only the kind: there is nothing else to say."""
        return {"kind": self.kind}

    def teardown(self) -> list[str]:
        """Nothing was made."""
        return []


def problem() -> str | None:
    """Always available."""
    return None


def create(request: SandboxRequest) -> NoSandbox:
    """The one way there is."""
    return NoSandbox()

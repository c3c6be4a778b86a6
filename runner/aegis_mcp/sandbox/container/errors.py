"""Errors of the container backend, each with a message that says what to do."""

from __future__ import annotations

from ..errors import SandboxError


class EngineMissing(SandboxError):
    """No container engine answers, and none can be started."""


class EngineRefused(SandboxError):
    """The engine answered with an error; the message carries its own words."""


class ImageMissing(SandboxError):
    """The engine has no aegis-mcp image; the message names the command that builds it."""


class RootlessNotReady(SandboxError):
    """A rootless engine cannot run here: the message lists what is missing."""


class NeedsRootfulEngine(SandboxError):
    """What was asked (an egress policy, eBPF, the netns view) needs root and a rootful engine."""

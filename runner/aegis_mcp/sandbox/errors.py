"""Errors a sandbox backend raises, each with a message a user can act on."""

from __future__ import annotations


class SandboxError(RuntimeError):
    """A sandbox could not be created or used."""


class NotRootError(SandboxError):
    """Creating network namespaces, veths and nftables tables needs root."""


class NftablesMissingError(SandboxError):
    """libnftables (Debian package ``nftables``) is not installed."""


class PoolExhaustedError(SandboxError):
    """No free subnet is left in the sandbox address pool."""


class NameClashError(SandboxError):
    """A namespace (or interface) of that name already exists."""


class PolicyError(ValueError):
    """An ``--allow`` / ``--deny`` spec or a ``[policy]`` setting is invalid."""


class SandboxUnavailable(SandboxError):
    """This kind of sandbox cannot be made here (not built in, or the machine lacks it)."""

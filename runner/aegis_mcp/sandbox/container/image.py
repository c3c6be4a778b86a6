"""The image agents run in: whether the engine has it, and the command that builds it when not."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import ImageMissing

if TYPE_CHECKING:
    from .engine import Engine

KEY_LABEL = "aegis-mcp.image-key"
"""On every image `aegis-mcp image build` makes: what it was made from (its cache key)."""


def find_image(engine: Engine, name: str) -> dict[str, Any] | None:
    """The engine's ``inspect`` of image ``name``, or None when it has none."""
    import docker.errors

    from .engine import refused

    try:
        return refused(engine.api.inspect_image, name)
    except docker.errors.NotFound:
        return None


def build_command(engine: Engine, user: str | None) -> str:
    """The command that puts the image into ``engine``."""
    if engine.service is None:
        return f"aegis-mcp image build --engine {engine.url}"
    if engine.rootless and user:
        # debootstrap needs root once; the image then goes into the user's own storage.
        return f"sudo aegis-mcp image build --user {user}"
    return "aegis-mcp image build"


def require_image(engine: Engine, name: str, user: str | None = None) -> dict[str, Any]:
    """The image ``name``; ImageMissing with the command that builds it when absent."""
    found = find_image(engine, name)
    if found is not None:
        return found
    where = f"{'rootless' if engine.rootless else 'rootful'} {engine.kind} at {engine.url}"
    raise ImageMissing(
        f"the image {name!r} is not in the container engine ({where}): build it with "
        f"`{build_command(engine, user)}` (from Debian's packages, no registry needed)"
    )

"""``aegis-mcp --version``: this package's build stamp and the hooks library's."""

from __future__ import annotations

import sys

from .. import __version__
from ..hooks_lib import HooksInfo, find_hooks


def build_stamp() -> tuple[str, str]:
    """(build time, git hash) embedded by `make build`, or unknowns for a bare pip install."""
    try:
        from .. import _build_info  # type: ignore[attr-defined]
    except ImportError:
        return "unknown (not built with make)", "unknown"
    return _build_info.BUILD_TIME, _build_info.GIT_HASH


def mismatch(hooks: HooksInfo) -> str | None:
    """A warning when the hooks library was not built with this package."""
    _, git = build_stamp()
    if hooks.version != __version__ or hooks.git != git:
        return (
            f"WARNING: hooks library version mismatch! aegis-mcp: {__version__} ({git}), "
            f"library: {hooks.version} ({hooks.git}). Rebuild both with: make build "
            "(or make install)"
        )
    return None


def print_version() -> int:
    """Print versions; exit code 0 (a mismatch is a warning, not an error)."""
    built, git = build_stamp()
    print(f"aegis-mcp v{__version__}")
    print(f"  Built: {built}")
    print(f"  Git:   {git}")
    hooks = find_hooks()
    if hooks is None:
        print("\nHooks library: not found (run `make build`; needed for --netmon=preload)")
        return 0
    print(f"\nHooks library: {hooks.path}")
    print(f"  Version: {hooks.version} (git {hooks.git})")
    print(f"  Built:   {hooks.built}")
    warning = mismatch(hooks)
    if warning:
        print(f"\n{warning}", file=sys.stderr)
    return 0

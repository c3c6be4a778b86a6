"""The typer application: every ``aegis-mcp`` command that is not an agent run."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from .. import __version__

HELP = f"""aegis-mcp {__version__}: supervisor and sandbox runner for AI coding agents.

\b
Run an agent under supervision (hot reload, watchdog, MCP tools):
  aegis-mcp AGENT [wrapper options] [agent args...]     AGENT: claude, aider, cursor,
                                                        codex, gemini, demo, or a profile
  aegis-mcp run [wrapper options] -- CMD [ARGS...]      any command as the agent
\b
Wrapper options (anywhere before `--`; everything else goes to the agent):
  --watchdog-timeout=SECS   heartbeat timeout (default 60)
  --no-watchdog             no lockup detection
  --netmon[=ebpf|preload|netns]  record the agent's network connections
                            (plain --netmon: the best mode this machine offers)
  --sandbox=netns           run the agent in its own network namespace (root)
  --sandbox=container       run the agent in a container (podman or Docker, rootless too)
  --allow SPEC, --deny SPEC egress policy: HOST or CIDR, optional :PORT
  --no-inject-mcp           do not give the agent the aegis-mcp MCP server
  --keep-root               under sudo, do not drop to the invoking user
\b
Other forms:
  aegis-mcp --version | -V  versions of this package and of the hooks library
  aegis-mcp --mcp-server    the MCP server (stdio), as the agent starts it
  aegis-mcp dashboard [PID] the live dashboard (also --dashboard): follow a runner
"""

app = typer.Typer(help=HELP, no_args_is_help=True, add_completion=False, rich_markup_mode=None)


def _client(pid: int | None):
    from ..control.client import ControlClient
    from ..control.discovery import find_runner

    return ControlClient(find_runner(pid).socket)


def _fail(message: str) -> None:
    print(f"aegis-mcp: error: {message}", file=sys.stderr)
    raise typer.Exit(2)


@app.command()
def restart(
    pid: Annotated[
        int | None, typer.Argument(help="runner pid (default: the newest runner)")
    ] = None,
    reason: Annotated[
        str, typer.Option(help="why, for the record")
    ] = "restart from the command line",
    prompt: Annotated[
        str | None, typer.Option(help="prompt that replaces the original one")
    ] = None,
) -> None:
    """Hot-reload the agent of a running runner (it continues its conversation)."""
    from ..control.protocol import ControlError

    try:
        with _client(pid) as client:
            result = client.call("restart", reason=reason, prompt=prompt, by="aegis-mcp restart")
    except ControlError as exc:
        _fail(exc.message)
    print(f"restart #{result['restart_number']} requested: {result['message']}")


@app.command()
def status(
    pid: Annotated[
        int | None, typer.Argument(help="runner pid (default: the newest runner)")
    ] = None,
) -> None:
    """Print a running runner's state as JSON."""
    from ..control.protocol import ControlError

    try:
        with _client(pid) as client:
            result = client.call("server_status")
    except ControlError as exc:
        _fail(exc.message)
    print(json.dumps(result, indent=2))


@app.command()
def doctor() -> None:
    """Show what this machine supports and what each missing piece disables."""
    from ..doctor import print_report

    raise typer.Exit(print_report())


@app.command("version")
def version_command() -> None:
    """Same as --version."""
    from .version import print_version

    raise typer.Exit(print_version())


netns_app = typer.Typer(help="aegis network namespaces (aegis-<runner pid>[-agent]).")
app.add_typer(netns_app, name="netns")


@netns_app.command("list")
def netns_list() -> None:
    """List aegis network namespaces with their owner and whether it is alive."""
    from ..sandbox.netns.namespaces import list_namespaces

    entries = list_namespaces()
    if not entries:
        print("no aegis network namespaces")
    for entry in entries:
        state = "alive" if entry["owner_alive"] else "dead (stale)"
        print(f"{entry['name']}\towner {entry['owner_pid']} {state}")


@netns_app.command("cleanup")
def netns_cleanup() -> None:
    """Remove namespaces left by runners that died (never a live runner's). Needs root."""
    from ..sandbox.netns.namespaces import cleanup_namespaces

    try:
        result = cleanup_namespaces()
    except PermissionError as exc:
        _fail(str(exc))
    for name in result["removed"]:
        print(f"removed {name}")
    for name in result["kept"]:
        print(f"kept {name} (its runner is alive)")
    for error in result["errors"]:
        print(f"error: {error}", file=sys.stderr)
    if not (result["removed"] or result["kept"] or result["errors"]):
        print("nothing to clean up")


image_app = typer.Typer(help="The container image of --sandbox=container.")
app.add_typer(image_app, name="image")


@image_app.command("build")
def image_build(
    engine: Annotated[
        str | None, typer.Option(help="engine URL (default: the one a run would use)")
    ] = None,
    user: Annotated[
        str | None, typer.Option(help="build into this user's rootless podman (root only)")
    ] = None,
    suite: Annotated[str, typer.Option(help="Debian suite for debootstrap")] = "bookworm",
    mirror: Annotated[
        str, typer.Option(help="Debian mirror for debootstrap")
    ] = "http://deb.debian.org/debian",
) -> None:
    """Build the base image from Debian's packages (no registry); cached, says how long it took."""
    from ..config import ConfigError, load_config
    from ..paths import config_file
    from ..sandbox.container.build import build_image, engine_for_build
    from ..sandbox.errors import SandboxError

    try:
        settings = load_config(config_file()).container
        connected = engine_for_build(engine, user, settings.engine)
    except (ConfigError, SandboxError) as exc:
        _fail(str(exc))
    try:
        print(f"building {settings.image} in {connected.product()} at {connected.url}")
        report = build_image(
            connected, settings.image, suite=suite, mirror=mirror, say=lambda s: print(s)
        )
    except SandboxError as exc:
        _fail(str(exc))
    finally:
        connected.close()
    print("\n".join(report.lines()))


@app.command()
def cleanup(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="only list what would go")] = False,
) -> None:
    """Remove what runners that died left: containers (every engine found), namespaces."""
    import os

    from ..paths import RunnerFiles, runtime_dir
    from ..sandbox.container.leftovers import cleanup_engines

    files = RunnerFiles(runtime_dir(), os.getpid())
    settings_engine = _configured_engine()
    found = cleanup_engines(settings_engine, (files.engine_socket, files.engine_log), dry_run)
    verb = "would remove" if dry_run else "removed"
    for name in found["removed"]:
        print(f"{verb} container {name}")
    for error in found["errors"]:
        print(f"error: {error}", file=sys.stderr)
    if os.geteuid() == 0 and not dry_run:
        from ..sandbox.netns.namespaces import cleanup_namespaces

        result = cleanup_namespaces()
        for name in result["removed"]:
            print(f"removed namespace {name}")
        for error in result["errors"]:
            print(f"error: {error}", file=sys.stderr)
    if not found["removed"] and not found["errors"]:
        print("no leftover containers")


def _configured_engine() -> str | None:
    from ..config import ConfigError, load_config
    from ..paths import config_file

    try:
        return load_config(config_file()).container.engine
    except ConfigError as exc:
        _fail(str(exc))
    return None

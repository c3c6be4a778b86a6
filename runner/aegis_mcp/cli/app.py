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
  aegis-mcp cleanup         remove what crashed runners left (--dry-run: list it)
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


DRY_RUN = typer.Option("--dry-run", help="list what would be removed, remove nothing")
RUNNER = typer.Option("--runner", metavar="PID", help="only what runner PID left (repeatable)")


@app.command("cleanup")
def cleanup(
    dry_run: Annotated[bool, DRY_RUN] = False, runner: Annotated[list[int] | None, RUNNER] = None
) -> None:
    """Remove everything runners that died left: network namespaces, veths, nft tables,
    cgroups with their BPF programs, containers (in every engine found) and private
    podman services, the processes still in them or still running for a dead runner's
    agent, runtime files, markers. Never a live runner's, nor an orphaned pool agent.
    Needs root for namespaces and cgroups."""
    from ..cleanup.sweep import sweep

    report = sweep(dry_run, runners=set(runner) if runner else None)
    removed = "would remove" if dry_run else "removed"
    for entry in report.removed:
        print(f"{removed} {_describe(entry)}")
    for entry in report.kept:
        killed = entry.get("killed")
        verb = "would kill" if dry_run else "killed"
        extra = f"; {verb} processes {killed} in it" if killed else ""
        print(f"kept {entry['kind']} {entry['id']}: {entry['reason']}{extra}")
    for skipped in report.skipped:
        print(f"not looked at: {skipped['what']} ({skipped['reason']})")
    for error in report.errors:
        where = f"{error['kind']} {error['id']}: " if "id" in error else ""
        print(f"aegis-mcp: error: {where}{error['error']}", file=sys.stderr)
    if not (report.removed or report.kept or report.errors):
        print("nothing to clean up" + (" in what was looked at" if report.skipped else ""))
    if report.errors:
        raise typer.Exit(1)


def _describe(entry: dict) -> str:
    notes = [f"runner {entry['owner_pid']}"] if entry.get("owner_pid") else []
    if entry.get("detail"):
        notes.append(entry["detail"])
    if entry.get("processes"):
        notes.append(f"processes {entry['processes']} killed first")
    return f"{entry['kind']} {entry['id']} ({'; '.join(notes)})" if notes else entry["id"]


@netns_app.command("cleanup")
def netns_cleanup(
    dry_run: Annotated[bool, DRY_RUN] = False, runner: Annotated[list[int] | None, RUNNER] = None
) -> None:
    """Same as `aegis-mcp cleanup`: everything dead runners left, namespaces included."""
    cleanup(dry_run, runner)


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

"""Starting, watching and stopping an agent process and everything it starts.

The agent gets a fresh PTY when the user's terminal is one, plain pipes
otherwise, and always its own session, so that its whole tree can be
signalled and found again (``getsid``) after it dies. The runner is a child
subreaper: orphans of the agent (MCP servers it left behind) are re-parented
to it, reaped by ``ChildReaper`` and killed by ``AgentProcess.cleanup``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import signal
import subprocess
import termios
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .privileges import AgentUser, set_no_new_privs, set_parent_death_signal
from .terminal import set_winsize

if TYPE_CHECKING:
    import psutil

READ_CHUNK = 65536
RUNNER_PID_ENV = "AEGIS_MCP_WRAPPER_PID"
"""The pid of the runner an agent (and everything it starts) belongs to."""
AGENT_ID_ENV = "AEGIS_MCP_AGENT_ID"
"""Names the agent in its environment (and its MCP servers'): ``main`` or a pool agent's id."""
REPEAT_INTERRUPT_SECS = 0.2


def exit_code_of(status: int) -> int:
    """Shell-style exit code of a wait status (128+N for death by signal N)."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def close_detached(fds: list[int]) -> None:
    """Close ``fds`` without waiting for what the kernel does on their last close.

    Releasing some descriptors waits in the kernel: the last perf event of a tracepoint that a
    BPF program is attached to waits for RCU grace periods (~50 ms here), and a process exits
    only once its descriptors are released. So a child process takes them: it closes
    everything else it inherited (it must hold no PTY, pipe or socket open), then these, and
    exits; the caller's copies are closed at once. Whatever happens to the caller, the child's
    exit finishes the release; the runner's reaper (or init) collects it.
    """
    if not fds:
        return
    keep = sorted(set(fds))
    top = max(os.sysconf("SC_OPEN_MAX"), keep[-1] + 1)
    try:
        pid = os.fork()
    except OSError:
        pid = -1
    if pid == 0:  # the child: plain system calls only, then out
        try:
            low = 0
            for fd in keep:
                os.closerange(low, fd)
                low = fd + 1
            os.closerange(low, top)
            for fd in keep:
                os.close(fd)
        finally:
            os._exit(0)
    for fd in keep:
        with contextlib.suppress(OSError):
            os.close(fd)


class ChildReaper:
    """Reaps every child of the runner; futures report the ones we track.

    One reaper for all children, because as a subreaper the runner inherits
    orphans that nobody else would wait for, and a second ``waitpid`` caller
    (asyncio's child watcher) would steal statuses.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._waiting: dict[int, asyncio.Future[int]] = {}
        loop.add_signal_handler(signal.SIGCHLD, self.reap)

    def watch(self, pid: int) -> asyncio.Future[int]:
        """A future resolved with the wait status of child ``pid``.

        Call it right after starting the child, before yielding to the loop:
        SIGCHLD is handled from the loop, so the child cannot be reaped first.
        """
        fut: asyncio.Future[int] = self._loop.create_future()
        self._waiting[pid] = fut
        return fut

    def reap(self) -> None:
        """Collect every child that has exited."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            # Adopted orphans have no future: reaping them is all they need.
            fut = self._waiting.pop(pid, None)
            if fut is not None and not fut.done():
                fut.set_result(status)

    def close(self) -> None:
        """Stop handling SIGCHLD."""
        self._loop.remove_signal_handler(signal.SIGCHLD)


@dataclass(frozen=True)
class SpawnSpec:
    """Everything needed to start one agent process."""

    argv: list[str]
    env: dict[str, str]
    cwd: str
    user: AgentUser
    use_pty: bool
    winsize: bytes | None = None
    stdin_devnull: bool = False
    """Pipes mode only: give the agent /dev/null instead of the runner's stdin."""
    confine: tuple[Callable[[], None], ...] = ()
    """Root-only steps run in the child before the privilege drop (join a cgroup,
    enter a network namespace); each must be safe between fork and exec."""
    die_with_runner: bool = False
    """The process gets SIGKILL when the thread that started it ends (the runner's
    event loop thread, for the primary agent): a runner killed with SIGKILL takes
    its agent along instead of leaving it running unwatched. Pool agents live on
    (``orphaned``) and leave this off."""
    forward_signal: Callable[[int, int], None] | None = None
    """``(pid, signal)``: where else a signal for the agent must go. The runner
    signals the process it started (and its session); a sandbox whose agent runs
    outside that session (in a container, through its engine) passes it on."""
    pass_fds: tuple[int, ...] = ()
    """Descriptors the process inherits (a container's attach connection)."""
    tree: Callable[[], list[int]] | None = None
    """The pids of the agent's processes that are not the started process's
    descendants (a container's, which its engine started): the watchdog counts them."""
    cgroup: str | None = None
    """A cgroup v2 path (as ``/proc/PID/cgroup`` names it) that the agent must live
    under, for a sandbox whose agent is not the started process (a container's
    cgroup is made a child of it); the confine steps put the started process there."""
    agent_argv: list[str] | None = None
    """The agent's own command line where ``argv`` starts something in front of it
    that runs it elsewhere (a container's relay): what status reports show."""

    @property
    def command(self) -> list[str]:
        """The agent's command line as it runs (``agent_argv``, else ``argv``)."""
        return list(self.agent_argv if self.agent_argv is not None else self.argv)


def _child_setup(spec: SpawnSpec) -> Callable[[], None]:
    # Runs in the child between fork and exec: plain syscalls only, no locks,
    # no imports. The order matters: root-only confinement (cgroup, namespaces)
    # first, then the terminal, then the drop to the agent's user, then
    # no_new_privs so that nothing exec'd later can get privileges back, then
    # the parent-death signal, which the kernel clears on a uid or gid change.
    user = spec.user
    parent = os.getpid()

    def setup() -> None:
        for confine in spec.confine:
            confine()
        if spec.use_pty:
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        if user.drop:
            os.setgroups(list(user.groups))
            os.setgid(user.gid)
            os.setuid(user.uid)
            set_no_new_privs()
        if spec.die_with_runner:
            set_parent_death_signal(signal.SIGKILL)
            if os.getppid() != parent:
                # The runner died before the signal was armed: it will not come.
                os.kill(os.getpid(), signal.SIGKILL)

    return setup


class OutputPump:
    """Copies a child's output fd to one of ours, handing each chunk to a callback."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        src: int,
        dst: int,
        on_bytes: Callable[[bytes], None],
    ) -> None:
        self._loop = loop
        self.src = src
        self._dst = dst
        self._on_bytes = on_bytes
        self.closed: asyncio.Future[None] = loop.create_future()
        os.set_blocking(src, False)
        loop.add_reader(src, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self.src, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError as exc:
            # EIO: the PTY's last slave holder is gone.
            if exc.errno != errno.EIO:
                raise
            data = b""
        if not data:
            self.close()
            return
        self._on_bytes(data)
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self._dst, view) :]
            except BlockingIOError:
                time.sleep(0.001)
            except OSError:
                # Our own stdout is gone (closed pipe): keep draining the agent
                # so it is not blocked, but drop what it writes.
                break

    def close(self) -> None:
        """Stop reading and close the source fd."""
        if self.closed.done():
            return
        self._loop.remove_reader(self.src)
        os.close(self.src)
        self.closed.set_result(None)


async def _wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Poll until ``procs`` are gone or zombies; returns those still alive.

    Not ``psutil.wait_procs``: it would ``waitpid`` our (adopted) children and
    race the reaper.
    """
    deadline = time.monotonic() + timeout
    alive = procs
    while alive:
        alive = [p for p in alive if _alive(p)]
        if not alive or time.monotonic() >= deadline:
            break
        await asyncio.sleep(0.02)
    return alive


def _alive(proc: psutil.Process) -> bool:
    import psutil

    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def session_members(leader: int) -> list[psutil.Process]:
    """Live processes other than ``leader`` in the session ``leader`` started."""
    # psutil is imported here, not at start-up: the wrapper is on every agent's path.
    import psutil

    members = []
    for proc in psutil.process_iter():
        with contextlib.suppress(ProcessLookupError, PermissionError, psutil.Error):
            if (
                proc.pid != leader
                and os.getsid(proc.pid) == leader
                and proc.status() != psutil.STATUS_ZOMBIE
            ):
                members.append(proc)
    return members


def kill_session(leader: int, sig: int) -> None:
    """Signal ``leader``'s process group and every other member of its session."""
    import psutil

    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(leader, sig)
    for proc in session_members(leader):
        with contextlib.suppress(psutil.Error):
            proc.send_signal(sig)


class AgentProcess:
    """One running agent process and its output pumps."""

    def __init__(
        self,
        spec: SpawnSpec,
        reaper: ChildReaper,
        on_output: Callable[[bytes], None],
        stdout_fd: int = 1,
        stderr_fd: int = 2,
    ) -> None:
        loop = asyncio.get_running_loop()
        if spec.die_with_runner and threading.current_thread() is not threading.main_thread():
            # The signal would come when this thread ends, not when the runner does.
            raise RuntimeError("an agent that dies with its runner starts from the main thread")
        self.spec = spec
        self.started_at = time.time()
        self.master_fd: int | None = None
        kwargs: dict = dict(
            env=spec.env,
            cwd=spec.cwd,
            start_new_session=True,
            close_fds=True,
            pass_fds=spec.pass_fds,
            preexec_fn=_child_setup(spec),
        )
        self._pumps: list[OutputPump] = []
        if spec.use_pty:
            master, slave = os.openpty()
            if spec.winsize:
                set_winsize(slave, spec.winsize)
            try:
                self._popen = subprocess.Popen(
                    spec.argv, stdin=slave, stdout=slave, stderr=slave, **kwargs
                )
            except BaseException:
                os.close(master)
                raise
            finally:
                os.close(slave)
            self.master_fd = master
            # The master is read through a dup so that the pump can close its
            # fd while input forwarding may still hold the original.
            self._pumps.append(OutputPump(loop, os.dup(master), stdout_fd, on_output))
        else:
            stdin = subprocess.DEVNULL if spec.stdin_devnull else None
            self._popen = subprocess.Popen(
                spec.argv, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs
            )
            assert self._popen.stdout is not None and self._popen.stderr is not None
            for pipe, dst in ((self._popen.stdout, stdout_fd), (self._popen.stderr, stderr_fd)):
                self._pumps.append(OutputPump(loop, os.dup(pipe.fileno()), dst, on_output))
                pipe.close()
        self.pid = self._popen.pid
        self._status = reaper.watch(self.pid)
        self.exit_code: int | None = None

    @property
    def running(self) -> bool:
        """Whether the process has not been reaped yet."""
        return not self._status.done()

    async def wait(self) -> int:
        """Wait for the process to exit; returns its exit code."""
        status = await asyncio.shield(self._status)
        if self.exit_code is None:
            self.exit_code = exit_code_of(status)
            self._popen.returncode = self.exit_code
        return self.exit_code

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to the agent process itself (and where its spec forwards signals)."""
        if self.running:
            self._forward(sig)
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def _forward(self, sig: int) -> None:
        if self.spec.forward_signal is not None:
            # The runner's own delivery must happen even if the sandbox's fails.
            with contextlib.suppress(Exception):
                self.spec.forward_signal(self.pid, sig)

    def session_members(self) -> list[psutil.Process]:
        """Live processes still in the agent's session (its leftovers after it exits)."""
        return session_members(self.pid)

    def tree(self) -> list[psutil.Process]:
        """The agent and its descendants, and the processes its sandbox names (for sampling)."""
        import psutil

        try:
            root = psutil.Process(self.pid)
            found = [root, *root.children(recursive=True)]
        except psutil.Error:
            return []
        if self.spec.tree is not None:
            seen = {p.pid for p in found}
            with contextlib.suppress(Exception):
                for pid in self.spec.tree():
                    if pid not in seen:
                        with contextlib.suppress(psutil.Error):
                            found.append(psutil.Process(pid))
                            seen.add(pid)
        return found

    async def wait_for_exit(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds; True when the process exited."""
        try:
            await asyncio.wait_for(self.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def stop(
        self, grace: float, signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)
    ) -> int:
        """Stop the agent: each of ``signals`` with ``grace`` seconds, then SIGKILL its session.

        SIGINT is sent twice, a moment apart: interactive agents (Claude Code,
        the demo) take one Ctrl-C as "interrupt what you are doing" and exit on
        the second, which is the clean way out that keeps their session state.
        """
        for sig in signals:
            if not self.running:
                break
            self.send_signal(sig)
            if sig == signal.SIGINT:
                repeat_after = min(REPEAT_INTERRUPT_SECS, grace)
                if await self.wait_for_exit(repeat_after):
                    break
                self.send_signal(sig)
                if await self.wait_for_exit(grace - repeat_after):
                    break
            elif await self.wait_for_exit(grace):
                break
        if self.running:
            self.kill_session(signal.SIGKILL)
        return await self.wait()

    def kill_session(self, sig: int) -> None:
        """Signal the agent's process group and every other member of its session."""
        self._forward(sig)
        kill_session(self.pid, sig)

    def _may_have_leftovers(self) -> bool:
        # Without a terminal there is no job control, so descendants stay in
        # the agent's process group unless they move themselves: an empty
        # group spares the scan of every process (and importing psutil).
        if self.spec.use_pty:
            return True
        try:
            os.killpg(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    async def cleanup(self, grace: float = 1.0) -> None:
        """After the agent exited: end its leftovers, then drain and close its output."""
        leftovers = self.session_members() if self._may_have_leftovers() else []
        if leftovers:
            import psutil

            for proc in leftovers:
                with contextlib.suppress(psutil.Error):
                    proc.terminate()
            alive = await _wait_gone(leftovers, grace)
            for proc in alive:
                with contextlib.suppress(psutil.Error):
                    proc.kill()
        pending = [p.closed for p in self._pumps if not p.closed.done()]
        if pending:
            await asyncio.wait(pending, timeout=grace)
        for pump in self._pumps:
            pump.close()
        if self.master_fd is not None:
            os.close(self.master_fd)
            self.master_fd = None

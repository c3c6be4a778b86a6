"""Who the agent runs as, and dropping root before it starts.

Started through sudo, the runner does its root-only set-up and then starts
the agent as the invoking user: supplementary groups from the group
database, gid then uid (all three of real, effective and saved), that user's
HOME/USER/LOGNAME/SHELL, and ``PR_SET_NO_NEW_PRIVS`` so that nothing the
agent runs (setuid binaries, file capabilities) can get root back. Changing
every uid away from 0 clears the capability sets, so none is left.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import pwd
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38
PR_SET_CHILD_SUBREAPER = 36

_libc = ctypes.CDLL(None, use_errno=True)
T = TypeVar("T")

# setgroups, setfsgid, setfsuid: called as raw syscalls, because libc's wrappers of
# setgroups (and setuid & co.) change the credentials of every thread of the process.
_FS_CREDENTIAL_SYSCALLS = {"x86_64": (116, 123, 122), "aarch64": (159, 152, 151)}
_UNCHANGED = -1


@dataclass(frozen=True)
class AgentUser:
    """The account the agent will run as."""

    uid: int
    gid: int
    name: str
    home: str
    shell: str
    groups: tuple[int, ...] = field(default=())
    drop: bool = False
    """True when the runner is root and the agent must not be."""
    notice: str = ""
    """A line to tell the user about this choice (empty when unremarkable)."""

    @property
    def is_root(self) -> bool:
        return self.uid == 0

    def env(self) -> dict[str, str]:
        """Environment entries that describe this user."""
        env = {"HOME": self.home, "USER": self.name, "LOGNAME": self.name, "SHELL": self.shell}
        runtime = f"/run/user/{self.uid}"
        if self.drop and os.path.isdir(runtime):
            env["XDG_RUNTIME_DIR"] = runtime
        return env


class PrivilegeError(RuntimeError):
    """The requested user cannot be resolved."""


def _from_passwd(entry: pwd.struct_passwd, drop: bool, notice: str = "") -> AgentUser:
    groups = tuple(os.getgrouplist(entry.pw_name, entry.pw_gid))
    return AgentUser(
        uid=entry.pw_uid,
        gid=entry.pw_gid,
        name=entry.pw_name,
        home=entry.pw_dir,
        shell=entry.pw_shell or "/bin/sh",
        groups=groups,
        drop=drop,
        notice=notice,
    )


def resolve_agent_user(keep_root: bool, environ: dict[str, str] | None = None) -> AgentUser:
    """Decide the agent's account from our euid and the sudo variables."""
    env = os.environ if environ is None else environ
    euid = os.geteuid()
    if euid != 0:
        try:
            return _from_passwd(pwd.getpwuid(euid), drop=False)
        except KeyError:
            return AgentUser(euid, os.getegid(), str(euid), env.get("HOME", "/"), "/bin/sh")
    sudo_uid = env.get("SUDO_UID", "")
    if keep_root:
        return _from_passwd(
            pwd.getpwuid(0),
            drop=False,
            notice="--keep-root: the agent runs as root (only for debugging)",
        )
    if sudo_uid.isdigit() and int(sudo_uid) != 0:
        try:
            entry = pwd.getpwuid(int(sudo_uid))
        except KeyError:
            raise PrivilegeError(f"SUDO_UID={sudo_uid} is not a known user") from None
        sudo_gid = env.get("SUDO_GID", "")
        if sudo_gid.isdigit() and int(sudo_gid) != entry.pw_gid:
            entry = pwd.struct_passwd((*entry[:3], int(sudo_gid), *entry[4:]))
        return _from_passwd(entry, drop=True)
    return _from_passwd(
        pwd.getpwuid(0),
        drop=False,
        notice=(
            "running as root without a sudo user: the agent runs as root and "
            "permission-skipping flags it refuses as root are not passed"
        ),
    )


def can_enter(path: str, user: AgentUser) -> bool:
    """Whether ``user`` can make directory ``path`` its working directory.

    Asked with that user's own credentials, so that every rule the kernel
    applies counts (modes of each directory on the way, ACLs, mount options):
    a forked child drops to the user's groups, gid and uid and tries ``chdir``.
    The answer comes back through a pipe, not the exit status: the runner's
    SIGCHLD reaper may collect the child first when this runs off the event
    loop's thread.
    """
    if not user.drop:
        return os.path.isdir(path) and os.access(path, os.X_OK, effective_ids=True)
    read_end, write_end = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(read_end)
        os.close(write_end)
        return False
    if pid == 0:  # the child: plain syscalls, then out without running any cleanup
        try:
            signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
            os.close(read_end)
            os.setgroups(list(user.groups))
            os.setresgid(user.gid, user.gid, user.gid)
            os.setresuid(user.uid, user.uid, user.uid)
            os.chdir(path)
            os.write(write_end, b"ok")
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        answer = os.read(read_end, 2)
    finally:
        os.close(read_end)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
    return answer == b"ok"


def _prctl(option: int, value: int) -> None:
    if _libc.prctl(option, value, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def as_user(user: AgentUser, action: Callable[[], T]) -> T:
    """``action()``, with what the kernel lets ``user`` open: their uid, gid and groups.

    The check is the kernel's own (modes of every directory on the way, ACLs, mount
    options), asked in process: ``action`` runs in a thread of its own whose
    filesystem uid, gid and groups become the user's. Changing the filesystem uid
    away from 0 drops the capabilities that bypass file permissions, for that thread
    only, and the credentials end with the thread. Without a privilege drop,
    ``action`` runs as it is. Raises what ``action`` raises; OSError when the
    credentials cannot be taken.
    """
    if not user.drop:
        return action()
    numbers = _FS_CREDENTIAL_SYSCALLS.get(platform.machine())
    if numbers is None:
        raise OSError(f"cannot check files as {user.name} on {platform.machine()}")
    setgroups, setfsgid, setfsuid = numbers
    outcome: list[tuple[bool, object]] = []

    def run() -> None:
        try:
            groups = (ctypes.c_uint * len(user.groups))(*user.groups)
            if _libc.syscall(setgroups, len(user.groups), groups) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setgroups: {os.strerror(err)}")
            # Neither call reports failure: read back what took (an invalid id changes nothing).
            _libc.syscall(setfsgid, user.gid)
            _libc.syscall(setfsuid, user.uid)
            taken = (_libc.syscall(setfsgid, _UNCHANGED), _libc.syscall(setfsuid, _UNCHANGED))
            if taken != (user.gid, user.uid):
                raise OSError(f"cannot take the credentials of {user.name}")
            outcome.append((True, action()))
        except BaseException as exc:
            outcome.append((False, exc))

    thread = threading.Thread(target=run, name="aegis-as-user")
    thread.start()
    thread.join()
    ok, value = outcome[0]
    if not ok:
        raise value  # type: ignore[misc]
    return value  # type: ignore[return-value]


def set_no_new_privs() -> None:
    """PR_SET_NO_NEW_PRIVS for this process (inherited by everything it starts)."""
    _prctl(PR_SET_NO_NEW_PRIVS, 1)


def set_parent_death_signal(sig: int) -> None:
    """PR_SET_PDEATHSIG: ``sig`` when the thread that forked this process ends.

    Set it after the privilege drop (a uid or gid change clears it); exec keeps it,
    but for a set-user-ID program (which no_new_privs makes an ordinary one).
    """
    _prctl(PR_SET_PDEATHSIG, sig)


def become_subreaper() -> bool:
    """Adopt orphaned descendants so that an agent's leftovers can be found and reaped."""
    return _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0

"""``privileges.can_enter``: the kernel's answer for the agent's user, asked in process
(a forked child with that user's credentials tries ``chdir``), no shell."""

from __future__ import annotations

import asyncio
import grp
import os
import pwd
import shutil
import tempfile
from pathlib import Path

import psutil
import pytest

from aegis_mcp.privileges import AgentUser, can_enter
from aegis_mcp.processes import ChildReaper


@pytest.fixture
def user(throwaway_user) -> AgentUser:
    name = throwaway_user[0]
    entry = pwd.getpwnam(name)
    return AgentUser(
        uid=entry.pw_uid,
        gid=entry.pw_gid,
        name=name,
        home=entry.pw_dir,
        shell="/bin/sh",
        groups=tuple(os.getgrouplist(name, entry.pw_gid)),
        drop=True,
    )


@pytest.fixture
def tree(throwaway_user):
    """Directories with modes that let the user in, or not."""
    base = Path(tempfile.mkdtemp(prefix="aegis-enter-"))
    os.chmod(base, 0o755)
    extra_gid = grp.getgrnam(throwaway_user[1]).gr_gid
    (base / "open").mkdir(mode=0o755)
    (base / "private").mkdir(mode=0o700)
    (base / "private" / "inner").mkdir(mode=0o777)
    (base / "by-group").mkdir(mode=0o710)
    os.chown(base / "by-group", 0, extra_gid)  # only through the supplementary group
    (base / "file").write_text("x")
    try:
        yield base
    finally:
        shutil.rmtree(base)


def test_the_users_own_credentials_decide(user: AgentUser, tree: Path) -> None:
    assert can_enter(str(tree / "open"), user)
    assert can_enter(str(tree / "by-group"), user)  # supplementary groups count
    assert not can_enter(str(tree / "private"), user)
    assert not can_enter(str(tree / "private" / "inner"), user)  # a parent denies search
    assert not can_enter(str(tree / "file"), user)
    assert not can_enter(str(tree / "missing"), user)
    # The answer is the user's, not root's: root may enter all of them.
    root = AgentUser(0, 0, "root", "/root", "/bin/sh")
    assert can_enter(str(tree / "private" / "inner"), root)


def test_it_works_beside_the_runners_child_reaper(user: AgentUser, tree: Path) -> None:
    """The reaper collects every child on SIGCHLD; the answer must not depend on the exit
    status it may take first (asked from a worker thread while the loop runs)."""

    async def ask() -> tuple[bool, bool]:
        reaper = ChildReaper(asyncio.get_running_loop())
        try:
            yes = await asyncio.to_thread(can_enter, str(tree / "open"), user)
            no = await asyncio.to_thread(can_enter, str(tree / "private"), user)
            await asyncio.sleep(0.05)  # let the reaper run
            return yes, no
        finally:
            reaper.close()

    before = {child.pid for child in psutil.Process().children()}
    assert asyncio.run(ask()) == (True, False)
    # No child of its own left behind, running or a zombie (other tests' may be there).
    assert {child.pid for child in psutil.Process().children()} <= before

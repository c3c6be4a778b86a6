"""Git worktrees for ``isolation="worktree"``: each pool agent on its own branch.

The agent works in ``<worktrees dir>/<agent_id>``, a worktree of its working
directory's repository on a new branch ``aegis/<agent_id>`` made from the
current ``HEAD``; the rest of the tree (and the user's checkout) is untouched.
The worktree is kept after the agent ends, for the user to review and merge::

    git merge aegis/<agent_id>          # or cherry-pick, or diff against it
    git worktree remove <worktree path> # --force if it has uncommitted changes
    git branch -D aegis/<agent_id>

Git runs as the agent's user (so that the repository gains no files owned by
root, and git's ownership check passes), without a shell, and is reaped by the
host's ``ChildReaper`` like every other child (a second ``waitpid`` caller would
steal exit statuses).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..control import validate
from ..privileges import AgentUser
from ..processes import ChildReaper, exit_code_of
from ..safe_paths import UnsafeDirectoryError, private_dir

ISOLATION_KINDS = ("none", "worktree")
BRANCH_PREFIX = "aegis/"
MAX_LISTED_CHANGES = 200
_GIT_ENV_DROP = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY")


class GitFailed(Exception):
    """A git command exited non-zero; the message is its stderr."""


@dataclass(frozen=True)
class Worktree:
    """A worktree made for one agent."""

    path: str
    branch: str
    base_commit: str
    cwd: str
    """Where the agent runs: the requested directory's counterpart in the worktree."""
    repository: str
    """The top of the repository it was made from."""


def find_git() -> str:
    """The git executable; INVALID_ARGUMENT when there is none."""
    git = shutil.which("git")
    if git is None:
        raise validate.invalid(
            'isolation="worktree" needs git, which was not found on PATH: install git, '
            'or use isolation="none"'
        )
    return git


def check_isolation(value: object) -> str:
    """``value`` as an ``isolation`` argument."""
    kind = validate.string("isolation", value)
    if kind not in ISOLATION_KINDS:
        raise validate.invalid(
            f"isolation must be one of {', '.join(ISOLATION_KINDS)}, got {kind!r}"
        )
    return kind


class Git:
    """Runs git commands for the pool."""

    def __init__(self, reaper: ChildReaper, user: AgentUser) -> None:
        self._reaper = reaper
        self._user = user
        self.git: str | None = None
        """The git executable, looked up by ``create``."""

    def _env(self) -> dict[str, str]:
        # A runner started from a git hook would otherwise point every command at that repo.
        env = {k: v for k, v in os.environ.items() if k not in _GIT_ENV_DROP}
        env.update(GIT_TERMINAL_PROMPT="0", LC_ALL="C")
        if self._user.drop:
            env.update(self._user.env())
        return env

    async def run(self, cwd: str, *args: str) -> str:
        """Output of ``git args`` run in ``cwd``; GitFailed when it fails."""
        git = self.git or find_git()
        extra: dict[str, Any] = {}
        if self._user.drop:
            extra = {
                "user": self._user.uid,
                "group": self._user.gid,
                "extra_groups": list(self._user.groups),
            }
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            # Files, not pipes: nothing to drain while we wait, whatever git prints.
            proc = subprocess.Popen(
                [git, *args],
                cwd=cwd,
                env=self._env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                close_fds=True,
                **extra,
            )
            waiting = self._reaper.watch(proc.pid)
            code = exit_code_of(await waiting)
            proc.returncode = code
            out.seek(0)
            err.seek(0)
            stdout = out.read().decode("utf-8", "replace")
            stderr = err.read().decode("utf-8", "replace").strip()
        if code != 0:
            raise GitFailed(stderr or f"git {args[0]} exited with code {code}")
        return stdout

    async def create(self, cwd: str, agent_id: str, worktrees_dir: Path) -> Worktree:
        """A new worktree and branch for ``agent_id`` from the HEAD of ``cwd``'s repository.

        INVALID_ARGUMENT when ``cwd`` is not in a git repository with a commit.
        """
        # Looked up on every request: git may have been installed (or removed) since.
        self.git = find_git()
        try:
            top = (await self.run(cwd, "rev-parse", "--show-toplevel")).strip()
        except (GitFailed, OSError) as exc:
            raise validate.invalid(
                f"working_directory {cwd} is not inside a git repository (git: {exc}), and "
                'isolation="worktree" needs one: use a repository, or isolation="none"'
            ) from None
        try:
            base = (await self.run(cwd, "rev-parse", "--verify", "HEAD^{commit}")).strip()
        except GitFailed:
            raise validate.invalid(
                f'the git repository {top} has no commit yet, so isolation="worktree" has '
                "nothing to branch from: commit something first"
            ) from None
        relative = os.path.relpath(os.path.realpath(cwd), os.path.realpath(top))
        # git runs as the agent's user: the directory is that user's, and so must be
        # every directory above it (or root's), or a third user could redirect it.
        user = self._user
        try:
            private_dir(worktrees_dir, owner=(user.uid, user.gid) if user.drop else None)
        except UnsafeDirectoryError as exc:
            raise validate.invalid(
                f"refusing the worktree directory {worktrees_dir}: {exc}"
            ) from None
        path = worktrees_dir / agent_id
        branch = BRANCH_PREFIX + agent_id
        try:
            await self.run(cwd, "worktree", "add", "--quiet", "-b", branch, str(path), base)
        except (GitFailed, OSError) as exc:
            raise validate.invalid(f"git could not create the worktree {path}: {exc}") from None
        inside = path if relative == "." else path / relative
        return Worktree(str(path), branch, base, str(inside), top)

    async def remove(self, tree: Worktree) -> None:
        """Undo ``create`` (the agent never ran); best effort."""
        for args in (
            ("worktree", "remove", "--force", tree.path),
            ("branch", "-D", tree.branch),
        ):
            with contextlib.suppress(GitFailed, OSError):
                await self.run(tree.repository, *args)

    async def changes(self, worktree: str, base_commit: str) -> dict[str, Any]:
        """What the agent left: commits on its branch past the base, and uncommitted files."""
        try:
            ahead = int(await self.run(worktree, "rev-list", "--count", f"{base_commit}..HEAD"))
            head = (await self.run(worktree, "rev-parse", "HEAD")).strip()
            status = await self.run(worktree, "status", "--porcelain", "--untracked-files=all")
        except (GitFailed, OSError, ValueError) as exc:
            return {"error": f"could not read the worktree {worktree}: {exc}"}
        lines = [line for line in status.splitlines() if line.strip()]
        return {
            "commits_ahead": ahead,
            "head": head,
            "uncommitted_count": len(lines),
            "uncommitted": lines[:MAX_LISTED_CHANGES],
        }

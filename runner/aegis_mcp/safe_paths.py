"""Directories that nobody but root and their owner can change, checked all the way up.

aegis-mcp runs as root under sudo and writes pid-named files: a directory that
another user can write to, or one reached through a name another user can
change, would let that user point root's writes anywhere. So a directory is
used only if every name on its path can be changed by root or its owner alone,
which is OpenSSH's ``safe_path`` rule: each directory from ``/`` down is owned
by root or the owner and not group or world writable. A sticky directory
(``/tmp``) may be world writable on the way, as the CERT secure-directory rule
allows: others cannot rename or remove what they do not own there, and the
next name must be ours or root's. The directory itself must be owned by its
owner and writable by nobody else. Nothing is repaired in place: a bad
directory is refused with one message that says which name is wrong.

The walk opens every component relative to its parent's file descriptor with
``O_NOFOLLOW``, so what is checked is what is used. Symbolic links on the way
are followed only when root or this process's own user made them (another
user's link could be swapped at any time); the directory itself must not be
one.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import stat
from collections.abc import Iterator
from pathlib import Path

_MAX_SYMLINKS = 40  # the kernel's own limit (ELOOP)
_PATH_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_OPEN_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafeDirectoryError(RuntimeError):
    """A directory we would keep private files in is not private (or cannot be made)."""


def _user(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _check(info: os.stat_result, where: str, owner: int, final: bool) -> None:
    """Refuse a directory on the path that someone other than root or ``owner`` can change."""
    if final and info.st_uid != owner:
        raise UnsafeDirectoryError(
            f"{where} is owned by {_user(info.st_uid)}, not by {_user(owner)}"
        )
    if not final and info.st_uid not in (0, owner):
        allowed = "root" if owner == 0 else f"root or {_user(owner)}"
        raise UnsafeDirectoryError(
            f"{where} is owned by {_user(info.st_uid)}: only {allowed} "
            "may own the directories on the way to it"
        )
    mode = stat.S_IMODE(info.st_mode)
    sticky_on_the_way = not final and mode & stat.S_ISVTX
    if mode & 0o022 and not sticky_on_the_way:
        who = "others" if mode & 0o002 else "its group"
        raise UnsafeDirectoryError(f"{where} is writable by {who} (mode {mode:04o})")


def _components(path: str) -> list[str]:
    return [part for part in path.split("/") if part not in ("", ".")]


@contextlib.contextmanager
def open_private_dir(
    path: Path | str, mode: int = 0o700, owner: tuple[int, int] | None = None
) -> Iterator[int]:
    """A file descriptor of directory ``path``, made (with its missing parents) if needed.

    ``owner`` (uid, gid; default: this process's) must own it; directories made
    here get ``mode`` exactly and that owner (``fchown`` on the new descriptor,
    never through a path). An existing directory that passes the checks gets
    ``mode`` too. Raises UnsafeDirectoryError naming the component at fault.
    """
    uid, gid = owner if owner is not None else (os.geteuid(), os.getegid())
    # Links are followed only when nobody less trusted than this process can
    # have made them: root acting for a user does not follow the user's links.
    link_owners = {0, os.geteuid()}
    text = os.path.abspath(os.fspath(path))
    names = _components(text)
    stack: list[tuple[int, str]] = []
    here = "/"
    try:
        root = os.open("/", _PATH_FLAGS)
        stack.append((root, "/"))
        _check(os.fstat(root), "/", uid, final=not names)
        links = 0
        while names:
            name = names.pop(0)
            parent, where = stack[-1]
            if name == "..":
                if len(stack) > 1:
                    os.close(stack.pop()[0])
                continue
            final = not names
            here = os.path.join(where, name)
            made = False
            try:
                info = os.stat(name, dir_fd=parent, follow_symlinks=False)
            except FileNotFoundError:
                try:
                    os.mkdir(name, mode, dir_fd=parent)
                except FileExistsError:  # made by someone else meanwhile: look again
                    names.insert(0, name)
                    continue
                made = True
            else:
                if stat.S_ISLNK(info.st_mode):
                    target = os.readlink(name, dir_fd=parent)
                    if final:
                        raise UnsafeDirectoryError(
                            f"{here} is a symbolic link (to {target}), not a directory"
                        )
                    if info.st_uid not in link_owners:
                        raise UnsafeDirectoryError(
                            f"{here} is a symbolic link made by {_user(info.st_uid)}, "
                            "who could point it elsewhere at any time"
                        )
                    links += 1
                    if links > _MAX_SYMLINKS:
                        raise UnsafeDirectoryError(f"{text}: too many symbolic links")
                    names[:0] = _components(target)
                    if target.startswith("/"):
                        while len(stack) > 1:
                            os.close(stack.pop()[0])
                    continue
                if not stat.S_ISDIR(info.st_mode):
                    raise UnsafeDirectoryError(f"{here} exists and is not a directory")
            fd = os.open(name, _OPEN_FLAGS if final or made else _PATH_FLAGS, dir_fd=parent)
            stack.append((fd, here))
            if made:
                os.fchmod(fd, mode)  # exactly, whatever the umask
                if (uid, gid) != (os.geteuid(), os.getegid()):
                    os.fchown(fd, uid, gid)
            info = os.fstat(fd)
            _check(info, here, uid, final)
            if final and not made and stat.S_IMODE(info.st_mode) != mode:
                # Ours and writable by nobody else (checked): only its read bits change.
                os.fchmod(fd, mode)
    except OSError as exc:
        for fd, _ in stack:
            os.close(fd)
        raise UnsafeDirectoryError(f"{here}: {exc.strerror or exc}") from None
    except BaseException:
        for fd, _ in stack:
            os.close(fd)
        raise
    for fd, _ in stack[:-1]:
        os.close(fd)
    try:
        yield stack[-1][0]
    finally:
        os.close(stack[-1][0])


def private_dir(path: Path | str, mode: int = 0o700, owner: tuple[int, int] | None = None) -> Path:
    """``path``, made and checked as :func:`open_private_dir` does; returns it absolute."""
    with open_private_dir(path, mode, owner):
        pass
    return Path(os.path.abspath(os.fspath(path)))


# Kernel pseudo-filesystems: their directories are views of processes and
# devices, never a place for an agent to work in (``/proc/self`` is another
# process's directory depending on who looks).
PSEUDO_FILESYSTEMS = frozenset(
    {
        "proc",
        "sysfs",
        "devtmpfs",
        "devpts",
        "cgroup",
        "cgroup2",
        "debugfs",
        "tracefs",
        "securityfs",
        "bpf",
        "pstore",
        "configfs",
        "fusectl",
        "mqueue",
        "hugetlbfs",
        "efivarfs",
        "binfmt_misc",
        "nsfs",
    }
)


_OCTAL = re.compile(r"\\([0-7]{3})")


def filesystem_type(path: str) -> str | None:
    """The type of the filesystem mounted where ``path`` (resolved) lives, from mountinfo."""
    real = os.path.realpath(path)
    best, kind = "", None
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                fields = left.split()
                if len(fields) < 5 or not right:
                    continue
                # Mount points escape spaces and the like as octal (\040).
                point = _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), fields[4])
                inside = real == point or real.startswith(point.rstrip("/") + "/")
                if inside and len(point) >= len(best):
                    best, kind = point, right.split()[0]
    except OSError:
        return None
    return kind

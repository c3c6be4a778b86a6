"""``aegis-mcp image build``: the base image from Debian's packages, with no registry.

Three steps, each cached (DESIGN.md fact 7):

1. ``debootstrap --variant=minbase`` of the packages in ``images/base/packages``,
   packed as a tar under ``~/.cache/aegis-mcp/images/`` (root only: debootstrap
   makes device nodes and chroots; about a minute);
2. the tar imported into the engine as ``aegis-mcp-rootfs:<key>`` (a few seconds);
3. ``images/base/Containerfile`` built on top as the image (``aegis-mcp-base``),
   labelled with its key so that the next build knows it is up to date.

The keys are hashes of what each step is made from (suite, mirror, package
list; then the Containerfile), so a change anywhere rebuilds only what it
affects. Builds of the same cache are serialised by a lock file.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import SandboxError
from .image import KEY_LABEL, find_image

if TYPE_CHECKING:
    from .engine import Engine

ROOTFS_REPOSITORY = "aegis-mcp-rootfs"
DEFAULT_SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# Nothing an agent needs at run time, and a third of the size: documentation,
# manual pages, translations, apt's downloaded packages and lists, device nodes
# (the engine makes /dev).
_SKIPPED = (
    "./usr/share/doc/",
    "./usr/share/man/",
    "./usr/share/info/",
    "./usr/share/locale/",
    "./var/cache/apt/archives/",
    "./var/lib/apt/lists/",
    "./dev/",
)


class BuildError(SandboxError):
    """The image could not be built; the message says which step and why."""


@dataclass
class BuildReport:
    """What a build did: each step with its time, and the image it made."""

    image: str
    image_id: str = ""
    steps: list[tuple[str, float, bool]] = field(default_factory=list)
    """(step, seconds, done from cache)."""
    seconds: float = 0.0

    def lines(self) -> list[str]:
        """The report for the user, one line per step and a total."""
        out = [
            f"  {name}: {'cached' if cached else 'done'} in {secs:.1f} s"
            for name, secs, cached in self.steps
        ]
        out.append(f"{self.image} ({self.image_id[:19]}) ready in {self.seconds:.1f} s")
        return out


def images_dir() -> Path:
    """Where the Containerfiles are: ``$AEGIS_MCP_IMAGES``, the source tree, or the install."""
    override = os.environ.get("AEGIS_MCP_IMAGES")
    candidates = [Path(override)] if override else []
    candidates.append(Path(__file__).resolve().parents[4] / "images")
    candidates.append(Path(sys.prefix) / "share" / "aegis-mcp" / "images")
    for candidate in candidates:
        if (candidate / "base" / "Containerfile").is_file():
            return candidate
    raise BuildError(
        "the image definitions (images/base/Containerfile) were not found in "
        + ", ".join(str(c) for c in candidates)
        + " (set AEGIS_MCP_IMAGES to the images/ directory of the source tree)"
    )


def read_packages(path: Path) -> list[str]:
    """The package list: one name a line, ``#`` comments and blank lines ignored."""
    names = []
    for line in path.read_text().splitlines():
        name = line.split("#", 1)[0].strip()
        if name:
            names.append(name)
    return names


def _digest(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()[:16]


def rootfs_key(suite: str, mirror: str, packages: list[str]) -> str:
    """The cache key of a root file system."""
    return _digest("minbase", suite, mirror, *sorted(packages))


def cache_dir() -> Path:
    """``~/.cache/aegis-mcp/images`` (made 0700)."""
    from platformdirs import user_cache_dir

    path = Path(user_cache_dir("aegis-mcp")) / "images"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    with open(directory / "build.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _skip(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    path = info.name if info.name.startswith("./") else f"./{info.name}"
    for prefix in _SKIPPED:
        if path.startswith(prefix) and path != prefix.rstrip("/"):
            return None
    return info


def make_rootfs(
    directory: Path, suite: str, mirror: str, packages: list[str], say: Callable[[str], None]
) -> Path:
    """The cached root file system tar for these packages, made with debootstrap if absent."""
    key = rootfs_key(suite, mirror, packages)
    tar_path = directory / f"rootfs-{key}.tar"
    if tar_path.exists():
        return tar_path
    if os.geteuid() != 0:
        raise BuildError(
            "making the root file system needs root (debootstrap): run `sudo aegis-mcp image "
            "build`; with `--user NAME` the image goes into NAME's rootless podman"
        )
    if shutil.which("debootstrap") is None:
        raise BuildError("debootstrap is not installed (apt-get install debootstrap)")
    work = Path(tempfile.mkdtemp(prefix="rootfs-", dir=directory))
    try:
        say(f"debootstrap {suite} from {mirror} ({len(packages)} packages) ...")
        command = [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(packages)}",
            suite,
            str(work / "root"),
            mirror,
        ]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            tail = (result.stdout + result.stderr).strip().splitlines()[-5:]
            raise BuildError(f"debootstrap failed (exit {result.returncode}): {' | '.join(tail)}")
        partial = work / "rootfs.tar"
        with tarfile.open(partial, "w") as tar:
            tar.add(work / "root", arcname=".", filter=_skip)
        os.replace(partial, tar_path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return tar_path


def _import_rootfs(engine: Engine, tar_path: Path, key: str) -> str:
    from .engine import refused

    reference = f"{ROOTFS_REPOSITORY}:{key}"
    if find_image(engine, reference) is not None:
        return reference
    output = refused(engine.api.import_image_from_file, str(tar_path), repository=reference)
    # podman's compatible API tags an import ":latest" whatever it is asked: tag it ourselves.
    image_id = _last_status(output)
    refused(engine.api.tag, image_id, ROOTFS_REPOSITORY, key)
    return reference


def _last_status(output: str | bytes) -> str:
    import json

    text = output.decode() if isinstance(output, bytes) else output
    for line in reversed(text.strip().splitlines()):
        with contextlib.suppress(ValueError):
            status = json.loads(line).get("status", "")
            if status.startswith("sha256:"):
                return status
    raise BuildError(f"the engine's import gave no image id: {text[-200:]}")


def build_image(
    engine: Engine,
    name: str,
    *,
    suite: str = DEFAULT_SUITE,
    mirror: str = DEFAULT_MIRROR,
    say: Callable[[str], None] = print,
) -> BuildReport:
    """Build (or find up to date) image ``name`` in ``engine``; BuildError says what failed."""
    from .engine import refused

    started = time.perf_counter()
    source = images_dir() / "base"
    packages = read_packages(source / "packages")
    containerfile = (source / "Containerfile").read_bytes()
    base_key = rootfs_key(suite, mirror, packages)
    key = _digest(base_key, containerfile)
    report = BuildReport(image=name)
    directory = cache_dir()
    with _locked(directory):
        found = find_image(engine, name)
        if (
            found is not None
            and (found.get("Config") or {}).get("Labels", {}).get(KEY_LABEL) == key
        ):
            report.image_id = found["Id"]
            report.steps.append(("image", time.perf_counter() - started, True))
            report.seconds = time.perf_counter() - started
            return report
        step = time.perf_counter()
        cached = (directory / f"rootfs-{base_key}.tar").exists()
        tar_path = make_rootfs(directory, suite, mirror, packages, say)
        report.steps.append(("root file system (debootstrap)", time.perf_counter() - step, cached))
        step = time.perf_counter()
        cached = find_image(engine, f"{ROOTFS_REPOSITORY}:{base_key}") is not None
        rootfs = _import_rootfs(engine, tar_path, base_key)
        report.steps.append((f"import into {engine.kind}", time.perf_counter() - step, cached))
        step = time.perf_counter()
        repository, _, tag = name.partition(":")
        image_id = refused(
            _build,
            engine,
            source,
            rootfs,
            {KEY_LABEL: key, "aegis-mcp.rootfs": rootfs},
            f"{repository}:{key}",
        )
        refused(engine.api.tag, image_id, repository, tag or "latest")
        report.steps.append(("Containerfile", time.perf_counter() - step, False))
        report.image_id = image_id
    report.seconds = time.perf_counter() - started
    return report


def _build(engine: Engine, source: Path, rootfs: str, labels: dict[str, str], tag: str) -> str:
    image, _logs = engine.client.images.build(
        path=str(source),
        dockerfile="Containerfile",
        tag=tag,
        buildargs={"ROOTFS": rootfs},
        labels=labels,
        pull=False,
        rm=True,
        network_mode="none",
    )
    return image.id


def engine_for_build(url: str | None, user: str | None, configured: str | None) -> Engine:
    """The engine `aegis-mcp image build` builds into.

    ``user`` (root only): that user's rootless podman, through a service started
    as them for the build. ``url``: that engine. Neither: the engine a run would
    get (``configured`` is ``[container] engine``).
    """
    import pwd

    from .engine import Candidate, choose, connect

    if user is not None:
        if os.geteuid() != 0:
            raise BuildError("--user NAME needs root (it starts NAME's rootless podman)")
        try:
            account = pwd.getpwnam(user)
        except KeyError:
            raise BuildError(f"--user {user}: no such user") from None
        runtime = Path(f"/run/user/{account.pw_uid}")
        candidate = Candidate("private", f"{user}'s rootless podman", "podman", True, True)
        return connect(candidate, _service_paths(runtime), as_user=account)
    from ...paths import runtime_dir

    return connect(choose(url or configured), _service_paths(runtime_dir()))


def _service_paths(directory: Path) -> tuple[Path, Path]:
    tag = f"build-{os.getpid()}"
    return directory / f"podman-{tag}.sock", directory / f"podman-{tag}.log"

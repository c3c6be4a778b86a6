"""The BPF programs compiled once per kernel and source, then reused.

BCC compiles C to bytecode at every load (1.5-3 s here) and cannot load anything it compiled
before. So the first start on a kernel compiles the programs of its tiers with BCC, keeps what
BCC produced (each program's bytecode, which map each of its map loads refers to, and each
map's definition and C types), and stores that in the cache; every start then loads it with
:mod:`.loader`, which creates the maps anew and relocates the map loads to them. The key of a
stored object names everything the bytecode depends on: the running kernel (release, build,
machine), the kernel headers BCC compiled against, the C sources of the tiers and the compiler
flags. The object stores all of it and is used only when all of it is what it is now; any change
and the object is compiled again (the file name is a checksum of it, to find it).

Objects are loaded into the kernel as root: the cache directory must pass the same checks as
the runtime directory (root's own, writable by nobody else), and an object file must be root's
and writable by nobody else, or it is ignored (and compiled anew in memory).
"""

from __future__ import annotations

import contextlib
import ctypes as ct
import json
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import programs

FORMAT = 1
CACHE = "bpf"
_LD_IMM64 = 0x18
_PSEUDO_MAP_FD = 1


class CompileError(RuntimeError):
    """BCC could not compile the programs (or is missing); the message says why."""


@dataclass(frozen=True)
class MapSpec:
    """One map as BCC defined it."""

    name: str
    type: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int
    key_desc: Any
    leaf_desc: Any


@dataclass(frozen=True)
class Program:
    """One function's bytecode, and its map loads: (instruction index, map index)."""

    insns: bytes
    relocations: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class CompiledObject:
    """Everything needed to load a set of tiers without compiling."""

    key: str
    maps: tuple[MapSpec, ...]
    programs: dict[str, Program]

    def to_json(self) -> bytes:
        """As stored in the cache."""
        return json.dumps(
            {
                "format": FORMAT,
                "key": self.key,
                "maps": [m.__dict__ for m in self.maps],
                "programs": {
                    name: {
                        "insns": p.insns.hex(),
                        "relocations": [list(r) for r in p.relocations],
                    }
                    for name, p in self.programs.items()
                },
            }
        ).encode()

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CompiledObject:
        """From what :meth:`to_json` wrote; KeyError/TypeError/ValueError when malformed."""
        maps = tuple(MapSpec(**m) for m in data["maps"])
        progs = {
            name: Program(
                bytes.fromhex(p["insns"]),
                tuple((int(i), int(m)) for i, m in p["relocations"]),
            )
            for name, p in data["programs"].items()
        }
        for program in progs.values():
            if len(program.insns) % 8 or any(
                not 0 <= m < len(maps) for _, m in program.relocations
            ):
                raise ValueError("malformed program")
        return cls(str(data["key"]), maps, progs)


def _headers_identity() -> str:
    from .availability import kernel_headers_dir

    headers = kernel_headers_dir()
    parts = [os.path.realpath(headers)]
    for name in ("include/generated/autoconf.h", "include/generated/utsrelease.h"):
        with contextlib.suppress(OSError):
            info = os.stat(headers / name)
            parts.append(f"{name}:{info.st_size}:{info.st_mtime_ns}")
    return "|".join(parts)


def object_key(tiers: tuple[str, ...], directory: Path | None = None) -> str:
    """Everything the object of ``tiers`` depends on, on this kernel with these sources (the
    sources' text included: no digest to trust, and no hashlib, whose OpenSSL costs a start
    milliseconds)."""
    uname = os.uname()
    return "\0".join(
        (
            str(FORMAT),
            uname.release,
            uname.version,
            uname.machine,
            _headers_identity(),
            ",".join(tiers),
            "\0".join(programs.cflags(directory)),
            programs.source_for(tiers, directory),
        )
    )


def file_name(key: str) -> str:
    """The cache file of the object of ``key``."""
    return f"{zlib.crc32(key.encode()):08x}-{len(key)}.json"


def cache_directory() -> Path | None:
    """Where objects are kept (root's cache), or None when there is no safe one."""
    from ...paths import cache_dir
    from ...safe_paths import UnsafeDirectoryError

    try:
        return cache_dir(CACHE)
    except (OSError, UnsafeDirectoryError):
        return None


def load_cached(directory: Path, key: str) -> CompiledObject | None:
    """The stored object of ``key``; None when missing, malformed or not safely ours."""
    from ...files import read_own_json

    data = read_own_json(directory / file_name(key))
    try:
        if data.get("format") != FORMAT or data.get("key") != key:  # type: ignore[union-attr]
            return None
        return CompiledObject.from_json(data)  # type: ignore[arg-type]
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def store(directory: Path, compiled: CompiledObject) -> None:
    """Keep ``compiled`` for the next starts (atomically, 0600)."""
    from ...files import write_atomic

    write_atomic(directory / file_name(compiled.key), compiled.to_json())


def obtain(tiers: tuple[str, ...]) -> tuple[CompiledObject, bool]:
    """The object of ``tiers``: from the cache, or compiled now (and stored). The second item
    says whether it came from the cache."""
    key = object_key(tiers)
    directory = cache_directory()
    if directory is not None:
        cached = load_cached(directory, key)
        if cached is not None:
            return cached, True
    compiled = compile_tiers(tiers, key)
    if directory is not None:
        with contextlib.suppress(OSError):
            store(directory, compiled)
    return compiled, False


# ---- compiling with BCC --------------------------------------------------------------------------

_MODULE_FUNCTIONS = {
    "bpf_num_tables": (ct.c_size_t, [ct.c_void_p]),
    "bpf_table_name": (ct.c_char_p, [ct.c_void_p, ct.c_size_t]),
    "bpf_table_fd_id": (ct.c_int, [ct.c_void_p, ct.c_size_t]),
    "bpf_table_type_id": (ct.c_int, [ct.c_void_p, ct.c_size_t]),
    "bpf_table_key_size_id": (ct.c_size_t, [ct.c_void_p, ct.c_size_t]),
    "bpf_table_leaf_size_id": (ct.c_size_t, [ct.c_void_p, ct.c_size_t]),
    "bpf_table_max_entries_id": (ct.c_size_t, [ct.c_void_p, ct.c_size_t]),
    "bpf_table_flags_id": (ct.c_int, [ct.c_void_p, ct.c_size_t]),
    "bpf_table_key_desc_id": (ct.c_char_p, [ct.c_void_p, ct.c_size_t]),
    "bpf_table_leaf_desc_id": (ct.c_char_p, [ct.c_void_p, ct.c_size_t]),
    "bpf_num_functions": (ct.c_size_t, [ct.c_void_p]),
    "bpf_function_name": (ct.c_char_p, [ct.c_void_p, ct.c_size_t]),
    "bpf_function_start": (ct.c_void_p, [ct.c_void_p, ct.c_char_p]),
    "bpf_function_size": (ct.c_size_t, [ct.c_void_p, ct.c_char_p]),
}


def _module_api(libbcc_path: str) -> Any:
    # A handle of our own: BCC's Python binding declares only some of these.
    lib = ct.CDLL(libbcc_path)
    for name, (restype, argtypes) in _MODULE_FUNCTIONS.items():
        function = getattr(lib, name)
        function.restype = restype
        function.argtypes = argtypes
    return lib


def compile_tiers(tiers: tuple[str, ...], key: str | None = None) -> CompiledObject:
    """Compile the programs of ``tiers`` with BCC and take out what loading them needs."""
    from ._bcc import BccMissing, import_bcc

    try:
        bcc = import_bcc()
    except BccMissing as exc:
        raise CompileError(str(exc)) from None
    try:
        bpf = bcc.BPF(text=programs.source_for(tiers).encode(), cflags=programs.cflags())
    except Exception as exc:
        raise CompileError(f"BCC could not compile the BPF programs: {exc}") from None
    try:
        lib = _module_api(bcc.libbcc.lib._name)
        module = bpf.module
        maps, by_fd = [], {}
        for index in range(lib.bpf_num_tables(module)):
            maps.append(
                MapSpec(
                    name=lib.bpf_table_name(module, index).decode(),
                    type=lib.bpf_table_type_id(module, index),
                    key_size=lib.bpf_table_key_size_id(module, index),
                    value_size=lib.bpf_table_leaf_size_id(module, index),
                    max_entries=lib.bpf_table_max_entries_id(module, index),
                    flags=lib.bpf_table_flags_id(module, index),
                    key_desc=json.loads(lib.bpf_table_key_desc_id(module, index)),
                    leaf_desc=json.loads(lib.bpf_table_leaf_desc_id(module, index)),
                )
            )
            by_fd[lib.bpf_table_fd_id(module, index)] = index
        found = {}
        for index in range(lib.bpf_num_functions(module)):
            name = lib.bpf_function_name(module, index)
            size = lib.bpf_function_size(module, name)
            insns = ct.string_at(lib.bpf_function_start(module, name), size)
            found[name.decode()] = Program(insns, _relocations(name.decode(), insns, by_fd))
    finally:
        bpf.cleanup()
    return CompiledObject(key or object_key(tiers), tuple(maps), found)


def _relocations(name: str, insns: bytes, by_fd: dict[int, int]) -> tuple[tuple[int, int], ...]:
    """Where ``insns`` loads a map: BCC puts the descriptor of the map it created into each
    load (``ld_imm64`` with ``BPF_PSEUDO_MAP_FD``)."""
    found = []
    for index in range(0, len(insns) // 8):
        at = index * 8
        if insns[at] != _LD_IMM64 or insns[at + 1] >> 4 != _PSEUDO_MAP_FD:
            continue
        fd = int.from_bytes(insns[at + 4 : at + 8], "little", signed=True)
        if fd not in by_fd:
            raise CompileError(f"{name}: instruction {index} loads map fd {fd}, which is no map")
        found.append((index, by_fd[fd]))
    return tuple(found)

"""A small loader for compiled BPF programs (:mod:`.objects`): maps, programs, attachments.

BCC compiles and loads in one step and cannot load what it compiled before; this loads the
bytecode BCC produced once (its map references relocated to this run's own maps) through the
kernel's interfaces directly: the ``bpf()`` system call for maps and programs, perf events for
the tracepoint and the kprobes, and libbpf's ring buffer reader. No BCC import (which loads
LLVM: tens of milliseconds) and no compile on the start path.

The table objects offer the part of BCC's table interface the monitor uses (``Key``, ``Leaf``,
item access, ``items()``, ``sum()`` of a per-CPU slot), over ctypes types decoded from BCC's
own descriptions of the C types.
"""

from __future__ import annotations

import contextlib
import ctypes as ct
import errno
import os
import platform
from collections.abc import Callable, Iterator
from typing import Any

from ...processes import close_detached
from .objects import CompiledObject, MapSpec

# bpf() commands (linux/bpf.h)
BPF_MAP_CREATE = 0
BPF_MAP_LOOKUP_ELEM = 1
BPF_MAP_UPDATE_ELEM = 2
BPF_MAP_DELETE_ELEM = 3
BPF_MAP_GET_NEXT_KEY = 4
BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_DETACH = 9

PROG_TYPES = {
    "KPROBE": 2,
    "TRACEPOINT": 5,
    "CGROUP_SKB": 8,
    "CGROUP_SOCK": 9,
    "SOCK_OPS": 13,
    "CGROUP_SOCK_ADDR": 18,
}
ATTACH_TYPES = {
    "CGROUP_INET_INGRESS": 0,
    "CGROUP_INET_EGRESS": 1,
    "CGROUP_SOCK_OPS": 3,
    "CGROUP_INET4_CONNECT": 10,
    "CGROUP_INET6_CONNECT": 11,
    "CGROUP_UDP4_SENDMSG": 14,
    "CGROUP_UDP6_SENDMSG": 15,
    "CGROUP_INET_SOCK_RELEASE": 34,
}
BPF_MAP_TYPE_PERCPU_HASH = 5
BPF_MAP_TYPE_PERCPU_ARRAY = 6
BPF_MAP_TYPE_LRU_PERCPU_HASH = 10
_PERCPU = {BPF_MAP_TYPE_PERCPU_HASH, BPF_MAP_TYPE_PERCPU_ARRAY, BPF_MAP_TYPE_LRU_PERCPU_HASH}
BPF_PSEUDO_MAP_FD = 1
_LD_IMM64 = 0x18
_ATTR_SIZE = 128  # enough for every command used; the kernel takes a shorter union as zeros

# perf events (linux/perf_event.h)
PERF_TYPE_TRACEPOINT = 2
PERF_FLAG_FD_CLOEXEC = 8
PERF_EVENT_IOC_ENABLE = 0x2400
PERF_EVENT_IOC_DISABLE = 0x2401
PERF_EVENT_IOC_SET_BPF = 0x40042408
_PERF_ATTR_SIZE = 112  # PERF_ATTR_SIZE_VER5

_SYSCALLS = {"x86_64": (321, 298), "aarch64": (280, 241)}  # bpf, perf_event_open
_libc = ct.CDLL(None, use_errno=True)
_libc.syscall.restype = ct.c_long
_libc.ioctl.argtypes = [ct.c_int, ct.c_ulong, ct.c_ulong]

_RINGBUF_CB = ct.CFUNCTYPE(ct.c_int, ct.c_void_p, ct.c_void_p, ct.c_size_t)


class LoadError(OSError):
    """A map, program or attachment the kernel refused; the message says which and why."""


def _syscall_numbers() -> tuple[int, int]:
    try:
        return _SYSCALLS[platform.machine()]
    except KeyError:
        raise LoadError(errno.ENOSYS, f"no bpf() syscall number for {platform.machine()}") from None


def _bpf(command: int, attr: ct.Array[ct.c_char], what: str) -> int:
    result = _libc.syscall(_syscall_numbers()[0], command, attr, _ATTR_SIZE)
    if result < 0:
        code = ct.get_errno()
        raise LoadError(code, f"{what}: {os.strerror(code)}")
    return int(result)


def _attr(*fields: tuple[int, str, int]) -> ct.Array[ct.c_char]:
    """A zeroed ``union bpf_attr`` with (offset, struct format, value) fields set."""
    import struct

    buffer = ct.create_string_buffer(_ATTR_SIZE)
    for offset, fmt, value in fields:
        struct.pack_into(fmt, buffer, offset, value)
    return buffer


def _name_field(offset: int, name: str) -> tuple[int, str, bytes]:
    return (offset, "16s", name.encode()[:15])  # type: ignore[return-value]


def kernel_version_code() -> int:
    """LINUX_VERSION_CODE of the running kernel (kprobe programs of old kernels check it)."""
    parts = [
        int("".join(c for c in p if c.isdigit()) or 0) for p in platform.release().split(".")[:3]
    ]
    major, minor, patch = [*parts, 0, 0, 0][:3]
    return (major << 16) | (minor << 8) | min(patch, 255)


def possible_cpus() -> int:
    """How many CPUs a per-CPU map holds a value for (``/sys/devices/system/cpu/possible``)."""
    with open("/sys/devices/system/cpu/possible") as file:
        text = file.read().strip()
    count = 0
    for part in text.split(","):
        low, _, high = part.partition("-")
        count += int(high or low) - int(low) + 1
    return count


_CTYPES = {
    "_Bool": ct.c_bool,
    "char": ct.c_char,
    "unsigned char": ct.c_ubyte,
    "short": ct.c_short,
    "unsigned short": ct.c_ushort,
    "int": ct.c_int,
    "unsigned int": ct.c_uint,
    "long": ct.c_long,
    "unsigned long": ct.c_ulong,
    "long long": ct.c_longlong,
    "unsigned long long": ct.c_ulonglong,
}


def decode_type(desc: Any) -> Any:
    """The ctypes type of one of BCC's JSON type descriptions: a C type name, or
    ``[name, [[field, type], [field, type, [count]], ...], "struct"|"union"|"struct_packed"]``."""
    if isinstance(desc, str):
        return _CTYPES[desc]
    name, members = desc[0], desc[1]
    kind = desc[2] if len(desc) > 2 else "struct"
    fields: list[tuple[Any, ...]] = []
    for member in members:
        if len(member) == 2:
            fields.append((member[0], decode_type(member[1])))
        elif isinstance(member[2], list):
            fields.append((member[0], decode_type(member[1]) * member[2][0]))
        elif isinstance(member[2], int):
            fields.append((member[0], decode_type(member[1]), member[2]))  # a bit field
        else:
            fields.append((member[0] or f"__anon{len(fields)}", decode_type(member)))
    base = ct.Union if kind == "union" else ct.Structure
    namespace: dict[str, Any] = {"_fields_": fields}
    if kind == "struct_packed":
        namespace["_pack_"] = 1
    return type(str(name), (base,), namespace)


class Table:
    """One map: the part of BCC's table interface the monitor uses."""

    def __init__(self, fd: int, spec: MapSpec) -> None:
        self.fd = fd
        self.spec = spec
        self.Key = decode_type(spec.key_desc)
        self.Leaf = decode_type(spec.leaf_desc)
        self._percpu = spec.type in _PERCPU
        if self._percpu:
            self._cpus = possible_cpus()
            self._stride = (ct.sizeof(self.Leaf) + 7) & ~7

    def _elem(self, command: int, key: Any, value: Any, flags: int, what: str) -> int:
        attr = _attr(
            (0, "I", self.fd),
            (8, "Q", ct.addressof(key) if key is not None else 0),
            (16, "Q", ct.addressof(value) if value is not None else 0),
            (24, "Q", flags),
        )
        return _bpf(command, attr, f"{what} in map {self.spec.name}")

    def _keyed(self, command: int, key: Any, value: Any, what: str) -> Any:
        """A command on one key: a missing key is a KeyError, as in a dict."""
        try:
            self._elem(command, key, value, 0, what)
        except LoadError as exc:
            if exc.errno == errno.ENOENT:
                raise KeyError(key) from None
            raise
        return value

    def __setitem__(self, key: Any, value: Any) -> None:
        self._elem(BPF_MAP_UPDATE_ELEM, key, value, 0, "update")

    def __getitem__(self, key: Any) -> Any:
        return self._keyed(BPF_MAP_LOOKUP_ELEM, key, self.Leaf(), "lookup")

    def __delitem__(self, key: Any) -> None:
        self._keyed(BPF_MAP_DELETE_ELEM, key, None, "delete")

    def keys(self) -> Iterator[Any]:
        """The keys now (a key deleted while iterating ends nothing: iteration restarts)."""
        key = None
        while True:
            following = self.Key()
            try:
                self._elem(BPF_MAP_GET_NEXT_KEY, key, following, 0, "next key")
            except LoadError as exc:
                if exc.errno == errno.ENOENT:
                    return
                raise
            yield following
            key = following

    def items(self) -> list[tuple[Any, Any]]:
        """(key, value) pairs now; entries deleted meanwhile are left out."""
        out = []
        for key in list(self.keys()):
            with contextlib.suppress(KeyError):
                out.append((key, self[key]))
        return out

    def sum(self, key: Any) -> Any:
        """The sum over CPUs of a per-CPU map's value at ``key`` (``.value``, as BCC's)."""
        if not self._percpu:
            return self[key]
        raw = self._keyed(
            BPF_MAP_LOOKUP_ELEM, key, ct.create_string_buffer(self._stride * self._cpus), "lookup"
        )
        total = sum(
            self.Leaf.from_buffer_copy(raw, i * self._stride).value for i in range(self._cpus)
        )
        return self.Leaf(total)


def detach_cgroup_program(cgroup_fd: int, prog_fd: int, attach_type: int) -> None:
    """Detach the program ``prog_fd`` from the cgroup ``cgroup_fd`` (``attach_type``)."""
    attr = _attr((0, "I", cgroup_fd), (4, "I", prog_fd), (8, "I", attach_type))
    _bpf(BPF_PROG_DETACH, attr, "detaching a program from the cgroup")


class LoadedObject:
    """The maps of one compiled object, created for this run, and its programs as they are
    loaded and attached. :meth:`close` detaches and releases everything (so does the kernel
    when the process dies: every attachment is held by a descriptor of ours)."""

    def __init__(self, compiled: CompiledObject) -> None:
        self.compiled = compiled
        self._map_fds: list[int] = []
        self._prog_fds: dict[str, int] = {}
        self._cgroup_links: list[tuple[int, int, int]] = []
        self._perf_fds: list[int] = []
        self._kprobe_names: list[ct.c_char_p] = []
        self._ringbufs: list[Any] = []
        self._callbacks: list[Any] = []
        self._libbpf: Any = None
        try:
            for spec in compiled.maps:
                self._map_fds.append(self._create_map(spec))
        except BaseException:
            self.close()
            raise
        self._tables = {
            spec.name: Table(fd, spec)
            for spec, fd in zip(compiled.maps, self._map_fds, strict=True)
        }

    # ---- maps ----------------------------------------------------------------------------------

    @staticmethod
    def _create_map(spec: MapSpec) -> int:
        attr = _attr(
            (0, "I", spec.type),
            (4, "I", spec.key_size),
            (8, "I", spec.value_size),
            (12, "I", spec.max_entries),
            (16, "I", spec.flags),
            _name_field(28, spec.name),  # type: ignore[arg-type]
        )
        return _bpf(BPF_MAP_CREATE, attr, f"creating map {spec.name}")

    def table(self, name: str) -> Table:
        """The map called ``name``."""
        return self._tables[name]

    # ---- programs ------------------------------------------------------------------------------

    def program_fd(self, function: str, prog_type: str, attach_type: str | None = None) -> int:
        """Load ``function`` (once) as a ``prog_type`` program; its descriptor."""
        fd = self._prog_fds.get(function)
        if fd is not None:
            return fd
        program = self.compiled.programs[function]
        insns = bytearray(program.insns)
        for index, map_index in program.relocations:
            at = index * 8
            if insns[at] != _LD_IMM64 or insns[at + 1] >> 4 != BPF_PSEUDO_MAP_FD:
                raise LoadError(errno.EINVAL, f"{function}: instruction {index} is not a map load")
            insns[at + 4 : at + 8] = self._map_fds[map_index].to_bytes(4, "little", signed=True)
        code = (ct.c_char * len(insns)).from_buffer(insns)
        license = ct.create_string_buffer(b"GPL")
        fields = [
            (0, "I", PROG_TYPES[prog_type]),
            (4, "I", len(insns) // 8),
            (8, "Q", ct.addressof(code)),
            (16, "Q", ct.addressof(license)),
            (40, "I", kernel_version_code()),
            _name_field(48, function),
            (68, "I", ATTACH_TYPES[attach_type] if attach_type else 0),
        ]
        try:
            fd = _bpf(BPF_PROG_LOAD, _attr(*fields), f"loading {function}")  # type: ignore[arg-type]
        except LoadError as exc:
            # Again with the verifier's log, to say why.
            log = ct.create_string_buffer(1 << 16)
            fields += [(24, "I", 1), (28, "I", len(log)), (32, "Q", ct.addressof(log))]
            with contextlib.suppress(LoadError):
                _bpf(BPF_PROG_LOAD, _attr(*fields), "")  # type: ignore[arg-type]
            tail = log.value.decode(errors="replace").strip().splitlines()[-3:]
            raise LoadError(exc.errno, f"{exc.strerror} {' / '.join(tail)}".strip()) from None
        self._prog_fds[function] = fd
        return fd

    def attach_cgroup(
        self, function: str, prog_type: str, attach_type: str, cgroup_fd: int, flags: int
    ) -> None:
        """Load ``function`` and attach it to the cgroup ``cgroup_fd``."""
        fd = self.program_fd(function, prog_type, attach_type)
        kind = ATTACH_TYPES[attach_type]
        attr = _attr((0, "I", cgroup_fd), (4, "I", fd), (8, "I", kind), (12, "I", flags))
        _bpf(BPF_PROG_ATTACH, attr, f"attaching {function} to the cgroup")
        self._cgroup_links.append((cgroup_fd, fd, kind))

    def cgroup_attachments(self) -> list[tuple[str, int, int]]:
        """(function, program descriptor, attach type) of each program attached to a cgroup
        by :meth:`attach_cgroup`, in that order."""
        names = {fd: name for name, fd in self._prog_fds.items()}
        return [(names[prog_fd], prog_fd, kind) for _cgroup, prog_fd, kind in self._cgroup_links]

    def attach_tracepoint(self, function: str, tracefs: str, category: str, event: str) -> None:
        """Load ``function`` and attach it to the tracepoint ``category:event``."""
        fd = self.program_fd(function, "TRACEPOINT")
        with open(os.path.join(tracefs, "events", category, event, "id")) as file:
            config = int(file.read())
        self._perf_attach(PERF_TYPE_TRACEPOINT, config, 0, fd, f"{category}:{event}")

    def attach_kprobe(self, function: str, symbol: str, ret: bool) -> None:
        """Load ``function`` and attach it as a k(ret)probe on kernel function ``symbol``."""
        fd = self.program_fd(function, "KPROBE")
        pmu = "/sys/bus/event_source/devices/kprobe"
        with open(f"{pmu}/type") as file:
            pmu_type = int(file.read())
        config = 0
        if ret:
            with open(f"{pmu}/format/retprobe") as file:  # "config:0"
                config = 1 << int(file.read().split(":")[1])
        name = ct.c_char_p(symbol.encode())
        self._kprobe_names.append(name)  # the kernel reads it during perf_event_open only
        address = ct.cast(name, ct.c_void_p).value or 0
        self._perf_attach(pmu_type, config, address, fd, f"{symbol} ({'ret' if ret else ''}probe)")

    def _perf_attach(self, kind: int, config: int, config1: int, prog_fd: int, what: str) -> None:
        import struct

        attr = ct.create_string_buffer(_PERF_ATTR_SIZE)
        struct.pack_into("IIQQ", attr, 0, kind, _PERF_ATTR_SIZE, config, 1)  # sample_period 1
        struct.pack_into("I", attr, 48, 1)  # wakeup_events
        struct.pack_into("Q", attr, 56, config1)  # kprobe_func / config1
        number = _syscall_numbers()[1]
        fd = _libc.syscall(
            number, attr, ct.c_int(-1), ct.c_int(0), ct.c_int(-1), PERF_FLAG_FD_CLOEXEC
        )
        if fd < 0:
            code = ct.get_errno()
            raise LoadError(code, f"perf event for {what}: {os.strerror(code)}")
        self._perf_fds.append(int(fd))
        for request, value in ((PERF_EVENT_IOC_SET_BPF, prog_fd), (PERF_EVENT_IOC_ENABLE, 0)):
            if _libc.ioctl(int(fd), request, value) != 0:
                code = ct.get_errno()
                raise LoadError(code, f"attaching to {what}: {os.strerror(code)}")

    # ---- the ring buffer -----------------------------------------------------------------------

    def open_ring_buffer(self, name: str, callback: Callable[[Any, Any, int], int]) -> None:
        """Read ring buffer map ``name`` with ``callback(ctx, data, size)`` at each poll."""
        lib = self._ringbuf_lib()
        function = _RINGBUF_CB(callback)
        ring = lib.ring_buffer__new(self._tables[name].fd, function, None, None)
        if not ring:
            code = ct.get_errno()
            raise LoadError(code, f"ring buffer {name}: {os.strerror(code)}")
        self._callbacks.append(function)
        self._ringbufs.append(ring)

    def ring_buffer_fd(self) -> int:
        """A descriptor that polls readable when a record waits (libbpf's epoll set)."""
        return int(self._libbpf.ring_buffer__epoll_fd(self._ringbufs[0]))

    def ring_buffer_poll(self, timeout_ms: int) -> None:
        """Wait up to ``timeout_ms`` for records, handing each to the callbacks."""
        for ring in self._ringbufs:
            self._libbpf.ring_buffer__poll(ring, timeout_ms)

    def ring_buffer_consume(self) -> None:
        """Hand every record waiting to the callbacks, without waiting."""
        for ring in self._ringbufs:
            self._libbpf.ring_buffer__consume(ring)

    def _ringbuf_lib(self) -> Any:
        if self._libbpf is None:
            try:
                lib = ct.CDLL("libbpf.so.1", use_errno=True)
            except OSError as exc:
                raise LoadError(
                    errno.ENOENT, f"libbpf is missing ({exc}): apt-get install libbpf1"
                ) from None
            lib.ring_buffer__new.restype = ct.c_void_p
            lib.ring_buffer__new.argtypes = [ct.c_int, _RINGBUF_CB, ct.c_void_p, ct.c_void_p]
            lib.ring_buffer__poll.argtypes = [ct.c_void_p, ct.c_int]
            lib.ring_buffer__consume.argtypes = [ct.c_void_p]
            lib.ring_buffer__free.argtypes = [ct.c_void_p]
            lib.ring_buffer__epoll_fd.argtypes = [ct.c_void_p]
            self._libbpf = lib
        return self._libbpf

    # ---- the end -------------------------------------------------------------------------------

    def close(self) -> None:
        """Detach everything and release every descriptor (idempotent)."""
        for cgroup_fd, prog_fd, kind in self._cgroup_links:
            with contextlib.suppress(LoadError):
                detach_cgroup_program(cgroup_fd, prog_fd, kind)
        self._cgroup_links.clear()
        for fd in self._perf_fds:
            _libc.ioctl(fd, PERF_EVENT_IOC_DISABLE, 0)  # no more records from here on
        # Their release waits for RCU grace periods, which the run's exit need not wait for.
        close_detached(self._perf_fds)
        self._perf_fds.clear()
        for ring in self._ringbufs:
            self._libbpf.ring_buffer__free(ring)
        self._ringbufs.clear()
        for fd in [*self._prog_fds.values(), *self._map_fds]:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._prog_fds.clear()
        self._map_fds.clear()

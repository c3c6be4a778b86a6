"""nftables through libnftables' JSON interface, in process (ctypes).

Why libnftables and not ``nft -j -f -``: a ``nft`` process costs 4 to 20 ms
here, the library call 0.1 to 1 ms, and the sandbox set-up has 5 ms in all.
Why not Debian's ``python3-nftables``: it is the same ctypes wrapper, but it
lives outside the project's virtualenv; the dozen lines it would save are
these. The input is the documented JSON schema (libnftables-json(5)), so
what is sent is what ``nft -j`` would take.

Like a netlink socket, a libnftables context opens its socket when it is
created and keeps it: a :class:`Nft` acts on the network namespace of the
thread that created it, whatever thread uses it later.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import threading
from typing import Any

from ..errors import NftablesMissingError, SandboxError

_NFT_CTX_OUTPUT_JSON = 1 << 4
_LIBRARY = "libnftables.so.1"
INSTALL_HINT = (
    "nftables is not installed (libnftables.so.1 is missing): "
    "install it with `apt-get install nftables`"
)

_lib: ctypes.CDLL | None = None
_lib_lock = threading.Lock()


class NftError(SandboxError):
    """nftables refused a command; the message is nft's own error text."""


def _load() -> ctypes.CDLL:
    global _lib
    with _lib_lock:
        if _lib is not None:
            return _lib
        try:
            lib = ctypes.CDLL(_LIBRARY)
        except OSError:
            found = ctypes.util.find_library("nftables")
            if found is None:
                raise NftablesMissingError(INSTALL_HINT) from None
            try:
                lib = ctypes.CDLL(found)
            except OSError as exc:
                raise NftablesMissingError(f"{INSTALL_HINT} ({exc})") from None
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
        lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
        _lib = lib
        return lib


def available() -> bool:
    """Whether libnftables can be loaded."""
    try:
        _load()
    except NftablesMissingError:
        return False
    return True


class Nft:
    """A libnftables context bound to the network namespace of the creating thread."""

    def __init__(self) -> None:
        self._lib = _load()
        ctx = self._lib.nft_ctx_new(0)
        if not ctx:
            raise NftError("libnftables could not create a context")
        self._ctx: int | None = ctx
        self._lib.nft_ctx_output_set_flags(ctx, _NFT_CTX_OUTPUT_JSON)
        self._lib.nft_ctx_buffer_output(ctx)
        self._lib.nft_ctx_buffer_error(ctx)
        # A context is not thread-safe; the DNS forwarder and the owner share this one.
        self._lock = threading.Lock()

    def run(self, commands: list[dict[str, Any]]) -> dict[str, Any] | None:
        """Run a list of JSON commands as one transaction; returns nft's JSON output, if any."""
        payload = json.dumps({"nftables": commands}).encode()
        with self._lock:
            if self._ctx is None:
                raise NftError("the nftables context is closed")
            rc = self._lib.nft_run_cmd_from_buffer(self._ctx, payload)
            out = self._lib.nft_ctx_get_output_buffer(self._ctx) or b""
            err = self._lib.nft_ctx_get_error_buffer(self._ctx) or b""
        if rc != 0:
            raise NftError(err.decode(errors="replace").strip() or f"nft failed ({rc})")
        text = out.decode(errors="replace").strip()
        return json.loads(text) if text else None

    def list_tables(self) -> list[dict[str, Any]]:
        """Every table of this namespace: family, name, comment (if any), handle."""
        out = self.run([{"list": {"tables": None}}]) or {}
        return [item["table"] for item in out.get("nftables", []) if "table" in item]

    def close(self) -> None:
        """Free the context (its netlink socket)."""
        with self._lock:
            if self._ctx is not None:
                self._lib.nft_ctx_free(self._ctx)
                self._ctx = None

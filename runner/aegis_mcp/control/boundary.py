"""Where the packages' own errors become protocol errors: at the operations, and only there.

A package that serves operations (pool, netmon, sandbox, the runner) raises
errors of its own; its op table is wrapped with :func:`with_codes`, which gives
each of them its protocol error code. Argument errors
(:mod:`.validate`) are protocol errors already and pass through.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from .protocol import ControlError

ErrorCodes = Mapping[type[BaseException], str]
"""Error class -> protocol code; the first class that matches (in order) wins."""

Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Any]])


def with_codes(table: Mapping[str, Handler], codes: ErrorCodes) -> dict[str, Handler]:
    """``table`` with every handler raising ControlError(code) for the errors in ``codes``."""
    return {op: _coded(handler, codes) for op, handler in table.items()}


def _coded(handler: Handler, codes: ErrorCodes) -> Handler:
    async def serve(*args: Any) -> Any:
        try:
            return await handler(*args)
        except ControlError:
            raise
        except tuple(codes) as exc:
            code = next(c for kind, c in codes.items() if isinstance(exc, kind))
            raise ControlError(code, str(exc)) from None

    return serve  # type: ignore[return-value]

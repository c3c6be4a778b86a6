"""``python -m aegis_mcp`` is the ``aegis-mcp`` command."""

from .cli.main import entry

entry()

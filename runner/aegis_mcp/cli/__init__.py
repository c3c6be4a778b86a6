"""The ``aegis-mcp`` command line."""

"""aegis-mcp: supervisor and sandbox runner for AI coding agents."""

__version__ = "0.1.0"

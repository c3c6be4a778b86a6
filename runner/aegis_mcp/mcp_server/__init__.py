"""The MCP server an agent gets injected: its tools drive the runner."""

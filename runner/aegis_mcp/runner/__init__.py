"""The runner (supervisor) and its parts: processes, terminal, state, control socket."""

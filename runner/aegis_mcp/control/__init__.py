"""The runner's control protocol: JSON lines over a private Unix socket."""

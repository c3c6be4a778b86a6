"""Errors of network monitoring, each with a message a user can act on."""

from __future__ import annotations


class NetmonUnavailable(RuntimeError):
    """A monitoring source cannot run here, or what was asked needs one that cannot;
    the message is the one-line reason."""

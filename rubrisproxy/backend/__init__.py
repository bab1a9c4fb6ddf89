"""Backends: named groups of origin servers and how a request picks one."""

from ._server import Backend, Server

__all__ = ["Backend", "Server"]

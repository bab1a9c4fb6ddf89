"""The supervisor's look at the frontends' ports before it spawns workers: one that another program holds ends
the start with one line, as a single process's start does."""

from __future__ import annotations

import socket

from ..config import ProxyConfig, split_endpoint
from ..tls import listeners


def check_listeners_free(config: ProxyConfig) -> None:
    """Bind (and close again) each frontend's TCP listeners, as one process would (``SO_REUSEADDR``, not
    ``SO_REUSEPORT``: a port anything listens on, another rubrisproxy's workers included, is refused); SystemExit
    naming the first that cannot be bound."""
    for frontend in config.frontends:
        for description, each in zip(frontend.listen, listeners(f"frontends.{frontend.name}", frontend.listen,
                                                                   frontend.tls), strict=True):
            kind, positional, named = split_endpoint(each.endpoint)
            options = dict(named)
            port = int(positional[0] if positional else options.get("port", "0"))
            family = socket.AF_INET6 if kind == "tcp6" else socket.AF_INET
            interface = options.get("interface", "::" if family == socket.AF_INET6 else "")
            if ":" in interface:
                family = socket.AF_INET6
            try:
                with socket.socket(family, socket.SOCK_STREAM) as trial:
                    trial.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    trial.bind((interface, port))
            except OSError as e:
                raise SystemExit(f"rubrisproxy: frontend {frontend.name} cannot listen on {description}: "
                                 f"{e.strerror}") from None

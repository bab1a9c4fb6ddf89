"""Checks of what a configuration names outside itself: the user classes it builds and the key files its
listeners read. The wiring layer runs them right after loading (start, ``rubrisproxy check``, reload), so that
a class that cannot be built or a certificate that cannot be read fails the load, naming its key, not the start."""

from __future__ import annotations

from .backend import balancer_for
from .config import ProxyConfig, build_objects
from .frontend import protocol_class
from .lifecycle import HANDLER_INTERFACES
from .tls import check_listeners
from .websocket import build_hooks


def check_config(config: ProxyConfig) -> ProxyConfig:
    """Build every user class ``config`` names and read every listener's key material, as the proxy will; the
    objects built are discarded. Returns ``config``; one that cannot be built raises a :class:`ConfigError`."""
    for name, backend in config.backends.items():
        build_hooks(f"backends.{name}.websocket.hooks", backend.websocket.hooks)
        balancer_for(backend.balance, f"backends.{name}.balance")
    for frontend in config.frontends:
        build_objects(f"frontends.{frontend.name}.handlers", frontend.handlers, HANDLER_INTERFACES)
        protocol_class(frontend)
        check_listeners(f"frontends.{frontend.name}", frontend.listen, frontend.tls)
    check_listeners("admin", config.admin.listen, None)
    return config

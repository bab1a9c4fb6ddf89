"""Forward-proxy mode: where a request wants to go, whether it may, and who is asking."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer, threads
from twisted.internet.interfaces import IHostResolution, IResolutionReceiver
from zope.interface import implementer

from ..backend import Backend, Server
from ..config import ForwardConfig, ServerConfig
from ..http import HTTPError, RequestHead, quoted
from ._auth import ProxyAuth

#: Destinations that are this host or its link, refused unless an allow rule names them (Squid's
#: ``to_localhost``): loopback, "this network" (``0.0.0.0`` reaches this host), link-local (cloud metadata
#: services), unspecified and IPv4-compatible IPv6.
LOCAL_NETWORKS = tuple(ipaddress.ip_network(n) for n in (
    "127.0.0.0/8", "0.0.0.0/8", "169.254.0.0/16", "::/96", "fe80::/10",
))


@dataclass(frozen=True, slots=True)
class Destination:
    """Where a forward-proxy request goes: the name it asked for, and the port."""

    host: str
    port: int
    tunnel: bool  # CONNECT


def destination(head: RequestHead) -> Destination:
    """The destination of an absolute-form request or a CONNECT; :class:`HTTPError` 400 if it names none."""
    target = head.target.decode("latin-1")
    if head.method == b"CONNECT":
        host, port = _authority(target, None)
        return Destination(host, port, tunnel=True)
    scheme, sep, rest = target.partition("://")
    if not sep or scheme.lower() != "http":
        raise HTTPError(400, f"a forward proxy needs an absolute http:// target, got {quoted(target, 80)}")
    host, port = _authority(rest.split("/", 1)[0], 80)
    return Destination(host, port, tunnel=False)


def _authority(authority: str, default_port: int | None) -> tuple[str, int]:
    if "@" in authority:
        raise HTTPError(400, f"a proxy request target carries no credentials: {quoted(authority, 80)}")
    if authority.startswith("["):
        host, _, rest = authority[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else rest
    else:
        host, _, port_text = authority.partition(":")
    if not port_text:
        if default_port is None:
            raise HTTPError(400, f"CONNECT needs host:port, got {quoted(authority)}")
        port = default_port
    elif not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise HTTPError(400, f"not a host:port: {quoted(authority)}")
    else:
        port = int(port_text)
    return _host(host, bracketed=authority.startswith("[")), port


_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)\Z")


def _host(host: str, bracketed: bool) -> str:
    """``host`` in canonical form (lower case, no trailing dot); :class:`HTTPError` 400 if it is no host.

    Numeric forms other than dotted-quad IPv4 (``127.1``, ``0x7f.1``, ``2130706433``) are refused:
    resolvers read them differently, and access lists must see the address that is reached.
    """
    if bracketed:
        try:
            if "%" in host:
                raise ValueError("a zone is local to the proxy")
            return str(ipaddress.IPv6Address(host))
        except ValueError:
            raise HTTPError(400, f"not an IPv6 address: [{host[:80]}]") from None
    host = host.lower()
    if host.endswith("."):
        host = host[:-1]
    labels = host.split(".")
    if not host or len(host) > 253 or not all(_LABEL.match(label) for label in labels):
        raise HTTPError(400, f"not a host name: {quoted(host, 80)}")
    last = labels[-1]
    if last.isdigit() or last.startswith("0x"):
        try:
            return str(ipaddress.IPv4Address(host))
        except ValueError:
            raise HTTPError(400, f"not a dotted-quad IPv4 address: {quoted(host)}") from None
    return host


class ForwardProxy:
    """A forward-proxy frontend's rules and state: access lists, users, name resolution, servers by destination."""

    def __init__(self, config: ForwardConfig, reactor: Any, parents: Backend | None = None) -> None:
        self.config = config
        self._reactor = reactor
        self.parents = parents  # parent proxies, when requests go through them
        self._direct_names, self._direct_suffixes, self._direct_networks = _split(config.direct)
        self._names, self._suffixes, self._networks = _split(config.allow_hosts)
        self._denied_names, self._denied_suffixes, self._denied_networks = _split(config.deny_hosts)
        self._clients = [ipaddress.ip_network(c, strict=False) for c in config.clients]
        self._servers: dict[tuple[str, int], Server] = {}  # one per destination, for the pool's keep-alive
        self.auth = ProxyAuth(config.users, reactor, self._off_thread) if config.users else None

    def _off_thread(self, function: Any, *args: Any) -> defer.Deferred[Any]:
        return threads.deferToThreadPool(self._reactor, self._reactor.getThreadPool(), function, *args)

    def authorize(self, head: RequestHead, client: str) -> defer.Deferred[None] | None:
        """Check the client's network and credentials: :class:`HTTPError` 403, 407 or 429, raised or (when a
        password must be hashed, which happens off the reactor thread) as the Deferred's failure."""
        if self._clients and not _in(client, self._clients):
            raise HTTPError(403, f"client {client} is not in an allowed network")
        if self.auth is None:
            return None
        given = next((v for n, v in head.headers if n.lower() == b"proxy-authorization"), None)
        return self.auth.check(given, client)

    def check_name(self, where: Destination) -> None:
        """Refuse a destination by its name or port (403) before it is resolved."""
        if where.tunnel and where.port not in self.config.connect_ports:
            raise HTTPError(403, f"CONNECT to port {where.port} is not allowed")
        if _matches(where.host, self._denied_names, self._denied_suffixes):
            raise HTTPError(403, f"destination {where.host} is denied")
        if (where.host == "localhost" or where.host.endswith(".localhost")) and where.host not in self._names:
            # RFC 6761: loopback wherever it is resolved (a parent's resolver included)
            raise HTTPError(403, f"destination {where.host} is this host; allow-hosts must name it to allow it")

    def needs_address(self, where: Destination) -> bool:
        """Whether the access lists must see the address ``where``'s name resolves to."""
        if is_address(where.host):
            return False  # it is its own address
        return bool(self._denied_networks) or (
            bool(self._networks) and not _matches(where.host, self._names, self._suffixes)
        )

    def check_address(self, where: Destination, address: str | None) -> None:
        """Refuse a destination by its address (403); ``address`` None: not resolved (a parent will).

        The address is the one the proxy then connects to, so a name cannot resolve one way here and
        another way there."""
        if address is None and is_address(where.host):
            address = where.host
        if address is not None and self._denied_networks and _in(address, self._denied_networks):
            raise HTTPError(403, f"destination {where.host} ({address}) is in a denied network")
        if (self._names or self._suffixes or self._networks) and not (
            _matches(where.host, self._names, self._suffixes) or (address is not None and _in(address, self._networks))
        ):
            raise HTTPError(403, f"destination {where.host} ({address or 'not resolved'}) is not allowed")
        local = _local_network(address) if address is not None else None
        if local is not None and not self.names_local(where.host, address, local):
            raise HTTPError(403, f"destination {where.host} ({address}) is this host or its link;"
                                 " allow-hosts must name it to allow it")

    def check_connection(self, server: Server, transport: Any) -> None:
        """Refuse (403) a new connection to ``server`` that reached this host by an address in no local range
        (a network interface's own address): the kernel gives such a connection that address at both ends."""
        address = server.config.host
        try:
            same = _plain(ipaddress.ip_address(transport.getHost().host)) == _plain(ipaddress.ip_address(
                transport.getPeer().host))
        except ValueError:
            return
        if not same or _local_network(address) is not None:  # a local range was judged before connecting
            return
        itself = ipaddress.ip_network(_plain(ipaddress.ip_address(address)))
        if not self.names_local(server.config.name, address, itself):
            raise HTTPError(403, f"destination {server.config.name} ({address}) is this host;"
                                 " allow-hosts must name it to allow it")

    def names_local(self, host: str, address: str | None, local: Any) -> bool:
        """Whether an allow rule names this local destination: its exact name, or a network inside ``local``
        (the local range it is in) holding its address. A suffix or a wider network does not."""
        if host in self._names:
            return True
        if address is None:
            return False
        ip = _plain(ipaddress.ip_address(address))
        return any(ip in network and network.subnet_of(local) for network in self._networks
                   if network.version == ip.version)

    def via_parent(self, where: Destination) -> bool:
        """Whether ``where`` is reached through a parent proxy (not when it is listed as direct, or, unless
        ``never-direct``, when no parent is usable)."""
        parents = self.parents
        if parents is None or _matches(where.host, self._direct_names, self._direct_suffixes) or _in(
            where.host, self._direct_networks
        ):
            return False
        return self.config.never_direct or bool(parents.usable())

    def resolve(self, host: str) -> defer.Deferred[str]:
        """The first address of ``host`` (a literal address as it is); fails with :class:`HTTPError` 502."""
        try:
            return defer.succeed(str(ipaddress.ip_address(host)))
        except ValueError:
            pass
        done: defer.Deferred[str] = defer.Deferred()
        self._reactor.nameResolver.resolveHostName(_FirstAddress(done, host), host)
        return done.addTimeout(self.config.resolve_timeout, self._reactor, onTimeoutCancel=_resolve_timeout(host))

    def server(self, where: Destination, address: str) -> Server:
        """The :class:`Server` standing for ``where`` (reused, so its connections are pooled)."""
        key = (address, where.port)
        server = self._servers.get(key)
        if server is None:
            if len(self._servers) > 10_000:
                self._servers.clear()  # bounded: a forward proxy sees unbounded destinations
            server = Server(ServerConfig(name=where.host, host=address, port=where.port), "forward")
            self._servers[key] = server
        return server


@implementer(IResolutionReceiver)
class _FirstAddress:
    def __init__(self, done: defer.Deferred[str], host: str) -> None:
        self._done = done
        self._host = host
        self._address: str | None = None

    def resolutionBegan(self, resolution: IHostResolution) -> None:
        pass

    def addressResolved(self, address: Any) -> None:
        if self._address is None:
            self._address = address.host

    def resolutionComplete(self) -> None:
        if self._done.called:
            return
        if self._address is None:
            self._done.errback(HTTPError(502, f"cannot resolve {self._host}"))
        else:
            self._done.callback(self._address)


def _resolve_timeout(host: str) -> Any:
    def timed_out(result: object, timeout: float) -> object:
        raise HTTPError(504, f"resolving {host} took longer than {timeout:g}s")

    return timed_out


def _split(entries: tuple[str, ...]) -> tuple[frozenset[str], tuple[str, ...], list[Any]]:
    """Host rules as exact names, ``.suffix`` names and networks (``CIDR``, or a bare address)."""
    names: set[str] = set()
    suffixes: list[str] = []
    networks: list[Any] = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            if entry.startswith("."):
                suffixes.append(entry.lower())
            else:
                names.add(entry.lower())
    return frozenset(names), tuple(suffixes), networks


def _matches(host: str, names: frozenset[str], suffixes: tuple[str, ...]) -> bool:
    return host in names or any(host.endswith(s) or host == s[1:] for s in suffixes)


def _plain(ip: Any) -> Any:
    """``ip``, or the IPv4 address an IPv4-mapped IPv6 address stands for (``::ffff:127.0.0.1``)."""
    return getattr(ip, "ipv4_mapped", None) or ip


def _local_network(address: str) -> Any:
    """The range of :data:`LOCAL_NETWORKS` that ``address`` is in, or None."""
    ip = _plain(ipaddress.ip_address(address))
    return next((n for n in LOCAL_NETWORKS if n.version == ip.version and ip in n), None)


def _in(address: str, networks: list[Any]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:127.0.0.1 is 127.0.0.1
    return any(ip in network or (mapped is not None and mapped in network) for network in networks)


def is_address(host: str) -> bool:
    """Whether ``host`` is an IP address literal (as :func:`destination` gives it)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True

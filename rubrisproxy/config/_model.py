"""Plain data describing a validated rubrisproxy configuration."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Timeouts in seconds, named and meant as HAProxy's ``timeout`` keywords."""

    client: float = 30.0
    http_request: float = 10.0
    http_keep_alive: float = 5.0
    connect: float = 5.0
    server: float = 60.0
    queue: float = 30.0
    tunnel: float = 3600.0  # inactivity of a WebSocket (either mode), replacing client and server
    client_fin: float = 30.0  # a tunnel whose client has half-closed
    server_fin: float = 30.0  # a tunnel whose server has half-closed
    linger: float = 30.0  # a lingering close in all, once its FIN is out (nginx's lingering_time)
    linger_idle: float = 5.0  # a lingering close without a read (nginx's lingering_timeout)


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what a client may send; exceeding one is answered with a 4xx."""

    max_request_line: int = 8192
    max_header_size: int = 32768
    max_headers: int = 100
    max_body_size: int = 0  # 0 means unlimited (bodies are streamed, never held)
    linger_bytes: int = 64 << 20  # read and discarded by a lingering close before it resets; 0: no lingering
    resume_buffer_total: int = 256 << 20  # messages held by all resuming WebSocket sessions together
    resume_dials: int = 256  # moving sessions' dials in flight at once (the others wait their turn)
    resume_dials_per_turn: int = 64  # ... started per reactor turn (the proxy serves others in between)


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """Keep-alive pool of origin connections."""

    max_idle_per_server: int = 256
    idle_timeout: float = 60.0


@dataclass(frozen=True, slots=True)
class AccessLogSettings:
    """Where and how one line per request is written."""

    enabled: bool = True
    path: str = "-"  # "-" is the twistd log
    format: str = "text"  # "text" or "json"
    connections: bool = True  # a line for each client connection as it ends, besides one per request


@dataclass(frozen=True, slots=True)
class LogSettings:
    """The main log (twistd's): its format."""

    format: str = "text"  # "text" or "json" (one object per line)


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """One origin server of a backend."""

    name: str
    host: str
    port: int
    tls: bool = False
    weight: int = 1  # share of requests; 0 takes none
    maxconn: int = 0  # requests in flight at once; 0 is no limit
    backup: bool = False  # used only when no normal server is up


#: Balancing algorithms, as HAProxy names them; ``url_param(NAME)`` and ``hdr(NAME)`` take an argument.
BALANCE_ALGORITHMS = ("roundrobin", "leastconn", "random", "source", "uri", "url_param(", "hdr(")


@dataclass(frozen=True, slots=True)
class HealthCheckConfig:
    """Active checks of a backend's servers (HAProxy's ``check``, ``inter``, ``rise``, ``fall``)."""

    check: str = "tcp"  # "none", "tcp", "http" or "websocket"; on by default, to step around a dead server
    interval: float = 2.0
    rise: int = 2  # consecutive successes that bring a down server up
    fall: int = 3  # consecutive failures that take an up server down
    timeout: float = 2.0
    method: str = "GET"
    path: str = "/"
    expect: tuple[int, int] = (200, 399)  # accepted status range (HTTP checks)
    host: str | None = None  # Host header; the server's address when unset


@dataclass(frozen=True, slots=True)
class PassiveCheckConfig:
    """Outlier detection from real traffic: consecutive errors take a server out for a cool-off."""

    errors: int = 0  # consecutive connection errors (and 5xx, if ``on_5xx``) that eject; 0 is off
    on_5xx: bool = False
    cool_off: float = 30.0


@dataclass(frozen=True, slots=True)
class CookieConfig:
    """Cookie stickiness: ``insert`` a cookie naming the server, or ``prefix`` the application's cookie."""

    name: str
    mode: str = "insert"
    max_age: int = 0  # seconds; 0 makes a session cookie
    secure: bool = False


@dataclass(frozen=True, slots=True)
class StickConfig:
    """A stick table: ``on`` names the request key; ``learn`` a response value that maps to the server too."""

    on: str  # "source", "header(NAME)", "url_param(NAME)" or "cookie(NAME)"
    expire: float = 1800.0
    size: int = 100_000
    learn: str | None = None  # "header(NAME)" or "set-cookie(NAME)"


@dataclass(frozen=True, slots=True)
class TLSConfig:
    """How a backend's TLS servers are reached: whom to trust, what name to ask for, what to present."""

    verify: bool = True  # False turns certificate checks off (say it explicitly, per backend)
    ca_file: str | None = None  # PEM CA certificates to trust instead of the system store
    sni: str | None = None  # the name sent (SNI) and checked; else the server's address
    client_cert: str | None = None  # PEM certificate and key (one file, or with client_key) to present
    client_key: str | None = None


#: TLS versions a listener can take as its minimum.
TLS_VERSIONS = ("1.2", "1.3")
#: ALPN protocol names a listener can offer.
ALPN_PROTOCOLS = ("h2", "http/1.1")
#: What a listener of a frontend that does not speak HTTP/2 offers.
HTTP1_ALPN = tuple(name for name in ALPN_PROTOCOLS if name != "h2")
#: TLS 1.2 ciphers a listener offers by default: forward secret AEAD only (TLS 1.3 suites are OpenSSL's own).
MODERN_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)


@dataclass(frozen=True, slots=True)
class CertificateFiles:
    """A certificate a listener presents: PEM files of its chain (leaf first) and its key (may be the same file)."""

    cert: str
    key: str
    chain: str | None = None  # more intermediate certificates, in a file of their own


@dataclass(frozen=True, slots=True)
class ListenerTLSConfig:
    """TLS on a frontend's listeners: certificates chosen by SNI (the first is the default), versions, ALPN.

    ``directory`` adds a certificate for each ``*.pem`` or ``*.crt`` file in it (the key in
    the same file, or in ``NAME.key`` beside it), listed anew at every load and reload.
    """

    certificates: tuple[CertificateFiles, ...] = ()
    directory: str | None = None
    min_version: str = "1.2"
    ciphers: str = MODERN_CIPHERS
    alpn: tuple[str, ...] = ALPN_PROTOCOLS  # h2 is left out where the frontend does not speak HTTP/2


@dataclass(frozen=True, slots=True)
class Http2Config:
    """HTTP/2 on a reverse-proxy frontend: by ALPN on TLS listeners, by prior knowledge on cleartext ones.

    The floods an HTTP/2 client can send are counted over ``flood_window`` seconds: streams it resets
    (CVE-2023-44487, rapid reset) past ``max_resets``, and SETTINGS, PING, PRIORITY, unknown and empty DATA
    frames past ``max_control_frames``, end its connection with GOAWAY ENHANCE_YOUR_CALM.
    """

    enabled: bool = True
    max_concurrent_streams: int = 100  # SETTINGS_MAX_CONCURRENT_STREAMS
    initial_window_size: int = 65535  # request body bytes a stream may send ahead of the origin taking them
    max_resets: int = 200  # streams reset by the client per flood window
    max_control_frames: int = 1000  # SETTINGS, PING, PRIORITY, unknown and empty DATA frames per flood window
    flood_window: float = 10.0
    websocket: bool = True  # WebSockets over HTTP/2 (RFC 8441 extended CONNECT)


@dataclass(frozen=True, slots=True)
class Credentials:
    """A login the proxy presents to servers: read from a file or an environment variable, never inline.

    The password is left out of the dataclass's repr; ``source`` says where the login was read (a file's path or
    a variable's name, never its content), for messages.
    """

    user: str
    password: str = field(repr=False)
    source: str = ""


@dataclass(frozen=True, slots=True)
class OriginAuthConfig:
    """How the proxy logs in to a backend's servers: Basic or Digest to origin servers (a ``401``), and Basic or
    Digest to parent proxies when the backend is a forward proxy's ``parents`` (a ``407``); docs/configuration.md."""

    credentials: Credentials | None = None
    #: A challenged request is sent again only if its body was held whole: bodies up to this size are held while
    #: they are sent (0: only requests without a body are sent again).
    resubmit_body: int = 64 << 10


WEBSOCKET_MODES = ("session", "tunnel")


@dataclass(frozen=True, slots=True)
class HookConfig:
    """A WebSocket hook: the dotted name of an ``IWebSocketHook`` class and the keyword arguments it is built with."""

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WebSocketConfig:
    """How a backend's WebSocket upgrades are proxied (docs/websocket.md).

    ``tunnel`` relays bytes after the backend's 101; ``session`` terminates the
    client's WebSocket at the proxy and opens the proxy's own to the backend.
    The sizes, pings and compression apply to session mode; the handshake checks
    (``origins``, ``subprotocols``) and ``hooks`` that accept or refuse a handshake
    apply to both.
    """

    mode: str = "session"
    max_message_size: int = 16 << 20  # a larger message closes the connection with 1009
    max_frame_size: int = 16 << 20
    auto_fragment_size: int = 64 << 10  # sent messages are split so control frames can interleave
    open_handshake_timeout: float = 10.0
    close_handshake_timeout: float = 5.0
    client_ping_interval: float = 30.0  # 0 is off
    client_ping_timeout: float = 10.0
    # Short towards the backend: a server that hangs is found (and the session moved) within about 10 s,
    # before a client's own keepalive (commonly 20 s) would give up.
    backend_ping_interval: float = 5.0
    backend_ping_timeout: float = 5.0
    compression: bool = False  # permessage-deflate, negotiated on each side on its own
    origins: tuple[str, ...] = ()  # allowed Origin values; empty allows any
    subprotocols: tuple[str, ...] = ()  # allowed Sec-WebSocket-Protocol values; empty allows any
    hooks: tuple[HookConfig, ...] = ()
    # Interruptible sessions (session mode): a lost backend is replaced without the client noticing.
    resume: bool = True
    resume_timeout: float = 30.0  # give up (close the client with 1013) when no backend took over by then
    resume_codes: tuple[int, ...] = (1001, 1012, 1013)  # backend close codes that move the session
    session_buffer: int = 5 << 20  # client bytes held while a session moves; beyond it: 1013
    replay_messages: int = 0  # at-least-once: resend up to this many recent messages after a crash
    replay_window: float = 0.0  # ... sent within this many seconds before it (0: no age limit)
    session_header: str = "X-Rubris-Session"  # carries "<session id>; resume=<n>" on every backend handshake
    # Engine.IO-aware resume (session mode): "auto" for upgrades whose query carries EIO=, "on" for every session
    # of the backend (v4 unless EIO=3), "off" the generic resume only.
    engineio: str = "auto"
    drain_grace: float = 30.0  # tunnel mode: a tunnel whose server is drained or removed is closed after this


@dataclass(frozen=True, slots=True)
class BackendConfig:
    """A named pool of servers that requests are sent to."""

    name: str
    servers: tuple[ServerConfig, ...] = ()
    retries: int = 3
    balance: str = "roundrobin"
    redispatch: bool = True  # a retry goes to another server (else the same one)
    slow_start: float = 0.0  # seconds over which a server coming up ramps to its weight
    health: HealthCheckConfig = field(default_factory=HealthCheckConfig)
    passive: PassiveCheckConfig = field(default_factory=PassiveCheckConfig)
    cookie: CookieConfig | None = None
    stick: StickConfig | None = None
    websocket: WebSocketConfig = field(default_factory=WebSocketConfig)
    tls: TLSConfig = field(default_factory=TLSConfig)
    pin: bool = False  # bind each server connection to the client connection that first used it (besides NTLM)
    engineio_sticky: bool = True  # learn Engine.IO sids from handshake responses and keep each on its server
    engineio_sid_prefix: bool = False  # the client sees each sid prefixed with its server's token (no shared state)
    auth: OriginAuthConfig | None = None  # the proxy's own login to its servers; None: it presents none


#: The actions of ``http-request`` rules and of ``http-response`` rules, as HAProxy names them (docs/rules.md).
REQUEST_ACTIONS = ("set-header", "add-header", "del-header", "redirect", "deny", "allow", "rate-limit")
RESPONSE_ACTIONS = ("set-header", "add-header", "del-header")
#: What a header rule's value may name as ``%[NAME]``.
TEMPLATE_VARIABLES = ("src", "unique-id", "srv_name", "be_name", "fe_name")


@dataclass(frozen=True, slots=True)
class RuleConfig:
    """One ``http-request`` or ``http-response`` rule: an action, done when every condition holds.

    The keys an action takes are its own (``_tables.RULES``); the others keep these defaults.
    """

    action: str
    # Conditions (all must hold): the client's address in ``src`` and not in ``unless_src``, TLS or not, the path,
    # the method.
    src: tuple[str, ...] = ()
    unless_src: tuple[str, ...] = ()
    ssl: bool | None = None
    path_prefix: str | None = None
    methods: tuple[str, ...] = ()
    # set-header, add-header, del-header
    name: str = ""
    value: str = ""  # may name %[src], %[unique-id], %[srv_name], %[be_name], %[fe_name]; %% is a percent sign
    # redirect: exactly one of location, prefix and scheme
    location: str | None = None
    prefix: str | None = None
    scheme: str | None = None
    code: int = 302
    drop_query: bool = False
    # deny
    status: int = 403
    # rate-limit: over a sliding window of ``period``, per ``key``; 0 is no limit
    key: str = "src"  # "src", "hdr(NAME)" or "sid"
    requests: int = 0  # requests per period
    websockets: int = 0  # new WebSockets per period
    concurrent: int = 0  # requests in flight at once (a WebSocket while it is open)
    connections: int = 0  # client connections open at once (key src, a frontend's rule): one more is closed
    period: float = 1.0
    table_size: int = 100_000  # keys remembered; the least recently seen is forgotten first
    ipv6_mask: int = 64  # an IPv6 source counts as its /64 (one host's usual allotment)


@dataclass(frozen=True, slots=True)
class RouteConfig:
    """When a request matches every condition set here, send it to ``backend`` or refuse it with ``deny``."""

    host: str | None = None  # exact, case-insensitive, port ignored
    host_suffix: str | None = None
    host_prefix: str | None = None
    path_prefix: str | None = None
    path_regex: str | None = None
    header: str | None = None  # present, or equal to ``value`` when set
    value: str | None = None
    methods: tuple[str, ...] = ()
    websocket: bool | None = None  # an Upgrade: websocket request (or not)
    subprotocol: str | None = None  # a WebSocket upgrade offering this subprotocol
    subprotocols: tuple[str, ...] = ()  # allowlist for upgrades on this route (else the backend's)
    origins: tuple[str, ...] = ()  # allowed Origin values on this route (else the backend's)
    backend: str | None = None
    deny: int | None = None
    http_request: tuple[RuleConfig, ...] = ()  # run after the frontend's, when this route is chosen
    http_response: tuple[RuleConfig, ...] = ()  # run before the frontend's


@dataclass(frozen=True, slots=True)
class ForwardConfig:
    """A forward-proxy frontend's rules (docs/forward-proxy.md)."""

    allow_hosts: tuple[str, ...] = ()  # destinations allowed: "example.com", ".example.com" (suffix), "10.0.0.0/8"; empty: any
    deny_hosts: tuple[str, ...] = ()  # destinations refused, in the same forms; checked first
    connect_ports: tuple[int, ...] = (443,)  # ports CONNECT may reach
    clients: tuple[str, ...] = ()  # client networks (CIDR) allowed; empty: any
    users: Mapping[str, str] = field(default_factory=dict)  # user -> "pbkdf2_sha256$ITERATIONS$SALT$HASH"; empty: no auth
    resolve_timeout: float = 5.0
    parents: str | None = None  # a backend whose servers are parent proxies (balanced, health-checked)
    direct: tuple[str, ...] = ()  # destinations reached directly even with parents (same forms as allow-hosts)
    never_direct: bool = True  # with parents and none usable: 503 (False: go direct instead)


@dataclass(frozen=True, slots=True)
class ClientsConfig:
    """Client sessions: how a client is known across connections, and when it is forgotten."""

    identify: tuple[str, ...] = ("sid", "connection")  # "sid", "cookie(NAME)", "header(NAME)", "connection"
    expire: float = 60.0  # seconds without a request


@dataclass(frozen=True, slots=True)
class FrontendConfig:
    """A named set of listeners; routes (first match wins) choose a backend, else ``backend``.

    With ``forward`` set, the frontend is a forward proxy instead: requests name their own
    destination (absolute-form, or CONNECT), checked against its rules.
    """

    name: str
    listen: tuple[str, ...] = ("tcp:8080:interface=127.0.0.1",)  # loopback only unless told otherwise
    backend: str = "default"
    routes: tuple[RouteConfig, ...] = ()
    forward: ForwardConfig | None = None
    peers: str = "local"  # "local": each connection is a client; "proxied": proxies speak for their clients
    trusted_proxies: tuple[str, ...] = ()  # networks whose forwarded-for headers and PROXY headers are believed
    proxy_protocol: str = "off"  # "v1", "v2" or "any": connections start with a PROXY header (proxied only)
    forwarded_header: str = "x-forwarded-for"  # the header trusted proxies write: "x-forwarded-for" or "forwarded"
    max_reads: int = 0  # requests read per connection before closing it (0: no limit)
    max_writes: int = 0  # responses written per connection before closing it
    handlers: tuple[HookConfig, ...] = ()  # lifecycle handlers: connection, termination, client-destroy
    clients: ClientsConfig | None = None  # client sessions tracked; None: not tracked
    protocol: str | None = None  # dotted name of a ClientConnection (or ProxiedConnection) subclass to use
    tls: ListenerTLSConfig | None = None  # TLS on every listener but ``ssl:`` ones (which name their own files)
    http_request: tuple[RuleConfig, ...] = ()  # rules run on each request before routing (docs/rules.md)
    http_response: tuple[RuleConfig, ...] = ()  # rules run on each server response, after the route's
    unique_id_header: str | None = None  # a request id sent to the origin in this header, and logged
    http2: Http2Config = field(default_factory=Http2Config)


#: Where the demo opens the admin listener (and its stats page) when none is configured.
DEMO_ADMIN_LISTEN = "tcp:9000:interface=127.0.0.1"


@dataclass(frozen=True, slots=True)
class AdminConfig:
    """The admin listener: its JSON API (docs/admin.md). Off unless endpoints are given."""

    listen: tuple[str, ...] = ()
    token: str | None = None  # required as "Authorization: Bearer TOKEN" when set; needed off loopback


#: The most worker processes ``[process] workers`` takes.
MAX_WORKERS = 256
#: The shortest ``[process] worker-timeout``: the supervisor pings a worker twice within it.
MIN_WORKER_TIMEOUT = 0.1


@dataclass(frozen=True, slots=True)
class ProcessConfig:
    """How many processes serve: 1 is one process (no supervisor); more is a supervisor and that many workers
    (``auto`` in the file is read as the number of cores this process may run on). A worker that leaves a
    call of the supervisor unanswered for ``worker_timeout`` seconds is killed and restarted. After a live
    upgrade (docs/upgrade.md) the old process serves what it kept for at most ``upgrade_deadline`` seconds,
    then closes it as a graceful stop does."""

    workers: int = 1
    worker_timeout: float = 5.0
    upgrade_deadline: float = 300.0


@dataclass(frozen=True, slots=True)
class RedisAddress:
    """Where a cluster's Redis listens: TCP ``host:port``, or a UNIX socket ``path``; and its database number."""

    host: str = ""
    port: int = 6379
    path: str = ""  # a UNIX socket's path (then host is empty)
    db: int = 0

    def __str__(self) -> str:
        if self.path:
            return f"unix://{self.path}?db={self.db}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"redis://{host}:{self.port}/{self.db}"


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """Several proxy nodes sharing stick tables, learned Engine.IO sids and server admin state through Redis."""

    redis: RedisAddress = field(default_factory=RedisAddress)
    node: str = ""  # this node's name in the cluster; empty: the host name and process id


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    """The whole configuration: what :func:`rubrisproxy.service.build_service` needs."""

    frontends: tuple[FrontendConfig, ...]
    backends: dict[str, BackendConfig]
    timeouts: Timeouts = field(default_factory=Timeouts)
    limits: Limits = field(default_factory=Limits)
    pool: PoolSettings = field(default_factory=PoolSettings)
    access_log: AccessLogSettings = field(default_factory=AccessLogSettings)
    log: LogSettings = field(default_factory=LogSettings)
    shutdown_grace: float = 30.0
    shutdown_spread: float = 0.0  # WebSockets are closed at random moments over this many seconds
    shutdown_close_code: int = 1001  # 1001 going away, or 1012 service restart
    admin: AdminConfig = field(default_factory=AdminConfig)
    cluster: ClusterConfig | None = None  # None: one node, nothing shared (no Redis needed)
    websocket: WebSocketConfig = field(default_factory=WebSocketConfig)  # the top-level defaults for backends
    process: ProcessConfig = field(default_factory=ProcessConfig)
    demo: bool = False

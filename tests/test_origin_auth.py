"""The proxy's own login to servers: Basic and Digest answered for a backend with credentials, preemptive after a
server's first challenge, stale nonces, wrong passwords, bodies sent again, parent proxies' 407 on requests and
CONNECT; no credential in any log line or error message."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import re
from dataclasses import replace

from twisted.internet import defer, reactor, ssl
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.utils import getProcessOutputAndValue
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial import unittest
from twisted.trial.unittest import SkipTest
from twisted.web import resource, server

from rubrisproxy.admin._metrics import ProxyCollector
from rubrisproxy.admin._stats import backend_fields
from rubrisproxy.backend import Backend, Login, Server
from rubrisproxy.config import (
    BackendConfig,
    ConfigError,
    Credentials,
    OriginAuthConfig,
    ServerConfig,
    config_from_document,
)
from rubrisproxy.frontend import hash_password
from rubrisproxy.http import RequestHead, basic_credentials, challenges
from rubrisproxy.lifecycle import Termination
from rubrisproxy.origin import LoginAttempt, Verdict

from .helpers import EchoResource, MemoryAccessLog, ProxyTestCase, RawClient
from .test_cli import twistd
from .test_tls_origin import listen_tls_echo

USER, PASSWORD = "robot", "pa:ss w0rd-\u00e9"  # a colon and a non-ASCII letter in the password
#: Every form the password could leak in.
SECRETS = (PASSWORD, base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode(), PASSWORD.encode("utf-8").hex())
REALM = "digest@test"


def _params(value: str) -> dict[str, str]:
    """A Digest header's parameters, read by this test's own regular expression (not the proxy's parser)."""
    return {k.lower(): (q if q is not None and v.startswith('"') else v)
            for k, v, q in ((m.group(1), m.group(2), m.group(3))
                            for m in re.finditer(r'([\w*]+)=("((?:[^"\\]|\\.)*)"|[^,\s]+)', value))}


class DigestOrigin(resource.Resource):
    """An origin asking for Digest (RFC 7616, checked by this test's own code): nonces it issued, each nc counted
    up; a nonce made stale is refused with ``stale=true`` when the rest of the answer is right."""

    isLeaf = True

    def __init__(self, algorithm: str = "SHA-256", qop: str | None = "auth", password: str = PASSWORD) -> None:
        super().__init__()
        self.algorithm, self.qop, self.password = algorithm, qop, password
        self.nonces: dict[str, int] = {}
        self.stale: set[str] = set()
        self.seen: list[str | None] = []
        self.counts: list[int] = []  # the nc of each accepted answer

    def _challenge(self, request: server.Request, stale: bool = False) -> bytes:
        nonce = os.urandom(12).hex()
        self.nonces[nonce] = 0
        qop = f', qop="{self.qop}"' if self.qop else ""
        request.setResponseCode(401)
        request.setHeader(b"WWW-Authenticate", f'Digest realm="{REALM}"{qop}, algorithm={self.algorithm}, '
                          f'nonce="{nonce}", opaque="0paque"{", stale=true" if stale else ""}'.encode())
        request.setHeader(b"Content-Type", b"text/plain")
        return b"who are you?"

    def _hash(self, *parts: str) -> str:
        name = {"MD5": "md5", "SHA-256": "sha256", "SHA-512-256": "sha512_256"}[self.algorithm.removesuffix("-sess")]
        return hashlib.new(name, ":".join(parts).encode()).hexdigest()

    def expected(self, p: dict[str, str], method: str) -> str:
        secret = self._hash(p.get("username", ""), REALM, self.password)
        if self.algorithm.endswith("-sess"):
            secret = self._hash(secret, p["nonce"], p["cnonce"])
        target = self._hash(method, p["uri"])
        if self.qop:
            return self._hash(secret, p["nonce"], p["nc"], p["cnonce"], p["qop"], target)
        return self._hash(secret, p["nonce"], target)

    def render(self, request: server.Request) -> bytes:
        header = request.getHeader(b"authorization")
        self.seen.append(header.decode() if header else None)
        if not header or not header.startswith(b"Digest "):
            return self._challenge(request)
        p = _params(header.decode()[7:])
        nonce = p.get("nonce", "")
        if (nonce not in self.nonces or p.get("uri") != request.uri.decode() or p.get("realm") != REALM
                or p.get("opaque") != "0paque" or p.get("algorithm") != self.algorithm
                or p.get("response") != self.expected(p, request.method.decode())):
            return self._challenge(request)
        if nonce in self.stale:
            return self._challenge(request, stale=True)
        if self.qop:
            count = int(p["nc"], 16)
            if count <= self.nonces[nonce]:
                return self._challenge(request)  # a replayed count
            self.nonces[nonce] = count
            self.counts.append(count)
        body = request.content.read() if request.content is not None else b""
        return b"digest ok " + body


class BasicOrigin(resource.Resource):
    """An origin asking for Basic; counts the requests it saw with and without credentials."""

    isLeaf = True

    def __init__(self, scheme: bytes = b'Basic realm="basic@test"') -> None:
        super().__init__()
        self.scheme = scheme
        self.seen: list[bytes | None] = []

    def render(self, request: server.Request) -> bytes:
        header = request.getHeader(b"authorization")
        self.seen.append(header)
        good = b"Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode())
        if header != good:
            request.setResponseCode(401)
            request.setHeader(b"WWW-Authenticate", self.scheme)
            return b"no"
        body = request.content.read() if request.content is not None else b""
        return b"basic ok " + body


class SecretsNotLogged:
    """Mixed into every test here: whatever is logged while it runs must not hold the password in any form."""

    def setUp(self) -> None:
        self.logged: list[str] = []

        def observe(event: dict) -> None:  # type: ignore[type-arg]
            self.logged.append(f"{formatEvent(event)} {event!r}")

        globalLogPublisher.addObserver(observe)
        self.addCleanup(self._no_secrets, observe)  # type: ignore[attr-defined]
        super().setUp()  # type: ignore[misc]

    def _no_secrets(self, observe) -> None:  # type: ignore[no-untyped-def]
        globalLogPublisher.removeObserver(observe)
        for line in self.logged + [getattr(self, "access_lines", "")]:
            for secret in SECRETS:
                assert secret not in line, f"a credential was logged: {line[:300]!r}"


class OriginAuthTests(SecretsNotLogged, ProxyTestCase):
    resubmit = "1k"

    def setUp(self) -> None:
        super().setUp()
        self.credentials = self.mktemp()
        with open(self.credentials, "w", encoding="utf-8") as f:
            f.write(f"{USER}:{PASSWORD}\n")

    def start(self, origin: resource.Resource, extra: str = "", credentials: str | None = None) -> None:
        port = self.start_web_origin(origin)
        auth = f'[backends.app.auth]\ncredentials-file = "{credentials or self.credentials}"\n' \
               f'resubmit-body = "{self.resubmit}"\n' if credentials != "" else ""
        service = self.start_from_config(
            '[frontends.web]\nlisten = ["tcp:0:interface=127.0.0.1"]\nbackend = "app"\n'
            f'[backends.app]\nservers = ["127.0.0.1:{port}"]\n{extra}[backends.app.health]\ncheck = "none"\n{auth}')
        self.parts = service.parts
        frontend = self.parts.frontends["web"].frontend
        self.access_log = frontend.access_log = MemoryAccessLog()
        self.backend = self.parts.backends["app"]
        self.proxy_port = self.parts.frontends["web"].ports[0].getHost().port

    def marks(self) -> list[str]:
        self.access_lines = "\n".join(map(repr, self.access_log.entries))
        return [entry.auth for entry in self.access_log.entries]

    def counters(self) -> tuple[int, int, int]:
        login = self.backend.login
        return login.answered, login.failed, login.passed

    @defer.inlineCallbacks
    def get_twice(self, path: bytes = b"/x"):  # type: ignore[no-untyped-def]
        request = b"GET %s HTTP/1.1\r\nHost: app\r\n\r\n" % path
        responses = yield self.request(request + request, count=2)
        return responses

    @defer.inlineCallbacks
    def test_basic_is_answered_then_sent_up_front(self):  # type: ignore[no-untyped-def]
        origin = BasicOrigin()
        self.start(origin)
        first, second = yield self.get_twice()
        self.assertEqual((first.status, first.body, second.status, second.body), (200, b"basic ok ", 200, b"basic ok "))
        self.assertEqual([h is not None for h in origin.seen], [False, True, True])  # one round trip more, once
        self.assertEqual(self.marks(), ["answered", "preemptive"])
        self.assertEqual(self.counters(), (1, 0, 0))

    @defer.inlineCallbacks
    def test_digest_sha256_with_counted_nonce(self):  # type: ignore[no-untyped-def]
        origin = DigestOrigin("SHA-256")
        self.start(origin)
        first, second = yield self.get_twice(b"/a/b?c=d%20e")
        (third,) = yield self.request(b"GET /z HTTP/1.1\r\nHost: app\r\n\r\n")
        self.assertEqual([first.status, second.status, third.status], [200, 200, 200])
        self.assertEqual(origin.counts, [1, 2, 3])  # one nonce, its count going up
        self.assertEqual(len(origin.seen), 4)
        self.assertEqual(self.marks(), ["answered", "preemptive", "preemptive"])

    @defer.inlineCallbacks
    def test_digest_md5_and_the_sess_variants_and_no_qop(self):  # type: ignore[no-untyped-def]
        for algorithm, qop in (("MD5", "auth"), ("MD5-sess", "auth"), ("SHA-256-sess", "auth"), ("MD5", None),
                               ("SHA-512-256", "auth")):
            origin = DigestOrigin(algorithm, qop)
            self.start(origin)
            first, second = yield self.get_twice()
            self.assertEqual((first.status, second.status, first.body), (200, 200, b"digest ok "), algorithm)

    @defer.inlineCallbacks
    def test_a_stale_nonce_is_answered_again_without_counting_a_failure(self):  # type: ignore[no-untyped-def]
        origin = DigestOrigin("SHA-256")
        self.start(origin)
        (first,) = yield self.request(b"GET /1 HTTP/1.1\r\nHost: app\r\n\r\n")
        origin.stale.update(origin.nonces)  # every nonce so far is stale now
        (second,) = yield self.request(b"GET /2 HTTP/1.1\r\nHost: app\r\n\r\n")
        self.assertEqual((first.status, second.status), (200, 200))
        self.assertEqual(len(origin.seen), 4)  # challenge, answer; stale preemptive, answer with the new nonce
        self.assertEqual(self.counters(), (2, 0, 0))
        self.assertEqual(self.marks(), ["answered", "answered"])

    @defer.inlineCallbacks
    def test_a_wrong_password_gives_the_client_the_401(self):  # type: ignore[no-untyped-def]
        origin = DigestOrigin("SHA-256", password="something else")
        self.start(origin)
        first, second = yield self.get_twice()
        self.assertEqual((first.status, first.body), (401, b"who are you?"))
        self.assertIn(b"Digest", first.header(b"www-authenticate"))
        self.assertEqual(second.status, 401)
        self.assertEqual(self.counters(), (2, 2, 0))
        self.assertEqual(self.marks(), ["failed", "failed"])
        self.assertEqual(len(origin.seen), 4)  # nothing sent up front after a refusal

    @defer.inlineCallbacks
    def test_a_basic_wrong_password_too(self):  # type: ignore[no-untyped-def]
        wrong = self.mktemp()
        with open(wrong, "w") as f:
            f.write(f"{USER}:not-{PASSWORD}")
        origin = BasicOrigin()
        self.start(origin, credentials=wrong)
        (response,) = yield self.request(b"GET /x HTTP/1.1\r\nHost: app\r\n\r\n")
        self.assertEqual((response.status, response.body), (401, b"no"))
        self.assertEqual(self.counters(), (1, 1, 0))

    @defer.inlineCallbacks
    def test_a_small_body_is_sent_again(self):  # type: ignore[no-untyped-def]
        origin = DigestOrigin("SHA-256")
        self.start(origin)
        body = b"x" * 1000
        (response,) = yield self.request(b"POST /p HTTP/1.1\r\nHost: app\r\nContent-Length: 1000\r\n\r\n" + body)
        self.assertEqual((response.status, response.body), (200, b"digest ok " + body))
        chunked = b"POST /c HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        origin.stale.update(origin.nonces)
        (response,) = yield self.request(chunked)
        self.assertEqual((response.status, response.body), (200, b"digest ok hello world"))
        self.assertEqual(self.marks(), ["answered", "answered"])

    @defer.inlineCallbacks
    def test_a_body_past_the_bound_gets_the_401_and_later_requests_go_up_front(self):  # type: ignore[no-untyped-def]
        origin = BasicOrigin()
        self.start(origin)
        body = b"y" * 1025  # resubmit-body is 1k
        (response,) = yield self.request(b"POST /p HTTP/1.1\r\nHost: app\r\nContent-Length: 1025\r\n\r\n" + body)
        self.assertEqual(response.status, 401)
        (response,) = yield self.request(b"POST /p HTTP/1.1\r\nHost: app\r\nContent-Length: 1025\r\n\r\n" + body)
        self.assertEqual((response.status, response.body), (200, b"basic ok " + body))
        chunks = b"".join(b"100\r\n" + b"z" * 256 + b"\r\n" for _ in range(5)) + b"0\r\n\r\n"  # 1280 bytes, no length
        origin.seen.clear()
        self.backend.login.forget(self.backend.servers[0])
        (response,) = yield self.request(b"POST /c HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks)
        self.assertEqual(response.status, 401)
        self.assertEqual(self.marks(), ["passed", "preemptive", "passed"])
        self.assertEqual(self.counters(), (0, 0, 2))

    @defer.inlineCallbacks
    def test_a_large_or_close_delimited_challenge_is_not_read_to_its_end(self):  # type: ignore[no-untyped-def]
        class Large(BasicOrigin):
            def render(self, request: server.Request) -> bytes:
                answer = super().render(request)
                return answer * 100_000 if request.code == 401 else answer  # 200 KB: past the drain's bound

        origin = Large()
        self.start(origin)
        (response,) = yield self.request(b"GET /x HTTP/1.1\r\nHost: app\r\n\r\n")
        self.assertEqual((response.status, response.body), (200, b"basic ok "))
        self.assertEqual(self.parts.pool.created, 2)  # the challenge's connection was closed, not drained
        seen: list[bytes] = []

        class CloseDelimited(Protocol):
            def dataReceived(self, data: bytes) -> None:
                seen.append(data)
                if b"Authorization: Basic" in data:
                    self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                else:  # a challenge whose body ends with the connection, which stays open
                    self.transport.write(b'HTTP/1.1 401 No\r\nWWW-Authenticate: Basic realm="c"\r\n\r\nmore to')

        port = self.start_raw_origin(CloseDelimited)
        self.backend.login.forget(self.backend.servers[0])
        self.backend.servers[0].config = replace(self.backend.servers[0].config, port=port)
        self.backend.servers[0].set_tls(None)
        (response,) = yield self.request(b"GET /y HTTP/1.1\r\nHost: app\r\n\r\n")
        self.assertEqual((response.status, response.body), (200, b"ok"))
        self.assertEqual(len(seen), 2)

    @defer.inlineCallbacks
    def test_the_clients_own_authorization_wins(self):  # type: ignore[no-untyped-def]
        origin = BasicOrigin()
        self.start(origin)
        (response,) = yield self.request(b"GET /x HTTP/1.1\r\nHost: app\r\nAuthorization: Basic Y2xpZW50OnB3\r\n\r\n")
        self.assertEqual(response.status, 401)  # the client's credentials, the client's challenge
        self.assertEqual(origin.seen, [b"Basic Y2xpZW50OnB3"])
        self.assertEqual(self.counters(), (0, 0, 0))
        self.assertEqual(self.marks(), [""])

    @defer.inlineCallbacks
    def test_without_credentials_nothing_changes(self):  # type: ignore[no-untyped-def]
        origin = BasicOrigin()
        self.start(origin, credentials="")
        self.assertIsNone(self.backend.login)
        (response,) = yield self.request(b"GET /x HTTP/1.1\r\nHost: app\r\nAuthorization: Basic Y2xpZW50OnB3\r\n\r\n")
        self.assertEqual((response.status, origin.seen), (401, [b"Basic Y2xpZW50OnB3"]))
        self.assertIsNone(backend_fields(self.backend)["auth"])

    @defer.inlineCallbacks
    def test_ntlm_is_still_the_clients_and_pins_the_connection(self):  # type: ignore[no-untyped-def]
        origin = BasicOrigin(scheme=b"NTLM")
        self.start(origin)
        client = yield self.connect()
        client.send(b"GET /x HTTP/1.1\r\nHost: app\r\n\r\n")
        (response,) = yield client.responses(1)
        self.assertEqual((response.status, response.header(b"www-authenticate")), (401, b"NTLM"))
        (connection,) = self.parts.frontends["web"].frontend.connections
        self.assertIsNotNone(connection.pinned)
        self.assertEqual(self.counters(), (0, 0, 1))

    @defer.inlineCallbacks
    def test_counters_in_the_admin_api_and_metrics(self):  # type: ignore[no-untyped-def]
        self.start(BasicOrigin())
        yield self.get_twice()
        self.assertEqual(backend_fields(self.backend)["auth"], {"answered": 1, "failed": 0, "passed": 0})
        collector = ProxyCollector([], {"app": self.backend}, self.parts.budget)
        (family,) = [m for m in collector.collect() if m.name == "rubrisproxy_backend_auth_challenges"]
        values = {s.labels["outcome"]: s.value for s in family.samples if s.name.endswith("_total")}
        self.assertEqual(values, {"answered": 1, "failed": 0, "passed": 0})

    @defer.inlineCallbacks
    def test_curl_and_the_proxy_pass_the_same_digest_check(self):  # type: ignore[no-untyped-def]
        """The test origin's Digest check, validated by curl's (a client nobody here wrote); the proxy's answers
        pass that same check (above), so both computations agree."""
        for algorithm in ("MD5", "SHA-256"):
            origin = DigestOrigin(algorithm)
            port = self.start_web_origin(origin)
            out, err, code = yield getProcessOutputAndValue(
                "curl", ["-sS", "--max-time", "10", "--digest", "-u", f"{USER}:{PASSWORD}",
                         f"http://127.0.0.1:{port}/curl?x=1"], env=dict(os.environ))
            self.assertEqual((code, out), (0, b"digest ok "), err)
            out, err, code = yield getProcessOutputAndValue(
                "curl", ["-sS", "--max-time", "10", "--digest", "-u", f"{USER}:wrong", "-o", "/dev/null",
                         "-w", "%{http_code}", f"http://127.0.0.1:{port}/curl"], env=dict(os.environ))
            self.assertEqual(out, b"401", algorithm)


#: httpbin hashes the request's decoded path, not its target as sent: a password in its path must need no escape.
HTTPBIN_PASSWORD = "Pa55-word"


class HttpbinTests(SecretsNotLogged, ProxyTestCase):
    """The proxy's Digest against httpbin's (a server nobody here wrote: Flask and werkzeug, served by WSGI)."""

    def setUp(self) -> None:
        super().setUp()
        try:
            from httpbin import app  # noqa: PLC0415 - an optional test dependency
        except ImportError:
            if os.environ.get("CI"):
                raise
            raise SkipTest("httpbin is not installed (pip install '.[test]')") from None
        from twisted.web.wsgi import WSGIResource  # noqa: PLC0415 - with httpbin only

        pool = reactor.getThreadPool()
        self.port = self.start_web_origin(WSGIResource(reactor, pool, app))
        self.credentials = self.mktemp()
        with open(self.credentials, "w") as f:
            f.write(f"{USER}:{HTTPBIN_PASSWORD}\n")

    def start(self, credentials: str) -> None:
        service = self.start_from_config(
            '[frontends.web]\nlisten = ["tcp:0:interface=127.0.0.1"]\nbackend = "app"\n'
            f'[backends.app]\nservers = ["127.0.0.1:{self.port}"]\n[backends.app.health]\ncheck = "none"\n'
            f'[backends.app.auth]\ncredentials-file = "{credentials}"\n')
        self.proxy_port = service.parts.frontends["web"].ports[0].getHost().port
        self.login = service.parts.backends["app"].login
        self.server = service.parts.backends["app"].servers[0]

    @defer.inlineCallbacks
    def test_httpbin_digest(self):  # type: ignore[no-untyped-def]
        self.start(self.credentials)
        for algorithm in ("MD5", "SHA-256"):
            path = f"/digest-auth/auth/{USER}/{HTTPBIN_PASSWORD}/{algorithm}".encode()
            (response,) = yield self.request(b"GET %s HTTP/1.1\r\nHost: app\r\n\r\n" % path)
            self.assertEqual(response.status, 200, response.body)
            self.assertEqual(json.loads(response.body), {"authenticated": True, "user": USER})
            self.login.forget(self.server)  # else the next is sent up front with this challenge's algorithm
        self.assertEqual((self.login.answered, self.login.failed), (2, 0))

    @defer.inlineCallbacks
    def test_httpbin_refuses_a_wrong_password(self):  # type: ignore[no-untyped-def]
        self.start(self.credentials)
        (response,) = yield self.request(b"GET /digest-auth/auth/robot/other/SHA-256 HTTP/1.1\r\nHost: app\r\n\r\n")
        self.assertEqual(response.status, 401)
        self.assertEqual((self.login.answered, self.login.failed), (1, 1))


class ParentAuthTests(SecretsNotLogged, ProxyTestCase):
    """rubrisproxy -> a parent proxy asking for Basic (rubrisproxy with a users file) -> origin."""

    def setUp(self) -> None:
        super().setUp()
        self.origin_port = self.start_web_origin(EchoResource())
        ca_pem, self.tls_port = listen_tls_echo(self)
        self.ca = ssl.Certificate.loadPEM(ca_pem)
        users = self.mktemp()
        with open(users, "w") as f:
            f.write(f"{USER}:{hash_password(PASSWORD, b'salt1234', 1000)}\n")
        self.parent = self.start_from_config(
            '[frontends.out]\nmode = "forward"\nlisten = ["tcp:0:interface=127.0.0.1"]\n'
            f'[frontends.out.forward]\nconnect-ports = [{self.tls_port}]\nallow-hosts = ["127.0.0.1"]\n'
            f'users-file = "{users}"\n').parts
        self.parent_log = self.parent.frontends["out"].frontend.access_log = MemoryAccessLog()

    def child(self, password: str = PASSWORD, resubmit: str = "64k") -> None:
        credentials = self.mktemp()
        with open(credentials, "w") as f:
            f.write(f"{USER}:{password}\n")
        port = self.parent.frontends["out"].ports[0].getHost().port
        parts = self.start_from_config(
            '[frontends.out]\nmode = "forward"\nlisten = ["tcp:0:interface=127.0.0.1"]\n'
            f'[frontends.out.forward]\nparents = "parents"\nconnect-ports = [{self.tls_port}]\n'
            'allow-hosts = ["127.0.0.1"]\n'
            f'[backends.parents]\nservers = ["127.0.0.1:{port}"]\n[backends.parents.health]\ncheck = "none"\n'
            f'[backends.parents.auth]\ncredentials-file = "{credentials}"\nresubmit-body = "{resubmit}"\n').parts
        self.access_log = parts.frontends["out"].frontend.access_log = MemoryAccessLog()
        self.login = parts.backends["parents"].login
        self.proxy_port = parts.frontends["out"].ports[0].getHost().port

    @defer.inlineCallbacks
    def connect_through(self):  # type: ignore[no-untyped-def]
        client = RawClient()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.proxy_port), client)
        self.addCleanup(lambda: client.transport.abortConnection() if client.transport.connected else None)
        client.send(f"CONNECT 127.0.0.1:{self.tls_port} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        yield client.until(lambda data: b"\r\n\r\n" in data)
        return client

    @defer.inlineCallbacks
    def test_absolute_form_requests_log_in_to_the_parent(self):  # type: ignore[no-untyped-def]
        self.child()
        url = f"http://127.0.0.1:{self.origin_port}/headers".encode()
        # The client's own Proxy-Authorization (good for the parent, as it happens) is the child's, never passed on:
        # the parent's first answer is still a 407.
        own = b"Proxy-Authorization: " + basic_credentials(USER, PASSWORD) + b"\r\n"
        request = b"GET " + url + b" HTTP/1.1\r\nHost: x\r\n" + own + b"\r\n"
        first, second = yield self.request(request + request, count=2)
        self.assertEqual((first.status, second.status), (200, 200))
        self.assertNotIn(b"proxy-authorization", first.body.lower())  # the parent took the proxy's, passed none on
        self.assertEqual([e.status for e in self.parent_log.entries], [407, 200, 200])  # then up front
        self.assertEqual([e.auth for e in self.access_log.entries], ["answered", "preemptive"])
        self.assertEqual((self.login.answered, self.login.failed), (1, 0))

    @defer.inlineCallbacks
    def test_connect_logs_in_to_the_parent(self):  # type: ignore[no-untyped-def]
        self.child()
        for _ in range(2):
            client = yield self.connect_through()
            self.assertTrue(client.received.startswith(b"HTTP/1.1 200"), client.received)
            client.received = b""
            client.transport.startTLS(ssl.optionsForClientTLS("127.0.0.1", trustRoot=self.ca))
            client.send(b"GET /inside HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            received = yield client.closed
            self.assertTrue(received.endswith(b"path=/inside"))
        yield self.poll(lambda: len(self.parent_log.entries) == 3, "the parent logged its tunnels")
        self.assertEqual(sorted(e.status for e in self.parent_log.entries), [200, 200, 407])
        self.assertEqual((self.login.answered, self.login.failed), (1, 0))

    @defer.inlineCallbacks
    def test_a_407_to_a_body_not_held_is_a_502_then_credentials_go_up_front(self):  # type: ignore[no-untyped-def]
        self.child(resubmit="0")
        url = f"http://127.0.0.1:{self.origin_port}/echo".encode()
        request = b"POST " + url + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
        first, second = yield self.request(request + request, count=2)
        self.assertEqual((first.status, second.status, second.body), (502, 200, b"hello"))
        self.assertEqual([e.auth for e in self.access_log.entries], ["passed", "preemptive"])
        self.assertTrue(any("answered 407: the request's body was not held" in line for line in self.logged))

    @defer.inlineCallbacks
    def test_a_second_407_is_a_502(self):  # type: ignore[no-untyped-def]
        self.child(password="not the one")
        url = f"http://127.0.0.1:{self.origin_port}/x".encode()
        (response,) = yield self.request(b"GET " + url + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(response.status, 502)
        client = yield self.connect_through()
        self.assertTrue(client.received.startswith(b"HTTP/1.1 502"), client.received)
        for message in (response.body, client.received):
            for secret in SECRETS + ("not the one",):
                self.assertNotIn(secret.encode(), message)
        self.assertEqual([e.termination for e in self.access_log.entries], [Termination.AUTH_FAILED.value] * 2)
        self.assertEqual([e.auth for e in self.access_log.entries], ["failed", "failed"])
        self.assertEqual((self.login.answered, self.login.failed), (2, 2))
        self.assertTrue(any("answered 407: the proxy's credentials were refused" in line for line in self.logged))


class LoginUnitTests(unittest.TestCase):
    """The rules of a request's login, without a network."""

    def setUp(self) -> None:
        config = config_from_document({"backends": {"a": {"servers": ["127.0.0.1:9"]}}})
        self.assertIsNone(config.backends["a"].auth)
        self.login = Login(OriginAuthConfig(Credentials(USER, PASSWORD, "test"), resubmit_body=10), lambda: "c")
        self.server = Server(ServerConfig("s", "127.0.0.1", 9), "a")

    def attempt(self, body: bytes = b"") -> LoginAttempt:
        head = RequestHead(b"POST" if body else b"GET", b"/", b"1.1", [])
        head.has_body, head.content_length = bool(body), len(body) if body else None
        return LoginAttempt(self.login, False, head.method, b"/", head)

    def challenge(self, value: bytes) -> list[tuple[bytes, bytes]]:
        return [(b"WWW-Authenticate", value)]

    def test_at_most_two_sends_after_challenges(self) -> None:
        attempt = self.attempt()
        stale = self.challenge(b'Digest realm="r", nonce="n2", qop="auth", stale=true')
        self.assertIs(attempt.challenged(self.server, self.challenge(b'Digest realm="r", nonce="n1", qop=auth'), True),
                      Verdict.RESUBMIT)
        attempt.head(self.server, b"GET / HTTP/1.1\r\n\r\n")
        self.assertIs(attempt.challenged(self.server, stale, True), Verdict.RESUBMIT)
        attempt.head(self.server, b"GET / HTTP/1.1\r\n\r\n")
        self.assertIs(attempt.challenged(self.server, stale, True), Verdict.FAIL)

    def test_a_body_over_the_bound_is_not_held(self) -> None:
        self.assertIsNone(self.attempt(b"x" * 11).body)
        attempt = self.attempt(b"x" * 10)
        attempt.hold(b"x" * 10)
        self.assertEqual(attempt.body, [b"x" * 10])
        attempt.hold(b"x")
        self.assertIsNone(attempt.body)

    def test_challenges_are_read_as_the_grammar_says(self) -> None:
        read = challenges([(b"WWW-Authenticate", b'Newauth realm="apps", type=1, title="Login to \\"apps\\"", '
                                                 b'Basic realm="simple"'),
                           (b"www-authenticate", b"Negotiate a87421000492aa874209af8bc028==, NTLM")], b"www-authenticate")
        self.assertEqual([c.scheme for c in read], ["newauth", "basic", "negotiate", "ntlm"])
        self.assertEqual(read[0].params["title"], 'Login to "apps"')
        self.assertEqual(read[1].realm, "simple")

    def test_hostile_challenges_are_read_without_failing(self) -> None:
        rng = random.Random(7)
        alphabet = b'Digest Basic realm="=,\\ \t;nonce=algorithm=SHA-256-sess qop=auth-int stale=true \x00\xff'
        for _ in range(2000):
            value = bytes(rng.choice(alphabet) for _ in range(rng.randrange(60)))
            attempt = self.attempt()
            self.assertIn(attempt.challenged(self.server, self.challenge(value), True), tuple(Verdict))
            answer = attempt.head(self.server, b"GET / HTTP/1.1\r\n\r\n")
            self.assertNotIn(b"\n\r\n", answer[:-4])  # one header line at most, whatever was read
        many = b", ".join(b'Basic realm="%d"' % i for i in range(5000))
        self.assertEqual(len(challenges(self.challenge(many), b"www-authenticate")), 5000)
        for i in range(3000):  # each realm remembered; the table is bounded
            self.login.learn(Server(ServerConfig("s", "127.0.0.1", 9), "a"), challenges(
                self.challenge(b'Basic realm="%d"' % i), b"www-authenticate")[0])
        self.assertLessEqual(len(self.login._spaces), 1024)

    def test_a_reload_keeps_what_servers_asked_while_the_login_stays(self) -> None:
        config = BackendConfig("a", (ServerConfig("s", "127.0.0.1", 9),), auth=OriginAuthConfig(
            Credentials(USER, PASSWORD, "test")))
        backend = Backend(config)
        login = backend.login
        self.assertIsNotNone(login)
        backend.reconfigure(replace(config, retries=1))
        self.assertIs(backend.login, login)
        backend.reconfigure(replace(config, auth=OriginAuthConfig(Credentials(USER, "new", "test"))))
        self.assertIsNot(backend.login, login)
        backend.reconfigure(replace(config, auth=None))
        self.assertIsNone(backend.login)

    def test_realms_are_kept_per_server(self) -> None:
        other = Server(ServerConfig("t", "127.0.0.1", 10), "a")
        attempt = self.attempt()
        attempt.challenged(self.server, self.challenge(b'Basic realm="x"'), True)
        self.assertIsNotNone(self.login.authorization(self.server, b"GET", b"/"))
        self.assertIsNone(self.login.authorization(other, b"GET", b"/"))


class CredentialsConfigTests(SecretsNotLogged, unittest.TestCase):
    """Credentials come from a file or the environment, never inline; what is wrong is said without them."""

    def load(self, auth: dict[str, object]):  # type: ignore[no-untyped-def]
        return config_from_document({"backends": {"a": {"servers": ["127.0.0.1:9"], "auth": auth}}}).backends["a"].auth

    def assertRefused(self, auth: dict[str, object], key: str) -> str:
        with self.assertRaises(ConfigError) as caught:
            self.load(auth)
        self.assertEqual(caught.exception.key, f"backends.a.auth.{key}")
        message = str(caught.exception)
        for secret in SECRETS:
            self.assertNotIn(secret, message)
        self.logged.append(message)
        return message

    def test_file_and_environment(self) -> None:
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write(f"{USER}:{PASSWORD}\r\nignored\n")
        auth = self.load({"credentials-file": path, "resubmit-body": "16k"})
        self.assertEqual((auth.credentials.user, auth.credentials.password, auth.resubmit_body), (USER, PASSWORD, 16384))
        self.assertNotIn(PASSWORD, repr(auth))
        os.environ["RUBRIS_TEST_CREDENTIALS"] = f"{USER}:{PASSWORD}"
        self.addCleanup(os.environ.pop, "RUBRIS_TEST_CREDENTIALS")
        self.assertEqual(self.load({"credentials-env": "RUBRIS_TEST_CREDENTIALS"}).credentials.password, PASSWORD)
        self.assertEqual(OriginAuthConfig().resubmit_body, 64 << 10)

    def test_what_is_refused(self) -> None:
        path = self.mktemp()
        self.assertIn("cannot read", self.assertRefused({"credentials-file": path}, "credentials-file"))
        with open(path, "w") as f:
            f.write(PASSWORD.replace(":", ""))  # no colon: a password alone
        self.assertRefused({"credentials-file": path}, "credentials-file")
        with open(path, "w") as f:
            f.write(f"{USER}:{PASSWORD}\x00")
        self.assertRefused({"credentials-file": path}, "credentials-file")
        self.assertIn("is not set", self.assertRefused({"credentials-env": "RUBRIS_NOT_SET_ANYWHERE"}, "credentials-env"))
        self.assertRefused({}, "credentials-file")
        self.assertRefused({"credentials-file": path, "credentials-env": "X"}, "credentials-env")
        self.assertRefused({"credentials": f"{USER}:{PASSWORD}"}, "credentials")  # never inline
        self.assertRefused({"credentials-env": "RUBRIS_NOT_SET_ANYWHERE", "resubmit-body": "1g"}, "credentials-env")

    @defer.inlineCallbacks
    def test_twistd_exits_with_one_line(self):  # type: ignore[no-untyped-def]
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write('[backends.app]\nservers = ["127.0.0.1:9"]\n[backends.app.auth]\n'
                    'credentials-file = "/nonexistent/credentials"\n')
        command = yield twistd(self, "--config", path)
        self.assertNotEqual(command.code, 0)
        lines = command.err.decode().splitlines()
        self.assertEqual(len(lines), 1, command.err)
        self.assertTrue(lines[0].startswith("rubrisproxy: configuration error: backends.app.auth.credentials-file: "))

"""What a client's connection leaves behind as it ends: nothing for Python's cyclic collector, whose full pass
walks every long-lived connection the proxy holds (see also test_resume's for WebSockets and legs)."""

from __future__ import annotations

import gc
import weakref

from h2.errors import ErrorCodes
from twisted.internet import defer

from .h2client import H2Client
from .helpers import our_cyclic_garbage, run_reactor_for
from .test_http2 import H2Case, _Silent


def _dump() -> None:
    gc.set_debug(gc.DEBUG_SAVEALL)
    gc.collect()
    gc.set_debug(0)
    names = sorted({f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.garbage})
    print("\nGARBAGE", len(gc.garbage), names)
    ids = {id(o) for o in gc.garbage}
    for o in gc.garbage:
        if type(o).__module__.startswith(("rubrisproxy", "twisted", "h2")):
            print("  OBJ", type(o).__qualname__, [type(r).__qualname__ + ("." + r.__func__.__name__ if hasattr(r, "__func__") else "") for r in gc.get_referents(o) if id(r) in ids])
            if isinstance(getattr(o, "__dict__", None), dict):
                print("     DICT", [(k, type(v).__qualname__) for k, v in vars(o).items() if id(v) in ids])
    gc.garbage.clear()


def _chain(obj) -> None:
    import types
    seen = {id(obj)}
    frontier = [(obj, [])]
    ignore = {id(frontier), id(seen)}
    for depth in range(12):
        nxt = []
        for o, path in frontier:
            for r in gc.get_referrers(o):
                if id(r) in seen or id(r) in ignore or isinstance(r, types.FrameType) or r is frontier or r is nxt:
                    continue
                seen.add(id(r))
                p = path + [type(r).__qualname__]
                if isinstance(r, types.ModuleType) or type(r).__module__.startswith(("twisted.trial", "unittest")):
                    print("ROOT", " <- ".join(p), str(r)[:100])
                    continue
                nxt.append((r, p))
        frontier = nxt
        if not frontier:
            break
    print("DONE depth", depth, len(frontier))
    for o, p in frontier[:20]:
        print("  FRONT", " <- ".join(p), str(o)[:100])


class H2CycleTests(H2Case):
    @defer.inlineCallbacks
    def test_streams_answered_then_client_close(self):  # type: ignore[no-untyped-def]
        self.proxy()
        client = yield self.h2()
        first = client.request(b"/warm")
        yield self.done(client, first)
        self.collector_off()
        streams = [client.request(b"/%d" % i) for i in range(4)]
        yield self.done(client, *streams)
        connection = weakref.ref(next(iter(self.frontend.connections)).relay)
        client.transport.loseConnection()
        yield self.poll(lambda: not self.frontend.connections, "the connection gone")
        _dump()
        yield run_reactor_for(5)
        _dump()
        obj = connection()
        if obj is not None:
            _chain(obj)
        del obj
        self.assertIsNone(connection())
        self.assertEqual(our_cyclic_garbage(), [])

    @defer.inlineCallbacks
    def test_reset_mid_response(self):  # type: ignore[no-untyped-def]
        self.proxy()
        client = yield self.h2(H2Client(acknowledge=False))
        self.collector_off()
        stream = client.request(b"/big/5000000")
        yield self.poll(lambda: client.answer(stream).body, "the response begun")
        client.reset(stream)
        yield self.poll(lambda: self.access_log.entries, "the exchange ended")
        yield run_reactor_for(5)
        _dump()
        client.transport.loseConnection()
        yield self.poll(lambda: not self.frontend.connections, "the connection gone")
        _dump()

    @defer.inlineCallbacks
    def test_goaway(self):  # type: ignore[no-untyped-def]
        self.proxy()
        client = yield self.h2()
        self.collector_off()
        stream = client.request(b"/one")
        yield self.done(client, stream)
        client.h2.close_connection(ErrorCodes.NO_ERROR)
        client._flush()
        yield self.poll(lambda: not self.frontend.connections, "the connection gone")
        yield run_reactor_for(5)
        _dump()

    @defer.inlineCallbacks
    def test_timeout(self):  # type: ignore[no-untyped-def]
        self.proxy(http_keep_alive=0.3)
        client = yield self.h2()
        self.collector_off()
        stream = client.request(b"/one")
        yield self.done(client, stream)
        yield self.poll(lambda: not self.frontend.connections, "the connection gone", ticks=2000)
        yield run_reactor_for(5)
        _dump()


from .helpers import ProxyTestCase, get  # noqa: E402


class Http1CycleTests(ProxyTestCase):
    @defer.inlineCallbacks
    def test_keepalive_then_close(self):  # type: ignore[no-untyped-def]
        frontend = self.start_proxy(self.start_web_origin())
        client = yield self.connect()
        client.send(get(b"/warm"))
        yield client.responses(1)
        self.collector_off()
        client.send(get(b"/a") + get(b"/b") + get(b"/status/404"))
        yield client.responses(4)
        yield run_reactor_for(3)
        print("\nafter requests, open:")
        _dump()
        connection = weakref.ref(next(iter(frontend.connections)))
        client.transport.loseConnection()
        yield self.poll(lambda: not frontend.connections, "the connection gone")
        yield run_reactor_for(3)
        print("after close:")
        _dump()
        obj = connection()
        if obj is not None:
            _chain(obj)
        del obj

    @defer.inlineCallbacks
    def test_refused_400(self):  # type: ignore[no-untyped-def]
        frontend = self.start_proxy(self.start_web_origin())
        self.collector_off()
        client = yield self.connect()
        client.send(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
        yield client.responses(1)
        yield self.poll(lambda: not frontend.connections, "the connection gone")
        yield run_reactor_for(3)
        _dump()

    @defer.inlineCallbacks
    def test_502(self):  # type: ignore[no-untyped-def]
        from twisted.internet import reactor
        port = reactor.listenTCP(0, __import__("twisted.internet.protocol", fromlist=["Factory"]).Factory(), interface="127.0.0.1")
        dead = port.getHost().port
        yield port.stopListening()
        frontend = self.start_proxy(dead, retries=0)
        client = yield self.connect()
        self.collector_off()
        client.send(get(b"/x"))
        (r,) = (yield client.responses(1))
        print("\nstatus", r.status)
        yield run_reactor_for(3)
        _dump()
        client.transport.loseConnection()
        yield self.poll(lambda: not frontend.connections, "the connection gone")
        yield run_reactor_for(3)
        _dump()

    @defer.inlineCallbacks
    def test_504(self):  # type: ignore[no-untyped-def]
        frontend = self.start_proxy(self.start_raw_origin(_Silent), server=0.3)
        client = yield self.connect()
        self.collector_off()
        client.send(get(b"/x"))
        (r,) = yield client.responses(1)
        print("\nstatus", r.status)
        yield run_reactor_for(3)
        _dump()
        client.transport.loseConnection()
        yield self.poll(lambda: not frontend.connections, "the connection gone")
        yield run_reactor_for(3)
        _dump()

    @defer.inlineCallbacks
    def test_pool_closed_by_origin(self):  # type: ignore[no-untyped-def]
        frontend = self.start_proxy(self.start_web_origin())
        client = yield self.connect()
        self.collector_off()
        client.send(get(b"/x"))
        yield client.responses(1)
        client.transport.loseConnection()
        yield self.poll(lambda: not frontend.connections, "the connection gone")
        yield run_reactor_for(3)
        print("\nclient gone, pool idle", frontend.pool.idle_count)
        _dump()
        for site in self.web_sites:
            pass
        (idle,) = [c for conns in frontend.pool._idle.values() for c in conns]
        ref = weakref.ref(idle)
        # the origin closes its side
        from twisted.internet import reactor
        for d in list(reactor.getReaders()):
            if getattr(d, "getHost", None) and d.getHost().port == idle.transport.getPeer().port and d is not idle.transport:
                d.loseConnection()
        del idle
        yield self.poll(lambda: not frontend.pool.idle_count, "idle closed")
        yield run_reactor_for(3)
        _dump()
        print("alive", ref() is not None)

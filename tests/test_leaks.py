"""After many requests, errors and client aborts, nothing is left behind."""

from __future__ import annotations

from twisted.internet import defer, reactor

from rubrisproxy.config import PoolSettings

from .helpers import ProxyTestCase, get


def our_delayed_calls() -> list[object]:
    # a compiled module's bound method has no __module__ (rubrisproxy._native): its instance's type has
    return [c for c in reactor.getDelayedCalls() if "rubrisproxy" in (getattr(c.func, "__module__", None) or "") or
            "rubrisproxy" in type(getattr(c.func, "__self__", None)).__module__]


class LeakTests(ProxyTestCase):
    @defer.inlineCallbacks
    def test_nothing_left_after_mixed_traffic(self):
        frontend = self.start_proxy(self.start_web_origin(), pool=PoolSettings(max_idle_per_server=4))
        baseline = len(our_delayed_calls())
        for _round in range(5):
            clients = []
            for _client in range(8):
                client = yield self.connect()
                clients.append(client)
                client.send(get(b"/a") + get(b"/status/500") + b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc")
            for client in clients:
                responses = yield client.responses(3)
                self.assertEqual([r.status for r in responses], [200, 500, 200])
            # Client aborts: mid-response, mid-request-body, mid-head; and malformed requests.
            aborted = yield self.connect()
            aborted.send(get(b"/big/5000000"))
            yield aborted.until(lambda data: len(data) > 100)
            aborted.transport.abortConnection()
            halfway = yield self.connect()
            halfway.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nonly some")
            partial = yield self.connect()
            partial.send(b"GET / HTTP/1.1\r\nHo")
            bad = yield self.connect()
            bad.send(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
            yield bad.closed
            for client in clients + [halfway, partial]:
                client.transport.loseConnection()
            yield self.settle(frontend)
        self.assertEqual(frontend.connections, set())
        self.assertEqual(frontend.pool.in_use, set())
        self.assertEqual(frontend.pool.connecting, 0)
        self.assertEqual(frontend.backend.servers[0].active, 0)
        self.assertLessEqual(frontend.pool.idle_count, 4)
        self.assertEqual(len(our_delayed_calls()) - baseline, frontend.pool.idle_count)  # the idle timers only
        frontend.pool.close_idle()
        self.assertEqual(frontend.pool.idle_count, 0)
        self.assertEqual(len(our_delayed_calls()), baseline)
        terminations = {r.termination for r in self.access_log.entries}
        self.assertTrue({"ok", "client-abort", "bad-request"} <= terminations, terminations)

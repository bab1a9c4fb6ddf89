"""Access-log formats and the file output."""

from __future__ import annotations

import json

from twisted.trial import unittest

from rubrisproxy.accesslog import (
    AccessRecord,
    ConnectionRecord,
    format_connection_json,
    format_connection_text,
    format_json,
    format_text,
)
from rubrisproxy.builder import make_access_log
from rubrisproxy.config import CommandLine, load_config

RECORD = AccessRecord(
    at=1765003201.1234, client="127.0.0.1", frontend="web", method="GET", target="/a?b=1", version="1.1", status=502,
    bytes_in=0, bytes_out=120, backend="app", server="s2", wait_ms=1.25, queue_ms=0.0, connect_ms=0.4,
    response_ms=-1, total_ms=3.5004, termination="server-abort", retries=1,
)
CONNECTION = ConnectionRecord(
    at=1765003201.5, peer="127.0.0.1", frontend="web", end="client-close", client="127.0.0.1", requests=2,
    responses=2, bytes_in=150, bytes_out=300, duration_ms=12.6,
)


class FormatTests(unittest.TestCase):
    def test_text(self):
        self.assertEqual(
            format_text(RECORD),
            '2025-12-06T06:40:01.123Z 127.0.0.1 web app/s2 1/0/0/-1/4 502 0 120 server-abort retries=1 '
            '"GET /a?b=1 HTTP/1.1"',
        )

    def test_text_with_a_session(self):
        record = RECORD._replace(session="abc")
        self.assertTrue(format_text(record).endswith('"GET /a?b=1 HTTP/1.1" session=abc'))

    def test_json(self):
        fields = json.loads(format_json(RECORD))
        self.assertEqual((fields["time"], fields["event"]), ("2025-12-06T06:40:01.123Z", "request"))
        self.assertEqual((fields["status"], fields["termination"], fields["server"]), (502, "server-abort", "s2"))
        self.assertEqual((fields["total_ms"], fields["response_ms"]), (3.5, -1))

    def test_connection_lines(self):
        self.assertEqual(
            format_connection_text(CONNECTION),
            "2025-12-06T06:40:01.500Z 127.0.0.1 web CONNECTION client-close client=127.0.0.1 requests=2 responses=2 "
            "in=150 out=300 duration_ms=13",
        )
        fields = json.loads(format_connection_json(CONNECTION))
        self.assertEqual((fields["time"], fields["event"], fields["duration_ms"]),
                         ("2025-12-06T06:40:01.500Z", "connection", 12.6))

    def test_json_escapes_what_a_client_sent(self):
        record = RECORD._replace(target='/"\n\x00\xff')
        line = format_json(record)
        self.assertNotIn("\n", line)
        self.assertEqual(json.loads(line)["target"], '/"\n\x00\xff')

    def test_file_output(self):
        path = self.mktemp()
        config = load_config(CommandLine(backends=["127.0.0.1:1"], access_log=path, access_log_format="json"))
        access_log = make_access_log(config)
        access_log.write(RECORD)
        with open(path) as f:
            self.assertEqual(f.read(), "")  # held until the next flush
        access_log.close()
        with open(path) as f:
            (line,) = f.read().splitlines()
        self.assertEqual(json.loads(line)["target"], "/a?b=1")

    def test_connection_lines_can_be_left_out(self):
        for setting in (True, False):
            config_path = self.mktemp()
            with open(config_path, "w") as f:
                f.write(f"[access-log]\nconnections = {str(setting).lower()}\n")
            config = load_config(CommandLine(config_path=config_path, backends=["127.0.0.1:1"]))
            self.assertIs(make_access_log(config).writes_connections, setting)

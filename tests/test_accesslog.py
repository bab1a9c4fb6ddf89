"""Access-log formats and the file output."""

from __future__ import annotations

import json
import os

from twisted.trial import unittest

from rubrisproxy.accesslog import (
    COMPILED,
    AccessLog,
    AccessRecord,
    ConnectionRecord,
    format_connection_json,
    format_connection_text,
    format_json,
    format_text,
)
from rubrisproxy.builder import make_access_log
from rubrisproxy.config import CommandLine, load_config
from rubrisproxy.logoutput import Timestamps

try:
    from rubrisproxy._accesslines import TextLines
except ImportError:  # not built: a source tree, or an install without a compiler
    TextLines = None

RECORD = AccessRecord(
    at=1765003201.1234, client="127.0.0.1", frontend="web", method="GET", target="/a?b=1", version="1.1", status=502,
    bytes_in=0, bytes_out=120, backend="app", server="s2", wait_ms=1.25, queue_ms=0.0, connect_ms=0.4,
    response_ms=-1, total_ms=3.5004, termination="server-abort", retries=1,
)


def line_corpus() -> list[AccessRecord]:
    """Records whose text lines exercise every field's formatting: rounding at .5, -1 and other negative times,
    ints where floats are usual, huge counts, the optional fields in every combination, text beyond ASCII."""
    records = [RECORD, RECORD._replace(response_ms=12.0, retries=0)]
    for times in ((0.5, 1.4999, 2.5, -1.0, -0.2), (0, 0, 0, 0, 0), (-1, -1, -1, -1, -1), (86_400_000.49, 0.0, 1e-9, 3, 7.5)):
        records.append(RECORD._replace(wait_ms=times[0], queue_ms=times[1], connect_ms=times[2], response_ms=times[3],
                                       total_ms=times[4]))
    for at in (0.0, 1765003201.9999, 1765003202.0005, 4102444800.001):
        records.append(RECORD._replace(at=at))
    for session, request_id, auth in ((s, i, a) for s in ("", "x1") for i in ("", "rid-9") for a in ("", "answered")):
        records.append(RECORD._replace(session=session, request_id=request_id, auth=auth))
    records.append(RECORD._replace(status=101, bytes_in=2**40, bytes_out=2**62, retries=3, termination="--"))
    records.append(RECORD._replace(client="[::1]:443", frontend="é web", method="M-SEARCH", target="/ü?q=%00 \\",
                                   version="1.0", backend="", server="-", termination="client-timeout"))
    return records


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

    def test_an_access_log_writes_format_text_lines(self):
        written: list[str] = []

        class Lines:
            def write_lines(self, lines: list[str]) -> None:
                written.extend(lines)

        access_log = AccessLog(output=Lines(), batch=1)  # type: ignore[arg-type]
        for record in line_corpus():
            access_log.write(record)
        self.assertEqual(written, [format_text(record) for record in line_corpus()])

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


class CompiledLineTests(unittest.TestCase):
    """``_accesslines.TextLines`` (built when a C compiler is there at install) writes what ``format_text`` writes."""

    def setUp(self) -> None:
        if TextLines is None:
            raise unittest.SkipTest("_accesslines is not built here (tests/test_packaging.py builds and checks it)")

    def test_same_lines_as_format_text(self):
        lines = TextLines(Timestamps())
        for record in line_corpus():
            self.assertEqual(lines(record), format_text(record))

    def test_used_unless_pure_python_is_asked_for(self):
        self.assertEqual(COMPILED, not os.environ.get("RUBRISPROXY_PURE_PYTHON"))

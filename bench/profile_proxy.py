"""Profile rubrisproxy under load: runs the proxy in-process with cProfile while wrk drives it.

    python bench/profile_proxy.py ORIGIN_PORT [--seconds 5] [--connections 50] [--path /small] [--close]

``--close`` sends ``Connection: close`` on every request (a new client connection per request).

The origin must already listen on 127.0.0.1:ORIGIN_PORT (http_bench.py starts nginx the same way).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import subprocess
import threading

from twisted.internet import reactor

from rubrisproxy.config import CommandLine, load_config
from rubrisproxy.service import build_service


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("origin_port", type=int)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--path", default="/small")
    parser.add_argument("--port", type=int, default=18998)
    parser.add_argument("--access-log", default="off")
    parser.add_argument("--close", action="store_true", help="a new client connection per request")
    parser.add_argument("--sort", default="tottime")
    args = parser.parse_args()
    config = load_config(CommandLine(
        listen=[f"tcp:{args.port}:interface=127.0.0.1"], backends=[f"127.0.0.1:{args.origin_port}"],
        access_log=args.access_log,
    ))
    service = build_service(config, reactor)
    service.startService()

    def load() -> None:
        out = subprocess.run(
            ["wrk", "-t1", f"-c{args.connections}", f"-d{args.seconds}s", *(["-H", "Connection: close"] if args.close else []),
             f"http://127.0.0.1:{args.port}{args.path}"],
            capture_output=True, text=True,
        ).stdout
        print(out)
        reactor.callFromThread(reactor.stop)

    reactor.callLater(0.5, threading.Thread(target=load, daemon=True).start)
    profiler = cProfile.Profile()
    profiler.runcall(reactor.run)
    stats = pstats.Stats(profiler)
    stats.dump_stats(os.environ.get("PROFILE_OUT", "/tmp/proxy.prof"))
    stats.sort_stats(args.sort).print_stats(40)


if __name__ == "__main__":
    main()

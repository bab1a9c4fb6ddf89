"""``rubrisproxy ctl``: the admin API from a shell, with readable tables (docs/admin.md; :mod:`rubrisproxy.adminctl`);
``rubrisproxy check``: validate a configuration file as a start or reload would (docs/configuration.md);
``rubrisproxy passwd``: a line for a forward proxy's users file (docs/forward-proxy.md)."""

from __future__ import annotations

import argparse
import getpass
import os
import socket
import sys
from collections.abc import Sequence

from . import __version__
from .adminctl import add_ctl_arguments, run
from .checks import check_config
from .config import CommandLine, ConfigError, ProxyConfig, load_config
from .frontend import hash_password


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "passwd":
        return _passwd(args.user)
    if args.command == "check":
        return check(args.file)
    return run(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rubrisproxy", description="Talk to a running rubrisproxy, or check its "
                                     "configuration file.")
    parser.add_argument("--version", action="version", version=f"rubrisproxy {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    add_ctl_arguments(commands.add_parser("ctl", help="call the admin API"))
    check_parser = commands.add_parser("check", help="validate a configuration file as a start or reload would; "
                                                     "nothing is started")
    check_parser.add_argument("file")
    passwd = commands.add_parser("passwd", help="print a users-file line for USER (the password is asked for)")
    passwd.add_argument("user")
    return parser


def check(path: str) -> int:
    """Load ``path`` as ``twistd rubrisproxy --config PATH`` does; 0 if it is valid, else 1 and one line why."""
    try:
        config = load_config(CommandLine(config_path=path))
        check_config(config)
    except ConfigError as e:
        print(f"rubrisproxy check: configuration error: {e}", file=sys.stderr)
        return 1
    print(f"{path}: valid")
    for line in unresolved_servers(config):
        print(f"rubrisproxy check: warning: {line}", file=sys.stderr)
    return 0


def unresolved_servers(config: ProxyConfig) -> list[str]:
    """A line for each server whose host name does not resolve here (the proxy starts anyway, and marks it down
    until it does)."""
    lines = []
    for backend in config.backends.values():
        for server in backend.servers:
            try:
                socket.getaddrinfo(server.host, server.port, type=socket.SOCK_STREAM)  # an address: read, no lookup
            except OSError as e:
                lines.append(f"backends.{backend.name}.servers: {server.name} ({server.host}:{server.port}) does not"
                             f" resolve: {e.strerror or e}")
    return lines


def _passwd(user: str) -> int:
    if not user or ":" in user:
        print("rubrisproxy passwd: a user name cannot be empty or contain ':'", file=sys.stderr)
        return 1
    password = getpass.getpass(f"password for {user}: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
    if not password:
        print("rubrisproxy passwd: empty password", file=sys.stderr)
        return 1
    print(f"{user}:{hash_password(password, os.urandom(16))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

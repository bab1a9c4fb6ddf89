"""A Socket.IO session's hook under callgrind: instructions per message its Engine.IO state reader costs.

Drives the hook a session-mode Socket.IO session has first (``EngineIOResume.for_session``) against a fake session:
an open packet and two CONNECTs, then rounds of a client's emit with an ack, the server's ack, a server's event and
a client's emit without one (4 messages a round), as they pass while the session is OPEN. Runs twice under
``valgrind --tool=callgrind`` with a small and a large round count and divides the difference in instructions by
the difference in messages, so start-up and imports cancel out (hash seed fixed: sets of acks are in it). ``--compare DIR`` measures another checkout the
same way in the same run and prints the ratio.

    python bench/micro_eio.py [--rounds 2000,8000] [--compare DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

from harness import callgrind_total

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MESSAGES_PER_ROUND = 4


class _Session:
    """What the hook reads of a session while it is OPEN."""

    session_id = "bench"
    holding = False

    def __init__(self) -> None:
        from twisted.internet.task import Clock  # noqa: PLC0415 - from the checkout measured, once on its path

        self.clock = Clock()

    def send_to_client(self, message: object) -> None:
        pass


def run(rounds: int) -> None:
    """``rounds`` rounds through the hook of the checkout in the cwd."""
    sys.path.insert(0, os.getcwd())
    from rubrisproxy.config import WebSocketConfig  # noqa: PLC0415
    from rubrisproxy.websocket import Message  # noqa: PLC0415
    from rubrisproxy.websocket._eioresume import EngineIOResume  # noqa: PLC0415

    session = _Session()
    hook = EngineIOResume.for_session(session, WebSocketConfig(), b"/socket.io/?EIO=4&transport=websocket", None)  # type: ignore[arg-type]
    assert hook is not None
    client, backend = hook.client_message, hook.backend_message
    backend(session, Message(b'0{"sid":"abc","upgrades":[],"pingInterval":25000,"pingTimeout":20000}', False))
    for connect, answer in ((b"40", b'40{"sid":"d"}'), (b'40/chat,{"token":"t"}', b'40/chat,{"sid":"c"}')):
        client(session, Message(connect, False))
        backend(session, Message(answer, False))
    emits = [Message(b'42/chat,%d["tick",{"n":%d}]' % (n, n), False) for n in range(100)]
    acks = [Message(b'43/chat,%d["ok"]' % n, False) for n in range(100)]
    event = Message(b'42/chat,["news",{"text":"something happened"}]', False)
    plain = Message(b'42["hello",1]', False)
    for i in range(rounds):
        client(session, emits[i % 100])
        backend(session, acks[i % 100])
        backend(session, event)
        client(session, plain)


def instructions(root: str, rounds: int) -> int:
    """Instructions the whole run of ``root``'s hook executed for ``rounds`` rounds."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}.%p", sys.executable,
                   os.path.abspath(__file__), "--one", str(rounds)]
        subprocess.run(command, cwd=root, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       env={**os.environ, "PYTHONPATH": root, "PYTHONHASHSEED": "0"})
        return callgrind_total(out)


def per_message(root: str, small: int, large: int) -> float:
    return (instructions(root, large) - instructions(root, small)) / ((large - small) * MESSAGES_PER_ROUND)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", default="2000,8000", help="the small and the large round count")
    parser.add_argument("--compare", default="", help="another checkout, measured the same way")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # run the cwd checkout's hook, under callgrind
    args = parser.parse_args()
    if args.one is not None:
        run(args.one)
        return
    small, large = (int(n) for n in args.rounds.split(","))
    here = per_message(ROOT, small, large)
    print(f"{ROOT}: {here:,.0f} instructions per Socket.IO message through the hook")
    if args.compare:
        there = per_message(os.path.abspath(args.compare), small, large)
        print(f"{os.path.abspath(args.compare)}: {there:,.0f} instructions per Socket.IO message through the hook")
        print(f"ratio (this / compared): {here / there:.3f}")


if __name__ == "__main__":
    main()

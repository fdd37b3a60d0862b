"""The old and new services say which host answered and count their connections."""

from __future__ import annotations

import socket

from opskit.demo.loop import BackgroundLoop
from opskit.demo.services import Service
from tests.servers.common import free_port


def _talk(host: str, port: int, lines: list[str]) -> list[str]:
    with socket.create_connection((host, port), timeout=2) as sock:
        stream = sock.makefile("rw", encoding="utf-8", newline="\n")
        answers = []
        for text in lines:
            stream.write(text + "\n")
            stream.flush()
            answers.append(stream.readline().strip())
        return answers


def test_each_host_says_who_answered(bg_loop: BackgroundLoop) -> None:
    """The same port on two loopback addresses answers `old: ack ...` and `new: ack ...`."""
    port = free_port("127.0.0.11")
    old, new = Service("old", "127.0.0.11", port), Service("new", "127.0.0.12", port)
    bg_loop.run(old.start())
    bg_loop.run(new.start())
    try:
        assert _talk("127.0.0.11", port, ["hello", "again"]) == ["old: ack hello", "old: ack again"]
        assert _talk("127.0.0.12", port, ["hello"]) == ["new: ack hello"]
        stats = old.stats()
        assert (stats.total, stats.lines) == (1, 2)
        assert stats.per_client == {"127.0.0.1": 1}
    finally:
        bg_loop.run(old.stop())
        bg_loop.run(new.stop())


def test_stop_closes_long_lived_connections_and_the_port(bg_loop: BackgroundLoop) -> None:
    """Stopping a service drops its open connections and frees its address, like systemctl stop."""
    port = free_port("127.0.0.11")
    old = Service("old", "127.0.0.11", port)
    bg_loop.run(old.start())
    with socket.create_connection(("127.0.0.11", port), timeout=2) as held:
        held.sendall(b"hi\n")
        assert held.recv(100) == b"old: ack hi\n"
        assert old.stats().active == 1

        bg_loop.run(old.stop())

        held.settimeout(2)
        assert held.recv(100) == b""
    assert not old.running
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.11", port)) != 0

"""The HAProxy engine re-resolves a host-name target (issue #9): a changed record moves new connections."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import dns.query
import dns.tsigkeyring
import dns.update
import pytest

from opskit.proxy import haproxy
from opskit.proxy.config import BridgeConfig
from tests.servers.common import free_port, require_binary
from tests.servers.dns_lab import KEY_NAME, KEY_SECRET, NS2, DnsLab

pytestmark = [pytest.mark.dns, pytest.mark.proxy]

OLD, NEW = "127.0.0.81", "127.0.0.82"


def set_a(lab: DnsLab, name: str, address: str | None) -> None:
    """Replace (or delete, with None) NAME.upd.test's A record on knot, TTL 1 s, by a TSIG update."""
    keyring = dns.tsigkeyring.from_text({KEY_NAME: KEY_SECRET})
    update = dns.update.UpdateMessage("upd.test", keyring=keyring, keyalgorithm="hmac-sha256")
    if address is None:
        update.delete(name)
    else:
        update.replace(name, 1, "A", address)
    dns.query.tcp(update, NS2, port=lab.auth_port, timeout=5)


@contextlib.contextmanager
def answering(address: str, port: int, word: str) -> Iterator[None]:
    """A socat on address:port that says `word` to every connection."""
    socat = require_binary("socat")
    proc = subprocess.Popen(
        [socat, f"TCP-LISTEN:{port},bind={address},reuseaddr,fork", f"SYSTEM:echo {word}"],
        stdin=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=5)


def first_word(listen: tuple[str, int], want: bytes, timeout_s: float) -> bytes:
    """What the bridge's target says, retried (bounded) until it says `want`."""
    deadline = time.monotonic() + timeout_s
    said = b""
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(listen, timeout=2) as conn:
            said = conn.recv(16).strip()
            if said == want:
                return said
        time.sleep(0.2)
    return said


def test_haproxy_engine_follows_a_changed_target_record(lab: DnsLab, tmp_path: Path) -> None:
    """After the target's A record changes, new connections through the bridge reach the new address."""
    require_binary("haproxy")
    port = free_port()
    name = f"bridge{os.getpid()}"
    config = BridgeConfig(
        listen=f"127.0.0.1:{free_port()}",
        to=f"{name}.upd.test:{port}",
        stats_file=tmp_path / "hap.json",
        engine="haproxy",
        max_connections=100,
        drain_timeout_s=1.0,
    )
    set_a(lab, name, OLD)
    with answering(OLD, port, "old"), answering(NEW, port, "new"):
        engine = haproxy.Engine(config, nameservers=[lab.ns2])
        engine.start()
        try:
            assert first_word(config.listen_host_port, b"old", 10) == b"old"
            set_a(lab, name, NEW)
            assert first_word(config.listen_host_port, b"new", 10) == b"new"
        finally:
            engine.stop("sigterm")
            set_a(lab, name, None)

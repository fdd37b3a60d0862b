"""Fixtures of the DNS tests: one loopback lab per session, and a server that never answers."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from tests.servers.dns_lab import DnsLab, dns_lab


@pytest.fixture(scope="session")
def lab() -> Iterator[DnsLab]:
    """nsd + knot + parent nsd + two unbound caches, fresh for this session."""
    with dns_lab() as running:
        yield running


@pytest.fixture
def silent_server() -> Iterator[str]:
    """HOST:PORT of a UDP socket that is bound and never answers (a dead server, not a closed port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{sock.getsockname()[1]}"

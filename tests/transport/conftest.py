"""Fixtures shared by the transport tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from opskit.transport.agent import AgentTransport
from opskit.transport.ssh import SshTransport
from tests.servers.sshd import Sshd


@pytest.fixture
def agent(sshd: Sshd) -> Iterator[AgentTransport]:
    """An agent transport to the session sshd, closed after the test."""
    t = AgentTransport(SshTransport(sshd.spec()))
    yield t
    t.close()

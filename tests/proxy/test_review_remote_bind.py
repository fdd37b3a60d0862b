"""A bridge on an SSH host waits for the old service's port as long as bind_timeout says."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
from pathlib import Path

import pytest

from opskit.errors import ExitCode
from opskit.proxy import remote
from tests.conftest import Invoke
from tests.runbook.helpers import write
from tests.servers.common import free_port
from tests.servers.sshd import Sshd

pytestmark = [pytest.mark.proxy, pytest.mark.sshd]

RUNBOOK = """
    name: remote-bind
    hosts:
      old: {{address: 127.0.0.1, port: {ssh_port}, user: {user}, key_file: "{key}", known_hosts: "{known}"}}
    steps:
      - id: bridge
        uses: proxy.start
        on: old
        with: {{listen: "127.0.0.1:{port}", to: "127.0.0.1:9", stats_file: "{stats}", bind_timeout: 20s}}
"""


def test_remote_bridge_started_while_the_port_is_held_is_waited_for(
    opskit: Invoke, tmp_path: Path, sshd: Sshd, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The old service frees the port after the usual start-up wait but within bind_timeout: the
    step waits for the bridge and succeeds, instead of failing while the bridge starts anyway,
    untracked, a moment later."""
    monkeypatch.setattr(remote, "START_TIMEOUT_S", 2.0)  # the start-up wait, shortened for the test
    port = free_port()
    stats = tmp_path / "old-host" / "bridge.json"
    path = write(
        tmp_path,
        RUNBOOK.format(
            ssh_port=sshd.port, user=sshd.user, key=sshd.client_key, known=sshd.known_hosts,
            port=port, stats=stats,
        ),
    )  # fmt: skip
    old_service = socket.create_server(("127.0.0.1", port))
    release = threading.Timer(4.0, old_service.close)
    release.start()
    try:
        opskit("run", str(path), expect=ExitCode.OK)
    finally:
        release.join(timeout=10)
        old_service.close()
        for _ in range(100):  # bounded: the bridge may bind just after a failed step
            if stats.exists():
                break
            threading.Event().wait(0.1)
        with contextlib.suppress(OSError, ValueError, KeyError):
            os.kill(int(json.loads(stats.read_text())["pid"]), signal.SIGTERM)

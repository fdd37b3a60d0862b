"""The bridge and the drain across a fleet: a bridge on each old host over SSH, SAFE only when all are."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from opskit.errors import ExitCode
from tests.conftest import Invoke
from tests.proxy.conftest import nginx  # noqa: F401 - the new host
from tests.runbook.helpers import run_id, write
from tests.servers.common import free_port
from tests.servers.nginx import Nginx
from tests.servers.sshd_fleet import Fleet, start_fleet

pytestmark = [pytest.mark.sshd, pytest.mark.proxy]
LONG_AGO = (datetime.now(UTC) - timedelta(hours=2)).isoformat()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """Three old hosts old1..old3 on 127.0.0.2..4."""
    with start_fleet(tmp_path_factory.mktemp("oldfleet"), 3) as f:
        yield f


RUNBOOK = """
name: fleet-bridges
hosts:
{hosts}
  groups: {{old: [old1, old2, old3]}}
steps:
  - id: bridge
    on: old
    uses: proxy.start
    with: {{listen: "{{{{ ansible_host }}}}:{port}", to: "{to}", stats_file: "{dir}/bridge-{{{{ inventory_hostname }}}}.json"}}
  - id: hold
    run: "(exec 3<>/dev/tcp/{hold}/{port}; sleep 6) >/dev/null 2>&1 &"
    undo: "true"  # the client ends by itself
  - id: counted
    wait: 1500ms  # the bridges write their counters every second
  - id: drained
    on: old
    uses: traffic.drained
    with: {{stats_file: "{dir}/bridge-{{{{ inventory_hostname }}}}.json", switched_at: "{long_ago}", old_ttl: 1s,
            margin: 0s, quiet: 0s, timeout: 1s, interval: 200ms}}
  - id: stop
    on: old
    uses: proxy.stop
    with: {{stats_file: "{dir}/bridge-{{{{ inventory_hostname }}}}.json"}}
"""


def _runbook(tmp_path: Path, fleet: Fleet, nginx: Nginx, port: int, hold: str) -> Path:  # noqa: F811
    hosts = "".join(
        f'  old{i}: {{address: {a}, port: {fleet.port}, user: {fleet.user}, key_file: "{fleet.client_key}", '
        f'known_hosts: "{fleet.known_hosts}"}}\n'
        for i, a in enumerate(fleet.addresses, start=1)
    )
    return write(tmp_path, RUNBOOK.format(hosts=hosts.rstrip("\n"), port=port, to=nginx.http, dir=tmp_path,
                                          long_ago=LONG_AGO, hold=hold))  # fmt: skip


def test_a_busy_bridge_on_one_old_host_fails_the_drain_naming_it_then_rollback_stops_all(
    opskit: Invoke,
    tmp_path: Path,
    fleet: Fleet,
    nginx: Nginx,  # noqa: F811
) -> None:
    """Bridges start on every old host; a client held on old2 fails the drain there only; rollback stops all."""
    port = free_port()
    path = _runbook(tmp_path, fleet, nginx, port, hold=fleet.addresses[1])

    result = opskit("run", str(path), expect=ExitCode.NEGATIVE)

    assert "3 of 3 hosts succeeded" in result.stdout  # every bridge started
    assert "1 of 3 hosts failed (old2)" in result.stdout
    assert "old1  succeeded  SAFE" in result.stdout
    rid = run_id(result.stdout)
    # From the shell: every bridge the run started, read over SSH on each old host.
    wait = opskit("traffic", "wait", "--run", rid, "--switched-at", LONG_AGO, "--old-ttl", "1s", "--margin", "0s",
                  "--quiet", "0s", "--interval", "200ms", "--timeout", "20s", expect=ExitCode.OK)  # fmt: skip
    assert "all 3 bridges are safe" in wait.stdout
    assert f"old2:{tmp_path}/bridge-old2.json: safe" in wait.stdout
    opskit("rollback", rid, "--yes", expect=ExitCode.OK)
    for address in fleet.addresses:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((address, port), timeout=1).close()

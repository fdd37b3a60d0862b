"""A bridge on an old host over SSH: proxy.start copies the forwarder, starts it detached, undo stops it."""

from __future__ import annotations

import json
import os
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from opskit.errors import ExitCode
from tests.conftest import Invoke
from tests.runbook.helpers import events, run_id, write
from tests.servers.common import free_port, require_binary
from tests.servers.nginx import Nginx
from tests.servers.sshd import Sshd

pytestmark = [pytest.mark.proxy, pytest.mark.sshd]

# quiet: 3s, three times the forwarder's 1 s stats interval: a verdict read over SSH must have seen the
# client's connection in the stats file before it can say SAFE.
RUNBOOK = """
    name: remote-bridge
    hosts:
      old: {{address: 127.0.0.1, port: {ssh_port}, user: {user}, key_file: "{key}", known_hosts: "{known}"}}
    steps:
      - id: bridge
        uses: proxy.start
        on: old
        with: {{listen: "127.0.0.1:{port}", to: "{to}", stats_file: "{stats}", drain_timeout: 2s}}
      - id: client
        run: curl -s --interface 127.0.0.71 -o /dev/null -w "status=%{{http_code}}\\n" http://127.0.0.1:{port}/1k.txt
      - id: drained
        uses: traffic.drained
        on: old
        with: {{stats_file: "{stats}", switched_at: "{switched}", old_ttl: 1s, margin: 0s, quiet: 3s,
                timeout: 20s, interval: 200ms}}
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


def test_remote_bridge_runs_detached_and_undo_stops_it(
    opskit: Invoke, tmp_path: Path, sshd: Sshd, nginx: Nginx
) -> None:
    """proxy.start on an SSH host bridges traffic, traffic.drained reads its stats over SSH, rollback stops it."""
    port = free_port()
    remote_dir = tmp_path / "old-host"
    stats = remote_dir / "bridge.json"
    switched = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    path = write(
        tmp_path,
        RUNBOOK.format(
            ssh_port=sshd.port, user=sshd.user, key=sshd.client_key, known=sshd.known_hosts,
            port=port, to=nginx.http, stats=stats, switched=switched,
        ),
    )  # fmt: skip

    result = opskit("run", str(path), expect=ExitCode.OK)
    rid = run_id(result.stdout)

    assert "status=200" in result.stdout
    assert (remote_dir / "forwarder.py").exists()
    assert oct((remote_dir / "forwarder.py").stat().st_mode & 0o777) == "0o600"
    data = json.loads(stats.read_text())
    assert data["state"] == "running"
    pid = data["pid"]
    try:  # from here on, a failed assertion must not leave the detached bridge running
        assert _alive(pid)
        assert [c["address"] for c in data["clients"]] == ["127.0.0.71"]
        finished = [e for e in events(tmp_path / "state", rid) if e.get("event") == "step_finished"]
        assert any("SAFE to shut down" in (e.get("summary") or "") for e in finished)

        # exit 3: the curl step has no undo:, so rollback reports it as still in effect
        opskit("rollback", rid, "--yes", expect=ExitCode.BLOCKED)

        deadline = time.monotonic() + 15
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(pid)
        final = json.loads(stats.read_text())
        assert (final["state"], final["ended"]) == ("stopped", "sigterm")
        assert final["clients"][0]["total"] == 1
    finally:
        if _alive(pid):
            os.kill(pid, 15)


def test_rehearsal_checks_the_port_and_target_without_starting(
    opskit: Invoke, tmp_path: Path, sshd: Sshd, nginx: Nginx
) -> None:
    """A dry-run of proxy.start on the SSH host checks port and target and starts no bridge."""
    port = free_port()
    stats = tmp_path / "old-host" / "bridge.json"
    path = write(
        tmp_path,
        RUNBOOK.format(
            ssh_port=sshd.port, user=sshd.user, key=sshd.client_key, known=sshd.known_hosts,
            port=port, to=nginx.http, stats=stats, switched=datetime.now(UTC).isoformat(),
        ),
    )  # fmt: skip

    result = opskit("plan", str(path), expect=ExitCode.OK)

    assert "port free, new host answers" in result.stdout
    assert not stats.exists()
    assert subprocess.run(["curl", "-s", f"http://127.0.0.1:{port}/"], check=False).returncode != 0


HAPROXY_RUNBOOK = """
    name: remote-haproxy-bridge
    hosts:
      old: {{address: 127.0.0.1, port: {ssh_port}, user: {user}, key_file: "{key}", known_hosts: "{known}"}}
    steps:
      - id: bridge
        uses: proxy.start
        on: old
        with: {{listen: "127.0.0.1:{port}", to: "{to}", stats_file: "{stats}", engine: haproxy,
                drain_timeout: 2s}}
      - id: client
        run: curl -s --interface 127.0.0.72 -o /dev/null -w "status=%{{http_code}}\\n" http://127.0.0.1:{port}/1k.txt
      - id: drained
        uses: traffic.drained
        on: old
        with: {{haproxy_socket: "{socket}", switched_at: "{switched}", old_ttl: 1s, margin: 0s,
                quiet: 1s, timeout: 20s, interval: 200ms}}
"""


def test_remote_haproxy_bridge_is_read_over_ssh_and_undo_stops_it(
    opskit: Invoke, tmp_path: Path, sshd: Sshd, nginx: Nginx
) -> None:
    """engine: haproxy on an SSH host runs HAProxy detached there; traffic.drained reads its socket; rollback stops it."""
    require_binary("haproxy")
    port = free_port()
    remote_dir = tmp_path / "old"
    stats = remote_dir / "b.json"
    sock = remote_dir / "b.haproxy.sock"
    switched = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    path = write(
        tmp_path,
        HAPROXY_RUNBOOK.format(
            ssh_port=sshd.port, user=sshd.user, key=sshd.client_key, known=sshd.known_hosts,
            port=port, to=nginx.http, stats=stats, socket=sock, switched=switched,
        ),
    )  # fmt: skip

    result = opskit("run", str(path), expect=ExitCode.OK)
    rid = run_id(result.stdout)
    pid = int((remote_dir / "b.pid").read_text())
    try:
        assert "status=200" in result.stdout
        assert "mode tcp" in (remote_dir / "b.haproxy.cfg").read_text()
        assert _alive(pid)
        finished = [e for e in events(tmp_path / "state", rid) if e.get("event") == "step_finished"]
        assert any("SAFE to shut down" in (e.get("summary") or "") for e in finished)

        # exit 3: the curl step has no undo:, so rollback reports it as still in effect
        opskit("rollback", rid, "--yes", expect=ExitCode.BLOCKED)

        deadline = time.monotonic() + 15
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(pid)
    finally:
        if _alive(pid):
            os.kill(pid, 9)

"""http.check and tcp.check inside a real runbook: locally and from an SSH host, through the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from opskit.errors import ExitCode
from tests.conftest import Invoke
from tests.servers.common import free_port
from tests.servers.health_http import HealthHttp, health_http  # noqa: F401
from tests.servers.sshd import Sshd


@pytest.mark.sshd
def test_probes_run_from_the_host_in_plan_and_run(
    opskit: Invoke,
    sshd: Sshd,
    health_http: HealthHttp,  # noqa: F811
    tmp_path: Path,
) -> None:
    """`on: HOST` probes pass in the rehearsal and the run, and a closed port fails the run."""
    runbook = tmp_path / "probes.yaml"
    closed = free_port()
    runbook.write_text(
        f"""name: probes
hosts:
  new: {{address: {sshd.host}, port: {sshd.port}, user: {sshd.user}, key_file: {sshd.client_key}, known_hosts: {sshd.known_hosts}}}
steps:
  - id: health-here
    uses: http.check
    with: {{url: "{health_http.url("/health")}", contains: healthy}}
  - id: health-from-new
    on: new
    uses: http.check
    with: {{url: "{health_http.url("/health")}", expect_status: 200}}
  - id: db-port-from-new
    on: new
    uses: tcp.check
    with: {{host: 127.0.0.1, port: {closed}, timeout: 2s}}
"""
    )

    opskit("validate", str(runbook), expect=ExitCode.OK)
    plan = opskit("plan", str(runbook), expect=ExitCode.NEGATIVE)
    run = opskit("run", str(runbook), "--yes", expect=ExitCode.NEGATIVE)

    assert "(from new)" in plan.stdout
    assert f"127.0.0.1:{closed} refuses connections (from new)" in plan.stdout
    assert "200 in" in run.stdout
    assert f"127.0.0.1:{closed} refuses connections (from new)" in run.stdout

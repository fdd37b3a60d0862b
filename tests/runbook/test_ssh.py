"""SSH steps against a private OpenSSH server: host keys verified, secrets only in the environment."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from opskit.errors import ExitCode
from tests.conftest import Invoke
from tests.runbook.helpers import write
from tests.servers.common import free_port
from tests.servers.sshd import Sshd, write_ed25519_key

pytestmark = pytest.mark.sshd

REMOTE = """
    name: remote
    secrets: {{db_pw: {{env: SSH_TEST_DB_PW}}}}
    hosts:
      target: {{address: 127.0.0.1, port: {port}, user: {user}, key_file: "{key}", known_hosts: "{known}"}}
    steps:
      - id: check
        kind: probe
        on: target
        run: echo remote-ok from $USER
      - id: secret
        on: target
        run: printf %s "{{{{ db_pw }}}}" | sha256sum
"""


def _runbook(tmp_path: Path, sshd: Sshd, known_hosts: Path) -> Path:
    return write(tmp_path, REMOTE.format(port=sshd.port, user=sshd.user, key=sshd.client_key,
                                         known=known_hosts))  # fmt: skip


def test_ssh_step_runs_remotely_with_secret_in_env(
    opskit: Invoke, tmp_path: Path, sshd: Sshd
) -> None:
    """A step on an SSH host streams `[target]` output; the secret reaches it but never its command line."""
    secret = "remote-Secret-987"  # noqa: S105 - a made-up secret the test hunts for
    path = _runbook(tmp_path, sshd, sshd.known_hosts)

    result = opskit("run", str(path), env={"SSH_TEST_DB_PW": secret}, expect=ExitCode.OK)

    assert f"[target] remote-ok from {sshd.user}" in result.stdout
    assert hashlib.sha256(secret.encode()).hexdigest() in result.stdout
    assert secret not in result.stdout
    assert secret not in sshd.log_text()  # sshd logs every command it runs
    for file in (tmp_path / "state").rglob("*"):
        if file.is_file():
            assert secret not in file.read_text()


def test_changed_host_key_fails_with_a_clear_message(
    opskit: Invoke, tmp_path: Path, sshd: Sshd
) -> None:
    """A host key that differs from known_hosts fails the step, even with --accept-new-host-keys."""
    other = write_ed25519_key(tmp_path / "other_key")
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sshd.port} {other}\n")
    path = _runbook(tmp_path, sshd, known)

    result = opskit("run", str(path), "--accept-new-host-keys", env={"SSH_TEST_DB_PW": "x-y-z"},
                    expect=ExitCode.NEGATIVE)  # fmt: skip

    assert "host key" in result.stdout.lower()
    assert "step check failed" in result.stdout
    assert known.read_text() == f"[127.0.0.1]:{sshd.port} {other}\n"


def test_unknown_host_key_is_recorded_only_when_asked(
    opskit: Invoke, tmp_path: Path, sshd: Sshd
) -> None:
    """An unknown host key fails the run; with --accept-new-host-keys it is recorded and the run succeeds."""
    known = tmp_path / "known_hosts"
    known.write_text("")
    path = _runbook(tmp_path, sshd, known)
    env = {"SSH_TEST_DB_PW": "x-y-z"}

    refused = opskit("run", str(path), env=env, expect=ExitCode.NEGATIVE)
    opskit("run", str(path), "--accept-new-host-keys", env=env, expect=ExitCode.OK)

    assert "host key" in refused.stdout.lower()
    assert sshd.host_key_public.split()[1] in known.read_text()


def test_plan_checks_every_host(opskit: Invoke, tmp_path: Path, sshd: Sshd) -> None:
    """The plan logs in to a reachable host, runs its probe there, and exits 1 for a host that is down."""
    path = _runbook(tmp_path, sshd, sshd.known_hosts)
    ok = opskit("plan", str(path), env={"SSH_TEST_DB_PW": "x-y-z"}, expect=ExitCode.OK)
    assert "host target (127.0.0.1:" in ok.stdout
    assert ": ok" in ok.stdout
    assert "probe_ok" in ok.stdout

    down = write(tmp_path, REMOTE.format(port=free_port(), user=sshd.user, key=sshd.client_key,
                                         known=sshd.known_hosts), "down.yaml")  # fmt: skip
    result = opskit("plan", str(down), env={"SSH_TEST_DB_PW": "x-y-z"}, expect=ExitCode.NEGATIVE)

    assert "UNREACHABLE" in result.stdout


@pytest.mark.parametrize("retry", ["{}", "{attempts: 3, delay: 100ms}"])
def test_dropped_connection_leaves_the_step_in_doubt(
    opskit: Invoke, tmp_path: Path, sshd: Sshd, retry: str
) -> None:
    """When the SSH link dies while a command runs, the step is in doubt (not failed, not retried)."""
    path = write(
        tmp_path,
        f"""
        name: dropped
        hosts:
          target: {{address: 127.0.0.1, port: {sshd.port}, user: {sshd.user}, key_file: "{sshd.client_key}",
                   known_hosts: "{sshd.known_hosts}"}}
        steps:
          - id: migrate
            on: target
            run: echo started >> {tmp_path}/ran; kill -9 $PPID; sleep 5
            retry: {retry}
    """,
    )

    result = opskit("run", str(path), expect=ExitCode.NEGATIVE)

    assert "is in doubt; check by hand, then resume" in result.stdout
    assert (tmp_path / "ran").read_text() == "started\n"  # the transport retry did not re-run it
    rid = next((tmp_path / "state" / "runs").iterdir()).name
    state = json.loads(opskit("status", rid, "--json", expect=ExitCode.OK).stdout)
    assert state["steps"][0]["status"] == "in_doubt"
    assert f"opskit resume {rid} --skip-in-doubt" in result.stdout

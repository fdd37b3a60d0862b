"""ProxyJump from an ssh config: through a bastion sshd (one hop and a chain), host keys checked on every hop."""

from __future__ import annotations

from pathlib import Path

import pytest

from opskit.errors import ExitCode, HostKeyError
from opskit.transport.agent import AgentTransport
from opskit.transport.base import HostSpec
from opskit.transport.ssh import SshTransport
from tests.conftest import Invoke
from tests.runbook.helpers import write
from tests.servers.sshd import Sshd
from tests.servers.sshd_fleet import Fleet, start_fleet

pytestmark = pytest.mark.sshd


def _config(tmp_path: Path, sshd: Sshd, fleet: Fleet, jump: str) -> Path:
    """Host aliases: bastion (the session sshd), hop and target (fleet hosts), target behind `jump`."""
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host bastion\n  HostName {sshd.host}\n  Port {sshd.port}\n  User {sshd.user}\n"
        f"  IdentityFile {sshd.client_key}\n"
        f"Host hop\n  HostName {fleet.addresses[0]}\n  Port {fleet.port}\n  User {fleet.user}\n"
        f"  IdentityFile {fleet.client_key}\n"
        f"Host target\n  HostName {fleet.addresses[1]}\n  Port {fleet.port}\n  User {fleet.user}\n"
        f"  IdentityFile {fleet.client_key}\n  ProxyJump {jump}\n"
    )
    return config


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    """Two SSH hosts (127.0.0.2 and .3) behind the bastion."""
    with start_fleet(tmp_path_factory.mktemp("jumpfleet"), 2) as f:
        yield f  # type: ignore[misc]


def _known(tmp_path: Path, *files: Path) -> Path:
    known = tmp_path / "known_hosts"
    known.write_text("".join(f.read_text() for f in files))
    return known


@pytest.mark.parametrize("jump", ["bastion", "bastion,hop"])
def test_proxyjump_through_a_bastion_and_a_chain(
    tmp_path: Path, sshd: Sshd, fleet: Fleet, jump: str
) -> None:
    """The target is reached through the bastion (and the hop): its command runs, the bastion logged us in."""
    known = _known(tmp_path, sshd.known_hosts, fleet.known_hosts)
    config = _config(tmp_path, sshd, fleet, jump)
    before = sshd.logins()
    t = AgentTransport(
        SshTransport(
            HostSpec(name="target", address="target", known_hosts=str(known)), ssh_config=config
        )
    )
    try:
        result = t.run("echo $SSH_CONNECTION")
    finally:
        t.close()

    assert result.rc == 0
    assert (
        result.stdout.split()[2] == fleet.addresses[1]
    )  # the address the target's sshd was reached on
    assert sshd.logins() - before == 1


def test_an_unknown_bastion_key_is_refused_naming_the_hop(
    tmp_path: Path, sshd: Sshd, fleet: Fleet
) -> None:
    """A bastion whose key is not in known_hosts stops the connection before anything reaches the target."""
    known = _known(tmp_path, fleet.known_hosts)  # the target is trusted, the bastion is not
    config = _config(tmp_path, sshd, fleet, "bastion")
    t = SshTransport(
        HostSpec(name="target", address="target", known_hosts=str(known)), ssh_config=config
    )

    with pytest.raises(HostKeyError, match="jump host bastion"):
        t.run("true")


def test_a_runbook_host_behind_a_bastion_from_the_users_ssh_config(
    opskit: Invoke, tmp_path: Path, sshd: Sshd, fleet: Fleet
) -> None:
    """`address: target` in a runbook goes through ~/.ssh/config's ProxyJump, as `ssh target` would."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    config = _config(tmp_path, sshd, fleet, "bastion")
    (home / ".ssh" / "config").write_text(config.read_text())
    known = _known(tmp_path, sshd.known_hosts, fleet.known_hosts)
    path = write(
        tmp_path,
        f"""
        name: behind-bastion
        hosts:
          app: {{address: target, known_hosts: "{known}"}}
        steps:
          - {{id: where, on: app, run: "echo reached $SSH_CONNECTION"}}
    """,
    )
    before = sshd.logins()

    result = opskit("run", str(path), env={"HOME": str(home)}, expect=ExitCode.OK)

    assert "[app] reached" in result.stdout
    assert f" {fleet.addresses[1]} {fleet.port}" in result.stdout
    assert sshd.logins() - before == 1

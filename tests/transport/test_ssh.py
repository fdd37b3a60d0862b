"""SshTransport against a private OpenSSH server: commands, secrets, host keys, drops, files."""

from __future__ import annotations

import os
import stat
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from opskit.errors import HostKeyError, TransportDropped, TransportError
from opskit.transport import connect
from opskit.transport.ssh import SshTransport
from tests.servers.common import free_port
from tests.servers.sshd import Sshd, start_sshd, write_ed25519_key

pytestmark = pytest.mark.sshd


@pytest.fixture
def transport(sshd: Sshd) -> Iterator[SshTransport]:
    """A transport to the session sshd, closed after the test."""
    t = SshTransport(sshd.spec())
    yield t
    t.close()


def _cmdlines() -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                found.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode())
            except OSError:
                continue
    return found


def test_command_output_and_exit_code_come_back(transport: SshTransport) -> None:
    """A remote command's exit code, stdout and stderr come back separately."""
    result = transport.run("echo out; echo 'ünï \"quoted\"' >&2; exit 3")

    assert result.rc == 3
    assert result.stdout == "out\n"
    assert result.stderr == 'ünï "quoted"\n'
    assert not result.timed_out


def test_remote_lines_stream_live(transport: SshTransport) -> None:
    """Remote output lines are shown as they are printed, not when the command ends."""
    seen: list[tuple[float, str, str]] = []
    started = time.monotonic()

    transport.run(
        "echo first; sleep 0.7; echo second >&2",
        on_output=lambda stream, line: seen.append((time.monotonic() - started, stream, line)),
    )

    assert [(s, line) for _, s, line in seen] == [("stdout", "first"), ("stderr", "second")]
    assert seen[0][0] < 0.6 <= seen[1][0]


def test_stdin_reaches_the_remote_command(transport: SshTransport) -> None:
    """Data given as stdin is what the remote command reads."""
    result = transport.run("wc -c; cat", stdin="")
    assert result.stdout.split() == ["0"]

    result = transport.run("tr a-z A-Z", stdin="line one\nline two\n")
    assert result.stdout == "LINE ONE\nLINE TWO\n"


def test_secrets_never_appear_in_the_remote_command_line(transport: SshTransport) -> None:
    """A secret in env (or in the command text) is invisible to `ps` on the host while it runs."""
    secret = f"pw-{uuid.uuid4().hex}"
    inline = f"inline-{uuid.uuid4().hex}"
    snapshots: list[list[str]] = []

    def watch(stream: str, line: str) -> None:
        if line == "running":
            snapshots.append(_cmdlines())

    result = transport.run(
        f'echo running; sleep 0.3; test "$DB_PW" = {secret} && echo {inline}',
        env={"DB_PW": secret},
        on_output=watch,
    )

    assert result.ok
    assert result.stdout == f"running\n{inline}\n"
    assert snapshots
    assert any("opskit-" in line for line in snapshots[0])
    assert not [line for line in snapshots[0] if secret in line or inline in line]


def test_one_connection_serves_every_command(sshd: Sshd, transport: SshTransport) -> None:
    """Several commands on one host share a single SSH connection."""
    before = sshd.logins()

    for _ in range(3):
        assert transport.run("true").ok

    assert transport.connections_opened == 1
    assert sshd.logins() == before + 1


def test_timeout_stops_the_remote_command_and_its_children(transport: SshTransport) -> None:
    """A remote step past its timeout is reported as timed out and its processes are stopped."""
    marker = f"{uuid.uuid4().int % 10000 + 40000}.5"

    result = transport.run(f"sleep {marker} & sleep {marker}", timeout_s=0.5)

    assert result.timed_out
    assert not result.ok
    deadline = time.monotonic() + 5
    while any(f"sleep {marker}" in c for c in _cmdlines()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(f"sleep {marker}" in c for c in _cmdlines())


def test_put_file_copies_over_sftp_with_mode(transport: SshTransport, tmp_path: Path) -> None:
    """put_file lands the file on the host with exactly the requested permissions."""
    src = tmp_path / "payload"
    src.write_bytes(os.urandom(100_000))
    dst = tmp_path / "remote-copy"

    transport.put_file(src, str(dst), mode=0o640)

    assert dst.read_bytes() == src.read_bytes()
    assert stat.S_IMODE(dst.stat().st_mode) == 0o640


def test_unknown_host_key_fails_with_fingerprint_and_fix(sshd: Sshd, tmp_path: Path) -> None:
    """A host missing from known_hosts is refused with its fingerprint and the flag that records it."""
    known = tmp_path / "known_hosts"
    t = SshTransport(sshd.spec(known_hosts=str(known)))

    with pytest.raises(HostKeyError) as caught:
        t.run("true")

    message = str(caught.value)
    assert f"[127.0.0.1]:{sshd.port}" in message
    assert sshd.host_key_fingerprint in message
    assert str(known) in message
    assert "--accept-new-host-keys" in message
    assert not known.exists()


def test_accept_new_host_keys_records_the_key(sshd: Sshd, tmp_path: Path) -> None:
    """--accept-new-host-keys records a new key (0600) and later runs trust it without the flag."""
    known = tmp_path / "ssh" / "known_hosts"

    first = SshTransport(sshd.spec(known_hosts=str(known)), accept_new_host_keys=True)
    assert first.run("true").ok
    first.close()

    assert known.read_text() == f"[127.0.0.1]:{sshd.port} {sshd.host_key_public}\n"
    assert stat.S_IMODE(known.stat().st_mode) == 0o600
    second = SshTransport(sshd.spec(known_hosts=str(known)))
    assert second.run("true").ok
    second.close()


def test_changed_host_key_is_refused_even_when_accepting_new(sshd: Sshd, tmp_path: Path) -> None:
    """A host whose key changed is refused as a possible man-in-the-middle, whatever the flags."""
    impostor = write_ed25519_key(tmp_path / "other_host_key")
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sshd.port} {impostor}\n")

    t = SshTransport(sshd.spec(known_hosts=str(known)), accept_new_host_keys=True)
    with pytest.raises(HostKeyError) as caught:
        t.check_reachable()

    message = str(caught.value)
    assert "REMOTE HOST KEY CHANGED" in message
    assert "man-in-the-middle" in message
    assert sshd.host_key_fingerprint in message
    assert known.read_text() == f"[127.0.0.1]:{sshd.port} {impostor}\n"


def test_hashed_known_hosts_entries_are_honoured(sshd: Sshd, tmp_path: Path) -> None:
    """A known_hosts file with hashed host names (HashKnownHosts yes) still verifies the host."""
    hashed = paramiko.HostKeys.hash_host(f"[127.0.0.1]:{sshd.port}")
    known = tmp_path / "known_hosts"
    known.write_text(f"{hashed} {sshd.host_key_public}\n")

    t = SshTransport(sshd.spec(known_hosts=str(known)))
    assert t.run("true").ok
    t.close()


def test_auth_failure_is_a_transport_error(sshd: Sshd, tmp_path: Path) -> None:
    """A key the host does not accept fails as 'authentication failed', and nothing ran."""
    stranger = tmp_path / "stranger_key"
    write_ed25519_key(stranger)

    t = SshTransport(sshd.spec(key_file=str(stranger)))
    with pytest.raises(TransportError) as caught:
        t.run("true")

    assert not isinstance(caught.value, HostKeyError | TransportDropped)
    assert "authentication failed" in str(caught.value)


def test_refused_connection_is_a_transport_error(sshd: Sshd) -> None:
    """A port where nothing listens fails as 'refuses connections', with the host named."""
    port = free_port()
    t = SshTransport(sshd.spec(name="old", port=port))

    with pytest.raises(TransportError) as caught:
        t.check_reachable()

    assert not isinstance(caught.value, TransportDropped)
    assert str(caught.value) == (
        f"old: 127.0.0.1:{port} refuses connections (is sshd running on that port?)"
    )


def test_dropped_connection_mid_command_is_in_doubt(tmp_path: Path) -> None:
    """A link that dies while a command runs is reported as dropped (in doubt), then reconnects."""
    with start_sshd(tmp_path / "sshd") as server:
        t = SshTransport(server.spec())

        def cut(stream: str, line: str) -> None:
            if line == "started":
                server.kill_connections()

        with pytest.raises(TransportDropped) as caught:
            t.run("echo started; sleep 10", timeout_s=20, on_output=cut)
        assert "in doubt" in str(caught.value)

        assert t.run("echo again").stdout == "again\n"
        assert t.connections_opened == 2
        t.close()


def test_ssh_config_supplies_hostname_user_port_and_key(sshd: Sshd, tmp_path: Path) -> None:
    """A host alias from ~/.ssh/config (HostName, User, Port, IdentityFile) is honoured."""
    config = tmp_path / "config"
    config.write_text(
        "Host new-box\n"
        f"  HostName {sshd.host}\n  Port {sshd.port}\n  User {sshd.user}\n"
        f"  IdentityFile {sshd.client_key}\n"
    )
    spec = sshd.spec(name="new", address="new-box", port=22, user=None, key_file=None)

    t = SshTransport(spec, ssh_config=config)
    assert t.run("echo via-config").stdout == "via-config\n"
    assert (t.target.hostname, t.target.port) == (sshd.host, sshd.port)
    t.close()


def test_connect_with_a_host_returns_ssh(sshd: Sshd) -> None:
    """connect() gives an SSH transport labelled with the runbook host name."""
    t = connect(sshd.spec(name="new"))

    t.check_reachable()
    assert t.label == "new"
    assert t.run("echo ok").stdout == "ok\n"
    t.close()


def test_commands_can_run_from_several_threads(transport: SshTransport) -> None:
    """Actions that probe in parallel share the host connection safely."""
    results: list[str] = []

    def work(i: int) -> None:
        results.append(transport.run(f"echo {i}").stdout.strip())

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=30)

    assert sorted(results) == ["0", "1", "2", "3"]
    assert transport.connections_opened == 1


def test_transport_errors_are_one_line_without_traceback_noise(sshd: Sshd) -> None:
    """Connection errors read as one line naming the host, ready for `opskit: <line>`."""
    t = SshTransport(sshd.spec(name="db", port=free_port()))
    with pytest.raises(TransportError) as caught:
        t.run("true")
    assert "\n" not in str(caught.value)
    assert str(caught.value).startswith("db: ")
    subprocess.run(["true"], check=True)


def test_ctrl_c_stops_the_remote_command(transport: SshTransport) -> None:
    """Ctrl-C during a remote step stops the command on the host too, not only our end."""
    marker = f"{uuid.uuid4().int % 10000 + 60000}.5"

    def interrupt(stream: str, line: str) -> None:
        if line == "started":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        transport.run(f"sleep {marker} & echo started; wait", on_output=interrupt)

    deadline = time.monotonic() + 5
    while any(f"sleep {marker}" in c for c in _cmdlines()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(f"sleep {marker}" in c for c in _cmdlines())
    assert transport.run("echo still-usable").stdout == "still-usable\n"


def test_large_stdin_and_output_do_not_deadlock(transport: SshTransport) -> None:
    """A command that echoes a large stdin back while reading it completes."""
    data = "0123456789abcdef\n" * 200_000  # 3.4 MB

    result = transport.run("cat; echo done >&2", stdin=data, timeout_s=60)

    assert result.ok
    assert result.stderr == "done\n"
    assert result.stdout.endswith("0123456789abcdef\n")

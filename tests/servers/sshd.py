"""A private OpenSSH sshd on 127.0.0.1: temporary host key, one authorized client key, a high port.

`sshd -D -e` runs in the foreground as a child of the test process, as the current user, with its own
config (no PAM, no strict modes) so it needs nothing from the system's /etc/ssh. Each connection is a
forked child; `kill_connections()` drops them all (the "network died mid-command" case) while the
listener keeps serving later tests.
"""

from __future__ import annotations

import base64
import contextlib
import getpass
import hashlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

# One sshd config and one process-tree walk for the demo and the tests.
from opskit.demo.sshd import SSHD_CONFIG, descendants
from opskit.transport.base import HostSpec
from tests.servers.common import free_port, require_binary


def write_ed25519_key(path: Path) -> str:
    """Write a fresh passphrase-less ed25519 key (OpenSSH format, 0600); return its public line."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    path.write_bytes(pem)
    path.chmod(0o600)
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    line = public.decode()
    Path(f"{path}.pub").write_text(line + "\n")
    return line


def fingerprint(public_line: str) -> str:
    """The SHA256 fingerprint OpenSSH prints for a public key line ("ssh-ed25519 AAAA...")."""
    blob = base64.b64decode(public_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


@dataclass(frozen=True)
class Sshd:
    """Where the private sshd listens and how to log in; `known_hosts` already trusts its host key."""

    host: str
    port: int
    user: str
    client_key: Path
    known_hosts: Path
    host_key_public: str  # "ssh-ed25519 AAAA..."
    host_key_fingerprint: str  # "SHA256:..."
    pid: int
    log_path: Path
    dir: Path

    def spec(self, name: str = "target", **overrides: object) -> HostSpec:
        """A runbook host that reaches this sshd with the test key and the trusting known_hosts."""
        fields: dict[str, object] = {
            "name": name,
            "address": self.host,
            "port": self.port,
            "user": self.user,
            "key_file": str(self.client_key),
            "known_hosts": str(self.known_hosts),
        }
        fields.update(overrides)
        return HostSpec(**fields)  # type: ignore[arg-type]

    def log_text(self) -> str:
        """What sshd logged so far (LogLevel VERBOSE: connections, keys, auth)."""
        return self.log_path.read_text(errors="replace")

    def kill_connections(self) -> int:
        """SIGKILL every per-connection sshd child (clients see the link drop); the listener stays."""
        victims = descendants(self.pid)
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return len(victims)

    def logins(self) -> int:
        """How many SSH logins sshd accepted so far (one per client connection)."""
        return self.log_text().count("Accepted publickey for ")


def _wait_banner(proc: subprocess.Popen[bytes], host: str, port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited with {proc.returncode} before answering")
        with contextlib.suppress(OSError), socket.create_connection((host, port), 0.5) as sock:
            sock.settimeout(1.0)
            if sock.recv(64).startswith(b"SSH-2.0"):
                return
        time.sleep(0.05)
    raise TimeoutError(f"sshd on {host}:{port} did not answer within {timeout_s}s")


@dataclass(frozen=True)
class SshdKeys:
    """A private sshd's binary and keys: its host key, and a client key it authorizes."""

    binary: str
    host_key: Path
    host_public: str
    client_key: Path
    authorized: Path


def prepare_keys(workdir: Path) -> SshdKeys:
    """A 0700 `workdir` holding a fresh host key and an authorized client key (ed25519)."""
    binary = require_binary("sshd", "openssh-server")
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o700)
    host_key = workdir / "host_ed25519"
    host_public = write_ed25519_key(host_key)
    client_key = workdir / "client_ed25519"
    authorized = workdir / "authorized_keys"
    authorized.write_text(write_ed25519_key(client_key) + "\n")
    authorized.chmod(0o600)
    return SshdKeys(binary, host_key, host_public, client_key, authorized)


@contextlib.contextmanager
def start_sshd(workdir: Path) -> Iterator[Sshd]:
    """Start sshd under `workdir`, yield it once it answers with its banner, stop it afterwards."""
    keys = prepare_keys(workdir)
    binary, host_key, host_public = keys.binary, keys.host_key, keys.host_public
    client_key, authorized = keys.client_key, keys.authorized
    port = free_port()
    config = workdir / "sshd_config"
    config.write_text(
        SSHD_CONFIG.format(
            port=port, address="127.0.0.1", host_key=host_key, authorized_keys=authorized
        )
    )
    known_hosts = workdir / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_public}\n")
    known_hosts.chmod(0o600)
    # Privilege separation needs this directory even when sshd runs unprivileged-ish as root.
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    check = subprocess.run(
        [binary, "-t", "-f", str(config)], capture_output=True, text=True, check=False
    )
    if check.returncode != 0:
        raise RuntimeError(f"sshd rejected its test config: {check.stderr.strip()}")
    log_path = workdir / "sshd.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [os.path.realpath(binary), "-D", "-e", "-f", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    server = Sshd(
        host="127.0.0.1",
        port=port,
        user=getpass.getuser(),
        client_key=client_key,
        known_hosts=known_hosts,
        host_key_public=host_public,
        host_key_fingerprint=fingerprint(host_public),
        pid=proc.pid,
        log_path=log_path,
        dir=workdir,
    )
    try:
        _wait_banner(proc, server.host, port, timeout_s=10.0)
        yield server
    finally:
        server.kill_connections()
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """A private OpenSSH server on 127.0.0.1 for the whole session (tests must not stop it)."""
    with start_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server

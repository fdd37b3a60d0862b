"""`opskit demo --ssh`: a private OpenSSH sshd on 127.0.0.1, so old/new host steps really go over SSH.

It runs in the foreground as a child of the demo, as the current user, with its own config, host key
and one authorized client key in a private temporary directory: nothing of the system's /etc/ssh or
~/.ssh is read or written. Stopping it also kills its per-connection children.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opskit.errors import Blocked, UsageError

ADDRESS = "127.0.0.1"
READY_TIMEOUT_S = 10.0
START_ATTEMPTS = 3  # a free port can be taken between probing and sshd binding it: try another

SSHD_CONFIG = """\
Port {port}
ListenAddress {address}
HostKey {host_key}
PidFile none
AuthorizedKeysFile {authorized_keys}
StrictModes no
UsePAM no
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
LogLevel VERBOSE
MaxStartups 50
MaxSessions 50
Subsystem sftp internal-sftp
"""


@dataclass(frozen=True)
class DemoSshd:
    """Where the rehearsal's sshd listens and how to log in to it (known_hosts trusts its key)."""

    address: str
    port: int
    user: str
    key_file: Path
    known_hosts: Path
    pid: int
    log_file: Path

    def host_vars(self) -> dict[str, Any]:
        """The runbook vars that point both `old` and `new` at this sshd."""
        return {
            "old_host": "old",
            "new_host": "new",
            "old_ssh_address": self.address,
            "new_ssh_address": self.address,
            "ssh_port": str(self.port),
            "ssh_user": self.user,
            "ssh_key_file": str(self.key_file),
            "ssh_known_hosts": str(self.known_hosts),
        }


def find_sshd() -> str | None:
    """The sshd binary (PATH, then /usr/sbin and /usr/local/sbin, which a user's PATH often lacks)."""
    found = shutil.which("sshd")
    if found:
        return found
    for candidate in ("/usr/sbin/sshd", "/usr/local/sbin/sshd"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def require_sshd() -> str:
    """The sshd binary; UsageError (nothing started) when OpenSSH's server is not installed."""
    binary = find_sshd()
    if binary is None:
        raise UsageError(
            "demo --ssh needs OpenSSH's sshd, which is not installed: install openssh-server "
            "(apt-get install openssh-server), or run the demo without --ssh"
        )
    return binary


@contextlib.contextmanager
def private_sshd(binary: str | None = None) -> Iterator[DemoSshd]:
    """Start a private sshd on 127.0.0.1, yield it once it answers, stop it (and its children) after."""
    binary = binary or require_sshd()
    keygen = shutil.which("ssh-keygen")
    if keygen is None:
        raise UsageError("demo --ssh needs ssh-keygen: install openssh-client")
    with tempfile.TemporaryDirectory(prefix="opskit-demo-sshd-") as tmp:
        work = Path(tmp)
        work.chmod(0o700)
        host_key, client_key = work / "host_ed25519", work / "client_ed25519"
        for key in (host_key, client_key):
            _keygen(keygen, key)
        authorized = work / "authorized_keys"
        authorized.write_text(Path(f"{client_key}.pub").read_text())
        authorized.chmod(0o600)
        # Privilege separation needs this directory; only root can create it (and only root needs it).
        with contextlib.suppress(OSError):
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        proc, port, log_file = _start(binary, work, host_key, authorized)
        try:
            known_hosts = work / "known_hosts"
            public = Path(f"{host_key}.pub").read_text().split()
            known_hosts.write_text(f"[{ADDRESS}]:{port} {public[0]} {public[1]}\n")
            known_hosts.chmod(0o600)
            yield DemoSshd(
                address=ADDRESS,
                port=port,
                user=getpass.getuser(),
                key_file=client_key,
                known_hosts=known_hosts,
                pid=proc.pid,
                log_file=log_file,
            )
        finally:
            _stop(proc)


def _keygen(keygen: str, path: Path) -> None:
    done = subprocess.run(
        [keygen, "-q", "-t", "ed25519", "-N", "", "-C", "opskit-demo", "-f", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if done.returncode != 0:
        raise Blocked(f"ssh-keygen failed: {done.stderr.strip() or done.returncode}")


def _start(
    binary: str, work: Path, host_key: Path, authorized: Path
) -> tuple[subprocess.Popen[bytes], int, Path]:
    """sshd on a free high port, answering with its banner; Blocked when it would not start."""
    problem = "no attempt made"
    for attempt in range(START_ATTEMPTS):
        port = _free_port()
        config = work / "sshd_config"
        config.write_text(
            SSHD_CONFIG.format(
                port=port, address=ADDRESS, host_key=host_key, authorized_keys=authorized
            )
        )
        check = subprocess.run(
            [binary, "-t", "-f", str(config)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if check.returncode != 0:
            raise Blocked(f"sshd rejected the demo's config: {check.stderr.strip()}")
        log_file = work / f"sshd-{attempt}.log"
        with open(log_file, "wb") as log:
            proc = subprocess.Popen(
                [os.path.realpath(binary), "-D", "-e", "-f", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # Ctrl-C reaches the demo only; the demo stops sshd itself
            )
        try:
            problem = _wait_banner(proc, port, log_file)
        except BaseException:
            _stop(proc)
            raise
        if not problem:
            return proc, port, log_file
        _stop(proc)
    raise Blocked(f"the demo's sshd did not start on {ADDRESS}: {problem}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((ADDRESS, 0))
        return int(probe.getsockname()[1])


def _wait_banner(proc: subprocess.Popen[bytes], port: int, log_file: Path) -> str:
    """ "" once sshd answers with its banner, else what went wrong (bounded by READY_TIMEOUT_S)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            lines = log_file.read_text(errors="replace").strip().splitlines()
            return f"sshd exited with {proc.returncode}: {lines[-1] if lines else 'no log'}"
        with contextlib.suppress(OSError), socket.create_connection((ADDRESS, port), 0.5) as sock:
            sock.settimeout(1.0)
            if sock.recv(64).startswith(b"SSH-2.0"):
                return ""
        time.sleep(0.05)
    return f"no SSH banner on port {port} within {READY_TIMEOUT_S:g}s"


def descendants(pid: int) -> list[int]:
    """Every live process under `pid` (sshd's per-connection children and their sessions)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Kill the connections first (they outlive the listener otherwise), then sshd, and reap it."""
    if proc.poll() is None:
        for pid in descendants(proc.pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)

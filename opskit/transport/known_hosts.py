"""Host key trust: known_hosts lookups, OpenSSH fingerprints, and recording a new key on request.

paramiko's own policies either trust any key (the auto-add and the warning policy) or say nothing useful;
this one fails with which host, which key and what to do, and records a key only when the operator
asked (`--accept-new-host-keys`). A key that differs from a recorded one never reaches the policy:
paramiko raises BadHostKeyException, which `changed_key_error` turns into the MITM warning.
"""

from __future__ import annotations

import base64
import hashlib
import os
import threading
from pathlib import Path

import paramiko

from opskit.errors import HostKeyError

_write_lock = threading.Lock()


def fingerprint(key: paramiko.PKey) -> str:
    """The SHA256 fingerprint as `ssh` and `ssh-keygen -l` print it."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def host_entry_name(hostname: str, port: int) -> str:
    """How known_hosts names a host: bare for port 22, `[host]:port` otherwise (as paramiko looks up)."""
    return hostname if port == 22 else f"[{hostname}]:{port}"


def record_key(path: Path, entry_name: str, key: paramiko.PKey) -> None:
    """Append `entry_name key` to known_hosts (created 0600 in a 0700 directory when missing)."""
    with _write_lock:
        if not path.parent.exists():
            path.parent.mkdir(mode=0o700, parents=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a") as out:
            if out.tell() > 0 and not path.read_bytes().endswith(b"\n"):
                out.write("\n")
            out.write(f"{entry_name} {key.get_name()} {key.get_base64()}\n")
            out.flush()
            os.fsync(out.fileno())


def unknown_key_error(label: str, entry_name: str, key: paramiko.PKey, path: Path) -> HostKeyError:
    """The step-failing message for a host whose key is not in known_hosts yet."""
    return HostKeyError(
        label,
        f"unknown SSH host key for {entry_name}: {key.get_name()} {fingerprint(key)} is not in "
        f"{path}; check the fingerprint with the host's owner, then re-run with "
        "--accept-new-host-keys to record it",
    )


def changed_key_error(
    label: str, entry_name: str, offered: paramiko.PKey, recorded: paramiko.PKey, path: Path
) -> HostKeyError:
    """The message for a key that differs from the recorded one; never accepted automatically."""
    return HostKeyError(
        label,
        f"REMOTE HOST KEY CHANGED for {entry_name}: it offered {offered.get_name()} "
        f"{fingerprint(offered)} but {path} records {recorded.get_name()} {fingerprint(recorded)}; "
        "possible man-in-the-middle. If the host was really reinstalled, remove the old entry "
        f"(ssh-keygen -R '{entry_name}' -f {path}) and verify the new fingerprint",
    )


def make_policy(label: str, path: Path, accept_new: bool) -> paramiko.MissingHostKeyPolicy:
    """A paramiko policy for keys missing from known_hosts: refuse, or record when accept_new."""

    class _VerifyOrRecord(paramiko.MissingHostKeyPolicy):
        def missing_host_key(
            self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
        ) -> None:
            if not accept_new:
                raise unknown_key_error(label, hostname, key, path)
            record_key(path, hostname, key)
            client.get_host_keys().add(hostname, key.get_name(), key)

    return _VerifyOrRecord()

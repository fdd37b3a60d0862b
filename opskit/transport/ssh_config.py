"""Where to connect and as whom: a runbook host merged with `~/.ssh/config` (HostName, User, Port,
IdentityFile), the way `ssh` would for the same name."""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from pathlib import Path

import paramiko

from opskit.transport.base import HostSpec


@dataclass(frozen=True)
class SshTarget:
    """The resolved connection parameters for one host."""

    hostname: str
    port: int
    user: str
    key_files: tuple[str, ...]  # explicit keys to offer first (empty: agent and default keys)
    known_hosts: Path
    proxy_jump: tuple[str, ...] = ()  # ProxyJump hops, first hop first


def resolve(spec: HostSpec, config_path: Path | None = None) -> SshTarget:
    """Merge the runbook's host with ~/.ssh/config; what the runbook states explicitly wins.

    HostSpec cannot tell "port: 22" from no port at all, so a config Port applies when the runbook
    says 22 (the default), as `ssh -p` would not have been given either.
    """
    path = config_path if config_path is not None else Path.home() / ".ssh" / "config"
    found: dict[str, object] = {}
    if path.is_file():
        found = dict(paramiko.SSHConfig.from_path(str(path)).lookup(spec.address))
    hostname = str(found.get("hostname", spec.address))
    port = spec.port
    if port == 22 and "port" in found:
        port = int(str(found["port"]))
    user = spec.user or str(found.get("user") or getpass.getuser())
    keys: list[str] = []
    if spec.key_file:
        keys.append(str(Path(spec.key_file).expanduser()))
    identity = found.get("identityfile")
    if isinstance(identity, list):
        keys.extend(str(Path(k).expanduser()) for k in identity if Path(k).expanduser().is_file())
    known = Path(spec.known_hosts).expanduser() if spec.known_hosts else None
    if known is None:
        known = Path.home() / ".ssh" / "known_hosts"
    return SshTarget(
        hostname=hostname,
        port=port,
        user=user,
        key_files=tuple(dict.fromkeys(keys)),
        known_hosts=known,
        proxy_jump=_hops(found.get("proxyjump")),
    )


def _hops(value: object) -> tuple[str, ...]:
    """ProxyJump `b1,user@b2:2222` -> ("b1", "user@b2:2222"); `none` (or absent) -> no hop."""
    text = str(value or "").strip()
    if not text or text.lower() == "none":
        return ()
    return tuple(h.strip() for h in text.split(",") if h.strip())

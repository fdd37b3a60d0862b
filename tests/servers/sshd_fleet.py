"""Many SSH "hosts" on loopback: one port, addresses 127.0.0.2..N, served by private OpenSSH sshds.

An sshd listens on at most 16 addresses, so every 16 hosts get their own sshd process (same port, same
host key, same authorized client key). `known_hosts` pins `[127.0.0.X]:PORT` for every host, so host
keys are verified on every connection exactly as for a real fleet.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from opskit.demo.sshd import SSHD_CONFIG, descendants
from tests.servers.common import free_port
from tests.servers.sshd import _wait_banner, prepare_keys

PER_SSHD = 16  # OpenSSH's MAX_LISTEN_SOCKS


@dataclass(frozen=True)
class Fleet:
    """Where the fleet's hosts listen and how to log in to them."""

    addresses: tuple[str, ...]
    port: int
    user: str
    client_key: Path
    known_hosts: Path
    pids: tuple[int, ...]
    dir: Path

    def host_lines(self, prefix: str = "web") -> dict[str, str]:
        """name -> address for every host: web1 -> 127.0.0.2 ..."""
        return {f"{prefix}{i}": a for i, a in enumerate(self.addresses, start=1)}

    def connections(self) -> int:
        """Per-connection sshd children alive now (the listeners excluded)."""
        return sum(len(descendants(pid)) for pid in self.pids)


@contextlib.contextmanager
def start_fleet(workdir: Path, count: int) -> Iterator[Fleet]:
    """Start enough sshds for `count` hosts on 127.0.0.2.. and stop them afterwards."""
    keys = prepare_keys(workdir)
    binary, host_key, host_public = keys.binary, keys.host_key, keys.host_public
    client_key, authorized = keys.client_key, keys.authorized
    port = free_port()
    addresses = tuple(f"127.0.{(i + 2) // 256}.{(i + 2) % 256}" for i in range(count))
    known = workdir / "known_hosts"
    known.write_text("".join(f"[{a}]:{port} {host_public}\n" for a in addresses))
    known.chmod(0o600)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for n, start in enumerate(range(0, count, PER_SSHD)):
            chunk = addresses[start : start + PER_SSHD]
            config = workdir / f"sshd_config.{n}"
            text = SSHD_CONFIG.format(
                port=port, address=chunk[0], host_key=host_key, authorized_keys=authorized
            )
            extra = "".join(f"ListenAddress {a}\n" for a in chunk[1:])
            text = text.replace(f"ListenAddress {chunk[0]}\n", f"ListenAddress {chunk[0]}\n{extra}")
            text = text.replace("MaxStartups 50", "MaxStartups 200").replace(
                "LogLevel VERBOSE", "LogLevel ERROR"
            )
            config.write_text(text)
            log = open(workdir / f"sshd.{n}.log", "wb")  # noqa: SIM115 - closed with the process
            procs.append(subprocess.Popen([os.path.realpath(binary), "-D", "-e", "-f", str(config)],
                                          stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                          start_new_session=True))  # fmt: skip
            log.close()
        for n, proc in enumerate(procs):
            _wait_banner(proc, addresses[n * PER_SSHD], port, timeout_s=10.0)
        yield Fleet(
            addresses,
            port,
            getpass.getuser(),
            client_key,
            known,
            tuple(p.pid for p in procs),
            workdir,
        )
    finally:
        for proc in procs:
            for pid in descendants(proc.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 9)
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)

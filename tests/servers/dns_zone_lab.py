"""Authoritative servers for zones a test writes itself: a parent, its children, forgotten secondaries.

Each `Auth` is one nsd or knot in the foreground on its own loopback address (127.0.0.x, or ::1), all on
one free port (NS records carry no port, so discovery reaches every server with --auth-port). Knot takes
TSIG-signed updates with the lab key, so a test can switch a record on a primary and watch an nsd that it
rewrites later by hand play the lagging secondary.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.servers.common import free_port, require_binary, stop_all
from tests.servers.dns_lab import KEY_NAME, KEY_SECRET, wait_ready


@dataclass(frozen=True)
class Auth:
    """One authoritative server: where it listens and the zones (name -> zone file text) it serves."""

    addr: str
    zones: Mapping[str, str]
    kind: str = "nsd"  # "knot" accepts TSIG-signed dynamic updates


@dataclass(frozen=True)
class ZoneLab:
    """Where the servers listen; `rewrite` changes a zone on one server and reloads it."""

    dir: Path
    port: int
    key_file: Path
    servers: tuple[Auth, ...]
    controls: dict[str, list[str]] = field(default_factory=dict)

    def at(self, addr: str) -> str:
        """HOST:PORT of the server on `addr`."""
        return f"[{addr}]:{self.port}" if ":" in addr else f"{addr}:{self.port}"

    def rewrite(self, addr: str, zone: str, text: str) -> None:
        """Replace `zone` on the server at `addr` (bump the serial in `text`) and reload it."""
        (self.dir / _label(addr) / f"{zone}.zone").write_text(text)
        subprocess.run(
            [*self.controls[addr], "reload" if _is_nsd(self, addr) else "zone-reload", zone],
            check=True,
            capture_output=True,
            timeout=10,
        )


def _is_nsd(lab: ZoneLab, addr: str) -> bool:
    return next(a for a in lab.servers if a.addr == addr).kind == "nsd"


def _label(addr: str) -> str:
    return "v6-" + addr.replace(":", "_") if ":" in addr else addr.replace(".", "_")


def _port_free_on(addrs: Sequence[str]) -> int:
    for _ in range(50):
        port = free_port()
        try:
            for addr in addrs:
                fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
                for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                    with socket.socket(fam, kind) as s:
                        s.bind((addr, port))
        except OSError:
            continue
        return port
    raise RuntimeError(f"no port free on {', '.join(addrs)} at once")


def _nsd_conf(home: Path, auth: Auth, port: int) -> str:
    zones = "".join(f'zone:\n    name: "{z}"\n    zonefile: "{z}.zone"\n' for z in auth.zones)
    return f"""server:
    ip-address: {auth.addr}@{port}
    do-ip6: {"yes" if ":" in auth.addr else "no"}
    username: ""
    chroot: ""
    zonesdir: "{home}"
    database: ""
    zonelistfile: "{home}/zone.list"
    xfrdfile: "{home}/xfrd.state"
    xfrdir: "{home}"
    pidfile: "{home}/nsd.pid"
    logfile: "{home}/server.log"
    server-count: 1
    verbosity: 1
    rrl-ratelimit: 0
    rrl-whitelist-ratelimit: 0
remote-control:
    control-enable: yes
    control-interface: "{home}/nsd.ctl"
{zones}"""


def _knot_conf(home: Path, auth: Auth, port: int) -> str:
    zones = "".join(f"  - domain: {z}\n" for z in auth.zones)
    return f"""server:
    rundir: "{home}"
    pidfile: "{home}/knot.pid"
    listen: {auth.addr}@{port}
control:
    listen: "{home}/knot.sock"
log:
  - target: "{home}/server.log"
    any: info
database:
    storage: "{home}/db"
key:
  - id: {KEY_NAME}
    algorithm: hmac-sha256
    secret: {KEY_SECRET}
acl:
  - id: update-by-tsig
    address: 127.0.0.0/8
    key: {KEY_NAME}
    action: update
template:
  - id: default
    storage: "{home}"
    file: "%s.zone"
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: changes
    serial-policy: increment
    acl: update-by-tsig
zone:
{zones}"""


@contextlib.contextmanager
def zone_lab(servers: Sequence[Auth]) -> Iterator[ZoneLab]:
    """Start every server, wait until each answers its zones' SOA, stop them all afterwards."""
    for binary, package in (("nsd", "nsd"), ("knotd", "knot")):
        require_binary(binary, package)
    lab = Path(tempfile.mkdtemp(prefix="opskit-zonelab-"))
    port = _port_free_on([a.addr for a in servers])
    key_file = lab / "tsig.key"
    key_file.write_text(
        f'key "{KEY_NAME}" {{\n\talgorithm hmac-sha256;\n\tsecret "{KEY_SECRET}";\n}};\n'
    )
    key_file.chmod(0o600)
    procs: list[subprocess.Popen[bytes]] = []
    controls: dict[str, list[str]] = {}
    try:
        for auth in servers:
            home = lab / _label(auth.addr)
            home.mkdir()
            for zone, text in auth.zones.items():
                (home / f"{zone}.zone").write_text(text)
            conf = home / "server.conf"
            if auth.kind == "nsd":
                conf.write_text(_nsd_conf(home, auth, port))
                cmd, controls[auth.addr] = (
                    ["nsd", "-d", "-c", str(conf)],
                    ["nsd-control", "-c", str(conf)],
                )
            else:
                (home / "db").mkdir()
                conf.write_text(_knot_conf(home, auth, port))
                cmd, controls[auth.addr] = ["knotd", "-c", str(conf)], ["knotc", "-c", str(conf)]
            with (home / "stdout.log").open("wb") as out:
                procs.append(subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT))
            for zone in auth.zones:
                wait_ready(auth.addr, port, zone, procs[-1], home / "server.log")
        yield ZoneLab(lab, port, key_file, tuple(servers), controls)
    finally:
        stop_all(procs)
        shutil.rmtree(lab, ignore_errors=True)


def zone(origin: str, records: str, *, serial: int = 1, ns: Sequence[str] = ()) -> str:
    """A zone file: SOA (negative TTL 15 s), NS set (default ns1.<origin>), then `records` verbatim."""
    names = ns or [f"ns1.{origin}"]
    lines = [
        f"$ORIGIN {origin}.",
        "$TTL 300",
        f"@ 3600 IN SOA {names[0]}. hostmaster.{origin}. {serial} 3600 600 86400 15",
        *(f"@ 3600 IN NS {n}." for n in names),
        records.strip(),
    ]
    return "\n".join(lines) + "\n"

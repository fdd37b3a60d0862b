"""A small DNS lab per test case: zones the test writes, served by nsd, knot and unbound on loopback.

The shared session lab (`dns_lab.py`) holds the everyday zones; a case that needs a loop, a wildcard, a
clamping cache or a short-lived signature writes exactly that zone here instead. nsd listens on 127.0.0.2,
knot on 127.0.0.3, a parent nsd on 127.0.0.4, all on one free port (NS records carry no port); each
unbound gets its own port on 127.0.0.1 and stub zones pointing at the servers that hold each zone.
Daemons run in the foreground as children and are stopped (and their files removed) on exit.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dns.message
import dns.query

from tests.servers.common import free_port, require_binary, stop_all
from tests.servers.dns_lab import NS1, NS2, PARENT, _shared_port, wait_ready

SOA = "@ 3600 IN SOA ns1.case.test. hostmaster.case.test. {serial} 3600 600 86400 {minimum}"


def zone_text(origin: str, body: str, *, serial: int = 1, minimum: int = 15) -> str:
    """A zone file: SOA, NS ns1 (nsd) and ns2 (knot) with their addresses, then the case's records."""
    head = [
        f"$ORIGIN {origin.rstrip('.')}.",
        "$TTL 300",
        SOA.format(serial=serial, minimum=minimum),
        # in-zone names with their addresses, so every server can be found from the zone itself
        "@ 3600 IN NS ns1",
        "@ 3600 IN NS ns2",
        f"ns1 3600 IN A {NS1}",
        f"ns2 3600 IN A {NS2}",
    ]
    return "\n".join(head) + "\n" + body.strip() + "\n"


def only_holders(text: str, holders: set[str]) -> str:
    """The zone as its servers publish it: NS and address lines only for the servers that hold it.

    A zone that lists a server which does not serve it is a lame delegation, which opskit rightly
    reports; a case about something else must not trip over it.
    """
    if not holders:
        return text
    drop = {
        line
        for label, name, addr in (("nsd", "ns1", NS1), ("knot", "ns2", NS2))
        if label not in holders
        for line in (f"@ 3600 IN NS {name}", f"{name} 3600 IN A {addr}")
    }
    return "\n".join(line for line in text.split("\n") if line not in drop)


@dataclass(frozen=True)
class TsigSpec:
    """A TSIG key knot accepts for updates (algorithm as knot names it)."""

    name: str
    algorithm: str
    secret: str


@dataclass(frozen=True)
class CaseLab:
    """Where the case's servers listen."""

    dir: Path
    port: int
    resolvers: Mapping[str, str] = field(default_factory=dict)  # label -> 127.0.0.1:PORT

    @property
    def nsd(self) -> str:
        return f"{NS1}:{self.port}"

    @property
    def knot(self) -> str:
        return f"{NS2}:{self.port}"

    @property
    def parent(self) -> str:
        return f"{PARENT}:{self.port}"

    def write_nsd_zone(self, zone: str, text: str) -> None:
        """Replace a zone file of the child nsd, reload it, and return once it serves the new serial."""
        before = _serial(self.nsd, zone)
        holders = {"nsd"} | (
            {"knot"} if (self.dir / "zones-knot" / f"{zone}.zone").exists() else set()
        )
        (self.dir / "zones-nsd" / f"{zone}.zone").write_text(only_holders(text, holders))
        subprocess.run(
            ["nsd-control", "-c", str(self.dir / "etc" / "nsd.conf"), "reload", zone],
            check=True,
            capture_output=True,
            timeout=10,
        )
        deadline = time.monotonic() + 10
        while _serial(self.nsd, zone) == before:  # the reload runs after nsd-control returns
            if time.monotonic() > deadline:
                raise RuntimeError(f"nsd still serves serial {before} of {zone} after a reload")
            time.sleep(0.05)


def _serial(server: str, zone: str) -> int:
    host, port = server.split(":")
    response = dns.query.udp(dns.message.make_query(zone, "SOA"), host, port=int(port), timeout=2)
    return int(response.answer[0][0].serial)


def _nsd_conf(lab: Path, name: str, addr: str, port: int, zones: Sequence[str]) -> Path:
    lines = [
        "server:",
        f"    ip-address: {addr}@{port}",
        "    do-ip6: no",
        '    username: ""',
        '    chroot: ""',
        f'    zonesdir: "{lab}/zones-{name}"',
        '    database: ""',
        f'    zonelistfile: "{lab}/{name}/zone.list"',
        f'    xfrdfile: "{lab}/{name}/xfrd.state"',
        f'    xfrdir: "{lab}/{name}"',
        f'    pidfile: "{lab}/run/{name}.pid"',
        f'    logfile: "{lab}/log/{name}.log"',
        "    server-count: 1",
        "    verbosity: 1",
        "    rrl-ratelimit: 0",
        "    rrl-whitelist-ratelimit: 0",
        "remote-control:",
        "    control-enable: yes",
        f'    control-interface: "{lab}/run/{name}.ctl"',
    ]
    for zone in zones:
        lines += ["zone:", f'    name: "{zone}"', f'    zonefile: "{zone}.zone"']
    path = lab / "etc" / f"{name}.conf"
    path.write_text("\n".join(lines) + "\n")
    return path


def _policies(signing: Mapping[str, int]) -> list[str]:
    """A knot signing policy per zone: RRSIGs valid `lifetime` seconds, refreshed at half of it.

    knot refuses an rrsig-refresh below propagation-delay + the zone's largest TTL, so signed case
    zones keep their TTLs at a minute or less.
    """
    lines = ["policy:"] if signing else []
    for i, lifetime in enumerate(signing.values()):
        lines += [
            f"  - id: p{i}",
            "    algorithm: ecdsap256sha256",
            "    propagation-delay: 0",
            f"    rrsig-lifetime: {lifetime}",
            f"    rrsig-refresh: {lifetime // 2}",
            "    rrsig-pre-refresh: 60",
        ]
    return lines


def _knot_conf(
    lab: Path,
    port: int,
    zones: Sequence[str],
    keys: Sequence[TsigSpec],
    signing: Mapping[str, int],
) -> Path:
    lines = [
        "server:",
        f'    rundir: "{lab}/knot"',
        f'    pidfile: "{lab}/run/knot.pid"',
        f"    listen: {NS2}@{port}",
        "control:",
        f'    listen: "{lab}/run/knot.sock"',
        "log:",
        f'  - target: "{lab}/log/knot.log"',
        "    any: info",
        "database:",
        f'    storage: "{lab}/knot"',
    ]
    if keys:
        lines.append("key:")
        for k in keys:
            lines += [
                f"  - id: {k.name}",
                f"    algorithm: {k.algorithm}",
                f"    secret: {k.secret}",
            ]
        lines += [
            "acl:",
            "  - id: update-by-tsig",
            "    address: 127.0.0.0/8",
            f"    key: [{', '.join(k.name for k in keys)}]",
            "    action: update",
        ]
    lines += _policies(signing)
    lines += [
        "template:",
        "  - id: default",
        f'    storage: "{lab}/zones-knot"',
        '    file: "%s.zone"',
        "    zonefile-sync: -1",
        "    zonefile-load: whole",
        "    journal-content: changes",
        "    serial-policy: increment",
    ]
    if keys:
        lines.append("    acl: update-by-tsig")
    lines.append("zone:")
    policy = {zone: f"p{i}" for i, zone in enumerate(signing)}
    for zone in zones:
        lines.append(f"  - domain: {zone}")
        if zone in policy:
            lines += ["    dnssec-signing: on", f"    dnssec-policy: {policy[zone]}"]
    path = lab / "etc" / "knot.conf"
    path.write_text("\n".join(lines) + "\n")
    return path


def _unbound_conf(
    lab: Path, label: str, port: int, extra: str, stubs: Mapping[str, Sequence[str]]
) -> Path:
    lines = [
        "server:",
        f"    interface: 127.0.0.1@{port}",
        f"    port: {port}",
        "    do-ip6: no",
        "    do-daemonize: no",
        '    username: ""',
        '    chroot: ""',
        f'    directory: "{lab}/{label}"',
        f'    pidfile: "{lab}/run/{label}.pid"',
        f'    logfile: "{lab}/log/{label}.log"',
        "    use-syslog: no",
        "    verbosity: 1",
        "    do-not-query-localhost: no",
        '    module-config: "iterator"',
        '    local-zone: "test." nodefault',
        "    prefetch: no",
        "    qname-minimisation: no",
        *(f"    {line.strip()}" for line in extra.strip().splitlines()),
        "remote-control:",
        "    control-enable: yes",
        f'    control-interface: "{lab}/run/{label}.ctl"',
        "    control-use-cert: no",
    ]
    for zone, addrs in stubs.items():
        lines += ["stub-zone:", f'    name: "{zone}"']
        lines += [f"    stub-addr: {a}" for a in addrs]
    path = lab / "etc" / f"{label}.conf"
    path.write_text("\n".join(lines) + "\n")
    return path


Launch = tuple[str, list[str], str, int, str]  # label, argv, address, port, zone to wait for


def _servers(
    lab: Path,
    port: int,
    zones: Mapping[str, Mapping[str, str]],
    keys: Sequence[TsigSpec],
    signing: Mapping[str, int],
) -> list[Launch]:
    """Write the zone files and configs of nsd, the parent nsd and knot; their launch lines."""
    launches: list[Launch] = []
    for label, addr in (("nsd", NS1), ("parent", PARENT), ("knot", NS2)):
        held = zones[label]
        if not held:
            continue
        (lab / label).mkdir(exist_ok=True)
        for zone, text in held.items():
            holders = {name for name in ("nsd", "knot") if zone in zones[name]}
            (lab / f"zones-{label}" / f"{zone}.zone").write_text(only_holders(text, holders))
        if label == "knot":
            cmd = ["knotd", "-c", str(_knot_conf(lab, port, list(held), keys, signing))]
        else:
            cmd = ["nsd", "-d", "-c", str(_nsd_conf(lab, label, addr, port, list(held)))]
        launches.append((label, cmd, addr, port, next(iter(held))))
    return launches


def _caches(
    lab: Path, port: int, zones: Mapping[str, Mapping[str, str]], unbound: Mapping[str, str]
) -> tuple[list[Launch], dict[str, str]]:
    """unbound configs whose stub zones point at the servers holding each zone; launch lines."""
    stubs: dict[str, list[str]] = {}
    for label, addr in (("nsd", NS1), ("knot", NS2), ("parent", PARENT)):
        for zone in zones[label]:
            stubs.setdefault(zone, []).append(f"{addr}@{port}")
    # a stray name SERVFAILs on loopback instead of leaving for the real root
    stubs.setdefault(".", [f"{PARENT if zones['parent'] else NS1}@{port}"])
    launches: list[Launch] = []
    if not unbound:
        return launches, {}
    first = next(iter({**zones["nsd"], **zones["knot"]}))
    resolvers: dict[str, str] = {}
    for label, extra in unbound.items():
        (lab / label).mkdir()
        res_port = free_port(udp_too=True)
        conf = _unbound_conf(lab, label, res_port, extra, stubs)
        launches.append((label, ["unbound", "-d", "-c", str(conf)], "127.0.0.1", res_port, first))
        resolvers[label] = f"127.0.0.1:{res_port}"
    return launches, resolvers


@contextlib.contextmanager
def case_lab(
    *,
    nsd: Mapping[str, str] | None = None,
    knot: Mapping[str, str] | None = None,
    parent: Mapping[str, str] | None = None,
    keys: Sequence[TsigSpec] = (),
    unbound: Mapping[str, str] | None = None,
    signing: Mapping[str, int] | None = None,
) -> Iterator[CaseLab]:
    """Start the servers the case needs (zone name -> zone text), yield where they listen, stop them.

    `signing` maps knot zones to sign to their RRSIG lifetime in seconds.
    """
    zones = {"nsd": nsd or {}, "knot": knot or {}, "parent": parent or {}}
    for binary, package, wanted in (
        ("nsd", "nsd", zones["nsd"] or zones["parent"]),
        ("knotd", "knot", zones["knot"]),
        ("unbound", "unbound", unbound),
    ):
        if wanted:
            require_binary(binary, package)
    lab = Path(tempfile.mkdtemp(prefix="opskit-dnscase-"))
    port = _shared_port()
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for d in ("etc", "run", "log", "zones-nsd", "zones-knot", "zones-parent", "knot"):
            (lab / d).mkdir()
        launches = _servers(lab, port, zones, keys, signing or {})
        caches, resolvers = _caches(lab, port, zones, unbound or {})
        for label, cmd, *_ in [*launches, *caches]:
            with (lab / "log" / f"{label}.out").open("wb") as out:
                procs[label] = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        for label, _, addr, at, zone in [*launches, *caches]:
            wait_ready(addr, at, zone, procs[label], lab / "log" / f"{label}.log")
        yield CaseLab(lab, port, resolvers)
    finally:
        stop_all(procs.values())
        shutil.rmtree(lab, ignore_errors=True)

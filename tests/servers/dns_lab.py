"""A loopback DNS lab: nsd (ns1) + knot (ns2) authoritative, a parent nsd, and two unbound caches.

Every daemon runs in the foreground as a child of the test process, on one free high port shared by
127.0.0.2/.3/.4 (NS records carry no port), with fresh storage under a private directory. Templates live
in `tests/servers/dnslab/` (the verified configs of /work/shared/reference/dns-lab, made foreground).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode

from tests.servers.common import free_port, require_binary, stop_all

HERE = Path(__file__).resolve().parent / "dnslab"
KEY_NAME = "opskit-test"
KEY_SECRET = "b3Bza2l0LWxhYi1vbmx5LW5vdC1hLXJlYWwtc2VjcmV0LTAwMDA="  # noqa: S105 - lab-only value
NS1, NS2, PARENT = "127.0.0.2", "127.0.0.3", "127.0.0.4"
BENCH_NAMES = 500


@dataclass(frozen=True)
class DnsLab:
    """Where the lab listens; `pins` are the --nameserver options that reach both authoritatives."""

    dir: Path
    auth_port: int
    resolver: str  # conforming unbound, allow_snoop
    clamp: str  # unbound with cache-min-ttl 30 and serve-stale
    key_file: Path  # BIND key-file format, as tsig-keygen writes it

    @property
    def ns1(self) -> str:
        return f"{NS1}:{self.auth_port}"

    @property
    def ns2(self) -> str:
        return f"{NS2}:{self.auth_port}"

    @property
    def pins(self) -> list[str]:
        return [
            "--nameserver",
            f"ns1.example.test={self.ns1}",
            "--nameserver",
            f"ns2.example.test={self.ns2}",
        ]


def _shared_port() -> int:
    """A UDP+TCP port free on 127.0.0.2, .3 and .4 at once."""
    for _ in range(50):
        port = free_port()
        try:
            for addr in (NS1, NS2, PARENT):
                for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                    with socket.socket(socket.AF_INET, kind) as s:
                        s.bind((addr, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no port free on 127.0.0.2-4")


def wait_ready(addr: str, port: int, zone: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Return once the server answers the zone's SOA (bounded: 10 s)."""
    query = dns.message.make_query(zone, "SOA")
    deadline = time.monotonic() + 10
    while True:
        try:
            if dns.query.udp(query, addr, port=port, timeout=0.2).rcode() == dns.rcode.NOERROR:
                return
        except (dns.exception.Timeout, OSError):
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{addr}:{port} does not answer {zone} SOA; log:\n{tail}")
        time.sleep(0.05)


LAB_ZONES = (
    "example.test",
    "other.test",
    "split.test",
    "lag.test",
    "upd.test",
    "flip.test",
    "signed.test",
    "bench.test",
)


def _prime_delegations(port: int) -> None:
    """Cache each lab zone's NS set, as a resolver that has run a while has: unbound answers a
    recursion-off peek from cache only once it holds the delegation (otherwise it recurses)."""
    for zone in LAB_ZONES:
        dns.query.udp(dns.message.make_query(zone, "NS"), "127.0.0.1", port=port, timeout=2)


def bench_zone(count: int) -> str:
    """A zone with `count` names (h0..hN, TTL 300) for the benchmark."""
    lines = [
        "$ORIGIN bench.test.",
        "$TTL 300",
        "@ 3600 IN SOA ns1.example.test. hostmaster.example.test. 1 3600 600 86400 15",
        "@ 3600 IN NS ns1.example.test.",
        "@ 3600 IN NS ns2.example.test.",
    ]
    lines += [f"h{i} 300 IN A 198.51.100.{i % 250 + 1}" for i in range(count)]
    return "\n".join(lines) + "\n"


def _render(name: str, lab: Path, out: str, **values: str) -> Path:
    text = (HERE / name).read_text()
    for key, value in {"LAB": str(lab), **values}.items():
        text = text.replace(f"@{key}@", value)
    path = lab / "etc" / out
    path.write_text(text)
    return path


def _layout(
    lab: Path, auth_port: int, res_port: int, clamp_port: int, bench_names: int
) -> dict[str, list[str]]:
    for d in (
        "etc",
        "run",
        "log",
        "zones-nsd",
        "zones-knot",
        "zones-parent",
        "nsd",
        "nsd-parent",
        "knot",
        "unbound",
        "unbound-clamp",
    ):
        (lab / d).mkdir()
    port = str(auth_port)
    nsd = _render("nsd.conf", lab, "nsd.conf", AUTHPORT=port)
    parent = _render("nsd-parent.conf", lab, "nsd-parent.conf", AUTHPORT=port)
    knot = _render(
        "knot.conf", lab, "knot.conf", AUTHPORT=port, KEYNAME=KEY_NAME, KEYSECRET=KEY_SECRET
    )
    plain = _render(
        "unbound.conf",
        lab,
        "unbound.conf",
        AUTHPORT=port,
        PORT=str(res_port),
        NAME="unbound",
        ACCESS="allow_snoop",
        EXTRA="    cache-min-ttl: 0\n    serve-expired: no",
    )
    clamp = _render(
        "unbound.conf",
        lab,
        "unbound-clamp.conf",
        AUTHPORT=port,
        PORT=str(clamp_port),
        NAME="unbound-clamp",
        ACCESS="allow",
        EXTRA="    cache-min-ttl: 30\n    serve-expired: yes\n    serve-expired-ttl: 3600\n"
        "    serve-expired-reply-ttl: 30\n    serve-expired-client-timeout: 0",
    )
    for zone in ("example.test", "other.test", "split.test.nsd", "lag.test.nsd"):
        shutil.copy(HERE / f"{zone}.zone", lab / "zones-nsd")
    for zone in (
        "example.test",
        "other.test",
        "split.test.knot",
        "lag.test.knot",
        "upd.test",
        "flip.test",
        "signed.test",
    ):
        shutil.copy(HERE / f"{zone}.zone", lab / "zones-knot")
    shutil.copy(HERE / "test.zone", lab / "zones-parent")
    bench = bench_zone(bench_names)
    (lab / "zones-nsd" / "bench.test.zone").write_text(bench)
    (lab / "zones-knot" / "bench.test.zone").write_text(bench)
    return {
        "nsd": ["nsd", "-d", "-c", str(nsd)],
        "nsd-parent": ["nsd", "-d", "-c", str(parent)],
        "knot": ["knotd", "-c", str(knot)],
        "unbound": ["unbound", "-d", "-c", str(plain)],
        "unbound-clamp": ["unbound", "-d", "-c", str(clamp)],
    }


@contextlib.contextmanager
def dns_lab(bench_names: int = BENCH_NAMES) -> Iterator[DnsLab]:
    """Start the lab, yield where it listens, stop every daemon (and remove its files) afterwards."""
    for binary, package in (("nsd", "nsd"), ("knotd", "knot"), ("unbound", "unbound")):
        require_binary(binary, package)
    lab = Path(tempfile.mkdtemp(prefix="opskit-dnslab-"))
    auth_port = _shared_port()
    res_port, clamp_port = free_port(udp_too=True), free_port(udp_too=True)
    while clamp_port == res_port:
        clamp_port = free_port(udp_too=True)
    key_file = lab / "etc" / "tsig.key"
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        cmds = _layout(lab, auth_port, res_port, clamp_port, bench_names)
        key_file.write_text(
            f'key "{KEY_NAME}" {{\n\talgorithm hmac-sha256;\n\tsecret "{KEY_SECRET}";\n}};\n'
        )
        key_file.chmod(0o600)
        for name, cmd in cmds.items():
            with (lab / "log" / f"{name}.out").open("wb") as out:
                procs[name] = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        logs = lab / "log"
        wait_ready(NS1, auth_port, "example.test", procs["nsd"], logs / "nsd.log")
        wait_ready(NS2, auth_port, "example.test", procs["knot"], logs / "knot.log")
        wait_ready(NS2, auth_port, "signed.test", procs["knot"], logs / "knot.log")
        wait_ready(PARENT, auth_port, "test", procs["nsd-parent"], logs / "nsd-parent.log")
        wait_ready("127.0.0.1", res_port, "example.test", procs["unbound"], logs / "unbound.log")
        wait_ready(
            "127.0.0.1",
            clamp_port,
            "example.test",
            procs["unbound-clamp"],
            logs / "unbound-clamp.log",
        )
        for port in (res_port, clamp_port):
            _prime_delegations(port)
        yield DnsLab(lab, auth_port, f"127.0.0.1:{res_port}", f"127.0.0.1:{clamp_port}", key_file)
    finally:
        stop_all(procs.values())
        shutil.rmtree(lab, ignore_errors=True)

"""Where to send DNS queries: `HOST[:PORT]`, `[V6]:PORT` and `name=ADDR:PORT` pins, as users type them.

NS records carry no port, so test labs (and split-horizon setups) serve a zone on loopback addresses and a
high port: `--auth-port` gives every discovered nameserver a port, and a pin maps one NS name to an address.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field

from opskit.errors import UsageError

DNS_PORT = 53


@dataclass(frozen=True, order=True)
class Server:
    """One address and port to ask; `name` is the NS name it was found under, when known."""

    host: str
    port: int = DNS_PORT
    name: str | None = field(default=None, compare=False)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class ServerChoice:
    """What `--nameserver` options asked for: fixed servers to ask, and/or pins for NS names."""

    servers: tuple[Server, ...] = ()
    pins: dict[str, tuple[Server, ...]] = field(default_factory=dict)
    auth_port: int = DNS_PORT
    family: int | None = None  # 4 or 6 (-4/-6): only nameserver addresses of that family are asked

    def allows(self, server: Server) -> bool:
        """True when the address is of the chosen family (or no family was chosen)."""
        return self.family is None or family_of(server.host) == self.family


def family_of(host: str) -> int:
    """4 or 6: the IP version of an address."""
    return 6 if ":" in host else 4


class BadServer(UsageError):
    """A `--nameserver`/`--resolver` value that is not HOST[:PORT] or NAME=ADDR[:PORT]."""

    def __init__(self, option: str, value: str, problem: str) -> None:
        super().__init__(
            f"{option} {value!r}: {problem} (expected HOST[:PORT], [V6]:PORT or NAME=ADDR:PORT)"
        )


def _port(option: str, value: str, text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise BadServer(option, value, f"port {text!r} is not a number from 1 to 65535")
    return int(text)


def _addresses(option: str, value: str, host: str) -> list[str]:
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_UDP)
    except (socket.gaierror, UnicodeError) as exc:
        raise BadServer(option, value, f"cannot resolve host {host!r}: {exc}") from None
    return sorted({str(info[4][0]) for info in infos})


def split_host_port(option: str, value: str, default_port: int) -> tuple[str, int]:
    """("host", port) from HOST, HOST:PORT, V6, or [V6]:PORT."""
    text = value.strip()
    if not text:
        raise BadServer(option, value, "empty")
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise BadServer(option, value, "unbalanced brackets")
        return host, _port(option, value, rest[1:]) if rest else default_port
    if text.count(":") > 1:  # a bare IPv6 address carries no port
        return text, default_port
    host, sep, port = text.partition(":")
    if not host:
        raise BadServer(option, value, "no host")
    return host, _port(option, value, port) if sep else default_port


def parse_name(option: str, text: str) -> str:
    """A domain name as typed, checked and made absolute ("dispatch.example.net" -> "...net.")."""
    import dns.exception  # noqa: PLC0415 - this module stays light for the CLI's option parsing
    import dns.name  # noqa: PLC0415

    if not text.strip():
        raise UsageError(f"{option}: empty name (expected a domain name like dispatch.example.net)")
    try:
        return dns.name.from_text(text.strip()).to_text()
    except (dns.exception.DNSException, UnicodeError, ValueError) as exc:
        raise UsageError(f"{option} {text!r} is not a valid domain name: {exc}") from None


def parse_servers(option: str, values: Iterable[str], default_port: int = DNS_PORT) -> list[Server]:
    """Every address of every HOST[:PORT] value (a host name may stand for several addresses)."""
    servers: list[Server] = []
    for value in values:
        if "=" in value:
            raise BadServer(option, value, "a NAME=ADDR pin is only for --nameserver")
        host, port = split_host_port(option, value, default_port)
        servers += [Server(addr, port) for addr in _addresses(option, value, host)]
    return servers


def parse_nameservers(
    values: Iterable[str], auth_port: int | None = None, family: int | None = None
) -> ServerChoice:
    """`--nameserver` values: plain ones are asked directly, NAME=ADDR[:PORT] ones pin a discovered NS.

    Without --auth-port, servers found through NS records are asked on the port the plain
    --nameserver values share (a lab where every server sits on one port), else on 53.
    """
    values = list(values)
    fixed: list[Server] = []
    for value in values:
        if "=" not in value:
            fixed += parse_servers("--nameserver", [value], auth_port or DNS_PORT)
    ports = {s.port for s in fixed}
    port = auth_port or (ports.pop() if len(ports) == 1 else DNS_PORT)
    pins: dict[str, list[Server]] = {}
    for value in values:
        if "=" in value:
            name, _, target = value.partition("=")
            key = name.strip().lower().rstrip(".") + "."
            if key == ".":
                raise BadServer("--nameserver", value, "no name before '='")
            host, pin_port = split_host_port("--nameserver", target, port)
            addrs = _addresses("--nameserver", value, host)
            pins.setdefault(key, []).extend(Server(a, pin_port, key) for a in addrs)
    return ServerChoice(
        tuple(fixed), {k: tuple(v) for k, v in pins.items()}, auth_port=port, family=family
    )

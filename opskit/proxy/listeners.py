"""Who already listens on an address: refuse to start a bridge beside an orphan (issue #9 point 4).

HAProxy binds with SO_REUSEPORT, so a second bridge could bind beside an orphaned one and the kernel
would share new clients between them: half the clients then pass through a bridge nobody counts. A
trial bind without SO_REUSEPORT asks the kernel itself whether the address is free; /proc/net/tcp and
/proc/*/fd then name the owner when this user may see it.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import socket
from pathlib import Path

from opskit.errors import Blocked

PROC = Path("/proc")
TCP_LISTEN = "0A"  # st column of /proc/net/tcp


def refuse_taken(listen: str, host: str, port: int) -> None:
    """Blocked (exit 3) when something already listens on host:port, naming it; every engine checks."""
    taken = address_taken(host, port)
    if taken:
        raise Blocked(
            f"bridge on {listen} did not start: address already in use by {taken}; "
            "stop it (an orphaned bridge?) or choose another --listen"
        )


def address_taken(host: str, port: int) -> str | None:
    """Who listens on host:port already ("haproxy (pid 4242)", or "something"); None when it is free.

    Only "address in use" counts: other bind errors (no permission, address not on this host) are left
    to the bridge's own bind, which reports them. A host name is checked at each of its addresses.
    """
    try:
        ipaddress.ip_address(host)
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError:
            return None  # the bridge's own bind reports the name it cannot resolve
        for info in infos:
            taken = address_taken(str(info[4][0]), port)
            if taken:
                return taken
        return None
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as trial:
        trial.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is not a listener
        if family == socket.AF_INET6 and ipaddress.ip_address(host).is_unspecified:
            trial.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # [::] is dual-stack
        try:
            trial.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                return None
            return (
                owners(listening_inodes(host, port))
                or _connection_owner(host, port)
                or "something (its process is not visible to this user)"
            )
    return None


def owners(inodes: set[str]) -> str | None:
    """The processes holding these socket inodes, as "name (pid N), ..."."""
    if not inodes:
        return None
    found: list[str] = []
    for pid_dir in sorted(PROC.glob("[0-9]*"), key=lambda p: int(p.name)):
        if any(_fd_inode(fd) in inodes for fd in _fds(pid_dir)):
            found.append(f"{_name(pid_dir)} (pid {pid_dir.name})")
    return ", ".join(found) or None


def _connection_owner(host: str, port: int) -> str | None:
    """Who holds host:port as the local end of a connection (an outgoing one's ephemeral port)."""
    held = owners(listening_inodes(host, port, states=None))
    return f"a connection of {held}, not a listener" if held else None


def listening_inodes(
    host: str, port: int, proc: Path = PROC, states: tuple[str, ...] | None = (TCP_LISTEN,)
) -> set[str]:
    """Socket inodes of TCP listeners whose address overlaps host:port (wildcards included).

    states=None: sockets in any state (an established connection holds its local port too).
    """
    wanted = _plain(ipaddress.ip_address(host))
    inodes: set[str] = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (proc / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or (states is not None and fields[3] not in states):
                continue
            address, _, port_hex = fields[1].partition(":")
            if int(port_hex, 16) != port:
                continue
            theirs = _plain(_decode(address))
            if theirs.is_unspecified or wanted.is_unspecified or theirs == wanted:
                inodes.add(fields[9])
    return inodes


def _decode(hex_address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An address from /proc/net/tcp{,6}: 32-bit words in host (little-endian) byte order."""
    raw = bytes.fromhex(hex_address)
    swapped = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.ip_address(swapped)


def _plain(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """::ffff:a.b.c.d as a.b.c.d, so a dual-stack listener matches its IPv4 twin."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _fds(pid_dir: Path) -> list[Path]:
    with contextlib.suppress(OSError):
        return list((pid_dir / "fd").iterdir())
    return []  # another user's process, or it exited meanwhile


def _fd_inode(fd: Path) -> str | None:
    with contextlib.suppress(OSError):
        target = str(fd.readlink())
        if target.startswith("socket:["):
            return target[len("socket:[") : -1]
    return None


def _name(pid_dir: Path) -> str:
    with contextlib.suppress(OSError):
        return (pid_dir / "comm").read_text().strip() or "?"
    return "?"

"""Who already listens on an address: refuse to start a bridge beside an orphan (issue #9 point 4).

HAProxy binds with SO_REUSEPORT, so a second bridge could bind beside an orphaned one and the kernel
would share new clients between them: half the clients then pass through a bridge nobody counts. A
trial bind without SO_REUSEPORT asks the kernel itself whether the address is free; /proc/net/tcp and
/proc/*/fd then name the owner when this user may see it.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from pathlib import Path

from opskit.errors import Blocked
from opskit.proxy.forwarder import TCP_LISTEN, listening_sockets, plain_address, socket_holders

PROC = Path("/proc")


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
    found = sorted({(pid, name) for pid, _, name in socket_holders(inodes, str(PROC))})
    return ", ".join(f"{name} (pid {pid})" for pid, name in found) or None


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
    wanted = plain_address(ipaddress.ip_address(host))
    return {
        inode
        for inode, theirs in listening_sockets(port, states, str(proc)).items()
        if theirs.is_unspecified or wanted.is_unspecified or theirs == wanted
    }

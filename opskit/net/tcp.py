"""Does a TCP port accept connections, and if not, why, in words an operator reads at 3 a.m."""

from __future__ import annotations

import errno
import re
import shlex
import socket
import time
from dataclasses import dataclass

from opskit.errors import UsageError
from opskit.transport.base import CommandResult

REFUSED = "refuses connections"
NO_ROUTE = "no route to host"


@dataclass(frozen=True)
class TcpResult:
    """One connection attempt: `accepts` with the connect time, or the reason in words."""

    host: str
    port: int
    accepts: bool
    connect_s: float | None  # time to establish the connection (None when it failed)
    error: str | None  # "refuses connections", "timed out after 3 s", "no route to host", ...

    def describe(self) -> str:
        """One line: "127.0.0.1:8080 accepts connections (1.2 ms)" or the reason it does not."""
        where = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        if self.accepts:
            took = "" if self.connect_s is None else f" ({self.connect_s * 1000:.1f} ms)"
            return f"{where} accepts connections{took}"
        return f"{where} {self.error}"


def socket_error_words(exc: OSError, host: str, timeout_s: float) -> str:
    """The reason a connection failed, in words (shared with the HTTP check)."""
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve {host}"
    if isinstance(exc, TimeoutError):
        return f"timed out after {timeout_s:g} s"
    if isinstance(exc, ConnectionRefusedError):
        return REFUSED
    if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return NO_ROUTE
    return exc.strerror or str(exc) or type(exc).__name__


def tcp_accepts(host: str, port: int, timeout_s: float = 3.0) -> TcpResult:
    """Try one TCP connection to host:port from this machine (closed right away, nothing sent)."""
    started = time.monotonic()
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return TcpResult(host, port, True, time.monotonic() - started, None)
    except OSError as exc:
        return TcpResult(host, port, False, None, socket_error_words(exc, host, timeout_s))


_HOST = re.compile(r"[A-Za-z0-9._:%\[\]-]+")


def is_host_name(host: str) -> bool:
    """A host name or an IPv4/IPv6 address, and nothing a shell would read as syntax."""
    return bool(_HOST.fullmatch(host))


def remote_command(host: str, port: int, timeout_s: float) -> str:
    """A shell command that makes the same probe from another host (bash /dev/tcp, no extra tools).

    It prints "ok MICROSECONDS" on success; otherwise bash's own error on stderr, which
    `from_remote` turns into the same words as `tcp_accepts`.
    """
    if not is_host_name(host):  # it is pasted into a shell on the remote host
        raise UsageError(f"tcp.check: {host!r} is not a host name or an address")
    target = f"/dev/tcp/{host}/{port}"
    probe = shlex.quote(f"exec 3<>{target}")
    return (
        "s=$(date +%s%N); "
        f"timeout {timeout_s:g} bash -c {probe} || exit $?; "
        'e=$(date +%s%N); echo "ok $(( (e - s) / 1000 ))"'
    )


def from_remote(host: str, port: int, timeout_s: float, result: CommandResult) -> TcpResult:
    """Read the outcome of `remote_command` (exit code and output) as a TcpResult."""
    rc, stdout, stderr = result.rc, result.stdout, result.stderr
    words = stdout.split()
    if rc == 0 and len(words) == 2 and words[0] == "ok" and words[1].isdigit():
        return TcpResult(host, port, True, int(words[1]) / 1e6, None)
    text = stderr.lower()
    if rc == 124:
        error = f"timed out after {timeout_s:g} s"
    elif "refused" in text:
        error = REFUSED
    elif "no route" in text or "unreachable" in text:
        error = NO_ROUTE
    elif "name or service not known" in text or "resolve" in text:
        error = f"cannot resolve {host}"
    else:
        last = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit code {rc}"
        error = f"probe failed: {last}"
    return TcpResult(host, port, False, None, error)

"""Reading HAProxy: its stats socket (`show stat`, `show sess`) and the per-connection log lines.

`read_socket` turns one live reading into BridgeStats, for `opskit traffic watch --haproxy-socket`; the
engine in opskit/proxy/haproxy.py folds the same readings and log lines into the stats file.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import socket
import time
from pathlib import Path

from opskit.errors import Blocked
from opskit.proxy.stats import BridgeStats, ClientStats
from opskit.proxy.tally import iso

LOG_TAG = "OPSKIT"
# One line per finished connection: client, bytes client->server (%U), server->client (%B), state, time.
LOG_FORMAT = f"{LOG_TAG} %ci %cp %U %B %ts %Tt"


def ask(socket_path: Path, command: str, *, timeout_s: float = 5.0) -> str:
    """Send one command to the stats socket and return its whole answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        sock.connect(str(socket_path))
        sock.sendall(command.encode() + b"\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def parse_show_stat(text: str) -> list[dict[str, str]]:
    """`show stat` CSV as one dict per proxy/server row."""
    body = text.lstrip("# ")
    return [row for row in csv.DictReader(io.StringIO(body)) if row.get("pxname")]


def parse_show_sess(text: str, frontend: str | None = None) -> dict[str, int]:
    """Live sessions per client address (the stats socket's own session is not a client)."""
    per_client: dict[str, int] = {}
    for line in text.splitlines():
        fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
        src = fields.get("src", "")
        if not fields.get("proto", "").startswith("tcp") or (
            frontend and fields.get("fe") != frontend
        ):
            continue
        address = src.rsplit(":", 1)[0].strip("[]")
        per_client[address] = per_client.get(address, 0) + 1
    return per_client


def parse_show_sess_all(text: str, frontend: str) -> dict[str, tuple[str, int]]:
    """`show sess all`: {session id: (client address, bytes moved both ways)} for one frontend.

    The byte totals let the engine tell an idle bridged connection from a busy one (for the nudge);
    plain `show sess` has only the session's age.
    """
    sessions: dict[str, tuple[str, int]] = {}
    current: str | None = None
    address, moved, ours = "", 0, False

    def keep() -> None:
        if current is not None and ours:
            sessions[current] = (address, moved)

    for line in text.splitlines():
        if line and not line[0].isspace() and ": [" in line:
            keep()
            current, moved, ours = line.split(":", 1)[0], 0, False
            source = next((p for p in line.split() if p.startswith("source=")), "source=")
            address = source.removeprefix("source=").rsplit(":", 1)[0].strip("[]")
            continue
        stripped = line.strip()
        if stripped.startswith("frontend="):
            ours = stripped.removeprefix("frontend=").split(" (", 1)[0] == frontend
        elif stripped.startswith(("req=", "res=")) and "total=" in stripped:
            moved += as_int(stripped.rsplit("total=", 1)[1].rstrip(")").split()[0])
    keep()
    return sessions


def as_int(value: str | None) -> int:
    """A CSV counter as a number (HAProxy leaves counters that do not apply empty)."""
    try:
        return int(value or 0)
    except ValueError:
        return 0


def read_socket(socket_path: Path, *, timeout_s: float = 5.0) -> BridgeStats:
    """One live reading of a HAProxy stats socket as BridgeStats (clients: those connected now)."""
    try:
        show_stat = ask(socket_path, "show stat", timeout_s=timeout_s)
        show_sess = ask(socket_path, "show sess", timeout_s=timeout_s)
    except OSError as exc:
        raise Blocked(
            f"{socket_path}: no answer from the HAProxy stats socket ({exc.strerror or exc})"
        ) from None
    return from_answers(show_stat, show_sess, str(socket_path))


def from_answers(show_stat: str, show_sess: str, label: str) -> BridgeStats:
    """BridgeStats from the text of `show stat` and `show sess` (read here, or on a host over SSH)."""
    rows = parse_show_stat(show_stat)
    live = parse_show_sess(show_sess)
    front = next((r for r in rows if r["svname"] == "FRONTEND"), None)
    back = next((r for r in rows if r["svname"] == "BACKEND"), None)
    server = next((r for r in rows if r["svname"] not in ("FRONTEND", "BACKEND")), None)
    if front is None or back is None:
        raise Blocked(f"{label}: HAProxy reports no frontend/backend (not an opskit bridge?)")
    now = time.time()
    lastsess = (
        as_int(back.get("lastsess")) if back.get("lastsess") not in (None, "", "-1") else None
    )
    clients = [
        ClientStats(addr, n, n, 0, 0, iso(now) or "", iso(now) or "") for addr, n in live.items()
    ]
    return BridgeStats(
        listener=listener_of(front["pxname"]),
        target=(server or {}).get("addr") or listener_of(back["pxname"].removeprefix("to-")),
        engine="haproxy",
        mode="tcp",
        started_at=iso(now) or "",
        updated_at=iso(now) or "",
        pid=None,
        state="running",
        active=as_int(front.get("scur")),
        total=as_int(front.get("stot")),
        bytes_in=as_int(front.get("bin")),
        bytes_out=as_int(front.get("bout")),
        errors=as_int(back.get("econ")),
        last_activity=iso(now - lastsess) if lastsess is not None else None,
        clients=clients,
    )


@dataclasses.dataclass(frozen=True)
class LogLine:
    """One finished connection from our log format."""

    address: str
    bytes_in: int
    bytes_out: int
    error: bool  # it never reached the new host (refused, connect timeout)
    abort: str | None  # "client" or "upstream" when that side reset the connection mid-transfer


def parse_log_line(line: str) -> LogLine | None:
    """One of our log lines, parsed; None for anything else (HAProxy's own notices)."""
    parts = line.split()
    if len(parts) < 6 or parts[0] != LOG_TAG:
        return None
    state = parts[5]
    # %ts, the termination state: the first letter says who ended it (C client, S server), the second
    # in which phase (C connect, D data). "SC" = it never reached the new host, the per-client error
    # the issue asks for; "CD"/"SD" = that side aborted (a reset) mid-transfer: aborts_client/upstream.
    error = len(state) == 2 and state[1] == "C" and state[0] in "Ss"
    abort = {"CD": "client", "SD": "upstream"}.get(state)
    return LogLine(parts[1], as_int(parts[3]), as_int(parts[4]), error, abort)


def dropped_logs(show_info: str) -> int:
    """HAProxy's own count of log lines it could not write (its stdout pipe was full)."""
    for line in show_info.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "DroppedLogs":
            return as_int(value.strip())
    return 0


def listener_of(proxy_name: str) -> str:
    """HOST:PORT (IPv6 in brackets) from a frontend name; HAProxy forbids brackets in names."""
    host, _, port = proxy_name.removeprefix("opskit-").rpartition(":")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

"""What a bridge is asked to do: one frozen value that every engine (built-in, HAProxy, HTTP) reads.

Engines expose the same two entry points, imported lazily by `opskit.proxy.bridge`:
`run(config: BridgeConfig) -> BridgeStats | None` (foreground until SIGTERM/SIGINT) and, for a bridge
that outlives the terminal, `spawn(config: BridgeConfig) -> int` (a detached process; its pid).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

from opskit.statedir import default_state_dir

Mode = Literal["tcp", "http"]
Engine = Literal["builtin", "haproxy"]
ProxyProtocol = Literal["v1", "v2"]

MODES: tuple[Mode, ...] = ("tcp", "http")
ENGINES: tuple[Engine, ...] = ("builtin", "haproxy")
PROXY_PROTOCOLS: tuple[ProxyProtocol, ...] = ("v1", "v2")


@dataclass(frozen=True)
class BridgeConfig:
    """One bridge: where it listens, where it forwards, and how it behaves at the edges."""

    listen: str  # HOST:PORT (or [v6]:PORT) on the old host
    to: str  # HOST:PORT of the new host
    stats_file: Path
    mode: Mode = "tcp"
    engine: Engine = "builtin"
    pid_file: Path | None = None
    max_connections: int = 10_000
    max_per_client: int = 0  # 0: no per-address limit
    handshake_timeout_s: float = 30.0  # cut connections that sent almost nothing this long (0: off)
    udp: bool = False  # built-in engine: also carry UDP on the listen port, one flow per client
    idle_timeout_s: float | None = None  # None: never close an idle bridged connection
    connect_timeout_s: float = 5.0
    half_close_timeout_s: float = 30.0  # how long a half-closed connection may stay idle
    drain_timeout_s: float = 10.0  # after SIGTERM: how long bridged connections may still finish
    proxy_protocol: ProxyProtocol | None = None
    nudge_after_s: float | None = None  # None: never nudge
    nudge_not_before: str | None = None  # ISO 8601: when condition (1) of the drain verdict holds
    stats_interval_s: float = 1.0
    log_file: Path | None = None  # detached engines write their log lines here
    bind_retry_s: float = 0.0  # retry the bind this long while the old service still holds the port
    # A socket already listening on `listen`, inherited by the engine's process (HAProxy binds `fd@N`):
    # proxy.start took the port the moment the old service let go, so nobody is refused meanwhile.
    listen_fd: int | None = None

    @property
    def listen_host_port(self) -> tuple[str, int]:
        """The listener as (host, port)."""
        return split_host_port(self.listen)

    @property
    def to_host_port(self) -> tuple[str, int]:
        """The target as (host, port)."""
        return split_host_port(self.to)


def split_host_port(text: str) -> tuple[str, int]:
    """("127.0.0.1", 8080) from "127.0.0.1:8080", ("::1", 80) from "[::1]:80"; ValueError otherwise."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def default_stats_file(listen: str) -> Path:
    """STATE_DIR/bridge/bridge-PORT.json (see opskit.statedir): one file per listener port."""
    base = default_state_dir()
    return base / "bridge" / f"bridge-{split_host_port(listen)[1]}.json"


def nudge_start(switched_at: datetime, old_ttl_s: float, margin_s: float = 0.0) -> str:
    """When a nudge may start (ISO 8601): switch + old TTL + margin, when caches forget the old address.

    Before that a nudged client would resolve the old address again and come straight back.
    """
    return (switched_at + timedelta(seconds=old_ttl_s + margin_s)).isoformat()

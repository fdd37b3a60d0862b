"""The rehearsal's world on loopback: DNS server, old and new service, control socket, phones.

`Stage` starts every piece on a background loop and `close()` stops every piece it started, in reverse
order, whatever happened in between (success, failure, Ctrl-C).
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opskit.actions.samples import append_sample
from opskit.demo.authserver import AuthServer, TsigKey, demo_zone
from opskit.demo.control import ControlServer
from opskit.demo.fleet import Fleet, FleetConfig
from opskit.demo.loop import BackgroundLoop
from opskit.demo.services import Service
from opskit.demo.timescale import TimeScale
from opskit.errors import Blocked, OpskitError
from opskit.proxy import bridge as bridge_process
from opskit.proxy import stats as bridge_stats

ZONE = "night.test."
NAME = "dispatch.night.test"
OLD_ADDRESS = "127.0.0.11"
NEW_ADDRESS = "127.0.0.12"


@dataclass(frozen=True)
class StageConfig:
    """What the rehearsal sets up; times are rehearsal seconds unless named real_."""

    clients: int = 12
    scale: TimeScale = field(default_factory=TimeScale)
    real_old_ttl_s: float = 86400.0  # the story's 24 h TTL
    real_new_ttl_s: float = 300.0
    max_duration_s: float = 240.0  # the fleet stops by itself after this, whatever happens


def shared_port(addresses: tuple[str, ...]) -> int:
    """A TCP port free on every address (the old and new hosts serve the same port)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind((addresses[0], 0))
            port = int(probe.getsockname()[1])
        try:
            for address in addresses[1:]:
                with socket.socket() as other:
                    other.bind((address, port))
        except OSError:
            continue
        return port
    raise OSError(f"no port free on all of {', '.join(addresses)}")


class Stage:
    """Every piece of the rehearsal; use as a context manager."""

    def __init__(self, config: StageConfig, work_dir: Path | None = None) -> None:
        self.config = config
        self._tmp = None if work_dir else tempfile.TemporaryDirectory(prefix="opskit-demo-")
        self.work_dir = work_dir or Path(self._tmp.name if self._tmp else ".")
        self.work_dir.chmod(0o700)
        self.key = TsigKey.generate("opskit-demo.")
        self.key_file = self.key.write(self.work_dir / "tsig.key")
        self.stats_file = self.work_dir / "bridge-stats.json"
        self.port = shared_port((OLD_ADDRESS, NEW_ADDRESS))
        scale = config.scale
        zone = demo_zone(
            ZONE,
            records={"dispatch": (scale.ttl(config.real_old_ttl_s), "A", OLD_ADDRESS)},
            ns_address="127.0.0.1",
            negative_ttl_s=scale.ttl(900),
        )
        self.loop = BackgroundLoop()
        self.auth = AuthServer(zone, origin=ZONE, tsig=self.key)
        self.old = Service("old", OLD_ADDRESS, self.port)
        self.new = Service("new", NEW_ADDRESS, self.port)
        self.control = ControlServer({"old": self.old, "new": self.new})
        self.fleet: Fleet | None = None
        self.run_dir: Path | None = (
            None  # set once the run id is known: the chart's markers go there
        )
        self._started: list[Any] = []
        self.bridge_pid: int | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> Stage:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """DNS, both services and the control socket, then the phones (connected to the old host)."""
        self.loop.start()
        for piece in (self.auth, self.old, self.new, self.control):
            self.loop.run(piece.start())
            self._started.append(piece)
        self.fleet = Fleet(
            FleetConfig(
                name=NAME,
                dns_server=self.auth.host,
                dns_port=self.auth.port,
                service_port=self.port,
                clients=self.config.clients,
                max_duration_s=self.config.max_duration_s,
            ),
            old_address=OLD_ADDRESS,
            new_address=NEW_ADDRESS,
        )
        self.loop.run(self.fleet.start())
        self._started.append(self.fleet)

    def close(self) -> None:
        """Stop everything this stage started (phones first, DNS last); safe to call twice."""
        try:
            self._stop_bridge()
            for piece in reversed(self._started):
                with contextlib.suppress(Exception):
                    self.loop.run(piece.stop(), timeout_s=10)
            self._started.clear()
        finally:
            self.loop.stop()
            if self._tmp is not None:
                self._tmp.cleanup()
                self._tmp = None

    def _stop_bridge(self) -> None:
        """A bridge the run started and did not stop (it failed or was interrupted) is stopped here."""
        current = self.bridge()
        if current is None or current.pid is None:
            return
        self.bridge_pid = current.pid
        if current.state != "stopped":
            with contextlib.suppress(OpskitError, OSError):
                bridge_process.stop(stats_file=self.stats_file, timeout_s=5)
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(current.pid, os.WNOHANG)  # reap it: it was started as our child

    # -- what the run and the screen read -------------------------------------------------------

    def wait_connected(self, timeout_s: float = 5.0) -> int:
        """Block until every phone has been answered once (bounded); the number answered."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            summary = self.fleet_summary()
            if summary is not None and summary.served_by.get("none", 0) == 0:
                break
            time.sleep(0.05)
        summary = self.fleet_summary()
        return 0 if summary is None else sum(v for k, v in summary.served_by.items() if k != "none")

    def fleet_summary(self) -> Any:
        return None if self.fleet is None else self.fleet.summary()

    def bridge(self) -> bridge_stats.BridgeStats | None:
        """The bridge's stats file now (None: not started yet)."""
        try:
            return bridge_stats.load(self.stats_file)
        except Blocked:
            return None

    def mark(self, marker: str, label: str, at: datetime | None = None) -> None:
        """Draw a moment on the report's chart (switch, TTL expiry, shutdown)."""
        if self.run_dir is not None:
            when = (at or datetime.now(UTC)).isoformat()
            append_sample(self.run_dir, {"ts": when, "marker": marker, "label": label})

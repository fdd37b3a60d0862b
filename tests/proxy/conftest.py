"""Fixtures for the bridge: nginx as the new host, and the built-in forwarder as a real process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from opskit.proxy.bridge import FORWARDER_PATH
from tests.servers.common import free_port, wait_stats
from tests.servers.nginx import Nginx, start_nginx


@pytest.fixture(scope="session")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    """One nginx for the whole session (plain, TLS and PROXY protocol ports)."""
    with start_nginx(tmp_path_factory.mktemp("new-host")) as server:
        yield server


@dataclass
class Forwarder:
    """A running `python forwarder.py` process and where to find its counters."""

    proc: subprocess.Popen[str]
    host: str
    port: int
    stats_file: Path
    log_file: Path
    out_file: Path
    argv: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stats(self) -> dict[str, Any]:
        """The stats file as the forwarder last wrote it."""
        data: dict[str, Any] = json.loads(self.stats_file.read_text())
        return data

    def client(self, address: str) -> dict[str, Any]:
        """One client's row of the stats file."""
        rows = [c for c in self.stats()["clients"] if c["address"] == address]
        assert rows, f"{address} not in {self.stats()['clients']}"
        return rows[0]

    def wait_stats(
        self, predicate: Callable[[dict[str, Any]], bool], timeout_s: float = 5.0
    ) -> dict[str, Any]:
        """The first stats snapshot that satisfies predicate (bounded wait)."""
        return wait_stats(self.stats_file, predicate, timeout_s)

    def log(self) -> str:
        return self.log_file.read_text()

    def terminate(self, sig: int = signal.SIGTERM, timeout_s: float = 15.0) -> int:
        """Signal the forwarder and wait for its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout_s)


StartForwarder = Callable[..., Forwarder]


@pytest.fixture
def forwarder(tmp_path: Path) -> Iterator[StartForwarder]:
    """Start `python forwarder.py --listen 127.0.0.1:FREE --to TARGET ...` and wait until it listens."""
    started: list[Forwarder] = []

    def start(
        to: str, *extra: str, stats_file: Path | None = None, port: int | None = None
    ) -> Forwarder:
        port = port or free_port()
        n = len(started)
        stats = stats_file or tmp_path / f"stats-{n}.json"
        log_file, out_file = tmp_path / f"fwd-{n}.log", tmp_path / f"fwd-{n}.out"
        argv = [
            sys.executable,
            str(FORWARDER_PATH),
            "--listen",
            f"127.0.0.1:{port}",
            "--to",
            to,
            "--stats-file",
            str(stats),
            "--stats-interval",
            "100ms",
            *extra,
        ]
        with open(log_file, "w") as log, open(out_file, "w") as out:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=log, text=True
            )
        fwd = Forwarder(proc, "127.0.0.1", port, stats, log_file, out_file, argv)
        started.append(fwd)
        fwd.wait_stats(lambda s: s["pid"] == proc.pid and s["state"] == "running", timeout_s=10)
        return fwd

    yield start
    for fwd in started:
        if fwd.proc.poll() is None:
            fwd.proc.send_signal(signal.SIGTERM)
            try:
                fwd.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(fwd.proc.pid, signal.SIGKILL)
                fwd.proc.wait(timeout=5)

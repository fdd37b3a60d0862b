"""The HAProxy bridge engine as the tests start it: `python -m opskit.proxy.haproxy CONFIG` on loopback."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from opskit.proxy.config import BridgeConfig
from opskit.proxy.detach import config_to_json
from tests.servers.common import free_port, require_binary, wait_stats


def engine_config(stats_file: Path, to: str, **overrides: Any) -> BridgeConfig:
    """A HAProxy-engine bridge on a free loopback port, polled every 100 ms, draining for 1 s."""
    settings: dict[str, Any] = {
        "listen": f"127.0.0.1:{free_port()}",
        "engine": "haproxy",
        "stats_interval_s": 0.1,
        "drain_timeout_s": 1.0,
    }
    settings.update(overrides)
    return BridgeConfig(to=to, stats_file=stats_file, **settings)


def start_engine(config: BridgeConfig) -> subprocess.Popen[str]:
    """`python -m opskit.proxy.haproxy CONFIG`, returned once its stats file says it runs."""
    require_binary("haproxy")
    proc = subprocess.Popen(
        [sys.executable, "-m", "opskit.proxy.haproxy", config_to_json(config)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        wait_stats(config.stats_file, lambda s: s["pid"] == proc.pid and s["state"] == "running")
    except BaseException:
        stop_engine(proc)
        raise
    return proc


def stop_engine(proc: subprocess.Popen[str]) -> None:
    """SIGTERM and wait (bounded); kill -9 if it does not stop in 15 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

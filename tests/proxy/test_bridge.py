"""opskit.proxy.bridge: the arguments a remote forwarder gets, and stopping only what is ours."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from opskit.errors import Blocked
from opskit.proxy import bridge, forwarder
from opskit.proxy.config import BridgeConfig


def test_forwarder_gets_every_setting_of_the_config(tmp_path: Path) -> None:
    """A config turned into forwarder arguments (as for a remote old host) parses back to the same settings."""
    config = BridgeConfig(
        listen="127.0.0.1:8080",
        to="[::1]:8443",
        stats_file=tmp_path / "s.json",
        pid_file=tmp_path / "p.pid",
        max_connections=123,
        idle_timeout_s=90.0,
        connect_timeout_s=1.5,
        half_close_timeout_s=20.0,
        drain_timeout_s=7.0,
        proxy_protocol="v2",
        nudge_after_s=600.0,
        nudge_not_before="2026-11-24T03:00:00+00:00",
        stats_interval_s=0.5,
    )

    opts = forwarder.Options(forwarder.build_parser().parse_args(bridge.forwarder_argv(config)))

    assert (opts.listen, opts.to) == (("127.0.0.1", 8080), ("::1", 8443))
    assert (opts.stats_file, opts.pid_file) == (str(config.stats_file), str(config.pid_file))
    assert opts.max_connections == 123
    assert (opts.idle_timeout_s, opts.connect_timeout_s) == (90.0, 1.5)
    assert (opts.half_close_timeout_s, opts.drain_timeout_s) == (20.0, 7.0)
    assert opts.proxy_protocol == "v2"
    assert opts.nudge_after_s == 600.0
    assert opts.nudge_not_before == 1795489200.0
    assert opts.stats_interval_s == 0.5


def test_stop_never_signals_a_stranger_behind_a_stale_pid_file(tmp_path: Path) -> None:
    """A pid file that now names an unrelated process is refused (exit 3), and that process lives on."""
    stranger = subprocess.Popen(["sleep", "30"])
    try:
        pid_file = tmp_path / "bridge.pid"
        pid_file.write_text(f"{stranger.pid}\n")

        with pytest.raises(Blocked, match="not an opskit bridge"):
            bridge.stop(pid_file=pid_file, timeout_s=1)

        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait(timeout=5)


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("v1", b"PROXY TCP4 127.0.0.7 127.0.0.1 40000 8080\r\n"),
        (
            "v2",
            b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c"
            b"\x7f\x00\x00\x07\x7f\x00\x00\x01\x9c\x40\x1f\x90",
        ),
    ],
)
def test_proxy_header_bytes_follow_the_spec(version: str, expected: bytes) -> None:
    """The PROXY header names the client and the listener exactly as the HAProxy spec lays it out."""
    assert forwarder.proxy_header(version, ("127.0.0.7", 40000), ("127.0.0.1", 8080)) == expected

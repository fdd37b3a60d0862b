"""The HAProxy engine: same counters as the built-in engine, from its logs and its stats socket."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from opskit.errors import Blocked, ExitCode
from opskit.proxy.config import BridgeConfig
from opskit.proxy.haproxy_config import honoured_maxconn, render_config
from opskit.proxy.haproxy_stats import (
    dropped_logs,
    parse_log_line,
    parse_show_sess,
    parse_show_sess_all,
    read_socket,
)
from tests.conftest import Invoke
from tests.proxy.clients import GET, http_get, read_response
from tests.proxy.conftest import StartForwarder
from tests.servers.common import free_port, require_binary, wait_stats
from tests.servers.haproxy import engine_config, start_engine, stop_engine
from tests.servers.nginx import Nginx

pytestmark = pytest.mark.proxy

CLIENTS = ("127.0.0.21", "127.0.0.22", "127.0.0.23")


@pytest.fixture
def haproxy_bridge(
    tmp_path: Path, nginx: Nginx
) -> Iterator[tuple[subprocess.Popen[str], BridgeConfig]]:
    """`python -m opskit.proxy.haproxy CONFIG` in the foreground, bridging to nginx."""
    config = engine_config(tmp_path / "hap.json", nginx.http, drain_timeout_s=2.0)
    proc = start_engine(config)
    try:
        yield proc, config
    finally:
        stop_engine(proc)


def by_address(stats: dict[str, Any]) -> dict[str, tuple[int, int, int]]:
    return {c["address"]: (c["total"], c["bytes_in"], c["bytes_out"]) for c in stats["clients"]}


def test_haproxy_engine_counts_like_the_builtin_engine(
    nginx: Nginx,
    forwarder: StartForwarder,
    haproxy_bridge: tuple[subprocess.Popen[str], BridgeConfig],
) -> None:
    """The same requests from three client addresses give the same per-client and total counts in both engines."""
    _, config = haproxy_bridge
    builtin = forwarder(nginx.http)
    hap_port = config.listen_host_port[1]
    for address in CLIENTS:
        for port in (builtin.port, hap_port):
            assert http_get("127.0.0.1", port, "/1k.txt", bind=address)[0] == 200
    expected_total = len(CLIENTS)

    ours = builtin.wait_stats(lambda s: s["total"] == expected_total and s["active"] == 0)
    theirs = wait_stats(
        config.stats_file,
        lambda s: (
            s["total"] == expected_total
            and s["active"] == 0
            and sum(c["total"] for c in s["clients"]) == expected_total
            and s["bytes_out"] == ours["bytes_out"]
        ),
    )

    assert by_address(theirs) == by_address(ours)
    assert (theirs["bytes_in"], theirs["bytes_out"]) == (ours["bytes_in"], ours["bytes_out"])
    assert theirs["engine"] == "haproxy"
    assert theirs["last_activity"] is not None


def test_haproxy_engine_sees_live_clients_and_stops_cleanly(
    opskit: Invoke, haproxy_bridge: tuple[subprocess.Popen[str], BridgeConfig]
) -> None:
    """A connected client shows as active (stats file, socket, traffic wait); SIGTERM ends with state stopped."""
    proc, config = haproxy_bridge

    with socket.create_connection(config.listen_host_port, source_address=("127.0.0.31", 0)):
        live = wait_stats(config.stats_file, lambda s: s["active"] == 1)
        assert [(c["address"], c["active"]) for c in live["clients"]] == [("127.0.0.31", 1)]
        direct = read_socket(Path(live["haproxy_socket"]))
        assert direct.active == 1
        assert [c.address for c in direct.clients] == ["127.0.0.31"]
        waited = opskit(
            "traffic", "wait", "--stats-file", str(config.stats_file), "--switched-at", "2020-01-01T00:00:00Z",
            "--old-ttl", "1s", "--quiet", "0s", "--timeout", "0s", "--json", expect=ExitCode.NEGATIVE,
        )  # fmt: skip
        assert json.loads(waited.stdout)["reasons"] == [
            "1 connection still active: 127.0.0.31 (idle 0s)"
        ]

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
    final = json.loads(config.stats_file.read_text())
    assert (final["state"], final["ended"], final["active"]) == ("stopped", "sigterm", 0)
    assert final["clients"][0]["total"] == 1


def test_refused_upstream_is_a_per_client_error(tmp_path: Path) -> None:
    """A new host that refuses connections is counted as an error for that client."""
    config = engine_config(tmp_path / "hap.json", f"127.0.0.1:{free_port()}")
    proc = start_engine(config)
    try:
        status, _ = http_get(*config.listen_host_port, "/", bind="127.0.0.41", timeout_s=10)
        assert status == 0
        stats = wait_stats(config.stats_file, lambda s: s["errors"] >= 1)
        assert [(c["address"], c["errors"]) for c in stats["clients"]] == [("127.0.0.41", 1)]
    finally:
        stop_engine(proc)


def test_rendered_config_bounds_every_edge() -> None:
    """The config passes TLS through in mode tcp, bounds half-closed connections and sends PROXY v2 when asked."""
    config = BridgeConfig(
        listen="127.0.0.1:8080",
        to="127.0.0.2:8443",
        stats_file=Path("/x.json"),
        proxy_protocol="v2",
    )

    text = render_config(config, socket_path=Path("/run/x.sock"), maxconn=500)

    for needle in (
        "mode tcp",
        "timeout client-fin 30000ms",
        "timeout server-fin 30000ms",
        "timeout tunnel 24h",
        "option splice-auto",
        "hard-stop-after 10000ms",
        "stats socket /run/x.sock mode 600 level admin",
        "bind 127.0.0.1:8080",
        "server new 127.0.0.2:8443 send-proxy-v2",
        "maxconn 500",
    ):
        assert needle in text


def test_show_sess_ignores_the_stats_socket_itself() -> None:
    """Only TCP sessions of the bridge's frontend count as clients."""
    text = (
        "0x1: proto=tcpv4 src=127.0.0.9:46629 fe=opskit-127.0.0.1:1 be=b srv=new ts=00 age=0s\n"
        "0x2: proto=tcpv4 src=127.0.0.9:46630 fe=opskit-127.0.0.1:1 be=b srv=new ts=00 age=0s\n"
        "0x3: proto=unix_stream src=unix:1 fe=GLOBAL be=<NONE> srv=<none> ts=00 age=0s\n"
    )

    assert parse_show_sess(text, "opskit-127.0.0.1:1") == {"127.0.0.9": 2}


SHOW_SESS_ALL = """\
0x55d1: [23/Nov/2026:12:52:53.106905] id=0 proto=tcpv4 source=127.0.0.9:41426
  flags=0x4a, conn_retries=0, conn_exp=<NEVER> conn_et=0x000 srv_conn=0x55, pend_pos=(nil)
  frontend=opskit-127.0.0.1:1 (id=2 mode=tcp), listener=? (id=1) addr=127.0.0.1:1
  req=0x55d1a0 (f=0x848000 an=0x0 pipe=0 tofwd=-1 total=27)
      an_exp=<NEVER> rex=23h59m wex=<NEVER>
  res=0x55d1b0 (f=0x8004a020 an=0x0 pipe=0 tofwd=-1 total=1020)
      an_exp=<NEVER> rex=<NEVER> wex=<NEVER>
0x7f78: [23/Nov/2026:12:52:53.607660] id=2 proto=unix_stream source=unix:1
  frontend=GLOBAL (id=0 mode=tcp), listener=? (id=1) addr=unix:1
  req=0x7f78a0 (f=0xc08000 an=0x0 pipe=0 tofwd=-1 total=14)
  res=0x7f78b0 (f=0x80008002 an=0x0 pipe=0 tofwd=-1 total=1272)
"""


def test_show_sess_all_gives_bytes_per_bridged_session() -> None:
    """Each bridged session's client and bytes moved are read; the stats socket's own is not a client."""
    assert parse_show_sess_all(SHOW_SESS_ALL, "opskit-127.0.0.1:1") == {
        "0x55d1": ("127.0.0.9", 1047)
    }


def test_haproxy_engine_nudges_idle_connections_once_caches_forgot(
    tmp_path: Path, nginx: Nginx
) -> None:
    """With --nudge-after, HAProxy's idle bridged connection is closed; a busy one is kept."""
    config = engine_config(
        tmp_path / "hap.json",
        nginx.http,
        nudge_after_s=0.6,
        nudge_not_before=(datetime.now(UTC) - timedelta(seconds=1)).isoformat(),
        log_file=tmp_path / "hap.log",
    )
    proc = start_engine(config)
    try:
        idle = socket.create_connection(config.listen_host_port, source_address=("127.0.0.51", 0))
        busy = socket.create_connection(config.listen_host_port, source_address=("127.0.0.52", 0))
        idle.settimeout(5)
        deadline = time.monotonic() + 4
        closed = False
        while time.monotonic() < deadline and not closed:
            # Keep-alive requests keep the busy one moving; the idle one only waits.
            busy.sendall(GET)
            read_response(busy)
            idle.settimeout(0.2)
            with contextlib.suppress(TimeoutError):
                closed = idle.recv(1) == b""
        assert closed
        busy.sendall(GET)
        assert read_response(busy).startswith(b"HTTP/1.1 200")
        busy.close()
        assert "nudged client 127.0.0.51" in config.log_file.read_text()  # type: ignore[union-attr]
    finally:
        stop_engine(proc)


def test_host_name_target_is_re_resolved_through_the_system_resolvers(tmp_path: Path) -> None:
    """A host-name --to gets a resolvers section and keeps its last address when DNS fails; HAProxy accepts it."""
    haproxy = require_binary("haproxy")
    config = BridgeConfig(listen="[::1]:8080", to="localhost:8443", stats_file=Path("/x.json"))

    text = render_config(config, socket_path=tmp_path / "s.sock", maxconn=100)
    (tmp_path / "h.cfg").write_text(text)
    check = subprocess.run(
        [haproxy, "-c", "-f", str(tmp_path / "h.cfg")], capture_output=True, text=True, check=False
    )

    assert check.returncode == 0, check.stderr
    assert "    parse-resolv-conf\n" in text
    assert "server new localhost:8443 resolvers system init-addr last,libc,none" in text
    assert "bind [::1]:8080" in text
    assert "noreuseport" in text


def test_ip_target_needs_no_resolvers() -> None:
    """An address literal is used as is, without a resolvers section."""
    config = BridgeConfig(listen="127.0.0.1:8080", to="[::1]:8443", stats_file=Path("/x.json"))

    text = render_config(config, socket_path=Path("/s.sock"), maxconn=100)

    assert "resolvers" not in text
    assert "server new [::1]:8443\n" in text


def test_max_connections_is_lowered_only_from_the_default_and_then_said() -> None:
    """The default is lowered to what the fd limit holds, with a note; an explicit ask is refused."""
    assert honoured_maxconn(1000, 20_000) == (1000, None)
    fits, note = honoured_maxconn(10_000, 20_000)
    assert fits == 7920
    assert note is not None
    assert "lowered from the default 10000 to 7920" in note
    with pytest.raises(Blocked, match="give --max-connections 7920"):
        honoured_maxconn(9000, 20_000)


def test_dropped_log_lines_are_read_from_show_info() -> None:
    """HAProxy's own count of log lines it could not write is read from `show info`."""
    assert dropped_logs("Name: HAProxy\nDroppedLogs: 42\nUptime: 0d\n") == 42
    assert dropped_logs("Name: HAProxy\n") == 0


def test_termination_states_give_errors_and_aborts() -> None:
    """CD is a client abort, SD an upstream abort, SC a refused new host; -- is a clean end."""
    states = {
        s: parse_log_line(f"OPSKIT 127.0.0.1 5 10 20 {s} 3") for s in ("CD", "SD", "SC", "--")
    }

    assert {s: (p.abort, p.error) for s, p in states.items() if p} == {
        "CD": ("client", False),
        "SD": ("upstream", False),
        "SC": (None, True),
        "--": (None, False),
    }

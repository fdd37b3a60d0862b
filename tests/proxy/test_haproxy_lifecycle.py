"""The HAProxy engine's life: it dies with opskit, never binds beside an orphan, speaks IPv6, and keeps
the stats-file contract of issue #9 (heartbeat, watch history, aborts, tunnel activity)."""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from opskit.errors import ExitCode
from opskit.proxy import haproxy
from opskit.proxy.config import BridgeConfig
from opskit.proxy.haproxy_stats import read_socket
from opskit.proxy.listeners import address_taken, listening_inodes
from tests.conftest import Invoke
from tests.proxy.clients import GET, read_response
from tests.servers.common import free_port, require_binary, wait_stats
from tests.servers.haproxy import engine_config, start_engine, stop_engine
from tests.servers.nginx import Nginx

pytestmark = pytest.mark.proxy


def alive(pid: int) -> bool:
    """True while pid runs (a zombie waiting for its reaper counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def haproxy_children(pid: int) -> list[int]:
    """The haproxy processes pid started."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            children += [int(c) for c in (task / "children").read_text().split()]
    return [c for c in children if Path(f"/proc/{c}/comm").read_text().strip() == "haproxy"]


@pytest.fixture
def engine(tmp_path: Path, nginx: Nginx) -> Iterator[tuple[subprocess.Popen[str], BridgeConfig]]:
    """A HAProxy-engine bridge to nginx with a fast poll."""
    config = engine_config(tmp_path / "hap.json", nginx.http)
    proc = start_engine(config)
    try:
        yield proc, config
    finally:
        stop_engine(proc)


def test_haproxy_dies_when_opskit_is_killed(
    opskit_proc: Callable[..., subprocess.Popen[str]], tmp_path: Path, nginx: Nginx
) -> None:
    """After kill -9 of `opskit proxy start --engine haproxy`, HAProxy is gone and the port is free."""
    require_binary("haproxy")
    port = free_port()
    stats_file = tmp_path / "hap.json"
    proc = opskit_proc(
        "proxy", "start", "--engine", "haproxy", "--listen", f"127.0.0.1:{port}",
        "--to", nginx.http, "--stats-file", str(stats_file), "--max-connections", "1000",
    )  # fmt: skip
    wait_stats(stats_file, lambda s: s["pid"] == proc.pid and s["state"] == "running", 20)
    children = haproxy_children(proc.pid)
    assert children, "no haproxy child found"

    proc.kill()
    proc.wait(timeout=5)
    deadline = time.monotonic() + 5
    while any(alive(c) for c in children) and time.monotonic() < deadline:
        time.sleep(0.05)

    assert not any(alive(c) for c in children)
    assert listening_inodes("127.0.0.1", port) == set()


@pytest.mark.parametrize(
    "engine_args",
    [("--engine", "builtin"), ("--engine", "haproxy"), ("--mode", "http")],
    ids=["builtin", "haproxy", "http"],
)
def test_start_refuses_an_address_an_orphan_listens_on(
    opskit: Invoke, tmp_path: Path, nginx: Nginx, engine_args: tuple[str, str]
) -> None:
    """`proxy start` exits 3 naming the process that holds --listen, even one bound with SO_REUSEPORT."""
    socat = require_binary("socat")
    port = free_port()
    orphan = subprocess.Popen(
        [socat, f"TCP-LISTEN:{port},bind=127.0.0.1,reuseport,reuseaddr,fork", "EXEC:cat"],
        stdin=subprocess.DEVNULL,
    )
    stats_file = tmp_path / "b.json"
    try:
        deadline = time.monotonic() + 5
        while address_taken("127.0.0.1", port) is None and time.monotonic() < deadline:
            time.sleep(0.05)

        result = opskit(
            "proxy", "start", "--listen", f"127.0.0.1:{port}", "--to", nginx.http,
            "--stats-file", str(stats_file), "--detach", *engine_args, expect=ExitCode.BLOCKED,
        )  # fmt: skip

        assert f"address already in use by socat (pid {orphan.pid})" in result.stderr
        assert not stats_file.exists()
    finally:
        orphan.terminate()
        orphan.wait(timeout=5)


def test_explicit_max_connections_is_never_silently_lowered(
    opskit: Invoke, tmp_path: Path, nginx: Nginx
) -> None:
    """A --max-connections HAProxy cannot hold with the fd limit is refused with the number that fits."""
    require_binary("haproxy")
    result = opskit(
        "proxy", "start", "--engine", "haproxy", "--listen", f"127.0.0.1:{free_port()}",
        "--to", nginx.http, "--stats-file", str(tmp_path / "h.json"),
        "--max-connections", "100000000", expect=ExitCode.BLOCKED,
    )  # fmt: skip

    assert "--max-connections 100000000: HAProxy can hold" in result.stderr
    assert "give --max-connections" in result.stderr


def _v6_port() -> int:
    with socket.socket(socket.AF_INET6) as s:
        s.bind(("::1", 0))
        return int(s.getsockname()[1])


def test_haproxy_engine_bridges_ipv6(tmp_path: Path) -> None:
    """An [::1] listener forwarding to an [::1] target carries bytes and counts the client as ::1."""
    socat = require_binary("socat")
    target = _v6_port()
    echo = subprocess.Popen(
        [socat, f"TCP6-LISTEN:{target},bind=[::1],reuseaddr,fork", "EXEC:cat"],
        stdin=subprocess.DEVNULL,
    )
    config = engine_config(tmp_path / "v6.json", f"[::1]:{target}", listen=f"[::1]:{_v6_port()}")
    proc = None
    try:
        deadline = time.monotonic() + 5
        while address_taken("::1", target) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        proc = start_engine(config)
        with socket.create_connection(config.listen_host_port, timeout=5) as conn:
            conn.sendall(b"ping")
            assert conn.recv(4) == b"ping"
            live = read_socket(Path(json.loads(config.stats_file.read_text())["haproxy_socket"]))
            assert live.listener == config.listen
        stats = wait_stats(config.stats_file, lambda s: s["total"] == 1 and s["active"] == 0)
        assert [(c["address"], c["bytes_in"], c["bytes_out"]) for c in stats["clients"]] == [
            ("::1", 4, 4)
        ]
    finally:
        if proc is not None:
            stop_engine(proc)
        echo.terminate()
        echo.wait(timeout=5)


def test_traffic_on_a_long_lived_tunnel_moves_last_activity(
    engine: tuple[subprocess.Popen[str], BridgeConfig],
) -> None:
    """Bytes on a connection that stays open move last_activity and the client's last_seen."""
    _, config = engine
    with socket.create_connection(config.listen_host_port, source_address=("127.0.0.61", 0)) as c:
        c.settimeout(5)
        c.sendall(GET)
        read_response(c)
        first = wait_stats(config.stats_file, lambda s: s["active"] == 1)["last_activity"]
        time.sleep(1.1)
        c.sendall(GET)
        read_response(c)

        later = wait_stats(
            config.stats_file, lambda s: s["active"] == 1 and s["last_activity"] > first
        )

    assert later["clients"][0]["address"] == "127.0.0.61"
    assert later["clients"][0]["last_seen"] > first


def test_client_reset_is_counted_as_a_client_abort(
    engine: tuple[subprocess.Popen[str], BridgeConfig],
) -> None:
    """A client that resets its connection mid-transfer counts in aborts_client and on its row."""
    _, config = engine
    conn = socket.create_connection(config.listen_host_port, source_address=("127.0.0.62", 0))
    conn.sendall(b"GET /1k.txt HTTP/1.1\r\n")
    wait_stats(config.stats_file, lambda s: s["active"] == 1)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()

    stats = wait_stats(config.stats_file, lambda s: s["aborts_client"] == 1)

    assert stats["aborts_upstream"] == 0
    assert [(c["address"], c["aborts"]) for c in stats["clients"]] == [("127.0.0.62", 1)]


def test_stats_file_keeps_the_contract_while_idle_and_across_restarts(
    tmp_path: Path, nginx: Nginx
) -> None:
    """The idle bridge rewrites its file every heartbeat; a restart after kill -9 keeps the watch history."""
    config = engine_config(tmp_path / "hap.json", nginx.http)
    first = start_engine(config)
    try:
        seen = json.loads(config.stats_file.read_text())
        idle = wait_stats(config.stats_file, lambda s: s["updated_at"] > seen["updated_at"], 3)
        assert (idle["heartbeat_s"], idle["carries"], idle["clients_partial"]) == (
            1.0,
            ["tcp"],
            False,
        )
        assert (idle["write_errors"], idle["aborts_client"], idle["aborts_upstream"]) == (0, 0, 0)
        assert [(w["pid"], w["engine"], w["stopped_at"]) for w in idle["watch"]] == [
            (first.pid, "haproxy", None)
        ]
        first.kill()  # dies uncleanly: its watch entry stays open in the file
        first.wait(timeout=5)
        last_known = json.loads(config.stats_file.read_text())["updated_at"]
        deadline = time.monotonic() + 5  # its HAProxy dies with it
        while address_taken(*config.listen_host_port) and time.monotonic() < deadline:
            time.sleep(0.05)

        second = start_engine(config)
        stop_engine(second)
    finally:
        stop_engine(first)

    watch = json.loads(config.stats_file.read_text())["watch"]
    assert [(w["pid"], w["stopped_at"] is not None) for w in watch] == [
        (first.pid, True),
        (second.pid, True),
    ]
    assert watch[0]["stopped_at"] == last_known


def test_dropped_log_lines_mark_the_client_table_partial(
    tmp_path: Path, nginx: Nginx, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When HAProxy drops log lines (its pipe full), the stats file says the client table is partial."""
    require_binary("haproxy")
    monkeypatch.setattr(haproxy, "LOG_PIPE_BYTES", 4096)  # one page: a few hundred lines fill it
    config = BridgeConfig(
        listen=f"127.0.0.1:{free_port()}",
        to=nginx.http,
        stats_file=tmp_path / "hap.json",
        engine="haproxy",
        max_connections=2000,
    )
    engine = haproxy.Engine(config)
    engine.start()
    try:
        with engine.tally.lock:  # the log reader waits here, as a slow reader would
            for _ in range(1500):
                socket.create_connection(config.listen_host_port).close()
        deadline = time.monotonic() + 10
        while not engine.tally.clients_partial and time.monotonic() < deadline:
            engine.poll()
            time.sleep(0.1)
        data = engine.write("running")
    finally:
        engine.stop("sigterm")

    assert data["clients_partial"] is True
    assert "HAProxy dropped" in data["clients_partial_reason"]


def test_upstream_reset_is_counted_as_an_upstream_abort(tmp_path: Path) -> None:
    """A new host that resets the connection mid-transfer counts in aborts_upstream."""
    listener = socket.create_server(("127.0.0.1", 0))
    config = engine_config(tmp_path / "hap.json", f"127.0.0.1:{listener.getsockname()[1]}")
    proc = start_engine(config)
    try:
        with socket.create_connection(config.listen_host_port, timeout=5) as client:
            listener.settimeout(5)
            upstream, _ = listener.accept()
            client.sendall(b"half an upload")
            upstream.recv(64)
            upstream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            upstream.close()  # a reset, not a FIN

            stats = wait_stats(config.stats_file, lambda s: s["aborts_upstream"] == 1)
    finally:
        stop_engine(proc)
        listener.close()

    assert stats["aborts_client"] == 0

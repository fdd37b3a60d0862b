"""The built-in engine at the TCP edges of issue #9: resets, dual-stack, the target, slow clients, fds."""

from __future__ import annotations

import asyncio
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from opskit.errors import ExitCode
from opskit.proxy import forwarder
from opskit.proxy.bridge import FORWARDER_PATH
from tests.conftest import Invoke
from tests.proxy.clients import blackhole_backend, http_get, silent_backend
from tests.proxy.conftest import Forwarder, StartForwarder
from tests.servers.common import free_port, require_binary
from tests.servers.nginx import Nginx

pytestmark = pytest.mark.proxy


def _reset_close(sock: socket.socket) -> None:
    """Close with a TCP RST, as a crashing client or a killed upload does."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _read_until_end(sock: socket.socket) -> tuple[str, int]:
    """("eof", bytes) on a clean end of stream, ("reset", bytes) on a reset (bounded by the timeout)."""
    size = 0
    while True:
        try:
            chunk = sock.recv(1 << 16)
        except ConnectionResetError:
            return "reset", size
        if not chunk:
            return "eof", size
        size += len(chunk)


@contextmanager
def recording_backend() -> Iterator[tuple[int, list[tuple[str, int]]]]:
    """A backend that reads one connection to its end and records how it ended: (port, outcomes)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(10)
    outcomes: list[tuple[str, int]] = []

    def serve() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(10)
            outcomes.append(_read_until_end(conn))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1]), outcomes
    finally:
        thread.join(timeout=12)
        listener.close()


@contextmanager
def resetting_backend(reply: bytes) -> Iterator[int]:
    """A backend that sends `reply` to each connection, then resets it; its port."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(10)

    def serve() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        conn.sendall(reply)
        time.sleep(0.3)
        _reset_close(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        thread.join(timeout=12)
        listener.close()


@pytest.mark.parametrize("loop", ["uvloop", "stdlib"])
def test_client_reset_reaches_the_new_host_as_a_reset(forwarder: StartForwarder, loop: str) -> None:
    """A client that resets mid-upload is a reset at the new host, so a truncated upload never looks complete."""
    with recording_backend() as (port, outcomes):
        fwd = forwarder(f"127.0.0.1:{port}", *(["--no-uvloop"] if loop == "stdlib" else []))
        sock = socket.create_connection((fwd.host, fwd.port), timeout=5)
        sock.sendall(b"u" * 100_000)
        fwd.wait_stats(lambda s: s["bytes_in"] == 100_000)
        _reset_close(sock)

    assert [how for how, _ in outcomes] == ["reset"]
    stats = fwd.wait_stats(lambda s: s["active"] == 0)
    assert stats["aborts_client"] == 1
    assert stats["aborts_upstream"] == 0
    assert fwd.client("127.0.0.1")["aborts"] == 1


@pytest.mark.parametrize("loop", ["uvloop", "stdlib"])
def test_upstream_reset_reaches_the_client_as_a_reset(forwarder: StartForwarder, loop: str) -> None:
    """A new host that resets the connection is a reset at the client, never a clean FIN (either loop)."""
    with resetting_backend(b"partial answer") as port:
        fwd = forwarder(f"127.0.0.1:{port}", *(["--no-uvloop"] if loop == "stdlib" else []))
        with socket.create_connection((fwd.host, fwd.port), timeout=5) as sock:
            sock.sendall(b"request")
            how, _ = _read_until_end(sock)

    assert how == "reset"
    stats = fwd.wait_stats(lambda s: s["active"] == 0)
    assert stats["aborts_upstream"] == 1
    assert stats["aborts_client"] == 0


def test_clean_close_is_not_counted_as_an_abort(nginx: Nginx, forwarder: StartForwarder) -> None:
    """An ordinary request and close leaves both abort counters at zero."""
    fwd = forwarder(nginx.http)

    status, _ = http_get(fwd.host, fwd.port, "/1k.txt")

    assert status == 200
    stats = fwd.wait_stats(lambda s: s["total"] == 1 and s["active"] == 0)
    assert (stats["aborts_client"], stats["aborts_upstream"]) == (0, 0)


def test_ipv6_wildcard_listener_carries_ipv4_clients(
    nginx: Nginx, forwarder: StartForwarder
) -> None:
    """A bridge on [::] answers IPv4 and IPv6 clients; the IPv4 one is listed as plain 127.0.0.1."""
    port = free_port()
    fwd = forwarder(nginx.http, "--listen", f"[::]:{port}", port=port)

    v4_status, _ = http_get("127.0.0.1", port, "/1k.txt")
    v6_status, _ = http_get("::1", port, "/1k.txt")

    assert (v4_status, v6_status) == (200, 200)
    stats = fwd.wait_stats(lambda s: s["total"] == 2 and s["active"] == 0)
    assert sorted(c["address"] for c in stats["clients"]) == ["127.0.0.1", "::1"]
    assert stats["listener"] == f"[::]:{port}"


def _run_forwarder(*argv: str, timeout_s: float = 10) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(FORWARDER_PATH), *argv],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


@pytest.mark.parametrize(
    ("listen", "to"),
    [
        ("127.0.0.1:{p}", "127.0.0.1:{p}"),
        ("0.0.0.0:{p}", "127.0.0.2:{p}"),
        ("[::]:{p}", "[::1]:{p}"),
    ],
)
def test_target_that_is_the_bridge_itself_is_refused(tmp_path: Path, listen: str, to: str) -> None:
    """A --to that would loop back into the bridge's own listener is bad input (exit 2), said plainly."""
    port = free_port()

    done = _run_forwarder(
        "--listen",
        listen.format(p=port),
        "--to",
        to.format(p=port),
        "--stats-file",
        str(tmp_path / "s.json"),
    )

    assert done.returncode == 2
    assert "is this bridge's own listener" in done.stderr


def test_cli_refuses_a_target_that_is_the_bridge_itself(opskit: Invoke, tmp_path: Path) -> None:
    """`proxy start` refuses --to localhost:P when it listens on 127.0.0.1:P, before anything runs."""
    port = free_port()

    result = opskit(
        "proxy", "start", "--listen", f"127.0.0.1:{port}", "--to", f"localhost:{port}",
        "--stats-file", str(tmp_path / "s.json"), expect=ExitCode.BAD_INPUT,
    )  # fmt: skip

    assert "own listener" in result.stderr
    assert not (tmp_path / "s.json").exists()


def test_happy_eyeballs_moves_on_from_an_address_that_hangs() -> None:
    """When the first address of the new host hangs in SYN, the next one is tried 250 ms later."""
    with blackhole_backend() as dead, silent_backend() as alive:
        addresses = [
            (socket.AF_INET, ("127.0.0.1", dead)),
            (socket.AF_INET, ("127.0.0.1", alive)),
        ]

        async def connect() -> tuple[int, float]:
            started = time.monotonic()
            sock = await asyncio.wait_for(
                forwarder.happy_eyeballs(asyncio.get_running_loop(), addresses, 0.25), 5
            )
            with sock:
                return int(sock.getpeername()[1]), time.monotonic() - started

        peer_port, elapsed = asyncio.run(connect())

    assert peer_port == alive
    assert elapsed < 2.0


def test_name_target_is_resolved_and_forwarded(nginx: Nginx, forwarder: StartForwarder) -> None:
    """A --to given as a name (localhost) is resolved by the bridge and carries traffic."""
    fwd = forwarder(f"localhost:{nginx.http_port}")

    status, _ = http_get(fwd.host, fwd.port, "/1k.txt")

    assert status == 200
    assert "new host localhost is 127.0.0.1:" in fwd.log()


def _closed_by_bridge(sock: socket.socket, timeout_s: float) -> bool:
    sock.settimeout(timeout_s)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_max_per_client_refuses_one_address_beyond_its_share(forwarder: StartForwarder) -> None:
    """With --max-per-client 2, a third connection from one address is refused and counted; others pass."""
    with silent_backend() as port:
        fwd = forwarder(f"127.0.0.1:{port}", "--max-per-client", "2")
        first = [socket.create_connection((fwd.host, fwd.port), timeout=5) for _ in range(2)]
        fwd.wait_stats(lambda s: s["active"] == 2)
        third = socket.create_connection((fwd.host, fwd.port), timeout=5)
        other = socket.create_connection(
            (fwd.host, fwd.port), timeout=5, source_address=("127.0.0.2", 0)
        )
        try:
            assert _closed_by_bridge(third, 3.0)
            assert not _closed_by_bridge(other, 0.3)
            stats = fwd.wait_stats(lambda s: s["refused_max_per_client"] == 1 and s["active"] == 3)
        finally:
            for s in (*first, third, other):
                s.close()

    assert "refused_max_per_client" in fwd.log()
    assert stats["total"] == 4  # the refused client is still a client that arrived here


def test_silent_client_is_cut_at_the_handshake_timeout(forwarder: StartForwarder) -> None:
    """A connection that sends nothing is closed after --handshake-timeout; one that talks is kept."""
    with silent_backend() as port:
        fwd = forwarder(f"127.0.0.1:{port}", "--handshake-timeout", "1s")
        silent = socket.create_connection((fwd.host, fwd.port), timeout=5)
        talker = socket.create_connection((fwd.host, fwd.port), timeout=5)
        talker.sendall(b"x" * 200)
        try:
            assert _closed_by_bridge(silent, 4.0)
            assert not _closed_by_bridge(talker, 0.5)
        finally:
            silent.close()
            talker.close()

    stats = fwd.wait_stats(lambda s: s["handshake_timeouts"] == 1)
    assert stats["handshake_timeouts"] == 1
    assert "(--handshake-timeout)" in fwd.log()


def _limited_forwarder(tmp_path: Path, to: str, nofile: int, *extra: str) -> Forwarder:
    """A forwarder process whose RLIMIT_NOFILE (soft and hard) is `nofile`."""
    port = free_port()
    stats, log_file, out_file = tmp_path / "s.json", tmp_path / "f.log", tmp_path / "f.out"
    argv = [
        sys.executable, str(FORWARDER_PATH), "--listen", f"127.0.0.1:{port}", "--to", to,
        "--stats-file", str(stats), "--stats-interval", "100ms", "--drain-timeout", "100ms", *extra,
    ]  # fmt: skip

    prlimit = require_binary("prlimit", "util-linux")
    with open(log_file, "w") as log, open(out_file, "w") as out:
        proc = subprocess.Popen(
            [prlimit, f"--nofile={nofile}:{nofile}", *argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=log,
            text=True,
        )
    fwd = Forwarder(proc, "127.0.0.1", port, stats, log_file, out_file, argv)
    fwd.wait_stats(lambda s: s["pid"] == proc.pid and s["state"] == "running", timeout_s=10)
    return fwd


@pytest.mark.parametrize("extra", [[], ["--max-connections", "1000"]])
def test_fd_limit_refuses_with_a_count_and_never_blames_the_new_host(
    tmp_path: Path, extra: list[str]
) -> None:
    """Under RLIMIT_NOFILE 128, clients beyond what fits are refused as refused_fd_limit, not as upstream errors."""
    with silent_backend() as port:
        fwd = _limited_forwarder(tmp_path, f"127.0.0.1:{port}", 128, *extra)
        socks: list[socket.socket] = []
        try:
            for _ in range(40):
                socks.append(socket.create_connection((fwd.host, fwd.port), timeout=5))
            stats = fwd.wait_stats(lambda s: s["total"] == 40 and s["refused_fd_limit"] == 8)
            assert stats["active"] == 32
            assert stats["max_connections"] == 32
        finally:
            for s in socks:
                s.close()
            fwd.terminate()

    log = fwd.log()
    assert "refused_fd_limit" in log
    assert "could not connect to the new host" not in log
    if extra:
        assert "--max-connections 1000 does not fit in 128 file descriptors" in log


def test_start_help_says_what_the_bridge_does_not_carry(opskit: Invoke) -> None:
    """`proxy start --help` tells the operator that UDP to the same port is not carried or counted."""
    result = opskit("proxy", "start", "--help", expect=ExitCode.OK)

    text = " ".join(result.stdout.split())
    assert "UDP to the same port" in text
    assert "neither forwarded nor counted" in text


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (("--engine", "haproxy", "--max-per-client", "3"), "--max-per-client"),
        (("--mode", "http", "--udp"), "--udp"),
    ],
)
def test_builtin_only_flags_are_refused_elsewhere(
    opskit: Invoke, tmp_path: Path, flags: tuple[str, ...], named: str
) -> None:
    """--max-per-client and --udp with another engine or mode are bad input, never silently ignored."""
    result = opskit(
        "proxy", "start", "--listen", f"127.0.0.1:{free_port()}", "--to", "127.0.0.1:9",
        "--stats-file", str(tmp_path / "s.json"), *flags, expect=ExitCode.BAD_INPUT,
    )  # fmt: skip

    assert named in result.stderr


def test_a_name_target_is_looked_up_again_once_stale() -> None:
    """A --to name is resolved again after RESOLVE_EVERY_S, in the background, keeping the old list meanwhile."""

    async def lookups() -> tuple[list[object], list[object], float, float]:
        loop = asyncio.get_running_loop()
        target = forwarder.Target(("localhost", 9), ("127.0.0.1", 1), loop, lambda _: None)
        first = list(await target.current())
        target.resolved_at -= forwarder.RESOLVE_EVERY_S + 1
        stale_at = target.resolved_at
        during = list(await target.current())  # answers at once with what it has
        if target.refreshing is not None:
            await asyncio.wait_for(asyncio.shield(target.refreshing), 5)
        return first, during, stale_at, target.resolved_at

    first, during, stale_at, refreshed_at = asyncio.run(lookups())

    assert first == during == [(socket.AF_INET, ("127.0.0.1", 9))]
    assert refreshed_at > stale_at

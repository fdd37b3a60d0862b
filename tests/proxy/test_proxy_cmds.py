"""`opskit proxy start/stop/status` as an operator types them."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from opskit.errors import ExitCode
from tests.conftest import Invoke
from tests.proxy.clients import http_get
from tests.proxy.conftest import StartForwarder
from tests.servers.common import free_port, require_binary
from tests.servers.nginx import Nginx

pytestmark = pytest.mark.proxy


def _wait_running(stats_file: Path, pid: int, timeout_s: float = 10.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            data: dict[str, object] = json.loads(stats_file.read_text())
            if data["pid"] == pid and data["state"] == "running":
                return data
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"{stats_file} never said pid {pid} is running")


def test_status_without_stats_file_is_blocked(opskit: Invoke, tmp_path: Path) -> None:
    """`proxy status` on a bridge that never ran exits 3 with one line saying so."""
    result = opskit(
        "proxy", "status", "--stats-file", str(tmp_path / "none.json"), expect=ExitCode.BLOCKED
    )

    assert "no stats file" in result.stderr
    assert result.stdout == ""


def test_bad_duration_is_bad_input(opskit: Invoke) -> None:
    """A malformed --idle-timeout is refused before anything listens (exit 2)."""
    result = opskit(
        "proxy", "start", "--listen", "127.0.0.1:1", "--to", "127.0.0.1:2", "--idle-timeout", "soon",
        expect=ExitCode.BAD_INPUT,
    )  # fmt: skip

    assert "soon" in result.stderr


def test_proxy_protocol_is_refused_in_http_mode(opskit: Invoke, tmp_path: Path) -> None:
    """--proxy-protocol with --mode http is bad input: HTTP mode adds X-Forwarded-For instead."""
    result = opskit(
        "proxy", "start", "--listen", "127.0.0.1:1", "--to", "127.0.0.1:2", "--mode", "http",
        "--proxy-protocol", "v1", "--stats-file", str(tmp_path / "s.json"),
        expect=ExitCode.BAD_INPUT,
    )  # fmt: skip

    assert "X-Forwarded-For" in result.stderr


def test_detached_bridge_reports_and_stops(opskit: Invoke, nginx: Nginx, tmp_path: Path) -> None:
    """`start --detach` returns at once; status shows the client; stop ends it with the final table."""
    port = free_port()
    stats_file = tmp_path / "bridge.json"
    started = opskit(
        "proxy", "start", "--listen", f"127.0.0.1:{port}", "--to", nginx.http,
        "--stats-file", str(stats_file), "--detach",
        expect=ExitCode.OK,
    )  # fmt: skip
    assert "running in the background" in started.stdout
    http_get("127.0.0.1", port, "/1k.txt", bind="127.0.0.8")
    time.sleep(1.2)  # the stats file is rewritten once a second

    shown = opskit("proxy", "status", "--stats-file", str(stats_file), "--json", expect=ExitCode.OK)
    stopped = opskit("proxy", "stop", "--stats-file", str(stats_file), expect=ExitCode.OK)
    again = opskit("proxy", "stop", "--stats-file", str(stats_file), expect=ExitCode.BLOCKED)

    data = json.loads(shown.stdout)
    assert data["state"] == "running"
    assert [c["address"] for c in data["clients"]] == ["127.0.0.8"]
    assert data["clients"][0]["total"] == 1
    assert "stopped (sigterm)" in stopped.stdout
    assert "127.0.0.8" in stopped.stdout
    assert "not running" in again.stderr


def test_foreground_bridge_ctrl_c_prints_the_final_table(
    opskit_proc: Callable[..., subprocess.Popen[str]], nginx: Nginx, tmp_path: Path
) -> None:
    """Ctrl-C on `proxy start` drains, prints the final table and exits 130."""
    port = free_port()
    stats_file = tmp_path / "fg.json"
    proc = opskit_proc(
        "proxy", "start", "--listen", f"127.0.0.1:{port}", "--to", nginx.http,
        "--stats-file", str(stats_file), "--drain-timeout", "1s",
    )  # fmt: skip
    _wait_running(stats_file, proc.pid)
    status, _ = http_get("127.0.0.1", port, "/1k.txt", bind="127.0.0.4")

    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=15)

    assert status == 200
    assert proc.returncode == ExitCode.INTERRUPTED
    assert "stopped (sigint)" in out
    assert "127.0.0.4" in out
    assert "Traceback" not in err
    assert json.loads(stats_file.read_text())["ended"] == "sigint"


def test_malformed_host_port_is_bad_input_without_traceback(opskit: Invoke) -> None:
    """`--listen 127.0.0.1` (no port) exits 2 naming the option and the expected form."""
    result = opskit(
        "proxy", "start", "--listen", "127.0.0.1", "--to", "127.0.0.1:80",
        expect=ExitCode.BAD_INPUT,
    )  # fmt: skip

    assert "--listen" in result.stderr
    assert "HOST:PORT" in result.stderr
    assert "Traceback" not in result.stderr


def test_port_in_use_is_blocked_with_a_plain_reason(
    opskit: Invoke, nginx: Nginx, tmp_path: Path
) -> None:
    """A listen port that is taken exits 3 and says 'address already in use', detached or not."""
    busy = nginx.http  # nginx listens there already
    for detach in ((), ("--detach",)):
        result = opskit(
            "proxy", "start", "--listen", busy, "--to", nginx.http,
            "--stats-file", str(tmp_path / f"busy{len(detach)}.json"), *detach,
            expect=ExitCode.BLOCKED,
        )  # fmt: skip

        assert "address already in use" in result.stderr
        assert "Traceback" not in result.stderr


def test_port_in_use_is_blocked_for_every_engine(
    opskit: Invoke, nginx: Nginx, tmp_path: Path
) -> None:
    """HAProxy and HTTP mode, detached, also exit 3 on a taken port: one meaning per exit code."""
    require_binary("haproxy")
    for engine in (("--engine", "haproxy"), ("--mode", "http")):
        result = opskit(
            "proxy", "start", "--listen", nginx.http, "--to", nginx.http,
            "--stats-file", str(tmp_path / f"busy-{engine[1]}.json"), *engine, "--detach",
            expect=ExitCode.BLOCKED,
        )  # fmt: skip

        assert "did not start" in result.stderr
        assert "Traceback" not in result.stderr


def test_stats_file_of_a_running_bridge_is_not_taken_over(
    opskit: Invoke, nginx: Nginx, forwarder: StartForwarder
) -> None:
    """A second bridge with the stats file of a running one is refused (exit 3) and the file is left alone."""
    fwd = forwarder(nginx.http)
    before = fwd.stats()

    result = opskit(
        "proxy", "start", "--listen", f"127.0.0.1:{free_port()}", "--to", nginx.http,
        "--stats-file", str(fwd.stats_file), "--detach",
        expect=ExitCode.BLOCKED,
    )  # fmt: skip

    assert f"pid {fwd.pid}" in result.stderr
    assert fwd.stats()["pid"] == before["pid"]
    assert fwd.stats()["state"] == "running"


def test_status_of_a_killed_bridge_is_blocked(
    opskit: Invoke, nginx: Nginx, forwarder: StartForwarder
) -> None:
    """After a kill -9 the stats file still says running; status shows it but exits 3 saying it is gone."""
    fwd = forwarder(nginx.http)
    fwd.proc.kill()
    fwd.proc.wait(timeout=5)

    result = opskit("proxy", "status", "--stats-file", str(fwd.stats_file), expect=ExitCode.BLOCKED)

    assert "running" in result.stdout
    assert "not running any more" in result.stderr


def test_unreachable_new_host_is_a_warning_at_start(opskit: Invoke, tmp_path: Path) -> None:
    """A --to that refuses connections still starts the bridge, with a warning on stderr."""
    stats_file = tmp_path / "down.json"
    dead = f"127.0.0.1:{free_port()}"
    started = opskit(
        "proxy", "start", "--listen", f"127.0.0.1:{free_port()}", "--to", dead,
        "--stats-file", str(stats_file), "--detach",
        expect=ExitCode.OK,
    )  # fmt: skip
    opskit("proxy", "stop", "--stats-file", str(stats_file), expect=ExitCode.OK)

    assert f"warning: the new host {dead} does not answer" in started.stderr
    assert "running in the background" in started.stdout


def test_nudge_needs_to_know_when_caches_forget(opskit: Invoke, tmp_path: Path) -> None:
    """--nudge-after without --switched-at and --old-ttl is bad input; with them it starts."""
    listen = f"127.0.0.1:{free_port()}"
    stats_file = tmp_path / "nudge.json"
    refused = opskit(
        "proxy", "start", "--listen", listen, "--to", "127.0.0.1:1", "--nudge-after", "1m",
        expect=ExitCode.BAD_INPUT,
    )  # fmt: skip
    opskit(
        "proxy", "start", "--listen", listen, "--to", "127.0.0.1:1", "--nudge-after", "1m",
        "--switched-at", "2026-11-24T02:11:00Z", "--old-ttl", "5m", "--margin", "1m",
        "--stats-file", str(stats_file), "--detach",
        expect=ExitCode.OK,
    )  # fmt: skip
    pid = json.loads(stats_file.read_text())["pid"]
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    opskit("proxy", "stop", "--stats-file", str(stats_file), expect=ExitCode.OK)

    assert "--switched-at and --old-ttl" in refused.stderr
    # switch 02:11 + TTL 5m + margin 1m: nudging starts at 02:17
    assert argv[argv.index(b"--nudge-not-before") + 1] == b"2026-11-24T02:17:00+00:00"

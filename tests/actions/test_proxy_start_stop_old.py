"""proxy.start stops the old service itself, once it already waits for the port: nobody is refused (#11)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from opskit.errors import ExitCode
from tests.conftest import Invoke
from tests.runbook.helpers import run_id, write
from tests.servers.common import free_port, require_binary
from tests.servers.health_http import HealthHttp, health_http  # noqa: F401 - fixture
from tests.servers.sshd import Sshd

# The old service: answers "old" to each client, writes its pid once it listens.
OLD_SERVICE = """
import os, socket, sys
server = socket.create_server(("127.0.0.1", int(sys.argv[1])))
with open(sys.argv[2] + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.replace(sys.argv[2] + ".tmp", sys.argv[2])
while True:
    conn, _ = server.accept()
    conn.recv(100)
    conn.sendall(b"old\\n")
    conn.close()
"""

# `stop_old` sleeps after the kill, as `systemctl stop` goes on after the service closed its port:
# with a separate stop step, that is how long clients were refused.
RUNBOOK = """
    name: gap
    vars:
      pid_file: "{pid_file}"
      stop_old: "kill -TERM $(cat {{{{ pid_file }}}}); sleep 0.5{fail}"
      start_old: "setsid nohup {python} {script} {port} {{{{ pid_file }}}} </dev/null >/dev/null 2>&1 &"
    steps:
      - id: bridge
        uses: proxy.start
        with:
          listen: "127.0.0.1:{port}"
          to: "127.0.0.1:{target}"
          stats_file: "{stats}"
          engine: {engine}
          bind_timeout: 10s
          stop_old: "{{{{ stop_old | raw }}}}"
          start_old: "{{{{ start_old | raw }}}}"
"""


def _setup(
    tmp_path: Path, target: int, fail: str = "", engine: str = "builtin"
) -> tuple[Path, Path, int]:
    """The runbook, the old service's pid file (in a directory with a space: quoting matters), its port."""
    if engine == "haproxy":
        require_binary("haproxy")
    port = free_port()
    script = tmp_path / "old_service.py"
    script.write_text(OLD_SERVICE)
    (tmp_path / "old service").mkdir()
    pid_file = tmp_path / "old service" / "pid"
    text = RUNBOOK.format(
        pid_file=pid_file, python=sys.executable, script=script, port=port, target=target,
        stats=tmp_path / "bridge.json", fail=fail, engine=engine,
    )  # fmt: skip
    return write(tmp_path, text), pid_file, port


def _start_old(tmp_path: Path, pid_file: Path, port: int) -> None:
    subprocess.Popen(
        [sys.executable, str(tmp_path / "old_service.py"), str(port), str(pid_file)],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
    )
    _wait_for_pid(pid_file)


def _wait_for_pid(pid_file: Path, not_pid: int | None = None) -> int:
    for _ in range(200):  # bounded: 10 s
        with contextlib.suppress(OSError, ValueError):
            if (pid := int(pid_file.read_text())) != not_pid:
                return pid
        time.sleep(0.05)
    raise AssertionError(f"the old service never wrote {pid_file}")


def _kill_old(pid_file: Path) -> None:
    with contextlib.suppress(OSError, ValueError):
        os.kill(int(pid_file.read_text()), signal.SIGKILL)


def _clean_up(pid_file: Path, *stats_files: Path) -> None:
    """The old service, and any bridge a run left behind (a failed assertion skips the rollback)."""
    _kill_old(pid_file)
    for stats in stats_files:
        with contextlib.suppress(OSError, ValueError, KeyError):
            doc = json.loads(stats.read_text())
            if doc["state"] == "running":  # a stopped bridge's pid may be another process's now
                os.kill(int(doc["pid"]), signal.SIGTERM)
        with contextlib.suppress(OSError, ValueError):  # HAProxy's daemon on an "old host"
            os.kill(int(stats.with_suffix(".pid").read_text()), signal.SIGTERM)


def _ask(port: int) -> str:
    """Who answers one client: old, new (the bridge carried it), refused, or reset."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(b"GET /health HTTP/1.0\r\n\r\n")
            answer = conn.recv(100)
            while conn.recv(4096):  # read to the end: both servers close after one answer
                pass
    except ConnectionRefusedError:
        return "refused"
    except (ConnectionResetError, TimeoutError):
        return "reset"
    if answer.startswith(b"old"):
        return "old"
    return "new" if answer.startswith(b"HTTP/1.0 200") else "reset"


class ClientLoop:
    """Clients reconnecting in a loop from a thread, each outcome counted in `seen` (old, new, refused, reset)."""

    def __init__(self, port: int, *, every_s: float, limit_s: float) -> None:
        self.seen: Counter[str] = Counter()
        self._done = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(port, every_s, limit_s), daemon=True
        )
        self._thread.start()

    def _run(self, port: int, every_s: float, limit_s: float) -> None:
        deadline = time.monotonic() + limit_s
        while not self._done.is_set() and time.monotonic() < deadline:  # bounded by limit_s
            self.seen[_ask(port)] += 1
            time.sleep(every_s)

    def stop(self) -> None:
        self._done.set()
        self._thread.join(timeout=10)


@pytest.mark.parametrize("engine", ["builtin", "haproxy"])
def test_stop_old_in_the_bridge_step_refuses_nobody_and_its_undo_restarts_the_old_service(
    opskit: Invoke,
    tmp_path: Path,
    health_http: HealthHttp,  # noqa: F811
    engine: str,
) -> None:
    """Clients in a tight loop across the stop: none refused; rollback stops the bridge, restarts the old service."""
    path, pid_file, port = _setup(tmp_path, health_http.port, engine=engine)
    _start_old(tmp_path, pid_file, port)
    first_pid = _wait_for_pid(pid_file)
    clients = ClientLoop(port, every_s=0.0005, limit_s=60)
    seen = clients.seen
    try:
        time.sleep(0.2)
        result = opskit("run", str(path), expect=ExitCode.OK)
        time.sleep(0.3)
        clients.stop()

        assert seen["refused"] == 0, seen
        assert seen["old"] > 0, seen
        assert seen["new"] > 0, seen
        assert "stopping the old service" in result.stdout + result.stderr
        assert "holds the old service's own listening socket" in result.stdout + result.stderr

        undone = opskit("rollback", run_id(result.stdout), "--yes", expect=ExitCode.OK)
        assert "the old service started again" in undone.stdout + undone.stderr
        _wait_for_pid(pid_file, not_pid=first_pid)
        assert _ask(port) == "old"
    finally:
        clients.stop()
        _clean_up(pid_file, tmp_path / "bridge.json")


def test_a_failed_stop_old_leaves_no_bridge_behind(
    opskit: Invoke,
    tmp_path: Path,
    health_http: HealthHttp,  # noqa: F811
) -> None:
    """stop_old fails after the old service let go: the step fails with its output, nothing listens."""
    path, pid_file, port = _setup(
        tmp_path, health_http.port, fail="; echo 'dispatch: stop job failed' >&2; exit 1"
    )
    _start_old(tmp_path, pid_file, port)
    try:
        result = opskit("run", str(path), expect=ExitCode.NEGATIVE)

        assert "dispatch: stop job failed" in result.stdout + result.stderr
        assert _ask(port) == "refused"  # the bind the bridge took meanwhile was let go
        assert not (tmp_path / "bridge.json").exists()  # no bridge was started
    finally:
        _clean_up(pid_file, tmp_path / "bridge.json")


REMOTE_RUNBOOK = """
    name: gap-over-ssh
    hosts:
      old: {{address: 127.0.0.1, port: {ssh_port}, user: {user}, key_file: "{key}", known_hosts: "{known}"}}
    steps:
      - id: bridge
        uses: proxy.start
        on: old
        with:
          listen: "127.0.0.1:{port}"
          to: "127.0.0.1:{target}"
          stats_file: "{stats}"
          engine: {engine}
          bind_timeout: 20s
          stop_old: "kill -TERM $(cat '{pid_file}'); sleep 0.5{fail}"
"""


@pytest.mark.sshd
@pytest.mark.parametrize("engine", ["builtin", "haproxy"])
@pytest.mark.parametrize("fail", ["", "; echo 'dispatch: stop job failed' >&2; exit 1"])
def test_stop_old_over_ssh_runs_once_the_forwarder_waits_and_a_failure_leaves_none(
    opskit: Invoke,
    tmp_path: Path,
    *,
    sshd: Sshd,
    health_http: HealthHttp,  # noqa: F811
    fail: str,
    engine: str,
) -> None:
    """On the old host over SSH, either engine: the port held while stop_old runs, nobody refused; a failed stop leaves none."""
    _, pid_file, port = _setup(tmp_path, health_http.port, engine=engine)
    stats = tmp_path / "old-host" / "bridge.json"
    path = write(
        tmp_path,
        REMOTE_RUNBOOK.format(
            ssh_port=sshd.port, user=sshd.user, key=sshd.client_key, known=sshd.known_hosts,
            port=port, target=health_http.port, stats=stats, pid_file=pid_file, fail=fail,
            engine=engine,
        ),
        name="remote.yaml",
    )  # fmt: skip
    _start_old(tmp_path, pid_file, port)
    clients = ClientLoop(port, every_s=0.001, limit_s=60)
    seen = clients.seen
    try:
        if fail:
            result = opskit("run", str(path), expect=ExitCode.NEGATIVE)
            clients.stop()
            assert "dispatch: stop job failed" in result.stdout + result.stderr
            time.sleep(0.5)  # the forwarder's SIGTERM is sent; give it a moment to be gone
            assert _ask(port) == "refused"  # no forwarder took the port after all
        else:
            opskit("run", str(path), expect=ExitCode.OK)
            time.sleep(0.3)
            clients.stop()
            assert seen["refused"] == 0, seen
            assert seen["new"] > 0, seen
            log = "".join(p.read_text() for p in (tmp_path / "old-host").glob("*.log"))
            assert "holding the listening socket of python" in log, log
            if engine == "haproxy":
                assert "fd@3" in (tmp_path / "old-host" / "bridge.haproxy.cfg").read_text()
    finally:
        clients.stop()
        _clean_up(pid_file, stats)


# An old service that stopped accepting (busy, or hung): clients wait in its queue. Optionally it
# listens with SO_REUSEPORT on two sockets, as nginx's `reuseport` does.
STUCK_SERVICE = """
import os, socket, sys, time
socks = []
for _ in range(int(sys.argv[3])):
    s = socket.socket()
    if sys.argv[3] != "1":
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", int(sys.argv[1])))
    s.listen(64)
    socks.append(s)
with open(sys.argv[2] + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.replace(sys.argv[2] + ".tmp", sys.argv[2])
time.sleep(120)
"""


def _start_stuck(tmp_path: Path, pid_file: Path, port: int, sockets: int) -> None:
    script = tmp_path / "stuck_service.py"
    script.write_text(STUCK_SERVICE)
    subprocess.Popen(
        [sys.executable, str(script), str(port), str(pid_file), str(sockets)],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
    )
    _wait_for_pid(pid_file)


def _queued_clients(port: int, count: int) -> list[socket.socket]:
    """Clients the kernel accepted into the old service's queue, each with its request sent."""
    conns = []
    for _ in range(count):
        conn = socket.create_connection(("127.0.0.1", port), timeout=10)
        conn.sendall(b"GET /health HTTP/1.0\r\n\r\n")
        conns.append(conn)
    return conns


def _answer(conn: socket.socket) -> str:
    try:
        with conn:
            answer = conn.recv(100)
    except (ConnectionResetError, TimeoutError):
        return "reset"
    return "new" if answer.startswith(b"HTTP/1.0 200") else "reset"


@pytest.mark.parametrize("engine", ["builtin", "haproxy"])
def test_clients_the_old_service_never_accepted_are_carried_not_reset(
    opskit: Invoke,
    tmp_path: Path,
    health_http: HealthHttp,  # noqa: F811
    engine: str,
) -> None:
    """Clients queued at a stuck old service when it is stopped: the bridge answers them all, none is reset."""
    path, pid_file, port = _setup(tmp_path, health_http.port, engine=engine)
    _start_stuck(tmp_path, pid_file, port, sockets=1)
    try:
        waiting = _queued_clients(port, 5)
        result = opskit("run", str(path), expect=ExitCode.OK)

        assert [_answer(conn) for conn in waiting] == ["new"] * 5
        assert "holds the old service's own listening socket" in result.stdout + result.stderr
    finally:
        _clean_up(pid_file, tmp_path / "bridge.json")


def test_an_old_service_on_several_sockets_is_waited_for_by_binding(
    opskit: Invoke,
    tmp_path: Path,
    health_http: HealthHttp,  # noqa: F811
) -> None:
    """SO_REUSEPORT sockets cannot all be held: the bridge binds the moment they close, and carries clients."""
    path, pid_file, port = _setup(tmp_path, health_http.port)
    _start_stuck(tmp_path, pid_file, port, sockets=2)
    try:
        result = opskit("run", str(path), expect=ExitCode.OK)

        assert "holds the old service's own listening socket" not in result.stdout + result.stderr
        assert _ask(port) == "new"
    finally:
        _clean_up(pid_file, tmp_path / "bridge.json")


# An old service that stops gracefully, as `nginx -s quit` does: on SIGTERM it closes its listener and
# goes on draining (here: 5 s) before it exits.
GRACEFUL_SERVICE = """
import os, signal, socket, sys, time
server = socket.create_server(("127.0.0.1", int(sys.argv[1])))
# Only the listener closes on SIGTERM: a client it is answering right then still gets its answer.
signal.signal(signal.SIGTERM, lambda signum, frame: server.close())
with open(sys.argv[2] + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.replace(sys.argv[2] + ".tmp", sys.argv[2])
while True:
    try:
        conn, _ = server.accept()
    except OSError:
        time.sleep(5)
        sys.exit(0)
    conn.recv(100)
    conn.sendall(b"old\\n")
    conn.close()
"""


def test_a_service_that_closes_its_port_and_drains_on_hands_over_without_a_refusal(
    opskit: Invoke,
    tmp_path: Path,
    health_http: HealthHttp,  # noqa: F811
) -> None:
    """A graceful stop (listener closed, process still draining): the bridge serves at once, nobody refused."""
    path, pid_file, port = _setup(tmp_path, health_http.port)
    script = tmp_path / "graceful_service.py"
    script.write_text(GRACEFUL_SERVICE)
    subprocess.Popen(
        [sys.executable, str(script), str(port), str(pid_file)],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
    )
    old_pid = _wait_for_pid(pid_file)
    clients = ClientLoop(port, every_s=0.001, limit_s=30)
    seen = clients.seen
    try:
        result = opskit("run", str(path), expect=ExitCode.OK)
        clients.stop()

        assert seen["refused"] == 0, seen
        assert seen["new"] > 0, seen
        assert "holds the old service's own listening socket" in result.stdout + result.stderr
        state = Path(f"/proc/{old_pid}/stat").read_text().rpartition(")")[2].split()[0]
        assert state != "Z", "the bridge waited for the old service to exit, not for its port"
    finally:
        clients.stop()
        _clean_up(pid_file, tmp_path / "bridge.json")


@pytest.mark.sshd
def test_haproxy_over_ssh_starts_on_a_port_it_had_to_bind_itself(
    opskit: Invoke,
    tmp_path: Path,
    sshd: Sshd,
    health_http: HealthHttp,  # noqa: F811
) -> None:
    """An old service on two SO_REUSEPORT sockets cannot be held: HAProxy still starts on the port bound for it."""
    _, pid_file, port = _setup(tmp_path, health_http.port, engine="haproxy")
    stats = tmp_path / "old-host" / "bridge.json"
    path = write(
        tmp_path,
        REMOTE_RUNBOOK.format(
            ssh_port=sshd.port, user=sshd.user, key=sshd.client_key, known=sshd.known_hosts,
            port=port, target=health_http.port, stats=stats, pid_file=pid_file, fail="",
            engine="haproxy",
        ),
        name="remote.yaml",
    )  # fmt: skip
    _start_stuck(tmp_path, pid_file, port, sockets=2)
    try:
        opskit("run", str(path), expect=ExitCode.OK)

        assert _ask(port) == "new"
        log = (tmp_path / "old-host" / "bridge.log").read_text()
        assert "holding the listening socket" not in log, log
    finally:
        _clean_up(pid_file, stats)


SLOW_STOP_RUNBOOK = """
    name: slow-stop
    steps:
      - id: bridge
        uses: proxy.start
        with:
          listen: "127.0.0.1:{port}"
          to: "127.0.0.1:{target}"
          stats_file: "{stats}"
          bind_timeout: {bind_timeout}
          stop_old: "touch '{pid_file}.stopping'; sleep {sleep_s}; kill -TERM $(cat '{pid_file}')"
"""


def _slow_stop(
    tmp_path: Path, target: int, *, sleep_s: int, bind_timeout: str
) -> tuple[Path, Path, int]:
    """The old service running, and a runbook whose stop_old takes `sleep_s` before it stops it."""
    _, pid_file, port = _setup(tmp_path, target)
    text = SLOW_STOP_RUNBOOK.format(
        port=port, target=target, stats=tmp_path / "bridge.json", pid_file=pid_file,
        sleep_s=sleep_s, bind_timeout=bind_timeout,
    )  # fmt: skip
    _start_old(tmp_path, pid_file, port)
    return write(tmp_path, text, name="slow.yaml"), pid_file, port


def test_a_stop_old_slower_than_bind_timeout_still_hands_the_port_over(
    opskit: Invoke,
    tmp_path: Path,
    health_http: HealthHttp,  # noqa: F811
) -> None:
    """bind_timeout counts after stop_old: a 2 s stop with bind_timeout 1s still ends with the bridge serving."""
    path, pid_file, port = _slow_stop(tmp_path, health_http.port, sleep_s=2, bind_timeout="1s")
    try:
        opskit("run", str(path), expect=ExitCode.OK)

        assert _ask(port) == "new"
    finally:
        _clean_up(pid_file, tmp_path / "bridge.json")


def _port_waiters(port: int) -> list[int]:
    """Processes of proxy.start's helper that wait for this port (its command line names it)."""
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if b"listeners_when_free" in b" ".join(argv) and str(port).encode() in argv:
                found.append(int(entry.name))
    return found


def test_the_helper_holding_the_port_dies_with_opskit(
    opskit_proc: Callable[..., subprocess.Popen[str]],
    tmp_path: Path,
    health_http: HealthHttp,  # noqa: F811
) -> None:
    """kill -9 of opskit while stop_old runs: the helper holding the old socket ends too, nothing takes the port."""
    path, pid_file, port = _slow_stop(tmp_path, health_http.port, sleep_s=30, bind_timeout="60s")
    proc = opskit_proc("run", str(path))
    try:
        stopping = Path(f"{pid_file}.stopping")
        deadline = time.monotonic() + 20
        while not stopping.exists() and time.monotonic() < deadline:  # bounded: 20 s
            time.sleep(0.05)
        assert stopping.exists(), "stop_old never started"
        assert _port_waiters(port), "no helper holds the port while stop_old runs"
        proc.kill()
        proc.communicate(timeout=10)
        deadline = time.monotonic() + 5
        while _port_waiters(port) and time.monotonic() < deadline:  # bounded: 5 s
            time.sleep(0.05)

        assert _port_waiters(port) == []
        _kill_old(pid_file)
        time.sleep(0.3)
        assert _ask(port) == "refused"  # nothing of opskit's took the port after it died
    finally:
        _clean_up(pid_file, tmp_path / "bridge.json")

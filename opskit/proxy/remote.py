"""The bridge on the old host, over SSH: copy the single-file forwarder, start it detached, read, stop.

Everything goes through a `Transport` (one SSH connection per host per run), so the same code runs
against `LocalTransport` too. The forwarder writes its own pid file and stats file on the host; opskit
only ever reads them back with `cat`, and signals the pid after checking it is really the forwarder.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from opskit.errors import Blocked, Negative
from opskit.proxy.bridge import FORWARDER_PATH, forwarder_argv
from opskit.proxy.config import BridgeConfig
from opskit.proxy.stats import BridgeStats, parse
from opskit.transport.base import Transport

REMOTE_DIR = ".opskit/bridge"  # relative to the login directory, private (0700)
START_TIMEOUT_S = 15.0
HELD_FD = 3  # HAProxy on an old host starts on the port forwarder.py held for it: `bind fd@3`
COMMAND_TIMEOUT_S = 20.0

# Runs on the host with its python3: can the bridge listen there, and does the new host answer from
# there? One line of JSON; never binds or connects anywhere but the two given addresses.
_PREFLIGHT = r"""
import json, socket, sys
lh, lp, th, tp = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
out = {}
s = socket.socket(socket.AF_INET6 if ":" in lh else socket.AF_INET)
try:
    s.bind((lh, lp)); out["listen_free"] = True
except OSError as e:
    out["listen_free"] = False; out["listen_error"] = e.strerror or str(e)
finally:
    s.close()
try:
    socket.create_connection((th, tp), timeout=3).close(); out["target_answers"] = True
except OSError as e:
    out["target_answers"] = False; out["target_error"] = e.strerror or str(e)
print(json.dumps(out))
"""


@dataclass(frozen=True)
class RemoteBridge:
    """Where a bridge on a host keeps its files, and its pid once started."""

    host: str
    directory: str
    stats_file: str
    pid_file: str
    log_file: str
    pid: int | None = None
    haproxy_socket: str | None = None  # set when HAProxy (not the forwarder) carries the bridge


@dataclass(frozen=True)
class Preflight:
    """What a dry-run learns on the host: python, a free listen port, a target that answers."""

    python: bool
    listen_free: bool
    target_answers: bool
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def layout(host: str, port: int, stats_file: str | None = None) -> RemoteBridge:
    """The file names a bridge on `port` uses on the host (next to `stats_file` when given)."""
    if stats_file:
        directory, _, name = stats_file.rpartition("/")
        base = f"{directory or '.'}/{name.removesuffix('.json')}"
        return RemoteBridge(host, directory or ".", stats_file, f"{base}.pid", f"{base}.log")
    base = f"{REMOTE_DIR}/bridge-{port}"
    return RemoteBridge(host, REMOTE_DIR, f"{base}.json", f"{base}.pid", f"{base}.log")


def _run(
    transport: Transport, command: str, what: str, timeout_s: float = COMMAND_TIMEOUT_S
) -> str:
    result = transport.run(command, timeout_s=timeout_s)
    if not result.ok:
        detail = (
            result.stderr.strip() or result.stdout.strip() or f"exit {result.rc}"
        ).splitlines()
        raise Negative(f"{transport.label}: {what} failed: {detail[-1]}")
    return result.stdout


def preflight(transport: Transport, config: BridgeConfig, *, python: str = "python3") -> Preflight:
    """Check, starting nothing, that the bridge could start on the host."""
    lhost, lport = config.listen_host_port
    thost, tport = config.to_host_port
    args = " ".join(shlex.quote(str(a)) for a in (lhost, lport, thost, tport))
    result = transport.run(
        f"{shlex.quote(python)} -c {shlex.quote(_PREFLIGHT)} {args}", timeout_s=COMMAND_TIMEOUT_S
    )
    if not result.ok:
        detail = (result.stderr.strip().splitlines() or [f"exit {result.rc}"])[-1]
        return Preflight(
            False, False, False, (f"{python} does not run on {transport.label}: {detail}",)
        )
    found = json.loads(result.stdout.strip().splitlines()[-1])
    problems = []
    if not found["listen_free"]:
        problems.append(
            f"{config.listen} is not free on {transport.label}: {found.get('listen_error')}"
        )
    if not found["target_answers"]:
        problems.append(
            f"{config.to} does not answer from {transport.label}: {found.get('target_error')}"
        )
    return Preflight(True, found["listen_free"], found["target_answers"], tuple(problems))


def read_stats_dated(
    transport: Transport, stats_file: str, *, timeout_s: float = COMMAND_TIMEOUT_S
) -> tuple[BridgeStats, datetime]:
    """The bridge's stats file on the host and the host's clock when it was read (so the file's age
    does not depend on clock skew); Blocked when it is missing, unreadable or not a stats file."""
    result = transport.run(f"date -u +%s.%N && cat {shlex.quote(stats_file)}", timeout_s=timeout_s)
    label = f"{transport.label}:{stats_file}"
    if not result.ok:
        detail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise Blocked(f"{label}: no stats file (is the bridge running?): {detail}")
    clock_line, _, text = result.stdout.partition("\n")
    try:
        host_now = datetime.fromtimestamp(float(clock_line.strip()), UTC)
    except ValueError:
        host_now = datetime.now(UTC)
    return parse(text, label), host_now


def read_stats(transport: Transport, stats_file: str) -> BridgeStats:
    """The bridge's stats file on the host; Blocked when it is missing, unreadable or not valid."""
    return read_stats_dated(transport, stats_file)[0]


def _read_pid(transport: Transport, pid_file: str) -> int | None:
    result = transport.run(f"cat {shlex.quote(pid_file)}", timeout_s=COMMAND_TIMEOUT_S)
    text = result.stdout.strip()
    return int(text) if result.ok and text.isdigit() else None


def start(
    transport: Transport,
    config: BridgeConfig,
    *,
    python: str = "python3",
    stats_file: str | None = None,
    once_retrying: Callable[[], None] | None = None,
) -> RemoteBridge:
    """Copy forwarder.py to the host, start it detached (setsid nohup), and wait until it runs.

    Files go next to `stats_file` on the host, or under ~/.opskit/bridge/ when it is not given.
    `once_retrying` runs once the forwarder waits for the port (holding the old service's own socket,
    or retrying the bind every 50 us): it stops the old service. If it raises, the forwarder is
    killed before it serves and the error goes on.
    """
    where = layout(transport.label, config.listen_host_port[1], stats_file)
    remote = dataclasses.replace(
        config,
        stats_file=Path(where.stats_file),
        pid_file=Path(where.pid_file),
        log_file=Path(where.log_file),
    )
    q = shlex.quote
    _run(transport, f"mkdir -p {q(where.directory)} && chmod 700 {q(where.directory)}", "mkdir")
    script = _copy_forwarder(transport, where)
    argv = " ".join(q(a) for a in forwarder_argv(remote))
    _launch(transport, where, f"{q(python)} {q(script)} {argv}", "the forwarder", once_retrying)
    # The forwarder waits up to --bind-retry for the old service to free the port, then starts.
    wait_s = START_TIMEOUT_S + config.bind_retry_s
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        pid = _read_pid(transport, where.pid_file)
        if pid is not None:
            try:
                stats = read_stats(transport, where.stats_file)
            except Blocked:
                stats = None
            if stats is not None and stats.pid == pid and stats.state == "running":
                return dataclasses.replace(where, pid=pid)
        time.sleep(0.1)
    log = transport.run(f"tail -n 3 {q(where.log_file)}", timeout_s=COMMAND_TIMEOUT_S).stdout
    raise Negative(
        f"{transport.label}: the bridge on {config.listen} did not start within "
        f"{wait_s:g}s: {' | '.join(log.strip().splitlines()) or 'no log'}"
    )


def _copy_forwarder(transport: Transport, where: RemoteBridge) -> str:
    """forwarder.py, copied next to the bridge's files on the host (the bridge, or HAProxy's port holder)."""
    script = f"{where.directory}/forwarder.py"
    transport.put_file(FORWARDER_PATH, script, mode=0o600)
    return script


def _launch(
    transport: Transport,
    where: RemoteBridge,
    command: str,
    what: str,
    once_retrying: Callable[[], None] | None,
) -> None:
    """Start `command` detached on the host; with once_retrying, run it once the port is waited for.

    setsid + nohup + every stream redirected: the bridge must outlive this SSH session. setsid and
    nohup exec the command: $! is its pid, to abandon it before it listens. The log's length before,
    so only this start's lines are read. If once_retrying raises, the command is killed (and what it
    may have started already, by its pid file) and the error goes on."""
    q = shlex.quote
    launched = _run(
        transport,
        f"rm -f {q(where.pid_file)}; n=$(cat {q(where.log_file)} 2>/dev/null | wc -l); "
        f"setsid nohup {command} </dev/null >>{q(where.log_file)} 2>&1 & "
        'echo "$! $n"',
        f"starting {what}",
    ).split()
    if once_retrying is None:
        return
    try:
        _wait_retrying(transport, where, int(launched[-1]) if launched else 0)
        once_retrying()
    except BaseException:
        if launched and launched[0].isdigit():  # SIGTERM ends it, bound or not
            transport.run(
                f"kill -TERM {launched[0]} 2>/dev/null; sleep 0.2; "
                f"test -s {q(where.pid_file)} && kill -TERM $(cat {q(where.pid_file)}) 2>/dev/null",
                timeout_s=COMMAND_TIMEOUT_S,
            )
        raise


def _wait_retrying(transport: Transport, where: RemoteBridge, log_lines: int) -> None:
    """Return once the forwarder retries its bind (or already listens): the old service may stop."""
    from opskit.proxy.forwarder import WAITING_FOR_PORT  # noqa: PLC0415

    q = shlex.quote
    ready = (
        f"test -s {q(where.pid_file)} || "
        f"tail -n +{log_lines + 1} {q(where.log_file)} | grep -qF {q(WAITING_FOR_PORT)}"
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    while not transport.run(ready, timeout_s=COMMAND_TIMEOUT_S).ok:
        if time.monotonic() > deadline:
            log = transport.run(f"tail -n 3 {q(where.log_file)}", timeout_s=COMMAND_TIMEOUT_S)
            raise Negative(
                f"{transport.label}: the bridge did not start waiting for its port within "
                f"{START_TIMEOUT_S:g}s: {' | '.join(log.stdout.strip().splitlines()) or 'no log'}"
            )
        time.sleep(0.02)


def stop(
    transport: Transport,
    *,
    stats_file: str,
    pid_file: str | None = None,
    pid: int | None = None,
    timeout_s: float = 30.0,
) -> BridgeStats | None:
    """SIGTERM the forwarder on the host (only if that pid really runs forwarder.py); its final stats."""
    pid = (_read_pid(transport, pid_file) if pid_file else None) or pid
    if pid is None:
        stats = read_stats(transport, stats_file)
        if stats.state == "stopped" or stats.pid is None:
            return stats
        pid = stats.pid
    alive = f"grep -q forwarder /proc/{pid}/cmdline 2>/dev/null"
    if not transport.run(alive, timeout_s=COMMAND_TIMEOUT_S).ok:
        return read_stats(transport, stats_file)  # already gone
    _run(transport, f"kill -TERM {pid}", f"signalling the bridge (pid {pid})")
    deadline = time.monotonic() + timeout_s
    while transport.run(alive, timeout_s=COMMAND_TIMEOUT_S).ok:
        if time.monotonic() > deadline:
            transport.run(f"kill -TERM {pid}", timeout_s=COMMAND_TIMEOUT_S)  # second: close now
            time.sleep(1.0)
            if transport.run(alive, timeout_s=COMMAND_TIMEOUT_S).ok:
                raise Negative(
                    f"{transport.label}: the bridge (pid {pid}) still runs after SIGTERM"
                )
            break
        time.sleep(0.1)
    return read_stats(transport, stats_file)


# Runs on the host with its python3: one `show stat` and one `show sess` from the HAProxy stats socket,
# as one line of JSON (HAProxy has no stats file there; opskit reads its socket over SSH instead).
_HAPROXY_ASK = r"""
import json, socket, sys
out = {}
for command in ("show stat", "show sess"):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(sys.argv[1])
    s.sendall(command.encode() + b"\n")
    chunks = []
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
    s.close()
    out[command] = b"".join(chunks).decode("utf-8", "replace")
print(json.dumps(out))
"""


def read_haproxy(transport: Transport, socket_path: str, *, python: str = "python3") -> BridgeStats:
    """One live reading of a HAProxy stats socket on the host; Blocked when it does not answer."""
    from opskit.proxy.haproxy_stats import from_answers  # noqa: PLC0415

    q = shlex.quote
    label = f"{transport.label}:{socket_path}"
    result = transport.run(
        f"{q(python)} -c {q(_HAPROXY_ASK)} {q(socket_path)}", timeout_s=COMMAND_TIMEOUT_S
    )
    if not result.ok:
        detail = (result.stderr.strip().splitlines() or [f"exit {result.rc}"])[-1]
        raise Blocked(f"{label}: no answer from the HAProxy stats socket ({detail})")
    try:
        answers = json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError) as exc:
        raise Blocked(f"{label}: unreadable answer from the stats socket: {exc}") from None
    return from_answers(answers["show stat"], answers["show sess"], label)


def has_haproxy(transport: Transport) -> str | None:
    """The path of haproxy on the host, or None when it is not installed."""
    result = transport.run(
        "command -v haproxy || ls /usr/sbin/haproxy /usr/local/sbin/haproxy 2>/dev/null",
        timeout_s=COMMAND_TIMEOUT_S,
    )
    found = result.stdout.strip().splitlines()
    return found[0] if result.ok and found else None


def start_haproxy(
    transport: Transport,
    config: BridgeConfig,
    *,
    python: str = "python3",
    stats_file: str | None = None,
    once_retrying: Callable[[], None] | None = None,
) -> RemoteBridge:
    """Render haproxy.cfg, copy it to the host and start HAProxy there as a daemon (-D).

    For an old host that has HAProxy: it outlives SSH and opskit, and carries more than one Python
    core. Its counters are read live from its stats socket over SSH (`read_haproxy`).
    `once_retrying` (stop_old) runs once forwarder.py holds the port for it (the old service's own
    socket, or bound the moment it is free); HAProxy then starts on that socket (`bind fd@3`).
    """
    import tempfile  # noqa: PLC0415

    from opskit.proxy.haproxy import (  # noqa: PLC0415
        UNIX_PATH_MAX,
        fitting_maxconn,
        render_config,
    )

    binary = has_haproxy(transport)
    if binary is None:
        raise Blocked(f"{transport.label}: haproxy is not installed there; use engine: builtin")
    where = layout(transport.label, config.listen_host_port[1], stats_file)
    base = where.stats_file.removesuffix(".json")
    socket_path, cfg = f"{base}.haproxy.sock", f"{base}.haproxy.cfg"
    if len(socket_path) > UNIX_PATH_MAX:
        raise Negative(
            f"{transport.label}: {socket_path} is too long for a unix socket; "
            "give a shorter stats_file path"
        )
    q = shlex.quote
    _run(transport, f"mkdir -p {q(where.directory)} && chmod 700 {q(where.directory)}", "mkdir")
    limit = _run(transport, "ulimit -Hn", "reading the file limit").strip()
    nofile = int(limit) if limit.isdigit() else 1 << 20
    maxconn = fitting_maxconn(config.max_connections, nofile)
    text = render_config(config, socket_path=socket_path, maxconn=maxconn, logs=False)
    with tempfile.TemporaryDirectory(prefix="opskit-haproxy-") as tmp:
        local = Path(tmp) / "haproxy.cfg"
        local.write_text(text, encoding="utf-8")
        transport.put_file(local, cfg, mode=0o600)
        # checked with its address: `bind fd@3` only parses where fd 3 is a socket
        _run(transport, f"{q(binary)} -c -q -f {q(cfg)}", f"checking {cfg}")
        if once_retrying is not None:
            held = dataclasses.replace(config, listen_fd=HELD_FD)
            local.write_text(
                render_config(held, socket_path=socket_path, maxconn=maxconn, logs=False),
                encoding="utf-8",
            )
            transport.put_file(local, cfg, mode=0o600)
    daemon = f"{q(binary)} -D -p {q(where.pid_file)} -f {q(cfg)}"
    _run(transport, f"rm -f {q(socket_path)}", "removing the old stats socket")
    if once_retrying is None:
        _run(
            transport,
            f"rm -f {q(where.pid_file)}; ulimit -n $(ulimit -Hn); "
            f"{daemon} </dev/null >>{q(where.log_file)} 2>&1",
            "starting haproxy",
        )
    else:
        script = _copy_forwarder(transport, where)
        hold = (
            f"{q(python)} {q(script)} --hold-then-exec {q(config.listen)} "
            f"{config.bind_retry_s:g}s {HELD_FD} {daemon}"
        )
        _launch(transport, where, f"sh -c {q('ulimit -n $(ulimit -Hn); exec ' + hold)}",
                "haproxy", once_retrying)  # fmt: skip
    wait_s = START_TIMEOUT_S + (config.bind_retry_s if once_retrying is not None else 0.0)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        pid = _read_pid(transport, where.pid_file)
        if pid is not None:
            try:
                read_haproxy(transport, socket_path, python=python)
            except Blocked:
                pass
            else:
                return dataclasses.replace(where, pid=pid, haproxy_socket=socket_path)
        time.sleep(0.1)
    raise Negative(
        f"{transport.label}: haproxy on {config.listen} did not answer on {socket_path} "
        f"within {wait_s:g}s"
    )


def stop_haproxy(
    transport: Transport, *, pid_file: str, pid: int | None = None, timeout_s: float = 30.0
) -> bool:
    """Soft-stop HAProxy on the host (SIGUSR1: stop accepting, let sessions finish until
    hard-stop-after); True once it has exited, False when it was not running."""
    pid = _read_pid(transport, pid_file) or pid
    if pid is None:
        return False
    alive = f"grep -q haproxy /proc/{pid}/cmdline 2>/dev/null"
    if not transport.run(alive, timeout_s=COMMAND_TIMEOUT_S).ok:
        return False
    _run(transport, f"kill -USR1 {pid}", f"signalling haproxy (pid {pid})")
    deadline = time.monotonic() + timeout_s
    while transport.run(alive, timeout_s=COMMAND_TIMEOUT_S).ok:
        if time.monotonic() > deadline:
            _run(transport, f"kill -TERM {pid}", f"stopping haproxy (pid {pid})")
            time.sleep(1.0)
            if transport.run(alive, timeout_s=COMMAND_TIMEOUT_S).ok:
                raise Negative(f"{transport.label}: haproxy (pid {pid}) still runs after SIGTERM")
            break
        time.sleep(0.1)
    transport.run(f"rm -f {shlex.quote(pid_file)}", timeout_s=COMMAND_TIMEOUT_S)
    return True

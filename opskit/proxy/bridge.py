"""Start, stop and read a bridge, whatever its engine.

The built-in engine is `forwarder.py`, a single standard-library file: it runs in this process
(`run_builtin`), as a detached local process (`spawn_builtin`), or on an old host after an SFTP copy
(`FORWARDER_PATH` + `forwarder_argv`). The HAProxy engine and HTTP mode live in `opskit.proxy.haproxy`
and `opskit.proxy.http_mode`, imported only when asked for; each exposes `run(config)` and `spawn(config)`.
"""

from __future__ import annotations

import importlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opskit.errors import Blocked, Negative, UsageError
from opskit.proxy import stats
from opskit.proxy.config import BridgeConfig, split_host_port
from opskit.proxy.detach import log_tail, popen_detached
from opskit.proxy.listeners import refuse_taken
from opskit.proxy.stats import BridgeStats

__all__ = [
    "FORWARDER_PATH",
    "BridgeConfig",
    "Restarted",
    "forwarder_argv",
    "is_dead",
    "probe",
    "restart",
    "run",
    "run_builtin",
    "spawn",
    "spawn_builtin",
    "status",
    "stop",
    "target_problem",
]

FORWARDER_PATH = Path(__file__).with_name("forwarder.py")
# forwarder.PROBE_LINE (not imported: that is 1000 lines): connections that send it are not counted
PROBE_LINE = b"OPSKIT-BRIDGE-PROBE/1\r\n"
_OUR_PROCESSES = ("forwarder", "opskit", "haproxy", "mitm")  # what a pid we signal must be running


def _seconds(value: float) -> str:
    return f"{value:g}s"


def forwarder_argv(config: BridgeConfig) -> list[str]:
    """The arguments after `python3 forwarder.py` that make it this bridge (locally or on the old host)."""
    argv = ["--listen", config.listen, "--to", config.to, "--stats-file", str(config.stats_file)]
    if config.pid_file is not None:
        argv += ["--pid-file", str(config.pid_file)]
    argv += [
        "--max-connections",
        str(config.max_connections),
        "--connect-timeout",
        _seconds(config.connect_timeout_s),
        "--half-close-timeout",
        _seconds(config.half_close_timeout_s),
        "--drain-timeout",
        _seconds(config.drain_timeout_s),
        "--stats-interval",
        _seconds(config.stats_interval_s),
        "--max-per-client",
        str(config.max_per_client),
        "--handshake-timeout",
        _seconds(config.handshake_timeout_s),
    ]
    if config.idle_timeout_s is not None:
        argv += ["--idle-timeout", _seconds(config.idle_timeout_s)]
    if config.udp:
        argv += ["--udp"]
    if config.proxy_protocol is not None:
        argv += ["--proxy-protocol", config.proxy_protocol]
    if config.nudge_after_s is not None:
        argv += ["--nudge-after", _seconds(config.nudge_after_s)]
    if config.nudge_not_before is not None:
        argv += ["--nudge-not-before", config.nudge_not_before]
    if config.bind_retry_s > 0:
        argv += ["--bind-retry", _seconds(config.bind_retry_s)]
    return argv


def _validate(config: BridgeConfig, *, holds_listener: bool = False) -> None:
    for name, value in (("--listen", config.listen), ("--to", config.to)):
        try:
            split_host_port(value)
        except ValueError as exc:
            raise UsageError(f"{name}: {exc}") from None
    if config.mode == "http" and config.proxy_protocol is not None:
        raise UsageError(
            "--proxy-protocol is for --mode tcp (HTTP mode adds X-Forwarded-For instead)"
        )
    if config.max_connections < 1:
        raise UsageError("--max-connections must be at least 1")
    from opskit.proxy.forwarder import loops_back, running_owner  # noqa: PLC0415 - stdlib only

    looping = loops_back(config.listen_host_port, config.to_host_port)
    if looping is not None:
        raise UsageError(
            f"--to {config.to} ({looping}) is this bridge's own listener {config.listen}: "
            "give the new host's address"
        )

    owner = running_owner(str(config.stats_file))
    if owner is not None:
        raise Blocked(
            f"{config.stats_file} belongs to the bridge that runs as pid {owner}: stop it first "
            f"(opskit proxy stop --stats-file {config.stats_file}) or give another --stats-file"
        )
    if not holds_listener:  # a socket handed over by proxy.start is ours, not an orphan's
        refuse_taken(config.listen, *config.listen_host_port)


def _engine_module(config: BridgeConfig) -> Any:
    name = "opskit.proxy.http_mode" if config.mode == "http" else "opskit.proxy.haproxy"
    return importlib.import_module(name)


def run(config: BridgeConfig) -> BridgeStats | None:
    """Run the bridge in the foreground until SIGTERM or Ctrl-C; its final stats."""
    _validate(config)
    if config.mode == "tcp" and config.engine == "builtin":
        return run_builtin(config)
    result: BridgeStats | None = _engine_module(config).run(config)
    return result


def run_builtin(config: BridgeConfig) -> BridgeStats:
    """The built-in engine in this process (uvloop when importable) until SIGTERM or Ctrl-C.

    Its log lines go to stderr; the final table is left to the caller (the final stats are returned).
    """
    from opskit.proxy import forwarder  # noqa: PLC0415 - argparse and asyncio only when a bridge runs

    _validate(config)
    options = forwarder.Options(
        forwarder.build_parser().parse_args([*forwarder_argv(config), "--quiet"])
    )
    code = forwarder.run(options, log=sys.stderr, out=sys.stdout)
    final = status(config.stats_file)
    if code != 0:
        raise Blocked(
            f"bridge on {config.listen} did not start: {final.ended or 'see the log above'}"
        )
    return final


def spawn(
    config: BridgeConfig, *, python: str = sys.executable, listen_sock: socket.socket | None = None
) -> int:
    """Start the bridge as a detached process that outlives this one; its pid.

    `listen_sock`: a socket already listening on config.listen (tcp mode), handed to the engine."""
    _validate(config, holds_listener=listen_sock is not None)
    if config.mode == "tcp" and config.engine == "builtin":
        return spawn_builtin(config, python=python, listen_sock=listen_sock)
    module = _engine_module(config)
    if not hasattr(module, "spawn"):
        raise UsageError(
            f"--detach is not available for --mode {config.mode} --engine {config.engine}"
        )
    if listen_sock is not None:
        pid: int = module.spawn(config, listen_sock=listen_sock)
    else:
        pid = module.spawn(config)
    return pid


def spawn_builtin(
    config: BridgeConfig,
    *,
    python: str = sys.executable,
    ready_timeout_s: float = 10.0,
    listen_sock: socket.socket | None = None,
) -> int:
    """The built-in engine as a detached process (own session, log in config.log_file); its pid.

    Returns once the stats file says this process is running; Blocked (exit 3) when it exited instead
    (port in use), Negative when it did not report in time. `listen_sock`: a socket already listening
    on config.listen, handed to the process (clients queue in its backlog while the process starts).
    """
    _validate(config, holds_listener=listen_sock is not None)
    argv = [python, str(FORWARDER_PATH), *forwarder_argv(config)]
    fds: tuple[int, ...] = ()
    if listen_sock is not None:
        fds = (listen_sock.fileno(),)
        argv += ["--listen-fd", str(fds[0])]
    proc, log_file = popen_detached(argv, config, pass_fds=fds)
    deadline = time.monotonic() + ready_timeout_s
    while time.monotonic() < deadline:
        exited = proc.poll() is not None
        try:
            current = stats.load(config.stats_file)
        except Blocked:
            current = None
        mine = current is not None and current.pid == proc.pid
        if exited:
            ended = current.ended if current is not None and mine else None
            raise Blocked(f"bridge on {config.listen} did not start: {ended or log_tail(log_file)}")
        if current is not None and mine and current.state == "running":
            return proc.pid
        time.sleep(0.05)
    proc.terminate()  # a bridge nobody was told about must not keep the port
    raise Negative(f"bridge on {config.listen} did not report running within {ready_timeout_s:g}s")


@dataclass(frozen=True)
class Restarted:
    """A hot restart: the process that drains, the one that accepts now, the UDP flows it restarts."""

    old_pid: int
    new_pid: int
    # --udp: flows are not handed over (a client's next datagram leaves the new process from a new
    # source port, so the new host sees a new flow); None when the bridge carries TCP only.
    udp_flows_restarted: int | None


def restart(stats_file: Path, *, ready_timeout_s: float = 10.0) -> Restarted:
    """Hot restart of a local detached built-in bridge.

    The new forwarder process takes the listening sockets over (`--takeover`), so no client is
    refused; the old one drains its bridged connections and reports them to the new one, which
    writes the stats file from then on. UDP flows are not handed over: each UDP client's next
    datagram opens a new flow toward the new host. Blocked when there is no such bridge running here.
    """
    current = stats.load(stats_file)
    if current.engine != "builtin" or current.state != "running" or current.pid is None:
        raise Blocked(
            f"{stats_file}: no running built-in bridge to restart "
            f"(engine {current.engine}, state {current.state})"
        )
    old = current.pid
    try:
        argv = Path(f"/proc/{old}/cmdline").read_bytes().decode().split("\0")[:-1]
    except OSError:
        raise Blocked(f"the bridge (pid {old}) is not running on this host") from None
    if not any(arg.endswith("forwarder.py") for arg in argv[:2]):
        raise Blocked(
            f"the bridge (pid {old}) runs inside `opskit proxy start`, not as a detached "
            "forwarder: only a bridge started with --detach can hand its clients over"
        )
    if "--takeover" in argv:  # restarted before: drop the old hand-over
        at = argv.index("--takeover")
        del argv[at : at + 2]
    log_file = _log_of(old, stats_file)
    fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        proc = subprocess.Popen(
            [*argv, "--takeover", str(old)],
            stdin=subprocess.DEVNULL,
            stdout=fd,
            stderr=fd,
            start_new_session=True,  # Ctrl-C in this terminal must not reach the bridge
        )
    finally:
        os.close(fd)
    deadline = time.monotonic() + ready_timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise Blocked(f"the new bridge did not take over: {log_tail(log_file)}")
        try:
            now = stats.load(stats_file)
        except Blocked:
            now = None
        if now is not None and now.pid == proc.pid and now.state == "running":
            udp = (current.udp_active_flows or 0) if "udp" in current.carries else None
            return Restarted(old, proc.pid, udp)
        time.sleep(0.05)
    raise Negative(f"the new bridge (pid {proc.pid}) did not report within {ready_timeout_s:g}s")


def _log_of(pid: int, stats_file: Path) -> Path:
    """Where the running bridge writes its log (its stderr), so the new one appends to the same file."""
    try:
        target = Path(os.readlink(f"/proc/{pid}/fd/2"))
    except OSError:
        target = None
    if target is not None and target.is_file():
        return target
    return stats_file.with_suffix(".log")


def status(stats_file: Path) -> BridgeStats:
    """The bridge's current stats; Blocked (exit 3) when there is no stats file."""
    return stats.load(stats_file)


def is_dead(current: BridgeStats) -> bool:
    """True when the stats file says running but its process is gone (killed, crashed, rebooted)."""
    from opskit.proxy.forwarder import pid_alive  # noqa: PLC0415 - stdlib only

    return current.state != "stopped" and current.pid is not None and not pid_alive(current.pid)


def _pid_from(stats_file: Path | None, pid_file: Path | None) -> int:
    if pid_file is not None:
        try:
            return int(pid_file.read_text().strip())
        except FileNotFoundError:
            raise Blocked(f"{pid_file}: no pid file (is the bridge running?)") from None
        except (OSError, ValueError) as exc:
            raise Blocked(f"{pid_file}: cannot read a pid: {exc}") from None
    if stats_file is None:
        raise UsageError("give --stats-file or --pid-file")
    current = stats.load(stats_file)
    if current.pid is None or current.state == "stopped":
        raise Blocked(f"{stats_file}: the bridge is not running (state {current.state})")
    return current.pid


def _is_alive(pid: int) -> bool:
    from opskit.proxy.forwarder import pid_alive  # noqa: PLC0415 - stdlib only

    return pid_alive(pid)


def _is_ours(pid: int) -> bool:
    try:
        cmdline = (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return False
    return any(word in cmdline for word in _OUR_PROCESSES)


def stop(
    *, stats_file: Path | None = None, pid_file: Path | None = None, timeout_s: float = 30.0
) -> BridgeStats | None:
    """SIGTERM the bridge, wait until it exits (a second SIGTERM closes what is left); its final stats.

    Blocked when it is not running; Negative when it is still running after timeout_s (+ 5 s grace)
    or runs as another user.
    """
    pid = _pid_from(stats_file, pid_file)
    if not _is_alive(pid):
        raise Blocked(f"the bridge (pid {pid}) is not running")
    if not _is_ours(pid):
        raise Blocked(
            f"pid {pid} is not an opskit bridge (the pid file is stale); not signalling it"
        )
    _terminate(pid)
    if not _wait_gone(pid, timeout_s):
        _terminate(pid)  # the second signal closes the remaining bridged connections now
        if not _wait_gone(pid, 5.0):
            raise Negative(
                f"the bridge (pid {pid}) is still running {timeout_s + 5:g}s after SIGTERM"
            )
    return stats.load(stats_file) if stats_file is not None and stats_file.exists() else None


def _terminate(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass  # it exited on its own meanwhile: _wait_gone sees that
    except PermissionError:
        # Negative, not Blocked: proxy.stop reads Blocked as "nothing to stop", and this one still runs.
        raise Negative(
            f"the bridge (pid {pid}) runs as another user: stop it as that user (sudo opskit proxy stop)"
        ) from None


def _wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while _is_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def target_problem(config: BridgeConfig, timeout_s: float = 2.0) -> str | None:
    """Why the new host does not accept a TCP connection from here, or None when it does.

    Checked before a bridge starts: a typo in --to would otherwise only show as errors per client.
    """
    host, port = config.to_host_port
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        return f"the new host {config.to} does not answer from here: {reason}"
    return None


def probe(host: str, port: int, timeout_s: float = 2.0) -> str:
    """Ask a built-in bridge whether it reaches the new host ("ok" or "upstream-down ...").

    This is opskit's own readiness probe: the bridge does not count it as client traffic.
    Blocked when nothing answers on host:port.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.sendall(PROBE_LINE)
            answer = b""
            while not answer.endswith(b"\n") and len(answer) < 512:
                chunk = sock.recv(512)
                if not chunk:
                    break
                answer += chunk
    except OSError as exc:
        raise Blocked(f"no bridge answers on {host}:{port}: {exc}") from None
    text = answer.decode("utf-8", "replace").strip()
    if not text.startswith("OPSKIT-BRIDGE "):
        raise Blocked(f"{host}:{port} answered, but not as an opskit bridge: {text[:60]!r}")
    return text.removeprefix("OPSKIT-BRIDGE ")

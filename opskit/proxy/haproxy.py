"""The HAProxy engine: render a `mode tcp` config, run HAProxy as a child, and keep the same stats file.

For traffic beyond one Python core (about 10k req/s, 500 MiB/s or 20k connections) and for a bridge that
must outlive the terminal (proxy-anchors.md section 7). opskit stays the parent, and HAProxy dies with
it (issue #9: an orphan forwarded uncounted): it starts `haproxy -db -f CFG` in the foreground, reads
per-connection log lines from HAProxy's stdout (client, bytes each way, termination state), polls the
stats socket every second (`show stat`: scur, stot, bin, bout; `show sess`: who is connected now;
`show sess all`: bytes per live connection, since the frontend counters move only when a connection
ends; `show info`: log lines HAProxy dropped), and writes the stats file of opskit/proxy/stats.py, so
`opskit traffic` works unchanged. It never connects to the frontend itself: readiness comes from the
stats socket, so no probe is counted as a client.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import IO, Any

from opskit.errors import OpskitError
from opskit.proxy.config import BridgeConfig
from opskit.proxy.detach import child_main, die_with_parent, spawn_module
from opskit.proxy.haproxy_config import fd_limit, fitting_maxconn, honoured_maxconn, render_config
from opskit.proxy.haproxy_stats import (
    as_int,
    ask,
    dropped_logs,
    parse_log_line,
    parse_show_sess,
    parse_show_sess_all,
    parse_show_stat,
)
from opskit.proxy.listeners import refuse_taken
from opskit.proxy.stats import BridgeStats, from_json
from opskit.proxy.tally import HEARTBEAT_S, Tally, iso, wall_of

__all__ = [  # remote.py renders the old host's config through this module too
    "UNIX_PATH_MAX",
    "Engine",
    "HaproxyFailed",
    "fitting_maxconn",
    "render_config",
    "run",
    "spawn",
]

UNIX_PATH_MAX = 100  # sun_path is 108 bytes on Linux; keep a margin
READY_TIMEOUT_S = 10.0
TUNNEL_WATCH_MAX = 2000  # live sessions up to which bytes per session are read every poll
LOG_PIPE_BYTES = 1 << 20  # the default pipe-max-size


class HaproxyFailed(OpskitError):
    """HAProxy would not start or died; the message carries its own last words."""


@dataclasses.dataclass(frozen=True)
class Paths:
    """Where the engine keeps its config and stats socket (private: 0700 directory, 0600 files)."""

    config: Path
    socket: Path


def paths_for(config: BridgeConfig) -> Paths:
    """The config next to the stats file; the socket there too unless the path is too long for AF_UNIX."""
    base = config.stats_file.with_suffix("")
    sock = Path(f"{base}.haproxy.sock")
    if len(str(sock)) > UNIX_PATH_MAX:
        sock = Path(tempfile.mkdtemp(prefix="opskit-haproxy-")) / "stats.sock"
    return Paths(config=Path(f"{base}.haproxy.cfg"), socket=sock)


class Engine:
    """HAProxy as a child plus the loop that turns its logs and stats socket into the stats file."""

    def __init__(
        self,
        config: BridgeConfig,
        *,
        haproxy: str = "haproxy",
        nameservers: Sequence[str] | None = None,
    ) -> None:
        self.config = config
        self.nameservers = nameservers  # None: the system's resolv.conf
        self.binary = shutil.which(haproxy) or shutil.which(haproxy, path="/usr/sbin:/sbin")
        if not self.binary:
            raise HaproxyFailed(
                "haproxy is not installed here (apt-get install haproxy), or use --engine builtin"
            )
        self.paths = paths_for(config)
        self.tally = Tally(carries=("tcp",))
        self.started_at = time.time()
        self.proc: subprocess.Popen[str] | None = None
        self.tail: list[str] = []
        self.stop_reason: str | None = None
        self.live: dict[str, int] = {}
        # Totals continued from a previous run's stats file: HAProxy's own counters start at 0.
        self.base: tuple[int, int, int] = (0, 0, 0)
        self.closed: dict[str, int] = {}  # finished connections per client (from the logs)
        self.last_counts: tuple[int, int, int] = (0, 0, 0)
        lhost, lport = config.listen_host_port
        self.frontend = f"opskit-{lhost}:{lport}"  # no brackets: HAProxy forbids them in names
        self.maxconn = config.max_connections
        self.log: IO[str] | None = None
        # Bytes moved so far per live session id: a change between polls is activity on a tunnel,
        # which HAProxy's frontend counters only show once the connection ends.
        self.moved: dict[str, int] = {}
        # The nudge: per session id, bytes moved so far and when that last changed (monotonic).
        self.sessions: dict[str, tuple[int, float]] = {}
        self.nudge_from = wall_of(config.nudge_not_before) or 0.0
        self.nudged = 0
        self.dropped = 0
        self.write_failing = False

    # -- setup --
    def write_config(self) -> Path:
        self.maxconn, note = honoured_maxconn(self.config.max_connections, fd_limit())
        if note:
            self._notice(note)
        text = render_config(
            self.config,
            socket_path=self.paths.socket,
            maxconn=self.maxconn,
            nameservers=self.nameservers,
        )
        self.paths.config.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.paths.config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        return self.paths.config

    def start(self) -> None:
        """Start HAProxy and return once its stats socket answers (HaproxyFailed with its words if not)."""
        inherited = () if self.config.listen_fd is None else (self.config.listen_fd,)
        if not inherited:  # an inherited socket is ours, not an orphan's
            refuse_taken(self.config.listen, *self.config.listen_host_port)
        if self.config.log_file:
            self.log = open(self.config.log_file, "a", encoding="utf-8")  # noqa: SIM115 - closed in stop
        self.tally.restore(self.config.stats_file)
        self.tally.begin_watch(os.getpid(), "haproxy", self.started_at)
        self.base = (self.tally.total, self.tally.bytes_in, self.tally.bytes_out)
        self.closed = {a: c.total for a, c in self.tally.clients.items()}
        cfg = self.write_config()
        check = subprocess.run(
            [str(self.binary), "-c", "-q", "-f", str(cfg)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            pass_fds=inherited,
        )
        if check.returncode != 0:
            raise HaproxyFailed(f"haproxy rejected {cfg}: {_last_words(check.stderr)}")
        self.paths.socket.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            [str(self.binary), "-db", "-f", str(cfg)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            # Its own process group: Ctrl-C in the terminal reaches only opskit, which then soft-stops
            # HAProxy (SIGUSR1) so bridged connections get --drain-timeout; HAProxy's SIGINT is a hard stop.
            process_group=0,
            # ... and it dies with opskit, even on kill -9: an orphan would forward uncounted (issue #9).
            preexec_fn=die_with_parent(),  # noqa: PLW1509 - no other thread runs yet
            pass_fds=inherited,
        )
        assert self.proc.stdout is not None  # noqa: S101 - stdout=PIPE
        with contextlib.suppress(OSError):
            # HAProxy drops log lines when the pipe is full; a bigger pipe drops fewer (it counts them).
            fcntl.fcntl(self.proc.stdout.fileno(), fcntl.F_SETPIPE_SZ, LOG_PIPE_BYTES)
        threading.Thread(
            target=self._read_logs, args=(self.proc.stdout,), name="haproxy-logs", daemon=True
        ).start()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                time.sleep(0.1)  # let the reader thread collect its last words
                raise HaproxyFailed(f"haproxy exited {self.proc.returncode}: {self._words()}")
            try:
                ask(self.paths.socket, "show info", timeout_s=1.0)
                break
            except OSError:
                time.sleep(0.05)
        else:
            self.kill()
            raise HaproxyFailed(f"haproxy's stats socket did not answer within {READY_TIMEOUT_S} s")
        self.write("running")

    def _words(self) -> str:
        return _last_words("\n".join(self.tail))

    def _read_logs(self, stream: IO[str]) -> None:
        for line in stream:
            parsed = parse_log_line(line)
            if parsed is None:
                self.tail = [*self.tail[-20:], line.rstrip()]
                if self.log:
                    self.log.write(line)
                    self.log.flush()
                continue
            now = time.time()
            with self.tally.lock:
                row = self.tally.client(parsed.address, now)
                self.closed[parsed.address] = self.closed.get(parsed.address, 0) + 1
                row.total = self.closed[parsed.address] + row.active
                row.bytes_in += parsed.bytes_in
                row.bytes_out += parsed.bytes_out
                row.errors += int(parsed.error)
                self.tally.errors += int(parsed.error)
                if parsed.abort is not None:
                    row.aborts += 1
                    if parsed.abort == "client":
                        self.tally.aborts_client += 1
                    else:
                        self.tally.aborts_upstream += 1
                self.tally.touch(row, now)

    # -- polling --
    def poll(self) -> dict[str, tuple[str, int]] | None:
        """Fold one stats-socket reading into the tally; the live sessions with their byte totals.

        `show sess all` (bytes per session) is read only up to TUNNEL_WATCH_MAX live sessions: it
        costs about 1.7 KB per session. Past that, traffic on a live tunnel shows when it closes.
        """
        rows = parse_show_stat(ask(self.paths.socket, "show stat"))
        live = parse_show_sess(ask(self.paths.socket, "show sess"), self.frontend)
        dropped = dropped_logs(ask(self.paths.socket, "show info"))
        sessions = None
        if sum(live.values()) <= TUNNEL_WATCH_MAX:
            sessions = parse_show_sess_all(ask(self.paths.socket, "show sess all"), self.frontend)
        front = next(r for r in rows if r["pxname"] == self.frontend and r["svname"] == "FRONTEND")
        counts = (as_int(front.get("stot")), as_int(front.get("bin")), as_int(front.get("bout")))
        if dropped > self.dropped:
            self.dropped = dropped
            self.tally.mark_partial(
                f"HAProxy dropped {dropped} log lines (finished connections), so some clients "
                "may be missing from the table"
            )
        now = time.time()
        with self.tally.lock:
            moved = counts != self.last_counts
            self.last_counts = counts
            self.tally.active = as_int(front.get("scur"))
            self.tally.total = self.base[0] + counts[0]
            self.tally.bytes_in = self.base[1] + counts[1]
            self.tally.bytes_out = self.base[2] + counts[2]
            for address, n in live.items():
                row = self.tally.client(address, now)
                if n > self.live.get(address, 0):
                    self.tally.touch(row, now)  # a new connection since the last poll
            for sid, (address, total) in (sessions or {}).items():
                if self.moved.get(sid) != total:  # new, or bytes moved since the last poll
                    self.tally.touch(self.tally.client(address, now), now)
            if sessions is not None:
                self.moved = {sid: total for sid, (_, total) in sessions.items()}
            for address, row in self.tally.clients.items():
                row.active = live.get(address, 0)
                row.total = self.closed.get(address, 0) + row.active
            if moved:
                self.tally.last_activity = now
                self.tally.dirty = True
            self.live = live
        return sessions

    def nudge(self, sessions: dict[str, tuple[str, int]] | None) -> None:
        """Close bridged sessions idle longer than --nudge-after, once caches forgot the old address.

        HAProxy has no per-session idle time, so idleness is measured here: a session whose byte
        totals did not move for nudge_after_s is shut down (`shutdown session`), and its client
        reconnects, resolving the new address.
        """
        after_s = self.config.nudge_after_s
        if after_s is None or time.time() < self.nudge_from:
            return
        if sessions is None:
            sessions = parse_show_sess_all(ask(self.paths.socket, "show sess all"), self.frontend)
        now = time.monotonic()
        seen: dict[str, tuple[int, float]] = {}
        for sid, (address, moved) in sessions.items():
            before = self.sessions.get(sid)
            since = before[1] if before is not None and before[0] == moved else now
            seen[sid] = (moved, since)
            if now - since > after_s:
                ask(self.paths.socket, f"shutdown session {sid}")
                self.nudged += 1
                self._log_line(
                    f"nudged client {address}: idle {now - since:.1f}s; closed so it reconnects "
                    "and re-resolves"
                )
        self.sessions = seen

    def _log_line(self, text: str) -> None:
        if self.log:
            self.log.write(f"{iso(time.time())} opskit-bridge: {text}\n")
            self.log.flush()

    def _notice(self, text: str) -> None:
        """Say something the operator must see: the log file, or stderr (a detached bridge's log)."""
        if self.log:
            self._log_line(text)
        else:
            print(f"opskit: {text}", file=sys.stderr, flush=True)  # noqa: T201 - the engine's log

    def write(self, state: str, ended: str | None = None) -> dict[str, Any]:
        data, error = self.tally.save(
            self.config.stats_file,
            listener=self.config.listen,
            target=self.config.to,
            engine="haproxy",
            mode="tcp",
            started_at=iso(self.started_at),
            pid=os.getpid(),
            state=state,
            ended=ended,
            max_connections=self.maxconn,
            haproxy_socket=str(self.paths.socket),
            haproxy_config=str(self.paths.config),
        )
        with self.tally.lock:
            if len(self.closed) > len(self.tally.clients):  # rows folded into clients_other
                self.closed = {a: n for a, n in self.closed.items() if a in self.tally.clients}
        if error and not self.write_failing:
            self._notice(f"cannot write the stats file, still forwarding: {error}")
        elif not error and self.write_failing:
            self._notice("the stats file is written again")
        self.write_failing = error is not None
        return data

    def serve(self) -> BridgeStats:
        """Poll and write until SIGTERM/SIGINT or HAProxy dies; then drain, stop, write the end."""
        assert self.proc is not None  # noqa: S101 - start() ran
        last_write = time.monotonic()
        interval = max(0.1, min(self.config.stats_interval_s, HEARTBEAT_S))
        while self.stop_reason is None and self.proc.poll() is None:
            time.sleep(interval)
            try:
                self.nudge(self.poll())
            except (OSError, StopIteration):
                # HAProxy busy or exiting: no heartbeat either, so readers see a stale file and say
                # "cannot tell" rather than trust counts nobody read.
                continue
            if self.tally.dirty or time.monotonic() - last_write >= HEARTBEAT_S:
                self.write("running")
                last_write = time.monotonic()
        return self.stop(self.stop_reason or f"error: haproxy exited {self.proc.returncode}")

    def stop(self, reason: str) -> BridgeStats:
        """Soft-stop HAProxy (stop accepting; bridged connections get until hard-stop-after)."""
        if self.proc is not None and self.proc.poll() is None:
            self.write("stopping", reason)
            self.proc.send_signal(signal.SIGUSR1)
            try:
                self.proc.wait(timeout=self.config.drain_timeout_s + 5)
            except subprocess.TimeoutExpired:
                self.kill()
        time.sleep(0.1)  # the log reader folds the last connections in
        self.tally.end_watch(time.time())
        data = self.write("stopped", reason)
        if self.log:
            self.log.close()
        if self.paths.socket.parent.name.startswith("opskit-haproxy-"):
            shutil.rmtree(self.paths.socket.parent, ignore_errors=True)
        return from_json(data)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def _last_words(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    alerts = [ln for ln in lines if "ALERT" in ln] or lines
    return " | ".join(alerts[-3:]) or "no output"


def run(config: BridgeConfig) -> BridgeStats:
    """Run the HAProxy engine in the foreground until SIGTERM or Ctrl-C; the final stats."""
    engine = Engine(config)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if engine.stop_reason is not None and engine.proc is not None:
            engine.proc.terminate()  # a second signal: close the bridged connections now
            return
        engine.stop_reason = "sigint" if signum == signal.SIGINT else "sigterm"

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    if config.pid_file:
        config.pid_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        config.pid_file.write_text(f"{os.getpid()}\n")
    try:
        engine.start()
        return engine.serve()
    except BaseException:
        engine.kill()
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if config.pid_file:
            config.pid_file.unlink(missing_ok=True)


def spawn(
    config: BridgeConfig, *, python: str = sys.executable, listen_sock: socket.socket | None = None
) -> int:
    """Start the engine detached (its own session: it outlives this terminal); its pid once it runs.

    `listen_sock`: already listening on config.listen; HAProxy serves it (`bind fd@N`)."""
    return spawn_module("opskit.proxy.haproxy", config, python=python, listen_sock=listen_sock)


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:], run))

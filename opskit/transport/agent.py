"""One long-lived remote shell per host, fed the run's commands one after another (as Mitogen does).

A fresh SSH session per command costs the host a fork of sshd and a login shell (~0.1 s of CPU); across
a fleet of hundreds of host-steps that is most of the run. Here one session runs a small bash loop (the
agent) for the whole run; each command is one subshell of it, forked in its own process group, so that
a timeout or Ctrl-C kills exactly that command and its children.

Framing on the one channel: the client writes `ID LENGTH\\n` and then LENGTH bytes of script (the
exports and the command, as for `SshTransport`: nothing in argv). The subshell first prints
`\\x1dID PGID START_TICKS BOOT_ID\\n` on stdout: its start as the host's kernel knows it ("-" where
/proc is missing), so the journal names the step's process and `resume` tells it from a recycled pid,
at no extra round trip (issue #10). When it ends the agent prints `\\x1eID RC\\n` on stdout and
`\\x1eID\\n` on stderr. A command that needs stdin goes through a session of its own (`SshTransport.run`).

Failure meanings are the transport's: could not send the command = nothing ran (`TransportError`);
the link or the agent died before the end marker = in doubt (`TransportDropped`).
"""

from __future__ import annotations

import contextlib
import re
import secrets
import shlex
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import paramiko

from opskit.errors import TransportDropped, TransportError, UsageError
from opskit.transport.base import CommandResult, OutputSink, RemoteStart, StartSink
from opskit.transport.remote_script import read_start_fields
from opskit.transport.ssh import SshTransport
from opskit.transport.streams import command_result, open_tails

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
PID_MARK = b"\x1d"
END_MARK = b"\x1e"
_CANCEL_WAIT_S = 5.0
_AFTER_CANCEL_S = 3.0  # how long a cancelled command's end marker is waited for

# `set -m`: each background job gets its own process group (its pgid is its pid), the handle for cancel.
# LC_ALL=C makes `read -N` count bytes, not characters. While a command runs, a watcher reads the
# channel (opskit sends nothing then): EOF means opskit died or the link dropped, and sshd signals no
# command without a pty, so the watcher ends the command's process group itself (issue #10: a step
# that outlived opskit's kill -9 ran twice after resume). It is killed as soon as the command ends,
# before the end marker lets opskit send the next command, so it never reads a byte of one. The job-control notices ("[1]+ Done") that
# `set -m` turns on are printed while `wait` runs, hence its stderr to /dev/null.
AGENT = r"""set -m
while IFS=' ' read -r __id __n; do
  LC_ALL=C IFS= read -r -d '' -N "$__n" __s || exit 0
  ( __t=; __b=; { read -r __t < /proc/$BASHPID/stat; read -r __b < /proc/sys/kernel/random/boot_id; } 2>/dev/null
    __t=${__t##*) }; set -- $__t; __t=${20:--}; set --
    printf '\035%s %s %s %s\n' "$__id" "$BASHPID" "$__t" "${__b:--}"
    unset __id __n __t __b; __c=$__s; unset __s; eval "$__c" ) </dev/null &
  __c=$!
  { IFS= read -r __x; kill -TERM -- -$__c; sleep 2; kill -KILL -- -$__c; } <&0 >/dev/null 2>&1 &
  __w=$!
  { wait "$__c"; } 2>/dev/null; __rc=$?
  kill -KILL -- -$__w 2>/dev/null; { wait "$__w"; } 2>/dev/null
  printf '\036%s %d\n' "$__id" "$__rc"; printf '\036%s\n' "$__id" >&2
done
"""


def script(command: str, env: Mapping[str, str] | None) -> bytes:
    """The exports and the command, as the subshell evaluates them."""
    lines = []
    for name, value in (env or {}).items():
        if not _NAME.fullmatch(name):
            raise UsageError(f"env name {name!r} is not a valid shell variable name")
        lines.append(f"export {name}={shlex.quote(value)}")
    lines.append(command)
    return "\n".join(lines).encode()


def _live_transport(ssh: SshTransport) -> paramiko.Transport | None:
    """The host's SSH transport when it is still up (never reconnects: a cancel needs the same host)."""
    client = ssh._client
    transport = client.get_transport() if client is not None else None
    return transport if transport is not None and transport.is_active() else None


class _Framed:
    """One stream of one command: strips the markers, hands the rest to its tail."""

    def __init__(self, ident: bytes, end: bytes, tail: object, *, pid_first: bool) -> None:
        self.end = END_MARK + ident + end
        self.pid_mark = PID_MARK + ident + b" "
        self.tail = tail
        self.buf = bytearray()
        self.want_pid = pid_first
        self.pgid: int | None = None
        self.start_ticks: str | None = None
        self.boot_id: str | None = None
        self.done = False
        self.trailer = b""

    def feed(self, data: bytes) -> None:
        self.buf += data
        if self.want_pid:
            cut = self.buf.find(b"\n")
            if cut < 0:
                return
            line = bytes(self.buf[:cut])
            if line.startswith(self.pid_mark):
                self._read_pid_line(line[len(self.pid_mark) :].decode(errors="replace"))
            del self.buf[: cut + 1]
            self.want_pid = False
        at = self.buf.find(self.end)
        if at >= 0:
            rest = bytes(self.buf[at + len(self.end) :])
            cut = rest.find(b"\n")
            if cut < 0 and self.end.endswith(b" "):
                return  # the exit code has not fully arrived yet
            self.tail.feed(bytes(self.buf[:at]))  # type: ignore[attr-defined]
            self.trailer = rest[:cut] if cut >= 0 else b""
            self.buf.clear()
            self.done = True
            return
        # Everything goes to the tail now (live output), except what may be the start of the end marker.
        hold = self.buf.rfind(END_MARK)
        if hold < 0 or not self.end.startswith(bytes(self.buf[hold : hold + len(self.end)])):
            hold = len(self.buf)
        if hold:
            self.tail.feed(bytes(self.buf[:hold]))  # type: ignore[attr-defined]
            del self.buf[:hold]

    def _read_pid_line(self, text: str) -> None:
        self.pgid, self.start_ticks, self.boot_id = read_start_fields(text)


class AgentTransport:
    """A `Transport` for one SSH host: commands through its long-lived agent, the rest via SSH."""

    def __init__(self, ssh: SshTransport) -> None:
        self._ssh = ssh
        self._chan: paramiko.Channel | None = None
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.agents_started = 0

    @property
    def label(self) -> str:
        return self._ssh.label

    def check_reachable(self) -> None:
        self._ssh.check_reachable()

    def put_file(self, local: Path, remote: str, *, mode: int = 0o600) -> None:
        self._ssh.put_file(local, remote, mode=mode)

    def close(self) -> None:
        with self._lock:
            if self._chan is not None:
                with contextlib.suppress(Exception):
                    self._chan.shutdown_write()  # the agent's read ends: it exits
                    self._chan.close()
                self._chan = None
        self._ssh.close()

    def _agent(self) -> paramiko.Channel:
        if self._chan is not None and not self._chan.closed and not self._chan.exit_status_ready():
            return self._chan
        client = self._ssh._connected()
        transport = client.get_transport()
        try:
            if transport is None:
                raise paramiko.SSHException("not connected")
            chan = transport.open_session(timeout=10.0)
            chan.exec_command(f"exec bash --norc --noprofile -c {shlex.quote(AGENT)} opskit-agent")
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise TransportError(
                self.label, f"could not start the remote shell: {exc} (nothing ran)"
            ) from None
        # Woken when output (or the end) arrives; select() would cost each channel a pipe (2 fds),
        # and cannot watch descriptors past 1024: a fleet of 500 hosts has more.
        ready = threading.Event()
        chan.in_buffer.set_event(ready)
        chan.in_stderr_buffer.set_event(ready)
        self._ready = ready
        self._chan = chan
        self.agents_started += 1
        return chan

    def run(
        self,
        command: str,
        *,
        env: Mapping[str, str] | None = None,
        stdin: str | None = None,
        timeout_s: float | None = None,
        on_output: OutputSink | None = None,
        on_start: StartSink | None = None,
    ) -> CommandResult:
        """Run `command` in a subshell of the host's agent; stdin input takes a session of its own."""
        if stdin is not None:
            return self._ssh.run(command, env=env, stdin=stdin, timeout_s=timeout_s,
                                 on_output=on_output, on_start=on_start)  # fmt: skip
        body = script(command, env)
        with self._lock:
            chan = self._agent()
            ident = secrets.token_hex(6).encode()
            started = time.monotonic()
            try:
                chan.sendall(ident + b" " + str(len(body)).encode() + b"\n" + body)
            except (paramiko.SSHException, OSError, EOFError) as exc:
                self._chan = None
                raise TransportError(
                    self.label, f"could not send the command: {exc} (nothing ran)"
                ) from None
            tails = open_tails(on_output)
            out = _Framed(ident, b" ", tails["stdout"], pid_first=True)
            err = _Framed(ident, b"\n", tails["stderr"], pid_first=False)
            deadline = None if timeout_s is None else started + timeout_s
            try:
                timed_out = self._pump(chan, out, err, deadline, self._announcer(out, on_start))
            except BaseException:
                self._cancel(out.pgid)
                self._chan = None  # its framing is lost; the next command starts a fresh agent
                with contextlib.suppress(Exception):
                    chan.close()
                raise
            for tail in tails.values():
                tail.close()
            if timed_out:
                return command_result(command, -1, tails, started=started, timed_out=True)
            return command_result(
                command, int(out.trailer or b"-1"), tails, started=started, timed_out=False
            )

    def _announcer(self, out: _Framed, on_start: StartSink | None) -> Callable[[], None]:
        """Tells `on_start`, once, where the command runs as soon as its pid line has come."""
        told = on_start is None

        def announce() -> None:
            nonlocal told
            if told or out.pgid is None or on_start is None:
                return
            told = True
            target = self._ssh.target
            on_start(out.pgid, RemoteStart(self.label, target.hostname, target.port,
                                           out.start_ticks, out.boot_id))  # fmt: skip

        return announce

    def _pump(
        self, chan: paramiko.Channel, out: _Framed, err: _Framed, deadline: float | None,
        announce: Callable[[], None],
    ) -> bool:  # fmt: skip
        """Read until both end markers came; True when the deadline came first (the command is killed)."""
        cancelled_at: float | None = None
        while not (out.done and err.done):
            while chan.recv_ready():
                out.feed(chan.recv(65536))
            announce()
            while chan.recv_stderr_ready():
                err.feed(chan.recv_stderr(65536))
            if out.done and err.done:
                break
            now = time.monotonic()
            if chan.closed or (
                chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready()
            ):
                self._chan = None
                raise self._dropped()
            if deadline is not None and now >= deadline:
                if cancelled_at is None:
                    cancelled_at = now
                    self._cancel(out.pgid)
                elif now - cancelled_at > _AFTER_CANCEL_S:
                    self._chan = (
                        None  # a command that survived its kill: start a fresh agent next time
                    )
                    with contextlib.suppress(Exception):
                        chan.close()
                    return True
            self._ready.wait(0.2)
        return cancelled_at is not None

    def _dropped(self) -> TransportError:
        transport = _live_transport(self._ssh)
        where = self.label
        if transport is None:
            return TransportDropped(
                where, f"the connection to {where} dropped while the command ran; it may or may not have "
                "taken effect (step in doubt)",
            )  # fmt: skip
        return TransportDropped(
            where, f"the remote shell on {where} ended while the command ran (step in doubt)"
        )

    def _cancel(self, pgid: int | None) -> None:
        """Best effort: TERM the command's process group, KILL it 2 s later."""
        if pgid is None or pgid <= 1:
            return
        line = (
            f"kill -TERM -- -{pgid} 2>/dev/null; "
            f"for i in 1 2 3 4 5 6 7 8 9 10; do kill -0 -- -{pgid} 2>/dev/null || exit 0; sleep 0.2; done; "
            f"kill -KILL -- -{pgid} 2>/dev/null; exit 0"
        )
        with contextlib.suppress(paramiko.SSHException, OSError, EOFError, TransportError):
            transport = _live_transport(self._ssh)
            if transport is None:
                return
            chan = transport.open_session(timeout=2.0)
            chan.exec_command(line)
            chan.shutdown_write()
            chan.status_event.wait(_CANCEL_WAIT_S)
            chan.close()

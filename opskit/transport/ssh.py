"""Commands on a runbook host over SSH (paramiko): one verified connection per host, reused for the run.

Failure meanings follow `Transport`: TransportError = nothing ran (retry is safe), HostKeyError =
never retried, TransportDropped = the link died while a command ran (the step is in doubt).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import select
import socket
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import paramiko

from opskit.errors import HostKeyError, TransportDropped, TransportError
from opskit.transport import jump, known_hosts, remote_script
from opskit.transport.base import CommandResult, HostSpec, OutputSink, RemoteStart, StartSink
from opskit.transport.ssh_config import SshTarget, resolve
from opskit.transport.streams import StreamTail, command_result, open_tails

# Background children that keep stdout open would hold the channel forever after the command exits.
_DRAIN_QUIET_S = 0.5
_CANCEL_WAIT_S = 5.0


def _socket_problem(exc: OSError, where: str, timeout_s: float) -> str:
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve {where}: {exc.strerror or exc}"
    if isinstance(exc, TimeoutError | socket.timeout):
        return f"{where} timed out after {timeout_s:g} s (nothing ran)"
    if isinstance(exc, ConnectionRefusedError):
        return f"{where} refuses connections (is sshd running on that port?)"
    if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return f"no route to {where}"
    return f"cannot connect to {where}: {exc.strerror or exc}"


def _send_stdin(chan: paramiko.Channel, data: bytes) -> None:
    # A failure here is a dropped link or a command that stopped reading; run() diagnoses the former.
    # No EOF after the data: the remote wrapper takes EOF to mean "opskit is gone, end the command".
    with contextlib.suppress(paramiko.SSHException, OSError, EOFError):
        if data:
            chan.sendall(data)


class _AfterStartLine:
    """Stdout of a wrapped command: the wrapper's start line goes to `announce`, the rest to the tail."""

    def __init__(self, tail: StreamTail, announce: Callable[[str], None]) -> None:
        self.tail = tail
        self.announce = announce
        self.head: bytearray | None = bytearray()  # None once the start line is through

    def feed(self, data: bytes) -> None:
        if self.head is None:
            self.tail.feed(data)
            return
        self.head += data
        if not self.head.startswith(remote_script.START_MARK[: len(self.head)]):
            data, self.head = bytes(self.head), None  # no start line: all of it is output
            self.tail.feed(data)
            return
        cut = self.head.find(b"\n")
        if cut < 0:
            return
        line, rest = bytes(self.head[1:cut]), bytes(self.head[cut + 1 :])
        self.head = None
        self.announce(line.decode(errors="replace"))
        self.tail.feed(rest)


class SshTransport:
    """Runs commands on one runbook host over SSH; connects on first use."""

    def __init__(
        self,
        spec: HostSpec,
        *,
        accept_new_host_keys: bool = False,
        ssh_config: Path | None = None,
        connect_timeout_s: float = 10.0,
        via: jump.Opener | None = None,
    ) -> None:
        self._spec = spec
        self._accept_new = accept_new_host_keys
        self._ssh_config = ssh_config
        self._connect_timeout_s = connect_timeout_s
        self._via = via  # how to reach the host when it is behind a ProxyJump hop
        self._client: paramiko.SSHClient | None = None
        self._target: SshTarget | None = None
        self._lock = threading.Lock()
        self.connections_opened = 0

    @property
    def label(self) -> str:
        return self._spec.name

    @property
    def target(self) -> SshTarget:
        """Where this transport connects, after ~/.ssh/config is applied."""
        if self._target is None:
            self._target = resolve(self._spec, self._ssh_config)
        return self._target

    def _where(self) -> str:
        t = self.target
        return f"{t.user}@{t.hostname}:{t.port}"

    # -- connection -------------------------------------------------------------------------

    def _connected(self) -> paramiko.SSHClient:
        """The live client, opening (or reopening after a drop) the one connection this host uses."""
        with self._lock:
            client = self._client
            if client is not None:
                transport = client.get_transport()
                if transport is not None and transport.is_active():
                    return client
                client.close()
                self._client = None
            self._client = self._open()
            self.connections_opened += 1
            return self._client

    def _open(self) -> paramiko.SSHClient:
        target = self.target
        where = self._where()
        for key_file in target.key_files:
            if not Path(key_file).is_file():
                raise TransportError(self.label, f"key file {key_file} does not exist")
        client = paramiko.SSHClient()
        if target.known_hosts.is_file():
            try:
                client.get_host_keys().load(str(target.known_hosts))
            except (OSError, paramiko.SSHException) as exc:
                raise TransportError(
                    self.label, f"cannot read {target.known_hosts}: {exc}"
                ) from None
        client.set_missing_host_key_policy(
            known_hosts.make_policy(self.label, target.known_hosts, self._accept_new)
        )
        try:
            sock = self._socket(target)
        except OSError as exc:
            raise TransportError(
                self.label,
                _socket_problem(exc, f"{target.hostname}:{target.port}", self._connect_timeout_s),
            ) from None
        try:
            client.connect(
                target.hostname,
                port=target.port,
                username=target.user,
                # paramiko documents (and accepts) a list here; its stubs say str.
                key_filename=list(target.key_files) or None,  # type: ignore[arg-type]
                allow_agent=True,
                look_for_keys=not target.key_files,
                sock=sock,
                timeout=self._connect_timeout_s,
                banner_timeout=self._connect_timeout_s,
                auth_timeout=self._connect_timeout_s,
            )
        except HostKeyError:
            client.close()
            raise
        except paramiko.BadHostKeyException as exc:
            client.close()
            entry = known_hosts.host_entry_name(target.hostname, target.port)
            raise known_hosts.changed_key_error(
                self.label, entry, exc.key, exc.expected_key, target.known_hosts
            ) from None
        except paramiko.PasswordRequiredException:
            client.close()
            raise TransportError(
                self.label,
                f"the key for {where} is passphrase-protected; load it into ssh-agent (ssh-add)",
            ) from None
        except paramiko.AuthenticationException:
            client.close()
            tried = ", ".join(target.key_files) or "ssh-agent and default keys"
            raise TransportError(
                self.label,
                f"authentication failed for {where} (tried {tried}); check key_file, ssh-agent "
                "and the host's authorized_keys",
            ) from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            client.close()
            problem = (
                _socket_problem(exc, where, self._connect_timeout_s)
                if isinstance(exc, OSError)
                else f"SSH handshake with {where} failed: {exc}"
            )
            raise TransportError(self.label, problem) from None
        transport = client.get_transport()
        if transport is not None:
            # Notices a dead peer during long quiet commands instead of waiting on TCP for minutes.
            transport.set_keepalive(15)
        return client

    def _socket(self, target: SshTarget) -> Any:
        """A TCP connection to the host, or a channel to it through its ProxyJump hops (each verified)."""
        if self._via is not None:  # a hop of a ProxyJump chain, or the target behind one
            return self._via(target.hostname, target.port)
        if target.proxy_jump:
            return jump.open_through(
                self.label, target.proxy_jump, known_hosts=target.known_hosts,
                ssh_config=self._ssh_config, accept_new_host_keys=self._accept_new,
                connect_timeout_s=self._connect_timeout_s,
            )(target.hostname, target.port)  # fmt: skip
        return socket.create_connection(
            (target.hostname, target.port), timeout=self._connect_timeout_s
        )

    def check_reachable(self) -> None:
        """Connect and authenticate (host key verified); runs nothing."""
        self._connected()

    def close(self) -> None:
        """Close the host's connection; a later command reconnects."""
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    # -- commands ---------------------------------------------------------------------------

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
        """Run `command` in bash on the host; env and the command itself travel over stdin."""
        data = (stdin or "").encode()
        header = remote_script.stdin_header(command, env, len(data))
        client = self._connected()
        started = time.monotonic()
        token = secrets.token_hex(8)
        transport = client.get_transport()
        try:
            if transport is None:
                raise paramiko.SSHException("not connected")
            chan = transport.open_session(timeout=self._connect_timeout_s)
            chan.exec_command(remote_script.exec_line(token))
            # Until the header line is complete the remote shell has run nothing.
            chan.sendall(header)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            self._forget_dead_client()
            raise TransportError(
                self.label, f"could not start the command on {self._where()}: {exc} (nothing ran)"
            ) from None
        tails = open_tails(on_output)
        stdout = _AfterStartLine(tails["stdout"], self._announcer(on_start))
        deadline = None if timeout_s is None else started + timeout_s
        # A writer thread: a command that answers while it reads (cat) would otherwise fill both
        # windows and deadlock us against it.
        writer = threading.Thread(target=_send_stdin, args=(chan, data), daemon=True)
        writer.start()
        try:
            timed_out = self._pump(chan, stdout, tails["stderr"], deadline)
        except (paramiko.SSHException, OSError, EOFError):
            timed_out = False  # the drop is diagnosed below from the transport's state
        except BaseException:
            # Ctrl-C: stop the remote command too, not only our end of it.
            self._stop(client, chan, token)
            raise
        for tail in tails.values():
            tail.close()
        if timed_out:
            self._stop(client, chan, token)
            rc = -1
        else:
            rc = self._exit_code(chan, transport)
        return command_result(command, rc, tails, started=started, timed_out=timed_out)

    def _announcer(self, on_start: StartSink | None) -> Callable[[str], None]:
        """What to do with the wrapper's start line: tell `on_start` where the command runs."""

        def announce(line: str) -> None:
            pid, ticks, boot = remote_script.read_start_fields(line)
            if on_start is not None and pid is not None:
                target = self.target
                on_start(pid, RemoteStart(self.label, target.hostname, target.port, ticks, boot))

        return announce

    @staticmethod
    def _pump(
        chan: paramiko.Channel, stdout: _AfterStartLine, stderr: StreamTail, deadline: float | None
    ) -> bool:
        """Stream the channel until the command exits; True when the deadline came first."""
        exited_at: float | None = None
        while True:
            while chan.recv_ready():
                stdout.feed(chan.recv(65536))
            while chan.recv_stderr_ready():
                stderr.feed(chan.recv_stderr(65536))
            now = time.monotonic()
            if chan.exit_status_ready():
                if chan.eof_received or chan.closed:
                    return False
                if exited_at is None:
                    exited_at = now
                elif now - exited_at > _DRAIN_QUIET_S:
                    return False
            if deadline is not None and now >= deadline:
                return True
            wait_s = 0.2 if deadline is None else max(0.01, min(0.2, deadline - now))
            if chan.eof_received:
                # No more data will come; the exit status is the next (and last) event.
                chan.status_event.wait(wait_s)
            else:
                select.select([chan], [], [], wait_s)

    def _exit_code(self, chan: paramiko.Channel, transport: paramiko.Transport | None) -> int:
        if chan.exit_status != -1:
            return chan.exit_status
        # No exit status: the link died, or the remote shell was killed by a signal.
        deadline = time.monotonic() + 1.0
        while transport is not None and transport.is_active() and time.monotonic() < deadline:
            time.sleep(0.02)
        if transport is None or not transport.is_active():
            self._forget_dead_client()
            raise TransportDropped(
                self.label,
                f"the connection to {self._where()} dropped while the command ran; it may or may "
                "not have taken effect (step in doubt)",
            )
        return -1

    def _stop(self, client: paramiko.SSHClient, chan: paramiko.Channel, token: str) -> None:
        """End the remote command's tree: EOF tells the wrapper; a second channel if it does not answer."""
        with contextlib.suppress(paramiko.SSHException, OSError, EOFError):
            chan.shutdown_write()
            if chan.status_event.wait(_CANCEL_WAIT_S):
                chan.close()
                return
        self._cancel(client, token)
        chan.close()

    def _cancel(self, client: paramiko.SSHClient, token: str) -> None:
        """Best effort: stop the remote process group of the command named by `token`."""
        with contextlib.suppress(paramiko.SSHException, OSError, EOFError):
            transport = client.get_transport()
            if transport is None or not transport.is_active():
                return
            chan = transport.open_session(timeout=2.0)
            chan.exec_command(remote_script.cancel_line(token))
            chan.shutdown_write()
            chan.status_event.wait(_CANCEL_WAIT_S)
            chan.close()

    def _forget_dead_client(self) -> None:
        with self._lock:
            client = self._client
            transport = client.get_transport() if client is not None else None
            if client is not None and (transport is None or not transport.is_active()):
                client.close()
                self._client = None

    # -- files ------------------------------------------------------------------------------

    def put_file(self, local: Path, remote: str, *, mode: int = 0o600) -> None:
        """Copy `local` to `remote` over SFTP; the mode is set before any content is written.

        The copy lands under a temporary name and is renamed into place, so a reader (another step,
        or hosts of a fleet that share one filesystem) never runs a half-written file.
        """
        client = self._connected()
        # SFTP paths are relative to the login directory, which is what "~/" means to a shell.
        path = remote[2:] if remote.startswith("~/") else remote
        partial = f"{path}.part-{os.getpid()}-{threading.get_ident()}"
        try:
            with client.open_sftp() as sftp:
                with sftp.open(partial, "wb") as dst, open(local, "rb") as src:
                    dst.chmod(mode)
                    dst.set_pipelined(True)
                    while chunk := src.read(32768):
                        dst.write(chunk)
                sftp.posix_rename(partial, path)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            transport = client.get_transport()
            if transport is None or not transport.is_active():
                self._forget_dead_client()
                raise TransportDropped(
                    self.label, f"the connection dropped while copying {local} to {remote}"
                ) from None
            raise TransportError(
                self.label, f"could not copy {local} to {self._where()}:{remote}: {exc}"
            ) from None

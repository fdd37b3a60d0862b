"""The one interface a step's command runs through, whether on this machine or over SSH."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class HostSpec:
    """A runbook host: where to SSH to and how to trust it (`hosts:` entry, templates already rendered)."""

    name: str
    address: str
    port: int = 22
    user: str | None = None
    key_file: str | None = None  # None: ssh-agent, ~/.ssh/config IdentityFile, default keys
    known_hosts: str | None = None  # None: ~/.ssh/known_hosts


# Called with (stream, line) for each line of output as it arrives; stream is "stdout" or "stderr".
OutputSink = Callable[[str, str], None]


@dataclass(frozen=True)
class RemoteStart:
    """Where a command started over SSH, as the host's kernel knows it (a recycled pid is a stranger)."""

    host: str  # the runbook's name for the host
    address: str  # where opskit connected, after ~/.ssh/config
    port: int
    start_ticks: str | None  # field 22 of /proc/PID/stat: clock ticks after boot (None: no /proc)
    boot_id: str | None  # /proc/sys/kernel/random/boot_id: the ticks count from this boot


class StartSink(Protocol):
    """Called once the command's process exists, so the journal can say where a step runs and `resume`
    can refuse while it still does: the pid on this machine, or on the host named by `remote`."""

    def __call__(self, pid: int, remote: RemoteStart | None = None) -> None: ...


@dataclass(frozen=True)
class CommandResult:
    """What a command did: its exit code, the tail of its output, and how long it took."""

    command: str
    rc: int
    stdout: str
    stderr: str
    duration_s: float
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        """True when the command exited 0 within its timeout."""
        return self.rc == 0 and not self.timed_out


class Transport(Protocol):
    """Runs shell commands and moves files on one host ("local" or a runbook host name).

    Errors: `opskit.errors.TransportError` when the host cannot be reached or authenticated (nothing ran:
    safe to retry), `HostKeyError` for an unknown or changed host key (never retried), `TransportDropped`
    when the connection dropped while a command ran (the command is in doubt).
    """

    @property
    def label(self) -> str:
        """The prefix for output lines: "local" or the runbook's host name."""
        ...

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
        """Run `command` through the host's shell; secrets travel in `env` or `stdin`, never argv.

        The command and everything it starts end when the timeout fires, on Ctrl-C, and when opskit
        dies by any signal (a local supervisor; over SSH a remote wrapper watching the channel).
        """
        ...

    def put_file(self, local: Path, remote: str, *, mode: int = 0o600) -> None:
        """Copy a file to the host (SFTP over SSH; a plain copy locally)."""
        ...

    def check_reachable(self) -> None:
        """Connect and authenticate (raises TransportError/HostKeyError); runs nothing."""
        ...

    def close(self) -> None:
        """Release the connection (a no-op locally)."""
        ...

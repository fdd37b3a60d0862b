"""What a run holds while it executes (`Session`) and what one step's action sees (`StepContext`)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from opskit.errors import OpskitError, UsageError
from opskit.redaction import Masker
from opskit.runbook.journal import Journal, read_journal
from opskit.runbook.model import Runbook, SecretRef
from opskit.runbook.processes import process_journaler
from opskit.runbook.scope import base_vars
from opskit.runbook.templates import display_secrets, render, shell_secrets
from opskit.transport.base import HostSpec, OutputSink, StartSink, Transport

LOCAL = "local"


class Reporter(Protocol):
    """How the engine talks to a person; the CLI implements it (the library never prints)."""

    def started(self, run_id: str, mode: str) -> None:
        """The run id is known (printed first)."""

    def step_begin(
        self, step_id: str, title: str, hosts: tuple[str, ...], command: str | None
    ) -> None:
        """A step starts."""

    def output(self, host: str, line: str) -> None:
        """One masked output line of a step, from `host`."""

    def progress(self, step_id: str, message: str, fraction: float | None) -> None:
        """A live progress line."""

    def step_end(self, step_id: str, status: str, summary: str, duration_s: float) -> None:
        """A step ended."""

    def ask(self, question: str) -> str | None:
        """Ask at the terminal; None when there is no answer (end of input)."""

    def warn(self, text: str) -> None:
        """Something the operator should know that is not a failure."""


class SilentReporter:
    """A reporter that shows nothing and answers nothing (library callers, tests)."""

    def started(self, run_id: str, mode: str) -> None:
        pass

    def step_begin(
        self, step_id: str, title: str, hosts: tuple[str, ...], command: str | None
    ) -> None:
        pass

    def output(self, host: str, line: str) -> None:
        pass

    def progress(self, step_id: str, message: str, fraction: float | None) -> None:
        pass

    def step_end(self, step_id: str, status: str, summary: str, duration_s: float) -> None:
        pass

    def ask(self, question: str) -> str | None:
        return None

    def warn(self, text: str) -> None:
        pass


# Shorter values would mask ordinary words, or be guessed from the *** around them.
MIN_SECRET_CHARS = 4
MAX_SECRET_BYTES = 64 * 1024
# `pass` or `op read` may wait for a passphrase typed at the terminal.
SECRET_COMMAND_TIMEOUT_S = 120.0
# Secret source variables already read: each is removed from our environment once read, so local steps
# (which inherit it) never see it; a second read in the same process (plan, then run) finds it here.
_TAKEN: dict[str, str] = {}


def read_secrets(runbook: Runbook) -> dict[str, str]:
    """Every secret's value, from its environment variable, file or command; one-line error otherwise."""
    return {
        name: _checked(ref, _read_secret(runbook, ref)) for name, ref in runbook.secrets.items()
    }


def readable_secrets(runbook: Runbook) -> list[str]:
    """The secrets that can be read here without running anything (to mask a note once more)."""
    values = []
    for ref in runbook.secrets.values():
        if ref.command is None:
            with contextlib.suppress(OpskitError):
                values.append(_read_secret(runbook, ref))
    return values


def run_masker(journal_path: Path) -> Masker:
    """A masker holding the secrets of a run's runbook that can be read here: a note is masked like output."""
    from opskit.runbook.loader import load  # noqa: PLC0415 - only `opskit note` needs it

    for event in read_journal(journal_path).events:
        if event.get("event") == "run_started" and event.get("runbook"):
            runbook, _ = load(Path(str(event["runbook"])))
            return Masker(readable_secrets(runbook) if runbook is not None else [])
    return Masker()


def _checked(ref: SecretRef, value: str) -> str:
    if len(value) < MIN_SECRET_CHARS:
        raise UsageError(
            f"secret '{ref.name}' is {len(value)} characters long: too short to mask safely in output "
            f"and journal (at least {MIN_SECRET_CHARS})"
        )
    if "\0" in value:
        raise UsageError(f"secret '{ref.name}' holds a NUL byte: no command can receive it")
    return value


def _read_secret(runbook: Runbook, ref: SecretRef) -> str:
    if ref.env is not None:
        value = os.environ.pop(ref.env, None)
        if value is not None:
            _TAKEN[ref.env] = value
            return value
        if ref.env in _TAKEN:
            return _TAKEN[ref.env]
        raise UsageError(
            f"secret '{ref.name}': environment variable {ref.env} is not set (export it first)"
        )
    if ref.command is not None:
        return _secret_from_command(runbook, ref, ref.command)
    path = Path(os.path.expanduser(ref.file or ""))
    if not path.is_absolute():
        path = runbook.path.parent / path
    try:
        if not path.is_file():  # a FIFO or /dev/zero would never end
            raise UsageError(f"secret '{ref.name}': {path} is not a regular file")
        with path.open("rb") as fh:
            data = fh.read(MAX_SECRET_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"secret '{ref.name}': cannot read {path}: {exc.strerror}") from None
    if len(data) > MAX_SECRET_BYTES:
        raise UsageError(f"secret '{ref.name}': {path} is larger than 64 KiB: not a secret")
    try:
        return data.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise UsageError(
            f"secret '{ref.name}': {path} is not UTF-8 text (a binary file?)"
        ) from None


def _secret_from_command(runbook: Runbook, ref: SecretRef, command: str) -> str:
    """stdout of `pass show x`, `vault kv get -field=pw x`, `op read op://...`: never shown anywhere."""
    try:
        # stdin and stderr stay the terminal's, so a passphrase prompt reaches the operator.
        done = subprocess.run(
            [shutil.which("bash") or "/bin/sh", "-c", command], stdout=subprocess.PIPE, cwd=runbook.path.parent,
            timeout=SECRET_COMMAND_TIMEOUT_S, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise UsageError(
            f"secret '{ref.name}': `{command}` gave no answer within {SECRET_COMMAND_TIMEOUT_S:g}s"
        ) from None
    except OSError as exc:
        raise UsageError(f"secret '{ref.name}': cannot run `{command}`: {exc.strerror}") from None
    if done.returncode != 0:
        raise UsageError(f"secret '{ref.name}': `{command}` exited {done.returncode}")
    try:
        return done.stdout.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise UsageError(
            f"secret '{ref.name}': `{command}` printed bytes that are not UTF-8"
        ) from None


@dataclass
class Session:
    """One process driving one run: journal, transports (one per host), captures, facts, secrets."""

    runbook: Runbook
    run_id: str
    run_dir: Path
    state_dir: Path
    journal: Journal
    reporter: Reporter
    operator: str
    secrets: Mapping[str, str]
    masker: Masker
    base: dict[str, Any]
    accept_new_host_keys: bool = False
    captures: dict[str, Any] = field(default_factory=dict)
    facts: dict[str, list[Mapping[str, Any]]] = field(default_factory=dict)
    cancel: threading.Event = field(default_factory=threading.Event)
    _transports: dict[str, Transport] = field(default_factory=dict)

    @classmethod
    def open(  # noqa: PLR0917 - the run's identity, all needed together
        cls, runbook: Runbook, run_id: str, run_dir: Path, state_dir: Path, reporter: Reporter,
             operator: str, *, accept_new_host_keys: bool = False, secrets: Mapping[str, str] | None = None) -> Session:  # fmt: skip
        values = read_secrets(runbook) if secrets is None else dict(secrets)
        masker = Masker(values.values())
        journal = Journal(run_dir / "journal.jsonl", masker)
        base = base_vars(runbook, {"run_id": run_id, "operator": operator})
        return cls(runbook, run_id, run_dir, state_dir, journal, reporter, operator, values, masker, base,
                   accept_new_host_keys)  # fmt: skip

    @property
    def display_view(self) -> dict[str, str]:
        return display_secrets(list(self.secrets))

    @property
    def shell_view(self) -> dict[str, str]:
        return shell_secrets(list(self.secrets))

    def host_spec(self, name: str) -> HostSpec | None:
        """The rendered `hosts:` entry (None: this machine)."""
        if name in (LOCAL, "localhost"):
            return None
        ref = self.runbook.hosts[name]
        ctx = {**self.base, **self.secrets}
        return HostSpec(
            name=name,
            address=render(ref.address, ctx),
            port=_port(name, ref.port, ctx),
            user=render(ref.user, ctx) if ref.user else None,
            key_file=os.path.expanduser(render(ref.key_file, ctx)) if ref.key_file else None,
            known_hosts=os.path.expanduser(render(ref.known_hosts, ctx))
            if ref.known_hosts
            else None,
        )

    def transport(self, name: str | None) -> Transport:
        """One transport per host for the whole run (one SSH connection, reused)."""
        key = name or LOCAL
        if key not in self._transports:
            from opskit.transport import connect  # noqa: PLC0415 - imported on first use, keeps start-up fast

            self._transports[key] = connect(
                self.host_spec(key), accept_new_host_keys=self.accept_new_host_keys
            )
        return self._transports[key]

    def emit(self, step_id: str, host: str, stream: str, line: str) -> None:
        """One output line: masked, shown with its host prefix, journaled (capped)."""
        masked = self.masker.text(line.rstrip("\r\n"))
        self.reporter.output(host, masked)
        self.journal.output(step_id, host, stream, masked)

    def sink(self, step_id: str, host: str) -> OutputSink:
        """The `on_output` callback of a command run for `step_id` on `host`."""

        def on_output(stream: str, line: str) -> None:
            self.emit(step_id, host, stream, line)

        return on_output

    def add_facts(self, facts: Mapping[str, Any]) -> None:
        for key, value in facts.items():
            self.facts.setdefault(key, []).append(value)

    def close(self) -> None:
        for t in self._transports.values():
            with contextlib.suppress(Exception):  # closing must never hide the run's own outcome
                t.close()
        self._transports.clear()
        self.journal.close()


class StepContext:
    """The `ActionContext` of one step on one host (see opskit/actions/base.py)."""

    def __init__(self, session: Session, step_id: str, host: str | None, *, dry_run: bool,
                 timeout_s: float | None = None, undoing: bool = False) -> None:  # fmt: skip
        self._session = session
        self._undoing = undoing  # an action run as an undo: its own undo data means nothing
        self.run_id = session.run_id
        self.step_id = step_id
        self.dry_run = dry_run
        # `on: local` is this machine: actions see None, as for a step without `on:`.
        self.host = None if host in (LOCAL, "localhost") else host
        self.state_dir = session.state_dir
        self.masker = session.masker
        self._deadline = None if timeout_s is None else time.monotonic() + timeout_s

    @property
    def run_dir(self) -> Path:
        return self._session.run_dir

    @property
    def timed_out(self) -> bool:
        return self._deadline is not None and time.monotonic() > self._deadline

    def transport(self, host: str | None = None) -> Transport:
        return self._session.transport(host if host is not None else self.host)

    def now(self) -> datetime:
        return datetime.now(UTC)

    def log(self, line: str) -> None:
        self._session.emit(self.step_id, self.host or LOCAL, "stdout", line)

    def progress(self, message: str, fraction: float | None = None) -> None:
        self._session.reporter.progress(self.step_id, self.masker.text(message), fraction)

    def secret(self, name: str) -> str:
        try:
            return self._session.secrets[name]
        except KeyError:
            raise UsageError(f"no secret named {name!r} in the runbook") from None

    def facts(self, key: str) -> list[Mapping[str, Any]]:
        return list(self._session.facts.get(key, []))

    def cancelled(self) -> bool:
        return self._session.cancel.is_set() or self.timed_out

    def process_sink(self) -> StartSink | None:
        """A command the action runs: the step's process (the undo's, in a rollback)."""
        if self.dry_run:
            return None
        kind = "undo" if self._undoing else None
        return process_journaler(self._session.journal, self.step_id, kind)

    def record_undo(self, data: Mapping[str, Any]) -> None:
        """`step_undo_ready`, fsynced before the action mutates; rollback uses a step's earliest undo data."""
        if self.dry_run or self._undoing:
            return
        self._session.journal.append(
            "step_undo_ready", step=self.step_id, host=self.host, undo=dict(data)
        )


def _port(host: str, port: int | str, ctx: Mapping[str, Any]) -> int:
    """A host's port: a number, or a template (`port: "{{ ssh_port }}"`) that must render to one."""
    if isinstance(port, int):
        return port
    text = render(port, ctx).strip()
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise UsageError(f"host '{host}': port must be a number from 1 to 65535, got {text!r}")
    return int(text)

"""What an action is (`uses: NAME` in a runbook) and what the engine hands it when it runs.

The engine never imports a feature library; a feature plugs in by adding one module here and one line to
the registry in `opskit/actions/__init__.py`. The same library function backs the click command.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self

from opskit.actions.params import Params
from opskit.redaction import Masker
from opskit.transport.base import StartSink, Transport


class ActionKind(enum.StrEnum):
    """What a step does to the world; decides what a dry-run executes."""

    PROBE = "probe"  # read-only: executed for real in a dry-run
    MUTATE = "mutate"  # changes something: never executed in a dry-run
    IRREVERSIBLE = "irreversible"  # point of no return: rollback stops here


@dataclass(frozen=True)
class ActionResult:
    """The outcome of one action, journaled by the engine (masked) and rendered by the CLI.

    - `ok`: the step succeeded (in a dry-run: the probe passed / nothing blocks).
    - `blocked`: could not decide at all (no server answered, no stats): the run exits 3, not 1.
    - `summary`: one line for the operator ("READY: dispatch.example.net A ttl 300 s").
    - `detail`: more lines (tables, reasons), shown under the step and journaled as output.
    - `values`: JSON-able values journaled with the step; `capture:` on a `uses:` step stores this mapping.
    - `facts`: JSON-able named facts other steps and commands read back from the journal
      (for example `{"dns.ttl_lowered": {...}}` so `dns.check` knows when the TTL was lowered).
    - `undo`: JSON-able data the action's `undo()` needs (for example the records read before a change).
    - `predicted_wait_s`: in a dry-run, how long the real step is expected to take (for the forecast).
    """

    ok: bool
    summary: str
    detail: str = ""
    blocked: bool = False
    values: Mapping[str, Any] = field(default_factory=dict)
    facts: Mapping[str, Any] = field(default_factory=dict)
    undo: Mapping[str, Any] | None = None
    predicted_wait_s: float | None = None


class ActionContext(Protocol):
    """What the engine gives an action: where it runs, how to report, and what the run knows."""

    run_id: str
    step_id: str
    dry_run: bool
    host: str | None  # the step's `on:` host; None = this machine
    state_dir: Path
    masker: Masker

    @property
    def run_dir(self) -> Path:
        """runs/<RUN_ID>/: private (0700); actions keep pid and stats files here."""
        ...

    def transport(self, host: str | None = ...) -> Transport:
        """The transport of `host` (default: the step's host); one SSH connection per host per run."""
        ...

    def now(self) -> datetime:
        """The current time, UTC, timezone-aware (injected in tests)."""
        ...

    def log(self, line: str) -> None:
        """One line of output: shown live with the host prefix, journaled masked."""
        ...

    def progress(self, message: str, fraction: float | None = None) -> None:
        """A live progress line for long waits (replaced, not appended, on a terminal)."""
        ...

    def secret(self, name: str) -> str:
        """The value of a runbook secret (already registered with the masker)."""
        ...

    def facts(self, key: str) -> list[Mapping[str, Any]]:
        """Every fact of that key journaled so far in this run (oldest first), e.g. "dns.ttl_lowered"."""
        ...

    def cancelled(self) -> bool:
        """True once the step must stop (Ctrl-C or its timeout): long waits poll this."""
        ...

    def process_sink(self) -> StartSink | None:
        """The `on_start` for a command the action runs itself (proxy.start's stop_old): journaled as
        the step's process, so resume and rollback refuse while it still runs; None: not journaled."""
        ...

    def record_undo(self, data: Mapping[str, Any]) -> None:
        """Journal (fsynced) what `undo()` needs BEFORE the action changes anything: a step cut off
        mid-change (kill -9 during a long wait) is still rolled back to the state before it ran."""
        ...


class Action(Protocol):
    """A built-in step: `uses: NAME` with `with: {...}`."""

    kind: ClassVar[ActionKind]

    @classmethod
    def from_params(cls, params: Params) -> Self:
        """Validate `with:` (raise ParamError naming the key) and build the action; call params.finish()."""
        ...

    def describe(self) -> str:
        """One line saying what the step would do, for `opskit plan`."""
        ...

    def run(self, ctx: ActionContext) -> ActionResult:
        """Do it for real."""
        ...

    def rehearse(self, ctx: ActionContext) -> ActionResult:
        """Dry-run: probes run for real; mutations only read and say what they would do."""
        ...

    def undo(self, ctx: ActionContext, data: Mapping[str, Any]) -> ActionResult | None:
        """Reverse a succeeded run using its journaled `undo` data; None when it cannot be undone."""
        ...

    def longest_wait_s(self) -> float | None:
        """How long the action may wait by its own `with:` (its timeout); None when it does not wait."""
        ...


class BaseAction:
    """Defaults: a probe rehearses by running; anything else says what it would do; no undo."""

    kind: ClassVar[ActionKind] = ActionKind.MUTATE

    def describe(self) -> str:
        return type(self).__name__

    def run(self, ctx: ActionContext) -> ActionResult:
        raise NotImplementedError

    def rehearse(self, ctx: ActionContext) -> ActionResult:
        if self.kind is ActionKind.PROBE:
            return self.run(ctx)
        return ActionResult(ok=True, summary=f"would {self.describe()}")

    def undo(self, ctx: ActionContext, data: Mapping[str, Any]) -> ActionResult | None:
        return None

    def longest_wait_s(self) -> float | None:
        return None

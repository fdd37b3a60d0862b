"""A loaded runbook: frozen values whose fields are the YAML field names; templates stay unrendered.

Every value that came from YAML keeps where it came from (`loc`, `locs[field]`) so a problem found later
(at validation or at run time) still points at FILE:LINE:COL.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opskit.errors import SourceLocation


class Kind(enum.StrEnum):
    """What a step does to the world (same words as `opskit.actions.ActionKind`)."""

    PROBE = "probe"
    MUTATE = "mutate"
    IRREVERSIBLE = "irreversible"


class GateLevel(enum.StrEnum):
    """How hard a gate is to pass: y/N, type the step id, or typed and never passed by --yes."""

    CONFIRM = "confirm"
    TYPED = "typed"
    CRITICAL = "critical"


@dataclass(frozen=True)
class Retry:
    """`retry:`; `on: transport` retries only failures to reach a host, `any` also failed commands."""

    attempts: int = 1
    delay_s: float = 1.0
    backoff: str = "fixed"  # fixed | exponential
    max_delay_s: float = 30.0
    on: str = "transport"  # transport | any


@dataclass(frozen=True)
class Gate:
    """`gate:`; asked before the step runs; a `manual:` step is a gate too."""

    prompt: str
    level: GateLevel = GateLevel.CONFIRM


@dataclass(frozen=True)
class Undo:
    """`undo:`: a command on the step's hosts, or an action with its own `with:`."""

    run: str | None = None
    uses: str | None = None
    with_: Mapping[str, Any] = field(default_factory=dict)
    loc: SourceLocation | None = None


@dataclass(frozen=True)
class HostRef:
    """A `hosts:` entry; address and the rest may be templates."""

    name: str
    address: str
    port: int | str = 22  # a template string is rendered (and checked) when the run connects
    user: str | None = None
    key_file: str | None = None
    known_hosts: str | None = None
    loc: SourceLocation | None = None
    # Inventory host vars: the templates of a step that runs on this host see them.
    vars: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SecretRef:
    """A `secrets:` entry: read from an env variable, a file or a command at run time, never stored."""

    name: str
    env: str | None = None
    file: str | None = None
    # `pass show db/pw`, `vault kv get -field=pw secret/db`, `op read op://vault/db/pw`
    command: str | None = None
    loc: SourceLocation | None = None


@dataclass(frozen=True)
class NotifyTarget:
    """One `notify:` entry: a webhook (Slack/Mattermost `{"text": ...}`) or a command (message on stdin)."""

    webhook: str | None = None
    command: str | None = None
    on: tuple[str, ...] = ("gate", "step_failed", "run_finished")
    timeout_s: float = 10.0
    loc: SourceLocation | None = None


@dataclass(frozen=True)
class Step:
    """One step. Exactly one of run/uses/wait/manual (or none when it is only a gate)."""

    id: str
    loc: SourceLocation
    name: str | None = None
    kind: Kind = Kind.MUTATE
    kind_explicit: bool = False
    on: tuple[str, ...] = ()  # host names (templates allowed); empty: this machine
    run: str | None = None
    uses: str | None = None
    with_: Mapping[str, Any] = field(default_factory=dict)
    check: str | None = None
    undo: Undo | None = None
    gate: Gate | None = None
    capture: str | None = None
    wait_s: float | None = None
    manual: str | None = None
    when: str | bool | None = None
    timeout_s: float | None = None
    retry: Retry = field(default_factory=Retry)
    idempotent: bool = False
    env: Mapping[str, str] = field(default_factory=dict)
    continue_on_error: bool = False
    owner: str | None = None
    # `with:` of each include that brought this step in, outermost first; each layer's templates are
    # rendered in the scope around it, so an include can pass its own variables on to a nested one.
    scope: tuple[Mapping[str, Any], ...] = ()
    locs: Mapping[str, SourceLocation] = field(default_factory=dict)
    # Names its run/check/undo insert as shell text (`| raw`): an include's value of one is quoted inside.
    raw_names: frozenset[str] = frozenset()
    # The fleet (opskit/fleet): how many hosts at once, the rolling batches, the failures allowed.
    parallel: int | None = None
    batches: tuple[str, ...] = ()
    max_failures: str | None = None

    @property
    def title(self) -> str:
        """The human title: `name`, else the id."""
        return self.name or self.id

    def where(self, field_name: str) -> SourceLocation:
        """The location of one field (the step itself when the field is absent)."""
        return self.locs.get(field_name, self.loc)


@dataclass(frozen=True)
class Include:
    """One `include:` as written: which `with:` keys it passes and which steps it brought in."""

    path: str
    loc: SourceLocation
    with_locs: Mapping[str, SourceLocation]
    params: tuple[str, ...] | None  # the playbook's `params:`, when it declares them
    vars: frozenset[str]  # the playbook's own `vars:` (defaults a `with:` may override)
    step_ids: tuple[str, ...]


@dataclass(frozen=True)
class Runbook:
    """A whole runbook after loading and validation."""

    name: str
    path: Path
    sha256: str  # of the runbook and every included playbook, in load order
    steps: tuple[Step, ...]
    description: str = ""
    vars: Mapping[str, Any] = field(default_factory=dict)
    secrets: Mapping[str, SecretRef] = field(default_factory=dict)
    hosts: Mapping[str, HostRef] = field(default_factory=dict)
    timeout_s: float | None = None
    sources: tuple[Path, ...] = ()
    locs: Mapping[str, SourceLocation] = field(
        default_factory=dict
    )  # "vars.old", "hosts.new.address"
    includes: tuple[Include, ...] = ()
    # A playbook validated on its own: the names it expects from an includer's `with:`.
    is_playbook: bool = False
    params: tuple[str, ...] | None = None
    # Where a command inserts a value as shell text (`| raw`): "FILE:LINE:COL: run: name", for validate.
    fragments: tuple[str, ...] = ()
    # `vars:` inserted that way; their own `{{ }}` are quoted like a command's (see scope.base_vars).
    fragment_vars: frozenset[str] = frozenset()
    # `hosts: {groups: ...}` and inventories: group -> host names; `limit` is `--limit`, None for all.
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    limit: str | None = None
    notify: tuple[NotifyTarget, ...] = ()  # who hears when a gate waits, a step fails, the run ends

    def step(self, step_id: str) -> Step | None:
        """The step with that id, if any."""
        return next((s for s in self.steps if s.id == step_id), None)

    @property
    def captures(self) -> dict[str, str]:
        """capture name -> id of the step that captures it."""
        return {s.capture: s.id for s in self.steps if s.capture}

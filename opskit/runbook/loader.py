"""Runbook YAML -> `Runbook`, with every structural problem collected at its FILE:LINE:COL.

Structure only (fields, types, durations, includes); names and templates are checked in `validate.py`.
An `include:` item pulls in a playbook (a list of steps, or a mapping with `vars:` and `steps:`); its
`with:` becomes a variable scope for those steps, and an optional `id:` prefixes their ids
(`restart-new.stop`) so one playbook can be included twice.
"""

from __future__ import annotations

import difflib
import hashlib
import math
import os
import re
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opskit import durations
from opskit.errors import RunbookInvalid, SourceLocation, UsageError
from opskit.runbook.model import (
    Gate,
    GateLevel,
    HostRef,
    Include,
    Kind,
    Retry,
    Runbook,
    SecretRef,
    Step,
    Undo,
)
from opskit.runbook.notify import parse_notify
from opskit.runbook.templates import is_template
from opskit.runbook.yamlnodes import Y, read, unprintable

TOP_FIELDS = ("name", "description", "vars", "secrets", "hosts", "defaults", "steps", "notify")
STEP_FIELDS = (
    "id", "name", "kind", "on", "run", "uses", "with", "check", "undo", "gate", "capture", "wait",
    "manual", "when", "timeout", "retry", "idempotent", "env", "continue_on_error", "owner",
    "parallel", "batches", "max_failures",
)  # fmt: skip
INCLUDE_FIELDS = ("include", "with", "id", "owner")
PLAYBOOK_FIELDS = ("description", "vars", "params", "steps")
HOST_FIELDS = ("address", "port", "user", "key_file", "known_hosts")
RETRY_FIELDS = ("attempts", "delay", "backoff", "max_delay", "on")
ACTIONS = ("run", "uses", "wait", "manual")
MAX_INCLUDE_DEPTH = 8
MAX_STEP_S = 7 * 86400.0  # a timeout or wait longer than a week is a typo, not a night
MAX_DELAY_S = 86400.0
MAX_ATTEMPTS = 100
# The operator's opt-in (`--allow-include-outside`), set by the CLI around one command.
ALLOW_INCLUDE_OUTSIDE: ContextVar[bool] = ContextVar("allow_include_outside", default=False)
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ENV_NAME = _NAME
SECRET_SOURCES = ("env", "file", "command")


def shown(y: Y) -> str:
    """A value as a problem line quotes it: plain (no locations), one line, at most 60 characters."""
    text = repr(y.plain())
    return text if len(text) <= 60 else text[:57] + "..."


def display_path(path: Path) -> str:
    """A path as the user would type it: relative to the current directory when below it."""
    try:
        relative = os.path.relpath(path)
    except ValueError:
        return str(path)
    return str(path) if relative.startswith("..") else relative


@dataclass
class _Scope:
    layers: tuple[dict[str, Any], ...] = ()
    prefix: str = ""
    owner: str | None = None
    chain: tuple[Path, ...] = ()


@dataclass
class _Load:
    problems: list[RunbookInvalid] = field(default_factory=list)
    sources: list[Path] = field(default_factory=list)
    digest: Any = field(default_factory=hashlib.sha256)
    timeout_s: float | None = None
    retry: dict[str, Y] = field(default_factory=dict)
    includes: list[Include] = field(default_factory=list)

    def bad(self, where: SourceLocation, problem: str) -> None:
        self.problems.append(RunbookInvalid(where, problem))

    def fields(
        self, y: Y, allowed: tuple[str, ...], what: str, required: tuple[str, ...] = ()
    ) -> bool:
        """Check a mapping's keys; False when `y` is not a mapping at all."""
        if not y.is_map:
            self.bad(y.loc, f"{what} must be a mapping")
            return False
        for key, value in y.value.items():
            if key not in allowed:
                hint = difflib.get_close_matches(key, allowed, n=1)
                tip = (
                    f" (did you mean '{hint[0]}'?)" if hint else f" (allowed: {', '.join(allowed)})"
                )
                self.bad(value.key_loc or value.loc, f"unknown field '{key}' in {what}{tip}")
        for key in required:
            if key not in y.value or y.value[key].value is None:
                self.bad(y.loc, f"missing field '{key}' in {what}")
        return True

    def text(self, y: Y | None, what: str) -> str | None:
        if y is None or y.value is None:
            return None
        if isinstance(y.value, bool) or not isinstance(y.value, str | int | float):
            self.bad(y.loc, f"{what} must be text")
            return None
        return str(y.value)

    def flag(self, y: Y | None, what: str) -> bool:
        if y is None or y.value is None:
            return False
        if not isinstance(y.value, bool):
            self.bad(y.loc, f"{what} must be true or false, got {shown(y)}")
            return False
        return y.value

    def duration(
        self, y: Y | None, what: str, *, zero_ok: bool = False, max_s: float = MAX_STEP_S
    ) -> float | None:
        """A duration within sense: finite, above zero unless zero means something, below `max_s`."""
        if y is None or y.value is None:
            return None
        try:
            seconds = durations.parse_seconds(y.value)
        except durations.DurationError:
            self.bad(y.loc, f"bad duration {shown(y)} for {what} (use 500ms, 30s, 10m or 24h)")
            return None
        if not math.isfinite(seconds):
            self.bad(y.loc, f"{what} must be a finite duration like 30s or 10m, got {shown(y)}")
        elif seconds == 0 and not zero_ok:
            self.bad(y.loc, f"{what} of 0 means nothing here: give a duration like 30s or 10m")
        elif seconds > max_s:
            limit = durations.format_seconds(max_s)
            self.bad(y.loc, f"{what} {shown(y)} is longer than {limit}, the most it may be")
        else:
            return seconds
        return None

    def mapping(self, y: Y | None, what: str) -> dict[str, Y]:
        if y is None or y.value is None:
            return {}
        if not y.is_map:
            self.bad(y.loc, f"{what} must be a mapping")
            return {}
        return dict(y.value)


def load(
    path: Path, overrides: dict[str, Any] | None = None
) -> tuple[Runbook | None, list[RunbookInvalid]]:
    """Parse a runbook file; returns the runbook (None when unusable) and every structural problem."""
    _check_overrides_text(overrides or {})
    st = _Load()
    display = display_path(path)
    root, raw = read(path, display, st.problems)
    st.sources.append(path.resolve())
    st.digest.update(raw)
    if root is None:
        return None, st.problems
    if is_playbook(root):
        st.bad(
            root.loc,
            "this is a playbook (steps without a runbook name:): include it from a runbook with "
            "`- include: PATH` and `with: {...}`; `opskit validate` checks it on its own",
        )
        return None, st.problems
    if not st.fields(root, TOP_FIELDS, "the runbook", required=("name", "steps")):
        return None, st.problems
    top = root.value
    defaults = st.mapping(top.get("defaults"), "defaults")
    for key, value in defaults.items():
        if key not in ("timeout", "retry"):
            st.bad(
                value.key_loc or value.loc,
                f"unknown field '{key}' in defaults (allowed: timeout, retry)",
            )
    st.timeout_s = st.duration(defaults.get("timeout"), "defaults.timeout")
    if "retry" in defaults and st.fields(defaults["retry"], RETRY_FIELDS, "retry"):
        st.retry = dict(defaults["retry"].value)
    var_ys = st.mapping(top.get("vars"), "vars")
    variables = {k: v.plain() for k, v in var_ys.items()}
    variables.update(overrides or {})
    locs = {f"vars.{k}": v.loc for k, v in var_ys.items()}
    hosts = _hosts(st, top.get("hosts"), locs)
    from opskit.fleet import selection  # noqa: PLC0415 - the fleet imports the model, not the reverse

    hosts, groups, limit = selection.apply(st, top.get("hosts"), hosts)
    steps: list[Step] = []
    steps_y = top.get("steps")
    if steps_y is not None and steps_y.value is not None:
        _steps(st, steps_y, _Scope(chain=(path.resolve(),)), path, steps)
        if steps_y.value == []:
            st.bad(steps_y.loc, "steps is empty: a runbook needs at least one step")
    runbook = Runbook(
        name=st.text(top.get("name"), "name") or "",
        description=st.text(top.get("description"), "description") or "",
        path=path.resolve(),
        sha256=st.digest.hexdigest(),
        steps=tuple(steps),
        vars=variables,
        secrets=_secrets(st, top.get("secrets")),
        hosts=hosts,
        timeout_s=st.timeout_s,
        sources=tuple(st.sources),
        locs=locs,
        includes=tuple(st.includes),
        groups=groups,
        limit=limit,
        notify=parse_notify(top.get("notify"), st.problems),
    )
    return runbook, st.problems


def _check_overrides_text(overrides: dict[str, Any]) -> None:
    """`--var`/`--vars-file` values no command can carry (a NUL, bytes that were not UTF-8) are bad input."""
    for name, value in overrides.items():
        texts = [name, *_strings(value)]
        for text in texts:
            why = unprintable(text) if isinstance(text, str) else None
            if why:
                raise UsageError(f"--var {name!r}: {why}")


def _strings(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [*value.keys(), *(s for v in value.values() for s in _strings(v))]
    if isinstance(value, list | tuple):
        return [s for v in value for s in _strings(v)]
    return [value]


def _steps(st: _Load, y: Y, scope: _Scope, path: Path, out: list[Step]) -> None:
    if not y.is_list:
        st.bad(y.loc, "steps must be a list")
        return
    for item in y.value:
        if item.is_map and "include" in item.value:
            _include(st, item, scope, path, out)
        else:
            step = _step(st, item, scope)
            if step is not None:
                out.append(step)


def _include(st: _Load, y: Y, scope: _Scope, path: Path, out: list[Step]) -> None:
    st.fields(y, INCLUDE_FIELDS, "include")
    target_y = y.value["include"]
    target = st.text(target_y, "include")
    if target is None:
        return
    found = _resolve_include(st, target, target_y.loc, path, scope.chain[0].parent)
    if found is None:
        return
    if found in scope.chain or len(scope.chain) > MAX_INCLUDE_DEPTH:
        st.bad(target_y.loc, f"include '{target}' includes itself")
        return
    problems: list[RunbookInvalid] = []
    node, raw = read(found, display_path(found), problems)
    st.sources.append(found)
    st.digest.update(raw)
    if node is not None and not (node.is_list or (node.is_map and "steps" in node.value)):
        # Whatever file this is, its content stays out of the message (it may be a key or a password).
        st.bad(target_y.loc, f"include '{target}' is not a playbook (a list of steps, or steps:)")
        return
    st.problems.extend(problems)
    if node is None:
        return
    layer, steps_y, params = _playbook_head(st, node)
    own_vars = frozenset(layer)
    with_y = y.value.get("with")
    with_ys = st.mapping(with_y, "with")
    layer.update({k: v.plain() for k, v in with_ys.items()})
    prefix = st.text(y.value.get("id"), "id")
    inner = _Scope(
        layers=(*scope.layers, layer),
        prefix=f"{scope.prefix}{prefix}." if prefix else scope.prefix,
        owner=st.text(y.value.get("owner"), "owner") or scope.owner,
        chain=(*scope.chain, found),
    )
    first = len(out)
    if steps_y is not None:
        _steps(st, steps_y, inner, found, out)
    st.includes.append(
        Include(target, target_y.loc, {k: v.key_loc or v.loc for k, v in with_ys.items()},
                params, own_vars, tuple(s.id for s in out[first:]))
    )  # fmt: skip


def _playbook_dirs(runbook_dir: Path) -> list[Path]:
    """The playbooks folders of a runbook: beside it (`playbooks/`) or beside its folder."""
    return [d for d in (runbook_dir / "playbooks", runbook_dir.parent / "playbooks") if d.is_dir()]


def _resolve_include(
    st: _Load, target: str, where: SourceLocation, including: Path, runbook_dir: Path
) -> Path | None:
    """The included file: next to the including file first, then in the runbook's playbooks folder.

    A file outside the runbook's folder and its playbooks folder is refused unless the operator opted in
    (`--allow-include-outside`): a runbook from elsewhere must not read ~/.ssh or /etc by including it.
    """
    dirs = _playbook_dirs(runbook_dir)
    candidates = [including.parent / target]
    for d in dirs:
        candidates += [
            d / target,
            d.parent / target,
        ]  # `playbooks/x.yaml` is written from the project
    found = next((c.resolve() for c in candidates if c.is_file()), None)
    if found is None:
        looked = ", ".join(dict.fromkeys(display_path(c.resolve()) for c in candidates))
        st.bad(where, f"include '{target}' does not exist (looked for {looked})")
        return None
    roots = [runbook_dir.resolve(), *(d.resolve() for d in dirs)]
    if not ALLOW_INCLUDE_OUTSIDE.get() and not any(found.is_relative_to(r) for r in roots):
        allowed = " and ".join(display_path(r) for r in roots)
        st.bad(where, f"include '{target}' is outside {allowed}: pass --allow-include-outside "
                      "to include it")  # fmt: skip
        return None
    return found


def _playbook_head(st: _Load, node: Y) -> tuple[dict[str, Any], Y | None, tuple[str, ...] | None]:
    """A playbook's own `vars:` (defaults), its steps, and its `params:` when it declares them."""
    if not node.is_map:
        return {}, node, None
    st.fields(node, PLAYBOOK_FIELDS, "playbook", required=("steps",))
    layer = {k: v.plain() for k, v in st.mapping(node.value.get("vars"), "vars").items()}
    params_y = node.value.get("params")
    params: tuple[str, ...] | None = None
    if params_y is not None and params_y.value is not None:
        if params_y.is_map:  # name: what it is
            params = tuple(params_y.value)
        elif params_y.is_list:
            params = tuple(t for t in (st.text(p, "params") for p in params_y.value) if t)
        else:
            st.bad(params_y.loc, "params must be a list of names (or a mapping name: description)")
    return layer, node.value.get("steps"), params


def is_playbook(root: Y) -> bool:
    """A list of steps, or a mapping with `steps:` and no runbook `name:` (a part meant for `include:`)."""
    if root.is_list:
        return True
    return (
        root.is_map
        and "name" not in root.value
        and "steps" in root.value
        and all(k in PLAYBOOK_FIELDS for k in root.value)
    )


def load_playbook(path: Path) -> tuple[Runbook | None, list[RunbookInvalid]]:
    """A playbook on its own, as a runbook with no hosts; `params` says what its includer must pass."""
    st = _Load()
    root, raw = read(path, display_path(path), st.problems)
    st.sources.append(path.resolve())
    st.digest.update(raw)
    if root is None:
        return None, st.problems
    layer, steps_y, params = _playbook_head(st, root)
    steps: list[Step] = []
    if steps_y is not None and steps_y.value is not None:
        scope = _Scope(layers=(layer,) if layer else (), chain=(path.resolve(),))
        _steps(st, steps_y, scope, path, steps)
    description = st.text(root.value.get("description"), "description") if root.is_map else None
    runbook = Runbook(
        name=path.stem, description=description or "", path=path.resolve(), sha256=st.digest.hexdigest(),
        steps=tuple(steps), sources=tuple(st.sources), includes=tuple(st.includes), is_playbook=True,
        params=params,
    )  # fmt: skip
    return runbook, st.problems


def _step(st: _Load, y: Y, scope: _Scope) -> Step | None:  # noqa: PLR0912 - one branch per field
    if not st.fields(y, STEP_FIELDS, "step", required=("id",)):
        return None
    f: dict[str, Y] = y.value
    locs = {k: v.loc for k, v in f.items()}
    step_id = st.text(f.get("id"), "id")
    if step_id is None:
        return None
    if not _ID.fullmatch(step_id):
        st.bad(f["id"].loc, f"step id '{step_id}' must be letters, digits, '-', '_' or '.'")
    present = [a for a in ACTIONS if a in f]
    if len(present) > 1:
        st.bad(
            f[present[1]].key_loc or y.loc,
            f"a step has one of run, uses, wait, manual (found {' and '.join(present)})",
        )
    if not present and "gate" not in f:
        st.bad(y.loc, f"step '{step_id}' does nothing: give it run, uses, wait, manual or gate")
    kind = Kind.MUTATE
    if "kind" in f:
        try:
            kind = Kind(str(f["kind"].value))
        except ValueError:
            st.bad(
                f["kind"].loc,
                f"kind must be probe, mutate or irreversible, got {shown(f['kind'])}",
            )
    on: tuple[str, ...] = ()
    if "on" in f:
        if f["on"].is_list:
            on = tuple(t for t in (st.text(h, "on") for h in f["on"].value) if t)
        elif (single := st.text(f["on"], "on")) is not None:
            on = (single,)
    capture = st.text(f.get("capture"), "capture")
    if capture is not None and not _NAME.fullmatch(capture):
        st.bad(
            f["capture"].loc,
            f"capture must be a variable name (letters, digits, _), got {capture!r}",
        )
    for key, value in st.mapping(f.get("with"), "with").items():
        locs[f"with.{key}"] = value.key_loc or value.loc
    env: dict[str, str] = {}
    for key, value in st.mapping(f.get("env"), "env").items():
        if not _ENV_NAME.fullmatch(key):
            st.bad(value.key_loc or value.loc, f"env name {key!r} must be letters, digits and _ "
                   "(no spaces, no =)")  # fmt: skip
        env[key] = st.text(value, f"env.{key}") or ""
        locs[f"env.{key}"] = value.loc
    when_y = f.get("when")
    when = (
        when_y.value
        if when_y is not None and isinstance(when_y.value, bool)
        else st.text(when_y, "when")
    )
    return Step(
        id=f"{scope.prefix}{step_id}",
        loc=y.loc,
        name=st.text(f.get("name"), "name"),
        kind=kind,
        kind_explicit="kind" in f,
        on=on,
        run=st.text(f.get("run"), "run"),
        uses=st.text(f.get("uses"), "uses"),
        with_=f["with"].plain() if "with" in f and f["with"].is_map else {},
        check=st.text(f.get("check"), "check"),
        undo=_undo(st, f.get("undo")),
        gate=_gate(st, f.get("gate")),
        capture=capture,
        wait_s=st.duration(f.get("wait"), "wait"),
        manual=st.text(f.get("manual"), "manual"),
        when=when,
        timeout_s=st.duration(f.get("timeout"), "timeout") if "timeout" in f else st.timeout_s,
        retry=_retry(st, f.get("retry"), locs),
        idempotent=st.flag(f.get("idempotent"), "idempotent"),
        env=env,
        continue_on_error=st.flag(f.get("continue_on_error"), "continue_on_error"),
        owner=st.text(f.get("owner"), "owner") or scope.owner,
        scope=scope.layers,
        locs=locs,
        **_fleet_fields(st, f),
    )


def _fleet_fields(st: _Load, f: dict[str, Y]) -> dict[str, Any]:
    """`parallel:`, `batches:`, `max_failures:` of a step that runs on many hosts (opskit/fleet)."""
    from opskit.fleet import rollout  # noqa: PLC0415 - the fleet imports the model, not the reverse

    out: dict[str, Any] = {}
    for key, field_name in (
        ("parallel", "parallel"),
        ("batches", "batches"),
        ("max_failures", "max_failures"),
    ):
        if key in f:
            problem, value = rollout.parse_field(key, f[key].plain())
            if problem:
                st.bad(f[key].loc, problem)
            else:
                out[field_name] = value
    return out


def _undo(st: _Load, y: Y | None) -> Undo | None:
    if y is None or y.value is None:
        return None
    if not y.is_map:
        return Undo(run=st.text(y, "undo"), loc=y.loc)
    st.fields(y, ("run", "uses", "with"), "undo")
    f = y.value
    if ("run" in f) == ("uses" in f):
        st.bad(y.loc, "undo needs exactly one of run or uses")
    with_ = f["with"].plain() if "with" in f and f["with"].is_map else {}
    return Undo(
        run=st.text(f.get("run"), "undo.run"),
        uses=st.text(f.get("uses"), "undo.uses"),
        with_=with_,
        loc=y.loc,
    )


def _gate(st: _Load, y: Y | None) -> Gate | None:
    if y is None or y.value is None:
        return None
    if not y.is_map:
        return Gate(prompt=st.text(y, "gate") or "")
    st.fields(y, ("prompt", "level"), "gate", required=("prompt",))
    level = GateLevel.CONFIRM
    if "level" in y.value:
        try:
            level = GateLevel(str(y.value["level"].value))
        except ValueError:
            st.bad(
                y.value["level"].loc,
                f"gate level must be confirm, typed or critical, got {shown(y.value['level'])}",
            )
    return Gate(prompt=st.text(y.value.get("prompt"), "prompt") or "", level=level)


def _retry(st: _Load, y: Y | None, locs: dict[str, SourceLocation]) -> Retry:
    merged = dict(st.retry)
    if y is not None and st.fields(y, RETRY_FIELDS, "retry"):
        merged.update(y.value)
    for key, value in merged.items():
        locs[f"retry.{key}"] = value.loc
    attempts = 1
    if "attempts" in merged:
        value = merged["attempts"].value
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ATTEMPTS:
            st.bad(
                merged["attempts"].loc,
                f"retry.attempts must be a whole number from 1 to {MAX_ATTEMPTS}, "
                f"got {shown(merged['attempts'])}",
            )
        else:
            attempts = value
    backoff = st.text(merged.get("backoff"), "retry.backoff") or "fixed"
    if backoff not in ("fixed", "exponential"):
        st.bad(
            merged["backoff"].loc, f"retry.backoff must be fixed or exponential, got {backoff!r}"
        )
    on = st.text(merged.get("on"), "retry.on") or "transport"
    if on not in ("transport", "any"):
        st.bad(merged["on"].loc, f"retry.on must be transport or any, got {on!r}")
    delay = st.duration(merged.get("delay"), "retry.delay", zero_ok=True, max_s=MAX_DELAY_S)
    max_delay = st.duration(merged.get("max_delay"), "retry.max_delay", max_s=MAX_DELAY_S)
    return Retry(
        attempts=attempts,
        delay_s=1.0 if delay is None else delay,
        backoff=backoff,
        max_delay_s=30.0 if max_delay is None else max_delay,
        on=on,
    )


def _hosts(st: _Load, y: Y | None, locs: dict[str, SourceLocation]) -> dict[str, HostRef]:
    hosts: dict[str, HostRef] = {}
    for name, entry in st.mapping(y, "hosts").items():
        if name == "groups":
            continue  # read by opskit.fleet.selection
        if not entry.is_map:
            address = st.text(entry, f"hosts.{name}")
            if address:
                hosts[name] = HostRef(name=name, address=address, loc=entry.loc)
            continue
        if not st.fields(entry, HOST_FIELDS, f"host '{name}'", required=("address",)):
            continue
        f = entry.value
        locs.update({f"hosts.{name}.{k}": v.loc for k, v in f.items()})
        port: int | str = 22
        if "port" in f:
            value = f["port"].value
            if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536:
                port = value
            elif is_template(value):
                port = value  # rendered when the run connects, like the address
            else:
                st.bad(
                    f["port"].loc, f"port must be a number from 1 to 65535, got {shown(f['port'])}"
                )
        hosts[name] = HostRef(
            name=name,
            address=st.text(f.get("address"), "address") or "",
            port=port,
            user=st.text(f.get("user"), "user"),
            key_file=st.text(f.get("key_file"), "key_file"),
            known_hosts=st.text(f.get("known_hosts"), "known_hosts"),
            loc=entry.key_loc or entry.loc,
        )
    return hosts


def _secrets(st: _Load, y: Y | None) -> dict[str, SecretRef]:
    secrets: dict[str, SecretRef] = {}
    for name, entry in st.mapping(y, "secrets").items():
        if not st.fields(entry, SECRET_SOURCES, f"secret '{name}'"):
            continue
        where = entry.key_loc or entry.loc
        if not _NAME.fullmatch(name):
            st.bad(where, f"secret name {name!r} must be letters, digits and _")
        twin = next((t for t in secrets if t.upper() == name.upper()), None)
        if (
            twin is not None
        ):  # both would travel in OPSKIT_SECRET_<NAME>: one would get the other's value
            st.bad(where, f"secret '{name}' differs from '{twin}' only in case")
        given = [s for s in SECRET_SOURCES if s in entry.value]
        if len(given) != 1:
            st.bad(entry.loc, f"secret '{name}' needs exactly one of env, file or command")
            continue
        env = st.text(entry.value.get("env"), "env")
        if env is not None and not _ENV_NAME.fullmatch(env):
            st.bad(entry.value["env"].loc, f"env {env!r} is not an environment variable name")
        secrets[name] = SecretRef(
            name=name,
            env=env,
            file=st.text(entry.value.get("file"), "file"),
            command=st.text(entry.value.get("command"), "command"),
            loc=where,
        )
    return secrets

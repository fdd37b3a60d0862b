"""Every problem of a runbook at once, each at its FILE:LINE:COL; nothing runs from an invalid runbook.

`load_runbook()` is the only way the engine gets a `Runbook`: structure (loader), then names, hosts,
templates, actions and their `with:` (each action's own `from_params`), retry rules.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opskit import actions
from opskit.errors import RunbookInvalid, RunbookProblems, SourceLocation, UsageError
from opskit.fleet.hosts import fleet_names
from opskit.redaction import MASK
from opskit.runbook import loader, shell
from opskit.runbook.model import Kind, Runbook, Step
from opskit.runbook.scope import BUILTINS, VarProblem, base_vars
from opskit.runbook.templates import (
    TemplateProblem,
    expression_names,
    is_template,
    names,
    render,
    render_value,
)
from opskit.runbook.waits import step_problems as wait_problems
from opskit.runbook.yamlnodes import read

MAX_SMALL_FILE_BYTES = 1024 * 1024  # a key, a known_hosts or a secret file


def load_runbook(path: Path, overrides: Mapping[str, Any] | None = None) -> Runbook:
    """The validated runbook; raises RunbookProblems listing every problem, in file order."""
    runbook, problems = loader.load(path, dict(overrides or {}))
    if runbook is not None:
        runbook, more = check(runbook)
        problems.extend(more)
    if problems or runbook is None:
        raise RunbookProblems(_sorted(problems, runbook))
    _check_overrides(runbook, overrides or {})
    return runbook


def _check_overrides(runbook: Runbook, overrides: Mapping[str, Any]) -> None:
    """`--var nwe=...` would silently leave `new` at its default: a name nothing reads is bad input."""
    used = _used_names(list(runbook.steps))
    texts = _flat(dict(runbook.vars))
    for h in runbook.hosts.values():
        texts += [h.address, h.user, h.key_file, h.known_hosts]
    for text in texts:
        with contextlib.suppress(TemplateProblem):
            used |= names(text) if is_template(text) else set()
    declared = {k.removeprefix("vars.") for k in runbook.locs if k.startswith("vars.")}
    for name in overrides:
        if name not in declared and name not in used:
            hint = difflib.get_close_matches(name, sorted(declared | used), n=1)
            tip = f"did you mean '{hint[0]}'? " if hint else ""
            raise UsageError(
                f"--var {name}: {loader.display_path(runbook.path)} has no variable {name!r} "
                f"({tip}variables: {', '.join(sorted(declared)) or 'none'})"
            )


@dataclass(frozen=True)
class Validated:
    """What `opskit validate` says about a valid file: a runbook, or a playbook and the names it expects."""

    path: str
    kind: str  # runbook | playbook
    steps: int
    hosts: int
    params: list[str] = field(
        default_factory=list
    )  # playbook: names its includer passes in `with:`
    # "FILE:LINE:COL: run: name" for each `| raw`
    fragments: list[str] = field(default_factory=list)


def validate_file(path: Path, overrides: Mapping[str, Any] | None = None) -> Validated:
    """Validate a runbook, or a playbook on its own (its `params:`, or every name it uses but does not
    define, count as given by the includer); raises RunbookProblems like `load_runbook`."""
    root_problems: list[RunbookInvalid] = []
    root, _ = read(path, loader.display_path(path), root_problems)
    if root is None or not loader.is_playbook(root):
        runbook = load_runbook(path, overrides)
        return Validated(loader.display_path(path), "runbook", len(runbook.steps),
                         len(runbook.hosts), fragments=list(runbook.fragments))  # fmt: skip
    playbook, problems = loader.load_playbook(path)
    if playbook is not None:
        params = set(playbook.params) if playbook.params is not None else _free_names(playbook)
        playbook, more = check(playbook, params=frozenset(params))
        problems.extend(more)
    if problems or playbook is None:
        raise RunbookProblems(_sorted(problems, playbook))
    expects = list(playbook.params) if playbook.params is not None else sorted(params)
    return Validated(loader.display_path(path), "playbook", len(playbook.steps), 0, expects,
                     list(playbook.fragments))  # fmt: skip


def _free_names(runbook: Runbook) -> set[str]:
    """Every name a playbook's templates read that neither it nor the engine defines."""
    used: set[str] = set()
    defined = set(BUILTINS) | set(runbook.captures)
    for step in runbook.steps:
        for layer in step.scope:
            defined |= set(layer)
        for value in _templates(step):
            try:
                used |= names(value) if is_template(value) else set()
            except TemplateProblem:
                continue  # reported by check()
        if isinstance(step.when, str):
            try:
                used |= expression_names(step.when)
            except TemplateProblem:
                continue
    return used - defined


def _templates(step: Step) -> list[Any]:
    """Every string of a step that may hold a template, nested values flattened."""
    out: list[Any] = [step.name, step.run, step.check, step.manual, *step.on, *step.env.values()]
    if step.gate:
        out.append(step.gate.prompt)
    if step.undo:
        out += [step.undo.run, *_flat(step.undo.with_)]
    out += _flat(step.with_)
    for layer in step.scope:
        out += _flat(layer)
    return out


def _flat(value: Any) -> list[Any]:
    if isinstance(value, Mapping):
        return [s for v in value.values() for s in _flat(v)]
    if isinstance(value, list | tuple):
        return [s for v in value for s in _flat(v)]
    return [value]


def _sorted(problems: list[RunbookInvalid], runbook: Runbook | None) -> list[RunbookInvalid]:
    order = {str(p): i for i, p in enumerate(runbook.sources if runbook else [])}
    problems.sort(key=lambda p: (order.get(p.where.file, 0), p.where.line, p.where.col))
    return _unique(problems)


def _unique(problems: list[RunbookInvalid]) -> list[RunbookInvalid]:
    seen: set[str] = set()
    out = []
    for p in problems:
        if str(p) not in seen:
            seen.add(str(p))
            out.append(p)
    return out


class _Checker:
    def __init__(self, runbook: Runbook) -> None:
        self.runbook = runbook
        self.problems: list[RunbookInvalid] = []
        self.captures = runbook.captures
        self.static: dict[str, Any] = {}

    def bad(self, where: SourceLocation, problem: str) -> None:
        self.problems.append(RunbookInvalid(where, problem))

    def names_ok(
        self, src: Any, known: set[str], where: SourceLocation, captured: set[str]
    ) -> None:
        """Report undefined names in a template (or in every string of a nested value)."""
        if isinstance(src, Mapping):
            for v in src.values():
                self.names_ok(v, known, where, captured)
            return
        if isinstance(src, list):
            for v in src:
                self.names_ok(v, known, where, captured)
            return
        if not is_template(src):
            return
        try:
            used = names(src)
        except TemplateProblem as exc:
            self.bad(where, str(exc))
            return
        self._report_unknown(used, known, where, captured)

    def _report_unknown(
        self, used: set[str], known: set[str], where: SourceLocation, captured: set[str]
    ) -> None:
        for name in sorted(used - known - captured):
            if name in self.captures:
                self.bad(
                    where,
                    f"variable '{name}' is captured by step '{self.captures[name]}', which runs later",
                )
            else:
                hint = difflib.get_close_matches(name, sorted(known | captured), n=1)
                tip = f" (did you mean '{hint[0]}'?)" if hint else ""
                self.bad(where, f"undefined variable '{name}'{tip}")


def check(
    runbook: Runbook, *, params: frozenset[str] = frozenset()
) -> tuple[Runbook, list[RunbookInvalid]]:
    """Semantic checks; returns the runbook with each `uses:` step's kind taken from its action.

    `params`: names an includer will pass (a playbook checked on its own): known, but valueless, like a
    captured value, so an action's `with:` that uses one is checked for everything else."""
    places, fragment_names = _fragments(runbook)
    runbook = dataclasses.replace(
        runbook,
        fragments=tuple(places),
        fragment_vars=frozenset(fragment_names & set(runbook.vars)),
        steps=tuple(_with_raw_names(s) for s in runbook.steps),
    )
    c = _Checker(runbook)
    builtins = {n: n.upper() for n in BUILTINS}
    try:
        c.static = base_vars(runbook, builtins)
    except VarProblem as exc:
        c.bad(exc.where or SourceLocation(loader.display_path(runbook.path), 1, 1), exc.problem)
        c.static = {**builtins, **runbook.vars}
    for name, secret in runbook.secrets.items():
        c.static[name] = MASK
        if name in runbook.vars and secret.loc:
            c.bad(secret.loc, f"secret '{name}' has the same name as a variable")
    for name, host in runbook.hosts.items():
        for key in ("address", "port", "user", "key_file", "known_hosts"):
            value = getattr(host, key)
            where = runbook.locs.get(f"hosts.{name}.{key}", host.loc)
            if where is not None:
                c.names_ok(value, set(c.static), where, set())
    _check_files(c, runbook)
    seen: dict[str, Step] = {}
    captured: set[str] = set(params)
    steps = []
    for step in runbook.steps:
        if step.id in seen:
            first = seen[step.id].loc
            c.bad(
                step.where("id"),
                f"duplicate step id '{step.id}' (first at {first.file}:{first.line})",
            )
        seen[step.id] = step
        steps.append(_named(c, _check_step(c, step, captured), captured))
        if step.capture:
            captured.add(step.capture)
    _check_includes(c, runbook)
    return dataclasses.replace(runbook, steps=tuple(steps)), c.problems


def _check_files(c: _Checker, runbook: Runbook) -> None:
    """Key, known_hosts and secret files that exist here must be small text files: else a wrong path."""
    for name, host in runbook.hosts.items():
        for key in ("key_file", "known_hosts"):
            value = getattr(host, key)
            where = runbook.locs.get(f"hosts.{name}.{key}", host.loc)
            try:
                rendered = render(value, c.static).strip() if value else ""
            except TemplateProblem:
                continue
            why = _not_text(Path(rendered).expanduser()) if rendered else None
            if why and where is not None:
                c.bad(where, f"host '{name}': {key} {rendered} {why}")
    for secret in runbook.secrets.values():
        if secret.file and secret.loc is not None:
            why = _not_text(runbook.path.parent / Path(secret.file).expanduser())
            if why:
                c.bad(secret.loc, f"secret '{secret.name}': {secret.file} {why}")


def _not_text(path: Path) -> str | None:
    """Why an existing file cannot be a key, known_hosts or secret file (never says what is in it)."""
    try:
        if not path.exists():
            return None  # it may exist only where the run happens
        if not path.is_file():
            return "is not a regular file"
        if path.stat().st_size > MAX_SMALL_FILE_BYTES:
            return f"is larger than {MAX_SMALL_FILE_BYTES // 1024} KiB: not a key or a secret"
        head = path.read_bytes()
    except OSError:
        return None  # unreadable here: the run says so where it reads it
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return "is a binary file, not text"
    return "is a binary file, not text" if b"\0" in head else None


def _with_raw_names(step: Step) -> Step:
    raw = {n for _, src, _ in _command_sources(step) for n in shell.fragments(str(src))}
    return dataclasses.replace(step, raw_names=frozenset(raw)) if raw else step


def _command_sources(step: Step) -> list[tuple[str, Any, SourceLocation]]:
    """The step's shell text: run, check, undo, an action's command params (proxy.start's stop_old),
    and each include `with:` value one of them inserts with `| raw` (its own values quoted too)."""
    undo_where = step.undo.loc if step.undo and step.undo.loc else step.loc
    srcs: list[tuple[str, Any, SourceLocation]] = [
        ("run", step.run, step.where("run")),
        ("check", step.check, step.where("check")),
        ("undo", step.undo.run if step.undo else None, undo_where),
    ]
    srcs += [(f"with.{k}", step.with_.get(k), step.where("with")) for k in _command_params(step)]
    srcs = [s for s in srcs if is_template(s[1])]
    names = {n for _, src, _ in srcs for n in shell.fragments(str(src))}
    for layer in reversed(step.scope):  # innermost first: a layer's value uses the one around it
        for name in sorted(names & set(layer)):
            if isinstance(layer[name], str) and is_template(layer[name]):
                srcs.append((f"include with.{name}", layer[name], step.loc))
                names |= set(shell.fragments(layer[name]))
    return srcs


def _command_params(step: Step) -> tuple[str, ...]:
    if not step.uses or is_template(step.uses):
        return ()
    try:
        return tuple(getattr(actions.load(step.uses), "command_params", ()))
    except actions.UnknownAction:
        return ()  # reported by the step's own check


def _fragments(runbook: Runbook) -> tuple[list[str], set[str]]:
    """Each place a command inserts a value as shell text (`| raw`), and the names so inserted."""
    places: list[str] = []
    inserted: set[str] = set()
    include_locs = {i: inc.with_locs for inc in runbook.includes for i in inc.step_ids}
    for step in runbook.steps:
        for field_name, src, at in _command_sources(step):
            name_passed = field_name.removeprefix("include with.")
            where = include_locs.get(step.id, {}).get(name_passed, at)
            for name in shell.fragments(str(src)):
                source = runbook.captures.get(name)
                note = f" (output of step {source}: it runs as shell code)" if source else ""
                places.append(f"{where}: {field_name}: {name}{note}")
                inserted.add(name)
    return places, inserted


def _check_includes(c: _Checker, runbook: Runbook) -> None:
    """A `with:` key the playbook never reads is a typo: its default would be used without a word."""
    by_id = {s.id: s for s in runbook.steps}
    for inc in runbook.includes:
        if inc.params is not None:
            takes = list(inc.params)
        else:
            used = _used_names([by_id[i] for i in inc.step_ids if i in by_id])
            takes = sorted(used - inc.vars)
        accepted = set(takes) | inc.vars
        listing = ", ".join(takes) or "nothing"
        if inc.vars:
            listing += f"; defaults you may override: {', '.join(sorted(inc.vars))}"
        for key, where in inc.with_locs.items():
            if key not in accepted:
                hint = difflib.get_close_matches(key, sorted(accepted), n=1)
                tip = f"did you mean '{hint[0]}'? " if hint else ""
                c.bad(where, f"{inc.path} does not use '{key}' ({tip}it takes: {listing})")


def _used_names(steps: list[Step]) -> set[str]:
    used: set[str] = set()
    for step in steps:
        for value in _templates(step):
            with contextlib.suppress(TemplateProblem):
                used |= names(value) if is_template(value) else set()
        if isinstance(step.when, str):
            with contextlib.suppress(TemplateProblem):
                used |= expression_names(step.when)
    return used


def _check_step(c: _Checker, step: Step, captured: set[str]) -> Step:  # noqa: PLR0912 - one check per field
    known = set(c.static) | fleet_names(c.runbook)
    ctx: dict[str, Any] = dict(c.static)
    for layer in step.scope:
        c.names_ok(dict(layer), set(ctx), step.loc, captured)
        ctx = {**ctx, **{k: _try_render(v, ctx) for k, v in layer.items()}}
        known |= set(layer)
    for field_name in ("name", "run", "check", "manual", "capture"):
        c.names_ok(getattr(step, field_name), known, step.where(field_name), captured)
    if step.gate:
        c.names_ok(step.gate.prompt, known, step.where("gate"), captured)
    if isinstance(step.when, str):
        try:
            c._report_unknown(expression_names(step.when), known, step.where("when"), captured)
        except TemplateProblem as exc:
            c.bad(step.where("when"), str(exc))
    for key, value in step.env.items():
        c.names_ok(value, known, step.where(f"env.{key}"), captured)
    for key, value in step.with_.items():
        c.names_ok(value, known, step.where(f"with.{key}"), captured)
    _check_hosts(c, step, known, ctx, captured)
    for problem in wait_problems(step, ctx):
        c.bad(problem.where, problem.problem)
    if step.retry.on == "any" and not (step.check or step.idempotent):
        c.bad(
            step.where("retry.on"),
            "retry.on: any re-runs a failed command: allowed only with check: or idempotent: true",
        )
    if step.undo is not None and step.undo.loc is not None:
        c.names_ok(step.undo.run, known, step.undo.loc, captured)
        c.names_ok(dict(step.undo.with_), known, step.undo.loc, captured)
        if step.undo.uses:
            _check_action(c, step.undo.uses, step.undo.with_, step.undo.loc, {}, ctx, captured)
    if step.uses:
        kind = _check_action(c, step.uses, step.with_, step.where("uses"), step.locs, ctx, captured)
        if kind is not None and not step.kind_explicit:
            return dataclasses.replace(step, kind=kind)
    if step.wait_s is not None and not step.kind_explicit:
        return dataclasses.replace(step, kind=Kind.PROBE)  # waiting changes nothing
    return step


def _named(c: _Checker, step: Step, captured: set[str]) -> Step:
    """The step with its `name:` rendered, so the journal, plan, status and report show the real title.

    Left as written when it needs a value only the run has (a capture, the run id, the operator)."""
    if not is_template(step.name):
        return step
    try:
        used = names(str(step.name))
    except TemplateProblem:
        return step  # reported by _check_step
    if used & (captured | set(BUILTINS)):
        return step
    ctx: dict[str, Any] = dict(c.static)
    for layer in step.scope:
        ctx = {**ctx, **{k: _try_render(v, ctx) for k, v in layer.items()}}
    try:
        return dataclasses.replace(step, name=render(str(step.name), ctx).strip())
    except TemplateProblem:
        return step


def _check_hosts(
    c: _Checker, step: Step, known: set[str], ctx: Mapping[str, Any], captured: set[str]
) -> None:
    hosts = c.runbook.hosts
    for entry in step.on:
        c.names_ok(entry, known, step.where("on"), captured)
        if c.runbook.is_playbook:
            continue  # its hosts are the includer's
        try:
            name = render(entry, ctx).strip()
        except TemplateProblem:
            continue  # reported above, or depends on a captured value
        if (
            name not in hosts
            and name not in c.runbook.groups
            and name not in ("local", "localhost")
        ):
            choices = ", ".join(sorted(hosts)) or "none defined"
            hint = difflib.get_close_matches(name, sorted(hosts), n=1)
            tip = f"did you mean '{hint[0]}'? " if hint else ""
            c.bad(step.where("on"), f"unknown host '{name}' ({tip}hosts: {choices})")


def _try_render(value: Any, ctx: Mapping[str, Any]) -> Any:
    try:
        return render_value(value, ctx)
    except TemplateProblem:
        return value


def _check_action(  # noqa: PLR0917 - private, called twice
    c: _Checker,
    name: str,
    with_: Mapping[str, Any],
    where: SourceLocation,
    locs: Mapping[str, SourceLocation],
    ctx: Mapping[str, Any],
    captured: set[str],
) -> Kind | None:
    try:
        cls = actions.load(name)
    except actions.UnknownAction as exc:
        c.bad(where, str(exc))
        return None
    except ImportError as exc:
        c.bad(where, f"action '{name}' is registered but cannot be imported ({exc})")
        return None
    # A host's own values (inventory_hostname, host vars) are known only on that host, at run time.
    raw, deferred = render_params(with_, ctx, captured | fleet_names(c.runbook))
    try:
        cls.from_params(actions.Params(raw, frozenset(deferred)))
    except actions.ParamError as exc:
        key_where = (
            locs.get(f"with.{exc.key}", locs.get("with", where))
            if exc.key
            else locs.get("with", where)
        )
        c.bad(key_where, f"{name}: {exc}")
    _check_shell_params(c, name, cls, with_, where, locs, ctx)
    return Kind(str(cls.kind))


def _check_shell_params(  # noqa: PLR0917 - private, one caller
    c: _Checker, name: str, cls: Any, with_: Mapping[str, Any], where: SourceLocation,
    locs: Mapping[str, SourceLocation], ctx: Mapping[str, Any],
) -> None:  # fmt: skip
    """An action's shell commands (proxy.start's stop_old) render as `run:` does when the step runs:
    a problem only the shell renderer sees (a secret in a <<'EOF' body) is reported here, at its key."""
    shell_ctx = {**ctx, **shell.secret_view(c.runbook.secrets)}
    for key in getattr(cls, "command_params", ()):
        value = with_.get(key)
        if not isinstance(value, str) or not is_template(value):
            continue
        try:
            if not names(value) <= set(shell_ctx):
                continue  # an undefined name is reported by names_ok; a captured one is known later
            shell.render_command(value, shell_ctx)
        except TemplateProblem as exc:
            c.bad(locs.get(f"with.{key}", locs.get("with", where)), f"{name}: with.{key}: {exc}")


def render_params(
    with_: Mapping[str, Any], ctx: Mapping[str, Any], runtime_names: set[str] | Mapping[str, Any]
) -> tuple[dict[str, Any], set[str]]:
    """`with:` rendered where possible; keys whose templates need a value only a run produces are deferred."""
    raw: dict[str, Any] = {}
    deferred: set[str] = set()
    for key, value in with_.items():
        try:
            raw[key] = render_value(value, ctx)
        except TemplateProblem:
            if _uses_any(value, set(runtime_names)):
                deferred.add(key)
            else:
                raw[key] = value
    return raw, deferred


def _uses_any(value: Any, wanted: set[str]) -> bool:
    if isinstance(value, Mapping):
        return any(_uses_any(v, wanted) for v in value.values())
    if isinstance(value, list):
        return any(_uses_any(v, wanted) for v in value)
    try:
        return bool(names(value) & wanted) if is_template(value) else False
    except TemplateProblem:
        return False

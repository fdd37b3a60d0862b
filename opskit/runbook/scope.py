"""The variables a step's templates see: vars, secrets (in one of three views), captures, include scopes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opskit import actions
from opskit.errors import SourceLocation
from opskit.runbook.model import Runbook, Step
from opskit.runbook.shell import render_command, render_fragment, secret_env_name
from opskit.runbook.templates import TemplateProblem, render, render_value

BUILTINS = ("run_id", "operator")


class VarProblem(TemplateProblem):
    """A `vars:` entry that does not render, at its FILE:LINE:COL when known."""

    def __init__(self, where: SourceLocation | None, problem: str) -> None:
        super().__init__(f"{where}: {problem}" if where else problem)
        self.where, self.problem = where, problem


def base_vars(runbook: Runbook, builtins: Mapping[str, Any]) -> dict[str, Any]:
    """`vars:` rendered in order (a var may use an earlier one), plus run_id and operator."""
    ctx: dict[str, Any] = dict(builtins)
    for name, value in runbook.vars.items():
        try:
            if name in runbook.fragment_vars and isinstance(value, str):
                # A command fragment (`{{ stop_old | raw }}`): the values it holds are still quoted.
                ctx[name] = render_fragment(value, ctx)
                continue
            ctx[name] = render_value(value, ctx)
        except TemplateProblem as exc:
            where = runbook.locs.get(f"vars.{name}")
            raise VarProblem(where, f"vars.{name}: {exc}") from None
    return ctx


def step_context(
    step: Step,
    base: Mapping[str, Any],
    secrets: Mapping[str, Any],
    captures: Mapping[str, Any],
) -> dict[str, Any]:
    """The context of one step; each include layer is rendered in the scope around it."""
    ctx: dict[str, Any] = {**base, **secrets, **captures}
    for layer in step.scope:
        ctx = {**ctx, **{k: _layer_value(step, k, v, ctx) for k, v in layer.items()}}
    return ctx


def _layer_value(step: Step, name: str, value: Any, ctx: Mapping[str, Any]) -> Any:
    """An include's `with:` value; one the step inserts as shell text has its own values quoted."""
    if name in step.raw_names and isinstance(value, str):
        return render_fragment(value, ctx)
    return render_value(value, ctx)


def command_params(uses: str | None) -> tuple[str, ...]:
    """The `with:` keys of action `uses` that are shell commands (proxy.start's stop_old, start_old)."""
    if not uses:
        return ()
    try:
        return tuple(getattr(actions.load(uses), "command_params", ()))
    except (actions.UnknownAction, ImportError):
        return ()  # the step's own load reports it


def render_with(
    uses: str | None,
    with_: Mapping[str, Any],
    ctx: Mapping[str, Any],
    shell_ctx: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """An action's `with:` rendered: its shell commands like `run:`, in `shell_ctx` (each value one
    argument, each secret a reference, issue #10), everything else with the values of `ctx`."""
    commands = command_params(uses)
    rendered: dict[str, Any] = {}
    for key, value in with_.items():
        if key in commands and isinstance(value, str):
            command = render_command(value, ctx if shell_ctx is None else shell_ctx)
            secret_vars = {secret_env_name(n): n for n in sorted(command.secrets)}
            rendered[key] = actions.ShellCommand(command.text, command.shown, secret_vars)
        else:
            rendered[key] = render_value(value, ctx)
    return rendered


def render_hosts(step: Step, ctx: Mapping[str, Any]) -> tuple[str, ...]:
    """The step's `on:` host names with templates filled (a playbook may say `on: "{{ host }}"`)."""
    return tuple(render(h, ctx).strip() for h in step.on)

"""`{{ }}` templates: Jinja2 sandboxed, undefined names are errors, secrets never rendered into text.

A secret renders three ways: as `***` for anything a person sees, as a shell environment reference
(`"$OPSKIT_SECRET_DB_PW"`) in a `run:` command (the value travels in the environment, never in argv), and
as its value only where it stays in-process (`with:` of an action, `env:` of a step). Shell commands are
rendered by `opskit.runbook.shell`, which quotes every value; this module renders everything else.
jinja2 is imported on first use: a runbook without templates never pays for it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from opskit.errors import OpskitError
from opskit.runbook.shell import masked_view, secret_view

_MARKERS = ("{{", "{%", "{#")
_FALSE_WORDS = {"", "false", "no", "0", "off", "none"}


class TemplateProblem(OpskitError):
    """A template that does not render: bad syntax, an undefined name, a forbidden operation."""


def is_template(text: object) -> bool:
    """True when the value is a string with Jinja markers in it."""
    return isinstance(text, str) and any(m in text for m in _MARKERS)


MAX_RESULT_LEN = 1_000_000  # `{{ 'x' * 10**9 }}` would take a gigabyte before anything checks it
MAX_EXPONENT = 1024  # `{{ 10 ** 10**8 }}` would compute for minutes


def sandboxed_environment(**options: Any) -> Any:
    """A Jinja sandbox where undefined names are errors and `*`, `**` cannot build a bomb."""
    from jinja2 import StrictUndefined  # noqa: PLC0415 - imported on first use, keeps start-up fast
    from jinja2.exceptions import SecurityError  # noqa: PLC0415 - imported on first use, keeps start-up fast
    from jinja2.sandbox import SandboxedEnvironment  # noqa: PLC0415 - imported on first use, keeps start-up fast

    class Sandbox(SandboxedEnvironment):
        intercepted_binops = frozenset({"*", "**"})

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            if operator == "**" and isinstance(right, int) and abs(right) > MAX_EXPONENT:
                raise SecurityError(f"exponent {right} is larger than {MAX_EXPONENT}")
            if operator == "*":
                for seq, times in ((left, right), (right, left)):
                    sized = isinstance(seq, str | list | tuple) and isinstance(times, int)
                    if sized and len(seq) * times > MAX_RESULT_LEN:
                        raise SecurityError(f"a result longer than {MAX_RESULT_LEN}")
            return super().call_binop(context, operator, left, right)

    return Sandbox(undefined=StrictUndefined, keep_trailing_newline=True, **options)


@lru_cache(maxsize=1)
def _env() -> Any:
    env = sandboxed_environment()
    env.filters["raw"] = str  # only shell commands quote; elsewhere `| raw` changes nothing
    return env


@lru_cache(maxsize=4096)
def _compiled(src: str) -> Any:
    return _env().from_string(src)


@lru_cache(maxsize=1024)
def _compiled_expression(src: str) -> Any:
    return _env().compile_expression(src)


def explain(exc: Exception) -> str:
    """Jinja's error as one short line (`undefined variable 'x'`)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    undefined = re.match(r"'(\w+)' is undefined", text)
    if undefined:
        return f"undefined variable '{undefined.group(1)}'"
    return text


def names(src: str) -> set[str]:
    """The top-level names a template reads (raises TemplateProblem on bad syntax)."""
    if not is_template(src):
        return set()
    from jinja2 import TemplateSyntaxError, meta  # noqa: PLC0415 - imported on first use, keeps start-up fast

    try:
        return set(meta.find_undeclared_variables(_env().parse(src)))
    except TemplateSyntaxError as exc:
        raise TemplateProblem(f"template syntax: {exc.message}") from None
    except RecursionError:  # `{{ ((((...)))) }}` thousands deep: the parser recurses per level
        raise TemplateProblem("template syntax: nested too deeply") from None


def expression_names(src: str) -> set[str]:
    """The names a `when:` expression reads (bare expression or a `{{ }}` template)."""
    return names(src if is_template(src) else "{{ " + src + " }}")


def render(src: str, context: Mapping[str, Any]) -> str:
    """The rendered text; raises TemplateProblem naming the undefined variable."""
    if not is_template(src):
        return src
    try:
        return str(_compiled(src).render(dict(context)))
    except Exception as exc:  # noqa: BLE001 - jinja raises many types; each becomes one line
        raise TemplateProblem(explain(exc)) from None


def render_value(value: Any, context: Mapping[str, Any]) -> Any:
    """Strings rendered recursively inside mappings and lists; other values unchanged."""
    if isinstance(value, str):
        return render(value, context)
    if isinstance(value, Mapping):
        return {k: render_value(v, context) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [render_value(v, context) for v in value]
    return value


def truth(when: str | bool, context: Mapping[str, Any]) -> bool:
    """Whether a `when:` holds: a bare expression (`old != new`) or a template rendering to true/false."""
    if isinstance(when, bool):
        return when
    if is_template(when):
        return render(when, context).strip().lower() not in _FALSE_WORDS
    try:
        return bool(_compiled_expression(when)(**dict(context)))
    except Exception as exc:  # noqa: BLE001 - see render()
        raise TemplateProblem(explain(exc)) from None


def display_secrets(secret_names: Mapping[str, str] | list[str] | set[str]) -> dict[str, str]:
    """A context fragment that shows every secret as *** (in a shell command too, see shell.py)."""
    return masked_view(secret_names)


def shell_secrets(secret_names: Mapping[str, str] | list[str] | set[str]) -> dict[str, str]:
    """A context fragment for a command that runs: every secret as a reference `shell.py` resolves."""
    return secret_view(secret_names)

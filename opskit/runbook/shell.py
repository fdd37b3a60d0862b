"""Where a value meets the shell: `run:`, `check:` and `undo:` are rendered here, and nowhere else.

The rule (issue #10): every `{{ }}` in a shell command reaches the shell as exactly one argument, whatever
it holds (`x; touch /tmp/p`, `$(...)`, backticks, quotes, newlines, globs). Each expression's value is
set aside while Jinja renders, then put back quoted for the place it lands in: bare (`{{ v }}`), inside
the author's double quotes (`"{{ v }}"`) or inside single quotes (`'{{ v }}'`); all three give the same
single argument. A secret is never put in the text: it becomes a reference to the environment variable it
travels in (`"$OPSKIT_SECRET_DB_PW"`), so it stays out of argv, and the operator sees `***` in the same
place. A value meant as shell text says so: `{{ stop_old | raw }}`, listed by `opskit validate`.
"""

from __future__ import annotations

import re
import secrets as pysecrets
import shlex
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from opskit.redaction import MASK

_VALUE_OPEN, _VALUE_CLOSE = "\ue000", "\ue001"
_VALUE = re.compile(f"{_VALUE_OPEN}(\\d+){_VALUE_CLOSE}")
# The nonce keeps text that arrives from outside (a captured line from a remote host) from naming a
# secret: only references made by this process carry it.
_NONCE = pysecrets.token_hex(8)
_SECRET = re.compile(f"\ue002{_NONCE}:([A-Za-z0-9_.-]+)\ue003")
_ENV_UNSAFE = re.compile(r"[^A-Za-z0-9]")

_set_aside: ContextVar[list[str | None] | None] = ContextVar("opskit_shell_values", default=None)


class Raw(str):
    """A value the runbook inserts as shell text, unquoted (`{{ fragment | raw }}`)."""

    __slots__ = ()


class MaskedSecret(str):
    """A secret in the operator's view of a command: shown as *** where the real command has its reference."""

    __slots__ = ()


def secret_env_name(name: str) -> str:
    """The environment variable a secret travels in: db_pw -> OPSKIT_SECRET_DB_PW."""
    return "OPSKIT_SECRET_" + _ENV_UNSAFE.sub("_", name).upper()


def secret_marker(name: str) -> str:
    """What a secret is in the context of a shell command: a reference resolved only by `render_command`."""
    return f"\ue002{_NONCE}:{name}\ue003"


def secret_view(names: Any) -> dict[str, str]:
    """A context fragment for rendering a command that will run: each secret as its reference."""
    return {n: secret_marker(n) for n in names}


def masked_view(names: Any) -> dict[str, str]:
    """A context fragment for showing a command: each secret as ***."""
    return {n: MaskedSecret(MASK) for n in names}


def raw(value: Any) -> Raw:
    """The `raw` filter: this value is shell text (a command fragment), not an argument."""
    return Raw(str(value))


def _finalize(value: Any) -> Any:
    pending = _set_aside.get()
    if pending is None or isinstance(value, Raw):
        return value
    pending.append(None if isinstance(value, MaskedSecret) else str(value))
    return f"{_VALUE_OPEN}{len(pending) - 1}{_VALUE_CLOSE}"


@lru_cache(maxsize=1)
def _env() -> Any:
    from opskit.runbook.templates import sandboxed_environment  # noqa: PLC0415 - templates imports us

    env = sandboxed_environment(finalize=_finalize)
    env.filters["raw"] = raw
    return env


@lru_cache(maxsize=4096)
def _compiled(src: str) -> Any:
    return _env().from_string(src)


@dataclass(frozen=True)
class Command:
    """A rendered shell command: the text that runs, what the operator sees, the secrets it needs."""

    text: str
    shown: str
    secrets: frozenset[str]


def _render(src: str, context: Mapping[str, Any]) -> tuple[str, list[str | None]]:
    from opskit.runbook.templates import TemplateProblem, explain  # noqa: PLC0415 - templates imports us

    pending: list[str | None] = []
    token = _set_aside.set(pending)
    try:
        return str(_compiled(src).render(dict(context))), pending
    except Exception as exc:  # noqa: BLE001 - jinja raises many types; each becomes one line
        raise TemplateProblem(explain(exc)) from None
    finally:
        _set_aside.reset(token)


def render_command(src: str, context: Mapping[str, Any]) -> Command:
    """Render a `run:`/`check:`/`undo:` template; raises TemplateProblem like `templates.render`."""
    rendered, pending = _render(src, context)
    used: set[str] = set()
    text = _put_back(rendered, pending, used, _RUN)
    shown = _put_back(rendered, pending, set(), _SHOW)
    return Command(text, shown, frozenset(used))


def render_fragment(src: str, context: Mapping[str, Any]) -> str:
    """Render shell text that a command will insert with `| raw` (`stop_old: "systemctl stop {{ svc }}"`).

    Its values are quoted like a command's; its secrets stay references, resolved (and passed in the
    environment) by the command that inserts it."""
    rendered, pending = _render(src, context)
    return _put_back(rendered, pending, set(), _FRAGMENT)


# --- putting values back, quoted for where they land ---------------------------------------------------
# The states a position in a bash command can be in; only the innermost one decides how a value is quoted.
_BARE, _DOUBLE, _SINGLE, _ANSI, _SUBSHELL, _BACKTICK, _COMMENT = "U", "D", "S", "A", "P", "K", "C"
_WORD_START = " \t\n;&|()<>"
_MARKER_STARTS = (_VALUE_OPEN, "\ue002")
_RUN, _SHOW, _FRAGMENT = "run", "show", "fragment"  # what a secret becomes: reference, ***, marker
_DOC, _QUOTED_DOC = "H", "Q"  # a here-document body: `<<EOF` expands `$`, `<<'EOF'` does not
_DELIMITER = re.compile(r"<<(-?)[ \t]*(?:'([^'\n]*)'|\"([^\"\n]*)\"|\\?([A-Za-z0-9_.-]+))")


@dataclass
class _Scan:
    """Where the walk over a command is: the quoting states, innermost last, and pending here-documents."""

    stack: list[str]
    docs: list[tuple[str, str, bool]]  # (delimiter, _DOC | _QUOTED_DOC, strip leading tabs)


def _put_back(rendered: str, values: list[str | None], used: set[str], mode: str) -> str:
    out: list[str] = []
    scan = _Scan([_BARE], [])
    i = 0
    while i < len(rendered):
        marker = _VALUE.match(rendered, i)
        if marker and int(marker.group(1)) < len(values):
            value = values[int(marker.group(1))]
            out.append(_quoted(value, scan.stack[-1], used, mode))
            i = marker.end()
            continue
        secret = _SECRET.match(rendered, i)
        if secret:  # a reference inside raw text
            out.append(_quoted(secret.group(0), scan.stack[-1], used, mode))
            i = secret.end()
            continue
        step = _advance(rendered, i, scan)
        out.append(rendered[i : i + step])
        i += step
    return "".join(out)


def _newline(scan: _Scan) -> None:
    """The end of a command line: the here-documents it opened start, the first one innermost."""
    for delimiter, kind, strip in reversed(scan.docs):
        scan.stack.append(f"{kind}{'-' if strip else ''}:{delimiter}")
    scan.docs.clear()


def _in_doc(text: str, i: int, scan: _Scan) -> int:
    state = scan.stack[-1]
    if i == 0 or text[i - 1] == "\n":
        end = text.find("\n", i)
        line = text[i : len(text) if end < 0 else end]
        head, _, delimiter = state.partition(":")
        if (line.lstrip("\t") if head.endswith("-") else line) == delimiter:
            scan.stack.pop()
            return max(len(line), 1)
    return 1


def _advance(text: str, i: int, scan: _Scan) -> int:  # noqa: PLR0911, PLR0912 - one branch per token
    """Move the quoting state over the shell text at `i`; returns how many characters it read."""
    stack = scan.stack
    state, c = stack[-1], text[i]
    if state[0] in (_DOC, _QUOTED_DOC):
        return _in_doc(text, i, scan)
    if state == _SINGLE:
        if c == "'":
            stack.pop()
        return 1
    if state == _COMMENT:
        if c == "\n":
            stack.pop()
            _newline(scan)
        return 1
    if c == "\\":
        # A value put back right after a backslash is still quoted as a whole (never half-escaped).
        return 2 if i + 1 < len(text) and text[i + 1] not in _MARKER_STARTS else 1
    if state == _ANSI:
        if c == "'":
            stack.pop()
        return 1
    if text.startswith("$(", i):
        stack.append(_SUBSHELL)
        return 2
    if c == "`":
        if state == _BACKTICK:
            stack.pop()
        else:
            stack.append(_BACKTICK)
        return 1
    if state == _DOUBLE:
        if c == '"':
            stack.pop()
        return 1
    if text.startswith("$'", i):
        stack.append(_ANSI)
        return 2
    doc = _DELIMITER.match(text, i) if not text.startswith("<<<", i) else None
    if doc:
        quoted_word = doc.group(2) if doc.group(2) is not None else doc.group(3)
        quoted = quoted_word is not None or "\\" in doc.group(0)  # <<'EOF', <<"EOF", <<\EOF
        word = quoted_word if quoted_word is not None else doc.group(4)
        scan.docs.append((word, _QUOTED_DOC if quoted else _DOC, doc.group(1) == "-"))
        return doc.end() - i
    if c == "'":
        stack.append(_SINGLE)
    elif c == '"':
        stack.append(_DOUBLE)
    elif c == "(":
        stack.append(_SUBSHELL)
    elif c == ")" and state == _SUBSHELL:
        stack.pop()
    elif c == "#" and (i == 0 or text[i - 1] in _WORD_START):
        stack.append(_COMMENT)
    elif c == "\n" and scan.docs:
        _newline(scan)
    return 1


def _pieces(value: str) -> Iterator[tuple[str, bool]]:
    """The value as (text, is_secret_name) pieces: a value may hold secret references (`'x' ~ pw`)."""
    pos = 0
    for m in _SECRET.finditer(value):
        if m.start() > pos:
            yield value[pos : m.start()], False
        yield m.group(1), True
        pos = m.end()
    if pos < len(value):
        yield value[pos:], False


def _quoted(value: str | None, state: str, used: set[str], mode: str) -> str:
    if value is None:  # a secret in the operator's view
        return MASK
    if state[0] in (_DOC, _QUOTED_DOC):
        return _in_document(value, state, used, mode)
    parts = [
        _quoted_secret(text, state, used, mode) if is_secret else _quoted_text(text, state)
        for text, is_secret in _pieces(value)
    ]
    if not parts and state not in (_DOUBLE, _SINGLE):
        return "''"  # an empty value is still one (empty) argument
    return "".join(parts)


def _in_document(value: str, state: str, used: set[str], mode: str) -> str:
    """A value in a here-document body: its exact text, and never the line that would end it."""
    from opskit.runbook.templates import TemplateProblem  # noqa: PLC0415 - templates imports us

    delimiter = state.partition(":")[2]
    if delimiter and delimiter in value:
        raise TemplateProblem(
            f"a value holds {delimiter!r}, which would end the here-document early"
        )
    parts = []
    for text, is_secret in _pieces(value):
        if not is_secret:
            parts.append(re.sub(r"([\\$`])", r"\\\1", text) if state[0] == _DOC else text)
        elif mode == _RUN and state[0] == _QUOTED_DOC:
            raise TemplateProblem("a secret cannot be read in a <<'EOF' here-document: use <<EOF")
        else:
            parts.append(_quoted_secret(text, _DOUBLE, used, mode))
    return "".join(parts)


def _quoted_text(text: str, state: str) -> str:
    if state == _DOUBLE:
        return re.sub(r'([\\"$`])', r"\\\1", text)
    if state == _SINGLE:
        return text.replace("'", "'\\''")
    if state == _ANSI:
        return "'" + shlex.quote(text) + "$'"
    return shlex.quote(text)


def _quoted_secret(name: str, state: str, used: set[str], mode: str) -> str:
    if mode == _SHOW:
        return MASK
    if mode == _FRAGMENT:
        return secret_marker(name)  # quoted where the fragment lands
    used.add(name)
    ref = secret_env_name(name)
    if state == _DOUBLE:
        return "${" + ref + "}"
    if state == _SINGLE:
        return f"'\"${{{ref}}}\"'"
    if state == _ANSI:
        return f"'\"${{{ref}}}\"$'"
    return f'"${{{ref}}}"'


def fragments(src: str) -> list[str]:
    """The expressions a command inserts as shell text (`| raw`), as written: for `validate` to list."""
    from jinja2 import TemplateSyntaxError, nodes  # noqa: PLC0415 - imported on first use, keeps start-up fast

    try:
        tree = _env().parse(src)
    except (TemplateSyntaxError, RecursionError):
        return []  # reported by validate as a template problem
    found: list[str] = []
    for node in tree.find_all(nodes.Filter):
        if node.name == "raw":
            inner = node.node
            found.append(inner.name if isinstance(inner, nodes.Name) else "an expression")
    return found

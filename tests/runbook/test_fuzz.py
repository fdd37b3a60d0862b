"""Fuzz: 200 generated malformed runbooks, each refused by `validate` and `run --dry-run` in located lines.

Each case is a small valid runbook with one to three mutations, every one of which alone makes it invalid
(a bad value for a field, broken YAML, an alias bomb, deep nesting, bytes that are not text). The seed is
fixed, so a failure names a case that fails again the same way.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from opskit.errors import ExitCode
from tests.conftest import Invoke

SEED = 20261201
CASES = 200
LOCATED = re.compile(r"^.+:\d+:\d+: \S.*$")
SUMMARY = re.compile(r"^opskit: (\d+) problems?; nothing ran$")

Fields = dict[str, str]
Mutation = Callable[[Fields, Fields, random.Random], None]

BAD_DURATIONS = [
    ".nan",
    ".inf",
    "-.inf",
    "0",
    "-1",
    "abc",
    "1e400",
    "99999999d",
    "[]",
    "{}",
    "true",
]
BAD_VALUES = {
    "retry": ["{attempts: 0}", "{attempts: 1.5}", "{delay: .nan}", "{on: sometimes}",
              "{backoff: random}", "3", "{attempts: 2, bogus: 1}", "{attempts: 1000}"],
    "kind": ["mutating", "1", "[probe]", "{a: b}"],
    "id": ["'has space'", "''", "-lead", "[a]", "~", "'a/b'"],
    "run": ["'{{ undefined_var }}'", "'{{ (oops'", "'{% if %}'", '"\\0"', '"\\ud800"', "[1, 2]",
            "{a: b}", "'{{ svc | nosuchfilter }}'"],
    "on": ["nohost", "[h, nohost]", "'{{ missing_host }}'", "{a: 1}"],
    "gate": ["{level: bogus, prompt: x}", "{prompt: x, extra: 1}", "{level: critical}"],
    "env": ["{'A B': x}", "{'A=B': x}", "[1]", "{OK: '{{ nope }}'}"],
    "when": ["'{{ nope }}'", "'1 +'", "[1]"],
    "capture": ["'not a name'", "1-2", "[a]"],
    "undo": ["{run: a, uses: b}", "{bogus: 1}", "'{{ nope }}'", "{uses: no.such.action}"],
    "uses": ["no.such.action", "[x]"],
    "check": ["'{{ nope }}'", "[x]"],
    "idempotent": ["maybe", "3"],
    "bogus_step_field": ["1"],
}  # fmt: skip
BAD_TOP = {
    "name": ["[a]", "{a: 1}"],
    "vars": ["[1, 2]", "3", "{a: '{{ b_undefined }}'}"],
    "hosts": ["{h: {port: 70000, address: x}}", "{h: {address: x, bogus: 1}}", "[h]",
              "{h: {port: 'abc', address: x}}"],
    "secrets": ["{pw: {env: A, file: b}}", "{pw: {}}", "{pw: {env: 'A B'}}", "{'p w': {env: A}}",
                "{svc: {env: SVC}}"],
    "defaults": ["{timeout: .nan}", "{timeout: 0}", "{bogus: 1}", "{retry: {attempts: -1}}"],
    "bogus_top": ["1"],
    "steps_extra": ["x", "- include: /etc/passwd", "- include: nowhere.yaml",
                    "- {include: ../../x.yaml, bogus: 1}", "- include: [a]"],
}  # fmt: skip


def _step_value(field: str) -> Mutation:
    def mutate(top: Fields, step: Fields, rng: random.Random) -> None:
        step[field] = rng.choice(BAD_VALUES[field])

    return mutate


def _top_value(field: str) -> Mutation:
    def mutate(top: Fields, step: Fields, rng: random.Random) -> None:
        top[field] = rng.choice(BAD_TOP[field])

    return mutate


def _duration(field: str) -> Mutation:
    def mutate(top: Fields, step: Fields, rng: random.Random) -> None:
        if field == "wait":
            step.pop("run", None)
        step[field] = rng.choice(BAD_DURATIONS)

    return mutate


def _bomb(top: Fields, step: Fields, rng: random.Random) -> None:
    width = rng.randint(9, 12)
    levels = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    levels += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, 8)]
    top["vars"] = "{" + ", ".join(levels) + "}"


def _self_alias(top: Fields, step: Fields, rng: random.Random) -> None:
    top["vars"] = rng.choice(["&v {a: *v}", "&v [1, [2, *v]]", "{a: &x [*x]}"])


def _deep(top: Fields, step: Fields, rng: random.Random) -> None:
    depth = rng.randint(65, 5000)
    opener, closer = rng.choice([("[", "]"), ("{a: ", "}")])
    top["vars"] = "{deep: " + opener * depth + "1" * (opener != "[") + closer * depth + "}"


def _unclosed(top: Fields, step: Fields, rng: random.Random) -> None:
    step["run"] = rng.choice(["[unclosed", "{a: 1", "'open quote", '"open', "a: b: c", "*nowhere"])


def _control(top: Fields, step: Fields, rng: random.Random) -> None:
    step["run"] = "echo " + rng.choice(["\x00", "\x01", "\x1b[31m\x07", "\ufffe", "'\ue000'"])


def _missing_id(top: Fields, step: Fields, rng: random.Random) -> None:
    step.pop("id", None)


def _bad_item(top: Fields, step: Fields, rng: random.Random) -> None:
    top["steps_extra"] = rng.choice(BAD_TOP["steps_extra"])


POOL: list[Mutation] = [
    *(_step_value(f) for f in BAD_VALUES),
    *(_top_value(f) for f in BAD_TOP if f != "steps_extra"),
    *(_duration(f) for f in ("timeout", "wait")),
    _bomb, _self_alias, _deep, _unclosed, _control, _missing_id, _bad_item,
]  # fmt: skip


def _case(rng: random.Random) -> tuple[bytes, list[str]]:
    """One malformed runbook as bytes, and the names of the mutations that made it."""
    top: Fields = {"name": "fuzz", "vars": "{svc: web}", "hosts": "{h: {address: 127.0.0.1}}"}
    step: Fields = {"id": "a", "run": "'echo {{ svc }}'", "timeout": "10s"}
    chosen = rng.sample(POOL, k=rng.randint(1, 3))
    for mutate in chosen:
        mutate(top, step, rng)
    extra = top.pop("steps_extra", None)
    text = "".join(f"{k}: {v}\n" for k, v in top.items()) + "steps:\n"
    text += "  - " + "\n    ".join(f"{k}: {v}" for k, v in step.items()) + "\n"
    if extra:
        text += f"  {extra}\n"
    data = text.encode("utf-8", "surrogatepass")
    if rng.random() < 0.05:
        cut = rng.randrange(len(data))
        data = data[:cut] + b"\xff\xfe" + data[cut:]  # bytes that are not UTF-8
    return data, [getattr(m, "__qualname__", "?") for m in chosen]


def _generated() -> list[tuple[bytes, list[str]]]:
    rng = random.Random(SEED)
    return [_case(rng) for _ in range(CASES)]


def _assert_refused(result_stderr: str, result_stdout: str, what: str) -> None:
    lines = result_stderr.splitlines()
    assert "Traceback" not in result_stderr, what
    assert "root:" not in result_stderr, what  # an included file's content is never printed
    assert lines, what
    summary = SUMMARY.match(lines[-1])
    assert summary, f"{what}\n{result_stderr}"
    problems = lines[:-1]
    assert len(problems) == int(summary.group(1)) >= 1, f"{what}\n{result_stderr}"
    for line in problems:
        assert LOCATED.match(line), f"{what}: not one located line: {line!r}"
    assert result_stdout == "", what


@pytest.mark.parametrize("chunk", range(4))
def test_malformed_runbooks_are_refused_in_located_lines(
    opskit: Invoke, tmp_path: Path, chunk: int
) -> None:
    """Every generated malformed runbook: exit 2 from validate and run --dry-run, located lines only."""
    cases = _generated()[chunk::4]
    for number, (data, mutations) in enumerate(cases):
        path = tmp_path / f"case-{chunk}-{number}.yaml"
        path.write_bytes(data)
        what = f"case {chunk}/{number} ({', '.join(mutations)}): {data[:300]!r}"

        for args in (("validate", str(path)), ("run", "--dry-run", "--offline", str(path))):
            result = opskit(*args, expect=ExitCode.BAD_INPUT)
            _assert_refused(result.stderr, result.stdout, what)

"""Hostile runbooks are refused in one located line, fast, with nothing run and no traceback (issue #10)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from opskit.errors import ExitCode
from tests.conftest import Invoke
from tests.runbook.helpers import write

ONE_STEP = "steps:\n  - {id: a, run: 'true'}\n"
LOCATED = re.compile(r"^(?P<file>.+):(?P<line>\d+):(?P<col>\d+): (?P<problem>.+)$")

BOMB = """
name: lol
vars:
  a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
  b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
  c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
  d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
  e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
  f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
  g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
  h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
steps:
  - {id: a, run: "true"}
"""


def refused(opskit: Invoke, path: Path, *args: str) -> str:
    """Validate `path`: exit 2, exactly one located problem line; returns the problem."""
    result = opskit("validate", str(path), *args, expect=ExitCode.BAD_INPUT)
    lines = result.stderr.splitlines()
    assert lines[-1] == "opskit: 1 problem; nothing ran", result.stderr
    match = LOCATED.match(lines[0])
    assert match, result.stderr
    assert len(lines) == 2, result.stderr
    assert "Traceback" not in result.stderr
    return match.group("problem")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (BOMB, "values once aliases are expanded"),
        ("name: x\nvars:\n  a: &a [1, *a]\nsteps: []\n", "alias *a refers to itself"),
        ("name: x\nvars:\n  a: " + "[" * 3000 + "]" * 3000 + "\n", "levels deep"),
        ("name: x\nvars:\n  a: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n", "levels deep"),
        ("name: x\nvars: {a: \"{{ 'x' * 10**9 }}\"}\n" + ONE_STEP, "a result longer than"),
        ('name: x\nvars: {a: "{{ 2 ** 100000000 }}"}\n' + ONE_STEP, "exponent"),
        (
            'name: x\nsteps:\n  - {id: a, run: "{{ ' + "(" * 3000 + "1" + ")" * 3000 + ' }}"}\n',
            "nested too deeply",
        ),
    ],
)
def test_bombs_and_deep_nesting_are_refused_within_a_second(
    opskit: Invoke, tmp_path: Path, text: str, problem: str
) -> None:
    """Alias and template bombs, a self-referencing alias, 3000 levels of nesting: one line, exit 2, < 1 s."""
    path = write(tmp_path, text)
    started = time.monotonic()

    assert problem in refused(opskit, path)
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("timeout", ".nan", "finite"),
        ("timeout", ".inf", "finite"),
        ("timeout", "0s", "0 means nothing"),
        ("timeout", "9999999999h", "longer than 7d"),
        ("wait", "-.inf", "bad duration"),
        ("wait", ".inf", "finite"),
        ("wait", "0", "0 means nothing"),
        ("retry", "{attempts: 2, delay: .nan}", "finite"),
        ("retry", "{attempts: 2, delay: 400d}", "longer than 1d"),
        ("retry", "{attempts: 1000000}", "from 1 to 100"),
    ],
)
def test_durations_reject_nan_infinity_zero_and_absurd_sizes(
    opskit: Invoke, tmp_path: Path, field: str, value: str, problem: str
) -> None:
    """`timeout:`, `wait:` and `retry:` values no night could mean are refused at their line."""
    action = "" if field == "wait" else "    run: 'true'\n"
    path = write(tmp_path, f"name: x\nsteps:\n  - id: a\n{action}    {field}: {value}\n")

    assert problem in refused(opskit, path)


def test_text_with_nul_or_a_lone_surrogate_is_refused(opskit: Invoke, tmp_path: Path) -> None:
    """A NUL byte or a lone surrogate in a value is located and refused, never passed to a shell."""
    nul = write(tmp_path, 'name: x\nsteps:\n  - id: a\n    run: "echo \\0"\n', "nul.yaml")
    surrogate = write(tmp_path, 'name: x\nsteps:\n  - id: a\n    run: "echo \\ud800"\n', "s.yaml")
    raw = tmp_path / "raw.yaml"
    raw.write_bytes(b"name: x\nsteps:\n  - id: a\n    run: echo \xed\xa0\x80\n")

    assert "NUL byte" in refused(opskit, nul)
    assert "lone surrogate" in refused(opskit, surrogate)
    assert "not UTF-8" in refused(opskit, raw)


def test_a_binary_runbook_and_a_device_are_refused(opskit: Invoke, tmp_path: Path) -> None:
    """A binary file (an SSH key by mistake) and /dev/zero are one line each, not a hang or a traceback."""
    binary = tmp_path / "id_ed25519.yaml"
    binary.write_bytes(bytes(range(256)) * 4)

    assert "not UTF-8" in refused(opskit, binary)
    assert "not a regular file" in refused(opskit, Path("/dev/zero"))


def test_env_names_with_spaces_or_equals_are_refused(opskit: Invoke, tmp_path: Path) -> None:
    """A step `env:` name with a space, or a secret source named `A=B`, is refused at its line."""
    step_env = write(
        tmp_path, "name: x\nsteps:\n  - id: a\n    run: 'true'\n    env: {'MY VAR': 1}\n", "a.yaml"
    )
    secret_env = write(
        tmp_path,
        "name: x\nsecrets: {pw: {env: 'A=B'}}\nsteps:\n  - {id: a, run: 'true'}\n",
        "b.yaml",
    )

    assert "no spaces, no =" in refused(opskit, step_env)
    assert "not an environment variable name" in refused(opskit, secret_env)


def test_binary_key_known_hosts_and_secret_files_are_refused(
    opskit: Invoke, tmp_path: Path
) -> None:
    """A key, known_hosts or secret file that is binary is named in one line; its bytes never are."""
    blob = tmp_path / "blob"
    blob.write_bytes(b"\x00\xff\xfe SECRETBYTES \x00" * 10)
    for text in (
        f"hosts: {{h: {{address: 127.0.0.1, key_file: {blob}}}}}",
        f"hosts: {{h: {{address: 127.0.0.1, known_hosts: {blob}}}}}",
        f"secrets: {{pw: {{file: {blob}}}}}",
    ):
        path = write(tmp_path, f"name: x\n{text}\nsteps:\n  - {{id: a, run: 'true'}}\n")

        problem = refused(opskit, path)

        assert "binary file" in problem
        assert "SECRETBYTES" not in problem


def test_a_run_id_longer_than_a_file_name_is_one_line(opskit: Invoke) -> None:
    """`status`, `resume` and `note` with a 300-character run id exit 2 with one line."""
    for args in (("status",), ("resume",), ("note",)):
        extra = ("text",) if args == ("note",) else ()

        result = opskit(*args, "a" * 300, *extra, expect=ExitCode.BAD_INPUT)

        assert result.stderr.startswith("opskit: bad run id")
        assert len(result.stderr.splitlines()) == 1


def test_an_include_outside_the_runbook_folders_needs_an_opt_in(
    opskit: Invoke, tmp_path: Path
) -> None:
    """`include: ../../x` is refused unless --allow-include-outside; its content is never printed."""
    project = tmp_path / "project"
    (project / "runbooks").mkdir(parents=True)
    (project / "playbooks").mkdir()
    (project / "playbooks" / "ok.yaml").write_text("steps:\n  - {id: a, run: 'true'}\n")
    (tmp_path / "credentials").write_text("aws_secret_access_key: AKIASECRETVALUE\n")
    path = write(
        project / "runbooks",
        """
        name: x
        steps:
          - include: playbooks/ok.yaml
          - include: ../../credentials
    """,
    )

    problem = refused(opskit, path)
    opted_in = refused(opskit, path, "--allow-include-outside")

    assert "is outside" in problem
    assert "--allow-include-outside" in problem
    assert "is not a playbook" in opted_in
    assert "AKIASECRETVALUE" not in problem + opted_in
    assert "aws_secret_access_key" not in problem + opted_in


def test_an_include_resolves_beside_the_including_file_first(
    opskit: Invoke, tmp_path: Path
) -> None:
    """A playbook's `include: common.yaml` finds its neighbour, not a same-named file elsewhere."""
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "outer.yaml").write_text("steps:\n  - include: common.yaml\n")
    (tmp_path / "playbooks" / "common.yaml").write_text("steps:\n  - {id: right, run: 'true'}\n")
    (tmp_path / "common.yaml").write_text("steps:\n  - {id: wrong, run: 'true'}\n")
    path = write(tmp_path, "name: x\nsteps:\n  - include: outer.yaml\n    id: o\n")

    result = opskit("plan", str(path), "--offline", "--json", expect=ExitCode.OK)

    assert '"o.right"' in result.stdout
    assert "wrong" not in result.stdout


def test_a_var_that_was_not_utf8_or_a_device_as_secret_file_is_one_line(
    opskit: Invoke, tmp_path: Path
) -> None:
    """`--var v=<bytes that are not UTF-8>` and `file: /dev/zero` as a secret: exit 2, one line, no hang."""
    path = write(tmp_path, "name: x\nvars: {v: a}\nsteps:\n  - {id: a, run: 'echo {{ v }}'}\n")
    device = write(
        tmp_path,
        "name: x\nsecrets: {pw: {file: /dev/zero}}\nsteps:\n  - {id: a, run: 'true'}\n",
        "d.yaml",
    )

    bad_var = opskit("run", str(path), "--var", "v=\udcff", expect=ExitCode.BAD_INPUT)

    assert bad_var.stderr.startswith("opskit: --var 'v': text holds a lone surrogate")
    assert len(bad_var.stderr.splitlines()) == 1
    assert "not a regular file" in refused(opskit, device)


def test_two_secrets_that_differ_only_in_case_are_refused(opskit: Invoke, tmp_path: Path) -> None:
    """`dbPw` and `DBPW` would share one OPSKIT_SECRET_DBPW variable: refused at the second."""
    path = write(
        tmp_path,
        "name: x\nsecrets: {dbPw: {env: A_PW}, DBPW: {env: B_PW}}\nsteps:\n  - {id: a, run: 'true'}\n",
    )

    assert "differs from 'dbPw' only in case" in refused(opskit, path)


def test_an_action_duration_of_nan_is_refused(opskit: Invoke, tmp_path: Path) -> None:
    """`with: {timeout: .nan}` of a waiting action is refused at its line like a step's timeout."""
    path = write(
        tmp_path,
        """
        name: x
        steps:
          - id: a
            uses: dns.wait
            with: {name: a.example, expect: [192.0.2.1], nameservers: ["127.0.0.1:53"], timeout: .nan}
    """,
    )

    assert "finite duration" in refused(opskit, path)

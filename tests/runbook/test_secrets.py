"""Secrets: from env, file or a command; masked on every line and in notes; never inherited by steps."""

from __future__ import annotations

import json
from pathlib import Path

from opskit.errors import ExitCode
from tests.conftest import Invoke
from tests.runbook.helpers import events, run_id, write


def test_a_secret_comes_from_a_command(opskit: Invoke, tmp_path: Path) -> None:
    """`command: pass show x` (here a script) gives the secret; the step gets it, the output shows ***."""
    secret = "from-the-vault-42"  # noqa: S105 - a made-up secret the test hunts for
    vault = tmp_path / "vault"
    vault.write_text(f"#!/bin/sh\nprintf '%s\\n' '{secret}'\n")
    vault.chmod(0o700)
    path = write(
        tmp_path,
        f"""
        name: vaulted
        secrets:
          pw: {{command: "{vault} kv get -field=pw secret/db"}}
        steps:
          - id: use
            run: printf '%s' {{{{ pw }}}} | wc -c; echo {{{{ pw }}}}
    """,
    )

    result = opskit("run", str(path), expect=ExitCode.OK)

    assert f"[local] {len(secret)}" in result.stdout
    assert "[local] ***" in result.stdout
    assert secret not in result.stdout + result.stderr


def test_a_failing_secret_command_stops_before_anything_runs(
    opskit: Invoke, tmp_path: Path
) -> None:
    """A secret command that exits non-zero is one line and exit 2; no step ran."""
    marker = tmp_path / "ran"
    path = write(
        tmp_path,
        f"""
        name: vaulted
        secrets:
          pw: {{command: "exit 3"}}
        steps:
          - id: use
            run: touch {marker}
    """,
    )

    result = opskit("run", str(path), expect=ExitCode.BAD_INPUT)

    assert result.stderr == "opskit: secret 'pw': `exit 3` exited 3\n"
    assert not marker.exists()


def test_a_secret_too_short_to_mask_is_refused(opskit: Invoke, tmp_path: Path) -> None:
    """A three-character secret would hide in ordinary words: refused with exit 2 before any step."""
    path = write(
        tmp_path,
        """
        name: short
        secrets: {pw: {env: SHORT_PW}}
        steps:
          - id: use
            run: echo {{ pw }}
    """,
    )

    result = opskit("run", str(path), env={"SHORT_PW": "abc"}, expect=ExitCode.BAD_INPUT)

    assert "too short to mask safely" in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_a_multi_line_secret_is_masked_on_every_line(opskit: Invoke, tmp_path: Path) -> None:
    """A key file printed line by line shows *** for each of its lines, in output and journal."""
    key = "-----BEGIN TEST KEY-----\nAAAAB3NzaC1yc2EAAAADAQAB\nQ2hhcmxpZSBpcyBoZXJl\n-----END TEST KEY-----"
    (tmp_path / "key").write_text(key + "\n")
    path = write(
        tmp_path,
        f"""
        name: keyed
        secrets: {{key: {{file: {tmp_path}/key}}}}
        steps:
          - id: show
            run: cat {tmp_path}/key
    """,
    )

    result = opskit("run", str(path), expect=ExitCode.OK)

    for line in key.splitlines():
        assert line not in result.stdout
    assert result.stdout.count("[local] ***") == 4
    journal = json.dumps(events(tmp_path / "state", run_id(result.stdout)))
    assert "AAAAB3NzaC1yc2EAAAADAQAB" not in journal


def test_the_secret_source_variable_is_not_inherited_by_steps(
    opskit: Invoke, tmp_path: Path
) -> None:
    """A step that does not use the secret cannot read it from the variable it was exported in."""
    out = tmp_path / "env"
    path = write(
        tmp_path,
        f"""
        name: inherit
        secrets: {{pw: {{env: INHERIT_PW}}}}
        steps:
          - id: snoop
            run: env > {out}
    """,
    )

    opskit("run", str(path), env={"INHERIT_PW": "do-not-inherit-me"}, expect=ExitCode.OK)

    assert "do-not-inherit-me" not in out.read_text()
    assert "INHERIT_PW" not in out.read_text()


def test_a_note_is_masked_like_output(opskit: Invoke, tmp_path: Path) -> None:
    """A hand-over note that quotes a secret is journaled and shown with *** instead."""
    secret = "note-secret-9876"  # noqa: S105 - a made-up secret the test hunts for
    (tmp_path / "pw").write_text(secret + "\n")
    path = write(
        tmp_path,
        f"""
        name: noted
        secrets: {{pw: {{file: {tmp_path}/pw}}}}
        steps:
          - id: a
            run: "true"
    """,
    )
    rid = run_id(opskit("run", str(path), expect=ExitCode.OK).stdout)

    opskit("note", rid, f"the db password is {secret}, do not share", expect=ExitCode.OK)
    shown = opskit("status", rid, expect=ExitCode.OK)

    assert "the db password is ***, do not share" in shown.stdout
    assert secret not in json.dumps(events(tmp_path / "state", rid))


def test_validate_never_runs_a_secret_command(opskit: Invoke, tmp_path: Path) -> None:
    """`opskit validate` checks a runbook whose secret comes from a command without running that command."""
    marker = tmp_path / "asked-the-vault"
    path = write(
        tmp_path,
        f"""
        name: vaulted
        secrets: {{pw: {{command: "touch {marker}; echo long-enough"}}}}
        steps:
          - {{id: a, run: "echo {{{{ pw }}}}"}}
    """,
    )

    opskit("validate", str(path), expect=ExitCode.OK)

    assert not marker.exists()

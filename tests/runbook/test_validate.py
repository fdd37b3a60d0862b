"""`opskit validate`: every problem at once, each at its exact FILE:LINE:COL, and nothing runs."""

from __future__ import annotations

from pathlib import Path

from opskit.errors import ExitCode
from tests.conftest import Invoke
from tests.runbook.helpers import DATA, copy_data, write


def test_every_problem_is_reported_at_its_line_and_column(opskit: Invoke, tmp_path: Path) -> None:
    """Eight kinds of mistakes each get one FILE:LINE:COL line on stderr and exit 2."""
    path = copy_data(tmp_path, "invalid.yaml")

    result = opskit("validate", str(path), expect=ExitCode.BAD_INPUT)

    got = [line for line in result.stderr.splitlines() if line.startswith(str(path))]
    expected = (DATA / "invalid.expected").read_text().format(file=path).splitlines()
    assert len(got) == len(expected), result.stderr
    for line, want in zip(got, expected, strict=True):
        assert line.startswith(f"{path}:{want}"), (line, want)
    assert result.stderr.splitlines()[-1] == "opskit: 8 problems; nothing ran"
    assert result.stdout == ""


def test_valid_runbook_exits_zero(opskit: Invoke, tmp_path: Path) -> None:
    """A valid runbook says ok with its step count."""
    path = write(
        tmp_path,
        """
        name: fine
        steps:
          - id: one
            run: "true"
    """,
    )

    result = opskit("validate", str(path), expect=ExitCode.OK)

    assert "ok:" in result.stdout
    assert "1 steps" in result.stdout


def test_invalid_runbook_runs_nothing(opskit: Invoke, tmp_path: Path) -> None:
    """`run` of an invalid runbook exits 2 before any step: the marker of a valid step is never written."""
    marker = tmp_path / "marker"
    path = write(
        tmp_path,
        f"""
        name: half-broken
        steps:
          - id: first
            run: touch {marker}
          - id: second
            run: echo {{{{ missing }}}}
    """,
    )

    result = opskit("run", str(path), expect=ExitCode.BAD_INPUT)

    assert f"{path}:6:10: undefined variable 'missing'" in result.stderr
    assert not marker.exists()
    assert not (tmp_path / "state" / "runs").exists()


def test_retry_on_any_needs_check_or_idempotent(opskit: Invoke, tmp_path: Path) -> None:
    """`retry.on: any` on a step that could double-apply is rejected, pointing at `on`."""
    path = write(
        tmp_path,
        """
        name: retries
        steps:
          - id: risky
            run: "false"
            retry: {attempts: 3, on: any}
          - id: safe
            run: "false"
            idempotent: true
            retry: {attempts: 3, on: any}
    """,
    )

    result = opskit("validate", str(path), expect=ExitCode.BAD_INPUT)

    assert f"{path}:5:30: retry.on: any re-runs a failed command" in result.stderr
    assert "opskit: 1 problem;" in result.stderr


def test_yaml_syntax_error_is_one_located_line(opskit: Invoke, tmp_path: Path) -> None:
    """Broken YAML is reported with its position, not a traceback."""
    path = write(tmp_path, "name: x\nsteps:\n  - id: a\n    run: [unclosed\n")

    result = opskit("validate", str(path), expect=ExitCode.BAD_INPUT)

    assert result.stderr.startswith(f"{path}:")
    assert "YAML:" in result.stderr
    assert "Traceback" not in result.stderr


def test_capture_used_before_it_is_made(opskit: Invoke, tmp_path: Path) -> None:
    """A variable captured by a later step is named as such, not just 'undefined'."""
    path = write(
        tmp_path,
        """
        name: order
        steps:
          - id: use
            run: echo {{ started }}
          - id: make
            run: date +%s
            capture: started
    """,
    )

    result = opskit("validate", str(path), expect=ExitCode.BAD_INPUT)

    assert "variable 'started' is captured by step 'make', which runs later" in result.stderr


def test_action_parameters_are_checked_at_their_line(opskit: Invoke, tmp_path: Path) -> None:
    """A bad `with:` key of a built-in action is reported at that key's line."""
    path = write(
        tmp_path,
        """
        name: params
        steps:
          - id: dns
            uses: dns.check
            with:
              name: example.test
              bogus_key: 1
    """,
    )

    result = opskit("validate", str(path), expect=ExitCode.BAD_INPUT)

    assert f"{path}:7:7: dns.check: with.bogus_key: unknown parameter" in result.stderr


def test_include_with_vars_and_prefix(opskit: Invoke, tmp_path: Path) -> None:
    """`include:` brings in a playbook's steps, prefixed by the include's id, with `with:` vars filled in."""
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "restart.yaml").write_text(
        (Path(__file__).parents[2] / "playbooks" / "service-restart.yaml").read_text()
    )
    path = write(
        tmp_path,
        """
        name: uses-playbook
        steps:
          - include: playbooks/restart.yaml
            id: restart-web
            with: {service: web, host: local, systemctl: "echo"}
    """,
    )

    result = opskit("plan", str(path), "--offline", "--json", expect=ExitCode.OK)

    assert '"id": "restart-web.stop"' in result.stdout
    assert '"command": "echo stop web"' in result.stdout


def test_shipped_playbook_validates_on_its_own(opskit: Invoke) -> None:
    """`opskit validate playbooks/service-restart.yaml` passes and lists what an includer must pass."""
    path = Path(__file__).parents[2] / "playbooks" / "service-restart.yaml"

    result = opskit("validate", str(path), expect=ExitCode.OK)

    assert result.stdout.splitlines()[0].endswith("playbook, 3 steps; with: service, host")


def test_playbook_with_params_reports_a_typo(opskit: Invoke, tmp_path: Path) -> None:
    """A playbook that declares params: gets a misspelt name reported at its line, not guessed as a param."""
    path = write(
        tmp_path,
        """
        params: [service, host]
        steps:
          - id: stop
            on: "{{ host }}"
            run: systemctl stop {{ servce }}
          - id: probe
            uses: tcp.check
            with: {host: "{{ host }}", port: 80, timeoutt: 1s}
    """,
        "restart.yaml",
    )

    result = opskit("validate", str(path), expect=ExitCode.BAD_INPUT)

    assert result.stderr.splitlines()[:2] == [
        f"{path}:5:10: undefined variable 'servce' (did you mean 'service'?)",
        f"{path}:8:42: tcp.check: with.timeoutt: unknown parameter (allowed: host, port, timeout)",
    ]


def test_playbook_without_params_takes_every_free_name(opskit: Invoke, tmp_path: Path) -> None:
    """Without params:, the names a playbook uses and does not define are what its includer passes."""
    path = write(
        tmp_path,
        """
        - id: health
          uses: tcp.check
          with: {host: "{{ health_host }}", port: "{{ health_port }}"}
        - id: note
          run: echo {{ greeting }} {{ run_id }}
    """,
        "health.yaml",
    )

    result = opskit("validate", str(path), expect=ExitCode.OK)

    assert "with: greeting, health_host, health_port" in result.stdout


def test_with_key_the_playbook_never_reads_is_an_error(opskit: Invoke, tmp_path: Path) -> None:
    """A misspelt `with:` key of an include is reported at its line with the closest real name."""
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "restart.yaml").write_text(
        (Path(__file__).parents[2] / "playbooks" / "service-restart.yaml").read_text()
    )
    path = write(
        tmp_path,
        """
        name: typo
        steps:
          - include: playbooks/restart.yaml
            with: {service: web, host: local, systemctll: echo}
    """,
    )

    result = opskit("validate", str(path), expect=ExitCode.BAD_INPUT)

    assert (
        f"{path}:4:39: playbooks/restart.yaml does not use 'systemctll' "
        "(did you mean 'systemctl'? it takes: service, host; defaults you may override: systemctl)"
    ) in result.stderr


def test_running_a_playbook_says_to_include_it(opskit: Invoke) -> None:
    """`opskit run` on a playbook is bad input with one line saying how playbooks are used."""
    path = Path(__file__).parents[2] / "playbooks" / "service-restart.yaml"

    result = opskit("run", str(path), expect=ExitCode.BAD_INPUT)

    assert "this is a playbook (steps without a runbook name:): include it from a runbook" in (
        result.stderr
    )


def test_a_templated_ssh_port_is_used_not_replaced_by_22(opskit: Invoke, tmp_path: Path) -> None:
    """`port: "{{ ssh_port }}"` reaches the host (plan shows it); a port that is not a number is one line."""
    path = write(
        tmp_path,
        """
        name: ports
        vars: {ssh_port: 2222}
        hosts:
          old: {address: 127.0.0.1, port: "{{ ssh_port }}", user: ops}
        steps:
          - id: look
            on: old
            run: "true"
        """,
    )

    opskit("validate", str(path), expect=ExitCode.OK)
    plan = opskit("plan", str(path), "--offline", expect=ExitCode.OK)
    assert "127.0.0.1:2222" in plan.stdout

    bad = opskit("run", str(path), "--var", "ssh_port=abc", expect=ExitCode.BAD_INPUT)
    assert "port must be a number from 1 to 65535, got 'abc'" in bad.stderr


def test_step_names_render_their_templates(opskit: Invoke, tmp_path: Path) -> None:
    """`name: Lower the TTL of {{ domain }}` is shown and journaled filled in, with --var applied."""
    path = write(
        tmp_path,
        """
        name: named
        vars: {domain: example.net}
        steps:
          - id: lower
            name: Lower the TTL of {{ domain }}
            run: "true"
    """,
    )

    plan = opskit("plan", str(path), "--var", "domain=dispatch.example.net", "--json",
                  expect=ExitCode.OK)  # fmt: skip
    run = opskit("run", str(path), expect=ExitCode.OK)

    assert '"name": "Lower the TTL of dispatch.example.net"' in plan.stdout
    assert "Lower the TTL of example.net" in run.stdout
    assert "{{" not in run.stdout

"""`opskit run`: live output, honest exit codes, gates that fail closed, secrets that never leak."""

from __future__ import annotations

import json
import os
import pty
import stat
import subprocess
import sys
import time
from pathlib import Path

from opskit.errors import ExitCode
from tests.conftest import Invoke
from tests.runbook.helpers import events, lines, run_id, write
from tests.servers.common import free_port
from tests.servers.health_http import HealthHttp, health_http  # noqa: F401 - fixture


def test_run_prints_run_id_first_and_prefixes_output(opskit: Invoke, tmp_path: Path) -> None:
    """The first line is the run id; each output line carries its host; status shows every step."""
    path = write(
        tmp_path,
        """
        name: basic
        steps:
          - id: hello
            run: echo hello
          - id: stamp
            run: echo 42
            capture: answer
          - id: use
            run: echo answer={{ answer }}
    """,
    )

    result = opskit("run", str(path), expect=ExitCode.OK)

    assert result.stdout.splitlines()[0].startswith("run id: ")
    assert "[local] hello" in result.stdout
    assert "[local] answer=42" in result.stdout
    rid = run_id(result.stdout)
    state = json.loads(opskit("status", rid, "--json", expect=ExitCode.OK).stdout)
    assert state["state"] == "succeeded"
    assert state["mode"] == "run"
    assert [(s["id"], s["status"], s["attempts"]) for s in state["steps"]] == [
        ("hello", "succeeded", 1), ("stamp", "succeeded", 1), ("use", "succeeded", 1),
    ]  # fmt: skip
    assert state["steps"][1]["captured"] == {"answer": "42"}
    assert all(isinstance(s["duration_s"], float) for s in state["steps"])


def test_a_run_that_continued_past_a_failure_says_so_at_the_end(
    opskit: Invoke, tmp_path: Path
) -> None:
    """continue_on_error keeps exit 0, but the last line names the step that failed on the way."""
    path = write(
        tmp_path,
        """
        name: tolerant
        steps:
          - id: tolerated
            run: "exit 4"
            continue_on_error: true
          - id: fine
            run: "true"
    """,
    )

    result = opskit("run", str(path), expect=ExitCode.OK)

    assert (
        result.stdout.strip()
        .splitlines()[-1]
        .startswith(
            "succeeded: all steps done; failed but continued (continue_on_error): tolerated"
        )
    )


def test_failed_step_exits_1_and_says_how_to_resume(opskit: Invoke, tmp_path: Path) -> None:
    """A failing command stops the run with exit 1, the later step does not run, and resume is suggested."""
    path = write(
        tmp_path,
        f"""
        name: fails
        steps:
          - id: tolerated
            run: "exit 4"
            continue_on_error: true
          - id: broken
            run: "exit 2"
          - id: after
            run: touch {tmp_path}/after
    """,
    )

    result = opskit("run", str(path), expect=ExitCode.NEGATIVE)

    rid = run_id(result.stdout)
    assert "step broken failed: exit 2 on local" in result.stdout
    assert f"next: fix what made broken fail, then: opskit resume {rid}    (runs broken again)" in (
        result.stdout
    )
    assert not (tmp_path / "after").exists()
    state = json.loads(opskit("status", rid, "--json", expect=ExitCode.OK).stdout)
    assert state["state"] == "failed"
    assert [s["status"] for s in state["steps"]] == ["failed", "failed", "pending"]


def test_when_false_skips_the_step(opskit: Invoke, tmp_path: Path) -> None:
    """A step whose `when:` is false is skipped and journaled as skipped."""
    path = write(
        tmp_path,
        f"""
        name: conditional
        vars: {{env: staging}}
        steps:
          - id: prod-only
            when: "env == 'production'"
            run: touch {tmp_path}/prod
          - id: templated
            when: "{{{{ env == 'staging' }}}}"
            run: touch {tmp_path}/staging
    """,
    )

    result = opskit("run", str(path), expect=ExitCode.OK)

    assert not (tmp_path / "prod").exists()
    assert (tmp_path / "staging").exists()
    state = json.loads(opskit("status", run_id(result.stdout), "--json", expect=ExitCode.OK).stdout)
    assert [s["status"] for s in state["steps"]] == ["skipped", "succeeded"]


def test_timeout_stops_a_hanging_step(opskit: Invoke, tmp_path: Path) -> None:
    """A step past its timeout is stopped and fails with 'timed out', well before the command would end."""
    path = write(
        tmp_path,
        """
        name: slow
        steps:
          - id: hang
            run: sleep 30
            timeout: 300ms
    """,
    )
    started = time.monotonic()

    result = opskit("run", str(path), expect=ExitCode.NEGATIVE)

    assert time.monotonic() - started < 10
    assert "timed out after 0.3s" in result.stdout


def test_retry_any_reruns_an_idempotent_step_until_it_passes(
    opskit: Invoke, tmp_path: Path
) -> None:
    """With retry.on: any, a flaky idempotent step is retried and the journal counts the attempts."""
    counter = tmp_path / "count"
    path = write(
        tmp_path,
        f"""
        name: flaky
        steps:
          - id: flaky
            run: echo x >> {counter}; test $(wc -l < {counter}) -ge 3
            idempotent: true
            retry: {{attempts: 5, delay: 10ms, backoff: exponential, on: any}}
          - id: not-retried
            run: echo y >> {tmp_path}/once; exit 1
            retry: {{attempts: 5, delay: 10ms}}
    """,
    )

    result = opskit("run", str(path), expect=ExitCode.NEGATIVE)

    assert len(lines(counter)) == 3
    assert len(lines(tmp_path / "once")) == 1  # retry.on: transport never re-runs a failed command
    state = json.loads(opskit("status", run_id(result.stdout), "--json", expect=ExitCode.OK).stdout)
    assert [(s["status"], s["attempts"]) for s in state["steps"]] == [
        ("succeeded", 3),
        ("failed", 1),
    ]


GATED = """
    name: gated
    steps:
      - id: prepare
        run: echo prepared >> {dir}/log
      - id: stop-old
        gate: {{prompt: "Drivers will disconnect. Stop dispatch now?", level: {level}}}
        run: echo stopped >> {dir}/log
"""


def test_gate_without_terminal_fails_closed(opskit: Invoke, tmp_path: Path) -> None:
    """Without a terminal a gate stops the run with exit 3 and its step does not run."""
    path = write(tmp_path, GATED.format(dir=tmp_path, level="confirm"))

    result = opskit("run", str(path), expect=ExitCode.BLOCKED)

    assert lines(tmp_path / "log") == ["prepared"]
    assert "stopped at gate stop-old" in result.stdout
    assert "--approve stop-old" in result.stdout
    gate = [e for e in events(tmp_path / "state", run_id(result.stdout)) if e["event"] == "gate"]
    assert gate[0]["answer"] == "refused"


def test_gate_passes_with_approve_and_names_the_operator(opskit: Invoke, tmp_path: Path) -> None:
    """`--approve STEP_ID` passes the gate; the journal and status record who approved it."""
    path = write(tmp_path, GATED.format(dir=tmp_path, level="critical"))

    result = opskit(
        "run", str(path), "--approve", "stop-old", "--operator", "alice", expect=ExitCode.OK
    )

    assert lines(tmp_path / "log") == ["prepared", "stopped"]
    state = json.loads(opskit("status", run_id(result.stdout), "--json", expect=ExitCode.OK).stdout)
    assert state["steps"][1]["approved_by"] == "alice (--approve)"


def test_yes_never_passes_a_critical_gate(opskit: Invoke, tmp_path: Path) -> None:
    """`--yes` passes confirm gates but a critical gate still stops the run."""
    confirm = write(tmp_path, GATED.format(dir=tmp_path, level="confirm"), "confirm.yaml")
    critical = write(tmp_path, GATED.format(dir=tmp_path, level="critical"), "critical.yaml")

    opskit("run", str(confirm), "--yes", expect=ExitCode.OK)
    result = opskit("run", str(critical), "--yes", expect=ExitCode.BLOCKED)

    assert "--yes does not pass it" in result.stdout


def test_manual_step_is_a_gate_for_its_owner(opskit: Invoke, tmp_path: Path) -> None:
    """A manual step stops a headless run; approved, it is journaled as confirmed."""
    path = write(
        tmp_path,
        """
        name: manual
        vars: {domain: dispatch.example.net}
        steps:
          - id: call-client
            owner: customer-sysadmin
            manual: "Ask the customer's sysadmin to point {{ domain }} at the new host"
    """,
    )

    stopped = opskit("run", str(path), expect=ExitCode.BLOCKED)
    result = opskit("run", str(path), "--approve", "call-client", expect=ExitCode.OK)

    assert (
        "ABORTED: stopped at manual step call-client: customer-sysadmin must: Ask the customer's "
        "sysadmin to point dispatch.example.net at the new host (no terminal to ask at; pass "
        "--approve call-client"
    ) in stopped.stdout

    gate = next(
        e for e in events(tmp_path / "state", run_id(result.stdout)) if e["event"] == "gate"
    )
    assert "MANUAL (customer-sysadmin): Ask the customer's sysadmin" in gate["prompt"]


def test_secret_appears_nowhere(opskit: Invoke, tmp_path: Path) -> None:
    """A secret used by commands is absent from stdout, stderr and every file in the state directory."""
    secret = "s3cr3t-Pa55w0rd"  # noqa: S105 - a made-up secret the test hunts for
    path = write(
        tmp_path,
        f"""
        name: secretive
        secrets:
          db_pw: {{env: TEST_DB_PW}}
          token: {{file: {tmp_path}/token}}
        steps:
          - id: use
            run: echo "pw={{{{ db_pw }}}}"; echo "env=$OPSKIT_SECRET_DB_PW"; echo "$MY_TOKEN"
            env: {{MY_TOKEN: "{{{{ token }}}}"}}
          - id: argv
            run: echo "{{{{ db_pw }}}}" >/dev/null; ps -eo args > {tmp_path}/ps.txt
          - id: fails
            run: echo "{{{{ db_pw }}}}" >&2; exit 1
    """,
    )
    (tmp_path / "token").write_text("tok-ABCDEFG-123\n")

    result = opskit("run", str(path), env={"TEST_DB_PW": secret}, expect=ExitCode.NEGATIVE)

    out = result.stdout + result.stderr
    assert secret not in out
    assert "tok-ABCDEFG-123" not in out
    assert "[local] pw=***" in result.stdout
    assert "[local] env=***" in result.stdout
    assert "[local] ***" in result.stdout
    argv = (tmp_path / "ps.txt").read_text()  # every command line while a secret-using step ran
    assert "ps -eo args" in argv
    assert secret not in argv
    for file in (tmp_path / "state").rglob("*"):
        if file.is_file():
            text = file.read_text()
            assert secret not in text, file
            assert "tok-ABCDEFG-123" not in text, file


def test_a_template_error_never_quotes_a_secret(opskit: Invoke, tmp_path: Path) -> None:
    """A `when:` that fails to render on a secret's value fails its step with the value shown as ***."""
    secret = "s3cr3t-Pa55w0rd"  # noqa: S105 - a made-up secret the test hunts for
    path = write(
        tmp_path,
        """
        name: leaky-when
        secrets:
          db_pw: {env: TEST_DB_PW}
        steps:
          - id: check
            when: "{{ {}[db_pw] }}"
            run: 'true'
    """,
    )

    result = opskit("run", str(path), env={"TEST_DB_PW": secret}, expect=ExitCode.NEGATIVE)

    assert "<== FAILED check" in result.stdout
    assert "***" in result.stdout
    assert secret not in result.stdout + result.stderr


def test_state_dir_is_private(opskit: Invoke, tmp_path: Path) -> None:
    """The state directory and each run directory are 0700; journal and lock files are 0600."""
    path = write(tmp_path, "name: perms\nsteps:\n  - id: a\n    run: 'true'\n")

    result = opskit("run", str(path), expect=ExitCode.OK)

    state = tmp_path / "state"
    run_dir = state / "runs" / run_id(result.stdout)
    for directory in (state, state / "runs", run_dir):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
    for file in run_dir.iterdir():
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file


def test_notes_are_journaled_and_shown(opskit: Invoke, tmp_path: Path) -> None:
    """`opskit note` adds a hand-over note that status shows with its author."""
    path = write(tmp_path, "name: notes\nsteps:\n  - id: a\n    run: 'true'\n")
    rid = run_id(opskit("run", str(path), expect=ExitCode.OK).stdout)

    opskit("note", rid, "db synced, waiting for DNS", "--operator", "bob", expect=ExitCode.OK)

    state = json.loads(opskit("status", rid, "--json", expect=ExitCode.OK).stdout)
    assert state["notes"][0]["text"] == "db synced, waiting for DNS"
    assert state["notes"][0]["operator"] == "bob"
    listing = opskit("status", expect=ExitCode.OK)
    assert rid in listing.stdout
    assert "succeeded" in listing.stdout


def test_unknown_run_id_is_one_line(opskit: Invoke) -> None:
    """Asking for a run that does not exist exits 2 with a hint, not a traceback."""
    result = opskit("status", "20990101-000000-ffff", expect=ExitCode.BAD_INPUT)

    assert result.stderr.startswith("opskit: no run '20990101-000000-ffff'")


def _at_a_terminal(args: list[str], answer: str, state: Path) -> tuple[int, str, str]:
    """Run opskit with a pseudo-terminal as stdin and type `answer` at its prompt."""
    main_fd, tty_fd = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "opskit", *args],
            stdin=tty_fd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "OPSKIT_STATE_DIR": str(state)},
        )  # fmt: skip
        os.write(main_fd, answer.encode() + b"\n")
        out, err = proc.communicate(timeout=30)
    finally:
        os.close(main_fd)
        os.close(tty_fd)
    return proc.returncode, out, err


def test_typed_gate_at_a_terminal_needs_the_step_id(tmp_path: Path) -> None:
    """At a terminal a typed gate asks for the step id: `y` three times is refused (exit 3), the id passes."""
    path = write(tmp_path, GATED.format(dir=tmp_path, level="typed"))
    state = tmp_path / "state"

    refused = _at_a_terminal(["run", str(path)], "y\ny\ny", state)
    passed = _at_a_terminal(["run", str(path), "--operator", "carol"], "stop-old", state)

    assert refused[0] == ExitCode.BLOCKED, refused
    assert "Type the step id (stop-old) to go on" in refused[2]
    assert passed[0] == ExitCode.OK, passed
    assert lines(tmp_path / "log") == ["prepared", "prepared", "stopped"]
    gate = [e for e in events(state, run_id(passed[1])) if e["event"] == "gate"]
    assert (gate[0]["answer"], gate[0]["via"], gate[0]["operator"]) == (
        "approved",
        "terminal",
        "carol",
    )


def test_progress_shows_the_step_position(opskit: Invoke, tmp_path: Path) -> None:
    """Each step banner says where the run is ([2/3]) and a wait says how long, not a shell command."""
    path = write(
        tmp_path,
        """
        name: counted
        steps:
          - id: one
            run: "true"
          - id: pause
            wait: 200ms
          - id: three
            run: "true"
    """,
    )

    result = opskit("run", str(path), expect=ExitCode.OK)

    assert "==> [1/3] one\n    $ true\n" in result.stdout
    assert "==> [2/3] pause\n    wait 200ms\n" in result.stdout
    assert "==> [3/3] three\n" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == (
        f"succeeded: all steps done (run {run_id(result.stdout)})"
    )


def test_gate_stop_says_how_to_approve_on_resume(opskit: Invoke, tmp_path: Path) -> None:
    """A headless stop at a gate ends with the exact resume command, and status repeats it."""
    path = write(tmp_path, GATED.format(dir=tmp_path, level="confirm"))

    result = opskit("run", str(path), expect=ExitCode.BLOCKED)

    rid = run_id(result.stdout)
    assert f"next: opskit resume {rid} --approve stop-old" in result.stdout
    status = opskit("status", rid, expect=ExitCode.OK)
    assert f"next: opskit resume {rid} --approve stop-old" in status.stdout
    resumed = opskit("resume", rid, "--approve", "stop-old", expect=ExitCode.OK)
    assert "==> [2/2] stop-old" in resumed.stdout
    assert lines(tmp_path / "log") == ["prepared", "stopped"]


def test_status_groups_steps_by_owner(opskit: Invoke, tmp_path: Path) -> None:
    """Status lists each owner's steps with their state, so a hand-over shows who still has to act."""
    path = write(
        tmp_path,
        """
        name: owners
        steps:
          - id: sync
            owner: us
            run: "true"
          - id: switch-dns
            owner: customer-sysadmin
            manual: "Point the domain at the new host"
          - id: verify
            owner: us
            run: "true"
    """,
    )
    rid = run_id(opskit("run", str(path), expect=ExitCode.BLOCKED).stdout)

    result = opskit("status", rid, expect=ExitCode.OK)

    assert "by owner:\n" in result.stdout
    assert "  us: sync (succeeded), verify (pending)\n" in result.stdout
    assert "  customer-sysadmin: switch-dns (pending)\n" in result.stdout


def test_uses_probes_run_locally_and_feed_later_steps(
    opskit: Invoke,
    tmp_path: Path,
    health_http: HealthHttp,  # noqa: F811
) -> None:
    """http.check and tcp.check run in plan and run; a captured result drives a later `when:`."""
    closed = free_port()
    path = write(
        tmp_path,
        f"""
        name: probes
        steps:
          - id: health
            uses: http.check
            with: {{url: "{health_http.url("/health")}", contains: healthy}}
            capture: health
          - id: port
            uses: tcp.check
            with: {{host: 127.0.0.1, port: {health_http.port}}}
          - id: only-if-healthy
            when: "health.ok"
            run: echo status={{{{ health.status }}}}
          - id: db
            uses: tcp.check
            with: {{host: 127.0.0.1, port: {closed}, timeout: 1s}}
    """,
    )

    plan = json.loads(opskit("plan", str(path), "--json", expect=ExitCode.NEGATIVE).stdout)
    result = opskit("run", str(path), expect=ExitCode.NEGATIVE)

    assert [s["status"] for s in plan["steps"]] == [
        "probe_ok",
        "probe_ok",
        "would_run",
        "probe_failed",
    ]
    assert plan["steps"][0]["command"] == (
        f"http.check: check that {health_http.url('/health')} answers 200"
    )
    assert "[local] status=200" in result.stdout
    assert f"127.0.0.1:{closed} refuses connections" in result.stdout
    assert "FAILED: step db failed" in result.stdout


def test_rollback_undoes_commands_and_passes_over_probes(
    opskit: Invoke,
    tmp_path: Path,
    health_http: HealthHttp,  # noqa: F811
) -> None:
    """Rollback runs a command step's undo and reports a `uses:` probe as nothing to undo."""
    log = tmp_path / "log"
    path = write(
        tmp_path,
        f"""
        name: undoable
        steps:
          - id: stop-old
            run: echo stop >> {log}
            undo: echo start >> {log}
          - id: new-healthy
            uses: http.check
            with: {{url: "{health_http.url("/health")}"}}
    """,
    )
    rid = run_id(opskit("run", str(path), expect=ExitCode.OK).stdout)

    result = opskit("rollback", rid, "--yes", expect=ExitCode.OK)

    assert lines(log) == ["stop", "start"]
    assert "<== -- new-healthy (0ms): nothing to undo (probe)" in result.stdout
    assert "done: rolled back: 1 step(s) undone" in result.stdout
    state = json.loads(opskit("status", rid, "--json", expect=ExitCode.OK).stdout)
    assert [s["status"] for s in state["steps"]] == ["undone", "succeeded"]
    assert state["rolled_back"] is True


def test_misspelt_var_is_refused_before_anything_runs(opskit: Invoke, tmp_path: Path) -> None:
    """`--var nwe=...` would leave `new` at its default, so it is bad input naming the closest variable."""
    path = write(
        tmp_path,
        f"""
        name: vars
        vars: {{new: 198.51.100.20}}
        steps:
          - id: point
            run: echo {{{{ new }}}} > {tmp_path}/pointed
    """,
    )

    result = opskit("run", str(path), "--var", "nwe=127.0.0.1", expect=ExitCode.BAD_INPUT)
    opskit("run", str(path), "--var", "new=127.0.0.1", expect=ExitCode.OK)

    assert "--var nwe: " in result.stderr
    assert "has no variable 'nwe' (did you mean 'new'? variables: new)" in result.stderr
    assert (tmp_path / "pointed").read_text() == "127.0.0.1\n"

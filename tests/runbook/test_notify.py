"""`notify:` tells a chat webhook and a command when a gate waits, a step fails and the run ends (#11)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from opskit.errors import ExitCode
from opskit.runbook.context import SilentReporter
from opskit.runbook.engine import RunOptions, run
from tests.conftest import Invoke
from tests.runbook.helpers import events, run_id, wait_for, write
from tests.servers.common import free_port


class Receiver:
    """The JSON bodies a local chat webhook received, in order."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, object]] = []
        self.url = ""

    def texts(self) -> list[str]:
        return [str(b.get("text")) for b in self.bodies]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """An incoming webhook on 127.0.0.1 that records each POSTed JSON body and answers 200."""
    got = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            got.bodies.append(json.loads(self.rfile.read(length)))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib's name
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
    )
    thread.start()
    got.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/night"
    try:
        yield got
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class AskingReporter(SilentReporter):
    """A person at a terminal who answers the gate, noting what the webhook had received by then."""

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver
        self.seen_when_asked: list[str] = []

    def ask(self, question: str) -> str | None:
        self.seen_when_asked = self.receiver.texts()
        return "y"


def test_a_waiting_gate_a_failed_step_and_the_end_are_announced(
    tmp_path: Path, receiver: Receiver
) -> None:
    """The webhook hears the gate before it asks, then the failure, then the end; the command hears too."""
    log = tmp_path / "notified.log"
    path = write(
        tmp_path,
        f"""\
        name: told
        vars: {{hook: "{receiver.url}"}}
        secrets:
          db_pw: {{env: TOLD_DB_PW}}
        notify:
          - webhook: "{{{{ hook }}}}"
          - command: "cat >> {log}; echo \\" [$OPSKIT_EVENT]\\" >> {log}"
            on: [run_finished]
        steps:
          - id: go
            gate: {{prompt: "Switch now?"}}
          - id: copy
            run: "echo copying with {{{{ db_pw }}}} >&2; exit 3"
            undo: "true"
        """,
    )
    reporter = AskingReporter(receiver)
    options = RunOptions(state_dir=tmp_path / "state", operator="alice", interactive=True)

    with pytest.MonkeyPatch.context() as env:
        env.setenv("TOLD_DB_PW", "s3cret-pw")
        outcome = run(path, options, reporter)

    assert outcome.exit_code == ExitCode.NEGATIVE
    assert reporter.seen_when_asked == [
        f"opskit told ({outcome.run_id}): gate go is waiting for alice: Switch now?"
    ]
    texts = receiver.texts()
    assert len(texts) == 3
    assert "step copy failed: exit 3 on local" in texts[1]
    assert "run failed: step copy failed" in texts[2]
    assert "s3cret-pw" not in json.dumps(receiver.bodies)
    assert "run failed" in log.read_text()
    assert log.read_text().strip().endswith("[run_finished]")


def test_a_failing_notification_never_fails_the_run(opskit: Invoke, tmp_path: Path) -> None:
    """A webhook nobody answers is counted in the journal and warned about; the run still succeeds."""
    path = write(
        tmp_path,
        f"""\
        name: unheard
        notify: {{webhook: "http://127.0.0.1:{free_port()}/hook", timeout: 2s}}
        steps:
          - {{id: hello, kind: probe, run: "true"}}
        """,
    )

    result = opskit("run", str(path), expect=ExitCode.OK)

    sent = [
        e for e in events(tmp_path / "state", run_id(result.stdout)) if e["event"] == "notification"
    ]
    assert [(e["trigger"], e["ok"]) for e in sent] == [("run_finished", False)]
    assert "notification (webhook, run_finished) failed" in result.stderr


def test_a_bad_notify_entry_is_bad_input(opskit: Invoke, tmp_path: Path) -> None:
    """A notify entry with an unknown event, or neither webhook nor command, is reported at its line."""
    path = write(
        tmp_path,
        """\
        name: typo
        notify:
          - {webhook: "https://chat.example.net/hooks/x", on: [gate, failed]}
          - {on: [gate]}
        steps:
          - {id: hello, kind: probe, run: "true"}
        """,
    )

    result = opskit("validate", str(path), expect=ExitCode.BAD_INPUT)

    assert f"{path}:3:" in result.stderr
    assert (
        "notify.on: unknown event 'failed' (events: gate, step_failed, run_finished)"
        in result.stderr
    )
    assert f"{path}:4:" in result.stderr
    assert "give exactly one of webhook: or command:" in result.stderr


def _alive(pid: int) -> bool:
    """The process runs (a zombie waiting for its reaper counts as ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_a_hung_notify_command_is_stopped_with_its_children(opskit: Invoke, tmp_path: Path) -> None:
    """A notify command whose child outlives its shell is stopped, child included, at its timeout:
    the run still succeeds within seconds and says the notify command timed out."""
    pid_file = tmp_path / "sleeper.pid"
    path = write(
        tmp_path,
        f"""\
        name: hung-notify
        notify:
          - command: "sh -c 'echo $$ > {pid_file}; exec sleep 30' & wait"
            timeout: 1s
            on: [run_finished]
        steps:
          - {{id: hello, kind: probe, run: "true"}}
        """,
    )

    started = time.monotonic()
    result = opskit("run", str(path), expect=ExitCode.OK)
    elapsed_s = time.monotonic() - started

    sleeper = int(pid_file.read_text())
    wait_for(lambda: not _alive(sleeper), timeout_s=5, what="the notify's `sleep 30` to end")
    assert elapsed_s < 6, f"the run took {elapsed_s:.1f}s behind a notify timeout of 1s"
    assert "notification (command, run_finished) failed" in result.stderr
    assert "notify command timed out after 1s" in result.stderr
    sent = [
        e for e in events(tmp_path / "state", run_id(result.stdout)) if e["event"] == "notification"
    ]
    assert [(e["ok"], "timed out after 1s" in e["error"]) for e in sent] == [(False, True)]

"""A secret in proxy.start's stop_old/start_old reaches the command as one argument, and nowhere else (#10)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from opskit.errors import ExitCode
from tests.conftest import Invoke
from tests.runbook.helpers import run_id, write
from tests.servers.common import free_port
from tests.servers.health_http import HealthHttp, health_http  # noqa: F401 - fixture
from tests.servers.sshd import Sshd

# Split on spaces and globbed, this would be three arguments, `b*` maybe many: it must stay one.
SECRET = "my pass b*"  # noqa: S105 - a test value

# Writes its arguments, as a JSON list, to the file named first: what the command really received.
ARGV = "import json, sys\nopen(sys.argv[1], 'w').write(json.dumps(sys.argv[2:]))\n"

RUNBOOK = """
    name: secret-stop
    secrets:
      api_pw: {{env: API_PW}}
    vars:
      out: "{out}"
    {hosts}
    steps:
      - id: bridge
        uses: proxy.start
        {on}
        with:
          listen: "127.0.0.1:{port}"
          to: "127.0.0.1:{target}"
          stats_file: "{out}/bridge.json"
          stop_old: "{python} {argv} {{{{ out }}}}/stop -u admin:{{{{ api_pw }}}} '{{{{ api_pw }}}}'"
          start_old: "{python} {argv} {{{{ out }}}}/start \\"{{{{ api_pw }}}}\\""
"""


def _runbook(tmp_path: Path, target: int, sshd: Sshd | None = None) -> Path:
    argv = tmp_path / "argv.py"
    argv.write_text(ARGV)
    out = tmp_path / "out dir"  # a space: the path itself must be quoted too
    out.mkdir()
    hosts = on = ""
    if sshd is not None:  # the same machine, reached over SSH: the secret travels in the session
        hosts = (
            f"hosts: {{old: {{address: 127.0.0.1, port: {sshd.port}, user: {sshd.user}, "
            f'key_file: "{sshd.client_key}", known_hosts: "{sshd.known_hosts}"}}}}'
        )
        on = "on: old"
    text = RUNBOOK.format(
        out=out, port=free_port(), target=target, python=sys.executable, argv=argv,
        hosts=hosts, on=on,
    )  # fmt: skip
    return write(tmp_path, text)


def _journal_text(tmp_path: Path) -> str:
    return "".join(p.read_text() for p in (tmp_path / "state").rglob("journal.jsonl"))


@pytest.mark.parametrize("where", ["local", pytest.param("ssh", marks=pytest.mark.sshd)])
def test_a_secret_in_stop_old_and_start_old_is_one_argument_and_never_shown(
    opskit: Invoke,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    *,
    health_http: HealthHttp,  # noqa: F811
    where: str,
) -> None:
    """stop_old and the rollback's start_old get the secret as one argument; no output or journal holds it."""
    monkeypatch.setenv("API_PW", SECRET)
    sshd = request.getfixturevalue("sshd") if where == "ssh" else None
    path = _runbook(tmp_path, health_http.port, sshd)
    out = tmp_path / "out dir"

    ran = opskit("run", str(path), expect=ExitCode.OK)
    rid = run_id(ran.stdout)

    assert json.loads((out / "stop").read_text()) == ["-u", f"admin:{SECRET}", SECRET]
    assert "-u admin:*** " in ran.stdout  # the operator sees the command, secret masked
    preview = opskit("rollback", rid, "--dry-run", expect=ExitCode.OK)
    assert "then start the old service: " in preview.stdout
    assert '/start "***"' in preview.stdout
    undone = opskit("rollback", rid, "--yes", expect=ExitCode.OK)
    assert json.loads((out / "start").read_text()) == [SECRET]
    seen = ran.stdout + ran.stderr + preview.stdout + preview.stderr + undone.stdout + undone.stderr
    for text in (seen, _journal_text(tmp_path), opskit("report", rid, expect=ExitCode.OK).stdout):
        assert SECRET not in text
        assert "my pass" not in text


def test_validate_reads_stop_old_as_a_shell_command(
    opskit: Invoke, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A secret in a <<'EOF' body of stop_old (the shell cannot read it there) is exit 2 at its line."""
    monkeypatch.setenv("API_PW", SECRET)
    path = write(
        tmp_path,
        """
        name: heredoc
        secrets:
          api_pw: {env: API_PW}
        steps:
          - id: bridge
            uses: proxy.start
            with:
              listen: "127.0.0.1:8080"
              to: "127.0.0.1:8081"
              stop_old: "curl -K- http://127.0.0.1:9/stop <<'EOF'\\nuser = admin:{{ api_pw }}\\nEOF"
        """,
    )

    result = opskit("validate", str(path), expect=ExitCode.BAD_INPUT)

    assert f"{path}:10:" in result.stderr
    assert "with.stop_old: a secret cannot be read in a <<'EOF' here-document" in result.stderr
    listed = opskit("actions", "proxy.start", expect=ExitCode.OK).stdout
    assert any(line.split()[:3] == ["stop_old", "shell", "command"] for line in listed.splitlines())


def test_a_secret_passed_through_the_shipped_bridge_playbook_is_one_argument(
    opskit: Invoke,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    health_http: HealthHttp,  # noqa: F811
) -> None:
    """Via an include's bridge_stop_old (inserted with | raw), the secret is one argument and *** in plan and run."""
    monkeypatch.setenv("API_PW", SECRET)
    (tmp_path / "argv.py").write_text(ARGV)
    (tmp_path / "playbooks").mkdir()
    shipped = Path(__file__).parents[2] / "playbooks" / "proxy-bridge.yaml"
    (tmp_path / "playbooks" / "proxy-bridge.yaml").write_text(shipped.read_text())
    path = write(
        tmp_path,
        f"""
        name: via-playbook
        secrets:
          api_pw: {{env: API_PW}}
        steps:
          - include: playbooks/proxy-bridge.yaml
            id: bridge
            with:
              bridge_listen: "127.0.0.1:{free_port()}"
              bridge_to: "127.0.0.1:{health_http.port}"
              bridge_stats_file: "{tmp_path}/bridge.json"
              bridge_stop_old: "{sys.executable} {tmp_path}/argv.py {tmp_path}/stop -u admin:{{{{ api_pw }}}}"
        """,
    )

    plan = opskit("plan", str(path), expect=ExitCode.OK)
    ran = opskit("run", str(path), expect=ExitCode.OK)
    opskit("rollback", run_id(ran.stdout), "--yes", expect=ExitCode.OK)

    assert json.loads((tmp_path / "stop").read_text()) == ["-u", f"admin:{SECRET}"]
    assert "-u admin:***" in plan.stdout
    assert "-u admin:***" in ran.stdout
    assert "my pass" not in plan.stdout + plan.stderr + ran.stdout + ran.stderr
    assert "my pass" not in _journal_text(tmp_path)

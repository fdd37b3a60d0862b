"""Values reach the shell as exactly one argument, whatever they hold (issue #10)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from opskit.errors import ExitCode
from opskit.runbook.scope import render_with
from opskit.runbook.shell import masked_view, render_command, secret_view
from opskit.runbook.templates import TemplateProblem
from tests.conftest import Invoke
from tests.runbook.helpers import write
from tests.servers.sshd import Sshd

HOSTILE = [
    "x; touch {marker}",
    "$(touch {marker})",
    "`touch {marker}`",
    "a'b\"c\\d",
    "two\nlines; touch {marker}",
    "*",
    "my pass b*",
    "",
    "-n",
    'it\'s "$HOME" ${{HOME}} !x',
]


@pytest.mark.parametrize("value", HOSTILE)
def test_a_var_is_one_argument_bare_double_or_single_quoted(
    opskit: Invoke, tmp_path: Path, value: str
) -> None:
    """`--var` with shell syntax in it is passed whole, in all three ways a runbook may write it."""
    marker = tmp_path / "pwned"
    value = value.format(marker=marker)
    out = tmp_path / "args"
    path = write(
        tmp_path,
        f"""
        name: quoting
        vars: {{v: plain}}
        steps:
          - id: a
            run: printf '[%s]\\n' {{{{ v }}}} "{{{{ v }}}}" '{{{{ v }}}}' >> {out}
            check: test -e {out} && printf %s {{{{ v }}}} >/dev/null
            undo: printf %s {{{{ v }}}} >/dev/null
    """,
    )

    opskit("run", str(path), "--var", f"v={value}", expect=ExitCode.OK)

    assert out.read_text() == f"[{value}]\n" * 3
    assert not marker.exists()


def test_a_capture_from_a_command_is_one_argument(opskit: Invoke, tmp_path: Path) -> None:
    """Output captured from a step (which may come from a remote host) cannot run code in a later one."""
    marker = tmp_path / "pwned"
    out = tmp_path / "args"
    path = write(
        tmp_path,
        f"""
        name: capture
        steps:
          - id: read
            kind: probe
            run: "printf '%s' 'x; touch {marker}; $(touch {marker})'"
            capture: got
          - id: use
            run: printf '[%s]' {{{{ got }}}} > {out}
    """,
    )

    opskit("run", str(path), expect=ExitCode.OK)

    assert out.read_text() == f"[x; touch {marker}; $(touch {marker})]"
    assert not marker.exists()


def test_a_secret_with_spaces_and_a_glob_is_one_argument_in_all_three_forms(
    opskit: Invoke, tmp_path: Path
) -> None:
    """`{{ pw }}`, `"{{ pw }}"` and `'{{ pw }}'` each pass `my pass b*` whole; the operator sees *** there."""
    secret = "my pass b*"  # noqa: S105 - a made-up secret the test hunts for
    (tmp_path / "bomb.txt").write_text("a file the glob would match\n")
    path = write(
        tmp_path,
        """
        name: secret-quoting
        secrets: {pw: {env: QUOTING_PW}}
        steps:
          - id: a
            run: printf '[%s]\\n' {{ pw }} "{{ pw }}" '{{ pw }}' | sha256sum
    """,
    )

    result = opskit("run", str(path), env={"QUOTING_PW": secret}, expect=ExitCode.OK)

    whole = hashlib.sha256(f"[{secret}]\n".encode() * 3).hexdigest()
    assert whole in result.stdout
    assert "$ printf '[%s]\\n' *** \"***\" '***' | sha256sum" in result.stdout
    assert secret not in result.stdout + result.stderr


def test_what_the_operator_sees_is_what_runs() -> None:
    """The shown command is the command that runs, with each secret reference shown as ***."""
    ctx = {"v": "x; y", "pw": "unused"}

    running = render_command("cmd {{ v }} '{{ v }}' {{ pw }}", {**ctx, **secret_view(["pw"])})
    shown = render_command("cmd {{ v }} '{{ v }}' {{ pw }}", {**ctx, **masked_view(["pw"])})

    assert running.text == "cmd 'x; y' 'x; y' \"${OPSKIT_SECRET_PW}\""
    assert shown.shown == "cmd 'x; y' 'x; y' ***"
    assert running.secrets == {"pw"}


def test_a_value_cannot_name_a_secret() -> None:
    """Text that arrives from outside and looks like a secret reference stays plain text."""
    forged = "\ue002deadbeefdeadbeef:pw\ue003"

    command = render_command("echo {{ v }}", {"v": forged, **secret_view(["pw"])})

    assert command.secrets == frozenset()
    assert "OPSKIT_SECRET" not in command.text


def test_quoting_follows_subshells_backticks_and_comments() -> None:
    """Inside `$(...)`, backticks, `$'...'` and after a comment with an apostrophe, a value is still quoted."""
    ctx = {"v": "a b;c"}

    for src, want in [
        ('echo "$(printf %s {{ v }})"', "echo \"$(printf %s 'a b;c')\""),
        ("echo `printf %s {{ v }}`", "echo `printf %s 'a b;c'`"),
        ("# don't\necho {{ v }}", "# don't\necho 'a b;c'"),
        ("echo $'x'{{ v }}", "echo $'x''a b;c'"),
        ("echo \\{{ v }}", "echo \\'a b;c'"),
    ]:
        assert render_command(src, ctx).text == want, src


def test_raw_inserts_shell_text_and_its_own_values_stay_quoted(
    opskit: Invoke, tmp_path: Path
) -> None:
    """A var marked `| raw` runs as a command; a hostile value inside it is still one argument."""
    marker = tmp_path / "pwned"
    out = tmp_path / "args"
    path = write(
        tmp_path,
        f"""
        name: fragments
        vars:
          name: plain
          write: "printf '[%s]' {{{{ name }}}} > {out}"
        steps:
          - id: a
            run: "{{{{ write | raw }}}}"
    """,
    )

    opskit("run", str(path), "--var", f"name=x; touch {marker}", expect=ExitCode.OK)

    assert out.read_text() == f"[x; touch {marker}]"
    assert not marker.exists()


def test_validate_lists_each_place_that_takes_shell_text(opskit: Invoke, tmp_path: Path) -> None:
    """`opskit validate` prints one located line for every `| raw` in run, check and undo."""
    path = write(
        tmp_path,
        """
        name: fragments
        vars: {stop: "systemctl stop x", start: "systemctl start x"}
        steps:
          - id: a
            run: "{{ stop | raw }}"
            undo: "{{ start | raw }}"
    """,
    )

    result = opskit("validate", str(path), expect=ExitCode.OK)

    assert f"shell text (| raw): {path}:5:10: run: stop" in result.stdout
    assert f"shell text (| raw): {path}:6:11: undo: start" in result.stdout


@pytest.mark.sshd
def test_over_ssh_a_value_and_a_secret_are_one_argument_each(
    opskit: Invoke, tmp_path: Path, sshd: Sshd
) -> None:
    """On a remote host too: a hostile var runs no code and `'{{ pw }}'` passes the secret, not its name."""
    marker = tmp_path / "pwned-remote"
    secret = "remote pass b*"  # noqa: S105 - a made-up secret the test hunts for
    path = write(
        tmp_path,
        f"""
        name: remote-quoting
        secrets: {{pw: {{env: REMOTE_QUOTING_PW}}}}
        hosts:
          target: {{address: 127.0.0.1, port: {sshd.port}, user: {sshd.user},
                    key_file: "{sshd.client_key}", known_hosts: "{sshd.known_hosts}"}}
        steps:
          - id: a
            on: target
            run: printf '[%s]\\n' {{{{ v }}}} "{{{{ v }}}}"; printf '%s' '{{{{ pw }}}}' | sha256sum
    """,
    )
    value = f"x; touch {marker}; $(touch {marker})"

    result = opskit("run", str(path), "--var", f"v={value}", env={"REMOTE_QUOTING_PW": secret},
                    expect=ExitCode.OK)  # fmt: skip

    assert result.stdout.count(f"[target] [{value}]") == 2
    assert hashlib.sha256(secret.encode()).hexdigest() in result.stdout
    assert not marker.exists()
    assert secret not in result.stdout + sshd.log_text()


def test_a_raw_value_passed_to_a_playbook_keeps_its_values_quoted(
    opskit: Invoke, tmp_path: Path
) -> None:
    """An include's `with:` value that the playbook inserts with `| raw` still passes each value whole."""
    marker = tmp_path / "pwned"
    out = tmp_path / "args"
    secret = "pb secret *"  # noqa: S105 - a made-up secret the test hunts for
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "tool.yaml").write_text(
        'params: [tool]\nsteps:\n  - id: use\n    run: "{{ tool | raw }} >> ' + str(out) + '"\n'
    )
    path = write(
        tmp_path,
        """
        name: raw-include
        vars: {evil: plain}
        secrets: {pw: {env: RAW_INCLUDE_PW}}
        steps:
          - include: playbooks/tool.yaml
            with: {tool: "printf '[%s]' {{ evil }} {{ pw }}"}
    """,
    )

    result = opskit("run", str(path), "--var", f"evil=x; touch {marker}",
                    env={"RAW_INCLUDE_PW": secret}, expect=ExitCode.OK)  # fmt: skip

    assert out.read_text() == f"[x; touch {marker}][{secret}]"
    assert not marker.exists()
    assert f"printf '[%s]' 'x; touch {marker}' *** >>" in result.stdout
    assert secret not in result.stdout


def test_a_value_in_a_here_document_is_its_exact_text_and_cannot_end_it() -> None:
    """In `<<EOF` and `<<'EOF'` bodies a value keeps `$`, backticks and quotes; its own `EOF` is refused."""
    ctx = {"v": "a $HOME `x` 'q'"}

    expanding = render_command("cat <<EOF\n{{ v }}\nEOF\necho {{ v }}", ctx).text
    literal = render_command("cat <<'EOF'\n{{ v }}\nEOF", ctx).text

    assert expanding == "cat <<EOF\na \\$HOME \\`x\\` 'q'\nEOF\necho 'a $HOME `x` '\"'\"'q'\"'\"''"
    assert literal == "cat <<'EOF'\na $HOME `x` 'q'\nEOF"
    with pytest.raises(TemplateProblem, match="would end the here-document"):
        render_command("cat <<EOF\n{{ v }}\nEOF", {"v": "x\nEOF\ntouch /tmp/p"})


def test_an_action_shell_command_param_is_rendered_like_run() -> None:
    """proxy.start's stop_old quotes each value, carries a secret by reference and shows it as ***."""
    with_ = {"listen": "{{ addr }}", "stop_old": "curl -u admin:{{ pw }} {{ url }}"}
    ctx = {"addr": "127.0.0.1:80", "url": "http://x/a b", "pw": "real"}

    rendered = render_with("proxy.start", with_, ctx, {**ctx, **secret_view(["pw"])})

    assert rendered["listen"] == "127.0.0.1:80"
    stop_old = rendered["stop_old"]
    assert stop_old == "curl -u admin:\"${OPSKIT_SECRET_PW}\" 'http://x/a b'"
    assert stop_old.shown == "curl -u admin:*** 'http://x/a b'"
    assert stop_old.secret_vars == {"OPSKIT_SECRET_PW": "pw"}
    assert "real" not in stop_old + stop_old.shown

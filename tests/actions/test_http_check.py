"""`uses: http.check`: an HTTP health probe, validated at load time, run here or from a host."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from opskit import actions
from opskit.actions import ActionKind, ParamError, Params
from opskit.transport.ssh import SshTransport
from tests.actions.probe_context import ProbeContext
from tests.servers.common import free_port
from tests.servers.health_http import LAB_TOKEN, HealthHttp, health_http  # noqa: F401
from tests.servers.sshd import Sshd


def _action(**raw: object) -> actions.Action:
    return actions.load("http.check").from_params(Params(raw))


def test_http_check_is_a_registered_probe() -> None:
    """http.check is found by name and runs in a dry-run because it is a probe."""
    assert actions.load("http.check").kind is ActionKind.PROBE


def test_healthy_endpoint_passes(health_http: HealthHttp, tmp_path: Path) -> None:  # noqa: F811
    """A URL answering 200 (the default) passes, and the status is in the step's values."""
    result = _action(url=health_http.url("/health"), contains="healthy").run(ProbeContext(tmp_path))

    assert result.ok
    assert result.summary.startswith("200 in ")
    assert result.values["status"] == 200


def test_unhealthy_endpoint_fails_with_the_status(health_http: HealthHttp, tmp_path: Path) -> None:  # noqa: F811
    """A 503 fails the step and the summary says what came back."""
    result = _action(url=health_http.url("/down")).rehearse(ProbeContext(tmp_path))

    assert not result.ok
    assert "status 503, expected 200" in result.summary


def test_bad_params_are_caught_at_load_time() -> None:
    """A bad URL, status, timeout or unknown key is a validation error naming the key."""
    with pytest.raises(ParamError, match=r"with\.url: expected an http"):
        _action(url="example.test/health")
    with pytest.raises(ParamError, match=r"with\.expect_status"):
        _action(url="http://h/", expect_status=1000)
    with pytest.raises(ParamError, match=r"with\.timeout"):
        _action(url="http://h/", timeout="later")
    with pytest.raises(ParamError, match=r"with\.expect: unknown parameter"):
        _action(url="http://h/", expect=200)


def test_a_url_from_a_captured_value_validates_later() -> None:
    """A URL that depends on a value captured during the run is accepted at validation time."""
    action = actions.load("http.check").from_params(Params({"url": "{{ x }}"}, frozenset({"url"})))

    assert action.describe() == "check that  answers 200"


@pytest.mark.sshd
def test_check_runs_from_the_steps_host(
    sshd: Sshd,
    health_http: HealthHttp,  # noqa: F811
    tmp_path: Path,
) -> None:
    """With `on: HOST` the request is made from that host (curl over SSH), with the same verdicts."""
    remote = SshTransport(sshd.spec(name="new"))
    try:
        ctx = ProbeContext(tmp_path, host="new", remote=remote)
        ok = _action(url=health_http.url("/health"), contains="healthy").run(ctx)
        down = _action(url=health_http.url("/down")).run(ctx)
        refused = _action(url=f"http://127.0.0.1:{free_port()}/").run(ctx)
    finally:
        remote.close()

    assert ok.ok, ok.summary
    assert ok.summary.endswith("(from new)")
    assert ok.values["status"] == 200
    assert not down.ok
    assert down.values["status"] == 503
    assert refused.values["error"] == "refuses connections"


@pytest.mark.sshd
def test_remote_check_keeps_the_token_off_the_command_line(
    sshd: Sshd,
    health_http: HealthHttp,  # noqa: F811
    tmp_path: Path,
) -> None:
    """An Authorization header sent from a remote host never shows in that host's `ps`."""
    remote = SshTransport(sshd.spec(name="new"))
    seen: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit():
                    try:
                        seen.append((entry / "cmdline").read_bytes().decode(errors="replace"))
                    except OSError:
                        continue
            time.sleep(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        action = _action(
            url=health_http.url("/auth"), headers={"Authorization": f"Bearer {LAB_TOKEN}"}
        )
        result = action.run(ProbeContext(tmp_path, host="new", remote=remote))
    finally:
        stop.set()
        watcher.join(timeout=5)
        remote.close()

    assert result.ok, result.summary
    assert any("curl" in line for line in seen)
    assert not [line for line in seen if LAB_TOKEN in line]

"""The fleet against real sshds: six loopback hosts, host keys pinned, one step rolled out across them."""

from __future__ import annotations

import itertools
import json
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from opskit.errors import ExitCode
from tests.conftest import Invoke
from tests.runbook.helpers import events, lines, run_id, wait_for, write
from tests.servers.sshd_fleet import Fleet, start_fleet

pytestmark = pytest.mark.sshd
HOSTS = 6


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """Six SSH hosts web1..web6 on 127.0.0.2..7, one port, keys pinned in known_hosts."""
    with start_fleet(tmp_path_factory.mktemp("fleet"), HOSTS) as f:
        yield f


def _runbook(tmp_path: Path, fleet: Fleet, steps: str, extra_hosts: str = "") -> Path:
    hosts = "".join(
        f'  {name}: {{address: {addr}, port: {fleet.port}, user: {fleet.user}, key_file: "{fleet.client_key}", '
        f'known_hosts: "{fleet.known_hosts}"}}\n'
        for name, addr in fleet.host_lines().items()
    )
    groups = "  groups: {web: [web1, web2, web3, web4, web5, web6], canary: [web1]}\n"
    text = f'name: fleet\nvars: {{log: "{tmp_path / "log"}"}}\nhosts:\n{hosts}{extra_hosts}{groups}steps:\n{steps}'
    return write(tmp_path, text)


def _log(tmp_path: Path) -> list[list[str]]:
    return [ln.split() for ln in lines(tmp_path / "log")]


STAMPED = """\
  - id: roll
    on: web
    {fields}
    run: echo start {{{{ inventory_hostname }}}} $(date +%s.%N) >> {{{{ log }}}}; sleep {sleep}; echo end {{{{ inventory_hostname }}}} $(date +%s.%N) >> {{{{ log }}}}
"""


def _intervals(tmp_path: Path) -> dict[str, tuple[float, float]]:
    starts = {w[1]: float(w[2]) for w in _log(tmp_path) if w[0] == "start"}
    ends = {w[1]: float(w[2]) for w in _log(tmp_path) if w[0] == "end"}
    return {h: (starts[h], ends[h]) for h in starts}


def test_parallel_bound_is_never_exceeded(opskit: Invoke, tmp_path: Path, fleet: Fleet) -> None:
    """With parallel: 2, the hosts' own timestamps never show three commands running at once."""
    path = _runbook(tmp_path, fleet, STAMPED.format(fields="parallel: 2", sleep="0.4"))

    result = opskit("run", str(path), expect=ExitCode.OK)

    spans = _intervals(tmp_path)
    assert len(spans) == HOSTS, result.stdout
    most = max(sum(1 for s, e in spans.values() if s <= t < e) for t, _ in spans.values())
    assert most == 2
    assert "6 of 6 hosts succeeded" in result.stdout


def test_batches_run_in_order_each_finishing_first(
    opskit: Invoke, tmp_path: Path, fleet: Fleet
) -> None:
    """batches: [1, 2, 100%]: the canary ends before batch two starts, batch two ends before the rest start."""
    path = _runbook(tmp_path, fleet, STAMPED.format(fields="batches: [1, 2, 100%]", sleep="0.2"))

    opskit("run", str(path), expect=ExitCode.OK)

    spans = _intervals(tmp_path)
    order = [f"web{i}" for i in range(1, HOSTS + 1)]
    batches = [order[:1], order[1:3], order[3:]]
    for earlier, later in itertools.pairwise(batches):
        assert max(spans[h][1] for h in earlier) <= min(spans[h][0] for h in later)
    rid_batches = {}
    for ev in events(tmp_path / "state", run_id_of(tmp_path)):
        if ev["event"] == "host_finished":
            rid_batches[ev["host"]] = ev["batch"]
    assert rid_batches == {"web1": 1, "web2": 2, "web3": 2, "web4": 3, "web5": 3, "web6": 3}


def run_id_of(tmp_path: Path) -> str:
    return sorted(os.listdir(tmp_path / "state" / "runs"))[-1]


def test_max_failures_stops_the_rollout_and_names_the_untouched(
    opskit: Invoke, tmp_path: Path, fleet: Fleet
) -> None:
    """A second failure with max_failures: 1 stops the rollout: later batches never start, and are named."""
    steps = """\
  - id: roll
    on: web
    batches: [2, 2, 100%]
    max_failures: 1
    run: echo {{ inventory_hostname }} >> {{ log }}; case {{ inventory_hostname }} in web2|web3) exit 3;; esac
  - id: after
    run: echo never >> {{ log }}
"""
    path = _runbook(tmp_path, fleet, steps)

    result = opskit("run", str(path), expect=ExitCode.NEGATIVE)

    ran = sorted(w[0] for w in _log(tmp_path))
    assert ran == ["web1", "web2", "web3", "web4"]
    out = result.stdout + result.stderr
    assert "more than max_failures allows (1)" in out
    assert "untouched: web5, web6" in out


def test_unreachable_host_fails_only_that_host(
    opskit: Invoke, tmp_path: Path, fleet: Fleet
) -> None:
    """A host nobody answers for fails alone; the others run, within max_failures: 1."""
    dead = (f"  dead: {{address: 127.0.0.250, port: {fleet.port}, user: {fleet.user}, "
            f"key_file: \"{fleet.client_key}\", known_hosts: \"{fleet.known_hosts}\"}}\n")  # fmt: skip
    steps = """\
  - id: roll
    on: [web1, dead, web2]
    max_failures: 1
    run: echo {{ inventory_hostname }} >> {{ log }}
"""
    path = _runbook(tmp_path, fleet, steps, extra_hosts=dead)

    result = opskit("run", str(path), expect=ExitCode.OK)

    assert sorted(w[0] for w in _log(tmp_path)) == ["web1", "web2"]
    assert "failed within max_failures (1): dead" in result.stdout
    assert "refuses connections" in result.stdout


def test_limit_selects_groups_and_exclusions(opskit: Invoke, tmp_path: Path, fleet: Fleet) -> None:
    """--limit 'web:!web2:!canary' runs the step on web3..web6 only."""
    steps = """\
  - id: roll
    on: web
    run: echo {{ inventory_hostname }} >> {{ log }}
"""
    path = _runbook(tmp_path, fleet, steps)

    opskit("run", str(path), "--limit", "web:!web2:!canary", expect=ExitCode.OK)

    assert sorted(w[0] for w in _log(tmp_path)) == ["web3", "web4", "web5", "web6"]


def test_capture_per_host_reaches_hostvars_and_the_list(
    opskit: Invoke, tmp_path: Path, fleet: Fleet
) -> None:
    """capture: on many hosts gives hostvars.web2.name and the list of every host's value."""
    steps = """\
  - id: ask
    on: [web1, web2, web3]
    capture: who
    run: echo id-{{ inventory_hostname }}
  - id: tell
    run: echo {{ hostvars.web2.who }} {{ who | join(',') }} >> {{ log }}
"""
    path = _runbook(tmp_path, fleet, steps)

    opskit("run", str(path), expect=ExitCode.OK)

    assert _log(tmp_path) == [["id-web2", "id-web1,id-web2,id-web3"]]


def test_rollback_undoes_host_by_host_last_batch_first(
    opskit: Invoke, tmp_path: Path, fleet: Fleet
) -> None:
    """rollback runs undo: on every host the step ran on, the last batch first."""
    steps = """\
  - id: roll
    on: [web1, web2, web3]
    batches: [1, 100%]
    parallel: 1
    run: echo do {{ inventory_hostname }} >> {{ log }}
    undo: echo undo {{ inventory_hostname }} >> {{ log }}
  - id: fail
    run: exit 1
"""
    path = _runbook(tmp_path, fleet, steps)
    rid = run_id(opskit("run", str(path), expect=ExitCode.NEGATIVE).stdout)

    opskit("rollback", rid, "--yes", expect=ExitCode.OK)

    undone = [w[1] for w in _log(tmp_path) if w[0] == "undo"]
    assert undone == ["web3", "web2", "web1"]


def test_kill_mid_batch_then_resume_runs_only_unfinished_hosts(
    opskit: Invoke, opskit_proc: Callable[..., object], tmp_path: Path, fleet: Fleet
) -> None:
    """kill -9 mid-rollout, then resume: every host ran exactly once, none twice, none missed."""
    steps = """\
  - id: roll
    on: web
    parallel: 2
    check: grep -qx {{ inventory_hostname }} {{ log }}
    run: echo {{ inventory_hostname }} >> {{ log }}; sleep 0.6
"""
    path = _runbook(tmp_path, fleet, steps)
    proc = opskit_proc("run", str(path))
    wait_for(lambda: len(lines(tmp_path / "log")) >= 3, what="three hosts started")
    os.kill(proc.pid, signal.SIGKILL)  # type: ignore[attr-defined]
    proc.wait(timeout=10)  # type: ignore[attr-defined]
    before = lines(tmp_path / "log")
    assert len(before) < HOSTS
    rid = run_id_of(tmp_path)

    opskit("resume", rid, expect=ExitCode.OK)

    after = lines(tmp_path / "log")
    assert sorted(after) == [f"web{i}" for i in range(1, HOSTS + 1)]  # each once
    started = [
        ev["host"] for ev in events(tmp_path / "state", rid) if ev["event"] == "host_started"
    ]
    assert sorted(set(started)) == sorted(after)
    status = json.loads(opskit("status", rid, "--json", expect=ExitCode.OK).stdout)
    assert status["state"] == "succeeded"
    roll = next(s for s in status["steps"] if s["id"] == "roll")
    assert roll["host_status"] == {f"web{i}": "succeeded" for i in range(1, HOSTS + 1)}


def test_ansible_inventory_drives_a_runbook_and_host_vars_reach_templates(
    opskit: Invoke, tmp_path: Path, fleet: Fleet
) -> None:
    """--inventory hosts.ini (Ansible INI): the runbook names only the group; each host sees its own vars."""
    addrs = fleet.addresses
    inventory = tmp_path / "hosts.ini"
    inventory.write_text(
        "[web]\n"
        + "".join(f"app{i} ansible_host={addrs[i - 1]} colour=c{i}\n" for i in (1, 2, 3))
        + f"[web:vars]\nansible_port={fleet.port}\nansible_user={fleet.user}\n"
        f"ansible_ssh_private_key_file={fleet.client_key}\nopskit_known_hosts={fleet.known_hosts}\n"
    )
    path = write(
        tmp_path,
        f"""
        name: from-inventory
        steps:
          - id: paint
            on: web
            run: echo {{{{ inventory_hostname }}}} {{{{ colour }}}} $SSH_CONNECTION >> {tmp_path / "log"}
            undo: echo {{{{ inventory_hostname }}}} undone >> {tmp_path / "undo"}
          - id: stop-here
            run: exit 1
    """,
    )

    opskit("validate", str(path), "--inventory", str(inventory), expect=ExitCode.OK)
    result = opskit(
        "run", str(path), "-i", str(inventory), "--limit", "app1,app3", expect=ExitCode.NEGATIVE
    )

    seen = sorted((w[0], w[1], w[4]) for w in _log(tmp_path))  # SSH_CONNECTION: the address reached
    assert seen == [("app1", "c1", addrs[0]), ("app3", "c3", addrs[2])]
    opskit(
        "rollback", run_id(result.stdout), "--yes", expect=ExitCode.OK
    )  # the run's inventory, without -i
    assert sorted(lines(tmp_path / "undo")) == ["app1 undone", "app3 undone"]


def test_plan_runs_probes_on_every_host(opskit: Invoke, tmp_path: Path, fleet: Fleet) -> None:
    """plan executes a probe on all the group's hosts and changes nothing with a mutate step."""
    steps = """\
  - id: look
    kind: probe
    on: web
    run: echo probe {{ inventory_hostname }} >> {{ log }}
  - id: change
    on: web
    run: echo change {{ inventory_hostname }} >> {{ log }}
"""
    path = _runbook(tmp_path, fleet, steps)

    opskit("plan", str(path), expect=ExitCode.OK)

    assert sorted(w[1] for w in _log(tmp_path) if w[0] == "probe") == [
        f"web{i}" for i in range(1, HOSTS + 1)
    ]
    assert not [w for w in _log(tmp_path) if w[0] == "change"]


def test_group_with_an_unknown_host_is_bad_input(
    opskit: Invoke, tmp_path: Path, fleet: Fleet
) -> None:
    """A group naming a host that is defined nowhere is refused by validate, at its line."""
    path = write(
        tmp_path,
        """
        name: typo
        hosts:
          web1: 127.0.0.2
          groups: {web: [web1, wbe2]}
        steps:
          - {id: s, on: web, run: "true"}
    """,
    )

    result = opskit("validate", str(path), expect=ExitCode.BAD_INPUT)

    assert "runbook.yaml:4:" in result.stderr
    assert "unknown host 'wbe2'" in result.stderr


def test_bad_rollout_fields_are_reported_at_their_line(opskit: Invoke, tmp_path: Path) -> None:
    """parallel: 0, batches: [0] and max_failures: lots are refused by validate, each at FILE:LINE:COL."""
    path = write(
        tmp_path,
        """
        name: bad
        hosts:
          web1: 127.0.0.2
        steps:
          - id: s
            on: web1
            parallel: 0
            batches: [0, 50%]
            max_failures: lots
            run: "true"
    """,
    )

    result = opskit("validate", str(path), expect=ExitCode.BAD_INPUT)

    assert "runbook.yaml:7:" in result.stderr
    assert "parallel must be" in result.stderr
    assert "runbook.yaml:8:" in result.stderr
    assert "batches must be" in result.stderr
    assert "runbook.yaml:9:" in result.stderr
    assert "max_failures must be" in result.stderr


def test_plan_gives_an_action_probe_verdict_per_host(
    opskit: Invoke, tmp_path: Path, fleet: Fleet
) -> None:
    """plan rehearses a probe action on every host of the step, each with its own values."""
    steps = f"""\
  - id: ssh-open
    kind: probe
    on: [web1, web2]
    uses: tcp.check
    with: {{host: "{{{{ ansible_host }}}}", port: {fleet.port}, timeout: 1s}}
"""
    path = _runbook(tmp_path, fleet, steps)

    result = opskit("plan", str(path), "--json", expect=ExitCode.OK)

    step = json.loads(result.stdout)["steps"][0]
    assert step["reason"].startswith(f"all 2 hosts: {fleet.addresses[0]}:{fleet.port} accepts")


def test_in_doubt_hosts_without_check_are_named_and_never_rerun_silently(
    opskit: Invoke, opskit_proc: Callable[..., object], tmp_path: Path, fleet: Fleet
) -> None:
    """kill -9 mid-rollout, no check: resume refuses naming only the in-doubt hosts; --skip-in-doubt runs the rest."""
    steps = """\
  - id: roll
    on: web
    parallel: 2
    run: echo {{ inventory_hostname }} >> {{ log }}; sleep 0.8
"""
    path = _runbook(tmp_path, fleet, steps)
    proc = opskit_proc("run", str(path))
    wait_for(lambda: len(lines(tmp_path / "log")) >= 3, what="three hosts started")
    os.kill(proc.pid, signal.SIGKILL)  # type: ignore[attr-defined]
    proc.wait(timeout=10)  # type: ignore[attr-defined]
    rid = run_id_of(tmp_path)
    status = json.loads(opskit("status", rid, "--json", expect=ExitCode.OK).stdout)
    doubt = sorted(h for h, st in status["steps"][0]["host_status"].items() if st == "in_doubt")
    assert doubt  # the hosts whose command was running at the kill

    refused = opskit("resume", rid, expect=ExitCode.BLOCKED)

    assert f"in doubt on {', '.join(doubt)}" in refused.stdout + refused.stderr
    before = lines(tmp_path / "log")
    opskit("resume", rid, "--skip-in-doubt", expect=ExitCode.OK)
    after = lines(tmp_path / "log")
    assert len(after) == len(set(after))  # no host twice
    assert set(after) >= {f"web{i}" for i in range(1, HOSTS + 1)} - set(
        doubt
    )  # every other host ran
    assert [h for h in after if h in doubt] == [
        h for h in before if h in doubt
    ]  # skipped: not run again

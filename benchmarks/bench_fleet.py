"""A fleet side by side: 50 SSH hosts x 10 trivial steps through `opskit run` and `ansible-playbook`.

The hosts are loopback addresses 127.0.0.2.. served by private sshds (tests/servers/sshd_fleet.py), host
keys pinned in a known_hosts file both tools verify. Both get the same forks (`parallel:` for opskit),
Ansible gets pipelining and ControlPersist. Then 500 hosts x 1 step through opskit in-process: wall
time, peak memory per host connection, and the open file descriptors before and after (none leaked).

    .venv/bin/python benchmarks/bench_fleet.py [--hosts 50] [--steps 10] [--forks 10] [--big 500]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.servers.sshd_fleet import Fleet, start_fleet  # noqa: E402 - after the path is set

BIN = Path(sys.executable).parent


def _inventory_yaml(fleet: Fleet, count: int) -> str:
    lines = ["hosts:"]
    for i, address in enumerate(fleet.addresses[:count], start=1):
        lines.append(f"  h{i}: {{address: {address}, port: {fleet.port}, user: {fleet.user}, "
                     f'key_file: "{fleet.client_key}", known_hosts: "{fleet.known_hosts}"}}')  # fmt: skip
    return "\n".join(lines) + "\n"


def _opskit_runbook(path: Path, steps: int, forks: int) -> Path:
    body = "".join(
        f'  - {{id: s{i}, on: all, parallel: {forks}, run: "true"}}\n' for i in range(steps)
    )
    path.write_text(f"name: bench-fleet\nsteps:\n{body}")
    return path


def _ansible_files(
    work: Path, fleet: Fleet, count: int, steps: int, forks: int
) -> tuple[Path, Path]:
    inventory = work / "hosts.ini"
    inventory.write_text(
        "[fleet]\n"
        + "".join(
            f"h{i} ansible_host={a}\n" for i, a in enumerate(fleet.addresses[:count], start=1)
        )
        + f"[fleet:vars]\nansible_port={fleet.port}\nansible_user={fleet.user}\n"
        f"ansible_ssh_private_key_file={fleet.client_key}\nansible_python_interpreter={shutil.which('python3')}\n"
    )
    (work / "ansible.cfg").write_text(
        f"[defaults]\nforks = {forks}\nhost_key_checking = True\ngathering = explicit\n"
        f"inventory = {inventory}\nlocal_tmp = {work}/ansible-tmp\n"
        "[ssh_connection]\npipelining = True\n"
        f"ssh_args = -o ControlMaster=auto -o ControlPersist=60s -o UserKnownHostsFile={fleet.known_hosts} "
        "-o StrictHostKeyChecking=yes\n"
        f"control_path_dir = {work}/cp\n"
    )
    tasks = "".join(
        f'    - name: s{i}\n      ansible.builtin.command: "true"\n' for i in range(steps)
    )
    playbook = work / "play.yml"
    playbook.write_text(f"- hosts: fleet\n  gather_facts: false\n  tasks:\n{tasks}")
    return inventory, playbook


def _timed(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MiB) and the tail of the output of one command."""
    started = time.monotonic()
    proc = subprocess.Popen(
        cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    out, _ = proc.communicate(timeout=900)
    wall = time.monotonic() - started
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} exited {proc.returncode}:\n{out[-3000:]}")
    return wall, usage.ru_maxrss / 1024, out[-400:]


def side_by_side(work: Path, fleet: Fleet, hosts: int, steps: int, forks: int) -> None:
    env = {
        **os.environ,
        "OPSKIT_STATE_DIR": str(work / "state"),
        "ANSIBLE_CONFIG": str(work / "ansible.cfg"),
    }
    inventory = work / "fleet.yaml"
    inventory.write_text(_inventory_yaml(fleet, hosts))
    runbook = _opskit_runbook(work / "bench.yaml", steps, forks)
    opskit_s, _, _ = _timed(
        [str(BIN / "opskit"), "run", str(runbook), "-i", str(inventory)], env, work
    )
    print(f"opskit   {hosts} hosts x {steps} steps, parallel {forks}: {opskit_s:.2f} s "
          f"({opskit_s / (hosts * steps) * 1000:.1f} ms a host-step)")  # fmt: skip
    ansible = shutil.which("ansible-playbook", path=str(BIN))
    if ansible is None:
        print(
            "ansible-playbook not installed here (pip install ansible-core==2.17.7): no side-by-side figure"
        )
        return
    _, playbook = _ansible_files(work, fleet, hosts, steps, forks)
    ansible_s, _, _ = _timed([ansible, str(playbook)], env, work)
    print(
        f"ansible  {hosts} hosts x {steps} steps, forks {forks}, pipelining, ControlPersist: {ansible_s:.2f} s"
    )
    print(
        f"ratio    {ansible_s / opskit_s:.1f}x less wall time with opskit (goal >= 5x, opskit < 10 s)"
    )


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def big(work: Path, fleet: Fleet, hosts: int, parallel: int) -> None:
    """500 hosts x 1 step in this process: wall time, memory per connection, fds before and after."""
    from opskit.fleet.selection import SELECTION, Selection  # noqa: PLC0415 - after sys.path is set
    from opskit.runbook import engine  # noqa: PLC0415
    from opskit.runbook.context import SilentReporter  # noqa: PLC0415

    inventory = work / "big.yaml"
    inventory.write_text(_inventory_yaml(fleet, hosts))
    runbook = work / "big-runbook.yaml"
    runbook.write_text(
        f'name: bench-big\nsteps:\n  - {{id: one, on: all, parallel: {parallel}, run: "true"}}\n'
    )
    options = engine.RunOptions(state_dir=work / "state-big", operator="bench")
    SELECTION.set(Selection(inventories=(inventory,)))
    # A warm-up run of one host: imports, paramiko's first key exchange, the thread pool.
    small = work / "one.yaml"
    small.write_text(_inventory_yaml(fleet, 1))
    SELECTION.set(Selection(inventories=(small,)))
    engine.run(runbook, options, SilentReporter())
    fds_before = _open_fds()
    usage_before = resource.getrusage(resource.RUSAGE_SELF)
    rss_before = usage_before.ru_maxrss
    SELECTION.set(Selection(inventories=(inventory,)))
    started = time.monotonic()
    outcome = engine.run(runbook, options, SilentReporter())
    wall = time.monotonic() - started
    usage_after = resource.getrusage(resource.RUSAGE_SELF)
    rss_after = usage_after.ru_maxrss
    cpu = (usage_after.ru_utime + usage_after.ru_stime) - (
        usage_before.ru_utime + usage_before.ru_stime
    )
    fds_after = _open_fds()
    print(
        f"opskit   {hosts} hosts x 1 step, parallel {parallel}: {wall:.2f} s, state {outcome.state}"
    )
    if outcome.state != "succeeded":
        print(f"         {outcome.message[:600]}")
    print(
        f"cpu      opskit's own process: {cpu:.1f} s ({cpu / hosts * 1000:.0f} ms a host: key exchange, auth, agent)"
    )
    # Every host's connection stays open until the run ends (it is reused by later steps).
    print(f"memory   peak RSS grew {(rss_after - rss_before) / 1024:.1f} MiB with {hosts} connections open: "
          f"{(rss_after - rss_before) / hosts:.0f} KiB per host connection")  # fmt: skip
    print(
        f"fds      {fds_before} open before, {fds_after} after (leaked: {fds_after - fds_before})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=50)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--forks", type=int, default=10)
    parser.add_argument("--big", type=int, default=500, help="hosts for the 1-step run (0: skip)")
    parser.add_argument("--big-parallel", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        work = Path(tmp)
        with start_fleet(work / "sshd", max(args.hosts, args.big)) as fleet:
            side_by_side(work, fleet, args.hosts, args.steps, args.forks)
            if args.big:
                big(work, fleet, args.big, args.big_parallel)


if __name__ == "__main__":
    main()

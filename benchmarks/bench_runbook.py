"""Per-step overhead: N trivial local steps through `opskit run` against the same N tasks in ansible-playbook.

Both sides run `true` through a shell on this machine; opskit also journals and fsyncs every step.
Per-step time is (T(N) - T(1)) / (N - 1), so process start-up is not counted as step time; start-up is
shown on its own, with the time of `opskit --help`.

    .venv/bin/python benchmarks/bench_runbook.py [--steps 60]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

BIN = Path(sys.executable).parent
GOAL_RATIO = 30.0
HELP_GOAL_S = 0.3


def _timed(cmd: list[str], env: dict[str, str], cwd: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(
            f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
        )
    return elapsed


def _opskit_runbook(path: Path, n: int) -> Path:
    steps = "".join(f'  - id: s{i}\n    run: "true"\n' for i in range(n))
    path.write_text(f"name: bench\nsteps:\n{steps}")
    return path


def _ansible_playbook(path: Path, n: int) -> Path:
    tasks = "".join(f'    - name: s{i}\n      ansible.builtin.shell: "true"\n' for i in range(n))
    path.write_text(f"- hosts: localhost\n  gather_facts: false\n  tasks:\n{tasks}")
    return path


def _ansible() -> str:
    found = shutil.which("ansible-playbook", path=str(BIN)) or shutil.which("ansible-playbook")
    if found:
        return found
    print("installing ansible-core (the peer) into this environment...")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "ansible-core"], check=True)
    return str(BIN / "ansible-playbook")


def _best(fn: Callable[[], float], repeat: int) -> float:
    return min(fn() for _ in range(repeat))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n = max(args.steps, 2)
    work = Path(tempfile.mkdtemp(prefix="opskit-bench-"))
    env = {**os.environ, "OPSKIT_STATE_DIR": str(work / "state"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_LOCALHOST_WARNING": "false", "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false"}  # fmt: skip
    opskit = [str(BIN / "opskit")]

    help_s = [_timed([*opskit, "--help"], env, work) for _ in range(5)]
    one = _opskit_runbook(work / "one.yaml", 1)
    many = _opskit_runbook(work / "many.yaml", n)
    o1 = _best(lambda: _timed([*opskit, "run", str(one)], env, work), args.repeat)
    on = _best(lambda: _timed([*opskit, "run", str(many)], env, work), args.repeat)
    opskit_step = (on - o1) / (n - 1)

    ansible = _ansible()
    a_one = _ansible_playbook(work / "one.yml", 1)
    a_many = _ansible_playbook(work / "many.yml", n)
    base = [
        ansible,
        "-i",
        "localhost,",
        "-c",
        "local",
        "-e",
        f"ansible_python_interpreter={sys.executable}",
    ]
    a1 = _best(lambda: _timed([*base, str(a_one)], env, work), 1)
    an = _best(lambda: _timed([*base, str(a_many)], env, work), 1)
    ansible_step = (an - a1) / (n - 1)

    ratio = ansible_step / opskit_step if opskit_step > 0 else float("inf")
    print(f"steps per run:            {n}")
    print(f"opskit --help:            {statistics.median(help_s) * 1000:.0f} ms median "
          f"(goal < {HELP_GOAL_S * 1000:.0f} ms)")  # fmt: skip
    print(f"opskit run, 1 step:       {o1:.3f} s (start-up, journal, lock)")
    print(f"opskit run, {n} steps:    {on:.3f} s")
    print(f"opskit per step:          {opskit_step * 1000:.2f} ms (journal fsync included)")
    print(f"ansible-playbook, 1 task: {a1:.3f} s")
    print(f"ansible-playbook, {n} tasks: {an:.3f} s")
    print(f"ansible per task:         {ansible_step * 1000:.1f} ms")
    verdict = "meets" if ratio >= GOAL_RATIO else "MISSES"
    print(f"ratio (ansible / opskit per step): {ratio:.0f}x ({verdict} the {GOAL_RATIO:.0f}x goal)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

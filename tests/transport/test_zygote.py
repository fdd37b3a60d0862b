"""The zygote: one supervisor per LocalTransport forks a keeper per step, and loses none of issue #10's guarantees."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from opskit.transport import zygote as zygote_module
from opskit.transport.local import LocalTransport
from tests.servers.sleepers import alive, gone_within, kill_all, sleep_marker

# The command prints its keeper's pid ($PPID: bash's parent), that keeper's parent, and its own session id.
_WHO = "echo $PPID $(cut -d' ' -f4 /proc/$PPID/stat) $(ps -o sid= -p $$)"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _who(transport: LocalTransport) -> tuple[int, int, int, int]:
    """(pid given to on_start, keeper pid, the keeper's parent, the command's session id)."""
    started: list[int] = []
    result = transport.run(_WHO, on_start=started.append)
    keeper, parent, session = map(int, result.stdout.split())
    return started[0], keeper, parent, session


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _gone(pid: int, seconds: float) -> bool:
    """True once `pid` has exited (a zombie counts: it ended), waiting at most `seconds`."""
    deadline = time.monotonic() + seconds
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _running(pid)


def test_many_steps_reuse_one_zygote() -> None:
    """Twenty commands on one transport start twenty keepers from a single supervisor process."""
    transport = LocalTransport()
    try:
        seen = [_who(transport) for _ in range(20)]
        parents = {parent for _, _, parent, _ in seen}
        commands = [_cmdline(parent) for parent in parents]
    finally:
        transport.close()

    assert len(parents) == 1
    assert "supervisor.py --zygote" in commands[0]  # not us: no Python start per step
    assert len({keeper for _, keeper, _, _ in seen}) == 20
    # What the journal records (on_start) is the keeper, and the keeper's pid names the step's session.
    assert all(start == keeper == session for start, keeper, _, session in seen)


def test_the_zygote_is_a_supervisor_process_and_close_ends_it() -> None:
    """The keepers' parent is supervisor.py --zygote while the transport lives; close() ends it."""
    transport = LocalTransport()
    _, _, zygote, _ = _who(transport)

    assert "supervisor.py --zygote" in _cmdline(zygote)
    transport.close()
    assert _gone(zygote, 3.0)


def test_a_killed_zygote_is_replaced_by_the_next_command() -> None:
    """kill -9 of the zygote between steps: the next command still runs, under a new zygote."""
    transport = LocalTransport()
    try:
        _, _, first, _ = _who(transport)
        os.kill(first, signal.SIGKILL)
        assert _gone(first, 3.0)

        started, keeper, second, _ = _who(transport)

        assert second != first
        assert started == keeper
        assert transport.run("exit 4").rc == 4
    finally:
        transport.close()


def test_a_step_outlives_the_death_of_its_zygote() -> None:
    """kill -9 of the zygote while a step runs: the step finishes normally with its own status."""
    transport = LocalTransport()
    try:
        _, _, zygote, _ = _who(transport)

        def kill_zygote(stream: str, line: str) -> None:
            if line == "started":
                os.kill(zygote, signal.SIGKILL)

        result = transport.run("echo started; sleep 0.3; echo done; exit 5", on_output=kill_zygote)

        assert result.rc == 5
        assert result.stdout == "started\ndone\n"
    finally:
        transport.close()


def test_no_fd_leaks_across_200_commands() -> None:
    """200 commands (with and without stdin, some failing) leave opskit and the zygote with the fds they had."""
    transport = LocalTransport()
    try:
        _, _, zygote, _ = _who(transport)
        ours = len(os.listdir("/proc/self/fd"))
        theirs = len(os.listdir(f"/proc/{zygote}/fd"))

        for i in range(200):
            result = transport.run(f"cat; exit {i % 3}", stdin="x" if i % 2 else None)
            assert result.rc == i % 3

        assert len(os.listdir("/proc/self/fd")) == ours
        assert len(os.listdir(f"/proc/{zygote}/fd")) == theirs
    finally:
        transport.close()


def test_a_large_command_and_env_reach_the_shell_whole() -> None:
    """A 100 kB script and 300 kB of env (more than a socket buffer) reach the shell intact."""
    big = (
        "x" * 100_000
    )  # one exec argument or variable may not exceed 128 kB (Linux MAX_ARG_STRLEN)
    env = {f"BIG{i}": big for i in range(3)}
    transport = LocalTransport()
    try:
        result = transport.run(f': {big}; printf %s "$BIG0$BIG1$BIG2" | wc -c', env=env)
    finally:
        transport.close()

    assert result.stdout.strip() == "300000"


def test_a_command_that_cannot_start_says_why() -> None:
    """An argument over the kernel's limit: exit 127 and the reason on stderr, as a shell would."""
    transport = LocalTransport()
    try:
        result = transport.run(": " + "x" * 200_000)
    finally:
        transport.close()

    assert result.rc == 127
    assert "Argument list too long" in result.stderr


def test_kill_9_of_opskit_ends_the_zygote_and_the_step(tmp_path: Path) -> None:
    """kill -9 of the process that owns the transport: its zygote and the step's setsid'd tree end."""
    marker = sleep_marker(800000)
    script = (
        "from opskit.transport.local import LocalTransport\n"
        "t = LocalTransport()\n"
        f"t.run('echo $(cut -d\" \" -f4 /proc/$$/stat); setsid sleep {marker} & wait', "
        "on_output=lambda s, line: print(line, flush=True))\n"
    )
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        keeper = int(owner.stdout.readline())
        zygote = int(Path(f"/proc/{keeper}/stat").read_text().rsplit(")", 1)[1].split()[1])
        assert "supervisor.py --zygote" in _cmdline(zygote)
        deadline = time.monotonic() + 10
        while not alive(marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert alive(marker)

        owner.kill()
        owner.wait(timeout=10)

        assert gone_within(marker, 5.0), f"still running: {alive(marker)}"
        assert _gone(zygote, 5.0)
    finally:
        owner.kill()
        owner.wait(timeout=10)
        kill_all(marker)


def test_without_the_zygote_the_per_step_supervisor_still_stops_the_tree(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """OPSKIT_ZYGOTE=0 (the fallback): a timeout still ends a setsid'd child."""
    monkeypatch.setenv("OPSKIT_ZYGOTE", "0")
    marker = sleep_marker(810000)
    try:
        result = LocalTransport().run(f"setsid sleep {marker} & wait", timeout_s=0.5)

        assert result.timed_out
        assert gone_within(marker, 3.0)
    finally:
        kill_all(marker)


def test_a_stuck_zygote_falls_back_instead_of_hanging(monkeypatch: pytest.MonkeyPatch) -> None:
    """A zygote that stops answering (SIGSTOP) is replaced: the step runs under a per-step supervisor."""
    monkeypatch.setattr(zygote_module, "_START_TIMEOUT_S", 0.5)
    transport = LocalTransport()
    try:
        _, _, stuck, _ = _who(transport)
        os.kill(stuck, signal.SIGSTOP)
        started = time.monotonic()

        _, _, parent, _ = _who(transport)

        assert time.monotonic() - started < 5
        assert parent == os.getpid()  # the fallback: a per-step supervisor, our own child
        assert _gone(stuck, 3.0)
        _, _, zygote, _ = _who(transport)  # and the next step has a zygote again
        assert "supervisor.py --zygote" in _cmdline(zygote)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(stuck, signal.SIGKILL)
        transport.close()


def test_what_a_step_daemonizes_outlives_it_and_the_zygote() -> None:
    """A command that exits by itself leaves its setsid'd daemon running, even after close()."""
    marker = sleep_marker(820000)
    transport = LocalTransport()
    try:
        result = transport.run(f"setsid sleep {marker} </dev/null >/dev/null 2>&1 & echo started")
        transport.close()
        time.sleep(0.3)

        assert result.ok
        assert alive(marker)
    finally:
        transport.close()
        kill_all(marker)


def test_the_command_runs_in_opskits_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A directory change after the zygote started still applies to the next command."""
    transport = LocalTransport()
    try:
        transport.run("true")
        monkeypatch.chdir(tmp_path)

        result = transport.run("pwd")
    finally:
        transport.close()

    assert result.stdout.strip() == str(tmp_path)


def test_commands_from_several_threads_each_get_their_own_output() -> None:
    """Four threads sharing one transport: every command gets its own output and exit code."""
    transport = LocalTransport()
    results: dict[int, tuple[int, str]] = {}

    def work(worker: int) -> None:
        for i in range(10):
            n = worker * 100 + i
            done = transport.run(f"echo {n}; exit {n % 7}")
            results[n] = (done.rc, done.stdout)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    finally:
        transport.close()

    assert len(results) == 40
    assert all(results[n] == (n % 7, f"{n}\n") for n in results)
